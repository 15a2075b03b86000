"""The event a webhook delivery carries, and its lenient parser."""

from __future__ import annotations

import dataclasses
import typing as t
from datetime import datetime
from datetime import timezone

from .._dates import parse_iso_datetime

__all__ = ["EventKind", "WebhookEvent", "parse_event"]

#: The normalised kinds of :attr:`WebhookEvent.kind`.
EventKind = t.Literal[
    "queued",
    "sent",
    "delivered",
    "deferred",
    "bounced",
    "complained",
    "opened",
    "clicked",
    "unsubscribed",
    "failed",
    "inbound",
    "unknown",
]

# Every event name in the API reference, with and without the "email."
# prefix (webhooks use it; the email's event list does not). A soft bounce
# is temporary, as a deferral is: PostStack keeps trying.
_KINDS: dict[str, EventKind] = {
    "queued": "queued",
    "sent": "sent",
    "delivered": "delivered",
    "deferred": "deferred",
    "soft_bounced": "deferred",
    "bounced": "bounced",
    "complained": "complained",
    "opened": "opened",
    "clicked": "clicked",
    "unsubscribed": "unsubscribed",
    "failed": "failed",
    "inbound": "inbound",
}
_KINDS.update({"email." + name: kind for name, kind in list(_KINDS.items())})
_KINDS["inbound_email.received"] = "inbound"


def event_kind(type: str) -> EventKind:
    """The :data:`EventKind` of a raw event name; ``"unknown"`` if unknown."""
    return _KINDS.get(type.strip().lower(), "unknown")


@dataclasses.dataclass(frozen=True)
class WebhookEvent:
    """One webhook delivery, verified and parsed.

    PostStack does not document its payload envelope, so the fields are read
    leniently and are ``None`` (or ``""`` for :attr:`type`) when the payload
    does not carry them; :attr:`payload` always has everything.
    """

    #: The raw event name, e.g. ``"email.delivered"``; unknown names are
    #: kept as they are. ``""`` if the payload names none.
    type: str
    #: The email's ``em_...`` id, as :func:`~flask_poststack.send_email`
    #: returned it.
    email_id: str | None
    #: When the event happened (timezone-aware, UTC).
    timestamp: datetime | None
    #: The address the event is about (a bounce's recipient), if one is given
    #: or the email had exactly one recipient.
    recipient: str | None
    #: The event's own id (``evt_...``), used to drop duplicate deliveries.
    id: str | None
    #: The decoded JSON body, untouched.
    payload: t.Mapping[str, t.Any] = dataclasses.field(repr=False)
    #: What happened, normalised from :attr:`type`: ``"queued"``,
    #: ``"sent"``, ``"delivered"``, ``"deferred"`` (``email.deferred`` and
    #: ``email.soft_bounced``: temporary, PostStack keeps trying),
    #: ``"bounced"`` (permanent), ``"complained"`` (marked as spam),
    #: ``"opened"``, ``"clicked"``, ``"unsubscribed"``, ``"failed"``
    #: (PostStack gave up), ``"inbound"`` (a received email), or
    #: ``"unknown"`` for anything else (``contact.created``, a new type).
    kind: EventKind = dataclasses.field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "kind", event_kind(self.type))

    @property
    def data(self) -> t.Mapping[str, t.Any]:
        """The payload's ``data`` object, or the payload itself if it has none."""
        data = self.payload.get("data")
        return data if isinstance(data, dict) else self.payload


def parse_event(payload: t.Mapping[str, t.Any]) -> WebhookEvent:
    """Build a :class:`WebhookEvent` from a decoded webhook body.

    Accepts the ``{"id", "type", "timestamp", "data": {...}}`` envelope as
    well as flat ones (``{"event": "email.delivered", "email_id": ...}``).
    Never raises for a mapping: what cannot be found is ``None``.
    """
    data = payload.get("data")
    places: list[t.Mapping[str, t.Any]] = [payload]
    if isinstance(data, dict):
        places.insert(0, data)
    return WebhookEvent(
        type=_first_str(places, "type", "event", "eventType", "event_type") or "",
        email_id=_email_id(places),
        timestamp=_timestamp(places),
        recipient=_recipient(places),
        id=_event_id(payload),
        payload=payload,
    )


def _first_str(places: list[t.Mapping[str, t.Any]], *keys: str) -> str | None:
    for place in places:
        for key in keys:
            value = place.get(key)
            if isinstance(value, str) and value.strip():
                return value.strip()
    return None


def _email_id(places: list[t.Mapping[str, t.Any]]) -> str | None:
    for place in places:
        found = _first_str([place], "email_id", "emailId")
        if found is not None:
            return found
        email = place.get("email")
        if isinstance(email, dict):
            value = email.get("id")
            if isinstance(value, str) and value.startswith("em_"):
                return value
    for place in places:
        value = place.get("id")
        if isinstance(value, str) and value.startswith("em_"):
            return value
    return None


def _event_id(payload: t.Mapping[str, t.Any]) -> str | None:
    for key in ("id", "event_id", "eventId"):
        value = payload.get(key)
        if isinstance(value, bool):
            continue
        if isinstance(value, int):
            return str(value)
        # An "em_" id names the email, not the event: several events share it.
        if isinstance(value, str) and value.strip() and not value.startswith("em_"):
            return value.strip()
    return None


def _recipient(places: list[t.Mapping[str, t.Any]]) -> str | None:
    for place in places:
        for key in ("recipient", "email"):
            value = place.get(key)
            if isinstance(value, str) and "@" in value:
                return value.strip()
        metadata = place.get("metadata")
        if isinstance(metadata, dict):
            value = metadata.get("recipient")
            if isinstance(value, str) and "@" in value:
                return value.strip()
    for place in places:
        to = place.get("to")
        if isinstance(to, list) and len(to) == 1:
            to = to[0]
        if isinstance(to, str) and "@" in to:
            return to.strip()
    return None


def _timestamp(places: list[t.Mapping[str, t.Any]]) -> datetime | None:
    for place in reversed(places):  # the envelope's own time first
        for key in ("timestamp", "created_at", "createdAt", "occurred_at"):
            when = _to_datetime(place.get(key))
            if when is not None:
                return when
    return None


def _to_datetime(value: object) -> datetime | None:
    try:
        if isinstance(value, bool):
            return None
        if isinstance(value, (int, float)):
            seconds = value / 1000 if value > 100_000_000_000 else value
            return datetime.fromtimestamp(seconds, tz=timezone.utc)
        if isinstance(value, str) and value.strip():
            # Our parser, not fromisoformat: that accepts different forms on
            # Python 3.10 and 3.11+.
            when = parse_iso_datetime(value)
            if when.tzinfo is None:
                when = when.replace(tzinfo=timezone.utc)
            return when.astimezone(timezone.utc)
    except (ValueError, OverflowError, OSError):
        pass
    return None
