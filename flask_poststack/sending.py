"""Sending now, from a view: :func:`send_email` and :func:`send_batch`.

Both validate and render in the app (:mod:`~flask_poststack.message`), then
hand the payloads to the one pipeline with the app's context.
"""

from __future__ import annotations

import typing as t
from collections.abc import Iterator
from collections.abc import Sequence

import httpx
from poststack import PostStackError

from . import pipeline
from ._state import get_state
from .message import build_all
from .message import build_payload
from .results import BatchItem
from .results import SendResult
from .retry import error_fields

if t.TYPE_CHECKING:
    from typing_extensions import Unpack

    from .message import EmailArgs

__all__ = ["BATCH_LIMIT", "chunks", "send_batch", "send_email", "send_email_async"]

#: The API's limit on emails per ``POST /emails/batch``.
BATCH_LIMIT = 100


def send_email(**args: Unpack[EmailArgs]) -> SendResult:
    """Send an email now, with the current app's client, and return the result.

    Needs an app context. Takes the :class:`~flask_poststack.message.EmailArgs`
    (described in :doc:`/sending`); everything is validated before any
    network call. When ``POSTSTACK_SUPPRESS_SEND`` is true (by default, when
    ``app.testing`` is) nothing is sent: the payload is appended to the app's
    outbox and a result with a fake ``em_suppressed_...`` id is returned.

    :raises InvalidEmailError: (a :exc:`ValueError`) naming the bad argument.
    :raises ConfigurationError: naming ``POSTSTACK_API_KEY`` when no key is set.
    :raises poststack.PostStackError: the API's error, unchanged, after the
        SDK's own retries.
    """
    state = get_state()
    payload = dict(build_payload(state.settings, args))
    pipeline.prepare(state.app, [payload])
    return pipeline.send_one(state.send_context(), payload)


async def send_email_async(**args: Unpack[EmailArgs]) -> SendResult:
    """:func:`send_email` for ``async def`` views: ``await`` it.

    The same arguments, validation, signals, suppression and result; the
    request goes out with ``poststack.AsyncPostStack``, one client per event
    loop, reused for the loop's life and closed when the loop shuts down
    (see :doc:`/sending`). Needs an app context.

    :raises InvalidEmailError: naming the bad argument.
    :raises ConfigurationError: naming ``POSTSTACK_API_KEY`` when no key is set.
    :raises poststack.PostStackError: the API's error, after the SDK's retries.
    """
    state = get_state()
    payload = dict(build_payload(state.settings, args))
    pipeline.prepare(state.app, [payload])
    clients = state.loop_clients

    async def send(body: dict[str, t.Any]) -> t.Any:
        client = await clients.for_send()
        return await client.emails.send(body)

    return await pipeline.send_one_async(state.send_context(), payload, send)


def send_batch(messages: Sequence[EmailArgs]) -> list[BatchItem]:
    """Send many emails now, in requests of at most 100.

    Each message is a mapping of :class:`~flask_poststack.message.EmailArgs`.
    A request that fails after the SDK's retries marks its emails with the
    error instead of raising, so the others still go; resend the failed ones
    with their ``idempotency_key``.

    :raises InvalidEmailError: naming the message and argument, e.g.
        ``messages[3].to``; nothing is sent.
    :raises ConfigurationError: naming ``POSTSTACK_API_KEY`` when no key is
        set; nothing is sent.
    """
    state = get_state()
    payloads = build_all(state.settings, messages)
    pipeline.prepare(state.app, payloads)
    context = state.send_context()
    if not context.is_suppressed():
        context.slot.for_send()  # a missing key fails before any request
    items: list[BatchItem] = []
    for chunk in chunks(payloads):
        try:
            answers = pipeline.send_many(context, chunk)
        except (PostStackError, httpx.TransportError) as exc:
            fields = error_fields(exc)
            answers = [{"error": fields["error"], "code": fields["code"]}] * len(chunk)
        start = len(items)
        items.extend(
            BatchItem.from_answer(start + n, payload["idempotency_key"], answer)
            for n, (payload, answer) in enumerate(zip(chunk, answers, strict=True))
        )
    return items


def chunks(
    payloads: Sequence[dict[str, t.Any]], size: int = BATCH_LIMIT
) -> Iterator[list[dict[str, t.Any]]]:
    """``payloads`` in order, ``size`` at a time."""
    for start in range(0, len(payloads), size):
        yield list(payloads[start : start + size])
