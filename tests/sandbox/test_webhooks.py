"""Webhook CRUD, signed deliveries the SDK verifies, rotation and retries."""

from __future__ import annotations

import json
import threading
import typing as t

import pytest
from poststack import PostStack
from poststack import PostStackError
from poststack.resources import WebhooksResource

from flask_poststack.sandbox import Sandbox

from .conftest import message
from .conftest import Receiver

verify = WebhooksResource.verify


def create(
    client: PostStack, url: str, events: list[str] | None = None
) -> tuple[int, str]:
    created = client.webhooks.create({"url": url, "events": events or ["*"]})
    return created["webhook"]["id"], created["signingSecret"]


def test_crud_and_the_secret_shown_once(sandbox: Sandbox, client: PostStack) -> None:
    hook_id, secret = create(client, "http://127.0.0.1:9/a", ["email.delivered"])
    assert isinstance(hook_id, int) and secret.startswith("whsec_")
    got = client.webhooks.get(hook_id)["webhook"]
    assert secret not in json.dumps(got)
    assert got["signingSecretPrefix"] == secret[:10] + "\u2026"
    assert got["events"] == ["email.delivered"] and got["active"] is True
    listed = client.webhooks.list()["webhooks"]
    assert [h["id"] for h in listed] == [hook_id]
    assert "lastDeliveryAt" in listed[0]
    updated = client.webhooks.update(hook_id, {"enabled": False, "events": ["*"]})
    assert updated["webhook"]["active"] is False
    assert client.webhooks.delete(hook_id) == {"success": True}
    with pytest.raises(PostStackError) as info:
        client.webhooks.get(hook_id)
    assert info.value.status_code == 404


@pytest.mark.parametrize(
    ("body", "status"),
    [
        ({"url": "ftp://x", "events": ["*"]}, 400),
        ({"url": "http://127.0.0.1:9/", "events": []}, 400),
        ({"url": "http://example.com/hook", "events": ["*"]}, 422),
    ],
)
def test_create_validation(
    client: PostStack, body: dict[str, object], status: int
) -> None:
    with pytest.raises(PostStackError) as info:
        client.webhooks.create(body)
    assert info.value.status_code == status


def test_signed_deliveries_verify(
    sandbox: Sandbox, client: PostStack, receiver: Receiver
) -> None:
    _, secret = create(client, receiver.url, ["email.delivered"])
    sent = client.emails.send(message(tags=["welcome"]))
    assert sandbox.wait_for(lambda: len(receiver.events()) == 1)
    (got,) = receiver.events()
    signature = got.headers["X-PostStack-Signature"]
    assert signature.startswith("sha256=") and "," not in signature
    assert verify(got.body, signature, secret)
    assert not verify(got.body, signature, "whsec_wrong")
    assert got.headers["Content-Type"] == "application/json"
    payload = json.loads(got.body)
    assert payload["type"] == "email.delivered"
    assert payload["id"].startswith("evt_")
    assert payload["timestamp"].endswith("Z")
    assert payload["data"] == {
        "email_id": sent["id"],
        "to": ["bob@example.com"],
        "from": "ada@example.com",
        "subject": "Hello",
        "tags": ["welcome"],
    }


def test_wildcard_gets_every_event(
    sandbox: Sandbox, client: PostStack, receiver: Receiver
) -> None:
    create(client, receiver.url, ["*"])
    client.emails.send(message())
    assert sandbox.wait_for(lambda: len(receiver.events()) == 3)
    types = sorted(json.loads(r.body)["type"] for r in receiver.events())
    assert types == ["email.delivered", "email.queued", "email.sent"]


def test_rotation_dual_signs_during_grace(
    sandbox: Sandbox, client: PostStack, receiver: Receiver
) -> None:
    hook_id, old = create(client, receiver.url, ["email.sent"])
    rotated = client.webhooks.rotate_secret(hook_id)
    new = rotated["signingSecret"]
    assert new != old and rotated["webhook"]["previousSecretExpiresAt"] is not None
    assert rotated["webhook"]["secretRotatedAt"] is not None
    client.emails.send(message())
    assert sandbox.wait_for(lambda: len(receiver.events()) == 1)
    (got,) = receiver.events()
    header = got.headers["X-PostStack-Signature"]
    first, second = header.split(",")
    assert verify(got.body, first, new) and verify(got.body, second, old)
    assert verify(got.body, header, new) and verify(got.body, header, old)
    # Grace 0 cuts over at once: one signature, the old secret is dead.
    newest = client.webhooks.rotate_secret(hook_id, grace_hours=0)["signingSecret"]
    client.emails.send(message())
    assert sandbox.wait_for(lambda: len(receiver.events()) == 2)
    got = receiver.events()[1]
    header = got.headers["X-PostStack-Signature"]
    assert "," not in header and verify(got.body, header, newest)
    assert not verify(got.body, header, new)


def test_rotation_grace_bounds(client: PostStack) -> None:
    hook_id, _ = create(client, "http://127.0.0.1:9/")
    with pytest.raises(PostStackError) as info:
        client.webhooks.rotate_secret(hook_id, grace_hours=169)
    assert info.value.status_code == 400
    assert client.webhooks.rotate_secret(hook_id, grace_hours=168)["signingSecret"]


@pytest.mark.parametrize("mode", ["wrong_secret", "tampered", "sha512"])
def test_signature_faults_fail_verification(
    sandbox: Sandbox, client: PostStack, receiver: Receiver, mode: str
) -> None:
    sandbox.configure(webhook_signature=mode)
    _, secret = create(client, receiver.url, ["email.queued"])
    client.emails.send(message())
    assert sandbox.wait_for(lambda: len(receiver.events()) == 1)
    (got,) = receiver.events()
    assert not verify(got.body, got.headers["X-PostStack-Signature"], secret)


def test_single_signature_switch(
    sandbox: Sandbox, client: PostStack, receiver: Receiver
) -> None:
    sandbox.configure(webhook_signature="single")
    hook_id, _ = create(client, receiver.url, ["webhook.test"])
    new = client.webhooks.rotate_secret(hook_id, grace_hours=1)["signingSecret"]
    assert client.webhooks.test(hook_id) == {"success": True}
    assert sandbox.wait_for(lambda: len(receiver.events()) == 1)
    (got,) = receiver.events()
    header = got.headers["X-PostStack-Signature"]
    assert "," not in header and verify(got.body, header, new)


def test_failed_deliveries_are_retried(
    sandbox: Sandbox, client: PostStack, receiver: Receiver
) -> None:
    sandbox.configure(webhook_retry_base=0.02)
    receiver.statuses = [500, 503]
    hook_id, secret = create(client, receiver.url, ["email.queued"])
    client.emails.send(message())
    assert sandbox.wait_for(lambda: len(receiver.events()) == 3)
    bodies = {r.body for r in receiver.events()}
    assert len(bodies) == 1  # serialised once, the same bytes every attempt
    assert all(
        verify(r.body, r.headers["X-PostStack-Signature"], secret)
        for r in receiver.events()
    )
    assert sandbox.wait_for(
        lambda: client.webhooks.get_deliveries(hook_id)["deliveries"][0]["deliveredAt"]
    )
    listing = client.webhooks.get_deliveries(hook_id)
    (delivery,) = listing["deliveries"]
    assert delivery["attempts"] == 3 and delivery["statusCode"] == 200
    assert delivery["eventType"] == "email.queued" and delivery["nextRetryAt"] is None
    assert listing["pagination"] == {
        "page": 1,
        "perPage": 20,
        "total": 1,
        "totalPages": 1,
    }


def test_give_up_then_replay(
    sandbox: Sandbox, client: PostStack, receiver: Receiver
) -> None:
    sandbox.configure(webhook_retry_base=0.01, webhook_max_attempts=2)
    receiver.statuses = [500] * 4
    hook_id, _ = create(client, receiver.url, ["email.queued"])
    client.emails.send(message())
    client.emails.send(message())
    assert sandbox.wait_for(lambda: len(receiver.events()) == 4)
    assert sandbox.wait_for(
        lambda: all(
            d["nextRetryAt"] is None and d["attempts"] == 2
            for d in client.webhooks.get_deliveries(hook_id)["deliveries"]
        )
    )
    deliveries = client.webhooks.get_deliveries(hook_id)["deliveries"]
    assert [d["statusCode"] for d in deliveries] == [500, 500]
    # Oldest first, capped by the limit; the replayed one is pending, not failed.
    assert client.webhooks.batch_replay(hook_id, {"limit": 1}) == {
        "replayed": 1,
        "remaining": 1,
    }
    assert client.webhooks.replay(hook_id, deliveries[0]["id"]) == {"success": True}
    assert client.webhooks.batch_replay(hook_id) == {"replayed": 0, "remaining": 0}
    assert sandbox.wait_for(lambda: len(receiver.events()) == 6)
    assert sandbox.wait_for(
        lambda: all(
            d["deliveredAt"] and d["statusCode"] == 200
            for d in client.webhooks.get_deliveries(hook_id)["deliveries"]
        )
    )
    assert [e.path for e in receiver.events()] == ["/hooks"] * 6
    with pytest.raises(PostStackError):
        client.webhooks.replay(hook_id, 999)


def test_auto_disable(sandbox: Sandbox, client: PostStack, receiver: Receiver) -> None:
    sandbox.configure(webhook_retry_base=0.01, webhook_disable_after=2)
    receiver.statuses = [500] * 10
    hook_id, _ = create(client, receiver.url, ["email.queued"])
    client.emails.send(message())
    assert sandbox.wait_for(
        lambda: not client.webhooks.get(hook_id)["webhook"]["active"]
    )
    hook = client.webhooks.get(hook_id)["webhook"]
    assert hook["disabledAt"] and hook["consecutiveFailures"] == 2
    assert len(receiver.events()) == 2


def test_duplicate_delivery_fault(
    sandbox: Sandbox, client: PostStack, receiver: Receiver
) -> None:
    sandbox.configure(webhook_duplicates=1)
    create(client, receiver.url, ["email.queued"])
    client.emails.send(message())
    assert sandbox.wait_for(lambda: len(receiver.events()) == 2)
    first, second = receiver.events()
    assert first.body == second.body


def test_replays_fire_no_webhooks(
    sandbox: Sandbox, client: PostStack, receiver: Receiver
) -> None:
    create(client, receiver.url, ["email.queued"])
    client.emails.send(message(idempotency_key="once"))
    client.emails.send(message(idempotency_key="once"))
    sandbox.faults.add("drop_after", path="/emails", times=1)
    client.emails.send(message())
    assert sandbox.wait_for(lambda: len(receiver.events()) == 2)
    assert not sandbox.wait_for(lambda: len(receiver.events()) > 2, timeout=0.2)


def test_custom_envelope(
    sandbox: Sandbox, client: PostStack, receiver: Receiver
) -> None:
    sandbox.configure(
        webhook_envelope=lambda kind, event_id, when, data: {"event": kind, **data}
    )
    create(client, receiver.url, ["email.queued"])
    sent = client.emails.send(message())
    assert sandbox.wait_for(lambda: len(receiver.events()) == 1)
    payload = json.loads(receiver.events()[0].body)
    assert payload["event"] == "email.queued" and payload["email_id"] == sent["id"]


def test_an_attempt_in_flight_during_a_reset_is_forgotten(
    sandbox: Sandbox,
    client: PostStack,
    receiver: Receiver,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    hooks = sandbox.webhooks
    posting, resume, done = (threading.Event() for _ in range(3))
    post, attempt = hooks._post, hooks._attempt

    def held_post(*args: t.Any) -> tuple[int | None, str | None, str | None]:
        posting.set()
        resume.wait(5)
        return post(*args)

    def attempt_then_signal(*args: t.Any) -> None:
        attempt(*args)
        done.set()

    monkeypatch.setattr(hooks, "_post", held_post)
    monkeypatch.setattr(hooks, "_attempt", attempt_then_signal)
    create(client, receiver.url, ["email.queued"])
    client.emails.send(message())
    assert posting.wait(5)
    sandbox.reset()  # the next test starts while the POST is in flight
    resume.set()
    assert done.wait(5)
    assert sandbox.stats["webhook_attempts"] == 0
    assert sandbox.deliveries == []
