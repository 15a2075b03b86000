"""Signatures: the checks, rotation, the warning, and signing for tests."""

from __future__ import annotations

import json
import logging
import time
import typing as t

import poststack
import pytest

from flask_poststack import WebhookVerificationError
from flask_poststack.sandbox import Sandbox
from flask_poststack.webhooks import make_event_payload
from flask_poststack.webhooks import sign_webhook
from flask_poststack.webhooks import verify_webhook

from .conftest import create_webhook
from .conftest import hex_digest
from .conftest import make_app
from .conftest import OTHER
from .conftest import post
from .conftest import Recorder
from .conftest import sandbox_app
from .conftest import SECRET
from .conftest import send
from .conftest import statuses
from .conftest import Switch
from .conftest import TEST_KEY


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


def test_verify_webhook_for_a_view_of_your_own() -> None:
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


BODY = json.dumps(make_event_payload("email.delivered", "em_7")).encode()


@pytest.mark.parametrize(
    ("body", "header"),
    [
        pytest.param(BODY, "sha256=" + "ab" * 32, id="forged"),
        pytest.param(BODY + b" ", "sha256=" + hex_digest(BODY, SECRET), id="tampered"),
        pytest.param(
            BODY.replace(b"em_7", b"em_8"),
            "sha256=" + hex_digest(BODY, SECRET),
            id="edited",
        ),
        pytest.param(BODY, "sha256=" + hex_digest(BODY, OTHER), id="wrong-secret"),
        pytest.param(BODY, None, id="missing"),
        pytest.param(BODY, "", id="empty"),
        pytest.param(
            BODY, "sha512=" + hex_digest(BODY, SECRET, "sha512"), id="sha512-only"
        ),
        pytest.param(BODY, hex_digest(BODY, SECRET), id="no-scheme"),
        pytest.param(BODY, "sha256=" + hex_digest(BODY, SECRET)[:-1], id="truncated"),
        pytest.param(BODY, "sha256=" + hex_digest(BODY, SECRET.upper()), id="case"),
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


def signature_warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.levelno == logging.WARNING and r.name.startswith("flask_poststack")
    ]


def test_a_bad_signature_logs_one_warning_a_minute_per_app(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    now = [1000.0]
    monkeypatch.setattr(time, "monotonic", lambda: now[0])
    one, two = make_app().test_client(), make_app().test_client()
    forged = {"X-PostStack-Signature": "sha256=" + hex_digest(BODY, OTHER)}
    for _ in range(3):
        assert post(one, BODY, forged).status_code == 401
    (line,) = signature_warnings(caplog)
    assert "POSTSTACK_WEBHOOK_SECRET" in line and "matches no secret" in line
    assert "0 held back" in line and "\n" not in line
    # Neither the secrets, the signature nor the body.
    for secret in (SECRET, OTHER, forged["X-PostStack-Signature"], "em_7"):
        assert secret not in caplog.text
    assert post(two, BODY, forged).status_code == 401  # another app: its own
    assert len(signature_warnings(caplog)) == 2
    now[0] += 59
    post(one, BODY, forged)
    assert len(signature_warnings(caplog)) == 2
    now[0] += 2
    post(one, BODY, forged)
    *_, last = signature_warnings(caplog)
    assert "matches no secret" in last and "3 held back" in last


def test_a_missing_signature_header_is_a_warning_of_its_own(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    now = [1000.0]
    monkeypatch.setattr(time, "monotonic", lambda: now[0])
    client = make_app().test_client()
    forged = {"X-PostStack-Signature": "sha256=" + hex_digest(BODY, OTHER)}
    assert post(client, BODY, forged).status_code == 401
    assert post(client, BODY, {}).status_code == 401  # the same minute
    wrong, missing = signature_warnings(caplog)
    assert "matches no secret" in wrong and "0 held back" in wrong
    assert "has no X-PostStack-Signature header" in missing
    assert "POSTSTACK_WEBHOOK_SECRET is not the cause" in missing
    assert "0 without the header held back" in missing
    post(client, BODY, {})
    post(client, BODY, {})
    post(client, BODY, forged)
    assert len(signature_warnings(caplog)) == 2
    now[0] += 61
    post(client, BODY, {})
    post(client, BODY, forged)
    *_, missing, wrong = signature_warnings(caplog)
    assert "has no X-PostStack-Signature" in missing
    assert "2 without the header held back" in missing
    assert "matches no secret" in wrong and "1 held back" in wrong


def test_a_good_signature_logs_nothing(caplog: pytest.LogCaptureFixture) -> None:
    client = make_app().test_client()
    assert post(client, *sign_webhook(BODY, SECRET)).status_code == 200
    assert signature_warnings(caplog) == []


def test_signature_details_the_sdk_allows() -> None:
    client = make_app().test_client()
    good = hex_digest(BODY, SECRET)
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


# The sandbox's deliveries ---------------------------------------------------------


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
