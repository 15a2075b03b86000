"""What Flask-PostStack keeps for one app, and how the rest of it gets there.

``init_app`` stores one :class:`AppState` at ``app.extensions["poststack.state"]``
(the SDK client itself is at ``app.extensions["poststack"]``). Everything
app-specific lives there; nothing lives in module globals.
"""

from __future__ import annotations

import contextlib
import dataclasses
import threading
import typing as t

from flask import current_app
from flask import Flask

from ._loop_clients import LoopClients
from .client import ClientSlot
from .config import live_setting
from .config import Settings
from .errors import ConfigurationError
from .pipeline import Context

if t.TYPE_CHECKING:
    from redis import Redis
    from rq import Queue

__all__ = ["AppState", "Mode", "get_state", "in_plugin_test", "testing_redis"]

STATE_KEY = "poststack.state"

# Set by the pytest plugin for the length of each test (see testing_redis).
# Not app-specific: a process-wide switch, like pytest's own state.
_testing_redis: t.Callable[[], Redis] | None = None


@contextlib.contextmanager
def testing_redis(factory: t.Callable[[], Redis]) -> t.Iterator[None]:
    """Inside the block, testing apps that do not set ``POSTSTACK_REDIS_URL``
    in ``app.config`` use ``factory()`` as their Redis (the pytest plugin's
    in-memory queue). ``use_redis`` still comes first.
    """
    global _testing_redis
    previous, _testing_redis = _testing_redis, factory
    try:
        yield
    finally:
        _testing_redis = previous


def in_plugin_test() -> bool:
    """Whether the pytest plugin is running (see :func:`testing_redis`)."""
    return _testing_redis is not None


class _RedisSlot:
    """The app's Redis client, made on first use; one pool per app."""

    def __init__(self, url: str, timeout: float) -> None:
        self._url = url
        self._timeout = timeout
        self._lock = threading.Lock()
        self._conn: Redis | None = None
        self._override: Redis | None = None

    @property
    def overridden(self) -> bool:
        """Whether :meth:`use` has put another connection in place."""
        return self._override is not None

    @contextlib.contextmanager
    def use(self, connection: Redis) -> t.Iterator[None]:
        """Hand out ``connection`` instead, inside the block."""
        previous, self._override = self._override, connection
        try:
            yield
        finally:
            self._override = previous

    def get(self) -> Redis:
        if self._override is not None:
            return self._override
        if self._conn is None:
            with self._lock:
                if self._conn is None:
                    import redis

                    from ._redis_errors import recording

                    # Timeouts so that a dead Redis fails an enqueue in
                    # seconds instead of hanging the request.
                    self._conn = recording(
                        redis.Redis.from_url(
                            self._url,
                            socket_connect_timeout=min(5, self._timeout),
                            socket_timeout=self._timeout,
                            health_check_interval=30,
                        )
                    )
        return self._conn


@dataclasses.dataclass(frozen=True, eq=False)
class Mode:
    """What an app uses while ``TESTING`` is off, or while it is on."""

    #: The app's parsed configuration in this mode.
    settings: Settings
    #: The SDK client, renewed in a forked child.
    client_slot: ClientSlot = dataclasses.field(repr=False)
    #: Whether ``app.config`` itself set ``POSTSTACK_REDIS_URL``.
    redis_url_in_config: bool = True
    redis: _RedisSlot = dataclasses.field(init=False, repr=False)
    #: The ``AsyncPostStack`` clients, one per event loop.
    loop_clients: LoopClients = dataclasses.field(init=False, repr=False)

    def __post_init__(self) -> None:
        redis_slot = _RedisSlot(self.settings.redis_url, self.settings.redis_timeout)
        object.__setattr__(self, "redis", redis_slot)
        object.__setattr__(self, "loop_clients", LoopClients(self.client_slot))


@dataclasses.dataclass(frozen=True, eq=False)
class AppState:
    """Everything Flask-PostStack keeps for one app.

    Read-only, but for :attr:`outbox`, which sends append to while sending
    is suppressed. The settings, client and Redis follow ``app.testing``
    live: an app whose ``TESTING`` is turned on after ``init_app`` (as in
    Flask's own testing docs) is isolated from the environment all the same.
    """

    app: Flask = dataclasses.field(repr=False)
    #: The app's :class:`Mode` with ``TESTING`` off, then on.
    modes: tuple[Mode, Mode] = dataclasses.field(repr=False)
    #: Payloads captured while sending was suppressed, oldest first.
    outbox: list[dict[str, t.Any]] = dataclasses.field(default_factory=list, repr=False)
    # RQ queues by (name, is_async): Queue() costs a good part of an enqueue.
    _queues: dict[tuple[str, bool], Queue] = dataclasses.field(
        default_factory=dict, init=False, repr=False
    )

    @property
    def mode(self) -> Mode:
        """The app's :class:`Mode` now."""
        return self.modes[bool(self.app.testing)]

    @property
    def settings(self) -> Settings:
        """The app's parsed configuration (as ``app.testing`` is now)."""
        return self.mode.settings

    @property
    def client_slot(self) -> ClientSlot:
        """The app's SDK client slot, as ``app.testing`` is now."""
        self.follow_testing()
        return self.mode.client_slot

    def follow_testing(self) -> None:
        """Point ``app.extensions["poststack"]`` at the client of the current
        mode (``init_app`` runs this before each request)."""
        client = self.mode.client_slot.get()
        if self.app.extensions.get("poststack") is not client:
            self.app.extensions["poststack"] = client

    @property
    def loop_clients(self) -> LoopClients:
        """The app's ``AsyncPostStack`` clients, one per event loop (as
        ``app.testing`` is now)."""
        self.follow_testing()
        return self.mode.loop_clients

    @property
    def redis(self) -> Redis:
        """The app's Redis client (its queue's connection).

        :raises ConfigurationError: for a testing app that sets no
            ``POSTSTACK_REDIS_URL`` in ``app.config``, outside a test run by
            the pytest plugin: it never falls back to a Redis on localhost.
        """
        mode = self.mode
        if (
            self.app.testing
            and not mode.redis.overridden
            and not mode.redis_url_in_config
        ):
            factory = _testing_redis
            if factory is not None:
                return factory()
            self.redis_url()  # raises
        return mode.redis.get()

    def redis_url(self) -> str:
        """The Redis URL a worker for this app should use.

        :raises ConfigurationError: for a testing app that sets no
            ``POSTSTACK_REDIS_URL`` in ``app.config``.
        """
        if self.app.testing and not self.mode.redis_url_in_config:
            raise ConfigurationError(
                "POSTSTACK_REDIS_URL",
                "this app has TESTING on and sets no Redis URL in app.config,"
                " so it has no queue (it never falls back to a Redis on"
                " localhost). Run it under pytest, whose Flask-PostStack plugin"
                " gives each test an in-memory queue (with Celery, runs each"
                " task inline); set POSTSTACK_REDIS_URL in app.config; or, in"
                " a script, lend it a connection for a block: `with"
                " get_state(app).use_redis(fakeredis.FakeRedis()):`"
                " (POSTSTACK_EAGER alone does not do: eager jobs go through"
                " Redis too).",
            )
        return self.settings.redis_url

    @contextlib.contextmanager
    def use_redis(self, connection: Redis) -> t.Iterator[None]:
        """Use ``connection`` as the app's Redis inside the block (tests)."""
        with self.mode.redis.use(connection):
            yield

    @property
    def suppressed(self) -> bool:
        """Whether sends are captured instead of sent, right now.

        ``POSTSTACK_SUPPRESS_SEND`` is read live from ``app.config``, so
        toggling it (or ``TESTING``) after ``init_app`` takes effect.
        """
        live = self._live("suppress_send")
        return self.app.testing if live is None else bool(live)

    @property
    def eager(self) -> bool:
        """Whether queued jobs run inline (``POSTSTACK_EAGER``, read live)."""
        return bool(self._live("eager"))

    def _live(self, name: str) -> t.Any:
        live = live_setting(self.app.config, name)
        return getattr(self.settings, name) if live is None else live

    def send_context(self) -> Context:
        """The pipeline's context for a send from this app, now."""
        return Context(
            sender=self.app,
            slot=self.client_slot,
            suppressed=self.suppressed,
            outbox=self.outbox,
        )

    def queue(self, name: str | None = None) -> Queue:
        """The app's RQ queue ``name`` (default ``POSTSTACK_QUEUE``), JSON jobs.

        With ``POSTSTACK_EAGER`` on, its jobs run as they are enqueued.
        """
        from rq import Queue
        from rq.serializers import JSONSerializer

        name = name or self.settings.queue
        connection = self.redis
        cache_key = (name, not self.eager)
        rq_queue = self._queues.get(cache_key)
        if rq_queue is None or rq_queue.connection is not connection:
            rq_queue = self._queues[cache_key] = Queue(
                name,
                connection=connection,
                serializer=JSONSerializer,
                is_async=not self.eager,
            )
        return rq_queue


def get_state(app: Flask | None = None) -> AppState:
    """The Flask-PostStack state of ``app`` (default: the current app).

    :raises RuntimeError: if the extension is not registered on the app.
    """
    if app is None:
        app = t.cast(Flask, current_app._get_current_object())  # type: ignore[attr-defined]
    try:
        state: AppState = app.extensions[STATE_KEY]
    except KeyError:
        raise RuntimeError(
            "Flask-PostStack is not registered on this app. Did you forget"
            " to call 'PostStack(app)' or 'poststack.init_app(app)'?"
        ) from None
    return state
