"""The ``hold_after_store`` fault: the email is stored, the answer waits.

Each test sends with the real SDK from a thread, so that the test can look at
the sandbox while the client is still waiting for its answer.
"""

from __future__ import annotations

import math
import threading
import time
import typing as t

import httpx
import pytest
from poststack import PostStack

from flask_poststack.sandbox import Sandbox

from .conftest import message
from .conftest import TEST_KEY


class Sender:
    """``client.emails.send`` in a daemon thread, with its result or error."""

    def __init__(self, base_url: str, body: dict[str, t.Any], **options: t.Any):
        self.result: dict[str, t.Any] | None = None
        self.error: BaseException | None = None
        self.finished_at: float | None = None
        self._base_url, self._body, self._options = base_url, body, options
        self.started_at = time.monotonic()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            with PostStack(TEST_KEY, base_url=self._base_url, **self._options) as c:
                self.result = c.emails.send(self._body)
        except BaseException as exc:  # reported by the test
            self.error = exc
        finally:
            self.finished_at = time.monotonic()

    def join(self, timeout: float) -> float:
        """Wait (bounded) for the send; return how long it took."""
        self.thread.join(timeout)
        assert not self.thread.is_alive(), f"the send did not end in {timeout}s"
        assert self.finished_at is not None
        return self.finished_at - self.started_at


def test_hold_stores_the_email_and_holds_the_answer_until_released(
    sandbox: Sandbox,
) -> None:
    sandbox.faults.add("hold_after_store", method="POST", path="/emails", times=1)
    sender = Sender(sandbox.base_url, message(idempotency_key="order-1"))

    [held] = sandbox.wait_held(timeout=5)
    # The API has stored the email; the client has not heard back.
    assert held["method"] == "POST" and held["path"] == "/emails"
    assert held["status"] == 202 and held["seconds"] == 10
    assert held["idempotency_key"]  # the SDK's header
    email = sandbox.get_email(held["email_id"])
    assert email.input.idempotency_key == "order-1"
    assert sender.thread.is_alive() and sender.finished_at is None
    assert sandbox.stats["requests_held"] == 1
    assert sandbox.stats["faults_fired"] == 1

    assert sandbox.release(held["id"]) == 1
    sender.join(5)
    assert sender.error is None
    assert sender.result is not None and sender.result["id"] == email.id
    assert sandbox.held == []
    assert sandbox.release() == 0
    assert [e.id for e in sandbox.emails] == [email.id]
    assert [r["fault"] for r in sandbox.requests] == ["hold_after_store"]
    assert list(sandbox.stats["attempts_by_idempotency_key"].values()) == [1]


def test_hold_is_bounded_by_seconds(sandbox: Sandbox) -> None:
    sandbox.faults.add("hold_after_store", path="/emails", seconds=0.4, times=1)
    sender = Sender(sandbox.base_url, message())
    [held] = sandbox.wait_held(timeout=5)
    assert held["seconds"] == 0.4
    took = sender.join(5)  # never released: the bound ends the hold
    assert sender.error is None and sender.result is not None
    assert 0.4 <= took < 3
    assert sandbox.held == []
    assert sandbox.requests[0]["duration_ms"] >= 400


def test_wait_held_is_bounded(sandbox: Sandbox) -> None:
    started = time.monotonic()
    with pytest.raises(TimeoutError, match="0 requests held"):
        sandbox.wait_held(timeout=0.2)
    assert 0.2 <= time.monotonic() - started < 2


def test_reset_releases_every_held_request(sandbox: Sandbox) -> None:
    sandbox.faults.add("hold_after_store", path="/emails", seconds=60)
    senders = [Sender(sandbox.base_url, message()) for _ in range(2)]
    assert len(sandbox.wait_held(count=2, timeout=5)) == 2
    sandbox.reset()
    for sender in senders:
        assert sender.join(5) < 10
        assert sender.error is None and sender.result is not None
    assert sandbox.held == []


def test_stop_releases_held_requests_and_holds_no_more() -> None:
    sb = Sandbox(port=0, lifecycle_delay=0.02).start()
    try:
        sb.faults.add("hold_after_store", path="/emails", seconds=60)
        sender = Sender(sb.base_url, message(), max_retries=0)
        sb.wait_held(timeout=5)
        started = time.monotonic()
        sb.stop()
        assert time.monotonic() - started < 10
        assert sender.join(5) < 15  # an answer or a closed connection, not 60 s
        assert sb.held == []
        # Started again, it holds again.
        sb.start()
        again = Sender(sb.base_url, message(), max_retries=0)
        [held] = sb.wait_held(timeout=5)
        assert sb.release(held["id"]) == 1
        again.join(5)
        assert again.error is None and again.result is not None
    finally:
        sb.stop()


def test_hold_through_the_admin_api(sandbox: Sandbox) -> None:
    with httpx.Client(base_url=sandbox.base_url, timeout=10) as admin:
        added = admin.post(
            "/_sandbox/faults",
            json={
                "kind": "hold_after_store",
                "seconds": 30,
                "method": "POST",
                "path": "/emails",
                "times": 2,
            },
        )
        assert added.status_code == 201
        assert added.json()["faults"][0]["steps"][0]["seconds"] == 30
        senders = [Sender(sandbox.base_url, message()) for _ in range(2)]
        deadline = time.monotonic() + 5
        while admin.get("/_sandbox/stats?keys=0").json()["requests_held"] < 2:
            assert time.monotonic() < deadline, "nothing held in 5 s"
            time.sleep(0.01)
        held = admin.get("/_sandbox/held").json()["held"]
        assert len(held) == 2
        assert all(h["status"] == 202 and h["email_id"] for h in held)
        first = admin.post(f"/_sandbox/held/{held[0]['id']}/release", json={})
        assert first.json() == {"released": 1}
        assert sandbox.wait_for(
            lambda: any(s.finished_at is not None for s in senders), timeout=5
        )
        assert [s.thread.is_alive() for s in senders].count(True) == 1
        assert [h["id"] for h in admin.get("/_sandbox/held").json()["held"]] == [
            held[1]["id"]
        ]
        assert admin.post("/_sandbox/held/release", json={}).json() == {"released": 1}
        for sender in senders:
            sender.join(5)
            assert sender.error is None and sender.result is not None
        assert sorted(s.result["id"] for s in senders if s.result) == sorted(
            h["email_id"] for h in held
        )
        assert admin.post("/_sandbox/held/release", json={}).json() == {"released": 0}
        assert admin.post("/_sandbox/held/99/release", json={}).json() == {
            "released": 0
        }
        assert admin.get("/_sandbox/held/1").status_code == 404
        bad = admin.post(
            "/_sandbox/faults", json={"kind": "hold_after_store", "seconds": 601}
        )
        assert bad.status_code == 400 and "seconds" in bad.json()["error"]


@pytest.mark.parametrize("bad", [-1, 600.5, math.inf, math.nan, True, "5"])
def test_hold_seconds_must_be_bounded(sandbox: Sandbox, bad: object) -> None:
    with pytest.raises(ValueError, match="seconds"):
        sandbox.faults.add("hold_after_store", seconds=bad)
    with pytest.raises(ValueError, match="only for a hold_after_store"):
        sandbox.faults.add("latency", seconds=1)
    assert sandbox.faults.rules == []


def test_rules_can_match_one_idempotency_key(sandbox: Sandbox) -> None:
    sandbox.faults.add("error", status=418, idempotency_key="job-7*")
    with PostStack(TEST_KEY, base_url=sandbox.base_url, max_retries=0) as client:
        client.emails.send(message(idempotency_key="job-1"))
        client.emails.send(message())  # no body key, and the header's is a UUID
    # The header counts too.
    with httpx.Client(base_url=sandbox.base_url) as raw:
        auth = {"Authorization": f"Bearer {TEST_KEY}"}
        by_body = raw.post(
            "/emails", json=message(idempotency_key="job-7a"), headers=auth
        )
        by_header = raw.post(
            "/emails", json=message(), headers={**auth, "Idempotency-Key": "job-7b"}
        )
    assert [r["status"] for r in sandbox.requests] == [202, 202, 418, 418]
    assert by_body.status_code == by_header.status_code == 418
    assert sandbox.faults.rules[0].to_dict()["idempotency_key"] == "job-7*"
    assert sandbox.faults.rules[0].fired == 2
    with pytest.raises(ValueError, match="idempotency_key"):
        sandbox.faults.add("error", idempotency_key="")
