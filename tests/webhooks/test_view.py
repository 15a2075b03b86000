"""The endpoint: registration, answers, the signal, and the sandbox's deliveries."""

from __future__ import annotations

import json
import logging
import typing as t
from datetime import datetime
from datetime import timezone

import pytest
from flask import Flask
from hypothesis import given
from hypothesis import HealthCheck
from hypothesis import settings
from hypothesis import strategies as st

from flask_poststack import ConfigurationError
from flask_poststack import PostStack
from flask_poststack import signals
from flask_poststack.sandbox import Sandbox
from flask_poststack.webhooks import make_event_payload
from flask_poststack.webhooks import sign_webhook
from flask_poststack.webhooks import webhook_blueprint
from flask_poststack.webhooks import WebhookEvent

from .conftest import create_webhook
from .conftest import hex_digest
from .conftest import LIVE_KEY
from .conftest import make_app
from .conftest import post
from .conftest import Recorder
from .conftest import sandbox_app
from .conftest import SECRET
from .conftest import send
from .conftest import statuses
from .conftest import Switch
from .conftest import URL

# Registration -----------------------------------------------------------------


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


def _unregistered_warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.name == "flask_poststack.webhooks.view"
        and "answered 404" in r.getMessage()
    ]


def test_a_post_to_the_unregistered_endpoint_says_why_once_a_minute(
    caplog: pytest.LogCaptureFixture,
) -> None:
    app = make_app(POSTSTACK_WEBHOOK_SECRET=None)
    client = app.test_client()
    with caplog.at_level(logging.WARNING, "flask_poststack"):
        assert client.post(URL, data=b"{}").status_code == 404
        assert client.post(URL, data=b"{}").status_code == 404
        (line,) = _unregistered_warnings(caplog)
        assert caplog.records[-1].levelno == logging.WARNING
        assert f"A POST to {URL} (POSTSTACK_WEBHOOK_URL) answered 404" in line
        assert "because POSTSTACK_WEBHOOK_SECRET is not set" in line
        assert "POSTSTACK_WEBHOOK_REGISTER = False" in line
        limit = app.extensions["poststack.webhooks.unregistered"]
        limit.warned_at -= 61  # a minute later
        assert client.post(URL, data=b"{}").status_code == 404
        assert len(_unregistered_warnings(caplog)) == 2


def test_other_404s_log_nothing(caplog: pytest.LogCaptureFixture) -> None:
    app = make_app(POSTSTACK_WEBHOOK_SECRET=None)
    client = app.test_client()
    with caplog.at_level(logging.DEBUG, "flask_poststack"):
        assert client.post("/elsewhere").status_code == 404
        assert client.get(URL).status_code == 404
        assert client.head(URL).status_code == 404
    assert _unregistered_warnings(caplog) == []


def test_the_unregistered_warning_names_register_false_and_stops_once_registered(
    caplog: pytest.LogCaptureFixture,
) -> None:
    app = make_app(POSTSTACK_WEBHOOK_REGISTER=False)
    with caplog.at_level(logging.WARNING, "flask_poststack"):
        assert app.test_client().post(URL).status_code == 404
        (line,) = _unregistered_warnings(caplog)
        assert "because POSTSTACK_WEBHOOK_REGISTER is False" in line

    other = make_app(POSTSTACK_WEBHOOK_REGISTER=False)
    other.register_blueprint(webhook_blueprint("/hooks/poststack"))
    caplog.clear()
    with caplog.at_level(logging.WARNING, "flask_poststack"):
        assert other.test_client().post(URL).status_code == 404
    assert _unregistered_warnings(caplog) == []  # the endpoint is elsewhere


def test_the_apps_own_404_handler_still_answers() -> None:
    app = make_app(POSTSTACK_WEBHOOK_SECRET=None)

    @app.errorhandler(404)
    def not_found(error: Exception) -> tuple[str, int]:
        return "custom", 404

    response = app.test_client().post(URL)
    assert (response.status_code, response.data) == (404, b"custom")


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


# The signal ------------------------------------------------------------------


def test_user_style_test_with_sign_webhook() -> None:
    """What the docs show: a test of the app's own bounce handler."""
    app = make_app()
    undeliverable: set[str] = set()

    def on_bounce(sender: Flask, event: WebhookEvent, **extra: t.Any) -> None:
        if event.kind == "bounced" and event.recipient:
            undeliverable.add(event.recipient.lower())

    with signals.webhook_received.connected_to(on_bounce, sender=app):
        payload = make_event_payload(
            "email.bounced", "em_123", recipient="Gone@Example.com"
        )
        body, headers = sign_webhook(payload, SECRET)
        response = app.test_client().post(URL, data=body, headers=headers)
    assert response.status_code == 200 and response.json == {"ok": True}
    assert undeliverable == {"gone@example.com"}


def test_one_signal_for_every_event() -> None:
    webhook_signals = [n for n in signals.__all__ if n.startswith("webhook")]
    assert webhook_signals == ["webhook_received"]


def test_signals_carry_the_app_and_the_event(recorder: Recorder) -> None:
    app = make_app()
    when = datetime(2026, 3, 1, 12, 0, tzinfo=timezone.utc)
    payload = make_event_payload(
        "email.delivered", "em_42", recipient="a@b.test", timestamp=when
    )
    body, headers = sign_webhook(payload, SECRET)
    assert post(app.test_client(), body, headers).status_code == 200
    (received,) = recorder.events()
    assert recorder.calls[0][0] is app
    assert received == WebhookEvent(
        type="email.delivered",
        email_id="em_42",
        timestamp=when,
        recipient="a@b.test",
        id=payload["id"],
        payload=payload,
    )
    assert received.data["email_id"] == "em_42"


# Answers -----------------------------------------------------------------------


def test_head_get_and_options() -> None:
    client = make_app().test_client()
    assert client.head(URL).status_code == 200
    assert client.get(URL).status_code == 405
    assert client.put(URL).status_code == 405
    assert client.options(URL).status_code == 200


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
    good = "sha256=" + hex_digest(body, SECRET)
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
        return body, "sha256=" + hex_digest(other, SECRET), False
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


def test_e2e_delivered_after_a_send(
    sandbox: Sandbox, switch: tuple[Switch, str], recorder: Recorder
) -> None:
    wsgi, url = switch
    _, secret = create_webhook(sandbox, url, ["*"])
    wsgi.app = app = sandbox_app(sandbox, secret)
    email_id = send(app)
    assert sandbox.wait_for(lambda: recorder.events("delivered"))
    (event,) = recorder.events("delivered")
    assert event.email_id == email_id and event.id and event.id.startswith("evt_")
    assert event.recipient == "bob@example.com"
    assert isinstance(event.timestamp, datetime)
    assert sandbox.wait_for(lambda: len(recorder.events()) == 3)
    assert sorted(e.type for e in recorder.events()) == [
        "email.delivered",
        "email.queued",
        "email.sent",
    ]
    assert all(call[0] is app for call in recorder.calls)
    assert sandbox.wait_for(lambda: statuses(sandbox, email_id) == [200] * 3)


def test_e2e_bounce_by_injection(
    sandbox: Sandbox, switch: tuple[Switch, str], recorder: Recorder
) -> None:
    wsgi, url = switch
    _, secret = create_webhook(sandbox, url, ["email.bounced", "email.delivered"])
    wsgi.app = app = sandbox_app(sandbox, secret, key=LIVE_KEY)
    sandbox.outcomes.add("bounced", "*@bounce.example")
    email_id = send(app, to="Gone@Bounce.example")
    assert sandbox.wait_for(lambda: recorder.events("bounced"))
    (event,) = recorder.events("bounced")
    assert event.type == "email.bounced" and event.email_id == email_id
    assert event.recipient == "Gone@Bounce.example"
    assert recorder.events("delivered") == []


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
