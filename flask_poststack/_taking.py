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

import typing as t

from rq.utils import as_text

if t.TYPE_CHECKING:
    from rq.job import Job
    from rq.queue import Queue

__all__ = ["PUT_BACK", "put_back", "take"]

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
