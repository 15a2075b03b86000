"""The webhook endpoint: verification, events, signals, dedupe, end to end."""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import logging
import threading
import typing as t
from datetime import datetime
from datetime import timezone

import poststack
import pytest
import redis
from blinker import NamedSignal
from flask import Flask
from flask.testing import FlaskClient
from hypothesis import given
from hypothesis import HealthCheck
from hypothesis import settings
from hypothesis import strategies as st
from werkzeug.serving import make_server
from werkzeug.test import TestResponse

from flask_poststack import ConfigurationError
from flask_poststack import get_state
from flask_poststack import PostStack
from flask_poststack import signals
from flask_poststack.sandbox import Sandbox
from flask_poststack.webhooks import make_event_payload
from flask_poststack.webhooks import parse_event
from flask_poststack.webhooks import sign_webhook
from flask_poststack.webhooks import verify_webhook
from flask_poststack.webhooks import webhook_blueprint
from flask_poststack.webhooks import WebhookEvent

SECRET = "whsec_test_0123456789"
OTHER = "whsec_other_9876543210"
URL = "/poststack/webhooks"
TEST_KEY = "sk_test_webhooks0123"
LIVE_KEY = "sk_live_webhooks0123"


def make_app(**config: t.Any) -> Flask:
    app = Flask(__name__)
    app.config.update(TESTING=True, POSTSTACK_WEBHOOK_SECRET=SECRET)
    app.config.update(config)
    PostStack(app)
    return app


class Recorder:
    """Collects ``(signal name, sender, event)`` from the given signals."""

    def __init__(self, *watched: NamedSignal) -> None:
        self.watched = watched or (signals.webhook_received,)
        self.calls: list[tuple[str, t.Any, WebhookEvent]] = []
        self.lock = threading.Lock()
        self.raise_next = 0

    def receiver(self, name: str) -> t.Callable[..., None]:
        def receive(sender: t.Any, event: WebhookEvent, **extra: t.Any) -> None:
            with self.lock:
                if self.raise_next:
                    self.raise_next -= 1
                    raise RuntimeError("receiver failed")
                self.calls.append((name, sender, event))

        return receive

    @contextlib.contextmanager
    def connected(self) -> t.Iterator[Recorder]:
        with contextlib.ExitStack() as stack:
            for signal in self.watched:
                stack.enter_context(signal.connected_to(self.receiver(signal.name)))
            yield self

    def events(self, name: str = "webhook-received") -> list[WebhookEvent]:
        with self.lock:
            return [event for n, _, event in self.calls if n == name]


@pytest.fixture
def recorder() -> t.Iterator[Recorder]:
    with Recorder(
        signals.webhook_received,
        signals.webhook_delivered,
        signals.webhook_bounced,
        signals.webhook_deferred,
        signals.webhook_complained,
        signals.webhook_delivery_failed,
    ).connected() as rec:
        yield rec


def post(
    client: FlaskClient, body: bytes, headers: dict[str, str], url: str = URL
) -> TestResponse:
    return client.post(url, data=body, headers=headers)


# Registration ---------------------------------------------------------------


def test_registered_by_init_app_when_a_secret_is_set() -> None:
    app = make_app()
    rules = {r.rule: r for r in app.url_map.iter_rules()}
    assert rules[URL].endpoint == "poststack_webhooks.receive"
    assert {"POST", "HEAD"} <= set(rules[URL].methods or ())
    assert app.config["POSTSTACK_WEBHOOK_URL"] == URL
    view = app.view_functions["poststack_webhooks.receive"]
    # The path Flask-WTF's csrf.exempt("...") takes, as the docs say.
    assert f"{view.__module__}.{view.__name__}" == (
        "flask_poststack.webhooks.receive_webhook"
    )


def test_not_registered_without_a_secret() -> None:
    app = make_app(POSTSTACK_WEBHOOK_SECRET=None)
    assert "poststack_webhooks" not in app.blueprints
    assert app.test_client().post(URL).status_code == 404


def test_url_from_config() -> None:
    app = make_app(POSTSTACK_WEBHOOK_URL="/hooks/ps")
    body, headers = sign_webhook(make_event_payload("email.sent", "em_1"), SECRET)
    assert post(app.test_client(), body, headers, "/hooks/ps").status_code == 200


def test_url_must_be_a_path() -> None:
    with pytest.raises(ConfigurationError, match="POSTSTACK_WEBHOOK_URL"):
        make_app(POSTSTACK_WEBHOOK_URL="hooks")


def test_register_it_yourself(recorder: Recorder) -> None:
    app = make_app(POSTSTACK_WEBHOOK_REGISTER=False)
    assert "poststack_webhooks" not in app.blueprints
    app.register_blueprint(webhook_blueprint("/in"), url_prefix="/api")
    body, headers = sign_webhook(make_event_payload("email.sent", "em_1"), SECRET)
    assert post(app.test_client(), body, headers, "/api/in").status_code == 200
    assert [e.email_id for e in recorder.events()] == ["em_1"]


def test_register_twice_under_another_name() -> None:
    app = make_app()
    app.register_blueprint(webhook_blueprint("/second", name="ps_second"))
    body, headers = sign_webhook(make_event_payload("email.sent", "em_1"), SECRET)
    assert post(app.test_client(), body, headers, "/second").status_code == 200


def test_name_collision_is_a_clear_error() -> None:
    app = make_app()
    with pytest.raises(ValueError, match="POSTSTACK_WEBHOOK_REGISTER"):
        app.register_blueprint(webhook_blueprint())


def test_name_taken_by_an_app_blueprint_before_init_app() -> None:
    from flask import Blueprint

    app = Flask(__name__)
    app.config.update(TESTING=True, POSTSTACK_WEBHOOK_SECRET=SECRET)
    app.register_blueprint(Blueprint("poststack_webhooks", __name__))
    with pytest.raises(ValueError, match="already registered"):
        PostStack(app)


def test_blueprint_needs_init_app() -> None:
    app = Flask(__name__)
    with pytest.raises(RuntimeError, match="init_app"):
        app.register_blueprint(webhook_blueprint())


def test_register_without_a_secret_refuses_and_logs_once(
    caplog: pytest.LogCaptureFixture, recorder: Recorder
) -> None:
    app = make_app(POSTSTACK_WEBHOOK_SECRET=None, POSTSTACK_WEBHOOK_REGISTER=True)
    client = app.test_client()
    body, headers = sign_webhook(make_event_payload("email.sent", "em_1"), SECRET)
    with caplog.at_level(logging.ERROR, "flask_poststack.webhooks"):
        assert post(client, body, headers).status_code == 401
        assert post(client, body, headers).status_code == 401
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1 and "POSTSTACK_WEBHOOK_SECRET" in errors[0].message
    assert recorder.calls == []


# The user's view of it --------------------------------------------------------


def test_user_style_test_with_sign_webhook() -> None:
    """What the docs show: a test of the app's own bounce handler."""
    app = make_app()
    undeliverable: set[str] = set()

    def on_bounce(sender: Flask, event: WebhookEvent, **extra: t.Any) -> None:
        if event.recipient:
            undeliverable.add(event.recipient.lower())

    with signals.webhook_bounced.connected_to(on_bounce, sender=app):
        payload = make_event_payload(
            "email.bounced", "em_123", recipient="Gone@Example.com"
        )
        body, headers = sign_webhook(payload, SECRET)
        response = app.test_client().post(URL, data=body, headers=headers)
    assert response.status_code == 200 and response.json == {"ok": True}
    assert undeliverable == {"gone@example.com"}


def test_sign_webhook_matches_the_sdk_verifier() -> None:
    from poststack.resources.webhooks import WebhooksResource

    body, headers = sign_webhook({"b": 1, "a": "é"}, [SECRET, OTHER])
    assert json.loads(body) == {"b": 1, "a": "é"}
    header = headers["X-PostStack-Signature"]
    assert header.count("sha256=") == 2
    assert WebhooksResource.verify(body, header, SECRET)
    assert WebhooksResource.verify(body, header, OTHER)
    assert headers["Content-Type"] == "application/json"
    assert sign_webhook("x", SECRET)[0] == sign_webhook(b"x", SECRET)[0] == b"x"


def test_signals_carry_the_app_and_the_event(recorder: Recorder) -> None:
    app = make_app()
    when = datetime(2026, 3, 1, 12, 0, tzinfo=timezone.utc)
    payload = make_event_payload(
        "email.delivered", "em_42", recipient="a@b.test", timestamp=when
    )
    body, headers = sign_webhook(payload, SECRET)
    assert post(app.test_client(), body, headers).status_code == 200
    (received,) = recorder.events()
    assert recorder.events("webhook-delivered") == [received]
    assert recorder.calls[0][1] is app
    assert received == WebhookEvent(
        type="email.delivered",
        email_id="em_42",
        timestamp=when,
        recipient="a@b.test",
        id=payload["id"],
        payload=payload,
    )
    assert received.data["email_id"] == "em_42"


@pytest.mark.parametrize(
    ("kind", "family"),
    [
        ("email.delivered", "webhook-delivered"),
        ("email.bounced", "webhook-bounced"),
        ("email.soft_bounced", "webhook-deferred"),
        ("email.deferred", "webhook-deferred"),
        ("email.complained", "webhook-complained"),
        ("email.failed", "webhook-delivery-failed"),
        ("email.sent", "webhook-sent"),
        ("email.opened", "webhook-opened"),
        ("email.clicked", "webhook-clicked"),
        ("contact.created", None),
        ("something.new", None),
    ],
)
def test_family_signals(kind: str, family: str | None) -> None:
    app = make_app()
    families = [
        s
        for s in vars(signals).values()
        if isinstance(s, NamedSignal) and s.name.startswith("webhook-")
    ]
    with Recorder(*families).connected() as rec:
        body, headers = sign_webhook(make_event_payload(kind, "em_1"), SECRET)
        assert post(app.test_client(), body, headers).status_code == 200
    names = [name for name, _, _ in rec.calls]
    assert names == ["webhook-received"] + ([family] if family else [])
    assert rec.calls[0][2].type == kind


# Parsing -----------------------------------------------------------------------


def test_parse_the_sandbox_envelope() -> None:
    event = parse_event(
        {
            "id": "evt_1",
            "type": "email.bounced",
            "timestamp": "2026-01-02T03:04:05.678Z",
            "data": {
                "email_id": "em_9",
                "to": ["x@y.test", "z@y.test"],
                "metadata": {"recipient": "z@y.test"},
            },
        }
    )
    assert (event.type, event.id, event.email_id, event.recipient) == (
        "email.bounced",
        "evt_1",
        "em_9",
        "z@y.test",
    )
    assert event.timestamp == datetime(2026, 1, 2, 3, 4, 5, 678000, timezone.utc)


@pytest.mark.parametrize(
    ("payload", "expected"),
    [
        # Flat, as the sandbox's custom envelope test sends it.
        (
            {"event": "email.queued", "email_id": "em_1", "to": ["a@b.test"]},
            ("email.queued", "em_1", "a@b.test", None),
        ),
        (
            {"type": "email.opened", "emailId": "em_2"},
            ("email.opened", "em_2", None, None),
        ),
        # An em_ id names the email, never the event (events share it).
        (
            {"event": "email.clicked", "id": "em_3"},
            ("email.clicked", "em_3", None, None),
        ),
        (
            {"event": "email.delivered", "id": 123},
            ("email.delivered", None, None, "123"),
        ),
        (
            {
                "eventType": "email.sent",
                "data": {"id": "em_4", "recipient": "r@s.test"},
            },
            ("email.sent", "em_4", "r@s.test", None),
        ),
        (
            {"type": "x", "data": {"email": {"id": "em_5"}}, "event_id": "e5"},
            ("x", "em_5", None, "e5"),
        ),
        ({}, ("", None, None, None)),
        (
            {"type": 5, "id": True, "data": [1], "email_id": ["em_x"], "to": 3},
            ("", None, None, None),
        ),
    ],
)
def test_parse_other_envelopes(
    payload: dict[str, t.Any], expected: tuple[str, str | None, str | None, str | None]
) -> None:
    event = parse_event(payload)
    assert (event.type, event.email_id, event.recipient, event.id) == expected
    assert event.payload is payload


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (1767225600, datetime(2026, 1, 1, tzinfo=timezone.utc)),
        (1767225600000, datetime(2026, 1, 1, tzinfo=timezone.utc)),
        ("2026-01-01T00:00:00", datetime(2026, 1, 1, tzinfo=timezone.utc)),
        ("2026-01-01T01:00:00+01:00", datetime(2026, 1, 1, tzinfo=timezone.utc)),
        # The same answers on every Python (fromisoformat differs by version).
        (
            "2026-01-02T03:04:05.12Z",
            datetime(2026, 1, 2, 3, 4, 5, 120000, timezone.utc),
        ),
        (
            "2026-01-02T03:04:05.1234567Z",
            datetime(2026, 1, 2, 3, 4, 5, 123456, timezone.utc),
        ),
        ("20260102T030405Z", None),
        ("2026-13-01T00:00:00Z", None),
        ("yesterday", None),
        (10**30, None),
        (float("nan"), None),
        (True, None),
        (None, None),
    ],
)
def test_parse_timestamps(value: object, expected: datetime | None) -> None:
    assert parse_event({"timestamp": value}).timestamp == expected


@pytest.mark.parametrize(
    "body",
    [
        rb'{"id": "\ud800", "type": "x"}',
        rb'{"type": "\udfff", "data": {"email_id": "\ud800", "to": "\ud800@x"}}',
        b'{"timestamp": 1e400, "id": 99999999999999999999999999999}',
        b'{"timestamp": "9999-12-31T23:59:59-23:59", "data": null}',
    ],
)
def test_odd_but_valid_json_is_dispatched(body: bytes, recorder: Recorder) -> None:
    response = post(make_app().test_client(), *sign_webhook(body, SECRET))
    assert response.status_code == 200
    assert len(recorder.events()) == 1


def test_verify_webhook_for_a_view_of_your_own() -> None:
    from flask_poststack import WebhookVerificationError

    body, headers = sign_webhook(make_event_payload("email.sent", "em_1"), OTHER)
    signature = headers["X-PostStack-Signature"]
    assert verify_webhook(body, signature, [SECRET, OTHER]).email_id == "em_1"
    with pytest.raises(WebhookVerificationError):
        verify_webhook(body, signature, [SECRET])
    with pytest.raises(WebhookVerificationError):
        verify_webhook(body, None, [OTHER])
    with pytest.raises(WebhookVerificationError):
        verify_webhook(body, signature, [])
    bad, headers = sign_webhook(b"[1]", OTHER)
    with pytest.raises(ValueError, match="JSON object"):
        verify_webhook(bad, headers["X-PostStack-Signature"], [OTHER])


# Answers -----------------------------------------------------------------------


def test_head_get_and_options() -> None:
    client = make_app().test_client()
    assert client.head(URL).status_code == 200
    assert client.get(URL).status_code == 405
    assert client.put(URL).status_code == 405
    assert client.options(URL).status_code == 200


@pytest.mark.parametrize(
    "body", [b"not json", b"", b"\xff\xfe\x00", b"[1, 2]", b'"text"', b"[" * 100_000]
)
def test_signed_but_not_a_json_object_is_400(body: bytes, recorder: Recorder) -> None:
    client = make_app().test_client()
    response = post(client, *sign_webhook(body, SECRET))
    assert response.status_code == 400 and "error" in t.cast(
        "dict[str, str]", response.json
    )
    assert recorder.calls == []


def _hex(body: bytes, secret: str, algo: str = "sha256") -> str:
    return hmac.new(secret.encode(), body, getattr(hashlib, algo)).hexdigest()


BODY = json.dumps(make_event_payload("email.delivered", "em_7")).encode()


@pytest.mark.parametrize(
    ("body", "header"),
    [
        pytest.param(BODY, "sha256=" + "ab" * 32, id="forged"),
        pytest.param(BODY + b" ", "sha256=" + _hex(BODY, SECRET), id="tampered"),
        pytest.param(
            BODY.replace(b"em_7", b"em_8"), "sha256=" + _hex(BODY, SECRET), id="edited"
        ),
        pytest.param(BODY, "sha256=" + _hex(BODY, OTHER), id="wrong-secret"),
        pytest.param(BODY, None, id="missing"),
        pytest.param(BODY, "", id="empty"),
        pytest.param(BODY, "sha512=" + _hex(BODY, SECRET, "sha512"), id="sha512-only"),
        pytest.param(BODY, _hex(BODY, SECRET), id="no-scheme"),
        pytest.param(BODY, "sha256=" + _hex(BODY, SECRET)[:-1], id="truncated"),
        pytest.param(BODY, "sha256=" + _hex(BODY, SECRET.upper()), id="case"),
    ],
)
def test_bad_signatures_are_401_and_dispatch_nothing(
    body: bytes,
    header: str | None,
    recorder: Recorder,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    client = make_app().test_client()
    headers = {"Content-Type": "application/json"}
    if header is not None:
        headers["X-PostStack-Signature"] = header
    response = post(client, body, headers)
    assert response.status_code == 401
    assert response.json == {"error": "invalid signature"}
    assert recorder.calls == []
    assert SECRET not in caplog.text


def test_signature_details_the_sdk_allows() -> None:
    client = make_app().test_client()
    good = _hex(BODY, SECRET)
    for header in (
        f"sha512=00, sha256={good.upper()}",
        f"sha256=zz,sha256=abc,sha256={good}",
        f"sha256={'0' * 64}, sha256={good}",
    ):
        headers = {"X-PostStack-Signature": header}
        assert post(client, BODY, headers).status_code == 200, header


# Rotation ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("configured", "signed_with", "status"),
    [
        ([SECRET, OTHER], [SECRET, OTHER], 200),  # both sides rotated
        ([OTHER], [SECRET, OTHER], 200),  # app still on the old one, in grace
        ([SECRET], [SECRET, OTHER], 200),  # app already on the new one
        ([SECRET, OTHER], [SECRET], 200),  # grace over, app still lists both
        ([OTHER], [SECRET], 401),  # grace over, app only has the old one
        (f"{SECRET}, {OTHER}", [OTHER], 200),  # a comma-separated setting
    ],
)
def test_rotation(
    configured: list[str] | str, signed_with: list[str], status: int
) -> None:
    client = make_app(POSTSTACK_WEBHOOK_SECRET=configured).test_client()
    body, headers = sign_webhook(make_event_payload("email.sent", "em_1"), signed_with)
    assert post(client, body, headers).status_code == status


# Dedupe ------------------------------------------------------------------------


def redis_app(redis_url: str, **config: t.Any) -> Flask:
    return make_app(POSTSTACK_REDIS_URL=redis_url, **config)


def test_store_follows_the_redis_setting(
    redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert make_app().config["POSTSTACK_WEBHOOK_DEDUPE_STORE"] == "memory"
    assert redis_app(redis_url).config["POSTSTACK_WEBHOOK_DEDUPE_STORE"] == "redis"
    forced = redis_app(redis_url, POSTSTACK_WEBHOOK_DEDUPE_STORE="Memory")
    assert get_state(forced).settings.webhook_dedupe_store == "memory"
    monkeypatch.setenv("POSTSTACK_REDIS_URL", redis_url)
    assert make_app().config["POSTSTACK_WEBHOOK_DEDUPE_STORE"] == "redis"
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
    monkeypatch.setattr("flask_poststack.webhooks.time.monotonic", lambda: now[0])
    client = make_app(POSTSTACK_WEBHOOK_DEDUPE_SECONDS=60).test_client()
    body, headers = sign_webhook(make_event_payload("email.sent", "em_1"), SECRET)
    post(client, body, headers)
    now[0] += 59
    assert post(client, body, headers).json == {"ok": True, "duplicate": True}
    now[0] += 2
    assert post(client, body, headers).json == {"ok": True}
    assert len(recorder.events()) == 2


def test_memory_store_is_bounded() -> None:
    from flask_poststack.webhooks import _MemoryClaims

    claims = _MemoryClaims(limit=10)
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


# Fuzzing -----------------------------------------------------------------------

# Lone surrogates included: JSON can carry them ("\ud800").
# (st.text() never draws them, so the strings are joined by hand.)
_any_text = st.lists(
    st.characters() | st.sampled_from(["\ud800", "\udfff"]), max_size=20
).map("".join) | st.sampled_from(["em_1", "evt_1", "a@b.test"])
_json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | _any_text,
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(st.text(max_size=10), inner, max_size=4)
    ),
    max_leaves=12,
)
_payloads = st.fixed_dictionaries(
    {},
    optional={
        "id": _json_values | _any_text,
        "type": st.sampled_from(["email.delivered", "email.bounced", "x"])
        | _json_values,
        "event": _json_values,
        "timestamp": _json_values | st.sampled_from(["2026-01-01T00:00:00Z", "x"]),
        "data": _json_values
        | st.dictionaries(
            st.sampled_from(["email_id", "emailId", "id", "to", "recipient", "email"]),
            _json_values | st.text(max_size=12),
        ),
    },
)
_bodies = (
    st.binary(max_size=300)
    | _payloads.map(lambda p: json.dumps(p).encode())
    | _json_values.map(lambda v: json.dumps(v).encode())
)
_header_text = st.text(
    st.characters(codec="latin-1", exclude_categories=["Cc"]), max_size=120
)


@st.composite
def _deliveries(draw: st.DrawFn) -> tuple[bytes, str | None, bool]:
    body = draw(_bodies)
    good = "sha256=" + _hex(body, SECRET)
    choice = draw(
        st.sampled_from(["none", "text", "good", "good", "other-body", "mixed"])
    )
    if choice == "none":
        return body, None, False
    if choice == "text":
        return body, draw(_header_text), False
    if choice == "good":
        return body, good, True
    if choice == "other-body":
        other = draw(_bodies.filter(lambda b: b != body))
        return body, "sha256=" + _hex(other, SECRET), False
    junk = draw(_header_text)
    return body, f"{junk},{good}", True


@settings(
    max_examples=200,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(delivery=_deliveries())
def test_fuzz_never_500_never_unsigned_dispatch(
    delivery: tuple[bytes, str | None, bool],
) -> None:
    body, header, signed = delivery
    app = make_app(POSTSTACK_WEBHOOK_DEDUPE_SECONDS=0)
    headers = {} if header is None else {"X-PostStack-Signature": header}
    with Recorder().connected() as rec:
        response = post(app.test_client(), body, headers)
    try:
        payload = json.loads(body)
    except (ValueError, RecursionError):
        payload = None
    is_object = isinstance(payload, dict)
    if not signed:
        assert response.status_code == 401
        assert rec.calls == []
    elif not is_object:
        assert response.status_code == 400
        assert rec.calls == []
    else:
        assert response.status_code == 200
        (dispatched,) = rec.events()
        assert json.dumps(dispatched.payload) == json.dumps(payload)  # NaN-proof


# End to end: the sandbox delivers to a served app ------------------------------


@contextlib.contextmanager
def serve(app: t.Callable[..., t.Any]) -> t.Iterator[str]:
    """Serve a WSGI app on 127.0.0.1 in a thread; yield its base URL."""
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.05}
    )
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


class Switch:
    """A WSGI app that forwards to whichever Flask app is current."""

    def __init__(self) -> None:
        self.app: Flask | None = None

    def __call__(self, environ: t.Any, start_response: t.Any) -> t.Any:
        assert self.app is not None
        return self.app(environ, start_response)


@pytest.fixture
def switch() -> t.Iterator[tuple[Switch, str]]:
    wsgi = Switch()
    with serve(wsgi) as base:
        yield wsgi, base + URL


def sandbox_app(
    sandbox: Sandbox, secret: str | list[str], key: str = TEST_KEY
) -> Flask:
    return make_app(
        POSTSTACK_API_KEY=key,
        POSTSTACK_BASE_URL=sandbox.base_url,
        POSTSTACK_SUPPRESS_SEND=False,
        POSTSTACK_WEBHOOK_SECRET=secret,
    )


def create_webhook(sandbox: Sandbox, url: str, events: list[str]) -> tuple[int, str]:
    with poststack.PostStack(api_key=TEST_KEY, base_url=sandbox.base_url) as client:
        created = client.webhooks.create({"url": url, "events": events})
    return created["webhook"]["id"], created["signingSecret"]


def send(app: Flask, to: str = "bob@example.com") -> str:
    sent = app.extensions["poststack"].emails.send(
        {
            "from": "Ada <ada@example.com>",
            "to": [to],
            "subject": "Hello",
            "html": "<p>Hi</p>",
        }
    )
    return t.cast(str, sent["id"])


def statuses(sandbox: Sandbox, email_id: str) -> list[int | None]:
    return [
        d["statusCode"]
        for d in sandbox.deliveries
        if d["payload"].get("data", {}).get("email_id") == email_id
    ]


def test_e2e_delivered_after_a_send(
    sandbox: Sandbox, switch: tuple[Switch, str], recorder: Recorder
) -> None:
    wsgi, url = switch
    _, secret = create_webhook(sandbox, url, ["*"])
    wsgi.app = app = sandbox_app(sandbox, secret)
    email_id = send(app)
    assert sandbox.wait_for(lambda: recorder.events("webhook-delivered"))
    (event,) = recorder.events("webhook-delivered")
    assert event.email_id == email_id and event.id and event.id.startswith("evt_")
    assert event.recipient == "bob@example.com"
    assert isinstance(event.timestamp, datetime)
    assert sandbox.wait_for(lambda: len(recorder.events()) == 3)
    assert sorted(e.type for e in recorder.events()) == [
        "email.delivered",
        "email.queued",
        "email.sent",
    ]
    assert all(call[1] is app for call in recorder.calls)
    assert sandbox.wait_for(lambda: statuses(sandbox, email_id) == [200] * 3)


def test_e2e_bounce_by_injection(
    sandbox: Sandbox, switch: tuple[Switch, str], recorder: Recorder
) -> None:
    wsgi, url = switch
    _, secret = create_webhook(sandbox, url, ["email.bounced", "email.delivered"])
    wsgi.app = app = sandbox_app(sandbox, secret, key=LIVE_KEY)
    sandbox.outcomes.add("bounced", "*@bounce.example")
    email_id = send(app, to="Gone@Bounce.example")
    assert sandbox.wait_for(lambda: recorder.events("webhook-bounced"))
    (event,) = recorder.events("webhook-bounced")
    assert event.type == "email.bounced" and event.email_id == email_id
    assert event.recipient == "Gone@Bounce.example"
    assert recorder.events("webhook-delivered") == []


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


def test_e2e_receiver_error_then_retry(
    sandbox: Sandbox, switch: tuple[Switch, str], recorder: Recorder
) -> None:
    wsgi, url = switch
    sandbox.configure(webhook_retry_base=0.05)
    hook_id, secret = create_webhook(sandbox, url, ["email.delivered"])
    wsgi.app = app = sandbox_app(sandbox, secret)
    recorder.raise_next = 1
    email_id = send(app)
    assert sandbox.wait_for(
        lambda: [d["deliveredAt"] is not None for d in sandbox.deliveries] == [True]
    )
    (delivery,) = sandbox.deliveries
    assert delivery["webhookId"] == hook_id
    assert delivery["attempts"] == 2 and delivery["statusCode"] == 200
    assert [e.email_id for e in recorder.events()] == [email_id]


def test_e2e_rotation(
    sandbox: Sandbox, switch: tuple[Switch, str], recorder: Recorder
) -> None:
    wsgi, url = switch
    sandbox.configure(webhook_max_attempts=1)
    hook_id, old = create_webhook(sandbox, url, ["email.delivered"])
    with poststack.PostStack(api_key=TEST_KEY, base_url=sandbox.base_url) as client:
        new = client.webhooks.rotate_secret(hook_id)["signingSecret"]

    def delivered_to(secrets: list[str]) -> int | None:
        wsgi.app = app = sandbox_app(sandbox, secrets)
        email_id = send(app)
        assert sandbox.wait_for(
            lambda: [s is not None for s in statuses(sandbox, email_id)] == [True]
        )
        (status,) = statuses(sandbox, email_id)
        return status

    # The grace window: every delivery is signed with both secrets.
    assert delivered_to([new, old]) == 200
    assert delivered_to([old]) == 200
    assert delivered_to([new]) == 200
    with poststack.PostStack(api_key=TEST_KEY, base_url=sandbox.base_url) as client:
        newest = client.webhooks.rotate_secret(hook_id, grace_hours=0)["signingSecret"]
    # Grace over: only the newest secret signs.
    assert delivered_to([new]) == 401
    assert delivered_to([newest, new]) == 200
    assert len(recorder.events()) == 4


@pytest.mark.parametrize("mode", ["wrong_secret", "tampered", "sha512"])
def test_e2e_bad_signatures_from_the_sandbox(
    sandbox: Sandbox, switch: tuple[Switch, str], recorder: Recorder, mode: str
) -> None:
    wsgi, url = switch
    sandbox.configure(webhook_signature=mode, webhook_max_attempts=1)
    _, secret = create_webhook(sandbox, url, ["email.delivered"])
    wsgi.app = app = sandbox_app(sandbox, secret)
    email_id = send(app)
    assert sandbox.wait_for(lambda: statuses(sandbox, email_id) == [401])
    assert recorder.calls == []
