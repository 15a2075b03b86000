"""PostStackWorker and PostStackJob, on the parts rq itself does not cover."""

from __future__ import annotations

import os
import signal
import time
import typing as t
import uuid

import pytest
import redis
from rq import get_current_job
from rq import Queue
from rq import Retry
from rq.job import Job
from rq.job import JobStatus
from rq.serializers import JSONSerializer

from flask_poststack.worker import _PASS_EXECUTION
from flask_poststack.worker import PostStackJob
from flask_poststack.worker import PostStackWorker


@pytest.fixture
def queue(redis_url: str) -> t.Iterator[Queue]:
    conn = redis.Redis.from_url(redis_url)
    yield Queue("poststack", connection=conn, serializer=JSONSerializer)
    conn.close()


def retry_then_die(job_class: type[Job], queue: Queue) -> JobStatus | None:
    """Start a retry with an interval in a transaction that never commits,
    as when the worker is SIGKILLed before rq executes its pipeline."""
    job = queue.enqueue("json.dumps", args=([1],), kwargs={}, retry=Retry(2, [5]))
    fetched = job_class.fetch(job.id, connection=queue.connection,
                              serializer=JSONSerializer)  # fmt: skip
    with queue.connection.pipeline() as pipeline:
        fetched.retry(queue, pipeline)
        pipeline.reset()  # killed: nothing in the transaction happens
    return Job.fetch(job.id, connection=queue.connection,
                     serializer=JSONSerializer).get_status()  # fmt: skip


def test_rq_job_marks_a_retry_scheduled_outside_the_transaction(queue: Queue) -> None:
    # The race PostStackJob closes: the status says "scheduled" although
    # the job was never put in the scheduled registry.
    assert retry_then_die(Job, queue) == JobStatus.SCHEDULED


def test_postStack_job_writes_nothing_if_the_retry_never_commits(queue: Queue) -> None:
    assert retry_then_die(PostStackJob, queue) == JobStatus.QUEUED


def test_postStack_job_retries_normally(queue: Queue) -> None:
    job = queue.enqueue("json.dumps", args=([1],), kwargs={}, retry=Retry(2, [5]))
    fetched = PostStackJob.fetch(job.id, connection=queue.connection,
                                 serializer=JSONSerializer)  # fmt: skip
    with queue.connection.pipeline() as pipeline:
        fetched.retry(queue, pipeline)
        pipeline.execute()
    fetched.refresh()
    assert fetched.get_status() == JobStatus.SCHEDULED
    assert job.id in queue.scheduled_job_registry.get_job_ids()
    assert fetched.retries_left == 1


def test_the_worker_uses_postStack_jobs_even_when_the_cli_names_rqs(
    queue: Queue,
) -> None:
    worker = PostStackWorker([queue], connection=queue.connection, job_class=Job)
    assert worker.job_class is PostStackJob
    assert (
        PostStackWorker([queue], connection=queue.connection).job_class is PostStackJob
    )

    class Custom(Job):
        pass

    custom = PostStackWorker([queue], connection=queue.connection, job_class=Custom)
    assert custom.job_class is Custom


def test_redundant_heartbeats_are_skipped_but_never_shorten_the_ttl(
    queue: Queue,
) -> None:
    redis = queue.connection
    worker = PostStackWorker([queue], connection=redis)
    worker.register_birth()

    def hsets() -> int:
        # Each heartbeat that reaches Redis writes the last_heartbeat field.
        stats = redis.info("commandstats")
        return int(stats.get("cmdstat_hset", {}).get("calls", 0))

    worker.heartbeat()
    before = hsets()
    worker.heartbeat()
    worker.heartbeat()
    assert hsets() == before  # nothing to change: skipped
    assert redis.ttl(worker.key) > worker.worker_ttl

    # A job's short heartbeat (in the caller's pipeline) lowers the TTL ...
    with redis.pipeline() as pipe:
        worker.heartbeat(30, pipeline=pipe)
        pipe.execute()
    assert redis.ttl(worker.key) <= 30
    # ... so the next plain heartbeat goes out and restores it.
    worker.heartbeat()
    assert hsets() == before + 2  # the pipelined one and this one
    assert redis.ttl(worker.key) > worker.worker_ttl

    # An explicit TTL is always written.
    worker.heartbeat(worker.worker_ttl + 60)
    assert hsets() == before + 3


def test_an_unchanged_state_is_not_written_again(queue: Queue) -> None:
    redis = queue.connection
    worker = PostStackWorker([queue], connection=redis)
    worker.register_birth()
    worker.set_state("idle")
    redis.hset(worker.key, "state", "marker")
    worker.set_state("idle")
    assert redis.hget(worker.key, "state") == b"marker"
    worker.set_state("busy")
    assert redis.hget(worker.key, "state") == b"busy"


# -- prefetching (rq 3) --------------------------------------------------------

needs_rq3 = pytest.mark.skipif(
    not _PASS_EXECUTION, reason="prefetching is off on rq 2.x (by design)"
)


def status_after(job_id: str, seconds: float) -> str:
    """A job: wait, then report another job's status."""
    time.sleep(seconds)
    job = get_current_job()
    assert job is not None
    other = Job.fetch(job_id, connection=job.connection, serializer=JSONSerializer)
    return JobStatus(other.get_status()).value


def registry_after(job_id: str, seconds: float) -> list[bool]:
    """A job: wait, then say whether ``job_id`` is started and not expired."""
    time.sleep(seconds)
    job = get_current_job()
    assert job is not None
    queue = Queue(job.origin, connection=job.connection)
    registry = queue.started_job_registry
    return [
        job_id in registry.get_job_ids(),
        job_id in registry.get_expired_job_ids(),
    ]


def stop_worker() -> None:
    """A job: ask its own worker for a warm shutdown, as SIGTERM does."""
    os.kill(os.getpid(), signal.SIGTERM)


class SerialWorker(PostStackWorker):
    prefetch = False


def make_worker(
    queue: Queue, worker_class: type[PostStackWorker] = PostStackWorker
) -> PostStackWorker:
    return worker_class([queue], connection=queue.connection, serializer=JSONSerializer)


def nothing_left_running(queue: Queue) -> None:
    assert queue.started_job_registry.get_job_ids() == []
    assert queue.connection.llen(queue.intermediate_queue_key) == 0


@needs_rq3
@pytest.mark.parametrize(("worker_class", "seen"), [
    (PostStackWorker, "started"), (SerialWorker, "queued"),
])  # fmt: skip
def test_the_next_job_starts_while_one_is_sending(
    queue: Queue, worker_class: type[PostStackWorker], seen: str
) -> None:
    second_id = f"probe-{uuid.uuid4().hex}"
    first = queue.enqueue(
        "tests.test_worker.status_after", args=(second_id, 0.5), kwargs={}
    )
    second = queue.enqueue("json.dumps", args=([2],), kwargs={}, job_id=second_id)
    make_worker(queue, worker_class).work(burst=True)
    first.refresh()
    second.refresh()
    assert first.return_value() == seen
    assert first.get_status() == second.get_status() == "finished"
    nothing_left_running(queue)


@needs_rq3
def test_max_jobs_is_kept_and_nothing_is_left_started(queue: Queue) -> None:
    jobs = [queue.enqueue("json.dumps", args=([n],), kwargs={}) for n in range(4)]
    make_worker(queue).work(burst=True, max_jobs=2)
    statuses = [job.get_status(refresh=True) for job in jobs]
    assert statuses == ["finished", "finished", "queued", "queued"]
    nothing_left_running(queue)


@needs_rq3
def test_a_warm_shutdown_runs_the_job_already_started(queue: Queue) -> None:
    first = queue.enqueue("tests.test_worker.stop_worker", kwargs={})
    later = [queue.enqueue("json.dumps", args=([n],), kwargs={}) for n in range(3)]
    worker = make_worker(queue)
    worker.work(burst=False)  # returns on the stop request
    statuses = [job.get_status(refresh=True) for job in [first, *later]]
    # The second job was started during the first: it runs, the rest wait.
    assert statuses == ["finished", "finished", "queued", "queued"]
    nothing_left_running(queue)
    assert queue.job_ids == [later[1].id, later[2].id]


@needs_rq3
def test_a_prefetched_job_is_kept_alive_while_a_long_job_runs(
    queue: Queue, monkeypatch: pytest.MonkeyPatch
) -> None:
    from flask_poststack import tasks

    # Heartbeats every second, so a job unseen for 3 s counts as abandoned.
    monkeypatch.setenv("POSTSTACK_HEARTBEAT_INTERVAL", "1")
    monkeypatch.setitem(tasks._process, "settings", None)
    second_id = f"probe-{uuid.uuid4().hex}"
    first = queue.enqueue(
        "tests.test_worker.registry_after", args=(second_id, 4.5), kwargs={}
    )
    second = queue.enqueue("json.dumps", args=([2],), kwargs={}, job_id=second_id)
    make_worker(queue).work(burst=True)
    # Started during the first job's 4.5 s and never seen as abandoned.
    assert first.return_value(refresh=True) == [True, False]
    assert second.get_status(refresh=True) == "finished"
    assert len(second.results()) == 1
    nothing_left_running(queue)
