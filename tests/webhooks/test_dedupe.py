"""Dedupe: a delivery is dispatched once, in memory or in the app's Redis."""

from __future__ import annotations

import json
import time
import typing as t

import pytest
import redis
from flask import Flask

from flask_poststack import ConfigurationError
from flask_poststack import get_state
from flask_poststack import signals
from flask_poststack.sandbox import Sandbox
from flask_poststack.webhooks import make_event_payload
from flask_poststack.webhooks import sign_webhook
from flask_poststack.webhooks import WebhookEvent
from flask_poststack.webhooks.dedupe import ClaimStore
from flask_poststack.webhooks.dedupe import MemoryClaims
from flask_poststack.webhooks.dedupe import RedisClaims
from flask_poststack.webhooks.dedupe import Renewal

from .conftest import create_webhook
from .conftest import make_app
from .conftest import post
from .conftest import Recorder
from .conftest import redis_app
from .conftest import sandbox_app
from .conftest import SECRET
from .conftest import send
from .conftest import statuses
from .conftest import Switch


def test_store_follows_the_redis_setting(
    redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert make_app().config["POSTSTACK_WEBHOOK_DEDUPE_STORE"] == "memory"
    assert redis_app(redis_url).config["POSTSTACK_WEBHOOK_DEDUPE_STORE"] == "redis"
    forced = redis_app(redis_url, POSTSTACK_WEBHOOK_DEDUPE_STORE="Memory")
    assert get_state(forced).settings.webhook_dedupe_store == "memory"
    monkeypatch.setenv("POSTSTACK_REDIS_URL", redis_url)
    # A testing app ignores the shell's Redis; another app follows it.
    assert make_app().config["POSTSTACK_WEBHOOK_DEDUPE_STORE"] == "memory"
    assert make_app(TESTING=False).config["POSTSTACK_WEBHOOK_DEDUPE_STORE"] == "redis"
    with pytest.raises(ConfigurationError, match="DEDUPE_STORE"):
        make_app(POSTSTACK_WEBHOOK_DEDUPE_STORE="disk")
    with pytest.raises(ConfigurationError, match="DEDUPE_SECONDS"):
        make_app(POSTSTACK_WEBHOOK_DEDUPE_SECONDS="-1")


@pytest.mark.parametrize("store", ["memory", "redis"])
def test_duplicate_delivery_dispatched_once(
    store: str, redis_url: str, recorder: Recorder
) -> None:
    app = redis_app(redis_url, POSTSTACK_WEBHOOK_DEDUPE_STORE=store)
    client = app.test_client()
    payload = make_event_payload("email.delivered", "em_1")
    body, headers = sign_webhook(payload, SECRET)
    assert post(client, body, headers).json == {"ok": True}
    assert post(client, body, headers).json == {"ok": True, "duplicate": True}
    # The same event re-serialised (other bytes, same id) is the same event.
    again, headers = sign_webhook(json.dumps(payload, indent=1), SECRET)
    assert post(client, again, headers).json == {"ok": True, "duplicate": True}
    # Another event about the same email is not a duplicate.
    other = make_event_payload("email.opened", "em_1")
    assert post(client, *sign_webhook(other, SECRET)).json == {"ok": True}
    assert [e.type for e in recorder.events()] == ["email.delivered", "email.opened"]
    if store == "redis":
        keys = redis.Redis.from_url(redis_url).keys("poststack:webhook:*")
        assert len(keys) == 2


def test_redis_dedupe_is_shared_between_processes(
    redis_url: str, recorder: Recorder
) -> None:
    one, two = redis_app(redis_url), redis_app(redis_url)
    body, headers = sign_webhook(make_event_payload("email.sent", "em_1"), SECRET)
    assert post(one.test_client(), body, headers).json == {"ok": True}
    assert post(two.test_client(), body, headers).json == {
        "ok": True,
        "duplicate": True,
    }
    assert len(recorder.events()) == 1


def test_without_an_event_id_the_body_is_the_key(recorder: Recorder) -> None:
    client = make_app().test_client()
    payload = {"event": "email.delivered", "email_id": "em_1"}
    body, headers = sign_webhook(payload, SECRET)
    post(client, body, headers)
    post(client, body, headers)
    post(client, *sign_webhook(json.dumps(payload, indent=2), SECRET))
    assert len(recorder.events()) == 2


def test_window_zero_turns_dedupe_off(recorder: Recorder) -> None:
    client = make_app(POSTSTACK_WEBHOOK_DEDUPE_SECONDS=0).test_client()
    body, headers = sign_webhook(make_event_payload("email.sent", "em_1"), SECRET)
    post(client, body, headers)
    post(client, body, headers)
    assert len(recorder.events()) == 2


def test_the_window_expires(
    monkeypatch: pytest.MonkeyPatch, recorder: Recorder
) -> None:
    now = [1000.0]
    monkeypatch.setattr(time, "monotonic", lambda: now[0])
    client = make_app(POSTSTACK_WEBHOOK_DEDUPE_SECONDS=60).test_client()
    body, headers = sign_webhook(make_event_payload("email.sent", "em_1"), SECRET)
    post(client, body, headers)
    now[0] += 59
    assert post(client, body, headers).json == {"ok": True, "duplicate": True}
    now[0] += 2
    assert post(client, body, headers).json == {"ok": True}
    assert len(recorder.events()) == 2


def test_the_redis_window_expires(redis_url: str, recorder: Recorder) -> None:
    client = redis_app(redis_url, POSTSTACK_WEBHOOK_DEDUPE_SECONDS=1).test_client()
    body, headers = sign_webhook(make_event_payload("email.sent", "em_1"), SECRET)
    post(client, body, headers)
    assert post(client, body, headers).json == {"ok": True, "duplicate": True}
    conn = redis.Redis.from_url(redis_url)
    (key,) = conn.keys("poststack:webhook:*")
    assert 0 < conn.pttl(key) <= 1000
    time.sleep(1.1)
    assert post(client, body, headers).json == {"ok": True}
    assert len(recorder.events()) == 2


def test_memory_store_is_bounded() -> None:
    claims = MemoryClaims(limit=10)
    for n in range(25):
        assert claims.claim(str(n), 60) == "new"
        claims.keep(str(n), 60)
    assert len(claims) == 10
    assert claims.claim("24", 60) == "done"
    assert claims.claim("0", 60) == "new"  # forgotten: at least once


def test_redis_down_is_503_and_dispatches_nothing(
    recorder: Recorder, caplog: pytest.LogCaptureFixture
) -> None:
    app = make_app(POSTSTACK_REDIS_URL="redis://:pw0rd@127.0.0.1:1/0")
    body, headers = sign_webhook(make_event_payload("email.sent", "em_1"), SECRET)
    response = post(app.test_client(), body, headers)
    assert response.status_code == 503 and response.headers["Retry-After"] == "60"
    assert recorder.calls == []
    assert "unavailable" in caplog.text and "pw0rd" not in caplog.text


@pytest.mark.parametrize("store", ["memory", "redis"])
def test_receiver_error_is_500_and_the_retry_is_dispatched(
    store: str,
    redis_url: str,
    recorder: Recorder,
    caplog: pytest.LogCaptureFixture,
) -> None:
    app = redis_app(redis_url, POSTSTACK_WEBHOOK_DEDUPE_STORE=store)
    client = app.test_client()
    body, headers = sign_webhook(make_event_payload("email.bounced", "em_1"), SECRET)
    recorder.raise_next = 1
    response = post(client, body, headers)
    assert response.status_code == 500
    assert response.json == {"error": "receiver error"}
    assert "receiver failed" in caplog.text and "email.bounced" in caplog.text
    assert post(client, body, headers).json == {"ok": True}
    assert post(client, body, headers).json == {"ok": True, "duplicate": True}
    assert [e.email_id for e in recorder.events()] == ["em_1"]


def test_a_copy_arriving_while_the_first_runs_is_told_to_retry() -> None:
    app = make_app()
    client = app.test_client()
    body, headers = sign_webhook(make_event_payload("email.sent", "em_1"), SECRET)
    answers: list[int] = []

    def meanwhile(sender: Flask, event: WebhookEvent, **extra: t.Any) -> None:
        if not answers:
            answers.append(post(app.test_client(), body, headers).status_code)

    with signals.webhook_received.connected_to(meanwhile, sender=app):
        assert post(client, body, headers).status_code == 200
    assert answers == [503]


@pytest.mark.parametrize("store", ["memory", "redis"])
def test_a_copy_is_told_to_retry_however_long_the_dispatch_takes(
    store: str, redis_url: str
) -> None:
    # The claim lasts min(window, 300) s = 2 s unless renewed; the receiver
    # runs longer than that, and the copy arrives after it would have lapsed.
    app = redis_app(
        redis_url,
        POSTSTACK_WEBHOOK_DEDUPE_STORE=store,
        POSTSTACK_WEBHOOK_DEDUPE_SECONDS=2,
    )
    body, headers = sign_webhook(make_event_payload("email.sent", "em_1"), SECRET)
    dispatches: list[str] = []
    answers: list[int] = []

    def slow(sender: Flask, event: WebhookEvent, **extra: t.Any) -> None:
        dispatches.append(event.type)
        if not answers:
            time.sleep(3)
            answers.append(post(app.test_client(), body, headers).status_code)

    with signals.webhook_received.connected_to(slow, sender=app):
        assert post(app.test_client(), body, headers).status_code == 200
        again = post(app.test_client(), body, headers)
    assert answers == [503]
    assert again.json == {"ok": True, "duplicate": True}
    assert dispatches == ["email.sent"]
    if store == "redis":
        (key,) = redis.Redis.from_url(redis_url).keys("poststack:webhook:*")
        assert redis.Redis.from_url(redis_url).get(key) == b"done"


def _claims(store: str, redis_url: str) -> ClaimStore:
    if store == "redis":
        return RedisClaims(redis.Redis.from_url(redis_url), redis_url)
    return MemoryClaims()


@pytest.mark.parametrize("store", ["memory", "redis"])
def test_a_renewed_claim_holds_and_lapses_once_nothing_renews_it(
    store: str, redis_url: str
) -> None:
    claims = _claims(store, redis_url)
    assert claims.claim("k", 1) == "new"
    renewal = Renewal(claims, "k", 1, every=0.2).start()
    time.sleep(1.5)
    assert claims.claim("k", 1) == "busy"
    # The process dies: no release, no keep, no more renewals.
    renewal.stop()
    time.sleep(1.3)
    assert claims.claim("k", 1) == "new"


@pytest.mark.parametrize("store", ["memory", "redis"])
def test_renewing_leaves_a_kept_or_missing_record_alone(
    store: str, redis_url: str
) -> None:
    claims = _claims(store, redis_url)
    assert claims.renew("missing", 60) is False
    assert claims.claim("k", 60) == "new"
    assert claims.renew("k", 60) is True
    claims.keep("k", 1)
    assert claims.renew("k", 60) is False
    time.sleep(1.1)
    assert claims.claim("k", 60) == "new"  # the kept record's own expiry held


# The sandbox's duplicates -------------------------------------------------------


def test_e2e_duplicate_deliveries_dispatched_once(
    sandbox: Sandbox, switch: tuple[Switch, str], recorder: Recorder, redis_url: str
) -> None:
    wsgi, url = switch
    sandbox.configure(webhook_duplicates=2)
    _, secret = create_webhook(sandbox, url, ["email.delivered"])
    wsgi.app = app = sandbox_app(sandbox, secret)
    email_id = send(app)
    assert sandbox.wait_for(lambda: statuses(sandbox, email_id) == [200])
    assert sandbox.wait_for(lambda: sandbox.stats["webhook_attempts"] == 3)
    assert [e.email_id for e in recorder.events()] == [email_id]
