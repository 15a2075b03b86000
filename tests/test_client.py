"""The SDK clients: one per app and one per worker process, renewed after fork.

The app's client lives at ``app.extensions["poststack"]`` and is closed with
its app; a worker (no app) has one client per process, read from the
environment.
"""

from __future__ import annotations

import gc
import os
import typing as t
import warnings

import poststack
import pytest
from flask import Flask

from flask_poststack.client import worker_client

if t.TYPE_CHECKING:
    from tests.conftest import AppFactory

KEY = "sk_test_client0123456789"
#: Nothing listens here: a client that is wrongly still open fails fast.
NOWHERE = "http://127.0.0.1:9"


@pytest.fixture
def worker_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """What a worker process has: environment variables, no app."""
    monkeypatch.setenv("POSTSTACK_API_KEY", KEY)
    monkeypatch.setenv("POSTSTACK_BASE_URL", NOWHERE)


def assert_closed(client: poststack.PostStack) -> None:
    """A closed client refuses to send a request at all."""
    with pytest.raises(RuntimeError, match="closed"):
        client.emails.get("em_123")


def test_forked_child_gets_a_fresh_client(make_app: AppFactory) -> None:
    app = make_app(POSTSTACK_API_KEY=KEY, POSTSTACK_BASE_URL=NOWHERE)
    parent_client = app.extensions["poststack"]
    read, write = os.pipe()
    with warnings.catch_warnings():  # 3.12+ warns about fork with threads
        warnings.simplefilter("ignore", DeprecationWarning)
        pid = os.fork()
    if pid == 0:  # pragma: no cover - runs in the child
        fresh = app.extensions["poststack"] is not parent_client
        usable = isinstance(app.extensions["poststack"], poststack.PostStack)
        os.write(write, b"1" if fresh and usable else b"0")
        os._exit(0)
    os.close(write)
    answer = os.read(read, 1)
    os.close(read)
    os.waitpid(pid, 0)
    assert answer == b"1"
    assert app.extensions["poststack"] is parent_client


def test_client_is_closed_with_its_app_or_at_exit(make_app: AppFactory) -> None:
    app = make_app(POSTSTACK_API_KEY=KEY, POSTSTACK_BASE_URL=NOWHERE)
    client = app.extensions["poststack"]
    del app
    gc.collect()
    assert_closed(client)


def test_an_app_referenced_by_another_extension_is_still_collected(
    make_app: AppFactory,
) -> None:
    class SelfReferencing:
        def __init__(self, app: Flask) -> None:
            self.app = app
            app.extensions["self_referencing"] = self

    app = make_app(POSTSTACK_API_KEY=KEY, POSTSTACK_BASE_URL=NOWHERE)
    SelfReferencing(app)
    client = app.extensions["poststack"]
    del app
    gc.collect()
    assert_closed(client)


def test_one_client_per_process_and_a_new_one_after_fork(worker_env: None) -> None:
    client = worker_client()
    assert worker_client() is client
    read, write = os.pipe()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        pid = os.fork()
    if pid == 0:  # pragma: no cover - runs in the child
        os.write(write, b"1" if worker_client() is not client else b"0")
        os._exit(0)
    os.close(write)
    answer = os.read(read, 1)
    os.close(read)
    os.waitpid(pid, 0)
    assert answer == b"1"
    assert worker_client() is client
