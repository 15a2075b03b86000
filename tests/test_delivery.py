"""End-to-end delivery: real redis-server, real ``rq worker`` processes, the sandbox.

Every worker here is started with exactly the command the docs give
(:func:`flask_poststack.cli.worker_command`) and an environment that holds
only ``PATH``/``HOME``/locale and ``POSTSTACK_*`` variables: no Flask app, no
``FLASK_APP``. Emails are queued with :func:`enqueue_email` from a real Flask
app, and the sandbox (in this process) is the API.

The crash tests use ``POSTSTACK_HEARTBEAT_INTERVAL=1`` and
``--maintenance-interval 1`` so that a job abandoned by a killed worker comes
back in seconds; production uses the defaults (10 s and 30 s), which bring it
back within about a minute.
"""

from __future__ import annotations

import contextlib
import subprocess
import time
import typing as t
from pathlib import Path

import pytest
import redis
from rq import Worker
from rq.job import Job
from rq.job import JobStatus
from rq.registry import FailedJobRegistry
from rq.registry import StartedJobRegistry
from rq.serializers import JSONSerializer

from flask_poststack import get_state
from flask_poststack.redis_server import RedisServer
from flask_poststack.sandbox import Sandbox
from tests.harness import API_KEY
from tests.harness import assert_delivered_once
from tests.harness import diagnose_unfinished
from tests.harness import dump_redis
from tests.harness import enqueue
from tests.harness import fetch_jobs
from tests.harness import make_app
from tests.harness import registry_counts
from tests.harness import RETRIES
from tests.harness import rq_queue
from tests.harness import settings_of
from tests.harness import wait_until
from tests.harness import Workers

pytestmark = pytest.mark.slow

# Helpers: tests/harness.py -------------------------------------------------


@pytest.fixture
def workers(tmp_path: Path) -> t.Iterator[Workers]:
    pool = Workers(tmp_path)
    try:
        yield pool
    finally:
        pool.close()


# 1. Throughput and exactly-once on the happy path --------------------------


def test_burst_worker_delivers_200_emails_once(
    redis_url: str, sandbox: Sandbox, workers: Workers
) -> None:
    app = make_app(redis_url, sandbox)
    jobs = enqueue(app, 200)
    assert rq_queue(app).count == 200

    started = time.monotonic()
    proc = workers.start(settings_of(app), sandbox, burst=True)
    assert workers.wait(proc, timeout=40) == 0, workers.logs()
    print(f"\n200 emails, 1 burst worker: {time.monotonic() - started:.2f}s")

    assert_delivered_once(app, sandbox, jobs)
    assert len({e.input.idempotency_key for e in sandbox.emails}) == 200
    assert registry_counts(app) == {
        "queued": 0,
        "started": 0,
        "scheduled": 0,
        "finished": 200,
        "failed": 0,
    }


# 2. Workers killed mid-run -------------------------------------------------


def test_sigkilled_workers_lose_nothing_and_send_nothing_twice(
    redis_url: str,
    sandbox: Sandbox,
    workers: Workers,
    record_property: t.Callable[[str, object], None],
) -> None:
    count = 150
    app = make_app(redis_url, sandbox)
    settings = settings_of(app)
    conn = get_state(app).redis
    jobs = enqueue(app, count)
    job_of_key = {job.meta["idempotency_key"]: job.id for job in jobs}
    # The nastiest moment: the API has stored the email and the worker dies
    # before it hears back. drop_after (below) loses the answer but leaves the
    # worker alive; to kill a worker right then, for a few chosen emails the
    # sandbox holds its answer after storing the email (hold_after_store, on
    # the first request with the email's key), and the test SIGKILLs the
    # worker that sent it (so the answer is never read).
    victims = {jobs[i].meta["idempotency_key"] for i in (15, 55, 95)}
    for key in victims:
        sandbox.faults.add("hold_after_store", method="POST", path="/emails",
                           idempotency_key=key, seconds=5, times=1)  # fmt: skip
    # Some latency, and now and then a slow request, so that kills land
    # mid-send; drop_after stores the email and then resets the connection.
    sandbox.configure(latency=0.03)
    sandbox.faults.seed(2024)
    sandbox.faults.add("latency", method="POST", path="/emails", delay=0.3,
                       probability=0.05)  # fmt: skip
    sandbox.faults.add("drop_after", method="POST", path="/emails", probability=0.05)

    live = [workers.start(settings, sandbox), workers.start(settings, sandbox)]
    started = time.monotonic()

    def worker_running(job_id: str) -> subprocess.Popen[bytes] | None:
        job = Job.fetch(job_id, connection=conn, serializer=JSONSerializer)
        pids = {w.name: w.pid for w in Worker.all(connection=conn)}
        pid = pids.get(job.worker_name or "")
        return next((p for p in live if p.pid == pid), None)

    def restart(proc: subprocess.Popen[bytes]) -> None:
        workers.kill(proc)
        live[live.index(proc)] = workers.start(settings, sandbox)

    kills = periodic = mid_send = 0
    killed_victims: list[str] = []
    next_kill = started + 0.7
    deadline = started + 45
    while registry_counts(app)["finished"] < count:
        if time.monotonic() > deadline:
            pytest.fail(
                f"not drained in 45s: {registry_counts(app)}, kills={kills}\n"
                + diagnose_unfinished(app, jobs)
                + "\n"
                + workers.logs()[-6000:]
            )
        with contextlib.suppress(TimeoutError):
            held = sandbox.wait_held(timeout=0.02)[0]
            key = sandbox.get_email(held["email_id"]).input.idempotency_key
            assert key is not None
            proc = worker_running(job_of_key[key])
            # None: a periodic kill got its worker while the sandbox was
            # still holding the answer; the answer has no reader either way.
            if proc is not None:
                restart(proc)
                kills += 1
            killed_victims.append(key)
            sandbox.release(held["id"])  # into a dead connection
        if periodic < 6 and time.monotonic() >= next_kill:
            proc = live[periodic % 2]
            periodic += 1
            busy = StartedJobRegistry(queue=rq_queue(app)).get_job_ids()
            mid_send += bool(busy)
            restart(proc)
            kills += 1
            next_kill = time.monotonic() + 0.7
    drain = time.monotonic() - started

    wait_until(
        lambda: registry_counts(app)["started"] == 0,
        timeout=10,
        what="an empty StartedJobRegistry",
        diagnose=lambda: registry_counts(app),
    )
    print(f"\n{count} emails, 2 workers, {kills} SIGKILLs: drained in {drain:.2f}s")
    record_property("drain_seconds", round(drain, 2))
    record_property("kills", kills)

    assert periodic == 6 and kills >= 6
    assert mid_send >= 3, "too few kills landed while a job was running"
    assert sorted(killed_victims) == sorted(victims), "every victim was killed"
    assert_delivered_once(app, sandbox, jobs)
    assert registry_counts(app)["failed"] == 0
    # Each victim's email was stored before its worker died, and its job ran
    # again and got the same id back from the API (a replay), never a new one.
    assert sandbox.stats["replays"] >= len(victims)
    for job in fetch_jobs(app, [Job(job_of_key[k], connection=conn) for k in victims]):
        assert job.retries_left is not None and job.retries_left < RETRIES


def test_job_dequeued_by_a_worker_that_died_comes_back_in_seconds(
    redis_url: str, sandbox: Sandbox, workers: Workers
) -> None:
    # A worker SIGKILLed between taking a job off the queue (BLMOVE into rq's
    # intermediate queue) and registering it as started leaves the job in
    # neither place; rq itself only looks at it again after a minute.
    app = make_app(redis_url, sandbox)
    jobs = enqueue(app, 2)
    q = rq_queue(app)
    assert q.connection.lmove(q.key, q.intermediate_queue.key) is not None
    workers.start(settings_of(app), sandbox)
    took = wait_until(
        lambda: registry_counts(app)["finished"] == 2,
        timeout=15,
        what="the stranded job to run",
        diagnose=lambda: (registry_counts(app), workers.logs()[-2000:]),
    )
    print(f"\nstranded job delivered after {took:.1f}s")
    assert_delivered_once(app, sandbox, jobs)
    assert q.intermediate_queue.get_job_ids() == []
    assert "dequeued by a worker that died" in workers.logs()


# 3. Faults -----------------------------------------------------------------


def test_transient_faults_end_in_one_delivery_each(
    redis_url: str, sandbox: Sandbox, workers: Workers
) -> None:
    count = 80
    app = make_app(redis_url, sandbox)
    settings = settings_of(app)
    sandbox.faults.seed(7)
    for status in (500, 502, 503, 504):
        sandbox.faults.add("error", method="POST", path="/emails", status=status,
                           probability=0.05)  # fmt: skip
    for retry_after in (0, 1):
        sandbox.faults.add("throttle", method="POST", path="/emails",
                           retry_after=retry_after, probability=0.05)  # fmt: skip
    for kind in ("drop_before", "drop_after"):
        sandbox.faults.add(kind, method="POST", path="/emails", probability=0.05)

    jobs = enqueue(app, count)
    # One SDK retry instead of three, so that many faults outlive the SDK and
    # go through RQ's retries (the scheduler) and our classification.
    for _ in range(2):
        workers.start(settings, sandbox, POSTSTACK_MAX_RETRIES="1")
    wait_until(
        lambda: registry_counts(app)["finished"] == count,
        timeout=40,
        what=f"{count} finished jobs",
        diagnose=lambda: (registry_counts(app), workers.logs()[-3000:]),
    )

    assert_delivered_once(app, sandbox, jobs)
    assert registry_counts(app)["failed"] == 0
    fired = {(r["fault"], r["status"]) for r in sandbox.requests if r["fault"]}
    assert {s for f, s in fired if f == "error"} == {500, 502, 503, 504}
    assert {f for f, _ in fired} >= {"throttle", "drop_before", "drop_after"}
    rq_retried = [j for j in fetch_jobs(app, jobs) if j.retries_left != RETRIES]
    assert rq_retried, "no fault outlived the SDK: the test proves too little"
    print(f"\n{len(rq_retried)} of {count} jobs went through an RQ retry")


def test_422_and_quota_429_fail_at_once(
    redis_url: str, sandbox: Sandbox, workers: Workers
) -> None:
    app = make_app(redis_url, sandbox)
    sandbox.faults.sequence(
        [
            {"kind": "error", "status": 422, "code": "unprocessable_entity"},
            {"kind": "quota"},
        ],
        method="POST",
        path="/emails",
        times=1,
    )
    bad, quota, good = enqueue(app, 3)  # one worker takes them in this order
    proc = workers.start(settings_of(app), sandbox, burst=True)
    assert workers.wait(proc, timeout=30) == 0
    logs = workers.logs()

    sends = [r for r in sandbox.requests if r["path"] == "/emails"]
    assert [r["status"] for r in sends] == [422, 429, 202], "one attempt each"
    failed = FailedJobRegistry(queue=rq_queue(app)).get_job_ids()
    assert sorted(failed) == sorted([bad.id, quota.id])
    assert registry_counts(app)["scheduled"] == 0
    expected = [
        (bad, 422, "unprocessable_entity", sends[0]["request_id"]),
        (quota, 429, "monthly_limit_exceeded", sends[1]["request_id"]),
    ]
    for job, status, code, request_id in expected:
        job.refresh()
        assert job.get_status() == JobStatus.FAILED
        assert job.retries_left == 0
        error = job.meta["poststack_error"]
        assert error["status"] == status
        assert error["code"] == code
        assert error["request_id"] == request_id
        assert error["retryable"] is False
        assert f"job={job.id}" in logs
        assert f"code={code} request_id={request_id} " in logs
        assert " retry=no: " in logs
    assert [e.input.idempotency_key for e in sandbox.emails] == [
        good.meta["idempotency_key"]
    ]


# 4. Redis restarts ---------------------------------------------------------


@pytest.mark.parametrize("fsync", ["always", "everysec"])
def test_redis_killed_after_enqueue_loses_nothing(
    fsync: str, sandbox: Sandbox, workers: Workers
) -> None:
    with contextlib.ExitStack() as stack:
        server = RedisServer(appendonly=fsync).start()
        stack.callback(server.stop)
        app = make_app(server.url, sandbox)
        jobs = enqueue(app, 50)
        if fsync == "everysec":
            # A SIGKILL of redis-server keeps what it has write()n to the AOF
            # (the kernel still has it), but with "everysec" Redis may hold a
            # write back for up to 2 s while a background fsync is running.
            # Waiting for that is what "everysec" asks of the caller; an OS
            # crash or power loss could still lose the last second or two.
            conn = get_state(app).redis
            wait_until(
                lambda: conn.info("persistence")["aof_buffer_length"] == 0,
                timeout=10,
                what="Redis to write its AOF buffer",
            )
        server.restart(kill=True)  # SIGKILL: no shutdown, no final flush
        get_state(app).redis.connection_pool.disconnect()

        assert rq_queue(app).count == 50, "jobs lost by the Redis restart"
        proc = workers.start(settings_of(app), sandbox, burst=True)
        assert workers.wait(proc, timeout=30) == 0
        assert_delivered_once(app, sandbox, jobs)


# 5. Secrets ----------------------------------------------------------------


def test_api_key_is_nowhere_in_redis_or_the_logs(
    redis_url: str, sandbox: Sandbox, workers: Workers
) -> None:
    app = make_app(redis_url, sandbox)
    # A failure, a retry and successes, so errors and retries leave their
    # traces too (exception strings, meta, logs).
    sandbox.faults.sequence([{"kind": "error", "status": 401, "code": "unauthorized"}],
                            method="POST", path="/emails", times=1)  # fmt: skip
    sandbox.faults.add("error", method="POST", path="/emails", status=503,
                       after=3, times=4)  # fmt: skip
    jobs = enqueue(app, 20)
    workers.start(settings_of(app), sandbox)
    wait_until(
        lambda: (
            registry_counts(app)["finished"] + registry_counts(app)["failed"]
            == len(jobs)
        ),
        timeout=30,
        what="every job done",
        diagnose=lambda: registry_counts(app),
    )
    assert registry_counts(app)["failed"] == 1

    conn = redis.Redis.from_url(redis_url)
    blobs = dump_redis(conn)
    conn.close()
    secret = API_KEY.removeprefix("sk_test_").encode()
    assert len(blobs) > 100, "the scan found too little to mean anything"
    assert any(b"send_payload" in blob for blob in blobs)
    leaks = [blob[:200] for blob in blobs if secret in blob]
    assert not leaks, leaks
    logs = workers.logs()
    assert "PostStack send failed" in logs
    assert API_KEY not in logs
    assert secret.decode() not in logs
