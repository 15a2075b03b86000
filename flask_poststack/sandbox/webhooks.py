"""Webhooks: the registry behind ``/webhooks`` and the outbound deliveries,
signed and retried with backoff on a small thread pool."""

from __future__ import annotations

import concurrent.futures
import contextlib
import dataclasses
import fnmatch
import hashlib
import hmac
import http.client
import ipaddress
import itertools
import logging
import secrets
import threading
import typing as t
import urllib.parse
from datetime import datetime
from datetime import timedelta

from ._util import dumps
from ._util import iso
from ._util import random_id
from ._util import utcnow
from .config import SandboxConfig
from .lifecycle import Scheduler
from .store import Store

log = logging.getLogger("flask_poststack.sandbox")


def sign(body: bytes, secret: str) -> str:
    """``sha256=<hex HMAC-SHA256 of body keyed with secret>``."""
    digest = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    return f"sha256={digest}"


def is_loopback(url: str) -> bool:
    host = urllib.parse.urlsplit(url).hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def default_envelope(
    event_type: str, event_id: str, timestamp: str, data: dict[str, t.Any]
) -> dict[str, t.Any]:
    """The sandbox's guess at the undocumented payload envelope."""
    return {"id": event_id, "type": event_type, "timestamp": timestamp, "data": data}


@dataclasses.dataclass
class Webhook:
    id: int
    url: str
    events: list[str]
    secret: str
    created_at: datetime
    active: bool = True
    description: str | None = None
    previous_secret: str | None = None
    previous_secret_expires_at: datetime | None = None
    secret_rotated_at: datetime | None = None
    consecutive_failures: int = 0
    disabled_at: datetime | None = None
    disabled_reason: str | None = None
    last_delivery_at: datetime | None = None
    last_delivery_status: int | None = None

    def secrets(self) -> list[str]:
        """The secrets a delivery is signed with now: new first, then the
        previous one while its grace window lasts."""
        found = [self.secret]
        expires = self.previous_secret_expires_at
        if self.previous_secret and expires is not None and expires > utcnow():
            found.append(self.previous_secret)
        return found

    def wants(self, event_type: str) -> bool:
        return self.active and any(
            fnmatch.fnmatchcase(event_type, p) for p in self.events
        )

    def to_dict(self, *, listing: bool = False) -> dict[str, t.Any]:
        out: dict[str, t.Any] = {
            "id": self.id,
            "url": self.url,
            "events": list(self.events),
            "active": self.active,
            "description": self.description,
            "signingSecretPrefix": self.secret[:10] + "\u2026",
            "createdAt": iso(self.created_at),
            "secretRotatedAt": iso(self.secret_rotated_at),
            "previousSecretExpiresAt": iso(self.previous_secret_expires_at),
            "consecutiveFailures": self.consecutive_failures,
            "disabledAt": iso(self.disabled_at),
            "disabledReason": self.disabled_reason,
        }
        if listing:
            out["lastDeliveryAt"] = iso(self.last_delivery_at)
            out["lastDeliveryStatus"] = self.last_delivery_status
        return out


@dataclasses.dataclass
class Delivery:
    """One event for one webhook. ``body`` is serialised once; every attempt
    sends (and signs) exactly these bytes."""

    id: int
    webhook_id: int
    event_type: str
    payload: t.Any
    body: bytes
    created_at: datetime
    status_code: int | None = None
    response_body: str | None = None
    attempts: int = 0
    next_retry_at: datetime | None = None
    delivered_at: datetime | None = None
    error: str | None = None
    signatures: list[str] = dataclasses.field(default_factory=list)

    @property
    def failed(self) -> bool:
        return (
            self.delivered_at is None
            and self.next_retry_at is None
            and self.attempts > 0
        )

    def to_dict(self) -> dict[str, t.Any]:
        return {
            "id": self.id,
            "webhookId": self.webhook_id,
            "eventType": self.event_type,
            "payload": self.payload,
            "statusCode": self.status_code,
            "responseBody": self.response_body,
            "attempts": self.attempts,
            "nextRetryAt": iso(self.next_retry_at),
            "deliveredAt": iso(self.delivered_at),
            "createdAt": iso(self.created_at),
        }


class Webhooks:
    """Registered webhooks and their deliveries (``sandbox.webhooks``)."""

    def __init__(
        self, config: SandboxConfig, store: Store, scheduler: Scheduler
    ) -> None:
        self.config = config
        self.store = store
        self.scheduler = scheduler
        self.lock = threading.RLock()
        self._pool: concurrent.futures.ThreadPoolExecutor | None = None
        self.reset()

    def start(self) -> None:
        self._pool = concurrent.futures.ThreadPoolExecutor(
            max_workers=4, thread_name_prefix="sandbox-webhook"
        )

    def stop(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None

    def reset(self) -> None:
        with self.lock:
            self.hooks: dict[int, Webhook] = {}
            self.deliveries: dict[int, Delivery] = {}
            self._hook_ids = itertools.count(1)
            self._delivery_ids = itertools.count(1)
            # Retries scheduled before a reset must not run after it.
            self._epoch = getattr(self, "_epoch", 0) + 1

    # Registry -------------------------------------------------------------

    def create(
        self, url: str, events: list[str], description: str | None = None
    ) -> tuple[Webhook, str]:
        secret = "whsec_" + secrets.token_hex(24)
        with self.lock:
            hook = Webhook(next(self._hook_ids), url, events, secret, utcnow())
            hook.description = description
            self.hooks[hook.id] = hook
        return hook, secret

    def get(self, hook_id: int) -> Webhook | None:
        with self.lock:
            return self.hooks.get(hook_id)

    def delete(self, hook_id: int) -> bool:
        with self.lock:
            return self.hooks.pop(hook_id, None) is not None

    def rotate(self, hook: Webhook, grace_hours: int) -> str:
        secret = "whsec_" + secrets.token_hex(24)
        now = utcnow()
        with self.lock:
            if grace_hours > 0:
                hook.previous_secret = hook.secret
                hook.previous_secret_expires_at = now + timedelta(hours=grace_hours)
            else:
                hook.previous_secret = hook.previous_secret_expires_at = None
            hook.secret = secret
            hook.secret_rotated_at = now
        return secret

    def list_deliveries(self, hook_id: int | None = None) -> list[Delivery]:
        """Oldest first."""
        with self.lock:
            return [
                d
                for d in self.deliveries.values()
                if hook_id is None or d.webhook_id == hook_id
            ]

    # Delivering -----------------------------------------------------------

    def emit(self, event_type: str, data: dict[str, t.Any]) -> list[Delivery]:
        """Queue a delivery of the event to every webhook subscribed to it."""
        with self.lock:
            targets = [hook for hook in self.hooks.values() if hook.wants(event_type)]
        return [self.deliver(hook, event_type, data) for hook in targets]

    def deliver(
        self, hook: Webhook, event_type: str, data: dict[str, t.Any]
    ) -> Delivery:
        make = self.config.webhook_envelope or default_envelope
        payload = make(event_type, random_id("evt_"), t.cast(str, iso(utcnow())), data)
        with self.lock:
            delivery = Delivery(
                next(self._delivery_ids),
                hook.id,
                event_type,
                payload,
                dumps(payload),
                utcnow(),
            )
            self.deliveries[delivery.id] = delivery
        self.store.count("webhook_deliveries")
        self._submit(delivery)
        return delivery

    def replay(self, delivery: Delivery) -> None:
        """Send a delivery again (a fresh round of attempts)."""
        with self.lock:
            # Pending again: not "failed" while the new attempt is in flight.
            delivery.next_retry_at = utcnow()
        self._submit(delivery)

    def _submit(self, delivery: Delivery) -> None:
        pool, epoch = self._pool, self._epoch
        if pool is not None:
            with contextlib.suppress(RuntimeError):  # the pool is shutting down
                pool.submit(self._attempt, delivery, epoch)

    def _attempt(self, delivery: Delivery, epoch: int) -> None:
        with self.lock:
            hook = self.hooks.get(delivery.webhook_id)
            if hook is None or epoch != self._epoch or not hook.active:
                delivery.next_retry_at = None
                return
            url, hook_secrets = hook.url, hook.secrets()
        body, header = self._signed(delivery.body, hook_secrets)
        copies = 1 + self.config.webhook_duplicates
        status, text, error = None, None, None
        for _ in range(copies):
            status, text, error = self._post(url, body, header)
        now = utcnow()
        with self.lock:
            if epoch != self._epoch:
                return  # the sandbox was reset during the POST: forget it
            # The store's lock inside ours (never the other way round), so a
            # reset cannot come between the check above and this count.
            self.store.count("webhook_attempts", copies)
            delivery.attempts += 1
            delivery.signatures.append(header)
            delivery.status_code, delivery.response_body, delivery.error = (
                status,
                text,
                error,
            )
            hook.last_delivery_at, hook.last_delivery_status = now, status
            if status is not None and 200 <= status < 300:
                delivery.delivered_at, delivery.next_retry_at = now, None
                hook.consecutive_failures = 0
                return
            hook.consecutive_failures += 1
            if hook.consecutive_failures >= self.config.webhook_disable_after:
                hook.active = False
                hook.disabled_at = now
                hook.disabled_reason = "Too many consecutive delivery failures"
            if delivery.attempts >= self.config.webhook_max_attempts or not hook.active:
                delivery.next_retry_at = None
                return
            wait = self.config.webhook_retry_base * 2 ** (delivery.attempts - 1)
            delivery.next_retry_at = now + timedelta(seconds=wait)
        self.scheduler.call_later(wait, lambda: self._submit_if(delivery, epoch))

    def _submit_if(self, delivery: Delivery, epoch: int) -> None:
        if epoch == self._epoch and delivery.next_retry_at is not None:
            self._submit(delivery)

    def _signed(self, body: bytes, hook_secrets: list[str]) -> tuple[bytes, str]:
        mode = self.config.webhook_signature
        if mode == "single":
            return body, sign(body, hook_secrets[0])
        if mode == "wrong_secret":
            return body, sign(body, "whsec_wrong")
        if mode == "tampered":
            return body.replace(b"}", b" }", 1), sign(body, hook_secrets[0])
        if mode == "sha512":
            digest = hmac.new(
                hook_secrets[0].encode(), body, hashlib.sha512
            ).hexdigest()
            return body, f"sha512={digest}"
        return body, ",".join(sign(body, secret) for secret in hook_secrets)

    def _post(
        self, url: str, body: bytes, signature: str
    ) -> tuple[int | None, str | None, str | None]:
        parts = urllib.parse.urlsplit(url)
        if not self.config.webhook_allow_remote and not is_loopback(url):
            return None, None, "remote webhook URLs are disabled in the sandbox"
        conn_class = (
            http.client.HTTPSConnection
            if parts.scheme == "https"
            else http.client.HTTPConnection
        )
        conn = conn_class(
            parts.hostname or "", parts.port, timeout=self.config.webhook_timeout
        )
        path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        headers = {
            "Content-Type": "application/json",
            "User-Agent": "PostStack-Sandbox-Webhooks/1",
            "X-PostStack-Signature": signature,
        }
        try:
            conn.request("POST", path, body=body, headers=headers)
            response = conn.getresponse()
            text = response.read(65536).decode("utf-8", "replace")
            return response.status, text, None
        except (OSError, http.client.HTTPException) as exc:
            return None, None, f"{type(exc).__name__}: {exc}"
        finally:
            conn.close()
