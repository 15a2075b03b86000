"""The header check of a Flask-Mail ``Message``: one rule for sending and
for :meth:`~flask_poststack.flask_mail.Message.as_string`.

A header field (subject, an address, an extra header, an attachment's name,
type or headers) holding CR, LF or another control character would inject
headers into the rendered message: it is a
:exc:`~flask_poststack.flask_mail.BadHeaderError`.
"""

from __future__ import annotations

import re
import typing as t

from .._fields import CONTROL
from .._fields import header_map
from ..errors import InvalidEmailError

__all__ = ["BadHeaderError", "bad_header", "check_headers", "flat"]

#: An address as Flask-Mail takes it: ``"Name <a@b.c>"`` or ``("Name", "a@b.c")``.
Address: t.TypeAlias = "str | tuple[str, str]"

_SPECIALS = re.compile(r'[][\\()<>@,:;".]')


class BadHeaderError(InvalidEmailError):
    """A header field (subject, sender, reply-to, a recipient, cc, bcc, an
    extra header, an attachment's name, type or headers) holds CR, LF or
    another control character.

    Flask-Mail's exception; here also an
    :exc:`~flask_poststack.InvalidEmailError` naming the argument.
    """

    def __init__(
        self,
        argument: str = "subject",
        message: str = "must not contain CR, LF or control characters (except a"
        " folded subject).",
    ) -> None:
        super().__init__(argument, message)


def flat(address: Address) -> str:
    """``("Name", "a@b.c")`` as ``"Name <a@b.c>"``, quoting a name that
    needs it (``"Doe, Jane"``); a string as it is."""
    if not isinstance(address, tuple):
        return str(address)
    name, addr = address
    if _SPECIALS.search(name):
        name = '"{}"'.format(name.replace("\\", "\\\\").replace('"', '\\"'))
    return f"{name} <{addr}>" if name else addr


def _bad(value: object) -> bool:
    return isinstance(value, str) and CONTROL.search(value) is not None


def _bad_subject(subject: str) -> bool:
    # RFC 5322 folding (CRLF, then a space or tab, then text) is allowed.
    first, *rest = subject.split("\r\n")
    lines = [first, *(line[1:] for line in rest if line[:1] in (" ", "\t"))]
    return len(lines) != len(rest) + 1 or any(
        not line.strip() or _bad(line) for line in lines
    )


def bad_header(message: t.Any) -> str | None:
    """The argument of ``message`` (a ``Message``) with a bad header field,
    as :class:`~flask_poststack.EmailArgs` names it, or ``None``."""
    if message.sender and _bad(flat(message.sender)):
        return "from_"
    if message.reply_to and _bad(flat(message.reply_to)):
        return "reply_to"
    for argument in ("to", "cc", "bcc"):
        addresses = getattr(message, "recipients" if argument == "to" else argument)
        if any(_bad(flat(a)) for a in addresses):
            return argument
    if message.subject and _bad_subject(message.subject):
        return "subject"
    headers = (message.extra_headers or {}).items()
    if any(_bad(part) for item in headers for part in item):
        return "headers"
    for attachment in message.attachments:
        fields = [attachment.filename, attachment.content_type, attachment.disposition]
        fields += [part for item in attachment.headers.items() for part in item]
        if any(_bad(field) for field in fields):
            return "attachments"
    return None


def check_headers(message: t.Any) -> None:
    """Refuse what would inject headers, and extra headers that sending
    refuses (``To``, ``Content-Type``, ...).

    :raises BadHeaderError: see :func:`bad_header`.
    :raises InvalidEmailError: naming ``headers``.
    """
    bad = bad_header(message)
    if bad is not None:
        raise BadHeaderError(bad)
    header_map(message.extra_headers)
