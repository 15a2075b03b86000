"""Flask-Mail's ``Message`` and ``Attachment``, and their MIME rendering.

A :class:`Message` holds what Flask-Mail's holds, under the same names.
:meth:`Message.as_string` renders it as a MIME message with the standard
library's :mod:`email` package, for apps that log or test it; what is sent
is built from the same attributes by :func:`~flask_poststack.flask_mail.email_args`.
"""

from __future__ import annotations

import functools
import mimetypes
import re
import socket
import typing as t
import unicodedata
from collections.abc import Iterable
from collections.abc import Sequence
from email import policy
from email.charset import Charset
from email.encoders import encode_base64
from email.header import Header
from email.mime.base import MIMEBase
from email.mime.multipart import MIMEMultipart
from email.mime.text import MIMEText
from email.utils import formataddr
from email.utils import formatdate
from email.utils import make_msgid
from email.utils import parseaddr

from flask import current_app
from flask import has_app_context

from ..errors import InvalidEmailError
from ._headers import Address
from ._headers import bad_header
from ._headers import BadHeaderError
from ._headers import check_headers
from ._headers import flat as _flat

__all__ = [
    "Address",
    "Attachment",
    "BadHeaderError",
    "Message",
    "sanitize_address",
    "sanitize_addresses",
]

_SPACES = re.compile(r"\s+")


class IncompleteMessageError(InvalidEmailError, AssertionError):
    """A message without recipients or without a sender.

    Flask-Mail raised :exc:`AssertionError` here; this is one still, and an
    :exc:`~flask_poststack.InvalidEmailError` naming the argument.
    """


def _no_breaks(text: str) -> str:
    return text.replace("\r", "").replace("\n", "")


def sanitize_address(address: Address, encoding: str = "utf-8") -> str:
    """``address`` as a header value: line breaks dropped, a non-ASCII display
    name encoded (RFC 2047) in ``encoding``, a non-ASCII domain in IDNA; with
    a non-ASCII local part, all as UTF-8 (RFC 6532)."""
    if isinstance(address, tuple):
        name, addr = _no_breaks(address[0]), _no_breaks(address[1])
        addr = parseaddr(addr)[1] or addr
    else:
        name, addr = parseaddr(_no_breaks(str(address)))
    local, at, domain = addr.rpartition("@")
    if at and not domain.isascii():
        addr = f"{local}@{domain.encode('idna').decode('ascii')}"
    if not addr.isascii():
        # A UTF-8 local part (RFC 6532): as_string renders it with SMTPUTF8,
        # where the display name goes as UTF-8 too.
        return _flat((name, addr))
    try:
        return formataddr((name, addr), charset=encoding)
    except (UnicodeEncodeError, LookupError):
        return formataddr((name, addr), charset="utf-8")


def sanitize_addresses(
    addresses: Iterable[Address], encoding: str = "utf-8"
) -> list[str]:
    """:func:`sanitize_address` of each, without repeats, in order."""
    return list(dict.fromkeys(sanitize_address(a, encoding) for a in addresses))


@functools.cache
def _msgid_domain() -> str:
    # getfqdn() may wait on DNS: once per process, not once per message.
    return socket.getfqdn()


class Attachment:
    """A file attached to a :class:`Message`, as in Flask-Mail.

    :param filename: the name the recipient sees; without one, the email is
        sent with ``attachment`` and an extension guessed from
        ``content_type`` (the API needs a name).
    :param content_type: guessed from ``filename`` when ``None``.
    :param data: the content, bytes or text (sent as UTF-8). Required.
    :param disposition: ``"attachment"`` (default) or ``"inline"``.
    :param headers: MIME headers of the part; only ``Content-ID`` is sent
        (it makes an inline image, ``cid:...``).
    """

    def __init__(
        self,
        filename: str | None = None,
        content_type: str | None = None,
        data: str | bytes | None = None,
        disposition: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        if data is None:
            raise InvalidEmailError("data", "an attachment needs its data.")
        if content_type is None and filename is not None:
            content_type = mimetypes.guess_type(filename)[0]
        if content_type is None:
            text = isinstance(data, str)
            content_type = "text/plain" if text else "application/octet-stream"
        self.filename = filename
        self.content_type = content_type
        self.data = data
        self.disposition = disposition or "attachment"
        self.headers: dict[str, str] = dict(headers or {})


class Message:
    """An email, built as with Flask-Mail; send it with
    :meth:`Mail.send <flask_poststack.flask_mail.Mail.send>`.

    Takes Flask-Mail's arguments, in its order. ``sender`` defaults to
    ``MAIL_DEFAULT_SENDER`` (or ``POSTSTACK_DEFAULT_FROM``); a tuple
    ``(name, address)`` becomes ``"name <address>"``. ``date``, ``charset``,
    ``mail_options`` and ``rcpt_options`` shape :meth:`as_string` only: the
    API dates, encodes and routes what it sends.
    """

    def __init__(
        self,
        subject: str = "",
        recipients: Sequence[Address] | None = None,
        body: str | None = None,
        html: str | None = None,
        alts: dict[str, str] | Iterable[tuple[str, str]] | None = None,
        sender: Address | None = None,
        cc: Sequence[Address] | None = None,
        bcc: Sequence[Address] | None = None,
        attachments: Sequence[Attachment] | None = None,
        reply_to: Address | None = None,
        date: float | None = None,
        charset: str | None = None,
        extra_headers: dict[str, str] | None = None,
        mail_options: list[str] | None = None,
        rcpt_options: list[str] | None = None,
    ) -> None:
        if not sender and has_app_context():
            state = current_app.extensions.get("mail")
            sender = getattr(state, "default_sender", None)
        self.subject = subject
        self.recipients: list[Address] = list(recipients or [])
        self.body = body
        self.alts: dict[str, str] = dict(alts or {})
        if html is not None:
            self.html = html
        self.sender: str | None = _flat(sender) if sender else None
        self.cc: list[Address] = list(cc or [])
        self.bcc: list[Address] = list(bcc or [])
        self.attachments: list[Attachment] = list(attachments or [])
        self.reply_to = reply_to
        self.date = date
        self.charset = charset
        self.extra_headers = extra_headers
        self.mail_options: list[str] = list(mail_options or [])
        self.rcpt_options: list[str] = list(rcpt_options or [])
        self.msgId: str = make_msgid(domain=_msgid_domain())

    @property
    def html(self) -> str | None:
        """The HTML body (the ``"html"`` entry of :attr:`alts`)."""
        return self.alts.get("html")

    @html.setter
    def html(self, value: str | None) -> None:
        if value is None:
            self.alts.pop("html", None)
        else:
            self.alts["html"] = value

    @property
    def send_to(self) -> set[Address]:
        """Every recipient: ``recipients``, ``cc`` and ``bcc``, once each."""
        return {*self.recipients, *self.cc, *self.bcc}

    def add_recipient(self, recipient: Address) -> None:
        """Add an address to ``recipients``."""
        self.recipients.append(recipient)

    def attach(
        self,
        filename: str | None = None,
        content_type: str | None = None,
        data: str | bytes | None = None,
        disposition: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        """Add an :class:`Attachment` (same arguments)."""
        self.attachments.append(
            Attachment(filename, content_type, data, disposition, headers)
        )

    def has_bad_headers(self) -> bool:
        """Whether a header field (sender, reply-to, a recipient, cc, bcc,
        the subject, an extra header, an attachment's name, type or headers)
        holds CR, LF or another control character; a subject folded as
        RFC 5322 allows (CRLF, then a space or tab, then text) is fine."""
        return self.bad_header() is not None

    def bad_header(self) -> str | None:
        """The argument with a bad header (see :meth:`has_bad_headers`), as
        :class:`~flask_poststack.EmailArgs` names it, or ``None``."""
        return bad_header(self)

    def is_bad_headers(self) -> bool:
        """The old name of :meth:`has_bad_headers`."""
        return self.has_bad_headers()

    def send(self, connection: t.Any) -> None:
        """Send with ``connection`` (from ``mail.connect()``)."""
        connection.send(self)

    def as_string(self) -> str:
        """The message in MIME form, as text."""
        return self._mime().as_string()

    def as_bytes(self) -> bytes:
        """The message in MIME form, as bytes."""
        return self._mime().as_bytes()

    def __str__(self) -> str:
        return self.as_string()

    def __bytes__(self) -> bytes:
        return self.as_bytes()

    def _text(self, text: str, subtype: str) -> MIMEText:
        name = self.charset or "utf-8"
        try:
            text.encode(Charset(name).input_codec or name)
        except (UnicodeEncodeError, LookupError):
            name = "utf-8"
        charset = Charset(name)
        if text.isascii():
            charset.body_encoding = None  # type: ignore[assignment]  # 7bit as is
        return MIMEText(text, subtype, charset)  # type: ignore[arg-type]

    def _mime(self) -> MIMEBase:
        check_headers(self)
        encoding = self.charset or "utf-8"
        part: MIMEBase = self._text(self.body or "", "plain")
        if self.alts:
            part = MIMEMultipart("alternative", None, [part])
            for subtype, content in self.alts.items():
                part.attach(self._text(content, subtype))
        root = MIMEMultipart("mixed", None, [part]) if self.attachments else part
        for attachment in self.attachments:
            root.attach(_attachment_part(attachment))
        if self.subject:
            root["Subject"] = _encoded(self.subject, encoding)
        root["From"] = sanitize_address(self.sender or "", encoding)
        root["To"] = ", ".join(sanitize_addresses(self.recipients, encoding))
        root["Date"] = formatdate(self.date, localtime=True)
        root["Message-ID"] = self.msgId
        if self.cc:
            root["Cc"] = ", ".join(sanitize_addresses(self.cc, encoding))
        if self.reply_to:
            root["Reply-To"] = sanitize_address(self.reply_to, encoding)
        for name, value in (self.extra_headers or {}).items():
            root[name] = _encoded(value, encoding)
        # Only a UTF-8 local part needs SMTPUTF8; other text stays RFC 2047.
        addresses = ("From", "To", "Cc", "Reply-To")
        utf8 = any(not str(root[name]).isascii() for name in addresses if name in root)
        root.policy = policy.SMTPUTF8 if utf8 else policy.SMTP
        return root


def _encoded(value: str, encoding: str) -> str:
    """A header value, RFC 2047 encoded in ``encoding`` (else UTF-8) when not ASCII."""
    if value.isascii():
        return value
    try:
        return Header(value, encoding).encode()
    except (UnicodeEncodeError, LookupError):
        return Header(value, "utf-8").encode()


def attachment_filename(attachment: Attachment) -> str | None:
    """The file name to use, ASCII only with ``MAIL_ASCII_ATTACHMENTS``."""
    filename = attachment.filename
    state = current_app.extensions.get("mail") if has_app_context() else None
    if filename is not None and getattr(state, "ascii_attachments", False):
        ascii_name = unicodedata.normalize("NFKD", filename)
        ascii_name = ascii_name.encode("ascii", "ignore").decode("ascii")
        filename = _SPACES.sub(" ", ascii_name).strip()
    return filename


def _attachment_part(attachment: Attachment) -> MIMEBase:
    main, _, sub = attachment.content_type.partition("/")
    part = MIMEBase(main, sub or "octet-stream")
    data = attachment.data
    part.set_payload(data.encode("utf-8") if isinstance(data, str) else data)
    encode_base64(part)
    filename = attachment_filename(attachment)
    if filename is None:
        part.add_header("Content-Disposition", attachment.disposition)
    elif filename.isascii():
        part.add_header(
            "Content-Disposition", attachment.disposition, filename=filename
        )
    else:
        part.add_header(
            "Content-Disposition",
            attachment.disposition,
            filename=("UTF8", "", filename),
        )
    for name, value in attachment.headers.items():
        part.add_header(name, value)
    return part
