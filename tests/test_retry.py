"""The retry policy: which failures are worth another try."""

from __future__ import annotations

import httpx
import pytest
from poststack import PostStackError

from flask_poststack import ConfigurationError
from flask_poststack import InvalidEmailError
from flask_poststack.retry import answer_error
from flask_poststack.retry import is_retryable


def api_error(
    status: int, code: str | None, retry_after: float | None = None
) -> PostStackError:
    return PostStackError(status, "refused", code=code, retry_after=retry_after)


@pytest.mark.parametrize(
    ("exc", "retry"),
    [
        (httpx.ConnectError("down"), True),
        (httpx.ReadTimeout("slow"), True),
        (api_error(408, "timeout"), True),
        (api_error(409, "conflict"), True),
        (api_error(500, "internal_error"), True),
        (api_error(502, "invalid_response"), True),
        (api_error(503, None), True),
        (api_error(429, "rate_limit_exceeded", retry_after=2), True),
        (api_error(429, None), True),  # a bare 429: a proxy's throttle
        (api_error(429, "rate_limit_exceeded"), False),  # no Retry-After: a quota
        (api_error(429, "monthly_limit_exceeded", retry_after=60), False),
        (api_error(429, "daily_limit_exceeded"), False),
        (api_error(400, "invalid_request"), False),
        (api_error(401, "unauthorized"), False),
        (api_error(422, "unprocessable_entity"), False),
        (ConfigurationError("POSTSTACK_API_KEY", "missing"), False),
        (InvalidEmailError("to", "bad"), False),
        (TypeError("not JSON serialisable"), False),
        (RuntimeError("unknown"), True),  # bounded retries, to lose nothing
    ],
)
def test_is_retryable(exc: BaseException, retry: bool) -> None:
    assert is_retryable(exc) is retry


@pytest.mark.parametrize(
    ("code", "status", "retry"),
    [
        ("internal_error", 500, True),
        ("rate_limit_exceeded", 429, False),  # on one email: the legacy quota
        ("monthly_limit_exceeded", 429, False),
        ("unprocessable_entity", 422, False),
        (None, 422, False),
    ],
)
def test_a_refused_batch_email_is_sorted_as_its_single_send(
    code: str | None, status: int, retry: bool
) -> None:
    error = answer_error({"error": "refused", "code": code})
    assert error.status_code == status
    assert is_retryable(error) is retry
