"""The pytest plugin as a user meets it: registered by the install, and a
test's queue in memory unless the app asks for a real Redis."""

from __future__ import annotations

import sys
import typing as t

import pytest
import redis
from flask import Flask

from flask_poststack import enqueue_email
from flask_poststack import QueueUnavailableError
from flask_poststack._state import get_state
from flask_poststack.pytest_plugin import memory_redis
from flask_poststack.redis_server import free_port
from flask_poststack.redis_server import RedisServer
from flask_poststack.testing import record_messages

if t.TYPE_CHECKING:
    from flask_poststack.pytest_plugin import FakeQueue
    from tests.conftest import AppFactory

OFF = ("-p", "no:cacheprovider", "-p", "no:poststack")
USERS_TESTS = """
    import pytest
    from flask import Flask
    from flask_poststack import PostStack, enqueue_email

    @pytest.fixture
    def app():
        app = Flask("users_app")
        app.config.update(TESTING=True, POSTSTACK_DEFAULT_FROM="a@acme.test")
        PostStack(app)
        return app

    def test_fixtures_are_there(app, poststack_outbox, poststack_queue):
        with app.app_context():
            enqueue_email(to="ada@example.com", subject="Hi", text="Hi")
        assert [e.status for e in poststack_outbox] == ["queued"]
        assert len(poststack_queue.jobs) == 1
"""


def test_the_plugin_needs_no_conftest(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(USERS_TESTS)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=1)


def test_a_conftest_may_still_list_the_plugin(pytester: pytest.Pytester) -> None:
    pytester.makeconftest('pytest_plugins = ["flask_poststack.pytest_plugin"]')
    pytester.makepyfile(USERS_TESTS)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=1)
    # Turned off, the conftest's listing loads it.
    result = pytester.runpytest_subprocess(*OFF)
    result.assert_outcomes(passed=1)


def test_the_plugin_can_be_turned_off(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(USERS_TESTS)
    result = pytester.runpytest_subprocess(*OFF)
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*fixture 'poststack_outbox' not found*"])


def test_each_test_queues_into_its_own_memory(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytester.makepyfile(
        """
        import pytest
        from flask import Flask
        from flask_poststack import PostStack, enqueue_email
        from flask_poststack._state import get_state

        @pytest.fixture(scope="module")
        def app():
            # One app for the module, created outside any test.
            app = Flask("users_app")
            app.config.update(TESTING=True, POSTSTACK_DEFAULT_FROM="a@acme.test")
            PostStack(app)
            return app

        @pytest.mark.parametrize("run", [1, 2])
        def test_enqueue(app, run):
            with app.app_context():
                job = enqueue_email(to="ada@example.com", subject="Hi", text="Hi")
            assert type(job.connection).__module__.startswith("fakeredis")
            assert get_state(app).queue().count == 1  # not the other test's
        """
    )
    # The shell's Redis URL is not the test's: nothing is listening there.
    monkeypatch.setenv("POSTSTACK_REDIS_URL", f"redis://127.0.0.1:{free_port()}/0")
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-W", "error")
    result.assert_outcomes(passed=2)


def test_a_testing_app_queues_in_memory(
    make_app: AppFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Neither the default localhost Redis nor the shell's is used.
    monkeypatch.setenv("POSTSTACK_REDIS_URL", f"redis://127.0.0.1:{free_port()}/0")
    app = make_app()
    with record_messages(app) as emails, app.app_context():
        job = enqueue_email(to="ada@example.com", subject="Hi", text="Hi")
        assert get_state(app).queue().job_ids == [job.id]
    assert type(get_state(app).redis).__module__.startswith("fakeredis")
    assert [e.status for e in emails] == ["queued"]


def test_an_explicit_redis_url_is_used(
    make_app: AppFactory, redis_server: RedisServer, redis_url: str
) -> None:
    app = make_app(POSTSTACK_REDIS_URL=redis_url)
    with app.app_context():
        job = enqueue_email(to="ada@example.com", subject="Hi", text="Hi")
    conn = redis.Redis.from_url(redis_url)
    try:
        assert conn.exists(job.key)
    finally:
        conn.close()
    dead = make_app(POSTSTACK_REDIS_URL=f"redis://127.0.0.1:{free_port()}/0")
    with dead.app_context(), pytest.raises(QueueUnavailableError):
        enqueue_email(to="ada@example.com", subject="Hi", text="Hi")


def test_an_app_that_is_not_testing_uses_its_redis(
    make_app: AppFactory, redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("POSTSTACK_REDIS_URL", redis_url)
    app = make_app(TESTING=False, POSTSTACK_SUPPRESS_SEND=True)
    assert not type(get_state(app).redis).__module__.startswith("fakeredis")


def test_poststack_queue_moves_an_explicit_url_to_memory(
    make_app: AppFactory, poststack_queue: FakeQueue
) -> None:
    app = poststack_queue.app
    assert get_state(app).redis is poststack_queue.connection
    other = make_app()  # the same in-memory Redis as the fixture's app
    assert get_state(other).redis is poststack_queue.connection


@pytest.fixture
def app(make_app: AppFactory) -> Flask:
    return make_app(POSTSTACK_REDIS_URL=f"redis://127.0.0.1:{free_port()}/0")


def test_without_fakeredis_the_error_says_what_to_install(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "fakeredis", None)
    with pytest.raises(RuntimeError, match=r"pip install \"fakeredis\[lua\]\""):
        memory_redis()


def test_a_session_fixture_queues_in_memory_too(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytester.makepyfile(
        """
        import pytest
        from flask import Flask
        from flask_poststack import PostStack, enqueue_email

        @pytest.fixture(scope="session")
        def seeded():
            app = Flask("users_app")
            app.config.update(TESTING=True, POSTSTACK_DEFAULT_FROM="a@acme.test")
            PostStack(app)
            with app.app_context():
                return enqueue_email(to="ada@example.com", subject="Hi", text="Hi")

        def test_seeded(seeded):
            assert type(seeded.connection).__module__.startswith("fakeredis")
        """
    )
    monkeypatch.setenv("POSTSTACK_REDIS_URL", f"redis://127.0.0.1:{free_port()}/0")
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-W", "error")
    result.assert_outcomes(passed=1)


def test_outside_pytest_a_testing_app_has_no_default_redis(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A script (or a subprocess of a test) never falls back to localhost."""
    script = pytester.makepyfile(
        """
        from flask import Flask
        from flask_poststack import PostStack, enqueue_email

        app = Flask("users_app")
        app.config.update(TESTING=True, POSTSTACK_DEFAULT_FROM="a@acme.test")
        PostStack(app)
        with app.app_context():
            enqueue_email(to="ada@example.com", subject="Hi", text="Hi")
        """
    )
    monkeypatch.setenv("POSTSTACK_REDIS_URL", f"redis://127.0.0.1:{free_port()}/0")
    result = pytester.run(sys.executable, str(script))
    assert result.ret == 1
    result.stderr.fnmatch_lines(
        ["*ConfigurationError: POSTSTACK_REDIS_URL: this app has TESTING on*"]
    )
    # What helps outside pytest; POSTSTACK_EAGER alone does not.
    result.stderr.fnmatch_lines(
        ["*with get_state(app).use_redis(fakeredis.FakeRedis()):*"]
    )
