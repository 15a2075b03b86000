"""Receive PostStack webhooks: delivery, bounce and complaint events.

``init_app`` registers the endpoint by itself when ``POSTSTACK_WEBHOOK_SECRET``
is set; connect to the signals in :mod:`flask_poststack.signals`::

    from flask_poststack.signals import webhook_bounced

    @webhook_bounced.connect_via(app)
    def on_bounce(sender, event, **extra):
        mark_undeliverable(event.recipient)

Each request goes through the same steps:

1. ``HEAD`` answers 200 (endpoint checks); other methods but ``POST`` 405.
2. The ``X-PostStack-Signature`` header is checked against the raw body with
   the SDK's verifier, for each configured secret. Failing that: 401, and
   nothing else happens. With no secret configured every delivery fails.
3. A body that is not a JSON object: 400.
4. A delivery seen before (within ``POSTSTACK_WEBHOOK_DEDUPE_SECONDS``) is
   acknowledged with 200 and not dispatched again. A copy that arrives
   while the first is being dispatched, or any delivery while the dedupe
   store (Redis) cannot be reached: 503, so PostStack delivers it again
   later.
5. :data:`~flask_poststack.signals.webhook_received`, then the signal for the
   event's family, are sent. A receiver that raises: 500 (PostStack retries,
   and the retry is dispatched again). Otherwise 200.
"""

from __future__ import annotations

import collections
import dataclasses
import hashlib
import hmac
import json
import logging
import threading
import time
import typing as t
from datetime import datetime
from datetime import timezone

from flask import Blueprint
from flask import current_app
from flask import Flask
from flask import jsonify
from flask import request
from flask import Response
from flask.blueprints import BlueprintSetupState
from flask.sansio.app import App
from poststack.resources.webhooks import WebhooksResource

from . import signals
from ._dates import parse_iso_datetime
from ._state import get_state
from .errors import redact_url
from .errors import WebhookVerificationError

if t.TYPE_CHECKING:
    import redis
    from blinker import NamedSignal

__all__ = [
    "BLUEPRINT_NAME",
    "SIGNATURE_HEADER",
    "WebhookEvent",
    "make_event_payload",
    "parse_event",
    "receive_webhook",
    "sign_webhook",
    "verify_webhook",
    "webhook_blueprint",
]

logger = logging.getLogger("flask_poststack.webhooks")

#: The request header that carries the signatures.
SIGNATURE_HEADER = "X-PostStack-Signature"

#: The name ``init_app`` registers the blueprint under.
BLUEPRINT_NAME = "poststack_webhooks"

#: Where the per-app webhook state lives in ``app.extensions``.
_EXTENSION_KEY = "poststack.webhooks"

#: How long a claimed delivery blocks its duplicates while receivers run.
#: If the process dies meanwhile, the claim lapses and a retry gets through.
_PROCESSING_SECONDS = 300

#: The most deliveries the in-memory dedupe store remembers per app.
_MEMORY_LIMIT = 100_000

_FAMILY_SIGNALS: dict[str, NamedSignal] = {
    "email.sent": signals.webhook_sent,
    "email.delivered": signals.webhook_delivered,
    "email.deferred": signals.webhook_deferred,
    "email.soft_bounced": signals.webhook_deferred,
    "email.bounced": signals.webhook_bounced,
    "email.complained": signals.webhook_complained,
    "email.opened": signals.webhook_opened,
    "email.clicked": signals.webhook_clicked,
    "email.failed": signals.webhook_delivery_failed,
}


# The event --------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class WebhookEvent:
    """One webhook delivery, verified and parsed.

    PostStack does not document its payload envelope, so the fields are read
    leniently and are ``None`` (or ``""`` for :attr:`type`) when the payload
    does not carry them; :attr:`payload` always has everything.
    """

    #: The event name, e.g. ``"email.delivered"``; unknown names are kept
    #: as they are. ``""`` if the payload names none.
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

    def first_str(*keys: str) -> str | None:
        for place in places:
            for key in keys:
                value = place.get(key)
                if isinstance(value, str) and value.strip():
                    return value.strip()
        return None

    kind = first_str("type", "event", "eventType", "event_type") or ""
    return WebhookEvent(
        type=kind,
        email_id=_email_id(places),
        timestamp=_timestamp(places),
        recipient=_recipient(places),
        id=_event_id(payload),
        payload=payload,
    )


def _email_id(places: list[t.Mapping[str, t.Any]]) -> str | None:
    for place in places:
        for key in ("email_id", "emailId"):
            value = place.get(key)
            if isinstance(value, str) and value.strip():
                return value.strip()
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
            value = place.get(key)
            when = _to_datetime(value)
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


# Verifying ----------------------------------------------------------------


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


# Dedupe ---------------------------------------------------------------------


class _StoreUnavailable(Exception):
    pass


#: What :meth:`_Claims.claim` found: a first delivery (now claimed), one
#: already dispatched, or one being dispatched right now by another request.
_Claim = t.Literal["new", "done", "busy"]


class _Claims(t.Protocol):
    def claim(self, key: str, seconds: int) -> _Claim: ...
    def keep(self, key: str, seconds: int) -> None: ...
    def release(self, key: str) -> None: ...


class _MemoryClaims:
    """Per-process dedupe: bounded, thread-safe, expiring."""

    def __init__(self, limit: int = _MEMORY_LIMIT) -> None:
        self._lock = threading.Lock()
        # key -> (expires at, done); oldest first.
        self._seen: collections.OrderedDict[str, tuple[float, bool]] = (
            collections.OrderedDict()
        )
        self._limit = limit

    def claim(self, key: str, seconds: int) -> _Claim:
        now = time.monotonic()
        with self._lock:
            found = self._seen.get(key)
            if found is not None and found[0] > now:
                return "done" if found[1] else "busy"
            self._seen.pop(key, None)
            self._seen[key] = (now + seconds, False)
            self._evict(now)
            return "new"

    def keep(self, key: str, seconds: int) -> None:
        with self._lock:
            if key in self._seen:
                self._seen[key] = (time.monotonic() + seconds, True)

    def release(self, key: str) -> None:
        with self._lock:
            self._seen.pop(key, None)

    def __len__(self) -> int:
        with self._lock:
            return len(self._seen)

    def _evict(self, now: float) -> None:
        # Oldest first, and expired ones as they come; a full store forgets
        # its oldest even if unexpired (a duplicate may then be dispatched:
        # at least once still holds).
        while self._seen:
            key, (until, _) = next(iter(self._seen.items()))
            if until > now and len(self._seen) <= self._limit:
                break
            del self._seen[key]


class _RedisClaims:
    """Dedupe shared by every process of the app, in its Redis."""

    prefix = "poststack:webhook:"

    def __init__(self, conn: redis.Redis, url: str) -> None:
        self._conn = conn
        self._url = url

    def claim(self, key: str, seconds: int) -> _Claim:
        import redis

        name = self.prefix + key
        try:
            for _ in range(2):  # again if the record expired in between
                if self._conn.set(name, b"busy", nx=True, ex=seconds):
                    return "new"
                value = self._conn.get(name)
                if value is not None:
                    return "done" if value == b"done" else "busy"
            return "busy"
        except redis.RedisError as exc:
            logger.error(
                "PostStack webhook: Redis at %s is unavailable (%s);"
                " answering 503 so that PostStack delivers the event again",
                redact_url(self._url),
                type(exc).__name__,
            )
            raise _StoreUnavailable from exc

    def keep(self, key: str, seconds: int) -> None:
        self._quietly(lambda: self._conn.set(self.prefix + key, b"done", ex=seconds))

    def release(self, key: str) -> None:
        self._quietly(lambda: self._conn.delete(self.prefix + key))

    def _quietly(self, call: t.Callable[[], object]) -> None:
        import redis

        try:
            call()
        except redis.RedisError as exc:
            # The claim still lapses by itself, after _PROCESSING_SECONDS.
            logger.warning(
                "PostStack webhook: could not update the dedupe record in"
                " Redis at %s (%s)",
                redact_url(self._url),
                type(exc).__name__,
            )


@dataclasses.dataclass(eq=False)
class _WebhookState:
    claims: _Claims
    warned_no_secret: bool = False


def _dedupe_key(event: WebhookEvent, body: bytes) -> str:
    if event.id is not None:
        # JSON may carry lone surrogates ("\ud800"): they must not raise.
        raw = f"id\0{event.type}\0{event.id}".encode("utf-8", "surrogatepass")
    else:
        raw = b"body\0" + body
    return hashlib.sha256(raw).hexdigest()


# The view -------------------------------------------------------------------


def _error(status: int, message: str) -> Response:
    response = jsonify({"error": message})
    response.status_code = status
    return response


def receive_webhook() -> Response:
    """The endpoint's view function (see the module docs for the answers).

    Its import path, ``"flask_poststack.webhooks.receive_webhook"``, is what
    Flask-WTF's ``csrf.exempt`` takes.
    """
    if request.method == "HEAD":
        return Response(status=200)
    app: Flask = current_app._get_current_object()  # type: ignore[attr-defined]
    settings = get_state(app).settings
    webhook_state: _WebhookState = app.extensions[_EXTENSION_KEY]
    if not settings.webhook_secrets:
        if not webhook_state.warned_no_secret:
            webhook_state.warned_no_secret = True
            logger.error(
                "PostStack webhook refused: POSTSTACK_WEBHOOK_SECRET is not"
                " set, so no delivery can be verified. Set it to the"
                " webhook's signingSecret."
            )
        return _error(401, "invalid signature")

    body = request.get_data(cache=True)
    try:
        event = verify_webhook(
            body, request.headers.get(SIGNATURE_HEADER), settings.webhook_secrets
        )
    except WebhookVerificationError:
        return _error(401, "invalid signature")
    except ValueError as exc:
        return _error(400, str(exc))

    window = settings.webhook_dedupe_seconds
    key = _dedupe_key(event, body)
    claims = webhook_state.claims if window > 0 else None
    if claims is not None:
        try:
            found = claims.claim(key, min(window, _PROCESSING_SECONDS))
        except _StoreUnavailable:
            return _retry_later("dedupe store unavailable")
        if found == "done":
            return jsonify({"ok": True, "duplicate": True})
        if found == "busy":
            # Not 2xx: if the request dispatching it fails or dies, this
            # copy must come back.
            return _retry_later("this delivery is being processed")

    dispatched = False
    try:
        signals.webhook_received.send(app, event=event)
        family = _FAMILY_SIGNALS.get(event.type)
        if family is not None:
            family.send(app, event=event)
        dispatched = True
    except Exception:
        logger.exception(
            "A receiver of the PostStack webhook %s (event %s, email %s)"
            " raised; answering 500 so that PostStack delivers it again",
            event.type or "(no type)",
            event.id,
            event.email_id,
        )
        return _error(500, "receiver error")
    finally:
        if claims is not None:
            if dispatched:
                claims.keep(key, window)
            else:
                claims.release(key)
    return jsonify({"ok": True})


def _retry_later(message: str) -> Response:
    response = _error(503, message)
    response.headers["Retry-After"] = "60"
    return response


# The blueprint --------------------------------------------------------------


class _WebhookBlueprint(Blueprint):
    def register(self, app: App, options: dict[str, t.Any]) -> None:
        name = options.get("name", self.name)
        if app.blueprints.get(name, self) is not self:
            raise ValueError(
                f"A blueprint named {name!r} is already registered on this app,"
                " so the PostStack webhook blueprint cannot use that name."
                " If init_app registered it (it does when"
                " POSTSTACK_WEBHOOK_SECRET is set), set"
                " POSTSTACK_WEBHOOK_REGISTER = False to register it yourself,"
                " or pass another name: webhook_blueprint(name=...)."
            )
        super().register(app, options)


def webhook_blueprint(
    url: str | None = None, *, name: str = BLUEPRINT_NAME
) -> Blueprint:
    """A blueprint with the webhook endpoint, to register yourself.

    ``init_app`` registers one by itself when ``POSTSTACK_WEBHOOK_SECRET``
    is set (see ``POSTSTACK_WEBHOOK_REGISTER``). To choose where and when::

        app.config["POSTSTACK_WEBHOOK_REGISTER"] = False
        poststack.init_app(app)
        app.register_blueprint(webhook_blueprint("/hooks/poststack"))

    Register it after ``init_app``: it reads the app's settings then.

    :param url: the endpoint's path; default ``POSTSTACK_WEBHOOK_URL``.
        A ``url_prefix`` given to ``register_blueprint`` is prepended.
    :param name: the blueprint's name; the endpoint is ``f"{name}.receive"``.
    :raises ValueError: at registration, if ``name`` is taken.
    :raises RuntimeError: at registration, if Flask-PostStack is not
        registered on the app.
    """
    blueprint = _WebhookBlueprint(name, __name__)
    blueprint.record(lambda state: _setup(state, url))
    return blueprint


def _setup(state: BlueprintSetupState, url: str | None) -> None:
    app = t.cast(Flask, state.app)
    settings = get_state(app).settings
    if _EXTENSION_KEY not in app.extensions:
        claims: _Claims
        if settings.webhook_dedupe_store == "redis":
            claims = _RedisClaims(get_state(app).redis, settings.redis_url)
        else:
            claims = _MemoryClaims()
        app.extensions[_EXTENSION_KEY] = _WebhookState(claims)
    if not settings.webhook_secrets:
        logger.warning(
            "The PostStack webhook endpoint is registered but"
            " POSTSTACK_WEBHOOK_SECRET is not set: every delivery will be"
            " refused with 401."
        )
    state.add_url_rule(
        url or settings.webhook_url,
        "receive",
        receive_webhook,
        methods=["POST", "HEAD"],
    )


def register_default_blueprint(app: Flask) -> None:
    """What ``init_app`` does: register the endpoint when so configured."""
    settings = get_state(app).settings
    wanted = settings.webhook_register
    if wanted is None:
        wanted = bool(settings.webhook_secrets)
    if wanted:
        app.register_blueprint(webhook_blueprint())


# Testing helpers ------------------------------------------------------------


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
