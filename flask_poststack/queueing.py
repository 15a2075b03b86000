"""Queueing from a view: :func:`enqueue_email`, :func:`enqueue_many` and
:func:`enqueue_batch`, the RQ producer side.

Each validates and renders in the app, fires ``before_send`` (through the
pipeline), then puts plain JSON jobs for :mod:`flask_poststack.tasks` on the
app's queue. Every queued email carries an idempotency key, so a retried job
replays at the API instead of sending twice.
"""

from __future__ import annotations

import typing as t
from collections.abc import Sequence
from datetime import datetime
from datetime import timedelta
from datetime import timezone
from functools import partial

from . import _celery_queue
from . import _deferred
from . import pipeline
from ._jobs import enqueue_one
from ._jobs import inline_jobs
from ._jobs import job_options
from ._jobs import new_job_id
from ._jobs import queue_errors
from ._state import AppState
from ._state import get_state
from .errors import ConfigurationError
from .errors import InvalidEmailError
from .message import build_all
from .message import build_payload
from .message import new_key
from .sending import chunks

if t.TYPE_CHECKING:
    from rq import Queue
    from rq.job import Job
    from typing_extensions import Unpack

    from .message import EmailArgs

__all__ = ["BATCH_TASK", "TASK", "enqueue_batch", "enqueue_email", "enqueue_many"]

#: The job functions, by dotted name: a plain ``rq worker`` imports them.
TASK = "flask_poststack.tasks.send_payload"
BATCH_TASK = "flask_poststack.tasks.send_batch_payloads"

#: The longest delay or job setting accepted, in seconds (about ten years).
MAX_SECONDS = 10 * 365 * 86_400


def enqueue_email(
    *,
    queue: str | None = None,
    delay: timedelta | float | None = None,
    run_at: datetime | None = None,
    job_id: str | None = None,
    job_timeout: int | None = None,
    result_ttl: int | None = None,
    failure_ttl: int | None = None,
    after_commit: bool | None = None,
    **args: Unpack[EmailArgs],
) -> Job:
    """Validate and render the email now, then queue it for an RQ worker.

    Takes the :class:`~flask_poststack.message.EmailArgs` of
    :func:`~flask_poststack.send_email`, plus queue options. Returns the
    :class:`rq.job.Job` as soon as the job is in Redis; the worker
    (:mod:`flask_poststack.tasks`) sends it. The job's payload is plain JSON
    and always carries an ``idempotency_key`` (yours, or one made here).
    With ``POSTSTACK_QUEUE_BACKEND = "celery"`` (as for :func:`enqueue_many`
    and :func:`enqueue_batch`) it is a Celery task, and this returns its
    ``celery.result.AsyncResult``; see :doc:`/celery`.

    :param queue: the queue name; default ``POSTSTACK_QUEUE``.
    :param delay: run no earlier than this long from now (a
        :class:`~datetime.timedelta` or seconds). Needs a worker started with
        ``--with-scheduler``.
    :param run_at: run no earlier than this timezone-aware time.
    :param job_id: the job's id (letters, digits, ``_`` and ``-``). A second
        enqueue with the same id, while the first job is still in Redis,
        returns the first job instead of queueing another, and the id also
        seeds the idempotency key, so the API will not send it twice either.
    :param job_timeout: seconds a worker may spend on the job; default
        ``POSTSTACK_JOB_TIMEOUT``.
    :param result_ttl: seconds to keep a finished job; default
        ``POSTSTACK_RESULT_TTL``.
    :param failure_ttl: seconds to keep a failed job; default
        ``POSTSTACK_FAILURE_TTL``.
    :param after_commit: queue when the app's SQLAlchemy transaction
        commits, drop it on a rollback (see :doc:`/transactions`); default
        ``POSTSTACK_AFTER_COMMIT``. ``False`` queues now, also with
        ``POSTSTACK_OUTBOX``. A held job's id is final, but it is in Redis
        only after the commit.
    :raises InvalidEmailError: for bad input; nothing is queued.
    :raises QueueUnavailableError: when Redis cannot be reached.
    """
    state = get_state()
    when = _run_time(delay, run_at)
    _check_options(queue, job_timeout, result_ttl, failure_ttl)
    if job_id is not None:
        _check_job_id(job_id)
    if celery := state.settings.queue_backend == "celery":
        _no_commit_hold(state, after_commit)
        _celery_queue.check_options(
            state, when, job_timeout=job_timeout, result_ttl=result_ttl,
            failure_ttl=failure_ttl,
        )  # fmt: skip
    payload: dict[str, t.Any] = dict(build_payload(state.settings, args))
    payload.setdefault("idempotency_key", f"job-{job_id}" if job_id else new_key())
    pipeline.prepare(state.app, [payload])
    if celery:
        [result] = _celery_queue.send_tasks(
            state, False, [payload], queue=queue, when=when, task_id=job_id
        )
        return t.cast("Job", result)

    rq_queue = state.queue(queue)
    options = job_options(
        state,
        TASK,
        payload,
        payload["idempotency_key"],
        job_id=job_id or new_job_id(),
        job_timeout=job_timeout,
        result_ttl=result_ttl,
        failure_ttl=failure_ttl,
    )
    spec = _deferred.spec(TASK, rq_queue.name, options, when, unique=job_id is not None)
    if (held := _hold(state, after_commit, [spec])) is not None:
        return held[0]
    with (
        queue_errors(state, [payload["idempotency_key"]], [options["job_id"]]),
        inline_jobs(state, rq_queue),
    ):
        job, new = enqueue_one(
            state, rq_queue, TASK, options, when, unique=job_id is not None
        )
    if new:  # a job found under its id was announced when it was queued
        pipeline.enqueued(state.app, [(payload, job)])
    return job


def enqueue_many(
    messages: Sequence[EmailArgs],
    *,
    queue: str | None = None,
    after_commit: bool | None = None,
) -> list[Job]:
    """Queue one ordinary job per email, all in one Redis round trip.

    The jobs are the same as :func:`~flask_poststack.enqueue_email`'s.

    :raises InvalidEmailError: naming the message and argument; nothing is
        queued.
    :raises QueueUnavailableError: when Redis cannot be reached.
    """
    state = get_state()
    _check_options(queue, None, None, None)
    payloads = build_all(state.settings, messages)
    pipeline.prepare(state.app, payloads)
    if state.settings.queue_backend == "celery":
        _no_commit_hold(state, after_commit)
        return t.cast(
            "list[Job]", _celery_queue.send_tasks(state, False, payloads, queue=queue)
        )
    options = [
        job_options(state, TASK, p, p["idempotency_key"], job_id=new_job_id())
        for p in payloads
    ]
    keys = [p["idempotency_key"] for p in payloads]
    rq_queue = state.queue(queue)
    specs = [_deferred.spec(TASK, rq_queue.name, o, None) for o in options]
    if (held := _hold(state, after_commit, specs)) is not None:
        return held
    jobs = _enqueue_all(state, rq_queue, TASK, options, keys)
    for payload, job in zip(payloads, jobs, strict=True):
        pipeline.enqueued(state.app, [(payload, job)])
    return jobs


def enqueue_batch(
    messages: Sequence[EmailArgs],
    *,
    queue: str | None = None,
    job_timeout: int | None = None,
    result_ttl: int | None = None,
    failure_ttl: int | None = None,
    after_commit: bool | None = None,
) -> list[Job]:
    """Queue many emails as one job per 100, in one Redis round trip.

    The worker sends each job's emails with one ``POST /emails/batch`` and
    records one answer per email in ``job.meta["results"]``. A retry (after a
    network error, a 5xx, or an email refused with ``internal_error``)
    resends only the emails without a final answer.

    :raises InvalidEmailError: naming the message and argument; nothing is
        queued.
    :raises QueueUnavailableError: when Redis cannot be reached.
    """
    state = get_state()
    _check_options(queue, job_timeout, result_ttl, failure_ttl)
    if celery := state.settings.queue_backend == "celery":
        _no_commit_hold(state, after_commit)
        _celery_queue.check_options(
            state, job_timeout=job_timeout, result_ttl=result_ttl,
            failure_ttl=failure_ttl,
        )  # fmt: skip
    payloads = build_all(state.settings, messages)
    pipeline.prepare(state.app, payloads)
    if celery:
        return t.cast(
            "list[Job]", _celery_queue.send_tasks(state, True, payloads, queue=queue)
        )
    all_options = []
    for chunk in chunks(payloads):
        label = f"{len(chunk)} emails from {chunk[0]['idempotency_key']}"
        options = job_options(
            state,
            BATCH_TASK,
            chunk,
            label,
            job_id=new_job_id(),
            job_timeout=job_timeout or state.settings.job_timeout * 2,
            result_ttl=result_ttl,
            failure_ttl=failure_ttl,
        )
        del options["meta"]["idempotency_key"]
        options["meta"]["idempotency_keys"] = [p["idempotency_key"] for p in chunk]
        all_options.append(options)
    keys = [p["idempotency_key"] for p in payloads]
    rq_queue = state.queue(queue)
    specs = [_deferred.spec(BATCH_TASK, rq_queue.name, o, None) for o in all_options]
    if (held := _hold(state, after_commit, specs)) is not None:
        return held
    jobs = _enqueue_all(state, rq_queue, BATCH_TASK, all_options, keys)
    for job, chunk in zip(jobs, chunks(payloads), strict=True):
        for payload in chunk:
            pipeline.enqueued(state.app, [(payload, job)])
    return jobs


def _no_commit_hold(state: AppState, after: bool | None) -> None:
    if _deferred.deferring(state, after):
        raise ConfigurationError(
            "POSTSTACK_QUEUE_BACKEND",
            "after-commit queueing and the outbox work with RQ only; with"
            " Celery, pass after_commit=False or leave POSTSTACK_AFTER_COMMIT"
            " and POSTSTACK_OUTBOX unset.",
        )


def _hold(
    state: AppState, after: bool | None, specs: list[_deferred.Spec]
) -> list[Job] | None:
    from ._push import push_specs

    return _deferred.hold(state, after, specs, partial(push_specs, state))


def _enqueue_all(
    state: AppState,
    rq_queue: Queue,
    task: str,
    options: list[dict[str, t.Any]],
    keys: list[str],
) -> list[Job]:
    """Queue one job per ``options``, in one Redis round trip."""
    job_ids = [o["job_id"] for o in options]
    with queue_errors(state, keys, job_ids), inline_jobs(state, rq_queue):
        if not rq_queue.is_async:
            # rq's enqueue_many runs eager jobs inside its pipeline, which
            # then writes "queued" over their result: one at a time instead.
            return [rq_queue.enqueue(task, **o) for o in options]
        datas = [
            rq_queue.prepare_data(
                task,
                args=o["args"],
                kwargs=o["kwargs"],
                timeout=o["job_timeout"],
                result_ttl=o["result_ttl"],
                failure_ttl=o["failure_ttl"],
                description=o["description"],
                job_id=o["job_id"],
                meta=o["meta"],
                retry=o["retry"],
            )
            for o in options
        ]
        jobs: list[Job] = rq_queue.enqueue_many(datas)
    return jobs


def _run_time(
    delay: timedelta | float | None, run_at: datetime | None
) -> datetime | None:
    if delay is not None and run_at is not None:
        raise InvalidEmailError("delay", "give either 'delay' or 'run_at', not both.")
    if delay is not None:
        if isinstance(delay, bool) or not isinstance(delay, (int, float, timedelta)):
            raise InvalidEmailError("delay", "must be a timedelta or seconds.")
        seconds = delay.total_seconds() if isinstance(delay, timedelta) else delay
        if not 0 <= seconds <= MAX_SECONDS:  # also refuses NaN
            raise InvalidEmailError(
                "delay", f"must be between 0 and {MAX_SECONDS} seconds, not {delay!r}."
            )
        return datetime.now(timezone.utc) + timedelta(seconds=seconds)
    if run_at is not None:
        if not isinstance(run_at, datetime) or run_at.utcoffset() is None:
            raise InvalidEmailError("run_at", "must be a timezone-aware datetime.")
        return run_at.astimezone(timezone.utc)
    return None


def _check_options(
    queue: object, job_timeout: object, result_ttl: object, failure_ttl: object
) -> None:
    if queue is not None:
        _check_queue(queue)
    for name, value, least in (
        ("job_timeout", job_timeout, 1),
        ("result_ttl", result_ttl, 0),
        ("failure_ttl", failure_ttl, 0),
    ):
        if value is not None and (
            isinstance(value, bool)
            or not isinstance(value, int)
            or not least <= value <= MAX_SECONDS
        ):
            raise InvalidEmailError(
                name, f"must be whole seconds from {least} to {MAX_SECONDS}."
            )


#: The longest queue name: the outbox table's ``queue`` column.
MAX_QUEUE_LENGTH = 128


def _check_queue(queue: object) -> None:
    # Before anything is written: too long or a NUL, the outbox's INSERT
    # would fail in the database and abort the app's own transaction.
    if (
        not isinstance(queue, str)
        or not queue.strip()
        or len(queue) > MAX_QUEUE_LENGTH
        or not queue.isprintable()
    ):
        raise InvalidEmailError(
            "queue",
            f"must be a queue name of 1 to {MAX_QUEUE_LENGTH} printable characters.",
        )


def _check_job_id(job_id: str) -> None:
    if (
        not isinstance(job_id, str)
        or not job_id
        or len(job_id) > 128
        or not all(c.isascii() and (c.isalnum() or c in "_-") for c in job_id)
    ):
        raise InvalidEmailError(
            "job_id", "use 1 to 128 letters, digits, '_' or '-' (RQ's rule)."
        )
