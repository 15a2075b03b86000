"""The SDK client: built from :class:`~.config.Settings`, one per process.

No Flask here: the worker imports this module and nothing of the app.
A client holds a connection pool, which a forked child must not share with
its parent (rq's default worker forks a work-horse per job; gunicorn forks
workers from a preloaded app). :class:`ClientSlot` is the one mechanism for
that, for app clients and the worker's alike: after a fork, every slot
drops its client (without closing the parent's sockets) and builds a new one
on next use.
"""

from __future__ import annotations

import collections
import os
import threading
import typing as t
import weakref

import httpx
import poststack

from .config import check_api_key
from .config import environ_settings
from .config import is_api_key
from .config import Settings
from .errors import ConfigurationError

__all__ = [
    "ClientSlot",
    "FaultQueue",
    "make_client",
    "process_faults",
    "reset_worker",
    "worker_client",
    "worker_slot",
]

#: Stands in for the key when none is configured, so that an app loads (and
#: ``app.extensions["poststack"]`` is a real client) without credentials.
#: A real send checks the key first and never goes out with this one.
_PLACEHOLDER_KEY = "sk_test_not_configured"


def make_client(settings: Settings) -> poststack.PostStack:
    """A new SDK client for ``settings``."""
    # A malformed key never reaches the SDK (it could not even build its
    # headers); a send checks the key first and reports it.
    key = settings.api_key if is_api_key(settings.api_key) else None
    client = poststack.PostStack(
        api_key=key or _PLACEHOLDER_KEY,
        base_url=settings.base_url,
        timeout=settings.timeout,
        max_retries=settings.max_retries,
    )
    _size_pool(client, settings.worker_concurrency)
    return client


#: httpx keeps up to 20 idle connections open (of 100): with more senders
#: than that, each request beyond it would open a new connection.
_HTTPX_KEEPALIVE = 20


def _size_pool(client: poststack.PostStack, senders: int) -> None:
    """Let ``senders`` threads each keep a connection alive (the SDK takes no
    limits of its own, so its httpx client gets a transport that allows it)."""
    if senders <= _HTTPX_KEEPALIVE:
        return
    http = getattr(getattr(client, "_client", None), "_httpx", None)
    if not isinstance(http, httpx.Client):
        return  # another SDK layout: keep its defaults
    limits = httpx.Limits(max_connections=max(100, senders),
                          max_keepalive_connections=senders)  # fmt: skip
    old, http._transport = http._transport, httpx.HTTPTransport(limits=limits)
    old.close()


class FaultQueue:
    """Failures to raise at the next sends (see ``testing.fail_next``)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._items: collections.deque[Exception] = collections.deque()

    def add(self, exc: Exception, count: int = 1) -> None:
        """Raise ``exc`` at each of the next ``count`` sends."""
        with self._lock:
            self._items.extend([exc] * count)

    def clear(self) -> None:
        """Forget the failures that have not fired."""
        with self._lock:
            self._items.clear()

    def raise_next(self) -> None:
        """Raise the next failure, if any."""
        with self._lock:
            exc = self._items.popleft() if self._items else None
        if exc is not None:
            raise exc


class ClientSlot:
    """This process's SDK client for one app or worker.

    :param settings: how to build the client; a callable is read on first
        use (the worker reads its environment then).
    :param on_new: called with each client built after the first, in a
        forked child (the app puts it in ``app.extensions``).
    :param where: where the API key belongs, for the missing-key error.
    """

    def __init__(
        self,
        settings: Settings | t.Callable[[], Settings],
        *,
        on_new: t.Callable[[poststack.PostStack], None] | None = None,
        where: str = "app.config",
    ) -> None:
        self._settings_source = settings
        self._settings: Settings | None = (
            settings if isinstance(settings, Settings) else None
        )
        self._on_new = on_new
        self._where = where
        self._lock = threading.Lock()
        self._client: poststack.PostStack | None = None
        _slots.add(self)

    @property
    def faults(self) -> FaultQueue:
        """Failures to raise at the next sends (``testing.fail_next``)."""
        return process_faults()

    @property
    def settings(self) -> Settings:
        """The settings the client is built from."""
        if self._settings is None:
            source = self._settings_source
            assert callable(source)
            self._settings = source()
        return self._settings

    def get(self) -> poststack.PostStack:
        """The client, built on first use in this process."""
        client = self._client
        if client is None:
            with self._lock:
                if self._client is None:
                    self._client = make_client(self.settings)
                client = self._client
        return client

    def for_send(self) -> poststack.PostStack:
        """The client for a real send: the API key is checked first.

        :raises ConfigurationError: naming ``POSTSTACK_API_KEY`` and where
            to set it, when it is missing or malformed.
        """
        check_api_key(self.settings.api_key, self._where)
        return self.get()

    def close(self) -> None:
        """Close this process's client, if one was built."""
        client, self._client = self._client, None
        if client is not None:
            client.close()

    def _after_fork(self) -> None:
        # Drop, don't close, the inherited client: closing would shut down
        # sockets (and TLS sessions) the parent is still using.
        self._lock = threading.Lock()
        had_client, self._client = self._client is not None, None
        if had_client and self._on_new is not None:
            self._on_new(self.get())


_slots: weakref.WeakSet[ClientSlot] = weakref.WeakSet()


_faults = FaultQueue()


def process_faults() -> FaultQueue:
    """This process's test failures, shared by every slot: a failure queued
    by ``testing.fail_next`` reaches the next send, in any app or job."""
    return _faults


def _renew_after_fork() -> None:
    global _faults
    _faults = FaultQueue()
    for slot in list(_slots):
        slot._after_fork()


os.register_at_fork(after_in_child=_renew_after_fork)

_worker: ClientSlot | None = None
_worker_lock = threading.Lock()


def worker_slot() -> ClientSlot:
    """The worker process's slot: settings from ``os.environ``, read once."""
    global _worker
    if _worker is None:
        with _worker_lock:
            if _worker is None:
                _worker = ClientSlot(environ_settings, where="the worker's environment")
    return _worker


def missing_key_warning() -> str | None:
    """The worker's start-up warning when ``POSTSTACK_API_KEY`` is not in its
    environment (and sending is not suppressed); ``None`` when all is well,
    or when a bad setting will fail the first job, naming it."""
    try:
        settings = worker_slot().settings
    except ConfigurationError:
        return None
    if settings.api_key or settings.suppress_send:
        return None
    return (
        "WARNING: POSTSTACK_API_KEY is not set in this worker's environment,"
        " so every email job will fail: the worker reads POSTSTACK_* from its"
        " own environment only (not from the app's config). Set POSTSTACK_API_KEY"
        " in the worker's environment, or POSTSTACK_SUPPRESS_SEND=1 to log"
        " emails instead of sending them."
    )


def reset_worker() -> None:
    """Forget the worker process's client and settings: the next job reads
    ``os.environ`` again. For tests that change the environment."""
    global _worker
    with _worker_lock:
        old, _worker = _worker, None
    if old is not None:
        old.close()


def worker_client() -> poststack.PostStack:
    """The worker process's SDK client, built on first use from ``os.environ``.

    For your own RQ jobs: the same client the email jobs use.

    :raises ConfigurationError: naming ``POSTSTACK_API_KEY`` if it is missing
        or malformed.
    """
    return worker_slot().for_send()
