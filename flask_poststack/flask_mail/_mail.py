"""Flask-Mail's ``Mail`` and ``Connection``, sending through Flask-PostStack.

``mail.send(msg)`` turns the :class:`~flask_poststack.flask_mail.Message`
into :class:`~flask_poststack.EmailArgs` (:func:`email_args`) and hands them
to :func:`~flask_poststack.send_email`, or to
:func:`~flask_poststack.enqueue_email` when ``POSTSTACK_FLASK_MAIL_QUEUE``
is on: the same validation, signals, suppression and API as every other
send. Then ``email_dispatched`` fires, as Flask-Mail's did.
"""

from __future__ import annotations

import contextlib
import mimetypes
import re
import time
import typing as t
from collections.abc import Iterator
from collections.abc import Mapping
from types import TracebackType

from blinker import ANY
from flask import current_app
from flask import Flask
from flask import has_app_context

from .. import pipeline
from .. import signals
from .._state import get_state
from .._state import STATE_KEY
from ..errors import InvalidEmailError
from ..message import Attachment as PostStackAttachment
from ..queueing import enqueue_email
from ..sending import send_email
from ._headers import check_headers
from ._headers import flat as _flat
from ._message import attachment_filename
from ._message import IncompleteMessageError
from ._message import Message

if t.TYPE_CHECKING:
    from ..message import EmailArgs

__all__ = ["Connection", "Mail", "MailState", "email_args"]

#: Flask-Mail settings that have a Flask-PostStack key: copied there at
#: ``init_app`` unless that key is set.
SETTINGS_MAP = {
    "MAIL_DEFAULT_SENDER": "POSTSTACK_DEFAULT_FROM",
    "MAIL_SUPPRESS_SEND": "POSTSTACK_SUPPRESS_SEND",
}

_FOLD = re.compile(r"\r\n(?=[ \t])")


class MailState:
    """What ``app.extensions["mail"]`` holds: the Flask-Mail settings still
    used. The attributes may be changed (tests do)."""

    def __init__(
        self,
        default_sender: str | tuple[str, str] | None,
        max_emails: int | None,
        ascii_attachments: bool,
    ) -> None:
        #: ``MAIL_DEFAULT_SENDER``, else ``POSTSTACK_DEFAULT_FROM``.
        self.default_sender = default_sender
        #: ``MAIL_MAX_EMAILS``: accepted; there is no SMTP connection to renew.
        self.max_emails = max_emails
        #: ``MAIL_ASCII_ATTACHMENTS``: send attachment names in ASCII.
        self.ascii_attachments = ascii_attachments


class Connection:
    """What :meth:`Mail.connect` returns, for ``with mail.connect() as conn``.

    There is no SMTP connection: each :meth:`send` is one send through
    Flask-PostStack (the SDK keeps its HTTP connections open).
    """

    def __init__(self, mail: Mail, app: Flask) -> None:
        self.mail = mail
        self.app = app
        #: Emails sent with this connection.
        self.num_emails = 0

    def __enter__(self) -> Connection:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        return None

    def send(self, message: Message, envelope_from: str | None = None) -> None:
        """Send ``message`` (or queue it, with ``POSTSTACK_FLASK_MAIL_QUEUE``),
        then fire ``email_dispatched``. While the app's sends are suppressed
        (``TESTING``, ``MAIL_SUPPRESS_SEND``) it is captured, never queued.

        ``envelope_from`` is accepted and not used: the API sets the envelope
        (bounces come back as webhooks).

        :raises IncompleteMessageError: no recipients or no sender (an
            :exc:`AssertionError`, as in Flask-Mail).
        :raises BadHeaderError: see :meth:`Message.has_bad_headers`.
        :raises InvalidEmailError: anything else the API would refuse;
            nothing is sent.
        :raises poststack.PostStackError: the API's error, as from
            ``send_email``; or, when queueing,
            :exc:`~flask_poststack.QueueUnavailableError`.
        """
        with _in_app(self.app):
            if not message.sender:  # a Message built outside the app context
                default = getattr(self.app.extensions["mail"], "default_sender", None)
                message.sender = _flat(default) if default else None
            args = email_args(message)
            if message.date is None:
                message.date = time.time()
            state = get_state()
            # A worker reads suppression from its own environment: a job
            # queued while this app's sends are suppressed would go out.
            if state.settings.flask_mail_queue and not state.suppressed:
                enqueue_email(**args)
            else:
                send_email(**args)
            pipeline.dispatched(self.app, message)
        self.num_emails += 1

    def send_message(self, *args: t.Any, **kwargs: t.Any) -> None:
        """``send(Message(*args, **kwargs))``."""
        with _in_app(self.app):
            message = Message(*args, **kwargs)
        self.send(message)


class Mail:
    """Flask-Mail's extension object; sends through Flask-PostStack.

    ``Mail(app)`` or ``mail.init_app(app)`` registers Flask-PostStack on the
    app too, unless it already is. ``POSTSTACK_API_KEY`` is the only setting
    needed for a real send.
    """

    def __init__(self, app: Flask | None = None) -> None:
        self.app = app
        self.state: MailState | None = None
        if app is not None:
            self.state = self.init_app(app)

    def init_mail(
        self,
        config: Mapping[str, t.Any],
        debug: bool | int = False,
        testing: bool = False,
    ) -> MailState:
        """The :class:`MailState` for ``config`` (``debug`` and ``testing``
        are accepted for Flask-Mail's signature)."""
        return MailState(
            config.get("MAIL_DEFAULT_SENDER") or config.get("POSTSTACK_DEFAULT_FROM"),
            config.get("MAIL_MAX_EMAILS"),
            bool(config.get("MAIL_ASCII_ATTACHMENTS", False)),
        )

    def init_app(self, app: Flask) -> MailState:
        """Register on ``app`` (and Flask-PostStack, if not yet)."""
        registered = STATE_KEY in app.extensions
        for mail_key, key in SETTINGS_MAP.items():
            value = app.config.get(mail_key)
            # The default sender is read at PostStack's init_app, only.
            if registered and key == "POSTSTACK_DEFAULT_FROM":
                continue
            if value is not None and app.config.get(key) is None:
                app.config[key] = _flat(value) if key.endswith("_FROM") else value
        if not registered:
            # Through the public top level, as an app would: this module is a
            # layer above the extension, which no module imports.
            from .. import PostStack

            PostStack(app)
        state = self.init_mail(app.config, app.debug, app.testing)
        app.extensions["mail"] = state
        return state

    def connect(self) -> Connection:
        """A :class:`Connection` for the app (this one's, or the current)."""
        app = self.app or t.cast(Flask, current_app._get_current_object())  # type: ignore[attr-defined]
        if "mail" not in app.extensions:
            raise RuntimeError("This app was not set up with Mail(app) / init_app.")
        return Connection(self, app)

    def send(self, message: Message) -> None:
        """Send ``message`` now, or queue it with ``POSTSTACK_FLASK_MAIL_QUEUE``.

        While sending is suppressed (``TESTING``, ``MAIL_SUPPRESS_SEND``)
        the email is validated and captured, not sent. See
        :meth:`Connection.send` for the errors.
        """
        with self.connect() as connection:
            connection.send(message)

    def send_message(self, *args: t.Any, **kwargs: t.Any) -> None:
        """``send(Message(*args, **kwargs))``."""
        with self.connect() as connection:
            connection.send_message(*args, **kwargs)

    @contextlib.contextmanager
    def record_messages(self) -> Iterator[list[Message]]:
        """Inside the block, every message sent (or queued) is appended to
        the list it gives."""
        outbox: list[Message] = []

        def record(sender: t.Any, message: Message, **extra: t.Any) -> None:
            outbox.append(message)

        with signals.email_dispatched.connected_to(record, ANY):
            yield outbox

    def __getattr__(self, name: str) -> t.Any:
        # Flask-Mail reads its settings through the extension object.
        if name == "state" or name.startswith("__"):
            raise AttributeError(name)
        return getattr(self.state, name, None)


@contextlib.contextmanager
def _in_app(app: Flask) -> Iterator[None]:
    # A new app context would hide the request's ``g`` from before_send
    # receivers: push one only when ``app`` is not the current app.
    if has_app_context() and current_app._get_current_object() is app:  # type: ignore[attr-defined]
        yield
    else:
        with app.app_context():
            yield


def email_args(message: Message) -> EmailArgs:
    """The :class:`~flask_poststack.EmailArgs` of ``message``.

    :raises IncompleteMessageError: no recipients, or no sender.
    :raises BadHeaderError: a control character in a header field (see
        :meth:`Message.has_bad_headers`).
    :raises InvalidEmailError: no body and no html, no subject, or an
        alternative other than ``html`` (the API sends text and HTML bodies
        only).
    """
    if not message.send_to:
        raise IncompleteMessageError("to", "the message has no recipients.")
    if not message.sender:
        raise IncompleteMessageError(
            "from_", "the message has no sender and MAIL_DEFAULT_SENDER is not set."
        )
    check_headers(message)
    others = sorted(set(message.alts) - {"html"})
    if others:
        raise InvalidEmailError(
            "alts", f"the API sends text and html bodies only, not {others}."
        )
    # Said in Message's words: send_email's would name template= and html=.
    if not (message.body or message.html):
        raise InvalidEmailError(
            "body", "the message has no body: give the Message a body= or html=."
        )
    if not message.subject:
        raise InvalidEmailError(
            "subject", "the message has no subject: give the Message a subject=."
        )
    args: EmailArgs = {
        "to": [_flat(a) for a in message.recipients],
        "from_": message.sender,
        "subject": _FOLD.sub("", message.subject) if message.subject else None,
        "text": message.body,
        "html": message.html,
    }
    if message.cc:
        args["cc"] = [_flat(a) for a in message.cc]
    if message.bcc:
        args["bcc"] = [_flat(a) for a in message.bcc]
    if message.reply_to:
        args["reply_to"] = _flat(message.reply_to)
    if message.extra_headers:
        args["headers"] = dict(message.extra_headers)
    if message.attachments:
        args["attachments"] = [_attachment(a) for a in message.attachments]
    return args


def _attachment(attachment: t.Any) -> PostStackAttachment:
    headers = {name.lower(): value for name, value in attachment.headers.items()}
    content_id = headers.pop("content-id", None)
    if headers:
        raise InvalidEmailError(
            "attachments",
            f"only a Content-ID header can be sent with an attachment, not"
            f" {sorted(headers)}.",
        )
    data = attachment.data
    filename = attachment_filename(attachment)
    if filename is None:
        filename = "attachment" + (
            mimetypes.guess_extension(attachment.content_type) or ""
        )
    return PostStackAttachment(
        filename,
        data.encode("utf-8") if isinstance(data, str) else data,
        attachment.content_type,
        content_id.strip().strip("<>") if content_id else None,
    )
