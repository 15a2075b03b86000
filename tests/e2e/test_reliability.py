"""Short versions of the reliability benchmarks, run by ``make test``.

Each test runs the benchmark script itself (``benchmarks/soak.py``,
``benchmarks/redis_durability.py``) as a subprocess with small counts, and
checks the JSON report it writes: the figures in ``docs/reliability.md`` come
from the same code with the default, larger counts.

The property-based half of issue 9 lives elsewhere: ``tests/test_properties.py``
(any input to ``send_email``/``enqueue_email`` succeeds or raises
``InvalidEmailError``, and nothing invalid reaches the queue) and
``tests/webhooks/test_view.py::test_fuzz_never_500_never_unsigned_dispatch``.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import sys
import time
import typing as t
from pathlib import Path

import pytest
from rq.job import Job
from rq.job import JobStatus

from flask_poststack import EmailArgs
from flask_poststack import enqueue_email
from flask_poststack import get_state
from flask_poststack import QueueUnavailableError
from flask_poststack import send_email
from flask_poststack.redis_server import RedisServer
from flask_poststack.sandbox import Sandbox
from tests.e2e.harness import API_KEY
from tests.e2e.harness import enqueue
from tests.e2e.harness import fetch_jobs
from tests.e2e.harness import keys_stored
from tests.e2e.harness import make_app
from tests.e2e.harness import registry_counts
from tests.e2e.harness import settings_of
from tests.e2e.harness import Workers

pytestmark = pytest.mark.slow

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"


def run_script(name: str, out: Path, *args: str, timeout: float) -> dict[str, t.Any]:
    proc = subprocess.run(
        [sys.executable, str(BENCHMARKS / name), "--out", str(out), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    print(proc.stdout)
    assert out.exists(), f"{name} wrote no report:\n{proc.stdout}\n{proc.stderr}"
    report: dict[str, t.Any] = json.loads(out.read_text())
    report["_exit"] = proc.returncode
    report["_output"] = proc.stdout + proc.stderr
    return report


def test_soak_short(tmp_path: Path) -> None:
    r = run_script(
        "soak.py",
        tmp_path / "soak.json",
        # The bound is generous: an idle machine drains in about 10 s and the
        # soak stops then; a loaded one (load 10 on 2 cores) once took >25 s.
        "--emails", "300", "--seconds", "90", "--kill-every", "2", "--max-kills", "3",
        timeout=180,
    )  # fmt: skip
    summary = {k: v for k, v in r.items() if not k.startswith("_")}
    assert r["drained"], summary
    assert r["lost"] == 0, summary
    assert r["duplicated"] == 0, summary
    assert r["delivered_exactly_once"] == r["should_deliver"] == 294, summary
    assert r["sandbox_distinct_keys"] == r["sandbox_emails_stored"] == 294
    assert r["finished_with_email_id"] == 294
    # The 422s: failed at once, one 422 answer each, nothing stored.
    assert r["refused_422"] == 6
    assert r["refused_422_failed_at_once"] == 6, r["refused_422_problems"]
    assert 0 <= r["refused_422_extra_answers"] <= r["refused_422_interrupted_by_kill"]
    assert r["interrupted_jobs_not_back"] == 0
    assert r["refused_422_stored"] == 0
    assert r["left_in_redis"] == {
        "queued": 0,
        "started": 0,
        "scheduled": 0,
        "unfinished_jobs": 0,
    }
    # The run proves something: faults fired, RQ retried, workers were killed.
    assert r["kills"] == 3
    assert r["rq_retries"] > 50
    assert r["api_replays"] > 0, "no drop_after fault was replayed"
    assert r["secrets"]["clean"], r["secrets"]
    assert r["secrets"]["redis_blobs_scanned"] > 1000
    assert r["secrets"]["log_lines_scanned"] > 500
    assert r["ok"] and r["_exit"] == 0, r["_output"][-3000:]


def test_redis_killed_mid_run(tmp_path: Path) -> None:
    r = run_script(
        "redis_durability.py",
        tmp_path / "durability.json",
        "--emails", "100", "--runs", "1", "--rate", "50", "--downtime", "0.3",
        "--bound", "80",  # a generous drain bound: under load a retry waits a beat
        "--settings", "always", "everysec", "off", "--hold-sends",
        timeout=280,
    )  # fmt: skip
    by = {s["setting"]: s for s in r["summary"]}
    runs = {row["setting"]: row for row in r["runs"]}
    for setting in ("always", "everysec", "off"):
        assert by[setting]["drained"], runs[setting]
        assert by[setting]["duplicated"] == 0, runs[setting]
        # Redis was killed half-way through, with both workers' sends held
        # by the API (stored, not yet answered): so by construction while
        # they were sending, and with all the rest of the first half queued.
        assert runs[setting]["acknowledged_before_kill"] == 50
        assert runs[setting]["sends_held_at_kill"] == 2
        assert runs[setting]["backlog_at_kill"] == 48
    assert by["always"]["lost"] == 0, runs["always"]
    assert by["everysec"]["lost"] == 0, runs["everysec"]  # a process kill only
    # Without persistence the restart empties the queue: the contrast that
    # shows the test can see a loss at all.
    assert by["off"]["lost"] > 0, runs["off"]
    assert r["_exit"] == 0, r["_output"][-3000:]


# Issue 17: errors that say whether the email was queued, and one key per app.


def test_a_hung_redis_may_have_queued_and_the_fallback_sends_once(
    sandbox: Sandbox, workers: Workers
) -> None:
    """SIGSTOP Redis under a warm pool: the MULTI/EXEC is written, the answer
    never comes. The error says the email may have been queued and carries
    its key; after SIGCONT a worker sends the job, and the documented
    fallback (a send with the same key) is replayed: one delivery."""
    message: EmailArgs = {"to": "ada@example.com", "subject": "Reset", "text": "Hi"}
    with RedisServer() as server:
        assert server.process is not None
        app = make_app(server.url, sandbox, POSTSTACK_REDIS_TIMEOUT=0.5)
        with app.app_context():
            # A warm pool, and rq's first-use reads done: the next enqueue
            # is the MULTI/EXEC alone.
            warm_up = enqueue_email(to="bob@example.com", subject="Hi", text="Hi")
            os.kill(server.process.pid, signal.SIGSTOP)
            try:
                started = time.monotonic()
                with pytest.raises(QueueUnavailableError) as info:
                    enqueue_email(**message)
                failed_after = time.monotonic() - started
            finally:
                os.kill(server.process.pid, signal.SIGCONT)
            err = info.value
            assert err.may_have_been_queued is True, err
            assert "may have been queued" in str(err), err
            assert "Nothing was queued" not in str(err)
            assert err.idempotency_key and err.job_id
            key, job_id = err.idempotency_key, err.job_id

            proc = workers.start(settings_of(app), sandbox, burst=True)
            assert workers.wait(proc, timeout=120) == 0, workers.logs()
            queued = Job(job_id, connection=get_state().redis)
            job, _ = fetch_jobs(app, [queued, warm_up])
            assert job.get_status() == JobStatus.FINISHED, workers.logs()
            assert job.meta["idempotency_key"] == err.idempotency_key

            # The fallback of docs/background.md, with the error's key.
            again: EmailArgs = {**message, "idempotency_key": key}
            fallback = send_email(**again)
        assert fallback.replayed and fallback.id == job.meta["poststack_id"]
        deliveries = keys_stored(sandbox)
        assert deliveries == {
            err.idempotency_key: 1,
            warm_up.meta["idempotency_key"]: 1,
        }
        print(
            f"\nhung Redis (POSTSTACK_REDIS_TIMEOUT=0.5): enqueue failed after"
            f" {failed_after:.2f}s; deliveries of that email:"
            f" {deliveries[err.idempotency_key]} (the fallback was replayed)"
        )


def test_a_worker_refuses_a_job_queued_with_another_key(
    redis_url: str, sandbox: Sandbox, tmp_path: Path
) -> None:
    """Two apps on one Redis and queue: a live worker never sends a test app's
    email; the job fails for good, saying why, without either key."""
    live_key = "sk_live_" + secrets.token_hex(20)
    test_app = make_app(redis_url, sandbox)  # sk_test_...
    jobs = enqueue(test_app, 3)
    live_workers = Workers(tmp_path, api_key=live_key)
    try:
        proc = live_workers.start(settings_of(test_app), sandbox, burst=True)
        assert live_workers.wait(proc, timeout=120) == 0, live_workers.logs()
        logs = live_workers.logs()
    finally:
        live_workers.close()
    assert sandbox.requests == [] and sandbox.emails == []
    assert registry_counts(test_app)["failed"] == 3
    for job in fetch_jobs(test_app, jobs):
        assert job.get_status() == JobStatus.FAILED
        assert job.retries_left == 0
        error = job.meta["poststack_error"]["error"]
        assert (
            "test key" in error and "live key" in error and "POSTSTACK_QUEUE" in error
        )
    assert live_key not in logs and API_KEY not in logs
    assert live_key[8:] not in logs and API_KEY[8:] not in logs
