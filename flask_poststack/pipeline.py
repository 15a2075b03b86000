"""The one path every email takes, from every entry point.

``send_email``, ``send_batch``, the enqueue functions and the RQ jobs all
come here. This is the only code that

- fires ``before_send`` (:func:`prepare`: once per email, in the app, before
  it is sent or queued; never again in the worker);
- fires ``email_enqueued`` once the email is in Redis;
- fires Flask-Mail's ``email_dispatched`` for :mod:`flask_poststack.flask_mail`;
- fires ``email_sent`` and ``email_failed``, and keeps a raising receiver
  of either from changing what happened to the email (an accepted email
  stays accepted, a failure is retried or not as the policy says);
- logs a failed send, in one format (:func:`log_failure`);
- captures instead of sending while sending is suppressed;
- raises the failures queued by ``testing.fail_next``;
- refuses to send a job with another app's API key.

It takes one :class:`Context`: the app's (``send_email``, eager jobs) or
the worker's (a job in an ``rq worker``).
"""

from __future__ import annotations

import contextlib
import contextvars
import copy
import dataclasses
import json
import logging
import typing as t
from collections.abc import Mapping
from collections.abc import Sequence

from poststack import PostStackError

from . import _coalesce
from . import signals
from ._keyprint import check_key
from .results import SendResult
from .retry import answer_error
from .retry import error_fields
from .retry import is_retryable

if t.TYPE_CHECKING:
    from rq.job import Job

    from .client import ClientSlot

__all__ = [
    "Context",
    "dispatched",
    "enqueued",
    "log_failure",
    "prepare",
    "send_many",
    "send_one",
    "send_one_async",
]

logger = logging.getLogger("flask_poststack")

_Payload = dict[str, t.Any]


@dataclasses.dataclass(frozen=True)
class Context:
    """Where a send happens."""

    #: The signals' sender: the app, or ``None`` in a worker.
    sender: t.Any
    #: The SDK client (used only for a real send) and the test failures.
    slot: ClientSlot
    #: Capture instead of sending; ``None``: as the slot's settings say.
    suppressed: bool | None
    #: Where captured payloads go (the app's outbox).
    outbox: list[_Payload] | None = None
    #: The RQ job being run, if any: its retries decide ``will_retry``.
    job: Job | None = None
    #: Whether rq retries the job after a failure: not when it runs inline.
    retries: bool = True

    def is_suppressed(self) -> bool:
        """Whether to capture instead of sending."""
        if self.suppressed is None:
            return bool(self.slot.settings.suppress_send)
        return self.suppressed

    def will_retry(self, exc: BaseException) -> bool:
        """Whether this failure will be tried again: a job with retries left."""
        return (
            self.retries
            and self.job is not None
            and bool(self.job.retries_left)
            and is_retryable(exc)
        )


_active: contextvars.ContextVar[Context | None] = contextvars.ContextVar(
    "flask_poststack_context", default=None
)


@contextlib.contextmanager
def running_in(context: Context) -> t.Iterator[None]:
    """Run jobs inline in ``context`` (eager mode, ``poststack_queue.run()``)."""
    token = _active.set(context)
    try:
        yield
    finally:
        _active.reset(token)


def active_context() -> Context | None:
    """The context set by :func:`running_in`, if any."""
    return _active.get()


def prepare(sender: t.Any, payloads: Sequence[_Payload]) -> None:
    """Fire ``before_send`` for each email, before it is sent or queued.

    Receivers may change a payload in place, or raise ``SendCancelled``.
    """
    for payload in payloads:
        signals.before_send.send(sender, payload=payload)


def enqueued(sender: t.Any, jobs: Sequence[tuple[_Payload, Job]]) -> None:
    """Fire ``email_enqueued`` for each email now in Redis, with its job.

    A receiver that raises is logged and ignored: the email is queued, and
    an error here would invite a fallback send of an email already queued.
    """
    for payload, job in jobs:
        try:
            signals.email_enqueued.send(sender, payload=payload, job=job)
        except Exception:
            logger.exception("An email_enqueued receiver failed for job %s", job.id)


def dispatched(sender: t.Any, message: t.Any) -> None:
    """Fire Flask-Mail's ``email_dispatched`` for a message sent or queued by
    :mod:`flask_poststack.flask_mail`. A receiver that raises is logged and
    ignored, as for ``email_sent``: the email is gone.
    """
    try:
        signals.email_dispatched.send(sender, message=message)
    except Exception:
        logger.exception("An email_dispatched receiver failed")


def send_one(context: Context, payload: _Payload) -> SendResult:
    """Send ``payload`` (or capture it) and fire ``email_sent`` / ``email_failed``.

    :raises poststack.PostStackError: the API's error after the SDK's
        retries (a 502 ``invalid_response`` for an unreadable 2xx), or a
        network or configuration error; logged first.
    """
    try:
        context.slot.faults.raise_next()
        if context.is_suppressed():
            result = _capture(context, [payload])[0]
        else:
            client = _client(context)
            answer = _read_answer(lambda: _coalesce.send(client, payload))
            result = _accepted(answer)
    except Exception as exc:
        _failed(context, payload, exc)
        raise
    _sent(context, payload, result)
    return result


async def send_one_async(
    context: Context,
    payload: _Payload,
    send: t.Callable[[_Payload], t.Awaitable[t.Any]],
) -> SendResult:
    """:func:`send_one` for async code: ``await send(body)`` is the SDK's
    ``AsyncPostStack.emails.send``. Same capture, signals and errors."""
    try:
        context.slot.faults.raise_next()
        if context.is_suppressed():
            result = _capture(context, [payload])[0]
        else:
            try:
                answer = await send(dict(payload))
            except (json.JSONDecodeError, UnicodeDecodeError):
                raise _invalid_response("is not JSON") from None
            result = _accepted(_read_answer(lambda: answer))
    except Exception as exc:
        _failed(context, payload, exc)
        raise
    _sent(context, payload, result)
    return result


def _accepted(answer: Mapping[str, t.Any]) -> SendResult:
    if not isinstance(answer.get("id"), str):
        raise _invalid_response("has no email id")
    return SendResult.from_response(answer)


def send_many(context: Context, payloads: Sequence[_Payload]) -> list[dict[str, t.Any]]:
    """Send ``payloads`` with one ``POST /emails/batch``; one answer each.

    An answer is ``{"id": ...}`` for an accepted email, ``{"error", "code"}``
    for a refused one. ``email_sent`` / ``email_failed`` fire per email.

    :raises poststack.PostStackError: or a network error, when the request
        as a whole failed; every email of it is logged and signalled failed.
    """
    try:
        context.slot.faults.raise_next()
        if context.is_suppressed():
            results = _capture(context, payloads)
            answers = [dict(r.response) for r in results]
        else:
            client = _client(context)
            body = {"emails": list(payloads)}
            response = _read_answer(lambda: client.emails.batch(body))
            data = response.get("data")
            if (
                not isinstance(data, list)
                or len(data) != len(payloads)
                or not all(isinstance(answer, Mapping) for answer in data)
            ):
                raise _invalid_response("does not match the batch")
            answers = [dict(answer) for answer in data]
    except Exception as exc:
        for payload in payloads:
            _failed(context, payload, exc)
        raise
    for payload, answer in zip(payloads, answers, strict=True):
        if "id" in answer:
            _sent(context, payload, SendResult.from_response(answer))
        else:
            _failed(context, payload, answer_error(answer))
    return answers


def _client(context: Context) -> t.Any:
    """The client for a real send; a job queued with another app's key is
    refused here (:mod:`._keyprint`)."""
    client = context.slot.for_send()
    check_key(context.job, context.slot.settings.api_key)
    return client


def _capture(context: Context, payloads: Sequence[_Payload]) -> list[SendResult]:
    if context.outbox is not None:
        context.outbox.extend(copy.deepcopy(p) for p in payloads)
    return [SendResult.suppressed_result() for _ in payloads]


def _sent(context: Context, payload: _Payload, result: SendResult) -> None:
    try:
        signals.email_sent.send(
            context.sender, payload=payload, result=result, job=context.job
        )
    except Exception:
        # The API has the email: a receiver's bug must not make it look failed
        # (and, in a worker, must not get it retried).
        logger.exception("An email_sent receiver failed for email %s", result.id)


def _failed(context: Context, payload: _Payload, exc: Exception) -> None:
    will_retry = context.will_retry(exc)
    log_failure(payload, exc, job=context.job, will_retry=will_retry)
    try:
        signals.email_failed.send(
            context.sender,
            payload=payload,
            exception=exc,
            job=context.job,
            will_retry=will_retry,
        )
    except Exception:
        # The failure stands as it is: a receiver's bug must not change how
        # it is retried (or make the rest of a batch look failed and resent).
        logger.exception("An email_failed receiver failed")


def log_failure(
    payload: Mapping[str, t.Any],
    exc: BaseException,
    *,
    job: Job | None = None,
    will_retry: bool = False,
) -> None:
    """Log one failed send, as one line: status, code, request id,
    idempotency key, job id, whether it will be retried, the error.

    The same facts are in the record's ``extra["poststack"]``. Never the API
    key, never the body.
    """
    fields = error_fields(exc)
    facts = {
        **fields,
        "idempotency_key": payload.get("idempotency_key"),
        "job_id": job.id if job is not None else None,
        "will_retry": will_retry,
    }
    logger.log(
        logging.WARNING if will_retry else logging.ERROR,
        "PostStack send failed: status=%s code=%s request_id=%s"
        " idempotency_key=%s job=%s retry=%s: %s",
        facts["status"],
        facts["code"],
        facts["request_id"],
        facts["idempotency_key"],
        facts["job_id"],
        "yes" if will_retry else "no",
        facts["error"],
        extra={"poststack": facts},
    )


def _read_answer(call: t.Callable[[], t.Any]) -> Mapping[str, t.Any]:
    # The SDK hands back whatever a 2xx carried: an empty or non-JSON body
    # raises or comes back as None or text. The request may have been
    # processed, so this is a 502 (retryable): a retry with the same
    # idempotency key gets the stored answer, a replay.
    try:
        answer = call()
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise _invalid_response("is not JSON") from None
    if not isinstance(answer, Mapping):
        raise _invalid_response("is not a JSON object")
    return answer


def _invalid_response(problem: str) -> PostStackError:
    return PostStackError(
        502,
        f"The API accepted the request, but its answer {problem}. It may have"
        " been processed: retry with the same idempotency key to get a replay.",
        code="invalid_response",
    )
