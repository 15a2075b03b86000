"""Dedupe: remember dispatched deliveries, so that a repeat is not dispatched.

A delivery is *claimed* before its receivers run, *renewed* while they run
(:class:`Renewal`), *kept* once they all returned and *released* if one
raised (so that PostStack's retry gets through). Two stores:
:class:`MemoryClaims` (per process) and :class:`RedisClaims` (shared by every
process of the app).
"""

from __future__ import annotations

import collections
import hashlib
import logging
import threading
import time
import typing as t

from ..errors import redact_url

if t.TYPE_CHECKING:
    import redis

    from .events import WebhookEvent

__all__ = [
    "MEMORY_LIMIT",
    "PROCESSING_SECONDS",
    "Claim",
    "ClaimStore",
    "MemoryClaims",
    "RedisClaims",
    "Renewal",
    "StoreUnavailable",
    "dedupe_key",
]

logger = logging.getLogger(__name__)

#: The longest a claim lasts without being renewed. While the receivers run
#: the claim is renewed (every third of its length), so that it blocks its
#: duplicates however long they take; if the process dies meanwhile, nothing
#: renews it any more and it lapses, so that a retry gets through.
PROCESSING_SECONDS = 300

#: The most deliveries the in-memory dedupe store remembers per app.
MEMORY_LIMIT = 100_000


class StoreUnavailable(Exception):
    """The dedupe store cannot be reached (the endpoint answers 503)."""


#: What :meth:`ClaimStore.claim` found: a first delivery (now claimed), one
#: already dispatched, or one being dispatched right now by another request.
Claim = t.Literal["new", "done", "busy"]


class ClaimStore(t.Protocol):
    """What the endpoint needs from a dedupe store."""

    def claim(self, key: str, seconds: int) -> Claim:
        """Claim ``key`` for ``seconds`` unless it is claimed or kept.

        :raises StoreUnavailable: if the store cannot be reached.
        """
        ...

    def renew(self, key: str, seconds: int) -> bool:
        """Extend the claim on ``key`` to ``seconds`` from now.

        Only a claim (not a kept record) is extended; ``False`` if there is
        none any more. Never raises: a claim not renewed still lapses.
        """
        ...

    def keep(self, key: str, seconds: int) -> None:
        """Mark ``key`` dispatched, for ``seconds``."""
        ...

    def release(self, key: str) -> None:
        """Forget ``key``, so that its next delivery is dispatched."""
        ...


class MemoryClaims:
    """Per-process dedupe: bounded, thread-safe, expiring.

    :param limit: the most keys remembered; past it the oldest are forgotten
        (a repeat of one may then be dispatched again: at least once holds).
    """

    def __init__(self, limit: int = MEMORY_LIMIT) -> None:
        self._lock = threading.Lock()
        # key -> (expires at, done); oldest first.
        self._seen: collections.OrderedDict[str, tuple[float, bool]] = (
            collections.OrderedDict()
        )
        self._limit = limit

    def claim(self, key: str, seconds: int) -> Claim:
        now = time.monotonic()
        with self._lock:
            found = self._seen.get(key)
            if found is not None and found[0] > now:
                return "done" if found[1] else "busy"
            self._seen.pop(key, None)
            self._seen[key] = (now + seconds, False)
            self._evict(now)
            return "new"

    def renew(self, key: str, seconds: int) -> bool:
        now = time.monotonic()
        with self._lock:
            found = self._seen.get(key)
            if found is None or found[1] or found[0] <= now:
                return False
            self._seen[key] = (now + seconds, False)
            return True

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


class RedisClaims:
    """Dedupe shared by every process of the app, in its Redis.

    :param conn: the app's Redis connection.
    :param url: its URL, named (without a password) in log lines.
    """

    prefix = "poststack:webhook:"

    def __init__(self, conn: redis.Redis, url: str) -> None:
        self._conn = conn
        self._url = url

    def claim(self, key: str, seconds: int) -> Claim:
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
            raise StoreUnavailable from exc

    def renew(self, key: str, seconds: int) -> bool:
        # Only while it is still a claim: a kept record keeps its own expiry.
        renewed = self._quietly(
            lambda: self._conn.eval(_RENEW_SCRIPT, 1, self.prefix + key, seconds)
        )
        return bool(renewed)

    def keep(self, key: str, seconds: int) -> None:
        self._quietly(lambda: self._conn.set(self.prefix + key, b"done", ex=seconds))

    def release(self, key: str) -> None:
        self._quietly(lambda: self._conn.delete(self.prefix + key))

    def _quietly(self, call: t.Callable[[], object]) -> object:
        import redis

        try:
            return call()
        except redis.RedisError as exc:
            # The claim still lapses by itself, after at most
            # PROCESSING_SECONDS.
            logger.warning(
                "PostStack webhook: could not update the dedupe record in"
                " Redis at %s (%s)",
                redact_url(self._url),
                type(exc).__name__,
            )
            return None


#: Extends a claim's expiry, if the record is still a claim (``busy``).
_RENEW_SCRIPT = """
if redis.call('GET', KEYS[1]) == 'busy' then
    return redis.call('EXPIRE', KEYS[1], ARGV[1])
end
return 0
"""


class Renewal:
    """Keeps a claim alive while its receivers run: a daemon thread renews
    it every ``every`` seconds (default a third of ``seconds``) until
    :meth:`stop`. Use it as a context manager around the dispatch.

    A crashed process renews nothing, so the claim then lapses within
    ``seconds``.
    """

    def __init__(
        self,
        claims: ClaimStore,
        key: str,
        seconds: int,
        every: float | None = None,
    ) -> None:
        self._claims = claims
        self._key = key
        self._seconds = seconds
        self._every = every if every is not None else max(seconds / 3, 0.05)
        self._stopped = threading.Event()
        self._thread = threading.Thread(
            target=self._run, name="poststack-webhook-claim", daemon=True
        )

    def start(self) -> Renewal:
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop renewing (waits for a renewal under way to finish)."""
        self._stopped.set()
        if self._thread.is_alive():
            self._thread.join()

    def __enter__(self) -> Renewal:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def _run(self) -> None:
        while not self._stopped.wait(self._every):
            try:
                renewed = self._claims.renew(self._key, self._seconds)
            except Exception:  # a store's bug must not kill the dispatch
                logger.exception("PostStack webhook: could not renew a claim")
                continue
            if not renewed:
                logger.warning(
                    "PostStack webhook: the claim on a delivery being"
                    " dispatched lapsed before its receivers returned; a copy"
                    " that arrives now may be dispatched too"
                )
                return


def dedupe_key(event: WebhookEvent, body: bytes) -> str:
    """The key a delivery is known by: its type and event id, or its body."""
    if event.id is not None:
        # JSON may carry lone surrogates ("\ud800"): they must not raise.
        raw = f"id\0{event.type}\0{event.id}".encode("utf-8", "surrogatepass")
    else:
        raw = b"body\0" + body
    return hashlib.sha256(raw).hexdigest()
