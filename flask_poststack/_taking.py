"""Taking several jobs off a queue in one round trip, and putting back the
ones a worker took but did not start.

rq's dequeue takes one job per round trip (``LMOVE`` into the queue's
intermediate list, then the job's hash). A worker with several free sender
threads takes a job for each of them at once instead, the same way: the
ids move into the intermediate list, where rq (and
:meth:`~flask_poststack.worker.PostStackWorker.clean_registries`) finds a
job that a dead worker took but never started.
"""

from __future__ import annotations

import copy
import inspect
import typing as t

from rq.executions import Execution
from rq.utils import as_text
from rq.worker import WorkerStatus

if t.TYPE_CHECKING:
    from rq.job import Job
    from rq.queue import Queue

__all__ = ["PUT_BACK", "put_back", "start", "take"]

# rq 2.8 names no worker in an execution.
_NAMES_WORKER = "worker_name" in inspect.signature(Execution.create).parameters

#: Move a job id from the intermediate list back to the front of its queue,
#: only if it is still there: two workers cannot both put it back.
PUT_BACK = """
if redis.call('LREM', KEYS[1], 1, ARGV[1]) == 1 then
    redis.call('LPUSH', KEYS[2], ARGV[1])
    return 1
end
return 0
"""


def take(worker: t.Any, queue: Queue, count: int) -> list[Job]:
    """Up to ``count`` jobs from the front of ``queue``, as rq's dequeue
    takes one: a job whose hash is gone is dropped, as rq drops it."""
    connection = worker.connection
    with connection.pipeline(transaction=False) as pipeline:
        for _ in range(count):
            pipeline.lmove(queue.key, queue.intermediate_queue.key)
        ids = [as_text(job_id) for job_id in pipeline.execute() if job_id]
    if not ids:
        return []
    jobs = worker.job_class.fetch_many(ids, connection=connection,
                                       serializer=worker.serializer)  # fmt: skip
    gone = [job_id for job_id, job in zip(ids, jobs, strict=True) if job is None]
    if gone:
        with connection.pipeline(transaction=False) as pipeline:
            for job_id in gone:
                pipeline.lrem(queue.intermediate_queue.key, 1, job_id)
            pipeline.execute()
    return [job for job in jobs if job is not None]


def put_back(connection: t.Any, taken: t.Sequence[tuple[Job, Queue]]) -> int:
    """Put jobs taken but not started back at the front of their queues, in
    their order; returns how many went back."""
    if not taken:
        return 0
    with connection.pipeline(transaction=False) as pipeline:
        for job, queue in reversed(taken):
            keys = [queue.intermediate_queue.key, queue.key]
            pipeline.eval(PUT_BACK, len(keys), *keys, job.id)
        return sum(int(done) for done in pipeline.execute())


def start(worker: t.Any, jobs: list[Job], queue: Queue) -> tuple[list[t.Any], set[str]]:
    """Start ``jobs`` in one transaction: rq's ``prepare_execution`` for each
    (into the started registry) and its ``prepare_job_execution`` (status,
    heartbeat), as the main thread and then the job's sender would.

    Returns their executions, and the ids of the jobs whose
    ``prepare_job_execution`` is done (for any other, the sender runs it
    again and fails the job as rq would).
    """
    names = {"worker_name": worker.name} if _NAMES_WORKER else {}
    starter = copy.copy(worker)
    done: set[str] = set()
    with worker.connection.pipeline() as pipeline:
        create = Execution.create
        ttl = worker.get_heartbeat_ttl
        executions = [create(job, ttl(job), pipeline=pipeline, **names) for job in jobs]
        worker.set_state(WorkerStatus.BUSY, pipeline=pipeline)
        starter.connection = _Deferring(worker.connection, pipeline)
        for job in jobs:
            try:
                starter.prepare_job_execution(job)
            except Exception:  # e.g. data that is not JSON
                continue
            pipeline.lrem(queue.intermediate_queue.key, 1, job.id)
            done.add(job.id)
        pipeline.execute()
    if isinstance(getattr(worker, "executions", None), dict):  # rq 3
        for execution in executions:
            worker.executions[execution.id] = execution
    return executions, done


class _Deferring:
    """A connection whose ``pipeline()`` queues into one pipeline, run by
    the caller: rq's per-job code writes several jobs in one round trip."""

    def __init__(self, connection: t.Any, pipeline: t.Any) -> None:
        self._connection = connection
        self._pipeline = pipeline

    def pipeline(self, *args: t.Any, **kwargs: t.Any) -> _Queued:
        return _Queued(self._pipeline)

    def __getattr__(self, name: str) -> t.Any:
        return getattr(self._connection, name)


class _Queued:
    """The shared pipeline, with ``execute()`` left to its owner."""

    def __init__(self, pipeline: t.Any) -> None:
        self._pipeline = pipeline

    def __enter__(self) -> _Queued:
        return self

    def __exit__(self, *exc_info: object) -> None:
        return None

    def execute(self, *args: t.Any, **kwargs: t.Any) -> list[t.Any]:
        return []

    def __getattr__(self, name: str) -> t.Any:
        return getattr(self._pipeline, name)
