"""Flask-PostStack: transactional email for Flask through the PostStack API.

::

    from flask_poststack import PostStack, send_email, enqueue_email

    poststack = PostStack()
    poststack.init_app(app)
"""

from __future__ import annotations

from .batch import BatchItem
from .batch import enqueue_batch
from .batch import enqueue_many
from .batch import send_batch
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
from .status import email_status
from .status import EmailStatus

__all__ = [
    "Attachment",
    "BatchItem",
    "ConfigurationError",
    "EmailStatus",
    "FlaskPostStackError",
    "InvalidEmailError",
    "PostStack",
    "PostStackError",
    "QueueUnavailableError",
    "RecipientNotAllowedError",
    "SendCancelled",
    "SendResult",
    "WebhookVerificationError",
    "email_status",
    "enqueue_batch",
    "enqueue_email",
    "enqueue_many",
    "send_batch",
    "send_email",
]
