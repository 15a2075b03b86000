"""What happened to a queued email: :func:`email_status`."""

from __future__ import annotations

import dataclasses
import typing as t

from flask import current_app
from flask import has_app_context

from . import _celery_queue
from ._state import get_state

if t.TYPE_CHECKING:
    import redis
    from celery.result import AsyncResult
    from rq.job import Job

__all__ = ["EmailStatus", "email_status"]


@dataclasses.dataclass(frozen=True)
class EmailStatus:
    """The state of one queued email, from its RQ job (and optionally the API)."""

    #: ``"queued"``, ``"scheduled"`` (waiting for its ``delay``/``run_at``),
    #: ``"started"`` (a worker is sending it), ``"retrying"`` (it failed in a
    #: way a retry can fix and waits for its next try), ``"sent"`` (the API
    #: accepted it: see :attr:`email_id` and :attr:`api_status`), ``"failed"``
    #: (see :attr:`error`), ``"canceled"`` (in RQ, or at the API by
    #: :func:`~flask_poststack.cancel_email`), or ``"unknown"`` (no
    #: such job, or it expired from Redis).
    state: str
    job_id: str
    #: The PostStack email id once the API accepted the email.
    email_id: str | None = None
    #: The last failure: ``status``, ``code``, ``request_id``, ``error``,
    #: ``retry_after`` and ``retryable``, as the worker recorded it. When the
    #: job code never ran (a worker that could not read the job), rq's own
    #: record of the failure, with a ``hint`` naming the fix.
    error: t.Mapping[str, t.Any] | None = None
    #: RQ retries left, when the job has a retry policy.
    retries_left: int | None = None
    #: The email's status at the API (``queued``, ``delivered``, ``bounced``...),
    #: when asked for with ``check_api=True``.
    api_status: str | None = None
    #: What :func:`~flask_poststack.cancel_email` or
    #: :func:`~flask_poststack.reschedule_email` did at the API to the
    #: scheduled send: ``"cancelled"`` (then :attr:`state` is
    #: ``"canceled"``) or ``"rescheduled to <time>"``.
    scheduled_change: str | None = None


def email_status(
    job: Job | AsyncResult | str,
    *,
    connection: redis.Redis | None = None,
    check_api: bool = False,
) -> EmailStatus:
    """Say what happened to the email queued as ``job`` (a job or its id).

    For a job of :func:`~flask_poststack.enqueue_batch`, ``"sent"``
    means every email of it has a final answer; which ones the API refused
    is in ``job.meta["results"]``.

    With ``POSTSTACK_QUEUE_BACKEND = "celery"``, ``job`` is the task's
    ``AsyncResult`` or id, read from the Celery result backend.

    :param connection: the Redis to look in; by default the current app's.
    :param check_api: once sent, also ask the API for the email's own status
        (``GET /emails/{id}``) with the current app's client.
    """
    from rq.exceptions import NoSuchJobError
    from rq.job import Job
    from rq.job import JobStatus
    from rq.serializers import JSONSerializer

    if _celery_queue.is_celery(job, connection):
        state, task_id, email_id, error = _celery_queue.task_facts(job)
        return EmailStatus(
            state=state,
            job_id=task_id,
            email_id=email_id,
            error=error,
            api_status=_api_status(email_id) if check_api else None,
        )
    job_id = job if isinstance(job, str) else job.id
    conn = connection if connection is not None else get_state().redis
    try:
        fresh = Job.fetch(job_id, connection=conn, serializer=JSONSerializer)
        rq_status = fresh.get_status(refresh=False)
    except NoSuchJobError:
        return EmailStatus(state="unknown", job_id=job_id)

    meta = fresh.meta or {}
    error = meta.get("poststack_error") or _worker_error(fresh)
    email_id = meta.get("poststack_id")
    state = {
        JobStatus.QUEUED: "retrying" if error else "queued",
        JobStatus.SCHEDULED: "retrying" if error else "scheduled",
        JobStatus.DEFERRED: "queued",
        JobStatus.STARTED: "started",
        JobStatus.FINISHED: "sent",
        JobStatus.FAILED: "failed",
        JobStatus.STOPPED: "failed",
        JobStatus.CANCELED: "canceled",
    }.get(rq_status, "unknown")
    change = meta.get("poststack_scheduled")
    if change == "cancelled":
        state = "canceled"
    api_status = _api_status(email_id) if check_api else None
    return EmailStatus(
        state=state,
        job_id=job_id,
        email_id=email_id,
        error=error if state != "sent" else None,
        retries_left=fresh.retries_left,
        api_status=api_status,
        scheduled_change=change,
    )


def _api_status(email_id: str | None) -> str | None:
    """The email's status at the API, with the current app's client."""
    if not email_id or not has_app_context():
        return None
    row = current_app.extensions["poststack"].emails.get(email_id)
    status: str | None = (row.get("email") or {}).get("status")
    return status


#: What a job's failure says when the worker could not read the job at all.
_NOT_JSON = ("UnpicklingError", "DeserializationError", "invalid load key")


def _worker_error(job: Job) -> dict[str, t.Any] | None:
    """The failure rq recorded when our job code never ran (so left no
    ``poststack_error``): e.g. a worker started without the JSON serializer."""
    from rq.results import Result

    try:
        result = job.latest_result()
    except Exception:  # an unreadable result must not hide the job's state
        return None
    if result is None or result.type != Result.Type.FAILED or not result.exc_string:
        return _unrecorded_retry(job)
    last = result.exc_string.strip().splitlines()[-1]
    error: dict[str, t.Any] = {
        "status": None,
        "code": last.split(":", 1)[0].rsplit(".", 1)[-1],
        "request_id": None,
        "error": last,
        "retry_after": None,
        "retryable": None,
    }
    if any(sign in result.exc_string for sign in _NOT_JSON):
        error["hint"] = _NOT_JSON_HINT
    return error


_NOT_JSON_HINT = (
    "the worker could not read the job: start it with"
    " -S rq.serializers.JSONSerializer, or use"
    " --worker-class flask_poststack.worker.PostStackWorker"
)


def _unrecorded_retry(job: Job) -> dict[str, t.Any] | None:
    """A try that failed with no record of why: rq keeps no result or
    traceback for a failure it retries, and our job code, which records one,
    did not get to run (a worker that could not read the job), or died."""
    intervals = job.retry_intervals or []
    left = job.retries_left
    if not intervals or left is None or left >= len(intervals):
        return None
    return {
        "status": None,
        "code": None,
        "request_id": None,
        "error": "a try failed and left no record of why (rq keeps none for a"
        " failure it retries); the worker's log has it",
        "retry_after": None,
        "retryable": None,
        "hint": f"most likely {_NOT_JSON_HINT}",
    }
