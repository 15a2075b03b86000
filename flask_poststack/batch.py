"""Bulk sending: many emails in few requests and few Redis round trips.

- :func:`send_batch` sends now, through ``POST /emails/batch`` (at most 100
  emails a request), and returns one :class:`BatchItem` per email.
- :func:`enqueue_batch` queues one job per 100 emails, in one Redis round
  trip; the worker sends each chunk as one batch request.
- :func:`enqueue_many` queues one ordinary job per email, in one round trip.

Every email is validated (and rendered) before anything is sent or queued,
and carries its own idempotency key, so a retried request or job replays the
emails the API already accepted instead of sending them twice.
"""

from __future__ import annotations

import copy
import dataclasses
import typing as t
from collections.abc import Mapping
from collections.abc import Sequence

import httpx
from flask import current_app
from flask import Flask
from poststack import PostStackError

from . import signals
from .delivery import error_fields
from .delivery import invalid_response
from .delivery import QUOTA_CODES
from .delivery import raise_injected_failure
from .delivery import read_answer
from .delivery import SendResult
from .errors import InvalidEmailError
from .extension import app_client
from .extension import get_state
from .extension import is_suppressed
from .message import build_payload
from .sending import app_queue
from .sending import check_queue_options
from .sending import job_options
from .sending import new_key
from .sending import queue_errors
from .sending import TASK

if t.TYPE_CHECKING:
    import poststack
    from rq.job import Job

__all__ = ["BATCH_LIMIT", "BatchItem", "enqueue_batch", "enqueue_many", "send_batch"]

#: The API's limit on emails per ``POST /emails/batch``.
BATCH_LIMIT = 100
BATCH_TASK = "flask_poststack.tasks.send_batch_payloads"

#: Per-email error codes in a batch answer that a later retry can fix. Not
#: ``rate_limit_exceeded``: a throttle refuses a whole request (a 429 with
#: ``Retry-After``), so on one email of a batch that code is the API's
#: pre-0.14 quota code, which waiting does not lift.
RETRYABLE_CODES = frozenset({"internal_error"})


@dataclasses.dataclass(frozen=True)
class BatchItem:
    """The outcome of one email of a batch, in input order."""

    #: The email's position in the ``messages`` given.
    index: int
    #: Its idempotency key: resend with it and the API won't send it twice.
    idempotency_key: str
    #: The email's id when the API accepted it.
    id: str | None = None
    #: True when the key matched an earlier send.
    replayed: bool = False
    #: Why it was refused, and the API's code (e.g. a quota code).
    error: str | None = None
    code: str | None = None

    @property
    def ok(self) -> bool:
        """Whether the API accepted this email."""
        return self.id is not None


def send_batch(messages: Sequence[Mapping[str, t.Any]]) -> list[BatchItem]:
    """Send many emails now, in requests of at most 100.

    Each message is a mapping of :func:`~flask_poststack.send_email`
    arguments. A request that fails after the SDK's retries marks its emails
    with the error instead of raising, so the others still go; resend the
    failed ones with their ``idempotency_key``.

    :raises InvalidEmailError: naming the message and argument, e.g.
        ``messages[3].to``; nothing is sent.
    """
    app: Flask = current_app._get_current_object()  # type: ignore[attr-defined]
    payloads = _build_all(app, messages)
    state = get_state(app)
    client = None if is_suppressed(app) else app_client(app)
    items: list[BatchItem] = []
    for chunk in chunks(payloads):
        try:
            if client is None:  # suppressed
                answers = capture_chunk(chunk, sender=app, outbox=state.outbox)
            else:
                answers = send_chunk(client, chunk, sender=app)
        except (PostStackError, httpx.TransportError) as exc:
            for payload in chunk:
                signals.email_failed.send(app, payload=payload, exception=exc)
            fields = error_fields(exc)
            answers = [{"error": fields["error"], "code": fields["code"]}] * len(chunk)
        start = len(items)
        items.extend(
            _answer_item(start + n, payload, answer)
            for n, (payload, answer) in enumerate(zip(chunk, answers, strict=True))
        )
    return items


def send_chunk(
    client: poststack.PostStack,
    payloads: Sequence[dict[str, t.Any]],
    *,
    sender: Flask | None,
) -> list[dict[str, t.Any]]:
    """One ``POST /emails/batch``; the API's per-email answers, in order.

    ``email_sent`` fires for each accepted email and ``email_failed`` for
    each refused one (with a :exc:`~poststack.PostStackError` built from the
    answer: 429 for quota codes, 500 for ``internal_error``, else 422, as for
    a single send).

    :raises poststack.PostStackError: or a network error, when the request
        as a whole failed (after the SDK's retries).
    """
    raise_injected_failure()
    response = read_answer(lambda: client.emails.batch({"emails": list(payloads)}))
    answers = response.get("data")
    if (
        not isinstance(answers, list)
        or len(answers) != len(payloads)
        or not all(isinstance(answer, Mapping) for answer in answers)
    ):
        raise invalid_response("does not match the batch")
    for payload, answer in zip(payloads, answers, strict=True):
        if "id" in answer:
            result = SendResult.from_response(answer)
            signals.email_sent.send(sender, payload=payload, result=result)
        else:
            signals.email_failed.send(
                sender, payload=payload, exception=answer_error(answer)
            )
    return answers


def capture_chunk(
    payloads: Sequence[dict[str, t.Any]],
    *,
    sender: Flask | None,
    outbox: list[dict[str, t.Any]] | None,
) -> list[dict[str, t.Any]]:
    """What :func:`send_chunk` does when sending is suppressed: record, don't send."""
    raise_injected_failure()
    answers = []
    for payload in payloads:
        result = SendResult.suppressed_result()
        if outbox is not None:
            outbox.append(copy.deepcopy(payload))
        signals.email_sent.send(sender, payload=payload, result=result)
        answers.append(dict(result.response))
    return answers


def answer_error(answer: Mapping[str, t.Any]) -> PostStackError:
    """The error of one refused email of a batch, as a single send raises it
    (``rate_limit_exceeded`` here is a quota: see :data:`RETRYABLE_CODES`)."""
    code = answer.get("code")
    quota = code in QUOTA_CODES or code == "rate_limit_exceeded"
    return PostStackError(
        status_code=429 if quota else 500 if code == "internal_error" else 422,
        error=str(answer.get("error") or "Refused"),
        code=code,
    )


def enqueue_batch(
    messages: Sequence[Mapping[str, t.Any]],
    *,
    queue: str | None = None,
    job_timeout: int | None = None,
    result_ttl: int | None = None,
    failure_ttl: int | None = None,
) -> list[Job]:
    """Queue many emails as one job per 100, in one Redis round trip.

    The worker sends each job's emails with one ``POST /emails/batch`` and
    records one answer per email in ``job.meta["results"]``. A retry (after a
    network error, a 5xx, or an email refused with ``internal_error``)
    resends only the emails without a final answer.

    :raises InvalidEmailError: naming the message and argument; nothing is
        queued.
    :raises QueueUnavailableError: when Redis cannot be reached; nothing is
        queued.
    """
    app: Flask = current_app._get_current_object()  # type: ignore[attr-defined]
    check_queue_options(queue, job_timeout, result_ttl, failure_ttl)
    payloads = _build_all(app, messages)
    settings = get_state(app).settings
    rq_queue = app_queue(app, queue)
    datas = []
    for chunk in chunks(payloads):
        label = f"{len(chunk)} emails from {chunk[0]['idempotency_key']}"
        options = job_options(
            settings,
            BATCH_TASK,
            chunk,
            label,
            job_timeout=job_timeout or settings.job_timeout * 2,
            result_ttl=result_ttl,
            failure_ttl=failure_ttl,
        )
        options["meta"] = {"idempotency_keys": [p["idempotency_key"] for p in chunk]}
        datas.append(_prepare(rq_queue, BATCH_TASK, options))
    with queue_errors(settings.redis_url):
        jobs: list[Job] = rq_queue.enqueue_many(datas)
    for job, chunk in zip(jobs, chunks(payloads), strict=True):
        for payload in chunk:
            signals.email_enqueued.send(app, payload=payload, job=job)
    return jobs


def enqueue_many(
    messages: Sequence[Mapping[str, t.Any]], *, queue: str | None = None
) -> list[Job]:
    """Queue one ordinary job per email, all in one Redis round trip.

    The jobs are the same as :func:`~flask_poststack.enqueue_email`'s.

    :raises InvalidEmailError: naming the message and argument; nothing is
        queued.
    """
    app: Flask = current_app._get_current_object()  # type: ignore[attr-defined]
    check_queue_options(queue, None, None, None)
    payloads = _build_all(app, messages)
    settings = get_state(app).settings
    rq_queue = app_queue(app, queue)
    datas = [
        _prepare(rq_queue, TASK, job_options(settings, TASK, p, p["idempotency_key"]))
        for p in payloads
    ]
    with queue_errors(settings.redis_url):
        jobs: list[Job] = rq_queue.enqueue_many(datas)
    for payload, job in zip(payloads, jobs, strict=True):
        signals.email_enqueued.send(app, payload=payload, job=job)
    return jobs


def chunks(
    payloads: Sequence[dict[str, t.Any]], size: int = BATCH_LIMIT
) -> t.Iterator[list[dict[str, t.Any]]]:
    """``payloads`` in order, ``size`` at a time."""
    for start in range(0, len(payloads), size):
        yield list(payloads[start : start + size])


def _build_all(app: Flask, messages: object) -> list[dict[str, t.Any]]:
    if isinstance(messages, (str, bytes, Mapping)) or not isinstance(
        messages, Sequence
    ):
        raise InvalidEmailError("messages", "must be a list of argument mappings.")
    if not messages:
        raise InvalidEmailError("messages", "must not be empty.")
    settings = get_state(app).settings
    payloads = []
    for index, message in enumerate(messages):
        where = f"messages[{index}]"
        if not isinstance(message, Mapping):
            raise InvalidEmailError(where, "must be a mapping of send_email arguments.")
        try:
            payload: dict[str, t.Any] = dict(build_payload(settings, **message))
        except InvalidEmailError as exc:
            raise InvalidEmailError(f"{where}.{exc.argument}", exc.message) from exc
        except TypeError as exc:  # an unknown argument name
            raise InvalidEmailError(where, str(exc)) from exc
        payload.setdefault("idempotency_key", new_key())
        payloads.append(payload)
    for payload in payloads:
        signals.before_send.send(app, payload=payload)
    return payloads


def _prepare(rq_queue: t.Any, task: str, options: dict[str, t.Any]) -> t.Any:
    return rq_queue.prepare_data(
        task,
        args=options["args"],
        kwargs=options["kwargs"],
        timeout=options["job_timeout"],
        result_ttl=options["result_ttl"],
        failure_ttl=options["failure_ttl"],
        description=options["description"],
        meta=options["meta"],
        retry=options["retry"],
    )


def _answer_item(
    index: int, payload: Mapping[str, t.Any], answer: Mapping[str, t.Any]
) -> BatchItem:
    key = payload["idempotency_key"]
    if "id" in answer:
        return BatchItem(index, key, id=str(answer["id"]),
                         replayed=bool(answer.get("replayed")))  # fmt: skip
    return BatchItem(
        index, key, error=str(answer.get("error")), code=answer.get("code")
    )
