from __future__ import annotations

import os
import typing as t

import pytest
import redis
from flask import Flask

from flask_poststack import PostStack
from flask_poststack.client import reset_worker
from flask_poststack.redis_server import RedisServer
from flask_poststack.sandbox import Sandbox

pytest_plugins = ["pytester", "flask_poststack.pytest_plugin"]

#: Keys the sandbox accepts; quotas apply to live keys only.
TEST_KEY = "sk_test_flaskpoststack0123456789"
LIVE_KEY = "sk_live_flaskpoststack0123456789"
#: The sender every app from :func:`make_app` has unless a test says otherwise.
DEFAULT_FROM = "hello@acme.test"


class AppFactory(t.Protocol):
    def __call__(
        self,
        *,
        template_folder: str | os.PathLike[str] = ...,
        register: bool = ...,
        **config: t.Any,
    ) -> Flask: ...


@pytest.fixture
def make_app() -> AppFactory:
    """A function that builds a Flask app with Flask-PostStack registered.

    ``make_app(**config)`` starts from ``TESTING=True`` (so sends are
    suppressed unless a test turns that off) and ``POSTSTACK_DEFAULT_FROM``;
    keyword arguments add to or override that config (``None`` leaves a
    setting unset). ``template_folder`` is Flask's; ``register=False``
    returns the app without the extension, for tests of ``init_app`` itself.
    """

    def make_app(
        *,
        template_folder: str | os.PathLike[str] = "templates",
        register: bool = True,
        **config: t.Any,
    ) -> Flask:
        app = Flask(__name__, template_folder=template_folder)
        app.config.update(TESTING=True, POSTSTACK_DEFAULT_FROM=DEFAULT_FROM)
        app.config.update(config)
        if register:
            PostStack(app)
        return app

    return make_app


@pytest.fixture(autouse=True)
def _clean_environ(monkeypatch: pytest.MonkeyPatch) -> t.Iterator[None]:
    """Config falls back to the environment, so no test may see another's keys;
    the worker's client, read from it, is made anew for each test."""
    for key in list(os.environ):
        if key.startswith("POSTSTACK_"):
            monkeypatch.delenv(key)
    reset_worker()
    yield
    reset_worker()


@pytest.fixture(scope="session")
def redis_server() -> t.Iterator[RedisServer]:
    """A real ``redis-server`` process on 127.0.0.1, for the whole session."""
    server = RedisServer().start()
    yield server
    server.stop()


@pytest.fixture
def redis_url(redis_server: RedisServer) -> t.Iterator[str]:
    """The URL of the session's Redis, emptied after each test."""
    yield redis_server.url
    conn = redis.Redis.from_url(redis_server.url)
    conn.flushall()
    conn.close()


@pytest.fixture(scope="session")
def sandbox_server() -> t.Iterator[Sandbox]:
    """One PostStack sandbox on 127.0.0.1 for the whole session."""
    server = Sandbox(port=0, latency=0.0, lifecycle_delay=0.02).start()
    yield server
    server.stop()


@pytest.fixture
def sandbox(sandbox_server: Sandbox) -> t.Iterator[Sandbox]:
    """The session's sandbox, reset (emails, keys, faults, settings) first."""
    sandbox_server.reset()
    yield sandbox_server


@pytest.fixture
def conn(redis_url: str) -> t.Iterator[redis.Redis]:
    """A client of the session's Redis, for looking at what was queued."""
    client = redis.Redis.from_url(redis_url)
    yield client
    client.close()


@pytest.fixture
def worker_env(monkeypatch: pytest.MonkeyPatch, sandbox: Sandbox) -> None:
    """What a worker process has: environment variables, no app.

    The SDK does not retry (``POSTSTACK_MAX_RETRIES=0``): RQ's retries do.
    """
    monkeypatch.setenv("POSTSTACK_API_KEY", TEST_KEY)
    monkeypatch.setenv("POSTSTACK_BASE_URL", sandbox.base_url)
    monkeypatch.setenv("POSTSTACK_MAX_RETRIES", "0")


@pytest.fixture
def batch_app(
    make_app: AppFactory,
    redis_url: str,
    worker_env: None,
    monkeypatch: pytest.MonkeyPatch,
) -> Flask:
    """The app (and worker environment) of the batch tests: a live key, so
    that the sandbox's quotas apply; no SDK retries; RQ retries at once."""
    monkeypatch.setenv("POSTSTACK_API_KEY", LIVE_KEY)
    return make_app(
        TESTING=False,  # the key and base URL come from the environment
        POSTSTACK_REDIS_URL=redis_url,
        POSTSTACK_RETRY_INTERVALS="0,0",
        POSTSTACK_SUPPRESS_SEND=False,
    )
