"""Validators for the fields of one email, each naming its argument.

Used by :func:`flask_poststack.message.build_payload`; each raises
:exc:`~flask_poststack.InvalidEmailError` with the argument's name.
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

from ._dates import parse_iso_datetime
from ._display_name import DisplayNameError
from ._display_name import split_address
from .errors import ConfigurationError
from .errors import InvalidEmailError
from .errors import RecipientNotAllowedError

#: Header that keeps the original recipients visible under ``POSTSTACK_REDIRECT_TO``.
ORIGINAL_RECIPIENTS_HEADER = "X-PostStack-Original-Recipients"
#: Most addresses accepted in each of ``to``, ``cc`` and ``bcc``.
MAX_RECIPIENTS = 50

#: Headers that have their own argument; setting them in ``headers`` is refused.
_RESERVED_HEADERS = {
    "from": "from_",
    "to": "to",
    "cc": "cc",
    "bcc": "bcc",
    "subject": "subject",
    "reply-to": "reply_to",
}
_RECIPIENTS_REASON = (
    "some mail servers deliver to it, past POSTSTACK_REDIRECT_TO and"
    " POSTSTACK_ALLOWED_RECIPIENTS"
)
_SENDER_REASON = (
    "it names who sent the email; the API sets the sender from 'from_'"
    " (and 'reply_to' for replies)"
)
_TRACE_REASON = (
    "mail servers add it on delivery; a forged one can misroute the email or"
    " its bounces"
)
_MIME_REASON = "the API builds the MIME structure from html, text and attachments"
#: Headers refused in ``headers`` because they route the email or shape its
#: MIME structure, each with the reason the error gives (docs/sending.md).
ROUTING_HEADERS = {
    "resent-to": _RECIPIENTS_REASON,
    "resent-cc": _RECIPIENTS_REASON,
    "resent-bcc": _RECIPIENTS_REASON,
    "resent-from": _SENDER_REASON,
    "resent-sender": _SENDER_REASON,
    "sender": _SENDER_REASON,
    "return-path": _TRACE_REASON + " (it is where bounces go)",
    "delivered-to": _TRACE_REASON,
    "envelope-to": _TRACE_REASON,
    "content-type": _MIME_REASON,
    "content-transfer-encoding": _MIME_REASON,
    "content-disposition": _MIME_REASON,
    "mime-version": _MIME_REASON,
    "dkim-signature": "the API signs the email; a signature made for other"
    " bytes fails DKIM and can get the email rejected",
    "message-id": "the API gives each email its own; a reused one makes"
    " receivers drop the email as a duplicate",
}
# C0 controls but TAB, DEL, and the Unicode line separators: CR and LF inject
# headers, the others are folded into line breaks by some mail libraries.
CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f\x85\u2028\u2029]")
_HEADER_NAME = re.compile(r"[!-9;-~]+")
_TOKEN = re.compile(r"[!-~]+")


def check_utf8(argument: str, value: object) -> None:
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
            check_utf8(argument, item)
    elif isinstance(value, (list, tuple)):
        for item in value:
            check_utf8(argument, item)


_Address = tuple[str, str]  # (as written, bare address for matching)


def address(argument: str, value: object, *, single: bool = False) -> _Address:
    if not isinstance(value, str):
        kind = "an address" if single else "an address or a list of addresses"
        raise InvalidEmailError(
            argument, f"must be {kind}, not {type(value).__name__}."
        )
    written = value.strip()
    if not written:
        raise InvalidEmailError(argument, "an address must not be empty.")
    if CONTROL.search(written):
        raise InvalidEmailError(
            argument, f"{written!r} must not contain CR, LF or control characters."
        )
    hint = " Give several addresses as a list." if "," in written else ""
    try:
        # The display name follows the rule the sandbox (and so the API's
        # validation) applies; email-validator checks only the bare address.
        bare, _ = split_address(written)
    except DisplayNameError as e:
        raise InvalidEmailError(
            argument, f"{written!r} is not a valid email address: {e}{hint}"
        ) from None
    try:
        # test_environment only admits @*.test domains; with no DNS anyway.
        valid = validate_email(bare, check_deliverability=False, test_environment=True)
    except EmailNotValidError as e:
        raise InvalidEmailError(
            argument, f"{written!r} is not a valid email address: {e}{hint}"
        ) from None
    return written, valid.normalized


def address_list(argument: str, value: object) -> list[_Address]:
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
    return [address(argument, item) for item in value]


def sender(from_: object, default: str | None) -> str:
    if from_ is not None:
        return address("from_", from_, single=True)[0]
    if default is None:
        raise InvalidEmailError(
            "from_",
            "no sender: pass from_= or set POSTSTACK_DEFAULT_FROM in the config.",
        )
    try:
        return configured_address("from_", default)
    except InvalidEmailError as e:
        raise InvalidEmailError(
            "from_", f"POSTSTACK_DEFAULT_FROM: {e.message}"
        ) from None


@functools.lru_cache(maxsize=64)
def configured_address(argument: str, value: str) -> str:
    # A configured address (POSTSTACK_DEFAULT_FROM) is the same on every send:
    # validate it once, not per email (email-validator is most of
    # build_payload's cost). Errors are not cached, so they repeat as before.
    return address(argument, value, single=True)[0]


def optional_str(argument: str, value: object) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise InvalidEmailError(
            argument, f"must be a string, not {type(value).__name__}."
        )
    # An empty string means "not given", so a template can still fill it in.
    return value if value.strip() else None


def header_map(headers: object) -> dict[str, str]:
    if headers is None:
        return {}
    if not isinstance(headers, cabc.Mapping):
        raise InvalidEmailError(
            "headers",
            f"must be a dict of names to values, not {type(headers).__name__}.",
        )
    result: dict[str, str] = {}
    for name, value in headers.items():
        if not isinstance(name, str) or not _HEADER_NAME.fullmatch(name):
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
        reason = ROUTING_HEADERS.get(name.lower())
        if reason is not None:
            raise InvalidEmailError(
                "headers", f"{name!r} cannot be set in headers: {reason}."
            )
        if not isinstance(value, str) or CONTROL.search(value):
            raise InvalidEmailError(
                "headers",
                f"the value of {name!r} must be a string without CR, LF or"
                " control characters.",
            )
        result[name] = value
    return result


def tag_list(defaults: t.Sequence[str], tags: object) -> list[str]:
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
        if not isinstance(tag, str) or not tag.strip() or CONTROL.search(tag):
            raise InvalidEmailError(
                "tags", f"{tag!r} is not a tag: a non-empty string without CR or LF."
            )
        if tag not in result:
            result.append(tag)
    return result


def token(argument: str, value: object, max_length: int = 255) -> str:
    if (
        not isinstance(value, str)
        or not _TOKEN.fullmatch(value)
        or len(value) > max_length
    ):
        raise InvalidEmailError(
            argument,
            f"must be a non-empty string of at most {max_length} printable ASCII"
            " characters without spaces.",
        )
    return value


def variable_map(variables: object) -> dict[str, str]:
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


def scheduled_time(value: object) -> str:
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
        raise scheduled_at_out_of_range(value) from None
    return utc.replace(tzinfo=None).isoformat(timespec="milliseconds") + "Z"


def scheduled_at_out_of_range(value: object) -> InvalidEmailError:
    return InvalidEmailError("scheduled_at", f"{value!r} is out of range.")


def redirect(
    redirect_to: str,
    recipients: dict[str, list[_Address]],
    headers: dict[str, str],
) -> dict[str, str]:
    try:
        target = address("to", redirect_to, single=True)
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


def check_allowed(
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


TRACKING_KEYS = ("opens", "clicks")


def tracking(value: object, default: t.Mapping[str, bool] | None) -> dict[str, bool]:
    """``{"opens": bool, "clicks": bool}`` (either may be left out) over the
    app's default; ``True``/``False`` turn both on or off."""
    if value is None:
        return dict(default or {})
    if isinstance(value, bool):
        return dict.fromkeys(TRACKING_KEYS, value)
    if not isinstance(value, cabc.Mapping):
        raise InvalidEmailError(
            "tracking",
            'must be {"opens": bool, "clicks": bool} (or True/False for both),'
            f" not {type(value).__name__}.",
        )
    for key, flag in value.items():
        if key not in TRACKING_KEYS:
            raise InvalidEmailError(
                "tracking", f"unknown key {key!r}: the keys are 'opens' and 'clicks'."
            )
        if not isinstance(flag, bool):
            raise InvalidEmailError(
                "tracking", f"the value of {key!r} must be True or False, not {flag!r}."
            )
    return {**(default or {}), **value}


def flag(argument: str, value: object, default: bool | None) -> bool | None:
    if value is None:
        return default
    if not isinstance(value, bool):
        raise InvalidEmailError(argument, f"must be True or False, not {value!r}.")
    return value
