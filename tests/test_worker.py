"""PostStackWorker and PostStackJob, on the parts rq itself does not cover."""

from __future__ import annotations

import typing as t

import pytest
import redis
from rq import Queue
from rq import Retry
from rq.job import Job
from rq.job import JobStatus
from rq.serializers import JSONSerializer

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
