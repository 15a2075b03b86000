"""The RQ job that sends a queued email.

It runs in a plain ``rq worker`` process: no Flask app, no app context. The
SDK client is built from the ``POSTSTACK_*`` environment variables on first
use, once per process, and built again in a forked child, so a connection is
never shared by two processes.

Errors are sorted after the SDK's own retries: network errors, 408, 5xx and
throttling 429s raise so that RQ retries the job (waiting at least the API's
``Retry-After``); other 4xx and quota 429s fail the job at once. Either way
the job's ``meta["poststack_error"]`` says what happened.
"""

from __future__ import annotations

import logging
import math
import os
import typing as t

import httpx
import poststack
from flask import current_app
from flask import has_app_context
from poststack import PostStackError
from rq import get_current_job

from . import signals
from .config import check_api_key
from .config import environ_settings
from .config import Settings
from .delivery import dispatch
from .delivery import error_fields
from .delivery import QUOTA_CODES
from .errors import ConfigurationError
from .errors import FlaskPostStackError
from .errors import SendCancelled
from .extension import make_client

if t.TYPE_CHECKING:
    from flask import Flask

__all__ = ["get_client", "is_retryable", "send_batch_payloads", "send_payload"]

logger = logging.getLogger("flask_poststack.tasks")


_process: dict[str, t.Any] = {"pid": None, "settings": None, "client": None}


def worker_settings() -> Settings:
    """The worker's settings, read from ``os.environ`` once per process."""
    _check_pid()
    if _process["settings"] is None:
        _process["settings"] = environ_settings()
    settings: Settings = _process["settings"]
    return settings


def get_client() -> poststack.PostStack:
    """The worker process's SDK client, built on first use from the environment.

    :raises ConfigurationError: naming ``POSTSTACK_API_KEY`` if it is missing
        or malformed.
    """
    settings = worker_settings()
    if _process["client"] is None:
        check_api_key(settings.api_key)
        _process["client"] = make_client(settings)
    client: poststack.PostStack = _process["client"]
    return client


def _check_pid() -> None:
    # A forked child (rq's default Worker forks a horse per job) must not use
    # the parent's connection pool; drop it without closing the parent's sockets.
    if _process["pid"] != os.getpid():
        _process.update(pid=os.getpid(), settings=None, client=None)


def is_retryable(exc: BaseException) -> bool:
    """Whether retrying the send later can help.

    True for network errors, 408, 409, 5xx and throttling 429s; false for
    other 4xx and for quota 429s (a quota code, or a code without
    ``Retry-After``, which is how the API marks a limit that waiting seconds
    cannot lift). A 409 on a send means another request with the same
    idempotency key was still in flight: the retry gets its answer, a replay.
    """
    if isinstance(exc, httpx.TransportError):
        return True
    if isinstance(exc, FlaskPostStackError):
        return False  # bad configuration: fix it, then requeue the failed job
    if isinstance(exc, (TypeError, ValueError)) and not isinstance(exc, PostStackError):
        return False  # a payload that cannot be encoded fails the same way again
    if not isinstance(exc, PostStackError):
        return True  # unknown failures get the bounded retries, to lose nothing
    status = exc.status_code
    if status == 429:
        if exc.code in QUOTA_CODES:
            return False
        return exc.retry_after is not None or exc.code is None
    return status in (408, 409) or status >= 500


def send_payload(payload: dict[str, t.Any]) -> str | None:
    """Send one queued email payload; return the PostStack email id.

    The job function ``enqueue_email`` queues, by the dotted name
    ``"flask_poststack.tasks.send_payload"``. The id also goes into
    ``job.meta["poststack_id"]``. If a ``before_send`` receiver cancels the
    email, the job ends with ``None`` and ``job.meta["cancelled"]``.

    In a worker it uses the process's own client (:func:`get_client`) and
    ``POSTSTACK_SUPPRESS_SEND`` from the environment. When it runs inside an
    app context (``POSTSTACK_EAGER``), it uses that app's client and settings.
    """
    job: t.Any = get_current_job()  # rq's Job methods are untyped
    app = _current_app()
    try:
        suppressed, outbox, client_factory = _sending_context(app)
    except ConfigurationError as exc:  # a bad POSTSTACK_* in the environment
        _handle_failure(job, payload, exc)
        raise
    try:
        result = dispatch(
            payload,
            sender=app,
            get_client=client_factory,
            suppressed=suppressed,
            outbox=outbox,
            on_failure=lambda exc: _handle_failure(job, payload, exc),
        )
    except SendCancelled:
        if job is not None:
            job.meta["cancelled"] = True
            job.save_meta()
        logger.info("Send cancelled by a before_send receiver: job=%s", _id(job))
        return None
    if job is not None:
        job.meta["poststack_id"] = result.id
        job.meta.pop("poststack_error", None)
        job.save_meta()
    return result.id


class BatchIncomplete(Exception):
    """Some emails of a batch job failed on the API's side (``internal_error``);
    the job retries just those."""


def send_batch_payloads(payloads: list[dict[str, t.Any]]) -> list[dict[str, t.Any]]:
    """Send one chunk of queued emails with ``POST /emails/batch``.

    The job function of ``enqueue_batch``. Returns, and keeps in
    ``job.meta["results"]``, one answer per email in order: ``{"id", ...}``
    when accepted, ``{"error", "code"}`` when refused. A retry of the job
    sends only the emails that have no final answer yet, so an accepted email
    is never resent (and each carries its own idempotency key besides).
    """
    from .batch import capture_chunk
    from .batch import RETRYABLE_CODES
    from .batch import send_chunk

    job: t.Any = get_current_job()
    results: list[dict[str, t.Any] | None] = list(
        (job.meta.get("results") if job is not None else None) or [None] * len(payloads)
    )
    pending = [
        i
        for i, r in enumerate(results)
        if r is None or r.get("code") in RETRYABLE_CODES
    ]
    app = _current_app()
    chunk = [payloads[i] for i in pending]
    try:
        suppressed, outbox, client_factory = _sending_context(app)
        if suppressed:
            answers = capture_chunk(chunk, sender=app, outbox=outbox)
        else:
            answers = send_chunk(client_factory(), chunk, sender=app)
    except Exception as exc:
        label = {"idempotency_key": f"batch of {len(chunk)}"}
        extra = _handle_failure(job, label, exc)
        for payload in chunk:
            signals.email_failed.send(app, payload=payload, exception=exc, **extra)
        raise
    for index, answer in zip(pending, answers, strict=True):
        results[index] = dict(answer)
    final = [r for r in results if r is not None]
    if job is not None:
        job.meta["results"] = final
        job.save_meta()
    retry = [r for r in final if "id" not in r and r.get("code") in RETRYABLE_CODES]
    if retry:
        # RQ retries the job for these; once retries run out the job fails,
        # so requeue-failed can send them later (the answers stay in meta).
        raise BatchIncomplete(
            f"{len(retry)} of {len(payloads)} emails got an internal error"
        )
    return final


def _sending_context(
    app: Flask | None,
) -> tuple[bool, list[dict[str, t.Any]] | None, t.Callable[[], poststack.PostStack]]:
    """Suppressed?, the outbox, and how to get the client: the app's, if the
    job runs inside one (eager mode, tests), else this worker process's."""
    if app is None:
        return bool(worker_settings().suppress_send), None, get_client
    from .extension import app_client
    from .extension import get_state
    from .extension import is_suppressed

    return is_suppressed(app), get_state(app).outbox, lambda: app_client(app)


def _current_app() -> Flask | None:
    if has_app_context() and "poststack.state" in current_app.extensions:
        return t.cast("Flask", current_app._get_current_object())  # type: ignore[attr-defined]
    return None


def _id(job: t.Any) -> str | None:
    return job.id if job is not None else None


def _handle_failure(
    job: t.Any, payload: dict[str, t.Any], exc: Exception
) -> dict[str, t.Any]:
    fields = error_fields(exc)
    retryable = is_retryable(exc)
    will_retry = retryable and job is not None and bool(job.retries_left)
    if job is not None:
        if not retryable:
            job.retries_left = 0  # rq reads this on the same object when it fails
        elif will_retry:
            _wait_at_least(job, fields["retry_after"])
        job.meta["poststack_error"] = {**fields, "retryable": retryable}
        job.save_meta()
    logger.log(
        logging.WARNING if will_retry else logging.ERROR,
        "PostStack send failed: job=%s idempotency_key=%s status=%s code=%s"
        " request_id=%s retry=%s: %s",
        job.id if job else None,
        payload.get("idempotency_key"),
        fields["status"],
        fields["code"],
        fields["request_id"],
        "yes" if will_retry else "no",
        fields["error"],
        extra={"poststack": {**fields, "job_id": job.id if job else None,
               "idempotency_key": payload.get("idempotency_key"),
               "will_retry": will_retry}},
    )  # fmt: skip
    return {"job": job, "will_retry": will_retry}


def _wait_at_least(job: t.Any, retry_after: float | None) -> None:
    """Stretch this retry's interval to the API's ``Retry-After``."""
    if not retry_after or not job.retry_intervals:
        return
    intervals = list(job.retry_intervals)
    index = max(len(intervals) - job.retries_left, 0)
    intervals[index] = max(intervals[index], math.ceil(retry_after))
    job.retry_intervals = intervals
