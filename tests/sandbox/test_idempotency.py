from __future__ import annotations

import threading
import time
import typing as t

import pytest
from poststack import PostStack
from poststack import PostStackError

from flask_poststack.sandbox import Sandbox

from .conftest import LIVE_KEY
from .conftest import message
from .conftest import TEST_KEY


def post(client: PostStack, path: str, body: t.Any, key: str) -> t.Any:
    """POST through the SDK's own request path with a chosen header key (the
    public methods always make a fresh one)."""
    return client._client._request(
        "POST", path, body=body, extra_headers={"Idempotency-Key": key}
    )


def test_body_key_same_payload_replays(sandbox: Sandbox, client: PostStack) -> None:
    first = client.emails.send(message(idempotency_key="order-1"))
    second = client.emails.send(message(idempotency_key="order-1"))
    assert second == {**first, "replayed": True}
    assert "replayed" not in first
    assert sandbox.stats["emails_created"] == 1
    assert sandbox.stats["replays"] == 1


def test_body_key_different_payload_is_422(sandbox: Sandbox, client: PostStack) -> None:
    client.emails.send(message(idempotency_key="order-1"))
    with pytest.raises(PostStackError) as info:
        client.emails.send(message(idempotency_key="order-1", subject="Changed"))
    assert info.value.status_code == 422
    assert info.value.code == "unprocessable_entity"
    assert len(sandbox.emails) == 1


def test_header_key_same_payload_replays(sandbox: Sandbox, client: PostStack) -> None:
    first = post(client, "/emails", message(), "hdr-1")
    second = post(client, "/emails", message(), "hdr-1")
    alias = post(client, "/emails/send", message(), "hdr-1")
    assert second == {**first, "replayed": True} == alias
    assert sandbox.stats["emails_created"] == 1
    assert sandbox.stats["attempts_by_idempotency_key"]["hdr-1"] == 3


def test_header_key_different_payload_is_422(
    sandbox: Sandbox, client: PostStack
) -> None:
    post(client, "/emails", message(), "hdr-1")
    with pytest.raises(PostStackError) as info:
        post(client, "/emails", message(subject="Other"), "hdr-1")
    assert info.value.status_code == 422
    assert len(sandbox.emails) == 1


def test_header_key_ignored_on_other_posts(sandbox: Sandbox, client: PostStack) -> None:
    body = {"url": "http://127.0.0.1:9/hook", "events": ["*"]}
    one = post(client, "/webhooks", body, "hdr-w")
    two = post(client, "/webhooks", body, "hdr-w")
    assert one["webhook"]["id"] != two["webhook"]["id"]
    sandbox.configure(idempotency_all_posts=True)
    three = post(client, "/webhooks", body, "hdr-x")
    assert post(client, "/webhooks", body, "hdr-x")["replayed"] is True
    assert len(client.webhooks.list()["webhooks"]) == 3
    assert three["webhook"]["id"] == 3


def test_header_key_ttl(sandbox: Sandbox, client: PostStack) -> None:
    sandbox.configure(idempotency_header_ttl=0)
    post(client, "/emails", message(), "hdr-1")
    again = post(client, "/emails", message(), "hdr-1")
    assert "replayed" not in again
    assert sandbox.stats["emails_created"] == 2


def test_expired_header_keys_are_evicted(sandbox: Sandbox, client: PostStack) -> None:
    sandbox.configure(idempotency_header_ttl=2)
    first = post(client, "/emails", message(idempotency_key="body-1"), "hdr-old")
    again = post(client, "/emails", message(idempotency_key="body-1"), "hdr-old")
    assert again == {**first, "replayed": True}
    for n in range(3):
        post(client, "/emails", message(), f"hdr-{n}")
    assert sandbox.stats["header_keys_stored"] == 4
    time.sleep(2.1)
    post(client, "/emails", message(), "hdr-new")
    assert sandbox.stats["header_keys_stored"] == 1
    assert sandbox.store.header_keys.keys() == {("team", "hdr-new")}
    # Body keys are not subject to the TTL: the old email still replays.
    assert sandbox.stats["body_keys_stored"] == 1
    late = post(client, "/emails", message(idempotency_key="body-1"), "hdr-old")
    assert late == {**first, "replayed": True}
    assert sandbox.stats["emails_created"] == 5


def test_header_keys_are_capped(sandbox: Sandbox, client: PostStack) -> None:
    sandbox.configure(idempotency_header_max_keys=2)
    for key in ("h1", "h2", "h3"):
        post(client, "/emails", message(), key)
    assert sandbox.stats["header_keys_stored"] == 2
    # h1 expired first, so it went first: the same call is a new email now.
    assert "replayed" not in post(client, "/emails", message(), "h1")
    assert post(client, "/emails", message(), "h3")["replayed"] is True
    assert sandbox.stats["header_keys_stored"] == 2
    assert sandbox.stats["emails_created"] == 4


def test_attempt_counts_are_capped(sandbox: Sandbox, client: PostStack) -> None:
    sandbox.configure(idempotency_attempts_max_keys=2)
    for key in ("a1", "a2", "a1", "a3"):
        post(client, "/emails", message(), key)
    # a2 was the least recently attempted, so it went first.
    stats = sandbox.stats
    assert stats["attempts_by_idempotency_key"] == {"a1": 2, "a3": 1}
    assert stats["attempt_keys_stored"] == 2
    assert stats["attempt_keys_evicted"] == 1
    # The total keeps every attempt, the evicted key's included.
    assert stats["idempotency_key_attempts"] == 4
    # A key being retried by the SDK is the newest, so its count survives.
    sandbox.faults.sequence(
        [{"kind": "error", "status": 503, "retry_after": 0}] * 2 + ["pass"],
        method="POST",
        path="/emails",
    )
    result = client.emails.send(message(subject="Retried"))
    stats = sandbox.stats
    counts = stats["attempts_by_idempotency_key"]
    assert counts.pop("a3") == 1  # a1 went this time
    assert list(counts.values()) == [3]
    assert [e.id for e in sandbox.emails if e.subject == "Retried"] == [result["id"]]
    assert stats["idempotency_key_attempts"] == 4 + 3
    assert stats["attempt_keys_evicted"] == 2
    sandbox.reset()
    assert sandbox.stats["idempotency_key_attempts"] == 0
    assert sandbox.stats["attempt_keys_evicted"] == 0


def test_attempt_counts_cap_is_a_setting(sandbox: Sandbox) -> None:
    assert sandbox.config.idempotency_attempts_max_keys == 100_000
    with Sandbox(idempotency_attempts_max_keys=1) as small:
        with PostStack(TEST_KEY, base_url=small.base_url) as client:
            for key in ("b1", "b2", "b3"):
                post(client, "/emails", message(), key)
        assert small.stats["attempts_by_idempotency_key"] == {"b3": 1}
        assert small.stats["idempotency_key_attempts"] == 3
        small.configure(idempotency_attempts_max_keys=0)
        with PostStack(TEST_KEY, base_url=small.base_url) as client:
            client.emails.send(message())
        assert small.stats["attempts_by_idempotency_key"] == {}
        assert small.stats["idempotency_key_attempts"] == 4
        assert small.stats["attempt_keys_evicted"] == 2 + 2


def test_header_keys_are_scoped_per_key_when_asked(sandbox: Sandbox) -> None:
    with (
        PostStack(TEST_KEY, base_url=sandbox.base_url) as one,
        PostStack(TEST_KEY + "2", base_url=sandbox.base_url) as two,
    ):
        one.emails.send(message(idempotency_key="k"))
        assert two.emails.send(message(idempotency_key="k"))["replayed"] is True
        sandbox.configure(idempotency_scope="key")
        assert "replayed" not in two.emails.send(message(idempotency_key="k2"))
        assert "replayed" not in one.emails.send(message(idempotency_key="k2"))
    assert sandbox.stats["emails_created"] == 3


@pytest.mark.parametrize(
    ("precedence", "created"), [("either", 1), ("header", 2), ("body", 1)]
)
def test_precedence(
    sandbox: Sandbox, client: PostStack, precedence: str, created: int
) -> None:
    sandbox.configure(idempotency_precedence=precedence)
    post(client, "/emails", message(idempotency_key="b"), "h1")
    post(client, "/emails", message(idempotency_key="b"), "h2")
    assert sandbox.stats["emails_created"] == created


def test_body_precedence_ignores_the_header(
    sandbox: Sandbox, client: PostStack
) -> None:
    sandbox.configure(idempotency_precedence="body")
    post(client, "/emails", message(idempotency_key="b1"), "h")
    # The same header with a different payload is no conflict: only the
    # body key is looked at.
    post(client, "/emails", message(idempotency_key="b2"), "h")
    assert sandbox.stats["emails_created"] == 2


def test_batch_element_keys_and_header_replay(
    sandbox: Sandbox, client: PostStack
) -> None:
    first = client.emails.batch(
        {"emails": [message(idempotency_key="e1"), message(idempotency_key="e2")]}
    )
    again = client.emails.batch(
        {"emails": [message(idempotency_key="e1"), message(idempotency_key="e3")]}
    )
    assert again["data"][0] == {**first["data"][0], "replayed": True}
    assert "replayed" not in again["data"][1]
    body = {"emails": [message(), message(to=["bad"])]}
    whole = post(client, "/emails/batch", body, "batch-h")
    replay = post(client, "/emails/batch", body, "batch-h")
    assert replay["data"][0] == {**whole["data"][0], "replayed": True}
    assert replay["data"][1] == whole["data"][1]
    assert sandbox.stats["emails_created"] == 4


def _concurrent(
    sandbox: Sandbox, count: int, send: t.Callable[[], t.Any]
) -> list[t.Any]:
    barrier = threading.Barrier(count)
    results: list[t.Any] = [None] * count

    def run(index: int) -> None:
        barrier.wait(5)
        try:
            results[index] = send()
        except PostStackError as exc:
            results[index] = exc

    threads = [threading.Thread(target=run, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(20)
    return results


def test_concurrent_duplicates_create_one_email(sandbox: Sandbox) -> None:
    sandbox.configure(processing_delay=0.1)
    with PostStack(TEST_KEY, base_url=sandbox.base_url) as client:
        results = _concurrent(
            sandbox, 6, lambda: client.emails.send(message(idempotency_key="same"))
        )
        header_results = _concurrent(
            sandbox, 4, lambda: post(client, "/emails", message(), "same-header")
        )
    assert len({r["id"] for r in results}) == 1
    assert sum(1 for r in results if r.get("replayed")) == 5
    assert len({r["id"] for r in header_results}) == 1
    assert sandbox.stats["emails_created"] == 2


def test_concurrent_duplicates_can_conflict(sandbox: Sandbox) -> None:
    sandbox.configure(processing_delay=1, idempotency_concurrent="conflict")
    with PostStack(LIVE_KEY, base_url=sandbox.base_url) as client:
        results = _concurrent(
            sandbox, 3, lambda: client.emails.send(message(idempotency_key="same"))
        )
    errors = [r for r in results if isinstance(r, PostStackError)]
    assert len(errors) == 2
    assert {e.status_code for e in errors} == {409}
    assert sandbox.stats["emails_created"] == 1


@pytest.mark.parametrize("mode", ["reset", "close", "headers"])
def test_drop_after_store_replays_on_the_sdk_retry(
    sandbox: Sandbox, client: PostStack, mode: str
) -> None:
    sandbox.faults.add("drop_after", mode=mode, path="/emails", times=1)
    result = client.emails.send(message())
    assert result["replayed"] is True
    assert [e.id for e in sandbox.emails] == [result["id"]]
    (key,) = sandbox.stats["attempts_by_idempotency_key"]
    assert sandbox.stats["attempts_by_idempotency_key"][key] == 2
    assert sandbox.stats["replays"] == 1


def test_drop_before_has_no_side_effects(sandbox: Sandbox, client: PostStack) -> None:
    sandbox.faults.add("drop_before", path="/emails", times=1)
    result = client.emails.send(message())
    assert "replayed" not in result
    assert [e.id for e in sandbox.emails] == [result["id"]]
    assert [r["status"] for r in sandbox.requests] == [0, 202]
