"""Queue jobs that were held for a commit or written to the outbox.

Each held job (a :data:`~flask_poststack._deferred.Spec`) already has its
id; pushing the same spec twice (two relays, a relay racing the fast path)
finds the first job instead of queueing a second.
"""

from __future__ import annotations

import typing as t
from datetime import datetime

from . import _deferred
from . import pipeline
from ._jobs import inline_jobs
from ._jobs import job_options
from ._jobs import queue_errors

if t.TYPE_CHECKING:
    from rq.job import Job

    from ._state import AppState

__all__ = ["push_specs"]


def push_specs(state: AppState, specs: list[_deferred.Spec]) -> list[Job]:
    """Queue held jobs under their own ids, and return them.

    :raises QueueUnavailableError: when Redis cannot be reached.
    """
    from rq.exceptions import DuplicateJobError
    from rq.job import Job

    jobs = []
    for spec in specs:
        rq_queue = state.queue(spec["queue"])
        task = spec["task"]
        options = job_options(
            state,
            task,
            spec["args"][0],
            spec["key"],
            job_id=spec["id"],
            job_timeout=spec["job_timeout"],
            result_ttl=spec["result_ttl"],
            failure_ttl=spec["failure_ttl"],
        )
        options.update(meta=spec["meta"], description=spec["description"])
        run_at = spec["run_at"] and datetime.fromisoformat(spec["run_at"])
        payloads = _deferred.payloads_of(spec)
        keys = [p["idempotency_key"] for p in payloads]
        with queue_errors(state, keys, [spec["id"]]), inline_jobs(state, rq_queue):
            try:
                if run_at and rq_queue.is_async:
                    job = rq_queue.enqueue_at(run_at, task, unique=True, **options)
                elif spec["unique"] or not rq_queue.is_async:
                    job = rq_queue.enqueue(task, unique=True, **options)
                else:  # one round trip, as enqueue_email's own
                    with state.redis.pipeline() as pipe:
                        job = rq_queue.enqueue(task, pipeline=pipe, **options)
                        pipe.execute()
            except DuplicateJobError:
                jobs.append(Job.fetch(spec["id"], state.redis, rq_queue.serializer))
                continue
        jobs.append(job)
        pipeline.enqueued(state.app, [(p, job) for p in payloads])
    return jobs
