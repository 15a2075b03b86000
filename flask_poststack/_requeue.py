"""``flask poststack requeue-failed``: failed jobs (RQ) or tasks (Celery)
back on the queue, each with its idempotency key and its retries."""

from __future__ import annotations

import dataclasses
import json
import time
import typing as t

import click

from ._cli_checks import redis_unreachable
from ._state import AppState

if t.TYPE_CHECKING:
    from celery import Celery

__all__ = ["requeue"]

#: Move a failed task's entry back into the ledger, if it is still in the
#: failed set: of two ``requeue-failed`` at once, one queues each task.
_CLAIM = """
if redis.call('HDEL', KEYS[1], ARGV[1]) == 1 then
  redis.call('ZADD', KEYS[2], ARGV[2], ARGV[1])
  redis.call('HSET', KEYS[3], ARGV[1], ARGV[3])
  return 1
end
return 0
"""


def requeue(state: AppState, queue: str, code: str | None) -> tuple[int, str]:
    """Requeue the failed emails (only those that failed with ``code``, if
    given); return how many, and where (``'poststack'``, quoted, or
    ``the Celery queues``)."""
    if state.settings.queue_backend == "celery":
        from ._celery_cli import LOCAL
        from ._celery_queue import celery_app

        # One line, as check and worker say it, not kombu's traceback.
        if unreachable := redis_unreachable(state.settings.redis_url, LOCAL):
            raise click.ClickException(unreachable)
        return len(_requeue_celery(celery_app(state), code)), "the Celery queues"
    return _requeue_rq(state, queue, code)


def _requeue_rq(state: AppState, queue: str, code: str | None) -> tuple[int, str]:
    from rq import Queue
    from rq.job import Job
    from rq.registry import FailedJobRegistry
    from rq.serializers import JSONSerializer

    rq_queue = Queue(queue, connection=state.redis, serializer=JSONSerializer)
    registry = FailedJobRegistry(queue=rq_queue)
    ids: list[str] = registry.get_job_ids()
    if code is not None:
        jobs = Job.fetch_many(ids, connection=state.redis, serializer=JSONSerializer)
        ids = [
            job.id
            for job in jobs
            if job is not None
            and (job.meta.get("poststack_error") or {}).get("code") == code
        ]
    retries = len(state.settings.retry_intervals)
    with click.progressbar(ids, label="Requeueing failed jobs") as bar:
        for job_id in bar:
            job = Job.fetch(job_id, connection=state.redis, serializer=JSONSerializer)
            # A job failed "at once" has no retries left; give it its policy back.
            job.retries_left = retries or None
            job.save()
            registry.requeue(job_id)
    return len(ids), repr(rq_queue.name)


def _requeue_celery(app: Celery, code: str | None = None) -> list[str]:
    """Queue again, under the same task ids, the tasks that failed for good
    (only those whose error has ``code``, if given), with their retries
    back; return their ids. The idempotency keys stay, so an email the API
    had accepted is not sent twice."""
    from . import _celery_ledger as ledger
    from .celery_tasks import EmailFailed

    found = ledger.for_app(app)
    if found is None:
        return []
    raw = t.cast("dict[bytes, bytes]", found.client.hgetall(found.key(ledger.FAILED)))
    claim = found.client.register_script(_CLAIM)
    keys = [found.key(k) for k in (ledger.FAILED, ledger.LEDGER, ledger.ENTRIES)]
    queued = []
    for key, value in raw.items():
        task_id = key.decode()
        if code is not None:
            info = app.AsyncResult(task_id).info
            if not (isinstance(info, EmailFailed) and info.fields.get("code") == code):
                continue
        again = dataclasses.replace(
            ledger.Entry(task_id=task_id, **json.loads(value)), retries=0
        )
        if not claim(keys=keys, args=[task_id, time.time(), again.dumps()]):
            continue  # another requeue-failed took it
        # Its old FAILURE would tell the sweep it has ended.
        app.AsyncResult(task_id).forget()
        app.send_task(again.task, args=list(again.args), kwargs=dict(again.kwargs),
                      task_id=task_id, queue=again.queue)  # fmt: skip
        queued.append(task_id)
    return queued
