"""The one path every email takes to the API, from the app and from workers.

:func:`dispatch` runs ``before_send``, then sends with :func:`deliver` or,
when sending is suppressed, captures; then it sends ``email_sent`` or
``email_failed``. ``send_email`` and the RQ task both call it, so both fire
the same signals and honour the same test hooks.
"""

from __future__ import annotations

import collections
import copy
import dataclasses
import json
import logging
import secrets
import threading
import typing as t
from collections.abc import Mapping

import poststack
from poststack import PostStackError

from . import signals

if t.TYPE_CHECKING:
    from flask import Flask

__all__ = ["SendResult", "deliver", "dispatch", "error_fields"]

logger = logging.getLogger("flask_poststack")

#: Quota codes: the limit resets on a calendar boundary, so a retry in
#: seconds or minutes cannot succeed. Same set as the SDK's.
QUOTA_CODES = frozenset(
    {
        "quota_exceeded",
        "monthly_limit_exceeded",
        "daily_limit_exceeded",
        "daily_cap_exceeded",
        "send_limit_exceeded",
    }
)


@dataclasses.dataclass(frozen=True)
class SendResult:
    """What the API answered to one send."""

    #: The email's id, ``"em_..."``. Suppressed sends get ``"em_suppressed_..."``.
    id: str
    #: True when the idempotency key matched an earlier send: nothing new was sent.
    replayed: bool = False
    #: True when the API key was a test key (``sk_test_...``).
    test_mode: bool = False
    #: True when sending was suppressed and nothing went on the network.
    suppressed: bool = False
    #: The API's response body, as the SDK returned it.
    response: Mapping[str, t.Any] = dataclasses.field(default_factory=dict)

    @classmethod
    def from_response(cls, response: Mapping[str, t.Any]) -> SendResult:
        """Build a result from a ``POST /emails`` response body."""
        return cls(
            id=str(response["id"]),
            replayed=bool(response.get("replayed", False)),
            test_mode=bool(response.get("test_mode", False)),
            response=dict(response),
        )

    @classmethod
    def suppressed_result(cls) -> SendResult:
        """A result for a send that was captured instead of sent."""
        fake_id = f"em_suppressed_{secrets.token_hex(8)}"
        return cls(id=fake_id, suppressed=True, response={"id": fake_id})


def deliver(client: poststack.PostStack, payload: Mapping[str, t.Any]) -> SendResult:
    """Send one wire payload with ``client``; the one place that calls the API.

    :raises poststack.PostStackError: unchanged, when the API refuses it; a
        502 ``invalid_response`` when it accepted it with an unreadable answer.
    """
    answer = read_answer(lambda: client.emails.send(dict(payload)))
    if not isinstance(answer.get("id"), str):
        raise invalid_response("has no email id")
    return SendResult.from_response(answer)


def read_answer(call: t.Callable[[], t.Any]) -> Mapping[str, t.Any]:
    """``call()``'s answer, which must be a JSON object.

    The SDK hands back whatever a 2xx carried: an empty or non-JSON body
    raises :exc:`json.JSONDecodeError` or comes back as ``None`` or text. The
    request may have been processed, so this is a 502 (retryable): a retry
    with the same idempotency key gets the stored answer, a replay.
    """
    try:
        answer = call()
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise invalid_response("is not JSON") from None
    if not isinstance(answer, Mapping):
        raise invalid_response("is not a JSON object")
    return answer


def invalid_response(problem: str) -> PostStackError:
    """The error for a 2xx answer that cannot be used."""
    return PostStackError(
        502,
        f"The API accepted the request, but its answer {problem}. It may have"
        " been processed: retry with the same idempotency key to get a replay.",
        code="invalid_response",
    )


def error_fields(exc: BaseException) -> dict[str, t.Any]:
    """The loggable facts of a failed send: never the key, never the body."""
    if isinstance(exc, PostStackError):
        return {
            "status": exc.status_code,
            "code": exc.code,
            "request_id": exc.request_id,
            "error": exc.error,
            "retry_after": exc.retry_after,
        }
    return {"status": None, "code": type(exc).__name__, "request_id": None,
            "error": str(exc), "retry_after": None}  # fmt: skip


def dispatch(
    payload: dict[str, t.Any],
    *,
    sender: Flask | None,
    get_client: t.Callable[[], poststack.PostStack],
    suppressed: bool,
    outbox: list[dict[str, t.Any]] | None = None,
    on_failure: t.Callable[[Exception], Mapping[str, t.Any]],
) -> SendResult:
    """Send ``payload`` (or capture it), with the signals around it.

    :param sender: the app, or ``None`` in a worker; the signals' sender.
    :param get_client: called only when the email really goes out.
    :param suppressed: capture instead of sending.
    :param outbox: where captured payloads are appended.
    :param on_failure: called with the exception before ``email_failed`` is
        sent; logs it and returns extra keyword arguments for the signal.
    :raises SendCancelled: when a ``before_send`` receiver cancels.
    """
    signals.before_send.send(sender, payload=payload)
    try:
        raise_injected_failure()
        if suppressed:
            result = SendResult.suppressed_result()
            if outbox is not None:
                outbox.append(copy.deepcopy(payload))
        else:
            result = deliver(get_client(), payload)
    except Exception as exc:
        extra = on_failure(exc)
        signals.email_failed.send(sender, payload=payload, exception=exc, **extra)
        raise
    try:
        signals.email_sent.send(sender, payload=payload, result=result)
    except Exception:
        # The API has the email: a receiver's bug must not make it look failed
        # (and, in a worker, must not get it retried).
        logger.exception("An email_sent receiver failed for email %s", result.id)
    return result


# Failures queued by flask_poststack.testing.fail_next(). Test tooling: it is
# process-wide on purpose, so it reaches sends made in any app or job.
_injected: collections.deque[Exception] = collections.deque()
_injected_lock = threading.Lock()


def raise_injected_failure() -> None:
    """Raise the next failure queued by ``testing.fail_next()``, if any."""
    with _injected_lock:
        exc = _injected.popleft() if _injected else None
    if exc is not None:
        raise exc
