"""In-memory state of the sandbox: emails, idempotency keys, counters, the
request log, throttle buckets and quota usage. All of it is guarded by one
lock; nothing here does I/O."""

from __future__ import annotations

import collections
import dataclasses
import heapq
import itertools
import math
import threading
import time
import typing as t
from datetime import datetime

from ._util import iso
from ._util import random_id
from ._util import utcnow
from .validation import Attachment
from .validation import EmailInput


@dataclasses.dataclass
class StoredEmail:
    """An email the sandbox accepted. ``id`` is the public ``em_`` id."""

    id: str
    number: int
    input: EmailInput
    test_mode: bool
    created_at: datetime
    status: str = "queued"
    sent_at: datetime | None = None
    scheduled_at: datetime | None = None
    events: list[dict[str, t.Any]] = dataclasses.field(default_factory=list)
    #: Bumped on reschedule and cancel, so stale lifecycle steps are skipped.
    generation: int = 0

    @property
    def to(self) -> list[str]:
        return self.input.to

    @property
    def subject(self) -> str | None:
        return self.input.subject

    @property
    def html(self) -> str | None:
        return self.input.html

    @property
    def text(self) -> str | None:
        return self.input.text

    @property
    def attachments(self) -> list[Attachment]:
        return self.input.attachments

    @property
    def event_types(self) -> list[str]:
        return [event["eventType"] for event in self.events]

    def row(self, *, full: bool = False) -> dict[str, t.Any]:
        """The camelCase row of ``GET /emails/{id}`` (``full``) or of the
        list (no bodies, no events)."""
        data = self.input
        row: dict[str, t.Any] = {
            "id": self.number,
            "publicId": self.id,
            "fromAddress": data.from_address,
            "fromName": data.from_name,
            "toAddresses": list(data.to),
            "ccAddresses": data.cc,
            "bccAddresses": data.bcc,
            "replyTo": data.reply_to,
            "subject": data.subject,
            "headers": data.headers,
            "tags": data.tags,
            "status": self.status,
            "testMode": self.test_mode,
            "recipientProvider": None,
            "unsubscribeEnabled": data.unsubscribe,
            "spamScore": None,
            "spamWarnings": None,
            "scheduledAt": iso(self.scheduled_at),
            "sentAt": iso(self.sent_at),
            "createdAt": iso(self.created_at),
        }
        if full:
            row["htmlBody"] = data.html
            row["textBody"] = data.text
            row["events"] = [dict(event) for event in self.events]
        return row


@dataclasses.dataclass
class Replay:
    """What an idempotency key remembers: the payload's digest and the
    response it got."""

    fingerprint: str
    status: int
    body: dict[str, t.Any]
    expires: float | None = None


class Store:
    """Everything the sandbox remembers. Thread-safe."""

    def __init__(self, log_size: int = 10_000) -> None:
        self.lock = threading.RLock()
        self._idle = threading.Condition(self.lock)
        self._log_size = log_size
        self.reset()

    def reset(self) -> None:
        """Forget everything."""
        with self.lock:
            self.emails: dict[str, StoredEmail] = {}
            self._next_email = 1
            self._next_event = 1
            self.header_keys: dict[tuple[str, str], Replay] = {}
            #: ``(expires, tiebreak, key, replay)``, soonest first.
            self._header_expiry: list[tuple[float, int, tuple[str, str], Replay]] = []
            self._tiebreak = itertools.count()
            self.body_keys: dict[tuple[str, str], Replay] = {}
            self._in_flight: set[tuple[str, str, str]] = set()
            self.counters: collections.Counter[str] = collections.Counter()
            self.statuses: collections.Counter[int] = collections.Counter()
            #: Attempts per ``Idempotency-Key`` header, least recently
            #: attempted first, so the oldest are cheap to evict.
            self.attempts_by_key: collections.OrderedDict[str, int] = (
                collections.OrderedDict()
            )
            self.log: collections.deque[dict[str, t.Any]] = collections.deque(
                maxlen=self._log_size
            )
            self._buckets: dict[str, tuple[float, float]] = {}
            self._usage: collections.Counter[tuple[str, str]] = collections.Counter()
            self._idle.notify_all()

    # Emails -------------------------------------------------------------

    def add_email(self, data: EmailInput, *, test_mode: bool) -> StoredEmail:
        with self.lock:
            email = StoredEmail(
                id=random_id("em_"),
                number=self._next_email,
                input=data,
                test_mode=test_mode,
                created_at=utcnow(),
                scheduled_at=data.scheduled_at,
            )
            self._next_email += 1
            self.emails[email.id] = email
            self.counters["emails_created"] += 1
            self.add_event(email, "queued")
            return email

    def add_event(
        self,
        email: StoredEmail,
        event_type: str,
        metadata: dict[str, t.Any] | None = None,
    ) -> dict[str, t.Any]:
        """Record an event row on ``email`` (``eventType`` is a bare name)."""
        with self.lock:
            event = {
                "id": self._next_event,
                "emailId": email.number,
                "eventType": event_type,
                "metadata": metadata,
                "geoCountry": None,
                "geoRegion": None,
                "geoCity": None,
                "uaClientName": None,
                "uaClientType": None,
                "uaOs": None,
                "uaDeviceType": None,
                "isPrefetch": False,
                "createdAt": iso(utcnow()),
            }
            self._next_event += 1
            email.events.append(event)
            return event

    def find(self, email_id: str) -> StoredEmail | None:
        with self.lock:
            return self.emails.get(email_id)

    def delete_emails(self, email_id: str | None = None) -> int:
        """Forget one email (or, with no id, every email); its lifecycle
        stops. Idempotency keys stay, as the API's do. Returns how many."""
        with self.lock:
            if email_id is None:
                count = len(self.emails)
                self.emails.clear()
                return count
            return 1 if self.emails.pop(email_id, None) is not None else 0

    def all_emails(self) -> list[StoredEmail]:
        """Oldest first."""
        with self.lock:
            return list(self.emails.values())

    # Idempotency --------------------------------------------------------

    def claim(
        self, keys: set[tuple[str, str, str]], *, wait: bool, timeout: float
    ) -> bool:
        """Mark ``keys`` in flight, first waiting (bounded) for any request
        that holds one of them. ``False`` if they stay busy (or ``wait`` is
        off and one is busy)."""
        deadline = time.monotonic() + timeout
        with self._idle:
            while self._in_flight & keys:
                remaining = deadline - time.monotonic()
                if not wait or remaining <= 0:
                    return False
                self._idle.wait(remaining)
            self._in_flight |= keys
            return True

    def release(self, keys: set[tuple[str, str, str]]) -> None:
        with self._idle:
            self._in_flight -= keys
            self._idle.notify_all()

    def _evict_headers(self) -> None:
        """Forget every expired header key (the caller holds the lock)."""
        now = time.monotonic()
        while self._header_expiry and self._header_expiry[0][0] <= now:
            _, _, key, replay = heapq.heappop(self._header_expiry)
            # The key may have been stored again since (after it expired).
            if self.header_keys.get(key) is replay:
                del self.header_keys[key]

    def lookup_header(self, scope: str, key: str) -> Replay | None:
        with self.lock:
            self._evict_headers()
            return self.header_keys.get((scope, key))

    def remember_header(
        self, scope: str, key: str, replay: Replay, ttl: float, max_keys: int
    ) -> None:
        """Remember a header key's answer for ``ttl`` seconds; beyond
        ``max_keys`` keys, the ones closest to expiring are dropped."""
        with self.lock:
            self._evict_headers()
            replay.expires = time.monotonic() + ttl
            self.header_keys[(scope, key)] = replay
            entry = (replay.expires, next(self._tiebreak), (scope, key), replay)
            heapq.heappush(self._header_expiry, entry)
            while len(self.header_keys) > max_keys and self._header_expiry:
                _, _, old, old_replay = heapq.heappop(self._header_expiry)
                if self.header_keys.get(old) is old_replay:
                    del self.header_keys[old]

    def lookup_body(self, scope: str, key: str) -> Replay | None:
        with self.lock:
            return self.body_keys.get((scope, key))

    def remember_body(self, scope: str, key: str, replay: Replay) -> None:
        with self.lock:
            self.body_keys[(scope, key)] = replay

    # Counters and the request log -----------------------------------------

    def count(self, name: str, amount: int = 1) -> None:
        with self.lock:
            self.counters[name] += amount

    def log_request(self, entry: dict[str, t.Any], max_keys: int) -> None:
        """Log a request and count its ``Idempotency-Key`` attempt; beyond
        ``max_keys`` keys, the least recently attempted are dropped from the
        per-key counts (never from the totals)."""
        with self.lock:
            self.counters["requests"] += 1
            self.statuses[entry["status"]] += 1
            key = entry.get("idempotency_key")
            if key:
                self.counters["idempotency_key_attempts"] += 1
                attempts = self.attempts_by_key
                attempts[key] = attempts.pop(key, 0) + 1
                while len(attempts) > max_keys:
                    attempts.popitem(last=False)
                    self.counters["attempt_keys_evicted"] += 1
            self.log.append(entry)

    def stats(self, *, keys: bool = True) -> dict[str, t.Any]:
        """The counters; ``keys=False`` leaves out the per-key attempt
        counts (up to ``idempotency_attempts_max_keys`` entries)."""
        with self.lock:
            self._evict_headers()
            stats: dict[str, t.Any] = {
                "requests": self.counters["requests"],
                "emails_created": self.counters["emails_created"],
                "emails_stored": len(self.emails),
                "replays": self.counters["replays"],
                "faults_fired": self.counters["faults_fired"],
                "requests_held": self.counters["requests_held"],
                "throttled": self.counters["throttled"],
                "quota_refused": self.counters["quota_refused"],
                "header_keys_stored": len(self.header_keys),
                "body_keys_stored": len(self.body_keys),
                "webhook_deliveries": self.counters["webhook_deliveries"],
                "webhook_attempts": self.counters["webhook_attempts"],
                "responses_by_status": {
                    str(k): v for k, v in sorted(self.statuses.items())
                },
                "idempotency_key_attempts": self.counters["idempotency_key_attempts"],
                "attempt_keys_stored": len(self.attempts_by_key),
                "attempt_keys_evicted": self.counters["attempt_keys_evicted"],
            }
            if keys:
                stats["attempts_by_idempotency_key"] = dict(self.attempts_by_key)
            return stats

    # Throttle and quota ---------------------------------------------------

    def take_token(self, bucket: str, rate: float, burst: int) -> tuple[bool, int, int]:
        """Token bucket: ``(allowed, remaining, seconds until a token)``."""
        now = time.monotonic()
        with self.lock:
            tokens, last = self._buckets.get(bucket, (float(burst), now))
            tokens = min(float(burst), tokens + (now - last) * rate)
            if tokens >= 1.0:
                self._buckets[bucket] = (tokens - 1.0, now)
                return True, int(tokens - 1.0), 0
            self._buckets[bucket] = (tokens, now)
            wait = math.ceil((1.0 - tokens) / rate) if rate > 0 else 3600
            return False, 0, max(1, wait)

    def use_quota(
        self, scope: str, daily: int | None, monthly: int | None
    ) -> str | None:
        """Count one live email against the quotas, or return the code of
        the one that is used up (and count nothing)."""
        today = utcnow()
        day, month = today.strftime("%Y-%m-%d"), today.strftime("%Y-%m")
        with self.lock:
            if monthly is not None and self._usage[(scope, month)] >= monthly:
                return "monthly_limit_exceeded"
            if daily is not None and self._usage[(scope, day)] >= daily:
                return "daily_limit_exceeded"
            self._usage[(scope, month)] += 1
            self._usage[(scope, day)] += 1
            return None
