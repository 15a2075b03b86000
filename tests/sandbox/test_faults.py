"""Each fault, and what the real SDK (0.9) does with it: the retry table."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time

import httpx
import pytest
from poststack import AsyncPostStack
from poststack import PostStack
from poststack import PostStackError

from flask_poststack.sandbox import Sandbox

from .conftest import message
from .conftest import TEST_KEY


def attempts(sandbox: Sandbox) -> list[int]:
    return list(sandbox.stats["attempts_by_idempotency_key"].values())


def test_503_503_then_202(sandbox: Sandbox, client: PostStack) -> None:
    sandbox.faults.sequence(
        [{"kind": "error", "status": 503, "retry_after": 0}] * 2 + ["pass"],
        method="POST",
        path="/emails",
    )
    result = client.emails.send(message())
    assert attempts(sandbox) == [3]
    assert [e.id for e in sandbox.emails] == [result["id"]]
    assert [r["status"] for r in sandbox.requests] == [503, 503, 202]


@pytest.mark.parametrize("status", [500, 502, 503, 504, 501, 521, 599, 408])
@pytest.mark.parametrize("body", ["json", "html"])
def test_retryable_statuses(
    sandbox: Sandbox, client: PostStack, status: int, body: str
) -> None:
    sandbox.faults.add("error", status=status, body=body, retry_after=0, times=1)
    client.emails.send(message())
    assert attempts(sandbox) == [2]
    assert len(sandbox.emails) == 1


def test_5xx_exhausts_four_attempts(sandbox: Sandbox, client: PostStack) -> None:
    sandbox.faults.add("error", status=502, body="html", retry_after=0)
    with pytest.raises(PostStackError) as info:
        client.emails.send(message())
    assert info.value.status_code == 502
    assert info.value.error == "Bad Gateway"  # the HTML body: the reason phrase
    assert attempts(sandbox) == [4]
    assert sandbox.emails == []


def test_5xx_without_retry_after_backs_off(sandbox: Sandbox, client: PostStack) -> None:
    sandbox.faults.add("error", status=500, times=1)
    client.emails.send(message())
    assert attempts(sandbox) == [2]
    assert sandbox.requests[0]["status"] == 500


def test_retry_after_over_60_raises_at_once(
    sandbox: Sandbox, client: PostStack
) -> None:
    sandbox.faults.add("error", status=503, retry_after=120)
    with pytest.raises(PostStackError) as info:
        client.emails.send(message())
    assert info.value.retry_after == 120
    assert attempts(sandbox) == [1]


def test_throttle_429_honours_retry_after(sandbox: Sandbox, client: PostStack) -> None:
    sandbox.faults.add("throttle", retry_after=1, times=1)
    started = time.monotonic()
    client.emails.send(message())
    assert time.monotonic() - started >= 0.95
    assert attempts(sandbox) == [2]
    first = sandbox.requests[0]
    assert first["status"] == 429 and first["fault"] == "throttle"


def test_throttle_429_shape(sandbox: Sandbox) -> None:
    sandbox.faults.add("throttle", retry_after=7)
    with (
        PostStack(TEST_KEY, base_url=sandbox.base_url, max_retries=0) as client,
        pytest.raises(PostStackError) as info,
    ):
        client.emails.send(message())
    assert info.value.code == "rate_limit_exceeded"
    assert info.value.headers["retry-after"] == "7"
    assert info.value.error == "Too Many Requests"


def test_fractional_retry_after_is_sent_as_written(sandbox: Sandbox) -> None:
    with httpx.Client(base_url=sandbox.base_url) as admin:
        added = admin.post(
            "/_sandbox/faults", json={"kind": "throttle", "retry_after": 1.5}
        )
        assert added.json()["faults"][0]["steps"][0]["retry_after"] == 1.5
    with (
        PostStack(TEST_KEY, base_url=sandbox.base_url, max_retries=0) as client,
        pytest.raises(PostStackError) as info,
    ):
        client.emails.send(message())
    assert (info.value.status_code, info.value.code) == (429, "rate_limit_exceeded")
    assert info.value.headers["retry-after"] == "1.5"
    assert info.value.retry_after == 1.5


def test_fractional_retry_after_is_honoured_by_the_python_sdk(
    sandbox: Sandbox, client: PostStack
) -> None:
    sandbox.faults.sequence([{"kind": "throttle", "retry_after": 0.5}, "pass"])
    started = time.monotonic()
    client.emails.send(message())
    assert time.monotonic() - started >= 0.45
    assert attempts(sandbox) == [2]


@pytest.mark.parametrize("bad", [-1, "1.5", True, float("nan"), float("inf")])
def test_retry_after_must_be_seconds(sandbox: Sandbox, bad: object) -> None:
    with pytest.raises(ValueError, match="retry_after"):
        sandbox.faults.add("throttle", retry_after=bad)


@pytest.mark.parametrize("code", ["monthly_limit_exceeded", "daily_limit_exceeded"])
def test_quota_429_raises_at_once(
    sandbox: Sandbox, client: PostStack, code: str
) -> None:
    sandbox.faults.add("quota", code=code)
    with pytest.raises(PostStackError) as info:
        client.emails.send(message())
    assert info.value.status_code == 429
    assert info.value.code == code
    assert info.value.retry_after is None
    assert "retry-after" not in info.value.headers
    assert attempts(sandbox) == [1]


def test_coded_429_without_retry_after_raises(
    sandbox: Sandbox, client: PostStack
) -> None:
    sandbox.faults.add("error", status=429, code="rate_limit_exceeded")
    with pytest.raises(PostStackError):
        client.emails.send(message())
    assert attempts(sandbox) == [1]


def test_bare_429_is_retried(sandbox: Sandbox, client: PostStack) -> None:
    sandbox.faults.add("bare_429", times=2)
    client.emails.send(message())
    assert attempts(sandbox) == [3]
    assert sandbox.requests[0]["status"] == 429


def test_drops_exhaust_into_a_transport_error(
    sandbox: Sandbox, client: PostStack
) -> None:
    sandbox.faults.add("drop_before", path="/emails")
    with pytest.raises(httpx.TransportError):
        client.emails.send(message())
    assert attempts(sandbox) == [4]
    assert sandbox.emails == []


def test_empty_2xx_breaks_the_python_sdk(sandbox: Sandbox, client: PostStack) -> None:
    sandbox.faults.add("empty_2xx", times=1)
    with pytest.raises(json.JSONDecodeError):
        client.emails.send(message())
    assert len(sandbox.emails) == 1


def test_latency_past_the_timeout_is_deduplicated(sandbox: Sandbox) -> None:
    sandbox.faults.add("latency", delay=0.6, path="/emails", times=1)
    with PostStack(TEST_KEY, base_url=sandbox.base_url, timeout=0.3) as client:
        result = client.emails.send(message())
    assert sandbox.wait_for(lambda: len(sandbox.requests) == 2, timeout=3)
    assert [e.id for e in sandbox.emails] == [result["id"]]
    assert attempts(sandbox) == [2]
    assert sandbox.stats["replays"] == 1


def test_global_latency(sandbox: Sandbox, client: PostStack) -> None:
    sandbox.configure(latency=0.1)
    started = time.monotonic()
    client.emails.send(message())
    assert time.monotonic() - started >= 0.1
    assert sandbox.requests[0]["duration_ms"] >= 100


def test_global_latency_includes_the_sandboxs_own_work(
    sandbox: Sandbox, client: PostStack
) -> None:
    # The global latency is a response time, not a delay added on top of
    # processing: a 0.6 s send in a 0.6 s latency answers after 0.6 s, not
    # 1.2 (the bound leaves half a second for a busy machine).
    sandbox.configure(latency=0.6, processing_delay=0.6)
    client.emails.send(message())
    assert 600 <= sandbox.requests[0]["duration_ms"] < 1100
    # A latency fault, though, is a slow request: it comes on top.
    sandbox.configure(processing_delay=0.0)
    sandbox.faults.add("latency", delay=0.3, times=1)
    client.emails.send(message())
    assert sandbox.requests[1]["duration_ms"] >= 900


def test_rules_match_method_and_path(sandbox: Sandbox, client: PostStack) -> None:
    sandbox.faults.add("error", status=400, method="GET", path="/emails/*")
    sent = client.emails.send(message())
    with pytest.raises(PostStackError) as info:
        client.emails.get(sent["id"])
    assert info.value.status_code == 400


def test_after_and_times(sandbox: Sandbox) -> None:
    sandbox.faults.add("error", status=418, after=1, times=2)
    with PostStack(TEST_KEY, base_url=sandbox.base_url, max_retries=0) as client:
        outcomes = []
        for _ in range(4):
            try:
                client.emails.send(message())
                outcomes.append(202)
            except PostStackError as exc:
                outcomes.append(exc.status_code)
    assert outcomes == [202, 418, 418, 202]


def test_probability_is_reproducible_with_a_seed(sandbox: Sandbox) -> None:
    def run() -> list[int]:
        sandbox.reset()
        sandbox.faults.seed(7)
        sandbox.faults.add("error", status=500, probability=0.5)
        with PostStack(TEST_KEY, base_url=sandbox.base_url, max_retries=0) as client:
            for _ in range(20):
                with contextlib.suppress(PostStackError):
                    client.emails.send(message())
        return [r["status"] for r in sandbox.requests]

    first = run()
    assert first == run()
    assert 3 <= first.count(500) <= 17


def test_async_client_retries_the_same_way(sandbox: Sandbox) -> None:
    sandbox.faults.sequence([503, "drop_after"], path="/emails")

    async def send() -> dict[str, object]:
        async with AsyncPostStack(TEST_KEY, base_url=sandbox.base_url) as client:
            return await client.emails.send(message())

    result = asyncio.run(send())
    assert result["replayed"] is True
    assert attempts(sandbox) == [3]
    assert len(sandbox.emails) == 1


def test_faults_through_the_admin_api(sandbox: Sandbox, client: PostStack) -> None:
    with httpx.Client(base_url=sandbox.base_url) as admin:
        added = admin.post(
            "/_sandbox/faults",
            json={"kind": "error", "status": 503, "retry_after": 0, "times": 1},
        )
        assert added.status_code == 201
        seq = admin.post(
            "/_sandbox/faults", json={"path": "/emails/batch", "steps": [500, "pass"]}
        )
        assert seq.json()["faults"][0]["steps"][1] == {
            "kind": "pass",
            "body": "json",
            "delay": 0.0,
            "jitter": 0.0,
            "mode": "reset",
        }
        client.emails.send(message())
        listed = admin.get("/_sandbox/faults").json()["faults"]
        assert listed[0]["fired"] == 1 and listed[0]["exhausted"] is True
        bad = admin.post("/_sandbox/faults", json={"kind": "nope"})
        assert bad.status_code == 400 and "unknown fault kind" in bad.json()["error"]
        assert admin.delete(
            "/_sandbox/faults", headers={"Content-Type": "application/json"}
        ).json() == {"success": True}
    assert sandbox.faults.rules == []
    assert attempts(sandbox) == [2]
