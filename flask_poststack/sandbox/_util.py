"""Small helpers shared by the sandbox modules: time, ids and JSON."""

from __future__ import annotations

import hashlib
import json
import secrets
import typing as t
from datetime import datetime
from datetime import timezone


def utcnow() -> datetime:
    """The current time, timezone-aware in UTC."""
    return datetime.now(timezone.utc)


def iso(value: datetime | None) -> str | None:
    """Format like the API does: ``2026-03-25T09:00:00.000Z``."""
    if value is None:
        return None
    text = value.astimezone(timezone.utc).isoformat(timespec="milliseconds")
    return text.replace("+00:00", "Z")


def parse_iso(value: str) -> datetime | None:
    """Parse an ISO-8601 date or datetime; naive values are taken as UTC.

    Returns ``None`` when ``value`` does not parse. Handles the ``Z`` suffix
    and any number of fractional digits, which ``fromisoformat`` on Python
    3.10 does not.
    """
    text = value.strip()
    if not text or len(text) > 64:
        return None
    if text[-1] in "zZ":
        text = text[:-1] + "+00:00"
    head, dot, rest = text.partition(".")
    if dot:
        digits = len(rest) - len(rest.lstrip("0123456789"))
        if digits == 0:
            return None
        frac, tail = rest[:digits], rest[digits:]
        text = f"{head}.{frac[:6].ljust(6, '0')}{tail}"
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=timezone.utc)
    return parsed


def random_id(prefix: str, length: int = 18) -> str:
    """``prefix`` plus ``length`` random lowercase hex characters."""
    return prefix + secrets.token_hex((length + 1) // 2)[:length]


def dumps(value: t.Any) -> bytes:
    """Compact UTF-8 JSON, the form every response body takes."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()


def fingerprint(value: t.Any) -> str:
    """A digest of ``value`` that does not depend on key order."""
    text = json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def key_label(api_key: str) -> str:
    """What may be shown of an API key: its mode prefix only."""
    for prefix in ("sk_live_", "sk_test_"):
        if api_key.startswith(prefix):
            return prefix + "\u2026"
    return "invalid"
