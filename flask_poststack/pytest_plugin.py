"""pytest fixtures for apps that use Flask-PostStack. Opt in from a conftest::

    pytest_plugins = ["flask_poststack.pytest_plugin"]

Fixtures (all prefixed ``poststack_`` so none shadows your own):

``poststack_outbox``
    A list of :class:`~flask_poststack.testing.RecordedEmail`, one per email
    sent or queued during the test.
``poststack_fail_next``
    :func:`flask_poststack.testing.fail_next`; leftovers are cleared.
``poststack_sandbox``
    A running :class:`~flask_poststack.sandbox.Sandbox` (one per session,
    reset for each test): point ``POSTSTACK_BASE_URL`` at its ``base_url``.
``poststack_queue``
    Routes ``enqueue_email`` of your ``app`` fixture to an in-memory
    fakeredis (needs ``fakeredis[lua]``), with ``.jobs`` and ``.run()``.
``poststack_app``
    The app ``poststack_queue`` works on: your ``app`` fixture by default;
    override it if your app fixture has another name.
"""

from __future__ import annotations

import typing as t

import pytest
from flask import Flask

from ._state import get_state
from .pipeline import running_in
from .testing import clear_failures
from .testing import fail_next
from .testing import record_messages
from .testing import RecordedEmail

if t.TYPE_CHECKING:
    import redis
    from rq.job import Job

    from .sandbox import Sandbox


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
def poststack_queue(poststack_app: Flask) -> t.Iterator[FakeQueue]:
    """The app's queue, moved to a fakeredis for the test."""
    import fakeredis

    connection = fakeredis.FakeRedis()
    with get_state(poststack_app).use_redis(connection):
        yield FakeQueue(poststack_app, connection)
    connection.close()
