"""The checks on ``extra=``: API fields this version does not know, merged
into the body as they are, that must never set or shadow a known field."""

from __future__ import annotations

import json
import re
import typing as t
from collections.abc import Mapping

from . import _fields
from .errors import InvalidEmailError

#: The camelCase names of the API's stored rows (reference §6.1), each with
#: the argument that sets that field.
_API_ALIASES = {
    "fromAddress": "from_",
    "fromName": "from_",
    "toAddresses": "to",
    "ccAddresses": "cc",
    "bccAddresses": "bcc",
    "replyTo": "reply_to",
    "htmlBody": "html",
    "textBody": "text",
    "scheduledAt": "scheduled_at",
    "idempotencyKey": "idempotency_key",
    "templateId": "template_id",
    "unsubscribeEnabled": "unsubscribe",
}
_FIELD_NAME = re.compile(r"[A-Za-z0-9_-]+")


def _folded(name: str) -> str:
    return "".join(char for char in name.casefold() if char.isalnum())


def check_extra(extra: object, known: Mapping[str, str]) -> dict[str, t.Any]:
    """``extra`` as a dict, once each key is a plain ASCII field name that
    no known field (``known`` maps names to the argument that sets them, or
    an API alias) matches case-folded and without punctuation, and each
    value is JSON data; else :class:`InvalidEmailError` naming ``extra``."""
    if extra is None:
        return {}
    if not isinstance(extra, Mapping):
        raise InvalidEmailError(
            "extra", f"must be a dict of API fields, not {type(extra).__name__}."
        )
    folded = {_folded(k): v for k, v in {**known, **_API_ALIASES}.items()}
    for key, value in extra.items():
        _check_key(key, folded)
        try:
            json.dumps(value, allow_nan=False)
        except (TypeError, ValueError):
            raise InvalidEmailError(
                "extra", f"the value of {key!r} is not JSON data: {value!r}."
            ) from None
        _fields.check_utf8("extra", value)
    return dict(extra)


def _check_key(key: object, folded: Mapping[str, str]) -> None:
    if not isinstance(key, str) or not key:
        raise InvalidEmailError("extra", f"the key {key!r} is not a field name.")
    _fields.check_utf8("extra", key)
    if not _FIELD_NAME.fullmatch(key):
        raise InvalidEmailError(
            "extra",
            f"the key {key!r} is not a field name: use ASCII letters, digits,"
            " '_' and '-' only.",
        )
    argument = folded.get(_folded(key))
    if argument is not None:
        raise InvalidEmailError(
            "extra", f"{key!r} is a known field: pass {argument}= instead."
        )
