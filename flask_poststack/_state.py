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
from .pipeline import Context

if t.TYPE_CHECKING:
    from redis import Redis
    from rq import Queue

__all__ = ["AppState", "get_state", "testing_redis"]

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


class _RedisSlot:
    """The app's Redis client, made on first use; one pool per app."""

    def __init__(self, url: str) -> None:
        self._url = url
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

                    # Timeouts so that a dead Redis fails an enqueue in
                    # seconds instead of hanging the request.
                    self._conn = redis.Redis.from_url(
                        self._url,
                        socket_connect_timeout=5,
                        socket_timeout=10,
                        health_check_interval=30,
                    )
        return self._conn


@dataclasses.dataclass(frozen=True, eq=False)
class AppState:
    """Everything Flask-PostStack keeps for one app.

    Read-only, but for :attr:`outbox`, which sends append to while sending
    is suppressed.
    """

    app: Flask = dataclasses.field(repr=False)
    #: The app's parsed configuration.
    settings: Settings
    #: The app's SDK client, renewed in a forked child.
    client_slot: ClientSlot = dataclasses.field(repr=False)
    #: Payloads captured while sending was suppressed, oldest first.
    outbox: list[dict[str, t.Any]] = dataclasses.field(default_factory=list, repr=False)
    #: Whether ``app.config`` itself set ``POSTSTACK_REDIS_URL`` at
    #: ``init_app``: a testing app that did not gets the pytest plugin's
    #: in-memory Redis.
    redis_url_in_config: bool = True
    _redis: _RedisSlot = dataclasses.field(init=False, repr=False)
    _loop_clients: LoopClients = dataclasses.field(init=False, repr=False)
    # RQ queues by (name, is_async): Queue() costs a good part of an enqueue.
    _queues: dict[tuple[str, bool], Queue] = dataclasses.field(
        default_factory=dict, init=False, repr=False
    )

    def __post_init__(self) -> None:
        object.__setattr__(self, "_redis", _RedisSlot(self.settings.redis_url))
        object.__setattr__(self, "_loop_clients", LoopClients(self.client_slot))

    @property
    def loop_clients(self) -> LoopClients:
        """The app's ``AsyncPostStack`` clients, one per event loop."""
        return self._loop_clients

    @property
    def redis(self) -> Redis:
        """The app's Redis client (its queue's connection)."""
        factory = _testing_redis
        if (
            factory is not None
            and not self._redis.overridden
            and not self.redis_url_in_config
            and self.app.testing
        ):
            return factory()
        return self._redis.get()

    @contextlib.contextmanager
    def use_redis(self, connection: Redis) -> t.Iterator[None]:
        """Use ``connection`` as the app's Redis inside the block (tests)."""
        with self._redis.use(connection):
            yield

    @property
    def suppressed(self) -> bool:
        """Whether sends are captured instead of sent, right now.

        ``POSTSTACK_SUPPRESS_SEND`` is read live from ``app.config``, so
        toggling it (or ``TESTING``) after ``init_app`` takes effect.
        """
        live = live_setting(self.app.config, "suppress_send")
        return self.app.testing if live is None else bool(live)

    @property
    def eager(self) -> bool:
        """Whether queued jobs run inline (``POSTSTACK_EAGER``, read live)."""
        return bool(live_setting(self.app.config, "eager"))

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
