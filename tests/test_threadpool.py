"""PostStackWorker with sender threads (POSTSTACK_WORKER_CONCURRENCY > 1), in
this process: rq's bookkeeping per job, timeouts, stops, suspension."""

from __future__ import annotations

import os
import signal
import threading
import time
import typing as t

import pytest
import redis
from rq import get_current_job
from rq import Queue
from rq import Retry
from rq.serializers import JSONSerializer
from rq.suspension import suspend

from flask_poststack.client import reset_worker
from flask_poststack.worker import PostStackWorker


@pytest.fixture
def queue(redis_url: str, monkeypatch: pytest.MonkeyPatch) -> t.Iterator[Queue]:
    monkeypatch.setenv("POSTSTACK_WORKER_CONCURRENCY", "4")
    monkeypatch.setenv("POSTSTACK_HEARTBEAT_INTERVAL", "1")
    monkeypatch.setenv("POSTSTACK_SUPPRESS_SEND", "1")
    reset_worker()
    conn = redis.Redis.from_url(redis_url)
    yield Queue("poststack", connection=conn, serializer=JSONSerializer)
    conn.close()


def make_worker(queue: Queue) -> PostStackWorker:
    return PostStackWorker([queue], connection=queue.connection)


#: Jobs of the "gate" tests wait here; the test opens it.
GATE = threading.Event()
#: How many gated jobs are running at once, and the most seen.
RUNNING = {"now": 0, "most": 0}
_count_lock = threading.Lock()


def gated(n: int) -> int:
    """A job that waits for GATE (bounded), counting how many run at once."""
    with _count_lock:
        RUNNING["now"] += 1
        RUNNING["most"] = max(RUNNING["most"], RUNNING["now"])
    try:
        assert GATE.wait(20), "the gate never opened"
        job = get_current_job()
        assert job is not None and job.args == [n]
        return n
    finally:
        with _count_lock:
            RUNNING["now"] -= 1


def sigterm_self_then_gate(n: int) -> int:
    """Ask the worker for a warm shutdown, then wait for GATE."""
    os.kill(os.getpid(), signal.SIGTERM)
    return gated(n)


def slow_python(seconds: float) -> None:
    """Busy in Python (not in C) for ``seconds``: a timeout can interrupt it."""
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        time.sleep(0.01)


def flaky(key: str) -> str:
    """Fails the first time it runs for ``key`` (a retry), then succeeds."""
    job = get_current_job()
    assert job is not None
    if job.connection.incr(f"test:flaky:{key}") == 1:
        raise ConnectionError("first try fails")
    return key


@pytest.fixture(autouse=True)
def _gate() -> t.Iterator[None]:
    GATE.clear()
    RUNNING.update(now=0, most=0)
    yield
    GATE.set()


def open_gate_when(predicate: t.Callable[[], bool], timeout: float = 20) -> None:
    """Open GATE once ``predicate()`` holds (from a thread, bounded)."""

    def run() -> None:
        deadline = time.monotonic() + timeout
        while not predicate() and time.monotonic() < deadline:
            time.sleep(0.02)
        GATE.set()

    threading.Thread(target=run, daemon=True).start()


def test_jobs_run_at_once_in_rqs_registries_and_finish(queue: Queue) -> None:
    jobs = [queue.enqueue("tests.test_threadpool.gated", args=(n,)) for n in range(6)]
    seen: dict[str, int] = {}

    def four_started() -> bool:
        seen["started"] = queue.started_job_registry.count
        seen["queued"] = queue.count
        return RUNNING["now"] == 4 and seen["started"] == 4

    open_gate_when(four_started)
    make_worker(queue).work(burst=True)
    # Four at once, each in the started registry, two left on the queue:
    # nothing taken before a sender was free.
    assert RUNNING["most"] == 4
    assert seen == {"started": 4, "queued": 2}
    assert [job.get_status(refresh=True) for job in jobs] == ["finished"] * 6
    assert [job.return_value() for job in jobs] == list(range(6))
    assert queue.finished_job_registry.count == 6
    assert queue.started_job_registry.count == 0
    assert queue.connection.llen(queue.intermediate_queue_key) == 0


def test_heartbeats_renew_every_job_in_flight(queue: Queue) -> None:
    jobs = [queue.enqueue("tests.test_threadpool.gated", args=(n,)) for n in range(4)]
    first: dict[str, float] = {}

    def beaten_twice() -> bool:
        conn: t.Any = queue.connection
        key = queue.started_job_registry.key
        scores = {str(k): v for k, v in conn.zrange(key, 0, -1, withscores=True)}
        if len(scores) < 4:
            return False
        if not first:
            first.update(scores)
            return False
        return all(v > first[k] for k, v in scores.items())

    open_gate_when(beaten_twice)
    make_worker(queue).work(burst=True)
    assert first, "the jobs were never all in flight"
    assert [job.get_status(refresh=True) for job in jobs] == ["finished"] * 4


def test_a_job_over_its_timeout_fails_without_sigalrm(queue: Queue) -> None:
    slow = queue.enqueue("tests.test_threadpool.slow_python", args=(30,),
                         job_timeout=1)  # fmt: skip
    quick = queue.enqueue("json.dumps", args=([1],))
    started = time.monotonic()
    make_worker(queue).work(burst=True)
    assert time.monotonic() - started < 20, "the timeout did not stop the job"
    assert slow.get_status(refresh=True) == "failed"
    result = slow.latest_result()
    assert result is not None
    assert "SendTimeout" in (result.exc_string or "")
    assert quick.get_status(refresh=True) == "finished"


def test_a_failed_job_is_retried_by_rq(queue: Queue) -> None:
    jobs = [
        queue.enqueue("tests.test_threadpool.flaky", args=(f"k{n}",), retry=Retry(2))
        for n in range(3)
    ]
    make_worker(queue).work(burst=True)  # retries without interval: requeued
    for job in jobs:
        job.refresh()
        assert job.get_status() == "finished"
        assert job.retries_left == 1


# The SIGTERM this test sends to its own process can land while a weakref
# finalizer runs; rq's handler then raises StopRequested there, which Python
# reports as unraisable (a worker process has no such finalizers to hit).
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_a_warm_shutdown_finishes_what_is_in_flight_and_takes_nothing(
    queue: Queue,
) -> None:
    first = queue.enqueue("tests.test_threadpool.sigterm_self_then_gate", args=(0,))
    later: list[t.Any] = []
    worker = make_worker(queue)

    def stop_seen() -> bool:
        # Once the worker has seen the stop, while its job is still in
        # flight, more jobs come: it must leave them.
        if not worker._stop_requested:
            return False
        later.extend(queue.enqueue("json.dumps", args=([n],)) for n in range(3))
        return True

    open_gate_when(stop_seen)
    worker.work(burst=False)  # returns on the stop request
    assert first.get_status(refresh=True) == "finished"
    assert len(later) == 3
    assert [job.get_status(refresh=True) for job in later] == ["queued"] * 3
    assert queue.started_job_registry.count == 0


def test_a_suspended_worker_takes_nothing_new(queue: Queue) -> None:
    suspend(queue.connection)
    job = queue.enqueue("json.dumps", args=([1],))
    make_worker(queue).work(burst=True)  # burst + suspended: quits at once
    assert job.get_status(refresh=True) == "queued"


def test_max_jobs_counts_every_job_taken(queue: Queue) -> None:
    for n in range(6):
        queue.enqueue("builtins.len", args=([n],))

    make_worker(queue).work(burst=True, max_jobs=2)

    assert queue.finished_job_registry.count == 2
    assert queue.count == 4
    assert queue.intermediate_queue.get_job_ids() == []


def test_free_senders_each_get_a_job_taken_in_one_go(queue: Queue) -> None:
    jobs = [queue.enqueue("tests.test_threadpool.gated", args=(n,)) for n in range(9)]
    open_gate_when(lambda: RUNNING["now"] == 4)

    make_worker(queue).work(burst=True)

    assert RUNNING["most"] == 4
    assert [job.get_status() for job in jobs] == ["finished"] * 9
    assert queue.started_job_registry.count == 0
    assert queue.intermediate_queue.get_job_ids() == []
