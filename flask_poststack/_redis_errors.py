"""Whether a failed Redis write may have reached Redis.

A read timeout or a connection lost mid-command does not mean the command
was not executed: a hung Redis (``SIGSTOP``, a long fork, a failover) may
run the MULTI/EXEC it was sent and answer too late. Only an error before
anything was sent (the connection refused, a connect timeout, a failed
``AUTH``) proves that nothing was written.

redis-py retries a failed command on a new connection and raises only the
last error, so the app's Redis client gets a :class:`RecordingRetry`: inside
:func:`watch`, every error of every attempt is seen, not just the last.
"""

from __future__ import annotations

import contextlib
import contextvars
import typing as t

import redis
from redis.retry import Retry

__all__ = [
    "RecordingRetry",
    "before_sending",
    "may_have_reached",
    "record",
    "recording",
    "watch",
]

_seen: contextvars.ContextVar[list[BaseException] | None] = contextvars.ContextVar(
    "flask_poststack_redis_errors", default=None
)


class RecordingRetry(Retry):
    """redis-py's :class:`~redis.retry.Retry`, which also records each failed
    attempt for :func:`watch`."""

    def call_with_retry(
        self, do: t.Any, fail: t.Any, *args: t.Any, **kwargs: t.Any
    ) -> t.Any:
        seen = _seen.get()
        if seen is None:
            return super().call_with_retry(do, fail, *args, **kwargs)

        def recording_fail(error: BaseException, *more: t.Any) -> t.Any:
            seen.append(error)
            return fail(error, *more)

        return super().call_with_retry(do, recording_fail, *args, **kwargs)


def recording(client: redis.Redis) -> redis.Redis:
    """Give ``client`` a :class:`RecordingRetry` with the same policy."""
    retry = client.get_retry()
    if retry is not None and not isinstance(retry, RecordingRetry):
        # The same backoff, count and errors as redis-py's default.
        client.set_retry(
            RecordingRetry(retry._backoff, retry._retries, retry._supported_errors)
        )
    return client


@contextlib.contextmanager
def watch() -> t.Iterator[list[BaseException]]:
    """Collect the errors of every Redis attempt made inside the block."""
    seen: list[BaseException] = []
    token = _seen.set(seen)
    try:
        yield seen
    finally:
        _seen.reset(token)


def record(exc: BaseException) -> None:
    """Count ``exc`` as a failed attempt of the current :func:`watch` block
    (for retries made elsewhere than in redis-py, e.g. kombu's publish)."""
    seen = _seen.get()
    if seen is not None:
        seen.append(exc)


def may_have_reached(errors: t.Iterable[BaseException]) -> bool:
    """The rule of every enqueue path: a failed write may have reached Redis
    unless every attempt failed before anything was sent."""
    return not all(map(before_sending, errors))


def before_sending(exc: BaseException) -> bool:
    """Whether ``exc`` happened before any command was sent (``exc`` may be
    kombu's wrapper of the Redis error)."""
    while not isinstance(exc, redis.RedisError) and exc.__cause__ is not None:
        exc = exc.__cause__
    if isinstance(exc, redis.AuthenticationError) or _pool_wait(exc):
        return True
    # redis-py's connect step: "Error 111 connecting to host:port. ..." and
    # "Timeout connecting to server". Anything else (a read or write timeout,
    # "Connection closed by server", a reset) may follow a sent command.
    text = str(exc)
    return isinstance(exc, (redis.ConnectionError, redis.TimeoutError)) and (
        " connecting to " in text or text.startswith("Timeout connecting")
    )


def _pool_wait(exc: BaseException) -> bool:
    # No free connection (redis-py) or producer (kombu) in time: nothing sent.
    if isinstance(exc, redis.ConnectionError):
        return str(exc) == "No connection available."
    kind = type(exc)
    return kind.__name__ == "LimitExceeded" and kind.__module__.startswith("kombu")
