"""Taking an email back: :func:`cancel_email` and :func:`reschedule_email`.

An email is in one of two places when it can still be stopped: in Redis, as
an RQ job no worker has taken yet (queued, or waiting for its ``delay`` or
its next retry), or at the API, sent with ``scheduled_at`` and not yet due.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import typing as t

from poststack import PostStackError

from ._fields import scheduled_time
from ._state import get_state
from .errors import InvalidEmailError
from .results import SendResult

if t.TYPE_CHECKING:
    import redis
    from rq.job import Job

__all__ = ["EmailChange", "cancel_email", "reschedule_email"]

#: The API's answers for an email that is not (or no longer) scheduled.
_NOT_SCHEDULED = (404, 409, 422)


@dataclasses.dataclass(frozen=True)
class EmailChange:
    """What :func:`cancel_email` or :func:`reschedule_email` did."""

    #: Whether the email was cancelled (or rescheduled).
    done: bool
    #: Where it was stopped, or why not: ``"queue"`` (the RQ job was
    #: cancelled before any worker took it), ``"api"`` (the API cancelled or
    #: rescheduled its scheduled send), ``"suppressed"`` (sending is
    #: suppressed: nothing is asked of the API), ``"started"`` (a worker is
    #: sending it now), ``"sent"`` (already sent, not scheduled), ``"failed"``,
    #: ``"canceled"`` (already), ``"unknown"`` (no such job).
    where: str
    #: A sentence saying what happened, for a log or a flash message.
    message: str
    #: The RQ job's id, when there is a job.
    job_id: str | None = None
    #: The PostStack email id, once the API has the email.
    email_id: str | None = None


def cancel_email(
    job_or_id: Job | SendResult | str, *, connection: redis.Redis | None = None
) -> EmailChange:
    """Stop an email that has not gone out yet.

    ``job_or_id`` is what :func:`~flask_poststack.enqueue_email` returned (or
    its id), or what :func:`~flask_poststack.send_email` returned (or the
    ``em_...`` id). A job no worker has taken is cancelled in Redis (a
    Celery task through its ledger entry: see :doc:`/celery`); an email
    the API holds with ``scheduled_at`` is cancelled there
    (``POST /emails/{id}/cancel``). Anything else (sent, being sent) is
    reported, not raised. Needs an app context.

    :param connection: the Redis of the job; by default the current app's.
    :raises poststack.PostStackError: the API failed otherwise than "not
        scheduled".
    """
    if _is_celery_task(job_or_id, connection):
        from ._celery_cancel import cancel_task

        task_id = str(getattr(job_or_id, "id", job_or_id))
        return EmailChange(*cancel_task(get_state(), task_id), task_id)
    found = _locate(job_or_id, connection)
    if isinstance(found, EmailChange):
        return found
    job, email_id = found
    if job is not None and _take_off_queue(job):
        job.cancel()
        return EmailChange(True, "queue", "Cancelled before it was sent.", job.id)
    job_id = job.id if job is not None else None
    if email_id is None:
        return _too_late(job)
    if _suppressed(email_id):
        return EmailChange(True, "suppressed", _SUPPRESSED, job_id, email_id)
    try:
        answer = get_state().client_slot.for_send().emails.cancel(email_id)
    except PostStackError as exc:
        if exc.status_code not in _NOT_SCHEDULED:
            raise
        return EmailChange(
            False, "sent", f"The API did not cancel it: {exc.error}", job_id, email_id
        )
    _mark(job, "cancelled")
    done = bool(answer.get("success", True))
    return EmailChange(
        done, "api", "The API cancelled its scheduled send.", job_id, email_id
    )


def reschedule_email(
    job_or_id: Job | SendResult | str,
    scheduled_at: dt.datetime | str,
    *,
    connection: redis.Redis | None = None,
) -> EmailChange:
    """Move the scheduled send of an email the API holds
    (``PATCH /emails/{id}``), as :func:`cancel_email` finds it.

    A job not yet run is not changed (cancel it and enqueue it again);
    ``scheduled_at`` is checked as the argument of ``send_email`` is, and
    must be still to come.

    :raises InvalidEmailError: naming ``scheduled_at`` (a past time too).
    :raises poststack.PostStackError: the API failed otherwise than "not
        scheduled".
    """
    when = scheduled_time(scheduled_at)
    moment = dt.datetime.fromisoformat(when.removesuffix("Z"))
    if moment.replace(tzinfo=dt.timezone.utc) <= dt.datetime.now(dt.timezone.utc):
        raise InvalidEmailError(
            "scheduled_at", f"{scheduled_at!r} is in the past; give a time to come."
        )
    found = _locate(job_or_id, connection)
    if isinstance(found, EmailChange):
        return found
    job, email_id = found
    job_id = job.id if job is not None else None
    if email_id is None:
        return EmailChange(
            False,
            "queue",
            "Not sent yet: the job has no email at the API to reschedule;"
            " cancel it and enqueue it again.",
            job_id,
        )
    if _suppressed(email_id):
        return EmailChange(True, "suppressed", _SUPPRESSED, job_id, email_id)
    try:
        answer = get_state().client_slot.for_send().emails.reschedule(email_id, when)
    except PostStackError as exc:
        if exc.status_code not in _NOT_SCHEDULED:
            raise
        return EmailChange(
            False,
            "sent",
            f"The API did not reschedule it: {exc.error}",
            job_id,
            email_id,
        )
    _mark(job, f"rescheduled to {when}")
    done = bool(answer.get("success", True))
    return EmailChange(done, "api", f"Rescheduled to {when}.", job_id, email_id)


def _locate(
    job_or_id: object, connection: redis.Redis | None
) -> tuple[Job | None, str | None] | EmailChange:
    """The job (if any) and the API's email id (if it has one yet)."""
    from rq.exceptions import NoSuchJobError
    from rq.job import Job
    from rq.serializers import JSONSerializer

    if isinstance(job_or_id, SendResult):
        return None, job_or_id.id
    if isinstance(job_or_id, str) and job_or_id.startswith("em_"):
        return None, job_or_id
    if not isinstance(job_or_id, (str, Job)):
        raise TypeError(
            "cancel_email() takes a job, a job id, a SendResult or an 'em_' id,"
            f" not {type(job_or_id).__name__}."
        )
    job_id = job_or_id if isinstance(job_or_id, str) else job_or_id.id
    conn = connection if connection is not None else get_state().redis
    try:
        job = Job.fetch(job_id, connection=conn, serializer=JSONSerializer)
    except NoSuchJobError:
        return EmailChange(False, "unknown", "No such job (or it expired).", job_id)
    if job.is_canceled:
        return EmailChange(False, "canceled", "It was cancelled already.", job_id)
    email_id = (job.meta or {}).get("poststack_id")
    return job, email_id if isinstance(email_id, str) else None


def _is_celery_task(job_or_id: object, connection: redis.Redis | None) -> bool:
    from ._celery_queue import is_celery

    if isinstance(job_or_id, SendResult):
        return False
    if isinstance(job_or_id, str) and job_or_id.startswith("em_"):
        return False
    return is_celery(job_or_id, connection)


def _take_off_queue(job: Job) -> bool:
    """Remove ``job`` from where a worker would take it; whether it was
    there. After this, no worker can start it."""
    from rq import Queue
    from rq.registry import ScheduledJobRegistry

    queue = Queue(job.origin, connection=job.connection)
    scheduled = ScheduledJobRegistry(queue=queue)  # type: ignore[no-untyped-call]
    pipe = job.connection.pipeline()
    pipe.lrem(queue.key, 0, job.id)
    pipe.zrem(scheduled.key, job.id)
    return any(pipe.execute())


_SUPPRESSED = "Sending is suppressed: the email never reached the API."


def _suppressed(email_id: str) -> bool:
    return email_id.startswith("em_suppressed_") or get_state().suppressed


def _too_late(job: Job | None) -> EmailChange:
    from rq.job import JobStatus

    if job is None:
        return EmailChange(False, "sent", "It was sent already.")
    status = job.get_status(refresh=True)
    # Still "queued" but no longer in the queue: a worker has just taken it.
    if status in (JobStatus.STARTED, JobStatus.QUEUED, JobStatus.SCHEDULED):
        return EmailChange(False, "started", "A worker is sending it now.", job.id)
    if status in (JobStatus.FAILED, JobStatus.STOPPED):
        return EmailChange(False, "failed", "It failed; nothing to cancel.", job.id)
    return EmailChange(False, "sent", "It was sent already.", job.id)


def _mark(job: Job | None, what: str) -> None:
    """Record an API change on the job, for :func:`email_status`."""
    if job is not None:
        job.meta["poststack_scheduled"] = what
        job.save_meta()  # type: ignore[no-untyped-call]
