"""Several jobs taken off a queue in one round trip, and put back when they
were not started (flask_poststack._taking), on the session's redis-server."""

from __future__ import annotations

import typing as t

import pytest
import redis
from rq import Queue
from rq.serializers import JSONSerializer

from flask_poststack._taking import put_back
from flask_poststack._taking import take
from flask_poststack.client import reset_worker
from flask_poststack.worker import PostStackWorker


@pytest.fixture
def queue(redis_url: str, monkeypatch: pytest.MonkeyPatch) -> t.Iterator[Queue]:
    monkeypatch.setenv("POSTSTACK_SUPPRESS_SEND", "1")
    reset_worker()
    conn = redis.Redis.from_url(redis_url)
    yield Queue("poststack", connection=conn, serializer=JSONSerializer)
    conn.close()


def fill(queue: Queue, count: int) -> list[str]:
    return [queue.enqueue("builtins.len", [i]).id for i in range(count)]


def test_take_moves_jobs_from_the_front_into_the_intermediate_list(
    queue: Queue,
) -> None:
    ids = fill(queue, 5)
    worker = PostStackWorker([queue], connection=queue.connection)

    jobs = take(worker, queue, 3)

    assert [job.id for job in jobs] == ids[:3]
    assert all(isinstance(job, worker.job_class) for job in jobs)
    assert queue.get_job_ids() == ids[3:]
    assert queue.intermediate_queue.get_job_ids() == ids[:3]
    assert take(worker, queue, 5) and queue.get_job_ids() == []
    assert take(worker, queue, 2) == []


def test_a_job_whose_hash_is_gone_is_dropped_as_rq_drops_it(queue: Queue) -> None:
    ids = fill(queue, 3)
    queue.connection.delete(f"rq:job:{ids[1]}")
    worker = PostStackWorker([queue], connection=queue.connection)

    jobs = take(worker, queue, 3)

    assert [job.id for job in jobs] == [ids[0], ids[2]]
    assert queue.intermediate_queue.get_job_ids() == [ids[0], ids[2]]


def test_jobs_taken_but_not_started_go_back_to_the_front_in_order(
    queue: Queue,
) -> None:
    ids = fill(queue, 5)
    worker = PostStackWorker([queue], connection=queue.connection)
    jobs = take(worker, queue, 3)

    assert put_back(queue.connection, [(job, queue) for job in jobs]) == 3

    assert queue.get_job_ids() == ids
    assert queue.intermediate_queue.get_job_ids() == []
    # Only once: a job already put back (or started) is not pushed again.
    assert put_back(queue.connection, [(job, queue) for job in jobs]) == 0
    assert queue.get_job_ids() == ids
