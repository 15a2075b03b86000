"""What the enqueue paths share: rq job options, Redis errors, eager runs."""

from __future__ import annotations

import contextlib
import dataclasses
import typing as t
import uuid
from collections.abc import Iterator
from collections.abc import Sequence

from . import pipeline
from ._keyprint import key_meta
from .errors import QueueUnavailableError

if t.TYPE_CHECKING:
    from datetime import datetime

    from rq import Queue
    from rq.job import Job

    from ._state import AppState

__all__ = ["enqueue_one", "inline_jobs", "job_options", "new_job_id", "queue_errors"]


def job_options(
    state: AppState,
    task: str,
    argument: t.Any,
    label: str,
    *,
    job_id: str | None = None,
    job_timeout: int | None = None,
    result_ttl: int | None = None,
    failure_ttl: int | None = None,
) -> dict[str, t.Any]:
    """The keyword arguments of rq's ``enqueue`` for one job of ``task``:
    its one argument, timeouts, retries and ``meta``."""
    from rq import Retry

    settings = state.settings
    intervals = list(settings.retry_intervals)
    # Explicit args/kwargs: the job function receives its one argument and
    # nothing else, whatever options rq adds or renames.
    return {
        "args": (argument,),
        "kwargs": {},
        "job_id": job_id,
        "job_timeout": job_timeout or settings.job_timeout,
        "result_ttl": settings.result_ttl if result_ttl is None else result_ttl,
        "failure_ttl": settings.failure_ttl if failure_ttl is None else failure_ttl,
        "retry": Retry(max=len(intervals), interval=intervals) if intervals else None,
        "description": f"{task}({label})",
        "meta": {"idempotency_key": label, **key_meta(settings.api_key)},
    }


@contextlib.contextmanager
def queue_errors(
    state: AppState, keys: Sequence[str], job_ids: Sequence[str]
) -> Iterator[None]:
    """Turn Redis failures into :exc:`QueueUnavailableError`, saying whether
    the write may have reached Redis (see :mod:`._redis_errors`)."""
    import redis

    from ._redis_errors import may_have_reached
    from ._redis_errors import watch

    with watch() as seen:
        try:
            yield
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            reason = str(exc) or type(exc).__name__
            raise QueueUnavailableError(
                state.settings.redis_url,
                reason,
                may_have_been_queued=may_have_reached([*seen, exc]),
                idempotency_keys=keys,
                job_ids=job_ids,
            ) from exc


def new_job_id() -> str:
    """A job id chosen before the write, so that a failed enqueue can name it."""
    return uuid.uuid4().hex


@contextlib.contextmanager
def inline_jobs(state: AppState, rq_queue: Queue) -> Iterator[None]:
    """Run the block's jobs in the app's context when ``rq_queue`` is eager."""
    # In eager mode rq runs the job inside enqueue(): it sends with the
    # app's client, and is not retried.
    if rq_queue.is_async:
        yield
    else:
        context = dataclasses.replace(state.send_context(), retries=False)
        with pipeline.running_in(context):
            yield


def enqueue_one(
    state: AppState,
    rq_queue: Queue,
    task: str,
    options: dict[str, t.Any],
    when: datetime | None,
    *,
    unique: bool,
) -> tuple[Job, bool]:
    """Put one job of ``task`` in ``rq_queue`` (at ``when``, if given), and
    return it with whether it is new.

    :param unique: the job id may be in Redis already (a caller's id, an
        outbox row pushed twice): then the job found there is returned.
    """
    from rq.exceptions import DuplicateJobError
    from rq.job import Job

    try:
        if when is None and rq_queue.is_async and not unique:
            # One MULTI/EXEC for the whole enqueue: rq alone makes two round
            # trips (the queue's registration, then the job).
            with state.redis.pipeline() as pipe:
                job: Job = rq_queue.enqueue(task, pipeline=pipe, **options)
                pipe.execute()
        elif when is None or not rq_queue.is_async:
            job = rq_queue.enqueue(task, unique=unique, **options)
        else:
            job = rq_queue.enqueue_at(when, task, unique=unique, **options)
    except DuplicateJobError:
        found = Job.fetch(options["job_id"], state.redis, rq_queue.serializer)
        return found, False
    return job, True
