"""Flask-Mail's API on Flask-PostStack: change the import, keep the code.

::

    from flask_poststack.flask_mail import Mail, Message  # was: flask_mail

    mail = Mail(app)  # registers Flask-PostStack too
    mail.send(Message("Hi", recipients=["ada@example.com"], body="Hello"))

``mail.send`` goes through :func:`~flask_poststack.send_email` (or
:func:`~flask_poststack.enqueue_email` with ``POSTSTACK_FLASK_MAIL_QUEUE``):
the same validation, signals, test suppression and API. See
:doc:`/migrating` for the settings that still apply.
"""

from __future__ import annotations

from ..signals import email_dispatched
from ._mail import Connection
from ._mail import email_args
from ._mail import Mail
from ._mail import MailState
from ._message import Attachment
from ._message import BadHeaderError
from ._message import IncompleteMessageError
from ._message import Message
from ._message import sanitize_address
from ._message import sanitize_addresses

__all__ = [
    "Attachment",
    "BadHeaderError",
    "Connection",
    "IncompleteMessageError",
    "Mail",
    "MailState",
    "Message",
    "email_args",
    "email_dispatched",
    "sanitize_address",
    "sanitize_addresses",
]
