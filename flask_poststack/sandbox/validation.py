"""Validation of ``POST /emails`` bodies.

Two statuses, as the API's error table has them: 400 ``invalid_request``
when the body is malformed (not JSON, a required field missing, a field of the
wrong type, bad base64, an unparseable date) and 422 ``unprocessable_entity``
when it is well-formed but unacceptable (an address that is not one, too many
recipients, attachments over the size limits).
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import re
import typing as t
from datetime import datetime

from .._display_name import DisplayNameError
from .._display_name import split_address as split_address
from ._util import parse_iso
from .config import SandboxConfig

# split_address is re-exported: the one display-name rule, shared with
# flask_poststack._fields, so the sandbox and the extension cannot drift.
_ADDRESS = re.compile(r"^[^@\s<>\"]+@[^@\s<>\".]+(\.[^@\s<>\".]+)+$")
_B64_WS = re.compile(rb"\s+")


class InvalidRequest(Exception):
    """A request the API refuses; becomes ``{"error", "code"}``."""

    def __init__(
        self,
        message: str,
        status: int = 400,
        code: str = "invalid_request",
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.code = code
        self.headers = headers or {}


def unprocessable(message: str) -> InvalidRequest:
    return InvalidRequest(message, 422, "unprocessable_entity")


@dataclasses.dataclass
class Attachment:
    """A stored attachment: ``content`` is the decoded bytes."""

    filename: str
    content: bytes
    content_type: str | None = None
    content_id: str | None = None

    def to_dict(self) -> dict[str, t.Any]:
        return {
            "filename": self.filename,
            "contentType": self.content_type,
            "contentId": self.content_id,
            "size": len(self.content),
        }


@dataclasses.dataclass
class EmailInput:
    """A validated send request."""

    from_address: str
    from_name: str | None
    to: list[str]
    cc: list[str] | None = None
    bcc: list[str] | None = None
    reply_to: list[str] | None = None
    subject: str | None = None
    html: str | None = None
    text: str | None = None
    headers: dict[str, str] | None = None
    tags: list[str] | None = None
    attachments: list[Attachment] = dataclasses.field(default_factory=list)
    scheduled_at: datetime | None = None
    template_id: str | None = None
    variables: dict[str, t.Any] | None = None
    unsubscribe: bool = False
    #: ``{"opens"?: bool, "clicks"?: bool}``; ``None``: the domain's defaults.
    tracking: dict[str, bool] | None = None
    idempotency_key: str | None = None
    #: Fields of the body this sandbox does not know (``signature``,
    #: ``idempotency_window_hours``...): accepted and kept as sent, so a
    #: test can see what went on the wire.
    other: dict[str, t.Any] = dataclasses.field(default_factory=dict)


#: The fields :func:`parse_send` reads.
KNOWN_FIELDS = frozenset(
    {
        "from", "to", "cc", "bcc", "reply_to", "subject", "html", "text",
        "headers", "tags", "attachments", "scheduled_at", "template_id",
        "variables", "unsubscribe", "tracking", "idempotency_key",
    }
)  # fmt: skip


def _check_address(field: str, value: str) -> None:
    try:
        address, _ = split_address(value)
    except DisplayNameError as e:
        raise unprocessable(
            f"Invalid email address in '{field}': {value!r} ({e})"
        ) from None
    if not _ADDRESS.match(address):
        raise unprocessable(f"Invalid email address in '{field}': {value!r}")


def _string(body: t.Mapping[str, t.Any], field: str) -> str | None:
    value = body.get(field)
    if value is None:
        return None
    if not isinstance(value, str):
        raise InvalidRequest(f"'{field}' must be a string")
    return value


def _addresses(
    body: t.Mapping[str, t.Any], field: str, config: SandboxConfig, *, bare: bool
) -> list[str] | None:
    value = body.get(field)
    if value is None:
        return None
    if isinstance(value, str) and bare:
        value = [value]
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise InvalidRequest(f"'{field}' must be an array of email addresses")
    if len(value) > config.recipient_cap:
        raise unprocessable(
            f"Too many recipients in '{field}' (at most {config.recipient_cap})"
        )
    for item in value:
        _check_address(field, item)
    return list(value)


def _string_map(body: t.Mapping[str, t.Any], field: str) -> dict[str, t.Any] | None:
    value = body.get(field)
    if value is None:
        return None
    if not isinstance(value, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in value.items()
    ):
        raise InvalidRequest(f"'{field}' must be an object of string values")
    return dict(value)


def _attachments(value: t.Any, config: SandboxConfig) -> list[Attachment]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise InvalidRequest("'attachments' must be an array")
    out: list[Attachment] = []
    total = 0
    for index, item in enumerate(value):
        where = f"attachments[{index}]"
        if not isinstance(item, dict):
            raise InvalidRequest(f"'{where}' must be an object")
        filename, content = item.get("filename"), item.get("content")
        if not isinstance(filename, str) or not filename:
            raise InvalidRequest(f"'{where}.filename' is required")
        if not isinstance(content, str):
            raise InvalidRequest(f"'{where}.content' must be a base64 string")
        for extra in ("content_type", "content_id"):
            if item.get(extra) is not None and not isinstance(item[extra], str):
                raise InvalidRequest(f"'{where}.{extra}' must be a string")
        # Refuse on the encoded size first so a huge body is never decoded.
        if len(content) > (config.attachment_max_bytes + 3) * 4 // 3 + 1024:
            raise unprocessable(f"Attachment '{filename}' is larger than 10 MB")
        try:
            data = base64.b64decode(_B64_WS.sub(b"", content.encode()), validate=True)
        except (binascii.Error, ValueError):
            raise InvalidRequest(f"'{where}.content' is not valid base64") from None
        if len(data) > config.attachment_max_bytes:
            raise unprocessable(f"Attachment '{filename}' is larger than 10 MB")
        total += len(data)
        if total > config.attachments_total_max_bytes:
            raise unprocessable("Attachments are larger than 25 MB in total")
        out.append(
            Attachment(filename, data, item.get("content_type"), item.get("content_id"))
        )
    return out


def parse_send(body: t.Any, config: SandboxConfig) -> EmailInput:
    """Validate one send request.

    :raises InvalidRequest: with the status and message the API would send.
    """
    if not isinstance(body, dict):
        raise InvalidRequest("Request body must be a JSON object")
    sender = body.get("from")
    if sender is None:
        hint = (
            " (the body has 'from_': the field is named 'from' on the wire)"
            if "from_" in body
            else ""
        )
        raise InvalidRequest(
            f"Missing required field 'from'{hint}",
            config.invalid_from_status,
            "invalid_request"
            if config.invalid_from_status == 400
            else "unprocessable_entity",
        )
    if not isinstance(sender, str):
        raise InvalidRequest("'from' must be a string")
    _check_address("from", sender)
    from_address, from_name = split_address(sender)
    if body.get("to") is None:
        raise InvalidRequest("Missing required field 'to'")
    to = _addresses(body, "to", config, bare=config.accept_bare_to)
    if not to:
        raise InvalidRequest("'to' must contain at least one address")
    reply_to = body.get("reply_to")
    if isinstance(reply_to, str):
        _check_address("reply_to", reply_to)
        reply_list: list[str] | None = [reply_to]
    else:
        reply_list = _addresses(body, "reply_to", config, bare=False)
    template_id = _string(body, "template_id")
    subject = _string(body, "subject")
    html, text = _string(body, "html"), _string(body, "text")
    if subject is None and template_id is None:
        raise InvalidRequest("Missing required field 'subject'")
    if html is None and text is None and template_id is None:
        raise InvalidRequest("One of 'html', 'text' or 'template_id' is required")
    scheduled_at = None
    raw_when = body.get("scheduled_at")
    if raw_when is not None and (
        not isinstance(raw_when, str) or (scheduled_at := parse_iso(raw_when)) is None
    ):
        raise InvalidRequest("'scheduled_at' must be an ISO-8601 datetime")
    tags = body.get("tags")
    if tags is not None and (
        not isinstance(tags, list) or not all(isinstance(x, str) for x in tags)
    ):
        raise InvalidRequest("'tags' must be an array of strings")
    variables = body.get("variables")
    if variables is not None and (
        not isinstance(variables, dict)
        or not all(isinstance(v, str) for v in variables.values())
    ):
        raise InvalidRequest("'variables' must be an object of strings")
    unsubscribe = body.get("unsubscribe", False)
    if not isinstance(unsubscribe, bool):
        raise InvalidRequest("'unsubscribe' must be a boolean")
    tracking = body.get("tracking")
    if tracking is not None and (
        not isinstance(tracking, dict)
        or not set(tracking) <= {"opens", "clicks"}
        or not all(isinstance(v, bool) for v in tracking.values())
    ):
        raise InvalidRequest(
            "'tracking' must be an object with boolean 'opens' and 'clicks'"
        )
    key = body.get("idempotency_key")
    if key is not None and (not isinstance(key, str) or not key):
        raise InvalidRequest("'idempotency_key' must be a non-empty string")
    return EmailInput(
        from_address=from_address,
        from_name=from_name,
        to=to,
        cc=_addresses(body, "cc", config, bare=False),
        bcc=_addresses(body, "bcc", config, bare=False),
        reply_to=reply_list,
        subject=subject,
        html=html,
        text=text,
        headers=_string_map(body, "headers"),
        tags=list(tags) if tags is not None else None,
        attachments=_attachments(body.get("attachments"), config),
        scheduled_at=scheduled_at,
        template_id=template_id,
        variables=dict(variables) if variables is not None else None,
        unsubscribe=unsubscribe,
        tracking=dict(tracking) if tracking is not None else None,
        idempotency_key=key,
        other={k: v for k, v in body.items() if k not in KNOWN_FIELDS},
    )
