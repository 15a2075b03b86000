"""The outbox with real processes: app, relays, Redis, worker and sandbox, on
SQLite (a file, WAL mode) and on PostgreSQL."""

from __future__ import annotations

import collections
import functools
import os
import subprocess
import sys
import time
import typing as t
from pathlib import Path

import pytest
from sqlalchemy import create_engine
from sqlalchemy import Engine
from sqlalchemy import select
from sqlalchemy.pool import NullPool

from flask_poststack.outbox import store
from flask_poststack.redis_server import RedisServer
from flask_poststack.sandbox import Sandbox
from tests.e2e.harness import API_KEY
from tests.e2e.harness import wait_until
from tests.e2e.harness import Workers

ROOT = Path(__file__).resolve().parents[2]


def env(db: str, redis_url: str, sandbox: Sandbox) -> dict[str, str]:
    return {
        **os.environ,
        "C18_DB_URL": db,
        "FLASK_APP": "tests.db.outbox_app:create_app",
        "POSTSTACK_OUTBOX": "sqlalchemy",
        "POSTSTACK_REDIS_URL": redis_url,
        "POSTSTACK_API_KEY": API_KEY,
        "POSTSTACK_BASE_URL": sandbox.base_url,
        "POSTSTACK_DEFAULT_FROM": "hello@example.com",
        "PYTHONPATH": str(ROOT),
    }


def signup(environ: dict[str, str], count: int, *flags: str) -> int:
    argv = [sys.executable, "-m", "tests.db.outbox_app", "signup", str(count), *flags]
    return subprocess.run(argv, env=environ, cwd=ROOT, timeout=120).returncode


FLASK = str(Path(sys.executable).with_name("flask"))


def relay(environ: dict[str, str], *flags: str) -> subprocess.Popen[str]:
    # Small batches, so that the two relays' claims interleave.
    argv = [FLASK, "poststack", "relay", "--once", "--grace", "0", "--batch", "2"]
    return subprocess.Popen(
        [*argv, *flags], env=environ, cwd=ROOT, stdout=subprocess.PIPE, text=True
    )


def pushed_count(proc: subprocess.Popen[str]) -> int:
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 0, out
    return int(out.split("Pushed ")[1].split()[0])


@functools.cache
def engine(db: str) -> Engine:
    return create_engine(db, poolclass=NullPool)  # no connection left open


def waiting(db: str) -> int:
    return store.counts(engine(db), store.table(store_name()))[0]


def store_name() -> str:
    return "poststack_outbox"


def delivered(sandbox: Sandbox) -> collections.Counter[str | None]:
    return collections.Counter(e.input.idempotency_key for e in sandbox.emails)


def row_keys(db: str) -> set[str]:
    outbox = store.table(store_name())
    with engine(db).connect() as conn:
        return set(conn.scalars(select(outbox.c.idempotency_key)))


@pytest.fixture
def parts(
    tmp_path: Path, poststack_sandbox: Sandbox
) -> t.Iterator[tuple[RedisServer, Workers, Sandbox]]:
    # Persistent, so that the jobs queued before a stop are there after it.
    server = RedisServer(appendonly="everysec").start()
    workers = Workers(tmp_path)
    yield server, workers, poststack_sandbox
    workers.close()
    server.stop()


def deliver(
    server: RedisServer, workers: Workers, sandbox: Sandbox, count: int
) -> None:
    from flask_poststack.config import Settings

    settings = Settings(redis_url=server.url, retry_intervals=(1,))
    workers.start(settings, sandbox, POSTSTACK_REDIS_URL=server.url)
    wait_until(lambda: len(sandbox.emails) >= count, 60, f"{count} emails")


def test_a_process_killed_after_its_commit_loses_nothing(
    parts: t.Any, database_url: str
) -> None:
    server, workers, sandbox = parts
    db = database_url
    environ = env(db, server.url, sandbox)
    assert signup(environ, 3, "--kill-at-commit") == -9
    assert waiting(db) == 1 and server.client().keys("rq:job:*") == []
    assert pushed_count(relay(environ)) == 1
    assert pushed_count(relay(environ)) == 0
    deliver(server, workers, sandbox, 1)
    assert delivered(sandbox) == {key: 1 for key in row_keys(db)}
    assert waiting(db) == 0


def test_redis_down_at_commit_then_two_racing_relays(
    parts: t.Any, database_url: str
) -> None:
    server, workers, sandbox = parts
    db = database_url
    environ = env(db, server.url, sandbox)
    server.stop(keep_data=True)
    assert signup(environ, 40) == 0  # no view failed
    assert waiting(db) == 40
    server.start()
    racers = [relay(environ), relay(environ)]
    assert sum(pushed_count(p) for p in racers) == 40
    assert waiting(db) == 0
    assert len(server.client().keys("rq:job:*")) == 40
    deliver(server, workers, sandbox, 40)
    assert delivered(sandbox) == {key: 1 for key in row_keys(db)}


def test_redis_stopped_during_the_commits(parts: t.Any, database_url: str) -> None:
    server, workers, sandbox = parts
    db = database_url
    assert server.process is not None
    environ = {**env(db, server.url, sandbox), "C18_REDIS_PID": str(server.process.pid)}
    # Redis stops between the 10th commit and its push; the app goes on.
    assert signup(environ, 30, "--stop-redis-at", "10") == 0  # no view failed
    assert waiting(db) == 21
    server.stop(keep_data=True)
    server.start()
    assert len(server.client().keys("rq:job:*")) == 9  # pushed before the stop
    assert pushed_count(relay(environ)) == 21
    assert waiting(db) == 0
    deliver(server, workers, sandbox, 30)
    assert delivered(sandbox) == {key: 1 for key in row_keys(db)}


def test_a_relay_killed_mid_push_then_another_delivers_each_once(
    parts: t.Any, database_url: str
) -> None:
    server, workers, sandbox = parts
    db = database_url
    environ = env(db, server.url, sandbox)
    total = 400
    server.stop(keep_data=True)
    assert signup(environ, total) == 0
    assert waiting(db) == total
    server.start()
    conn = server.client()
    # One claim of every row, pushed one by one and marked at the end: killed
    # halfway, it leaves jobs in Redis whose rows still wait, claimed.
    first = relay(environ, "--batch", str(total), "--lease", "1")
    deadline = time.monotonic() + 120
    while conn.llen("rq:queue:poststack") == 0 and first.poll() is None:
        assert time.monotonic() < deadline, "the relay pushed nothing"
    first.kill()
    first.communicate(timeout=60)
    in_redis = conn.llen("rq:queue:poststack")
    assert 0 < in_redis < total, f"killed after {in_redis} of {total} pushes"
    assert waiting(db) == total  # none marked

    second = subprocess.Popen(
        [FLASK, "poststack", "relay", "--grace", "0", "--interval", "0.1"],
        env=environ,
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
    )
    try:
        wait_until(lambda: waiting(db) == 0, 120, "the second relay")
    finally:
        second.kill()
        second.wait(timeout=60)
    assert conn.llen("rq:queue:poststack") == total  # the re-pushed ones: no copy
    deliver(server, workers, sandbox, total)
    assert delivered(sandbox) == {key: 1 for key in row_keys(db)}
