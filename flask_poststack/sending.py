"""``send_email`` and ``enqueue_email``: the two ways a view sends email.

Both validate and render in the app with :func:`build_payload`, so both send
the same bytes: ``send_email`` hands the payload to the app's SDK client now,
``enqueue_email`` puts it on an RQ queue for :mod:`flask_poststack.tasks`.
"""

from __future__ import annotations

import contextlib
import logging
import typing as t
import uuid
from collections.abc import Mapping
from collections.abc import Sequence
from datetime import datetime
from datetime import timedelta
from datetime import timezone

from flask import current_app
from flask import Flask

from . import signals
from .config import parse_bool
from .delivery import dispatch
from .delivery import error_fields
from .delivery import SendResult
from .errors import InvalidEmailError
from .errors import QueueUnavailableError
from .extension import app_client
from .extension import get_state
from .extension import is_suppressed
from .message import build_payload

if t.TYPE_CHECKING:
    from rq import Queue
    from rq.job import Job

    from .config import Settings
    from .message import AttachmentLike

__all__ = ["SendResult", "enqueue_email", "send_email"]

logger = logging.getLogger("flask_poststack")

#: The job function, by dotted name: a plain ``rq worker`` imports it.
TASK = "flask_poststack.tasks.send_payload"


def send_email(
    *,
    to: str | Sequence[str] | None = None,
    subject: str | None = None,
    html: str | None = None,
    text: str | None = None,
    from_: str | None = None,
    cc: str | Sequence[str] | None = None,
    bcc: str | Sequence[str] | None = None,
    reply_to: str | None = None,
    headers: Mapping[str, str] | None = None,
    tags: str | Sequence[str] | None = None,
    attachments: Sequence[AttachmentLike] | None = None,
    template: str | None = None,
    context: Mapping[str, t.Any] | None = None,
    template_id: str | None = None,
    variables: Mapping[str, t.Any] | None = None,
    scheduled_at: datetime | str | None = None,
    idempotency_key: str | None = None,
) -> SendResult:
    """Send an email now, with the current app's client, and return the result.

    Needs an app context. The arguments are described in :doc:`/sending`;
    everything is validated before any network call. When
    ``POSTSTACK_SUPPRESS_SEND`` is true (by default, when ``app.testing`` is)
    nothing is sent: the payload is appended to the app's outbox and a result
    with a fake ``em_suppressed_...`` id is returned.

    :raises InvalidEmailError: (a :exc:`ValueError`) naming the bad argument.
    :raises poststack.PostStackError: the API's error, unchanged, after the
        SDK's own retries.
    """
    app: Flask = current_app._get_current_object()  # type: ignore[attr-defined]
    state = get_state(app)
    payload = build_payload(
        state.settings,
        to=to,
        subject=subject,
        html=html,
        text=text,
        from_=from_,
        cc=cc,
        bcc=bcc,
        reply_to=reply_to,
        headers=headers,
        tags=tags,
        attachments=attachments,
        template=template,
        context=context,
        template_id=template_id,
        variables=variables,
        scheduled_at=scheduled_at,
        idempotency_key=idempotency_key,
    )
    wire = dict(payload)
    return dispatch(
        wire,
        sender=app,
        get_client=lambda: app_client(app),
        suppressed=is_suppressed(app),
        outbox=state.outbox,
        on_failure=lambda exc: _log_failure(exc, wire),
    )


def _log_failure(exc: Exception, payload: Mapping[str, t.Any]) -> dict[str, t.Any]:
    fields = error_fields(exc)
    key = payload.get("idempotency_key")
    logger.error(
        "PostStack send failed: status=%s code=%s request_id=%s idempotency_key=%s: %s",
        fields["status"],
        fields["code"],
        fields["request_id"],
        key,
        fields["error"],
        extra={"poststack": {**fields, "idempotency_key": key}},
    )
    return {}


def enqueue_email(
    *,
    to: str | Sequence[str] | None = None,
    subject: str | None = None,
    html: str | None = None,
    text: str | None = None,
    from_: str | None = None,
    cc: str | Sequence[str] | None = None,
    bcc: str | Sequence[str] | None = None,
    reply_to: str | None = None,
    headers: Mapping[str, str] | None = None,
    tags: str | Sequence[str] | None = None,
    attachments: Sequence[AttachmentLike] | None = None,
    template: str | None = None,
    context: Mapping[str, t.Any] | None = None,
    template_id: str | None = None,
    variables: Mapping[str, t.Any] | None = None,
    scheduled_at: datetime | str | None = None,
    idempotency_key: str | None = None,
    queue: str | None = None,
    delay: timedelta | float | None = None,
    run_at: datetime | None = None,
    job_id: str | None = None,
    job_timeout: int | None = None,
    result_ttl: int | None = None,
    failure_ttl: int | None = None,
) -> Job:
    """Validate and render the email now, then queue it for an RQ worker.

    Takes every argument of :func:`send_email`, plus queue options. Returns
    the :class:`rq.job.Job` as soon as the job is in Redis; the worker
    (:mod:`flask_poststack.tasks`) sends it. The job's payload is plain JSON
    and always carries an ``idempotency_key`` (yours, or one made here), so
    a retried job replays at the API instead of sending twice.

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
    :raises InvalidEmailError: for bad input; nothing is queued.
    :raises QueueUnavailableError: when Redis cannot be reached; nothing is
        queued.
    """
    from rq.exceptions import DuplicateJobError

    app: Flask = current_app._get_current_object()  # type: ignore[attr-defined]
    state = get_state(app)
    settings = state.settings
    when = _run_time(delay, run_at)
    check_queue_options(queue, job_timeout, result_ttl, failure_ttl)
    if job_id is not None:
        _check_job_id(job_id)
    payload: dict[str, t.Any] = dict(
        build_payload(
            settings,
            to=to,
            subject=subject,
            html=html,
            text=text,
            from_=from_,
            cc=cc,
            bcc=bcc,
            reply_to=reply_to,
            headers=headers,
            tags=tags,
            attachments=attachments,
            template=template,
            context=context,
            template_id=template_id,
            variables=variables,
            scheduled_at=scheduled_at,
            idempotency_key=idempotency_key,
        )
    )
    payload.setdefault("idempotency_key", f"job-{job_id}" if job_id else new_key())
    signals.before_send.send(app, payload=payload)

    rq_queue = app_queue(app, queue)
    options = job_options(
        settings,
        TASK,
        payload,
        payload["idempotency_key"],
        job_id=job_id,
        job_timeout=job_timeout,
        result_ttl=result_ttl,
        failure_ttl=failure_ttl,
    )
    with queue_errors(settings.redis_url):
        try:
            if when is None and rq_queue.is_async and job_id is None:
                # One MULTI/EXEC for the whole enqueue: rq alone makes two
                # round trips (the queue's registration, then the job).
                with state.redis.pipeline() as pipe:
                    job: Job = rq_queue.enqueue(TASK, pipeline=pipe, **options)
                    pipe.execute()
            elif when is None or not rq_queue.is_async:
                job = rq_queue.enqueue(TASK, unique=job_id is not None, **options)
            else:
                job = rq_queue.enqueue_at(
                    when, TASK, unique=job_id is not None, **options
                )
        except DuplicateJobError:
            from rq.job import Job

            assert job_id is not None
            return Job.fetch(
                job_id, connection=state.redis, serializer=rq_queue.serializer
            )
    signals.email_enqueued.send(app, payload=payload, job=job)
    return job


def new_key() -> str:
    """A fresh idempotency key for an email that has none."""
    return f"fps-{uuid.uuid4().hex}"


def app_queue(app: Flask, name: str | None = None) -> Queue:
    """The app's RQ queue ``name`` (default ``POSTSTACK_QUEUE``), JSON-serialised.

    With ``POSTSTACK_EAGER`` on, its jobs run as they are enqueued.
    """
    from rq import Queue
    from rq.serializers import JSONSerializer

    state = get_state(app)
    eager = parse_bool("POSTSTACK_EAGER", app.config.get("POSTSTACK_EAGER"))
    name = name or state.settings.queue
    connection = state.redis
    # Built once per name and mode and reused: Queue() costs a good part of
    # an enqueue (its serializer check is a typing.Protocol isinstance).
    # A new one if the app's Redis client was swapped (the pytest plugin does).
    rq_queue = state.queues.get((name, not eager))
    if rq_queue is None or rq_queue.connection is not connection:
        rq_queue = state.queues[name, not eager] = Queue(
            name, connection=connection, serializer=JSONSerializer, is_async=not eager
        )
    return rq_queue


def job_options(
    settings: Settings,
    task: str,
    argument: t.Any,
    label: str,
    *,
    job_id: str | None = None,
    job_timeout: int | None = None,
    result_ttl: int | None = None,
    failure_ttl: int | None = None,
) -> dict[str, t.Any]:
    """The options of one job that calls ``task(argument)``, with our defaults."""
    from rq import Retry

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
        "meta": {"idempotency_key": label},
    }


@contextlib.contextmanager
def queue_errors(url: str) -> t.Iterator[None]:
    """Turn Redis connection failures into :exc:`QueueUnavailableError`."""
    import redis

    try:
        yield
    except (redis.ConnectionError, redis.TimeoutError) as exc:
        raise QueueUnavailableError(url, str(exc) or type(exc).__name__) from exc


#: The longest delay or job setting accepted, in seconds (about ten years).
MAX_SECONDS = 10 * 365 * 86_400


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


def check_queue_options(
    queue: object, job_timeout: object, result_ttl: object, failure_ttl: object
) -> None:
    """Refuse bad queue options with an :exc:`InvalidEmailError` naming them."""
    if queue is not None and (not isinstance(queue, str) or not queue.strip()):
        raise InvalidEmailError("queue", "must be a non-empty queue name.")
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
