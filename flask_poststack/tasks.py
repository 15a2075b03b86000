"""The RQ jobs that send queued email.

They run in a plain ``rq worker`` process: no Flask app, no app context,
and this module imports neither Flask nor the app. The SDK client is built
from the ``POSTSTACK_*`` environment variables on first use, once per
process, and again in a forked child (:mod:`flask_poststack.client`).
Under ``POSTSTACK_EAGER`` and ``poststack_queue.run()`` the jobs run inline
with the app's client and settings instead.

Each job is a short call into the pipeline (:mod:`flask_poststack.pipeline`)
plus its ``job.meta`` bookkeeping. Failures are sorted by
:mod:`flask_poststack.retry`: a retryable one raises, so that RQ retries the
job (waiting at least the API's ``Retry-After``); any other fails the job at
once. Either way ``job.meta["poststack_error"]`` says what happened.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import typing as t

from rq import get_current_job

from . import pipeline
from ._finishing import defer_meta
from .client import worker_slot
from .retry import answer_error
from .retry import error_fields
from .retry import is_retryable

if t.TYPE_CHECKING:
    from rq.job import Job

__all__ = ["BatchIncomplete", "send_batch_payloads", "send_payload"]

logger = logging.getLogger("flask_poststack.tasks")


def send_payload(payload: dict[str, t.Any]) -> str:
    """Send one queued email payload; return the PostStack email id.

    The job function ``enqueue_email`` queues, by the dotted name
    ``"flask_poststack.tasks.send_payload"``. The id also goes into
    ``job.meta["poststack_id"]``.
    """
    job: t.Any = get_current_job()  # rq's Job methods are untyped
    try:
        result = pipeline.send_one(_context(job), payload)
    except Exception as exc:
        _record_failure(job, exc)
        raise
    # Written with rq's success, in one transaction, by sender threads.
    _save_meta(job, defer=True, poststack_id=result.id, poststack_error=None)
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
    job: t.Any = get_current_job()
    known = (job.meta.get("results") if job is not None else None) or []
    results: list[dict[str, t.Any] | None] = list(known) or [None] * len(payloads)
    pending = [i for i, r in enumerate(results) if r is None or _retry_answer(r)]
    try:
        answers = pipeline.send_many(_context(job), [payloads[i] for i in pending])
    except Exception as exc:
        _record_failure(job, exc)
        raise
    for index, answer in zip(pending, answers, strict=True):
        results[index] = answer
    final = [r for r in results if r is not None]
    _save_meta(job, results=final)
    retry = [r for r in final if _retry_answer(r)]
    if retry:
        # RQ retries the job for these; once retries run out the job fails,
        # so requeue-failed can send them later (the answers stay in meta).
        raise BatchIncomplete(
            f"{len(retry)} of {len(payloads)} emails got an internal error"
        )
    return final


def _retry_answer(answer: t.Mapping[str, t.Any]) -> bool:
    return "id" not in answer and is_retryable(answer_error(answer))


def _context(job: Job | None) -> pipeline.Context:
    inline = pipeline.active_context()
    if inline is not None:
        # Eager mode or poststack_queue.run(): the app's client and outbox,
        # but the signals as a worker sends them (sender None).
        return dataclasses.replace(inline, sender=None, job=job)
    # Suppression is read from the environment inside the pipeline, so that
    # a bad POSTSTACK_* value fails (and is logged) like any send.
    return pipeline.Context(sender=None, slot=worker_slot(), suppressed=None, job=job)


def _save_meta(job: t.Any, *, defer: bool = False, **meta: t.Any) -> None:
    """Write ``meta`` into the job's meta (``None`` removes a key); with
    ``defer``, with the job's success when sender threads finish it."""
    if job is None:
        return
    for key, value in meta.items():
        if value is None:
            job.meta.pop(key, None)
        else:
            job.meta[key] = value
    if not (defer and defer_meta(job)):
        job.save_meta()


def _record_failure(job: t.Any, exc: Exception) -> None:
    """Record a failure on the job, and set its retry as the policy says."""
    if job is None:
        return
    fields = error_fields(exc)
    retryable = is_retryable(exc)
    set_retry(job, retry=retryable, wait_at_least=fields["retry_after"])
    _save_meta(job, poststack_error={**fields, "retryable": retryable})


def set_retry(job: t.Any, *, retry: bool, wait_at_least: float | None = None) -> None:
    """Tell rq how to retry ``job`` after this failure: not at all
    (``retry=False``), or not before ``wait_at_least`` seconds.

    rq reads ``retries_left`` and ``retry_intervals`` from this same job
    object when it handles the failure; this is the one place that writes them.
    """
    if not retry:
        job.retries_left = 0
        return
    if not wait_at_least or not job.retries_left or not job.retry_intervals:
        return
    intervals = list(job.retry_intervals)
    index = max(len(intervals) - job.retries_left, 0)
    intervals[index] = max(intervals[index], math.ceil(wait_at_least))
    job.retry_intervals = intervals
