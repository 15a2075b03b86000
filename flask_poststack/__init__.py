"""Flask-PostStack: transactional email for Flask through the PostStack API.

::

    from flask_poststack import PostStack, send_email, enqueue_email

    poststack = PostStack()
    poststack.init_app(app)

The names below are loaded on first use, so that a worker importing
:mod:`flask_poststack.tasks` loads neither Flask nor Jinja.
"""

from __future__ import annotations

import importlib
import typing as t

if t.TYPE_CHECKING:
    from . import signals as signals
    from . import testing as testing
    from ._state import get_state as get_state
    from .cancel import cancel_email as cancel_email
    from .cancel import EmailChange as EmailChange
    from .cancel import reschedule_email as reschedule_email
    from .errors import ConfigurationError as ConfigurationError
    from .errors import FlaskPostStackError as FlaskPostStackError
    from .errors import InvalidEmailError as InvalidEmailError
    from .errors import PostStackError as PostStackError
    from .errors import QueueUnavailableError as QueueUnavailableError
    from .errors import RecipientNotAllowedError as RecipientNotAllowedError
    from .errors import SendCancelled as SendCancelled
    from .errors import UnknownArgumentError as UnknownArgumentError
    from .errors import WebhookVerificationError as WebhookVerificationError
    from .extension import PostStack as PostStack
    from .message import Attachment as Attachment
    from .message import EmailArgs as EmailArgs
    from .queueing import enqueue_batch as enqueue_batch
    from .queueing import enqueue_email as enqueue_email
    from .queueing import enqueue_many as enqueue_many
    from .results import BatchItem as BatchItem
    from .results import SendResult as SendResult
    from .sending import send_batch as send_batch
    from .sending import send_email as send_email
    from .sending import send_email_async as send_email_async
    from .status import email_status as email_status
    from .status import EmailStatus as EmailStatus
    from .webhooks import webhook_blueprint as webhook_blueprint
    from .webhooks import WebhookEvent as WebhookEvent

#: Each public name and the module that defines it.
_WHERE = {
    "Attachment": "message",
    "BatchItem": "results",
    "ConfigurationError": "errors",
    "EmailArgs": "message",
    "EmailChange": "cancel",
    "EmailStatus": "status",
    "FlaskPostStackError": "errors",
    "InvalidEmailError": "errors",
    "PostStack": "extension",
    "PostStackError": "errors",
    "QueueUnavailableError": "errors",
    "RecipientNotAllowedError": "errors",
    "SendCancelled": "errors",
    "SendResult": "results",
    "UnknownArgumentError": "errors",
    "WebhookEvent": "webhooks",
    "WebhookVerificationError": "errors",
    "cancel_email": "cancel",
    "email_status": "status",
    "enqueue_batch": "queueing",
    "enqueue_email": "queueing",
    "enqueue_many": "queueing",
    "get_state": "_state",
    "reschedule_email": "cancel",
    "send_batch": "sending",
    "send_email": "sending",
    "send_email_async": "sending",
    "webhook_blueprint": "webhooks",
}
_MODULES = {"signals", "testing"}

__all__ = sorted([*_WHERE, *_MODULES])


def __getattr__(name: str) -> t.Any:
    if name in _MODULES:
        value = importlib.import_module(f"{__name__}.{name}")
    elif name in _WHERE:
        value = getattr(importlib.import_module(f"{__name__}.{_WHERE[name]}"), name)
    else:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
