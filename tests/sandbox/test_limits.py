"""Throttling (token bucket) and quotas, both off by default."""

from __future__ import annotations

import time

import pytest
from poststack import PostStack
from poststack import PostStackError

from flask_poststack.sandbox import Sandbox

from .conftest import LIVE_KEY
from .conftest import message
from .conftest import TEST_KEY


def test_off_by_default(sandbox: Sandbox, live_client: PostStack) -> None:
    for _ in range(30):
        live_client.emails.send(message())
    assert sandbox.stats["emails_created"] == 30


def test_throttle_429_shape(sandbox: Sandbox) -> None:
    # One token every 10 s: Retry-After is what is left of those 10 s,
    # rounded up (9 if the three sends took over a second).
    sandbox.configure(throttle_rate=0.1, throttle_burst=2)
    with PostStack(TEST_KEY, base_url=sandbox.base_url, max_retries=0) as client:
        client.emails.send(message())
        client.emails.send(message())
        with pytest.raises(PostStackError) as info:
            client.emails.send(message())
    error = info.value
    assert error.status_code == 429 and error.code == "rate_limit_exceeded"
    assert error.error == "Too many requests"
    assert error.headers["retry-after"] in {"9", "10"}
    assert error.retry_after == float(error.headers["retry-after"])
    assert error.headers["x-ratelimit-limit"] == "2"
    assert error.headers["x-ratelimit-remaining"] == "0"
    assert int(error.headers["x-ratelimit-reset"]) >= int(time.time())
    assert sandbox.stats["throttled"] == 1


def test_throttle_is_honoured_by_the_sdk(sandbox: Sandbox, client: PostStack) -> None:
    sandbox.configure(throttle_rate=1, throttle_burst=1)
    started = time.monotonic()
    first = client.emails.send(message())
    second = client.emails.send(message())
    assert time.monotonic() - started >= 0.9  # Retry-After: 1, slept by the SDK
    assert first["id"] != second["id"]
    assert [r["status"] for r in sandbox.requests] == [202, 429, 202]
    assert sorted(sandbox.stats["attempts_by_idempotency_key"].values()) == [1, 2]


def test_throttle_buckets_are_per_key(sandbox: Sandbox) -> None:
    sandbox.configure(throttle_rate=0.1, throttle_burst=1)
    with (
        PostStack(TEST_KEY, base_url=sandbox.base_url, max_retries=0) as one,
        PostStack(LIVE_KEY, base_url=sandbox.base_url, max_retries=0) as two,
    ):
        one.emails.send(message())
        two.emails.send(message())
        with pytest.raises(PostStackError):
            one.emails.send(message())


@pytest.mark.parametrize(
    ("setting", "code"),
    [
        ("monthly_quota", "monthly_limit_exceeded"),
        ("daily_quota", "daily_limit_exceeded"),
    ],
)
def test_quota(
    sandbox: Sandbox, live_client: PostStack, setting: str, code: str
) -> None:
    sandbox.configure(**{setting: 2})
    live_client.emails.send(message())
    live_client.emails.send(message())
    with pytest.raises(PostStackError) as info:
        live_client.emails.send(message())
    assert info.value.status_code == 429 and info.value.code == code
    assert "retry-after" not in info.value.headers
    assert sandbox.requests[-1]["status"] == 429
    assert len(sandbox.requests) == 3  # raised at once, not retried
    assert sandbox.stats["emails_created"] == 2


def test_quota_spares_test_keys_and_replays(
    sandbox: Sandbox, client: PostStack
) -> None:
    sandbox.configure(monthly_quota=1)
    with PostStack(LIVE_KEY, base_url=sandbox.base_url) as live:
        live.emails.send(message(idempotency_key="k"))
        assert live.emails.send(message(idempotency_key="k"))["replayed"] is True
    for _ in range(3):
        client.emails.send(message())
    assert sandbox.stats["emails_created"] == 4


def test_quota_legacy_code(sandbox: Sandbox, live_client: PostStack) -> None:
    sandbox.configure(monthly_quota=0, quota_legacy_code=True)
    with pytest.raises(PostStackError) as info:
        live_client.emails.send(message())
    assert info.value.code == "rate_limit_exceeded"
    assert info.value.retry_after is None
    assert len(sandbox.requests) == 1  # a code and no Retry-After: raised at once


def test_quota_in_a_batch_refuses_per_element(
    sandbox: Sandbox, live_client: PostStack
) -> None:
    sandbox.configure(daily_quota=2)
    result = live_client.emails.batch({"emails": [message()] * 3})
    assert [set(r) for r in result["data"]] == [{"id"}, {"id"}, {"error", "code"}]
    assert result["data"][2]["code"] == "daily_limit_exceeded"
