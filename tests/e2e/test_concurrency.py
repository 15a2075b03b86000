"""Many emails in flight in one worker process (POSTSTACK_WORKER_CONCURRENCY),
with real ``rq worker`` processes, a real redis-server and the sandbox.

The sandbox's ``hold_after_store`` fault holds the answers of the first N
sends after storing their emails, so exactly N jobs are in flight, each
stored at the API and unanswered, when the test kills or stops the worker:
by construction, not by timing.
"""

from __future__ import annotations

import collections
import os
import signal

import pytest

from flask_poststack.sandbox import Sandbox
from tests.e2e.harness import assert_delivered_once
from tests.e2e.harness import enqueue
from tests.e2e.harness import fetch_jobs
from tests.e2e.harness import keys_stored
from tests.e2e.harness import make_app
from tests.e2e.harness import registry_counts
from tests.e2e.harness import RETRIES
from tests.e2e.harness import rq_queue
from tests.e2e.harness import settings_of
from tests.e2e.harness import wait_until
from tests.e2e.harness import Workers

pytestmark = pytest.mark.slow

IN_FLIGHT = 8


#: The tests that hold one request per job send each email on its own.
ONE_REQUEST_EACH = "0"


def hold_first_sends(sandbox: Sandbox, count: int) -> None:
    sandbox.faults.add("hold_after_store", method="POST", path="/emails",
                       seconds=60, times=count)  # fmt: skip


def test_sigkill_with_n_in_flight_delivers_each_once(
    redis_url: str, sandbox: Sandbox, workers: Workers
) -> None:
    total = 3 * IN_FLIGHT
    app = make_app(redis_url, sandbox)
    settings = settings_of(app)
    jobs = enqueue(app, total)
    hold_first_sends(sandbox, IN_FLIGHT)
    sandbox.configure(latency=0.02)
    concurrency = str(IN_FLIGHT)
    first = workers.start(
        settings,
        sandbox,
        POSTSTACK_WORKER_CONCURRENCY=concurrency,
        POSTSTACK_WORKER_BATCH_SENDS=ONE_REQUEST_EACH,
    )

    held = sandbox.wait_held(IN_FLIGHT, timeout=30)
    assert len(held) == IN_FLIGHT and all(h["email_id"] for h in held)
    # N in flight, each in rq's started registry; nothing else taken.
    counts = registry_counts(app)
    assert counts["started"] == IN_FLIGHT, counts
    assert counts["queued"] == total - IN_FLIGHT, counts
    assert counts["finished"] == 0

    workers.kill(first)  # SIGKILL, answers still held: never read
    assert sandbox.release() == IN_FLIGHT
    workers.start(
        settings,
        sandbox,
        POSTSTACK_WORKER_CONCURRENCY=concurrency,
        POSTSTACK_WORKER_BATCH_SENDS=ONE_REQUEST_EACH,
    )
    took = wait_until(
        lambda: registry_counts(app)["finished"] == total,
        timeout=60,
        what=f"{total} finished jobs after the kill",
        diagnose=lambda: (registry_counts(app), workers.logs()[-3000:]),
    )
    print(f"\n{IN_FLIGHT} in flight at the SIGKILL: all {total} done {took:.1f}s later")

    assert_delivered_once(app, sandbox, jobs)
    assert collections.Counter(keys_stored(sandbox).values()) == {1: total}
    # The held ones ran again and were replayed by the API, never sent anew.
    held_ids = {h["email_id"] for h in held}
    rerun = [j for j in fetch_jobs(app, jobs) if j.meta["poststack_id"] in held_ids]
    assert len(rerun) == IN_FLIGHT
    assert all(j.retries_left is not None and j.retries_left < RETRIES for j in rerun)
    assert sandbox.stats["replays"] >= IN_FLIGHT
    assert registry_counts(app)["started"] == 0
    assert rq_queue(app).intermediate_queue.get_job_ids() == []


def test_sigkill_with_coalesced_batches_in_flight_delivers_each_once(
    redis_url: str, sandbox: Sandbox, workers: Workers
) -> None:
    total = 3 * IN_FLIGHT
    app = make_app(redis_url, sandbox)
    settings = settings_of(app)
    jobs = enqueue(app, total)
    # Every send request (single or batch) is held after its emails are
    # stored: the send slots fill up, the other senders wait for one, and
    # all 8 jobs stay in flight until the kill.
    sandbox.faults.add("hold_after_store", method="POST", path="/emails*",
                       seconds=60, times=10 * total)  # fmt: skip
    concurrency = str(IN_FLIGHT)
    first = workers.start(settings, sandbox, POSTSTACK_WORKER_CONCURRENCY=concurrency)

    sandbox.wait_held(1, timeout=120)
    wait_until(lambda: registry_counts(app)["started"] == IN_FLIGHT, timeout=120,
               what=f"{IN_FLIGHT} jobs in flight")  # fmt: skip
    assert registry_counts(app)["finished"] == 0
    stored_before = len(sandbox.emails)
    assert stored_before >= 1

    workers.kill(first)  # SIGKILL with every answer unread
    sandbox.faults.clear()
    sandbox.release()
    workers.start(settings, sandbox, POSTSTACK_WORKER_CONCURRENCY=concurrency)
    wait_until(
        lambda: registry_counts(app)["finished"] == total,
        timeout=120,
        what=f"{total} finished jobs after the kill",
        diagnose=lambda: (registry_counts(app), workers.logs()[-3000:]),
    )

    assert_delivered_once(app, sandbox, jobs)
    assert collections.Counter(keys_stored(sandbox).values()) == {1: total}
    # What the held requests had stored was replayed, never sent anew.
    assert sandbox.stats["replays"] >= stored_before
    assert registry_counts(app)["started"] == 0
    assert rq_queue(app).intermediate_queue.get_job_ids() == []


def test_sigterm_finishes_what_is_in_flight_and_takes_nothing_more(
    redis_url: str, sandbox: Sandbox, workers: Workers
) -> None:
    total = 2 * IN_FLIGHT
    app = make_app(redis_url, sandbox)
    jobs = enqueue(app, total)
    hold_first_sends(sandbox, IN_FLIGHT)
    proc = workers.start(settings_of(app), sandbox,
                         POSTSTACK_WORKER_BATCH_SENDS=ONE_REQUEST_EACH,
                         POSTSTACK_WORKER_CONCURRENCY=str(IN_FLIGHT))  # fmt: skip
    sandbox.wait_held(IN_FLIGHT, timeout=30)

    os.kill(proc.pid, signal.SIGTERM)
    wait_until(lambda: "stopping once the" in workers.logs(), timeout=10,
               what="the worker to see the stop")  # fmt: skip
    assert proc.poll() is None, "the worker quit with jobs in flight"
    assert sandbox.release() == IN_FLIGHT
    assert workers.wait(proc, timeout=120) == 0

    done = [j for j in fetch_jobs(app, jobs) if j.get_status() == "finished"]
    assert len(done) == IN_FLIGHT, registry_counts(app)
    assert all(j.retries_left == RETRIES for j in done), "finished first time"
    assert registry_counts(app) == {"queued": total - IN_FLIGHT, "started": 0,
                                    "scheduled": 0, "finished": IN_FLIGHT,
                                    "failed": 0}  # fmt: skip
    assert sandbox.stats["replays"] == 0


def test_faults_retries_and_refusals_with_many_in_flight(
    redis_url: str, sandbox: Sandbox, workers: Workers
) -> None:
    count = 60
    app = make_app(redis_url, sandbox)
    sandbox.configure(latency=0.05)
    sandbox.faults.seed(11)
    # "/emails*": single sends and the batch requests coalesced sends make.
    sandbox.faults.add("error", method="POST", path="/emails*", status=503,
                       probability=0.1)  # fmt: skip
    sandbox.faults.add("throttle", method="POST", path="/emails*", retry_after=1,
                       probability=0.1)  # fmt: skip
    sandbox.faults.add("drop_after", method="POST", path="/emails*", probability=0.05)
    jobs = enqueue(app, count)
    workers.start(settings_of(app), sandbox, POSTSTACK_MAX_RETRIES="0",
                  POSTSTACK_WORKER_CONCURRENCY="16")  # fmt: skip
    wait_until(
        lambda: registry_counts(app)["finished"] == count,
        timeout=60,
        what=f"{count} finished jobs",
        diagnose=lambda: (registry_counts(app), workers.logs()[-3000:]),
    )
    assert_delivered_once(app, sandbox, jobs)
    retried = [j for j in fetch_jobs(app, jobs) if j.retries_left != RETRIES]
    assert retried, "no fault went through an rq retry"
    assert " retry=yes: " in workers.logs()
