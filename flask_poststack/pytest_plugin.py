"""pytest fixtures for apps that use Flask-PostStack.

Installing Flask-PostStack registers this plugin with pytest (the
``pytest11`` entry point ``poststack``): there is nothing to add to a
conftest. Turn it off with ``-p no:poststack``. A conftest that still lists
``pytest_plugins = ["flask_poststack.pytest_plugin"]`` keeps working.

For every test, a testing app (``TESTING = True``) that does not set
``POSTSTACK_REDIS_URL`` in ``app.config`` queues into an in-memory
fakeredis, new for each test: ``enqueue_email`` needs no Redis server and
leaves nothing in one. Outside a test (in a session-scoped fixture, say) it
queues into one in-memory Redis kept for the whole run. A test that wants a
real Redis sets the URL.

Fixtures (all prefixed ``poststack_`` so none shadows your own):

``poststack_outbox``
    A list of :class:`~flask_poststack.testing.RecordedEmail`, one per email
    sent, captured or queued during the test (a queued email that the test
    runs is the same record, updated).
``poststack_fail_next``
    :func:`flask_poststack.testing.fail_next`; leftovers are cleared.
``poststack_sandbox``
    A running :class:`~flask_poststack.sandbox.Sandbox` (one per session,
    reset for each test): point ``POSTSTACK_BASE_URL`` at its ``base_url``.
``poststack_queue``
    The test's in-memory queue of your ``app`` fixture, with ``.jobs`` and
    ``.run()`` (it moves an app with its own ``POSTSTACK_REDIS_URL`` there
    too).
``poststack_app``
    The app ``poststack_queue`` works on: your ``app`` fixture by default;
    override it if your app fixture has another name.
"""

from __future__ import annotations

import contextlib
import sys
import typing as t

import pytest
from flask import Flask

from ._state import get_state
from ._state import testing_redis
from .pipeline import running_in
from .testing import clear_failures
from .testing import fail_next
from .testing import record_messages
from .testing import RecordedEmail

if t.TYPE_CHECKING:
    import redis
    from rq.job import Job

    from .sandbox import Sandbox


def pytest_plugin_registered(
    plugin: object, plugin_name: str | None, manager: pytest.PytestPluginManager
) -> None:
    """Registered by the entry point, block the module's own name, so that a
    conftest's ``pytest_plugins = ["flask_poststack.pytest_plugin"]`` is a
    no-op instead of pluggy's "already registered" error."""
    ours = plugin is sys.modules[__name__] and plugin_name != __name__
    if ours and not manager.is_blocked(__name__):
        manager.set_blocked(__name__)


def memory_redis() -> redis.Redis:
    """A new, empty in-memory Redis (fakeredis, a test dependency)."""
    try:
        import fakeredis
    except ImportError:
        raise RuntimeError(
            "Flask-PostStack's pytest plugin queues into an in-memory Redis,"
            " which needs fakeredis: 'pip install \"fakeredis[lua]\"'. Or set"
            " POSTSTACK_REDIS_URL in app.config to use a real Redis."
        ) from None
    connection: redis.Redis = fakeredis.FakeRedis(server=fakeredis.FakeServer())
    return connection


class _MemoryRedis:
    """The test's in-memory Redis, made on first use."""

    def __init__(self) -> None:
        self.connection: redis.Redis | None = None

    def get(self) -> redis.Redis:
        if self.connection is None:
            self.connection = memory_redis()
        return self.connection

    def close(self) -> None:
        if self.connection is not None:
            self.connection.close()


class FakeQueue:
    """An app's queue in fakeredis; :meth:`run` works off every queued job."""

    def __init__(self, app: Flask, connection: redis.Redis) -> None:
        self.app = app
        self.connection = connection

    @property
    def jobs(self) -> list[Job]:
        """The jobs waiting on the app's queue, oldest first."""
        jobs: list[Job] = self._queue().get_jobs()
        return jobs

    def run(self) -> list[Job]:
        """Run the waiting jobs in this process, as a worker would, and return them.

        Jobs run inside an app context, so they send with the app's client and
        honour its ``POSTSTACK_SUPPRESS_SEND``.
        """
        from rq import SimpleWorker
        from rq.serializers import JSONSerializer

        jobs = self.jobs
        worker = SimpleWorker(
            [self._queue()], connection=self.connection, serializer=JSONSerializer
        )
        state = get_state(self.app)
        with self.app.app_context(), running_in(state.send_context()):
            worker.work(burst=True, with_scheduler=False)
        for job in jobs:
            job.refresh()  # type: ignore[no-untyped-call]
        return jobs

    def _queue(self) -> t.Any:
        from rq import Queue
        from rq.serializers import JSONSerializer

        name = get_state(self.app).settings.queue
        return Queue(name, connection=self.connection, serializer=JSONSerializer)


_SESSION_REDIS = pytest.StashKey[contextlib.ExitStack]()


def pytest_sessionstart(session: pytest.Session) -> None:
    """Give testing apps an in-memory Redis for the whole run, so that
    session-scoped fixtures never reach a Redis on localhost either."""
    memory = _MemoryRedis()
    stack = contextlib.ExitStack()
    stack.enter_context(testing_redis(memory.get))
    stack.callback(memory.close)
    session.stash[_SESSION_REDIS] = stack


def pytest_sessionfinish(session: pytest.Session) -> None:
    """Undo :func:`pytest_sessionstart`."""
    stack = session.stash.get(_SESSION_REDIS, None)
    if stack is not None:
        stack.close()


@pytest.fixture(autouse=True)
def _poststack_memory_redis() -> t.Iterator[_MemoryRedis]:
    """Testing apps without their own ``POSTSTACK_REDIS_URL`` queue into an
    in-memory Redis for the test, instead of the default localhost one."""
    memory = _MemoryRedis()
    with testing_redis(memory.get):
        yield memory
    memory.close()


@pytest.fixture
def poststack_outbox() -> t.Iterator[list[RecordedEmail]]:
    """Every email sent or queued during the test, in order."""
    with record_messages() as records:
        yield records


@pytest.fixture
def poststack_fail_next() -> t.Iterator[t.Callable[..., None]]:
    """:func:`~flask_poststack.testing.fail_next`, cleared after the test."""
    yield fail_next
    clear_failures()


@pytest.fixture(scope="session")
def _poststack_sandbox_server() -> t.Iterator[Sandbox]:
    from .sandbox import Sandbox

    server = Sandbox(port=0, lifecycle_delay=0.01).start()
    yield server
    server.stop()


@pytest.fixture
def poststack_sandbox(_poststack_sandbox_server: Sandbox) -> Sandbox:
    """The session's sandbox, emptied and reset before the test."""
    _poststack_sandbox_server.reset()
    return _poststack_sandbox_server


@pytest.fixture
def poststack_app(request: pytest.FixtureRequest) -> Flask:
    """Your ``app`` fixture; override this fixture if yours has another name."""
    app: Flask = request.getfixturevalue("app")
    return app


@pytest.fixture
def poststack_queue(
    poststack_app: Flask, _poststack_memory_redis: _MemoryRedis
) -> t.Iterator[FakeQueue]:
    """The app's queue in the test's in-memory Redis (where a testing app
    without ``POSTSTACK_REDIS_URL`` queues anyway; one with it is moved
    there for the test)."""
    if get_state(poststack_app).settings.queue_backend == "celery":
        raise RuntimeError(
            "poststack_queue is the RQ queue; this app has"
            " POSTSTACK_QUEUE_BACKEND = 'celery'. Without POSTSTACK_REDIS_URL"
            " in app.config its tasks run inline at enqueue_email: use"
            " poststack_outbox and email_status(result) instead."
        )
    connection = _poststack_memory_redis.get()
    with get_state(poststack_app).use_redis(connection):
        yield FakeQueue(poststack_app, connection)
