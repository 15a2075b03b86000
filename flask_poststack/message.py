"""Validate the arguments of ``send_email`` / ``enqueue_email`` and build the
JSON body of ``POST /emails``.

:func:`build_payload` is the one place where user input becomes a wire
payload, so a synchronous send and a queued one send the same bytes. It never
touches the network, and everything it returns is plain JSON data.
"""

from __future__ import annotations

import collections.abc as cabc
import datetime as dt
import fnmatch
import functools
import json
import math
import re
import typing as t

from email_validator import EmailNotValidError
from email_validator import validate_email

from ._attachments import Attachment
from ._attachments import AttachmentLike
from ._attachments import AttachmentPayload
from ._attachments import build_attachments
from ._attachments import MAX_ATTACHMENT_BYTES
from ._attachments import MAX_TOTAL_ATTACHMENT_BYTES
from ._dates import parse_iso_datetime
from ._templates import render_email
from .config import Settings
from .errors import ConfigurationError
from .errors import InvalidEmailError
from .errors import RecipientNotAllowedError

__all__ = [
    "MAX_ATTACHMENT_BYTES",
    "MAX_IDEMPOTENCY_KEY_LENGTH",
    "MAX_RECIPIENTS",
    "MAX_TOTAL_ATTACHMENT_BYTES",
    "ORIGINAL_RECIPIENTS_HEADER",
    "Attachment",
    "AttachmentLike",
    "AttachmentPayload",
    "Payload",
    "build_payload",
]

#: Most addresses accepted in each of ``to``, ``cc`` and ``bcc``.
MAX_RECIPIENTS = 50
#: Longest ``idempotency_key`` accepted.
MAX_IDEMPOTENCY_KEY_LENGTH = 255
#: Header that keeps the original recipients visible under ``POSTSTACK_REDIRECT_TO``.
ORIGINAL_RECIPIENTS_HEADER = "X-PostStack-Original-Recipients"

#: Headers that have their own argument; setting them in ``headers`` is refused.
_RESERVED_HEADERS = {
    "from": "from_",
    "to": "to",
    "cc": "cc",
    "bcc": "bcc",
    "subject": "subject",
    "reply-to": "reply_to",
}
# C0 controls but TAB, DEL, and the Unicode line separators: CR and LF inject
# headers, the others are folded into line breaks by some mail libraries.
_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f\x85\u2028\u2029]")
_HEADER_NAME = re.compile(r"^[!-9;-~]+$")
_TOKEN = re.compile(r"^[!-~]+$")

#: The JSON body of ``POST /emails``, as :func:`build_payload` returns it.
Payload = t.TypedDict(
    "Payload",
    {
        "from": str,
        "to": list[str],
        "cc": list[str],
        "bcc": list[str],
        "reply_to": str,
        "subject": str,
        "html": str,
        "text": str,
        "headers": dict[str, str],
        "tags": list[str],
        "attachments": list[AttachmentPayload],
        "template_id": str,
        "variables": dict[str, str],
        "scheduled_at": str,
        "idempotency_key": str,
    },
    total=False,
)


def build_payload(
    settings: Settings,
    *,
    to: str | t.Sequence[str] | None = None,
    subject: str | None = None,
    html: str | None = None,
    text: str | None = None,
    from_: str | None = None,
    cc: str | t.Sequence[str] | None = None,
    bcc: str | t.Sequence[str] | None = None,
    reply_to: str | None = None,
    headers: t.Mapping[str, str] | None = None,
    tags: str | t.Sequence[str] | None = None,
    attachments: t.Sequence[AttachmentLike] | None = None,
    template: str | None = None,
    context: t.Mapping[str, t.Any] | None = None,
    template_id: str | None = None,
    variables: t.Mapping[str, t.Any] | None = None,
    scheduled_at: dt.datetime | str | None = None,
    idempotency_key: str | None = None,
) -> Payload:
    r"""Validate the arguments of an email and return its ``POST /emails`` body.

    The result is plain JSON data without ``None`` values, ready for
    ``client.emails.send()`` or for an RQ job. Rendering a Jinja ``template``
    needs an app context; nothing else does.

    :param settings: the app's settings, for the defaults
        (``POSTSTACK_DEFAULT_FROM``, ``..._REPLY_TO``, ``..._TAGS``) and the
        staging safety nets (``POSTSTACK_REDIRECT_TO``,
        ``POSTSTACK_ALLOWED_RECIPIENTS``).
    :param to: an address or a list of up to 50. Display names such as
        ``"Ada Lovelace <ada@example.com>"`` are accepted.
    :param subject: required unless a template supplies it.
    :param html: the HTML body.
    :param text: the plain text body.
    :param from\_: the sender, sent as the wire key ``from``. Defaults to
        ``POSTSTACK_DEFAULT_FROM``.
    :param cc: like ``to``.
    :param bcc: like ``to``.
    :param reply_to: one address. Defaults to ``POSTSTACK_DEFAULT_REPLY_TO``.
    :param headers: extra MIME headers, name to value.
    :param tags: added after ``POSTSTACK_DEFAULT_TAGS``; duplicates dropped.
    :param attachments: :class:`Attachment` objects, mappings with the same
        keys, paths, or binary file objects.
    :param template: a Jinja template name without suffix: its ``.html``,
        ``.txt`` and ``.subject.txt`` files are rendered, whichever exist.
    :param context: the variables for ``template``.
    :param template_id: a server-side template (``tpl_...``).
    :param variables: the variables for ``template_id``: string keys;
        string, number or boolean values, sent as strings.
    :param scheduled_at: when to send: an aware datetime or an ISO-8601 string
        with an offset or ``Z``.
    :param idempotency_key: makes repeated sends of this email replay instead.
    :raises InvalidEmailError: an argument is invalid; ``.argument`` names it.
    :raises RecipientNotAllowedError: a recipient is outside
        ``POSTSTACK_ALLOWED_RECIPIENTS``.

    .. versionadded:: 0.1.0
    """
    if template is not None and template_id is not None:
        raise InvalidEmailError(
            "template", "give either 'template' (Jinja) or 'template_id', not both."
        )
    if context is not None and template is None:
        raise InvalidEmailError("context", "is only used together with 'template'.")
    if variables is not None and template_id is None:
        raise InvalidEmailError(
            "variables", "is only used together with 'template_id'."
        )

    recipients = {
        name: _address_list(name, value)
        for name, value in (("to", to), ("cc", cc), ("bcc", bcc))
    }
    if not any(recipients.values()):
        raise InvalidEmailError("to", "the email has no recipient.")
    if not recipients["to"]:
        raise InvalidEmailError("to", "give at least one address in 'to'.")
    sender = _sender(from_, settings.default_from)
    if reply_to is None:
        reply_to = settings.default_reply_to
    if reply_to is not None:
        reply_to = _address("reply_to", reply_to, single=True)[0]
    extra_headers = _headers(headers)
    all_tags = _tags(settings.default_tags, tags)
    subject = _optional_str("subject", subject)
    html = _optional_str("html", html)
    text = _optional_str("text", text)
    if template is not None:
        rendered = render_email(template, context)
        subject = subject or rendered.subject
        html = html or rendered.html
        text = text or rendered.text
    if subject is not None and _CONTROL.search(subject):
        raise InvalidEmailError(
            "subject", "must not contain CR, LF or other control characters."
        )
    if template_id is not None:
        template_id = _token("template_id", template_id)
    if not (html or text or template_id):
        raise InvalidEmailError(
            "html", "the email has no body: give html, text, template or template_id."
        )
    if not subject and template_id is None:
        hint = f" or add {template}.subject.txt" if template else ""
        raise InvalidEmailError("subject", f"is required; pass subject={hint}.")
    rest: dict[str, t.Any] = {
        "attachments": None if attachments is None else build_attachments(attachments),
        "template_id": template_id,
        "variables": None if variables is None else _variables(variables),
        "scheduled_at": None if scheduled_at is None else _scheduled_at(scheduled_at),
        "idempotency_key": None
        if idempotency_key is None
        else _token("idempotency_key", idempotency_key, MAX_IDEMPOTENCY_KEY_LENGTH),
    }

    if settings.redirect_to is not None:
        extra_headers = _redirect(settings.redirect_to, recipients, extra_headers)
    if settings.allowed_recipients:
        _check_allowed(settings.allowed_recipients, recipients)

    fields = {
        "from": sender,
        **{name: [written for written, _ in recipients[name]] for name in recipients},
        "reply_to": reply_to,
        "subject": subject,
        "html": html,
        "text": text,
        "headers": extra_headers,
        "tags": all_tags,
        **rest,
    }
    # Unset and empty fields are left out: the wire has no nulls.
    payload = {key: value for key, value in fields.items() if value}
    for key, value in payload.items():
        _check_utf8("from_" if key == "from" else key, value)
    return t.cast(Payload, payload)


def _check_utf8(argument: str, value: object) -> None:
    """Refuse strings the JSON body cannot carry (lone surrogates, say)."""
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise InvalidEmailError(
                argument,
                "contains characters that are not valid Unicode text"
                " (lone surrogates); it cannot be sent as UTF-8.",
            ) from None
    elif isinstance(value, dict):
        for item in value.items():
            _check_utf8(argument, item)
    elif isinstance(value, (list, tuple)):
        for item in value:
            _check_utf8(argument, item)


_Address = tuple[str, str]  # (as written, bare address for matching)


def _address(argument: str, value: object, *, single: bool = False) -> _Address:
    if not isinstance(value, str):
        kind = "an address" if single else "an address or a list of addresses"
        raise InvalidEmailError(
            argument, f"must be {kind}, not {type(value).__name__}."
        )
    written = value.strip()
    if not written:
        raise InvalidEmailError(argument, "an address must not be empty.")
    if _CONTROL.search(written):
        raise InvalidEmailError(
            argument, f"{written!r} must not contain CR, LF or control characters."
        )
    try:
        # test_environment only admits @*.test domains; with no DNS anyway.
        valid = validate_email(
            written,
            check_deliverability=False,
            allow_display_name=True,
            test_environment=True,
        )
    except EmailNotValidError as e:
        hint = " Give several addresses as a list." if "," in written else ""
        raise InvalidEmailError(
            argument, f"{written!r} is not a valid email address: {e}{hint}"
        ) from None
    return written, valid.normalized


def _address_list(argument: str, value: object) -> list[_Address]:
    if value is None:
        return []
    if isinstance(value, str):
        value = [value]
    elif isinstance(value, (bytes, bytearray)) or not isinstance(value, cabc.Sequence):
        raise InvalidEmailError(
            argument,
            f"must be an address or a list of addresses, not {type(value).__name__}.",
        )
    if len(value) > MAX_RECIPIENTS:
        raise InvalidEmailError(
            argument, f"at most {MAX_RECIPIENTS} addresses, got {len(value)}."
        )
    return [_address(argument, item) for item in value]


def _sender(from_: object, default: str | None) -> str:
    if from_ is not None:
        return _address("from_", from_, single=True)[0]
    if default is None:
        raise InvalidEmailError(
            "from_",
            "no sender: pass from_= or set POSTSTACK_DEFAULT_FROM in the config.",
        )
    try:
        return _configured_address("from_", default)
    except InvalidEmailError as e:
        raise InvalidEmailError(
            "from_", f"POSTSTACK_DEFAULT_FROM: {e.message}"
        ) from None


@functools.lru_cache(maxsize=64)
def _configured_address(argument: str, value: str) -> str:
    # A configured address (POSTSTACK_DEFAULT_FROM) is the same on every send:
    # validate it once, not per email (email-validator is most of
    # build_payload's cost). Errors are not cached, so they repeat as before.
    return _address(argument, value, single=True)[0]


def _optional_str(argument: str, value: object) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise InvalidEmailError(
            argument, f"must be a string, not {type(value).__name__}."
        )
    # An empty string means "not given", so a template can still fill it in.
    return value if value.strip() else None


def _headers(headers: object) -> dict[str, str]:
    if headers is None:
        return {}
    if not isinstance(headers, cabc.Mapping):
        raise InvalidEmailError(
            "headers",
            f"must be a dict of names to values, not {type(headers).__name__}.",
        )
    result: dict[str, str] = {}
    for name, value in headers.items():
        if not isinstance(name, str) or not _HEADER_NAME.match(name):
            raise InvalidEmailError(
                "headers",
                f"{name!r} is not a header name (printable ASCII, no space,"
                " colon, CR or LF).",
            )
        argument = _RESERVED_HEADERS.get(name.lower())
        if argument is not None:
            raise InvalidEmailError(
                "headers", f"set {name!r} with the {argument!r} argument instead."
            )
        if not isinstance(value, str) or _CONTROL.search(value):
            raise InvalidEmailError(
                "headers",
                f"the value of {name!r} must be a string without CR, LF or"
                " control characters.",
            )
        result[name] = value
    return result


def _tags(defaults: t.Sequence[str], tags: object) -> list[str]:
    if tags is None:
        tags = []
    elif isinstance(tags, str):
        tags = [tags]
    elif isinstance(tags, (bytes, bytearray)) or not isinstance(tags, cabc.Sequence):
        raise InvalidEmailError(
            "tags", f"must be a string or a list of strings, not {type(tags).__name__}."
        )
    result: list[str] = []
    for tag in [*defaults, *tags]:
        if not isinstance(tag, str) or not tag.strip() or _CONTROL.search(tag):
            raise InvalidEmailError(
                "tags", f"{tag!r} is not a tag: a non-empty string without CR or LF."
            )
        if tag not in result:
            result.append(tag)
    return result


def _token(argument: str, value: object, max_length: int = 255) -> str:
    if not isinstance(value, str) or not _TOKEN.match(value) or len(value) > max_length:
        raise InvalidEmailError(
            argument,
            f"must be a non-empty string of at most {max_length} printable ASCII"
            " characters without spaces.",
        )
    return value


def _variables(variables: object) -> dict[str, str]:
    # The API takes strings only (object<string,string>): numbers and
    # booleans go as JSON writes them (1.5, true), as they used to go on the
    # wire before; str() would turn a (str, Enum) member into "Color.RED".
    if not isinstance(variables, cabc.Mapping):
        raise InvalidEmailError(
            "variables", f"must be a dict, not {type(variables).__name__}."
        )
    result: dict[str, str] = {}
    for key, value in variables.items():
        if not isinstance(key, str):
            raise InvalidEmailError("variables", f"the key {key!r} is not a string.")
        if not isinstance(value, (str, int, float)) or (
            isinstance(value, float) and not math.isfinite(value)
        ):
            raise InvalidEmailError(
                "variables",
                f"the value of {key!r} must be a string, number or boolean,"
                f" not {value!r}.",
            )
        result[key] = (
            str.__str__(value) if isinstance(value, str) else json.dumps(value)
        )
    return result


def _scheduled_at(value: object) -> str:
    when: dt.datetime
    if isinstance(value, dt.datetime):
        when = value
    elif isinstance(value, str):
        try:
            when = parse_iso_datetime(value)
        except ValueError as exc:
            raise InvalidEmailError("scheduled_at", str(exc)) from None
    else:
        raise InvalidEmailError(
            "scheduled_at",
            f"must be a timezone-aware datetime or an ISO-8601 string, not"
            f" {type(value).__name__}.",
        )
    if when.utcoffset() is None:
        raise InvalidEmailError(
            "scheduled_at",
            f"{value!r} has no timezone; give a timezone-aware datetime (e.g."
            " tzinfo=datetime.timezone.utc) or a string ending in 'Z' or '+HH:MM'.",
        )
    try:
        utc = when.astimezone(dt.timezone.utc)
    except OverflowError:
        raise _scheduled_at_out_of_range(value) from None
    return utc.replace(tzinfo=None).isoformat(timespec="milliseconds") + "Z"


def _scheduled_at_out_of_range(value: object) -> InvalidEmailError:
    return InvalidEmailError("scheduled_at", f"{value!r} is out of range.")


def _redirect(
    redirect_to: str,
    recipients: dict[str, list[_Address]],
    headers: dict[str, str],
) -> dict[str, str]:
    try:
        target = _address("to", redirect_to, single=True)
    except InvalidEmailError as e:
        raise ConfigurationError("POSTSTACK_REDIRECT_TO", e.message) from None
    # Bare addresses: a display name could hold ";" and blur the fields.
    original = "; ".join(
        f"{name}={', '.join(bare for _, bare in addresses)}"
        for name, addresses in recipients.items()
        if addresses
    )
    recipients.update(to=[target], cc=[], bcc=[])
    headers = {
        k: v
        for k, v in headers.items()
        if k.lower() != ORIGINAL_RECIPIENTS_HEADER.lower()
    }
    headers[ORIGINAL_RECIPIENTS_HEADER] = original
    return headers


def _check_allowed(
    patterns: t.Sequence[str], recipients: dict[str, list[_Address]]
) -> None:
    lowered = [p.lower() for p in patterns]
    for name, addresses in recipients.items():
        for _, bare in addresses:
            if not any(fnmatch.fnmatchcase(bare.lower(), p) for p in lowered):
                raise RecipientNotAllowedError(
                    name,
                    f"{bare!r} is not in POSTSTACK_ALLOWED_RECIPIENTS"
                    f" ({', '.join(patterns)}); the email was not sent.",
                )
