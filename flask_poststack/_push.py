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
from ._jobs import enqueue_one
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
        run_at = datetime.fromisoformat(spec["run_at"]) if spec["run_at"] else None
        payloads = _deferred.payloads_of(spec)
        keys = [p["idempotency_key"] for p in payloads]
        with queue_errors(state, keys, [spec["id"]]), inline_jobs(state, rq_queue):
            job, new = enqueue_one(
                state, rq_queue, task, options, run_at, unique=spec["unique"]
            )
        jobs.append(job)
        if new:  # a job found in Redis was announced when it was queued
            pipeline.enqueued(state.app, [(p, job) for p in payloads])
    return jobs
