"""Flask-PostStack: transactional email for Flask through the PostStack API.

::

    from flask_poststack import PostStack, send_email, enqueue_email

    poststack = PostStack()
    poststack.init_app(app)
"""

from __future__ import annotations

from .errors import ConfigurationError
from .errors import FlaskPostStackError
from .errors import InvalidEmailError
from .errors import PostStackError
from .errors import QueueUnavailableError
from .errors import RecipientNotAllowedError
from .errors import SendCancelled
from .errors import WebhookVerificationError
from .extension import PostStack
from .message import Attachment
from .sending import enqueue_email
from .sending import send_email
from .sending import SendResult

__all__ = [
    "Attachment",
    "ConfigurationError",
    "FlaskPostStackError",
    "InvalidEmailError",
    "PostStack",
    "PostStackError",
    "QueueUnavailableError",
    "RecipientNotAllowedError",
    "SendCancelled",
    "SendResult",
    "WebhookVerificationError",
    "enqueue_email",
    "send_email",
]
