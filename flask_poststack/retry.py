"""The retry policy: the one place that sorts a failure into retry or fail.

Sorted after the SDK's own retries: network errors, 408, 409, 5xx and
throttling 429s are worth retrying; other 4xx and quota 429s are not. For a
batch, each refused email's answer is sorted the same way, as the error a
single send of it would have raised (:func:`answer_error`).
"""

from __future__ import annotations

import typing as t
from collections.abc import Mapping

import httpx
from poststack import PostStackError

from .errors import FlaskPostStackError

__all__ = ["QUOTA_CODES", "answer_error", "error_fields", "is_retryable"]

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


def is_retryable(exc: BaseException) -> bool:
    """Whether sending again later can help.

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


def answer_error(answer: Mapping[str, t.Any]) -> PostStackError:
    """The error of one refused email of a batch, as a single send raises it.

    A 429 for quota codes, 500 for ``internal_error``, else 422. On one email
    of a batch ``rate_limit_exceeded`` is a quota too: a throttle refuses a
    whole request (a 429 with ``Retry-After``), so that code here is the
    API's pre-0.14 quota code, which waiting does not lift.
    """
    code = answer.get("code")
    quota = code in QUOTA_CODES or code == "rate_limit_exceeded"
    return PostStackError(
        status_code=429 if quota else 500 if code == "internal_error" else 422,
        error=str(answer.get("error") or "Refused"),
        code=code,
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
