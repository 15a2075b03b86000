"""rq's success bookkeeping for several sender threads' jobs in one
transaction (flask_poststack._finishing), and rq's own path when it cannot."""

from __future__ import annotations

import threading
import time
import typing as t

import pytest
import redis
from rq import get_current_job
from rq import Queue
from rq.serializers import JSONSerializer

from flask_poststack import tasks
from flask_poststack._finishing import Finisher
from flask_poststack.client import reset_worker
from flask_poststack.worker import PostStackWorker

#: The gated jobs wait here; the test opens it.
GATE = threading.Event()


@pytest.fixture
def queue(redis_url: str, monkeypatch: pytest.MonkeyPatch) -> t.Iterator[Queue]:
    monkeypatch.setenv("POSTSTACK_WORKER_CONCURRENCY", "8")
    monkeypatch.setenv("POSTSTACK_SUPPRESS_SEND", "1")
    reset_worker()
    GATE.clear()
    conn = redis.Redis.from_url(redis_url)
    yield Queue("poststack", connection=conn, serializer=JSONSerializer)
    GATE.set()
    conn.close()


def gated_meta(n: int) -> int:
    """Wait for GATE (bounded), then leave ``meta`` for the success to write."""
    assert GATE.wait(20), "the gate never opened"
    tasks._save_meta(get_current_job(), defer=True, number=n)
    return n


def open_gate_when(predicate: t.Callable[[], bool]) -> None:
    def run() -> None:
        deadline = time.monotonic() + 20
        while not predicate() and time.monotonic() < deadline:
            time.sleep(0.02)
        GATE.set()

    threading.Thread(target=run, daemon=True).start()


def test_jobs_finishing_together_are_finished_as_rq_would(queue: Queue) -> None:
    jobs = [queue.enqueue("tests.test_finishing.gated_meta", args=(n,))
            for n in range(8)]  # fmt: skip
    open_gate_when(lambda: queue.started_job_registry.count == 8)
    worker = PostStackWorker([queue], connection=queue.connection)
    worker.work(burst=True)
    for n, job in enumerate(jobs):
        job.refresh()
        assert job.get_status() == "finished"
        assert job.return_value() == n
        assert job.meta["number"] == n  # written with the success
    assert queue.finished_job_registry.count == 8
    assert queue.started_job_registry.count == 0
    worker.refresh()
    assert worker.successful_job_count == 8


def test_a_dependent_is_enqueued_and_run(queue: Queue) -> None:
    parents = [queue.enqueue("tests.test_finishing.gated_meta", args=(n,))
               for n in range(3)]  # fmt: skip
    child = queue.enqueue("json.dumps", args=([7],), depends_on=parents[1])
    GATE.set()
    PostStackWorker([queue], connection=queue.connection).work(burst=True)
    assert [p.get_status(refresh=True) for p in parents] == ["finished"] * 3
    assert child.get_status(refresh=True) == "finished"
    assert child.return_value() == "[7]"


def test_a_job_that_keeps_no_result_takes_rqs_path(queue: Queue) -> None:
    job = queue.enqueue("tests.test_finishing.gated_meta", args=(1,), result_ttl=0)
    GATE.set()
    PostStackWorker([queue], connection=queue.connection).work(burst=True)
    assert not queue.connection.exists(job.key)  # rq deletes it at once


class Recorder:
    """``finish()`` arguments that record which path each job took."""

    def __init__(self) -> None:
        self.paths: list[tuple[str, str]] = []
        self.writers: dict[str, int] = {}

    def writes(self, name: str, then: t.Callable[[], None] = lambda: None) -> t.Any:
        def queue_writes(pipeline: t.Any) -> None:
            self.writers[name] = threading.get_ident()
            pipeline.set(f"test:finish:{name}", 1)
            then()

        return queue_writes

    def own(self, name: str) -> t.Callable[[], None]:
        return lambda: self.paths.append(("own", name))


def test_jobs_finishing_during_a_commit_are_committed_together(conn: t.Any) -> None:
    finisher, record = Finisher(conn), Recorder()
    first_in_commit = threading.Event()

    def hold_until_two_wait() -> None:
        first_in_commit.set()
        deadline = time.monotonic() + 20
        while len(finisher._waiting) < 2 and time.monotonic() < deadline:
            time.sleep(0.01)

    def run(name: str, then: t.Callable[[], None] = lambda: None) -> None:
        finisher.finish(f"test:dependents:{name}", record.writes(name, then),
                        record.own(name))  # fmt: skip

    threads = [threading.Thread(target=run, args=("a", hold_until_two_wait))]
    threads[0].start()
    assert first_in_commit.wait(20)
    threads += [threading.Thread(target=run, args=(name,)) for name in "bc"]
    for thread in threads[1:]:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert record.paths == []
    assert record.writers["b"] == record.writers["c"] != record.writers["a"]
    assert conn.mget([f"test:finish:{n}" for n in "abc"]) == [b"1"] * 3


def test_a_dependent_sends_the_group_down_rqs_path(conn: t.Any) -> None:
    finisher, record = Finisher(conn), Recorder()
    conn.sadd("test:dependents:a", "child")
    finisher.finish("test:dependents:a", record.writes("a"), record.own("a"))
    assert record.paths == [("own", "a")]
    assert not conn.exists("test:finish:a")


def test_a_dependent_added_meanwhile_sends_it_down_rqs_path(
    conn: t.Any, redis_url: str
) -> None:
    finisher, record = Finisher(conn), Recorder()
    other = redis.Redis.from_url(redis_url)

    def add_dependent() -> None:
        other.sadd("test:dependents:a", "child")

    finisher.finish("test:dependents:a", record.writes("a", add_dependent),
                    record.own("a"))  # fmt: skip
    other.close()
    assert record.paths == [("own", "a")]
    assert not conn.exists("test:finish:a")  # the transaction did not run


def test_an_error_while_queueing_sends_it_down_rqs_path(conn: t.Any) -> None:
    finisher, record = Finisher(conn), Recorder()

    def fail() -> None:
        raise TypeError("not serializable")

    finisher.finish("test:dependents:a", record.writes("a", fail), record.own("a"))
    assert record.paths == [("own", "a")]
    assert not conn.exists("test:finish:a")
