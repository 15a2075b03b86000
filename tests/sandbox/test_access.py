"""``sending_access`` keys: they may send and read status, nothing else."""

from __future__ import annotations

import typing as t

import httpx
import pytest
from poststack import PostStack
from poststack import PostStackError

from flask_poststack.sandbox import Sandbox

from .conftest import message
from .conftest import TEST_KEY

SENDER_KEY = "sk_test_send_only_1"
FORBIDDEN = {"error": "API key does not have permission", "code": "forbidden"}


@pytest.fixture
def sender(sandbox: Sandbox) -> t.Iterator[PostStack]:
    """An SDK client whose key has sending access only."""
    sandbox.configure(sending_access_keys=["sk_test_send_*"])
    with PostStack(SENDER_KEY, base_url=sandbox.base_url) as client:
        yield client


def test_sending_access_key_sends_and_reads_status(
    sandbox: Sandbox, sender: PostStack
) -> None:
    sent = sender.emails.send(message())
    sender._client.post("/emails/send", message())
    batch = sender.emails.batch({"emails": [message(), message()]})
    assert all("id" in r for r in batch["data"])
    assert sender.emails.get(sent["id"])["email"]["publicId"] == sent["id"]
    assert sender.emails.list()["meta"]["total"] == 4
    assert sender.emails.get_events(sent["id"])["events"][0]["eventType"] == "queued"
    assert sandbox.stats["emails_created"] == 4


@pytest.mark.parametrize(
    "call",
    [
        lambda c: c.webhooks.create({"url": "http://127.0.0.1:9/h", "events": ["*"]}),
        lambda c: c.webhooks.list(),
        lambda c: c.webhooks.delete(1),
        lambda c: c.emails.cancel("em_x"),
        lambda c: c.emails.reschedule("em_x", "2099-01-01T00:00:00Z"),
        lambda c: c.emails.get_insights("em_x"),
        lambda c: c.emails.preview(message()),
        lambda c: c._client.get("/domains"),
        lambda c: c._client.post("/api-keys", {"name": "x"}),
        lambda c: c._client.get("/templates"),
    ],
    ids=[
        "webhook-create",
        "webhook-list",
        "webhook-delete",
        "cancel",
        "reschedule",
        "insights",
        "preview",
        "domains",
        "api-keys",
        "templates",
    ],
)
def test_sending_access_key_is_forbidden_elsewhere(
    sandbox: Sandbox, sender: PostStack, call: t.Callable[[PostStack], t.Any]
) -> None:
    with pytest.raises(PostStackError) as info:
        call(sender)
    assert info.value.status_code == 403
    assert (info.value.error, info.value.code) == (FORBIDDEN["error"], "forbidden")
    assert info.value.request_id is not None
    assert [r["status"] for r in sandbox.requests] == [403]  # not retried
    assert sandbox.webhooks.hooks == {} and sandbox.emails == []


def test_other_keys_keep_full_access(sandbox: Sandbox, sender: PostStack) -> None:
    with PostStack(TEST_KEY, base_url=sandbox.base_url) as full:
        full.webhooks.create({"url": "http://127.0.0.1:9/h", "events": ["*"]})
        assert len(full.webhooks.list()["webhooks"]) == 1
    with httpx.Client(base_url=sandbox.base_url) as raw:
        response = raw.get(
            "/webhooks", headers={"Authorization": f"Bearer {SENDER_KEY}"}
        )
    assert response.status_code == 403 and response.json() == FORBIDDEN


def test_sending_access_keys_from_kwargs_and_the_admin_api() -> None:
    with (
        Sandbox(sending_access_keys=["sk_live_sender"]) as sb,
        PostStack("sk_live_sender", base_url=sb.base_url) as sender,
        httpx.Client(base_url=sb.base_url) as admin,
    ):
        with pytest.raises(PostStackError) as info:
            sender.webhooks.list()
        assert info.value.status_code == 403
        changed = admin.post("/_sandbox/config", json={"sending_access_keys": []})
        assert changed.json()["sending_access_keys"] == []
        assert sender.webhooks.list() == {"webhooks": []}
        admin.post("/_sandbox/config", json={"sending_access_keys": ["sk_live_*"]})
        with pytest.raises(PostStackError):
            sender.webhooks.list()
        bad = admin.post("/_sandbox/config", json={"sending_access_keys": "sk_*"})
        assert bad.status_code == 400
        sb.reset()
        assert sb.config.sending_access_keys == ["sk_live_sender"]
