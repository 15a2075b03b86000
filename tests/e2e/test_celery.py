"""Celery as the queue engine, end to end: a real ``celery worker`` process
(the documented command) on the bundled redis-server, sending over HTTP to
the sandbox."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import typing as t
from pathlib import Path

import pytest
import redis
from flask import Flask

from flask_poststack import email_status
from flask_poststack import enqueue_batch
from flask_poststack import enqueue_email
from flask_poststack import enqueue_many
from flask_poststack._celery_ledger import ENTRIES
from flask_poststack._celery_ledger import LEDGER
from flask_poststack.sandbox import Sandbox
from tests.e2e.harness import API_KEY
from tests.e2e.harness import BASE_ENV
from tests.e2e.harness import dump_redis
from tests.e2e.harness import failure_lines
from tests.e2e.harness import keys_stored
from tests.e2e.harness import make_app
from tests.e2e.harness import wait_until

pytestmark = pytest.mark.slow

#: The documented command, with a smaller pool and a quicker start.
WORKER = [sys.executable, "-m", "celery", "-A", "flask_poststack.celery_tasks",
          "worker", "--pool", "threads", "-c", "4", "-Q", "poststack",
          "--without-mingle", "--without-gossip", "-l", "info"]  # fmt: skip


class CeleryWorkers:
    """``celery worker`` subprocesses with only ``POSTSTACK_*`` variables."""

    def __init__(self, log_dir: Path, redis_url: str, api: Sandbox) -> None:
        self.log_dir = log_dir
        self.env = {k: os.environ[k] for k in BASE_ENV if k in os.environ}
        self.env.update(
            POSTSTACK_API_KEY=API_KEY,
            POSTSTACK_BASE_URL=api.base_url,
            POSTSTACK_REDIS_URL=redis_url,
            POSTSTACK_MAX_RETRIES="0",  # the task's retries, not the SDK's
            POSTSTACK_RETRY_INTERVALS="0,0,0,0,0",
        )
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(
        self, app: str = "flask_poststack.celery_tasks", **env: str
    ) -> subprocess.Popen[bytes]:
        log = open(self.log_dir / f"celery{len(self.procs)}.log", "wb")  # noqa: SIM115
        proc = subprocess.Popen(
            [app if arg == WORKER[4] else arg for arg in WORKER],
            env={**self.env, **env},
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()  # the child has its own descriptor
        self.procs.append(proc)
        return proc

    def kill(self, proc: subprocess.Popen[bytes]) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)

    def logs(self) -> str:
        return "\n".join(
            p.read_text(errors="replace") for p in sorted(self.log_dir.glob("celery*"))
        )


@pytest.fixture
def celery_workers(
    tmp_path: Path, redis_url: str, sandbox: Sandbox
) -> t.Iterator[CeleryWorkers]:
    pool = CeleryWorkers(tmp_path, redis_url, sandbox)
    yield pool
    for proc in pool.procs:
        pool.kill(proc)


def celery_app(redis_url: str, sandbox: Sandbox) -> Flask:
    return make_app(redis_url, sandbox, POSTSTACK_QUEUE_BACKEND="celery")


def test_delivered_once_through_faults_and_4xx_tried_once(
    redis_url: str, sandbox: Sandbox, celery_workers: CeleryWorkers
) -> None:
    app = celery_app(redis_url, sandbox)
    # A 422 for one email, and for the others 5xx answers and a connection
    # dropped after the email was stored: retried to exactly one email each.
    sandbox.faults.add("error", status=422, code="validation_error",
                       idempotency_key="refused-1")  # fmt: skip
    sandbox.faults.add("error", status=503, path="/emails", times=3)
    sandbox.faults.add("drop_after", path="/emails", times=2)
    sandbox.faults.add("error", status=500, path="/emails/batch", times=1)
    with app.app_context():
        singles = enqueue_many(
            [{"to": f"user{i}@example.com", "subject": f"Hi {i}", "text": "t"}
             for i in range(6)]
        )  # fmt: skip
        refused = enqueue_email(
            to="no@example.com", subject="No", text="t", idempotency_key="refused-1"
        )
        [batch] = enqueue_batch(
            [{"to": f"b{i}@example.com", "subject": "B", "text": "t"} for i in range(3)]
        )
    celery_workers.start()
    results: list[t.Any] = [*singles, refused, batch]
    with app.app_context():
        wait_until(
            lambda: all(r.ready() for r in results),
            timeout=60,
            what="every task to finish",
            diagnose=lambda: [r.state for r in results] + [celery_workers.logs()],
        )
        statuses = [email_status(r) for r in singles]
        assert [s.state for s in statuses] == ["sent"] * 6
        assert email_status(refused.id).state == "failed"
        assert email_status(refused).error is not None
        assert email_status(refused).error["status"] == 422  # type: ignore[index]
        assert email_status(batch).state == "sent"

    per_key = keys_stored(sandbox)
    assert len(sandbox.emails) == 9, per_key
    assert set(per_key.values()) == {1}, per_key
    stored = {e.id for e in sandbox.emails}
    assert {s.email_id for s in statuses} <= stored
    assert "refused-1" not in per_key
    # The 422 fault answers only that email's request: tried once.
    assert [r["status"] for r in sandbox.requests].count(422) == 1
    # Retried, and logged once per failed try in the pipeline's one format.
    retried = [f for f in failure_lines(celery_workers.logs()) if f["retry"] == "yes"]
    assert len(retried) >= 6, celery_workers.logs()[-4000:]

    conn = redis.Redis.from_url(redis_url)
    blobs = dump_redis(conn)
    conn.close()
    assert blobs, "nothing in Redis: the scan looked in the wrong place"
    assert not [b for b in blobs if API_KEY.encode() in b]


def test_killed_worker_task_comes_back_and_sends_once(
    redis_url: str, sandbox: Sandbox, celery_workers: CeleryWorkers
) -> None:
    app = celery_app(redis_url, sandbox)
    # The worker dies after the API stored the email, before it hears back.
    sandbox.faults.add("hold_after_store", method="POST", path="/emails",
                       seconds=30, times=1)  # fmt: skip
    with app.app_context():
        result: t.Any = enqueue_email(to="once@example.com", subject="Once", text="t")
    first = celery_workers.start(POSTSTACK_CELERY_VISIBILITY_TIMEOUT="2")
    [held] = sandbox.wait_held(timeout=30)
    assert held["email_id"] is not None
    celery_workers.kill(first)
    assert sandbox.release(held["id"]) == 1, "the hold ended on its own"

    celery_workers.start(POSTSTACK_CELERY_VISIBILITY_TIMEOUT="2")
    with app.app_context():
        wait_until(
            lambda: result.ready(),
            timeout=30,
            what="the orphaned task to come back and finish",
            diagnose=celery_workers.logs,
        )
        assert result.get(timeout=1) == held["email_id"]
        assert email_status(result).state == "sent"
    key = sandbox.get_email(held["email_id"]).input.idempotency_key
    assert keys_stored(sandbox) == {key: 1}
    assert len(sandbox.requests) == 2  # the second one a replay


def ledger_size(redis_url: str) -> int:
    conn = redis.Redis.from_url(redis_url)
    try:
        return int(conn.zcard(LEDGER)) + int(conn.hlen(ENTRIES))
    finally:
        conn.close()


def test_killed_between_taking_and_recording_a_task_it_comes_back_once(
    tmp_path: Path, redis_url: str, sandbox: Sandbox, celery_workers: CeleryWorkers
) -> None:
    app = celery_app(redis_url, sandbox)
    with app.app_context():
        result: t.Any = enqueue_email(to="window@example.com", subject="W", text="t")
    mark = tmp_path / "in-window"
    stuck = celery_workers.start(
        "tests.e2e.celery_window",
        CELERY_WINDOW_MARK=str(mark),
        POSTSTACK_CELERY_VISIBILITY_TIMEOUT="2",
    )
    wait_until(mark.exists, timeout=60, what="the worker to take the task",
               diagnose=celery_workers.logs)  # fmt: skip
    conn = redis.Redis.from_url(redis_url)
    # Off the queue and not unacknowledged: kombu alone has lost it now.
    assert (conn.llen("poststack"), conn.hlen("unacked")) == (0, 0)
    conn.close()
    celery_workers.kill(stuck)

    celery_workers.start(POSTSTACK_CELERY_VISIBILITY_TIMEOUT="2")
    with app.app_context():
        wait_until(
            lambda: result.ready(),
            timeout=90,
            what="the lost task to be queued again and finish",
            diagnose=celery_workers.logs,
        )
        assert email_status(result).state == "sent"
    assert list(keys_stored(sandbox).values()) == [1]
    requeued = (
        "not acknowledged by a worker (killed, or one that did not know the task)"
    )
    assert requeued in celery_workers.logs()
    wait_until(lambda: ledger_size(redis_url) == 0, timeout=30,
               what="the finished task to leave the ledger")  # fmt: skip


def test_repeated_sigkills_in_flight_lose_and_repeat_no_email(
    redis_url: str, sandbox: Sandbox, celery_workers: CeleryWorkers
) -> None:
    app = celery_app(redis_url, sandbox)
    sandbox.configure(latency=0.1)
    count, kills = 16, 3
    with app.app_context():
        results: list[t.Any] = enqueue_many(
            [{"to": f"k{i}@example.com", "subject": "K", "text": "t"}
             for i in range(count)]
        )  # fmt: skip
    env = {"POSTSTACK_CELERY_VISIBILITY_TIMEOUT": "2"}
    live = [celery_workers.start(**env), celery_workers.start(**env)]
    for k in range(1, kills + 1):
        # Kill mid-flight: once another share is stored (or a while passed).
        share = count * k // (kills + 1)
        with contextlib.suppress(AssertionError):
            wait_until(lambda n=share: len(sandbox.emails) >= n,  # type: ignore[misc]
                       timeout=30, what="progress")  # fmt: skip
        celery_workers.kill(live[k % 2])
        live[k % 2] = celery_workers.start(**env)
    with app.app_context():
        wait_until(
            lambda: all(r.ready() for r in results),
            timeout=120,
            what="every task to finish",
            diagnose=lambda: [r.state for r in results] + [celery_workers.logs()],
        )
        assert {email_status(r).state for r in results} == {"sent"}
    per_key = keys_stored(sandbox)
    assert len(per_key) == count, per_key
    assert set(per_key.values()) == {1}, per_key
    wait_until(lambda: ledger_size(redis_url) == 0, timeout=30,
               what="every finished task to leave the ledger")  # fmt: skip
