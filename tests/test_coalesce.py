"""The sender threads' sends coalesced into POST /emails/batch
(flask_poststack._coalesce), with the real SDK against the sandbox: every
email gets the answer a single send would, and is stored once."""

from __future__ import annotations

import threading
import typing as t
import uuid

import poststack
import pytest

from flask_poststack._coalesce import Coalescer
from flask_poststack.sandbox import Sandbox
from tests.conftest import TEST_KEY

#: Long enough that the threads started together all arrive while the first
#: request is still out (not a timed assertion: it only makes batches likely).
LATENCY = 0.5


def payload(to: str) -> dict[str, t.Any]:
    return {
        "from": "app@example.com",
        "to": [to],
        "subject": "Hi",
        "text": "Hello",
        "idempotency_key": str(uuid.uuid4()),
    }


def send_all(
    sandbox: Sandbox, payloads: list[dict[str, t.Any]], slots: int = 1
) -> list[t.Any]:
    """Send ``payloads`` from one thread each, through one Coalescer;
    each thread's answer, or the exception it got."""
    client = poststack.PostStack(api_key=TEST_KEY, base_url=sandbox.base_url,
                                 max_retries=0)  # fmt: skip
    coalescer = Coalescer(slots)
    outcomes: list[t.Any] = [None] * len(payloads)
    start = threading.Barrier(len(payloads))

    def run(index: int) -> None:
        start.wait(timeout=30)
        try:
            outcomes[index] = coalescer.send(client, payloads[index])
        except Exception as exc:
            outcomes[index] = exc

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(payloads))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    client.close()
    assert not any(thread.is_alive() for thread in threads)
    return outcomes


def test_waiting_sends_go_together_each_with_its_own_answer(sandbox: Sandbox) -> None:
    sandbox.configure(latency=LATENCY)
    payloads = [payload(f"user{i}@example.com") for i in range(12)]

    outcomes = send_all(sandbox, payloads)

    assert not [outcome for outcome in outcomes if isinstance(outcome, Exception)]
    ids = [outcome["id"] for outcome in outcomes]
    assert len(set(ids)) == 12
    stored = {email.id: email for email in sandbox.emails}
    assert sorted(stored) == sorted(ids)
    for outcome, sent in zip(outcomes, payloads, strict=True):
        assert stored[outcome["id"]].to == sent["to"]
    paths = [request["path"] for request in sandbox.requests]
    assert "/emails/batch" in paths
    assert len(paths) < 12
    assert sandbox.stats["replays"] == 0


def test_an_email_refused_in_a_batch_gets_its_own_single_send_error(
    sandbox: Sandbox,
) -> None:
    sandbox.configure(latency=LATENCY, suppressed_recipients=["gone@example.com"])
    payloads = [payload(f"user{i}@example.com") for i in range(6)]
    payloads.append(payload("gone@example.com"))

    outcomes = send_all(sandbox, payloads)

    refused = outcomes.pop()
    assert isinstance(refused, poststack.PostStackError)
    assert refused.status_code == 422
    assert "suppressed" in refused.error
    assert len({outcome["id"] for outcome in outcomes}) == 6
    assert len(sandbox.emails) == 6


@pytest.mark.parametrize("status", [500, 422])
def test_a_failed_batch_request_sends_each_email_on_its_own(
    sandbox: Sandbox, status: int
) -> None:
    sandbox.configure(latency=LATENCY)
    sandbox.faults.add("error", status=status, path="/emails/batch")
    payloads = [payload(f"user{i}@example.com") for i in range(8)]

    outcomes = send_all(sandbox, payloads)

    assert len({outcome["id"] for outcome in outcomes}) == 8
    assert len(sandbox.emails) == 8
    assert sandbox.stats["replays"] == 0


def test_a_batch_that_was_stored_but_not_answered_is_replayed_not_resent(
    sandbox: Sandbox,
) -> None:
    sandbox.configure(latency=LATENCY)
    sandbox.faults.add("drop_after", mode="reset", path="/emails/batch")
    payloads = [payload(f"user{i}@example.com") for i in range(8)]

    outcomes = send_all(sandbox, payloads)

    assert len({outcome["id"] for outcome in outcomes}) == 8
    assert len(sandbox.emails) == 8
    assert sandbox.stats["replays"] >= 1
