"""Signatures: checking a delivery, and signing one for tests."""

from __future__ import annotations

import hashlib
import hmac
import json
import typing as t
from datetime import datetime
from datetime import timezone

from poststack.resources.webhooks import WebhooksResource

from ..errors import WebhookVerificationError
from .events import parse_event
from .events import WebhookEvent

__all__ = ["SIGNATURE_HEADER", "make_event_payload", "sign_webhook", "verify_webhook"]

#: The request header that carries the signatures.
SIGNATURE_HEADER = "X-PostStack-Signature"


def verify_webhook(
    body: bytes, signature: str | None, secrets: t.Sequence[str]
) -> WebhookEvent:
    """Check a delivery's signature and parse it.

    For a view of your own; the blueprint does the same. ``body`` must be
    the raw request body (``request.get_data()``), never re-serialised JSON.

    :param body: the raw request body.
    :param signature: the ``X-PostStack-Signature`` header (``None`` if
        missing).
    :param secrets: the signing secrets; the delivery passes if it is signed
        with any of them (rotation).
    :raises WebhookVerificationError: if no secret matches.
    :raises ValueError: if the body is not a JSON object.
    """
    if not _signature_ok(body, signature, secrets):
        raise WebhookVerificationError("the webhook signature does not match")
    return parse_event(_decode(body))


def _signature_ok(body: bytes, signature: str | None, secrets: t.Sequence[str]) -> bool:
    if not signature or not secrets:
        return False
    ok = False
    for secret in secrets:  # no early exit: the same work whichever matches
        ok |= WebhooksResource.verify(body, signature, secret)
    return ok


def _decode(body: bytes) -> dict[str, t.Any]:
    try:
        payload = json.loads(body)
    except (ValueError, RecursionError):  # incl. UnicodeDecodeError
        raise ValueError("the webhook body is not JSON") from None
    if not isinstance(payload, dict):
        raise ValueError("the webhook body is not a JSON object")
    return payload


def sign_webhook(
    payload: t.Mapping[str, t.Any] | bytes | str, secret: str | t.Sequence[str]
) -> tuple[bytes, dict[str, str]]:
    """Build a delivery signed like PostStack's, for your tests.

    ::

        body, headers = sign_webhook(
            make_event_payload("email.bounced", "em_123", recipient="a@b.test"),
            "whsec_test",  # the POSTSTACK_WEBHOOK_SECRET of the test app
        )
        client.post("/poststack/webhooks", data=body, headers=headers)

    :param payload: a mapping (serialised to JSON here) or the exact body.
    :param secret: the signing secret, or several to sign with each (as
        PostStack does during a rotation).
    :returns: the body bytes and the headers to send with them
        (``Content-Type`` and ``X-PostStack-Signature``).
    """
    if isinstance(payload, str):
        body = payload.encode()
    elif isinstance(payload, bytes):
        body = payload
    else:
        body = json.dumps(payload, separators=(",", ":")).encode()
    secrets = [secret] if isinstance(secret, str) else list(secret)
    signature = ",".join(
        "sha256=" + hmac.new(s.encode(), body, hashlib.sha256).hexdigest()
        for s in secrets
    )
    return body, {"Content-Type": "application/json", SIGNATURE_HEADER: signature}


def make_event_payload(
    type: str,
    email_id: str | None = None,
    *,
    recipient: str | None = None,
    event_id: str | None = None,
    timestamp: datetime | None = None,
    **data: t.Any,
) -> dict[str, t.Any]:
    """A webhook payload in the envelope the sandbox sends.

    ``{"id": "evt_...", "type": ..., "timestamp": ..., "data": {"email_id":
    ..., ...}}``; a bounce's ``recipient`` goes into ``data.metadata``.
    ``event_id`` defaults to a fresh random id, ``timestamp`` to now.
    """
    import secrets

    body: dict[str, t.Any] = {}
    if email_id is not None:
        body["email_id"] = email_id
    if recipient is not None:
        body["to"] = [recipient]
        body.setdefault("metadata", {})["recipient"] = recipient
    body.update(data)
    when = timestamp or datetime.now(timezone.utc)
    return {
        "id": event_id or "evt_" + secrets.token_hex(12),
        "type": type,
        "timestamp": when.astimezone(timezone.utc)
        .isoformat(timespec="milliseconds")
        .replace("+00:00", "Z"),
        "data": body,
    }
