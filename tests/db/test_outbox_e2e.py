"""The outbox with real processes: app, relays, Redis, worker and sandbox."""

from __future__ import annotations

import collections
import os
import subprocess
import sys
import typing as t
from pathlib import Path

import pytest
from sqlalchemy import create_engine
from sqlalchemy import select

from flask_poststack.outbox import store
from flask_poststack.redis_server import RedisServer
from flask_poststack.sandbox import Sandbox
from tests.e2e.harness import API_KEY
from tests.e2e.harness import wait_until
from tests.e2e.harness import Workers

ROOT = Path(__file__).resolve().parents[2]


def env(db: Path, redis_url: str, sandbox: Sandbox) -> dict[str, str]:
    return {
        **os.environ,
        "C18_DB": str(db),
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


def relay(environ: dict[str, str]) -> subprocess.Popen[str]:
    flask = str(Path(sys.executable).with_name("flask"))
    # Small batches, so that the two relays' claims interleave.
    argv = [flask, "poststack", "relay", "--once", "--grace", "0", "--batch", "2"]
    return subprocess.Popen(
        argv, env=environ, cwd=ROOT, stdout=subprocess.PIPE, text=True
    )


def pushed_count(proc: subprocess.Popen[str]) -> int:
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 0, out
    return int(out.split("Pushed ")[1].split()[0])


def waiting(db: Path) -> int:
    return store.counts(create_engine(f"sqlite:///{db}"), store.table(store_name()))[0]


def store_name() -> str:
    return "poststack_outbox"


def delivered(sandbox: Sandbox) -> collections.Counter[str | None]:
    return collections.Counter(e.input.idempotency_key for e in sandbox.emails)


def row_keys(db: Path) -> set[str]:
    outbox = store.table(store_name())
    with create_engine(f"sqlite:///{db}").connect() as conn:
        return set(conn.scalars(select(outbox.c.idempotency_key)))


@pytest.fixture
def parts(
    tmp_path: Path, poststack_sandbox: Sandbox
) -> t.Iterator[tuple[RedisServer, Workers, Sandbox]]:
    server = RedisServer().start()
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
    tmp_path: Path, parts: t.Any
) -> None:
    server, workers, sandbox = parts
    db = tmp_path / "app.db"
    environ = env(db, server.url, sandbox)
    assert signup(environ, 3, "--kill-at-commit") == -9
    assert waiting(db) == 1 and server.client().keys("rq:job:*") == []
    assert pushed_count(relay(environ)) == 1
    assert pushed_count(relay(environ)) == 0
    deliver(server, workers, sandbox, 1)
    assert delivered(sandbox) == {key: 1 for key in row_keys(db)}
    assert waiting(db) == 0


def test_redis_down_at_commit_then_two_racing_relays(
    tmp_path: Path, parts: t.Any
) -> None:
    server, workers, sandbox = parts
    db = tmp_path / "app.db"
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
