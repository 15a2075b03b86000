"""queued -> sent -> delivered (or an injected outcome), scheduling, cancel."""

from __future__ import annotations

import threading
import time
import typing as t

import pytest
from poststack import PostStack
from poststack import PostStackError

from flask_poststack.sandbox import Sandbox

from .conftest import message
from .conftest import Receiver


def test_delivered_with_events(sandbox: Sandbox, client: PostStack) -> None:
    sent = client.emails.send(message())
    sandbox.wait_for_status(sent["id"])
    email = client.emails.get(sent["id"])["email"]
    assert email["status"] == "delivered"
    assert email["sentAt"] is not None
    assert [e["eventType"] for e in email["events"]] == ["queued", "sent", "delivered"]
    events = client.emails.get_events(sent["id"])["events"]
    assert events == email["events"]
    assert set(events[0]) >= {"id", "emailId", "eventType", "metadata", "createdAt"}
    assert events[0]["emailId"] == email["id"]


def test_intermediate_status(sandbox: Sandbox, client: PostStack) -> None:
    sandbox.configure(lifecycle_delay=1)
    sent = client.emails.send(message())
    assert client.emails.get(sent["id"])["email"]["status"] == "queued"
    sandbox.wait_for_status(sent["id"], "sending", timeout=5)
    sandbox.configure(sent_status="sent")
    assert sandbox.wait_for_status(sent["id"]).status == "delivered"


@pytest.mark.parametrize(
    ("outcome", "status", "events"),
    [
        ("bounced", "bounced", ["queued", "sent", "bounced"]),
        ("soft_bounced", "bounced", ["queued", "sent", "soft_bounced"]),
        ("complained", "complained", ["queued", "sent", "delivered", "complained"]),
        ("deferred", "deferred", ["queued", "sent", "deferred"]),
        ("failed", "failed", ["queued", "sent", "failed"]),
    ],
)
def test_outcome_by_recipient_pattern(
    sandbox: Sandbox,
    live_client: PostStack,
    outcome: str,
    status: str,
    events: list[str],
) -> None:
    sandbox.outcomes.add(outcome, "*@bounce.example")
    hit = live_client.emails.send(message(to=["ok@example.com", "X@Bounce.example"]))
    miss = live_client.emails.send(message())
    assert sandbox.wait_for_status(hit["id"]).event_types == events
    assert sandbox.wait_for_status(hit["id"]).events[-1]["metadata"] == {
        "recipient": "X@Bounce.example"
    }
    assert sandbox.wait_for_status(miss["id"]).status == "delivered"
    assert sandbox.get_email(hit["id"]).status == status


@pytest.mark.parametrize("outcome", ["delivered", "complained", "cancelled"])
def test_a_final_status_comes_with_its_events(
    sandbox: Sandbox,
    live_client: PostStack,
    monkeypatch: pytest.MonkeyPatch,
    outcome: str,
) -> None:
    # Recording an event is slow here: whoever sees the final status must
    # still find every event that leads to it.
    add_event = sandbox.store.add_event

    def slow_add_event(*args: t.Any, **kwargs: t.Any) -> dict[str, t.Any]:
        time.sleep(0.2)
        return add_event(*args, **kwargs)

    if outcome == "cancelled":
        sent = live_client.emails.send(message(scheduled_at="2099-01-01T00:00:00Z"))
        monkeypatch.setattr(sandbox.store, "add_event", slow_add_event)
        cancel = threading.Thread(target=live_client.emails.cancel, args=(sent["id"],))
        cancel.start()
        email = sandbox.wait_for_status(sent["id"])
        assert email.event_types == ["queued", "failed"]
        cancel.join(5)  # its answer is on the way: not into a closed client
        return
    sandbox.outcomes.add(outcome)
    sent = live_client.emails.send(message())
    monkeypatch.setattr(sandbox.store, "add_event", slow_add_event)
    email = sandbox.wait_for_status(sent["id"])
    assert email.event_types[-1] == outcome
    assert email.event_types[0:2] == ["queued", "sent"]


def test_a_timer_firing_across_a_reset_touches_nothing(
    sandbox: Sandbox, client: PostStack, receiver: Receiver
) -> None:
    sandbox.configure(lifecycle_delay=30)
    client.webhooks.create({"url": receiver.url, "events": ["*"]})
    email = sandbox.get_email(client.emails.send(message())["id"])
    sandbox.reset()
    client.webhooks.create({"url": receiver.url, "events": ["*"]})
    rule = sandbox.outcomes.add("bounced")
    # The email's timers were already running when the reset cleared the rest.
    sandbox.lifecycle._send(email, email.generation)
    sandbox.lifecycle._finish(email, email.generation)
    assert email.status == "queued" and email.event_types == ["queued"]
    assert rule.fired == 0  # left for the emails after the reset
    assert sandbox.scheduler._heap == []
    assert not sandbox.wait_for(
        lambda: any(r.body.count(b"email.sent") for r in receiver.events()),
        timeout=0.3,
    )


def test_outcome_for_the_next_email(sandbox: Sandbox, live_client: PostStack) -> None:
    sandbox.outcomes.add("bounced")
    first = live_client.emails.send(message())
    assert sandbox.wait_for_status(first["id"]).status == "bounced"
    second = live_client.emails.send(message())
    assert sandbox.wait_for_status(second["id"]).status == "delivered"


def test_test_mode_always_delivers(sandbox: Sandbox, client: PostStack) -> None:
    sandbox.outcomes.add("bounced", "*")
    sent = client.emails.send(message())
    assert sandbox.wait_for_status(sent["id"]).status == "delivered"


def test_scheduled_email_waits(sandbox: Sandbox, client: PostStack) -> None:
    sent = client.emails.send(message(scheduled_at="2099-03-25T09:00:00.000Z"))
    row = client.emails.get(sent["id"])["email"]
    assert row["scheduledAt"] == "2099-03-25T09:00:00.000Z"
    assert not sandbox.wait_for(
        lambda: sandbox.get_email(sent["id"]).status != "queued", 0.2
    )
    soon = "2000-01-01T00:00:00Z"  # in the past: sent right away
    assert client.emails.reschedule(sent["id"], soon) == {"success": True}
    assert sandbox.wait_for_status(sent["id"]).status == "delivered"
    assert (
        client.emails.get(sent["id"])["email"]["scheduledAt"]
        == "2000-01-01T00:00:00.000Z"
    )


def test_cancel(sandbox: Sandbox, client: PostStack) -> None:
    sent = client.emails.send(message(scheduled_at="2099-01-01T00:00:00+00:00"))
    assert client.emails.cancel(sent["id"]) == {"success": True}
    email = sandbox.get_email(sent["id"])
    assert email.status == "failed"
    assert email.events[-1]["metadata"] == {"reason": "cancelled"}
    with pytest.raises(PostStackError) as info:
        client.emails.cancel(sent["id"])
    assert info.value.status_code == 422


def test_not_scheduled_errors(sandbox: Sandbox, client: PostStack) -> None:
    sent = client.emails.send(message())
    calls: list[t.Callable[[], object]] = [
        lambda: client.emails.cancel(sent["id"]),
        lambda: client.emails.reschedule(sent["id"], "2099-01-01T00:00:00Z"),
    ]
    for call in calls:
        with pytest.raises(PostStackError) as info:
            call()
        assert info.value.status_code == 422
        assert info.value.code == "unprocessable_entity"
    sandbox.configure(not_scheduled_status=409)
    with pytest.raises(PostStackError) as info:
        client.emails.cancel(sent["id"])
    assert (info.value.status_code, info.value.code) == (409, "conflict")
    with pytest.raises(PostStackError) as info:
        client.emails.reschedule(sent["id"], "soon")
    assert info.value.status_code == 400
    with pytest.raises(PostStackError) as info:
        client.emails.cancel("em_missing")
    assert info.value.status_code == 404
