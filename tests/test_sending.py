from __future__ import annotations

import json
import logging
import typing as t
from datetime import datetime
from datetime import timezone
from pathlib import Path

import pytest
import redis
from flask import Flask

from flask_poststack import Attachment
from flask_poststack import ConfigurationError
from flask_poststack import enqueue_batch
from flask_poststack import enqueue_many
from flask_poststack import get_state
from flask_poststack import InvalidEmailError
from flask_poststack import PostStack
from flask_poststack import PostStackError
from flask_poststack import RecipientNotAllowedError
from flask_poststack import send_batch
from flask_poststack import send_email
from flask_poststack.retry import is_retryable
from flask_poststack.sandbox import Sandbox
from flask_poststack.testing import outbox
from tests.helpers import batch_requests
from tests.helpers import messages

if t.TYPE_CHECKING:
    from tests.conftest import AppFactory

KEY = "sk_test_sending0123456789"


@pytest.fixture
def app(make_app: AppFactory, sandbox: Sandbox, tmp_path: Path) -> Flask:
    return make_app(
        template_folder=str(tmp_path),
        TESTING=False,
        POSTSTACK_API_KEY=KEY,
        POSTSTACK_BASE_URL=sandbox.base_url,
        POSTSTACK_DEFAULT_FROM="Acme <hello@acme.test>",
        POSTSTACK_MAX_RETRIES=2,
    )


def test_send_returns_the_api_id(app: Flask, sandbox: Sandbox) -> None:
    with app.app_context():
        result = send_email(to="ada@example.com", subject="Hi", html="<p>Hi</p>")
    assert result.id.startswith("em_")
    assert result.test_mode is True
    assert result.replayed is False
    assert result.response["id"] == result.id
    assert [e.id for e in sandbox.emails] == [result.id]


def test_every_argument_reaches_the_wire(app: Flask, sandbox: Sandbox) -> None:
    when = datetime(2030, 1, 2, 3, 4, 5, tzinfo=timezone.utc)
    with app.app_context():
        result = send_email(
            to=["Ada Lovelace <ada@example.com>", "bob@example.com"],
            subject="Receipt",
            html="<p>Thanks</p>",
            text="Thanks",
            from_="Billing <billing@acme.test>",
            cc="cc@example.com",
            bcc=["bcc@example.com"],
            reply_to="support@acme.test",
            headers={"X-Order": "42"},
            tags=["receipt"],
            scheduled_at=when,
            idempotency_key="order-42-receipt",
        )
    email = sandbox.get_email(result.id)
    sent = email.input
    assert (sent.from_address, sent.from_name) == ("billing@acme.test", "Billing")
    assert sent.to == ["Ada Lovelace <ada@example.com>", "bob@example.com"]
    assert sent.cc == ["cc@example.com"]
    assert sent.bcc == ["bcc@example.com"]
    assert sent.reply_to == ["support@acme.test"]
    assert (sent.subject, sent.html, sent.text) == (
        "Receipt",
        "<p>Thanks</p>",
        "Thanks",
    )
    assert sent.headers == {"X-Order": "42"}
    assert sent.tags == ["receipt"]
    assert sent.scheduled_at == when
    assert sent.idempotency_key == "order-42-receipt"


def test_server_template_arguments_reach_the_wire(app: Flask, sandbox: Sandbox) -> None:
    with app.app_context():
        result = send_email(
            to="ada@example.com",
            template_id="tpl_welcome",
            variables={"name": "Ada", "orders": 3},
        )
    sent = sandbox.get_email(result.id).input
    assert sent.template_id == "tpl_welcome"
    assert sent.variables == {"name": "Ada", "orders": "3"}  # strings on the wire


def test_default_sender_applies(app: Flask, sandbox: Sandbox) -> None:
    with app.app_context():
        result = send_email(to="ada@example.com", subject="Hi", text="Hi")
    sent = sandbox.get_email(result.id).input
    assert (sent.from_address, sent.from_name) == ("hello@acme.test", "Acme")


BASE = {"to": "a@example.com", "subject": "s", "text": "t"}
TOO_BIG = Attachment("big.bin", b"x" * (10 * 1024 * 1024 + 1))


@pytest.mark.parametrize(
    ("changes", "argument"),
    [
        ({"to": "not an address"}, "to"),
        ({"to": None}, "to"),
        ({"subject": "s\r\nBcc: x@evil.test"}, "subject"),
        ({"text": None}, "html"),
        ({"headers": {"X-A": "a\nb"}}, "headers"),
        ({"scheduled_at": datetime(2030, 1, 1)}, "scheduled_at"),
        ({"attachments": [TOO_BIG]}, "attachments"),
    ],
)
def test_bad_input_fails_before_any_request(
    app: Flask, sandbox: Sandbox, changes: dict[str, t.Any], argument: str
) -> None:
    with app.app_context(), pytest.raises(InvalidEmailError) as info:
        send_email(**{**BASE, **changes})
    assert isinstance(info.value, ValueError)
    assert info.value.argument == argument
    assert sandbox.stats["requests"] == 0


def test_templates_render_without_a_request(
    app: Flask, sandbox: Sandbox, tmp_path: Path
) -> None:
    (tmp_path / "emails").mkdir()
    (tmp_path / "emails/welcome.html").write_text("<h1>Hi {{ name }}</h1>")
    (tmp_path / "emails/welcome.txt").write_text("Hi {{ name }}")
    (tmp_path / "emails/welcome.subject.txt").write_text("Welcome, {{ name }}\n")
    with app.app_context():
        result = send_email(
            to="ada@example.com", template="emails/welcome", context={"name": "<Ada>"}
        )
    sent = sandbox.get_email(result.id).input
    assert sent.html == "<h1>Hi &lt;Ada&gt;</h1>"
    assert sent.text == "Hi <Ada>"
    assert sent.subject == "Welcome, <Ada>"


def test_templates_render_inside_a_request(
    app: Flask, sandbox: Sandbox, tmp_path: Path
) -> None:
    (tmp_path / "hello.txt").write_text("Hello from {{ request.path }}")

    @app.post("/signup")
    def signup() -> str:
        return send_email(to="ada@example.com", subject="Hi", template="hello").id

    email_id = app.test_client().post("/signup").get_data(as_text=True)
    assert sandbox.get_email(email_id).text == "Hello from /signup"


def test_attachments_round_trip_byte_for_byte(
    app: Flask, sandbox: Sandbox, tmp_path: Path
) -> None:
    pdf = bytes(range(256)) * 300
    path = tmp_path / "report.csv"
    path.write_bytes(b"a,b\n1,2\n")
    logo = b"\x89PNG\r\n\x1a\n" + b"\x00" * 64
    with app.app_context(), path.open("rb") as handle:
        result = send_email(
            to="ada@example.com",
            subject="Files",
            html='<img src="cid:logo">',
            attachments=[
                Attachment("receipt.pdf", pdf),
                path,
                {"filename": "logo.png", "content": logo, "content_id": "logo"},
                handle,
            ],
        )
    stored = {a.filename: a for a in sandbox.get_email(result.id).attachments}
    assert stored["receipt.pdf"].content == pdf
    assert stored["receipt.pdf"].content_type == "application/pdf"
    assert stored["report.csv"].content == path.read_bytes()
    assert stored["logo.png"].content == logo
    assert stored["logo.png"].content_id == "logo"


def test_api_errors_reach_the_caller_unchanged_and_are_logged_once(
    app: Flask, sandbox: Sandbox, caplog: pytest.LogCaptureFixture
) -> None:
    sandbox.faults.add("quota", path="/emails")
    caplog.set_level(logging.DEBUG)
    with app.app_context(), pytest.raises(PostStackError) as info:
        send_email(to="ada@example.com", subject="Hi", text="Hi")
    error = info.value
    assert (error.status_code, error.code) == (429, "monthly_limit_exceeded")
    assert error.request_id and error.request_id.startswith("req_")
    failures = [r for r in caplog.records if r.name == "flask_poststack"]
    assert len(failures) == 1
    assert error.request_id in failures[0].getMessage()
    assert "monthly_limit_exceeded" in failures[0].getMessage()
    assert KEY not in caplog.text
    assert KEY not in str(error) and KEY not in repr(error)


def test_transient_errors_are_retried_by_the_sdk(app: Flask, sandbox: Sandbox) -> None:
    sandbox.faults.add("error", status=503, path="/emails", times=2)
    with app.app_context():
        result = send_email(to="ada@example.com", subject="Hi", text="Hi")
    assert [e.id for e in sandbox.emails] == [result.id]


def test_an_unreadable_answer_is_a_502_and_a_retry_with_the_key_replays(
    app: Flask, sandbox: Sandbox
) -> None:
    sandbox.faults.add("empty_2xx", path="/emails", times=1)
    with app.app_context():
        with pytest.raises(PostStackError) as info:
            send_email(to="a@example.com", subject="s", text="t", idempotency_key="k")
        assert (info.value.status_code, info.value.code) == (502, "invalid_response")
        assert "idempotency key" in str(info.value)
        again = send_email(
            to="a@example.com", subject="s", text="t", idempotency_key="k"
        )
    assert [e.id for e in sandbox.emails] == [again.id]
    assert again.replayed


@pytest.mark.parametrize(
    "answer",
    [
        json.JSONDecodeError("Expecting value", "", 0),
        # httpx decodes the body before parsing it: bytes that are not UTF-8
        UnicodeDecodeError("utf-8", b"\xc3\x28", 0, 1, "invalid continuation byte"),
        None,
        "accepted",
        ["em_1"],
    ],
)
def test_every_unreadable_answer_is_a_retryable_502(
    app: Flask, answer: t.Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The sandbox cannot answer each of these; the SDK's return value can be.
    def call(*args: t.Any, **kwargs: t.Any) -> t.Any:
        if isinstance(answer, Exception):
            raise answer
        return answer

    monkeypatch.setattr(app.extensions["poststack"].emails, "send", call)
    with app.app_context(), pytest.raises(PostStackError) as info:
        send_email(to="a@example.com", subject="s", text="t")
    assert (info.value.status_code, info.value.code) == (502, "invalid_response")
    assert is_retryable(info.value)


def test_same_idempotency_key_replays(app: Flask, sandbox: Sandbox) -> None:
    with app.app_context():
        first = send_email(
            to="a@example.com", subject="s", text="t", idempotency_key="k1"
        )
        again = send_email(
            to="a@example.com", subject="s", text="t", idempotency_key="k1"
        )
    assert again.id == first.id
    assert again.replayed is True
    assert len(sandbox.emails) == 1


def test_suppression_follows_testing_and_is_read_at_send_time(
    app: Flask, sandbox: Sandbox
) -> None:
    outbox = get_state(app).outbox
    app.testing = True
    with app.app_context():
        result = send_email(to="ada@example.com", subject="Hi", text="Hi")
        assert result.suppressed and result.id.startswith("em_suppressed_")
        assert outbox[-1]["to"] == ["ada@example.com"]
        app.config["POSTSTACK_SUPPRESS_SEND"] = False
        real = send_email(to="ada@example.com", subject="Hi", text="Hi")
        app.testing = False
        app.config["POSTSTACK_SUPPRESS_SEND"] = "true"
        send_email(to="bob@example.com", subject="Hi", text="Hi")
    assert [e.id for e in sandbox.emails] == [real.id]
    assert [p["to"] for p in outbox] == [["ada@example.com"], ["bob@example.com"]]


def test_suppressed_without_a_key_then_unsuppressed_names_the_key(
    sandbox: Sandbox,
) -> None:
    app = Flask(__name__)
    app.config.update(TESTING=True, POSTSTACK_DEFAULT_FROM="a@acme.test")
    PostStack(app)
    app.testing = False
    with app.app_context(), pytest.raises(ConfigurationError, match="API_KEY"):
        send_email(to="ada@example.com", subject="Hi", text="Hi")


def test_staging_redirect_keeps_the_original_recipients(
    app: Flask, sandbox: Sandbox
) -> None:
    app2 = Flask("staging")
    app2.config.update(app.config)
    app2.config["POSTSTACK_REDIRECT_TO"] = "qa@acme.test"
    PostStack(app2)
    with app2.app_context():
        result = send_email(
            to="ada@example.com", cc="b@example.com", subject="s", text="t"
        )
    sent = sandbox.get_email(result.id).input
    assert sent.to == ["qa@acme.test"] and not sent.cc
    assert "ada@example.com" in (sent.headers or {})["X-PostStack-Original-Recipients"]


def test_allowed_recipients_refuse_others_before_sending(sandbox: Sandbox) -> None:
    app = Flask(__name__)
    app.config.update(
        POSTSTACK_API_KEY=KEY,
        POSTSTACK_BASE_URL=sandbox.base_url,
        POSTSTACK_DEFAULT_FROM="a@acme.test",
        POSTSTACK_ALLOWED_RECIPIENTS="*@acme.test",
    )
    PostStack(app)
    with app.app_context():
        send_email(to="dev@acme.test", subject="s", text="t")
        with pytest.raises(RecipientNotAllowedError, match=r"ada@example\.com"):
            send_email(to="ada@example.com", subject="s", text="t")
    assert len(sandbox.emails) == 1


def test_extension_object_sends_the_same_way(sandbox: Sandbox) -> None:
    ext = PostStack()
    app = Flask(__name__)
    app.config.update(POSTSTACK_API_KEY=KEY, POSTSTACK_BASE_URL=sandbox.base_url)
    ext.init_app(app)
    with app.app_context():
        result = ext.send_email(
            from_="a@acme.test", to="b@example.com", subject="s", text="t"
        )
    assert sandbox.get_email(result.id).subject == "s"


def test_two_apps_send_with_their_own_settings(sandbox: Sandbox) -> None:
    ext = PostStack()
    apps = []
    for sender in ("one@acme.test", "two@acme.test"):
        app = Flask(sender)
        app.config.update(
            POSTSTACK_API_KEY=KEY,
            POSTSTACK_BASE_URL=sandbox.base_url,
            POSTSTACK_DEFAULT_FROM=sender,
        )
        ext.init_app(app)
        apps.append(app)
    for app in apps:
        with app.app_context():
            send_email(to="ada@example.com", subject="s", text="t")
    assert [e.input.from_address for e in sandbox.emails] == [
        "one@acme.test",
        "two@acme.test",
    ]


# Batches: send_batch -------------------------------------------------------------


def test_send_batch_chunks_by_100_and_keeps_the_order(
    batch_app: Flask, sandbox: Sandbox
) -> None:
    with batch_app.app_context():
        items = send_batch(messages(250))
    assert len(batch_requests(sandbox)) == 3
    assert [item.index for item in items] == list(range(250))
    stored = {email.id: email for email in sandbox.emails}
    assert len(stored) == 250
    for n, item in enumerate(items):
        assert item.ok
        email = stored[item.id or ""]
        assert email.to == [f"user{n}@example.com"]
        assert email.input.idempotency_key == item.idempotency_key
    assert len({item.idempotency_key for item in items}) == 250


def test_send_batch_reports_refused_emails_in_place(
    batch_app: Flask, sandbox: Sandbox
) -> None:
    sandbox.configure(suppressed_recipients=["user1@example.com"])
    with batch_app.app_context():
        items = send_batch(messages(3))
    assert [item.ok for item in items] == [True, False, True]
    assert items[1].error and items[1].code == "unprocessable_entity"
    assert len(sandbox.emails) == 2


def test_a_failed_request_marks_its_chunk_and_the_others_still_go(
    batch_app: Flask, sandbox: Sandbox
) -> None:
    sandbox.faults.add("error", status=503, path="/emails/batch", times=1)
    with batch_app.app_context():
        items = send_batch(messages(150))
    assert {item.code for item in items[:100]} == {None}
    assert not any(item.ok for item in items[:100])
    assert all(item.ok for item in items[100:])
    assert len(sandbox.emails) == 50


def test_bad_input_names_the_message_and_sends_nothing(
    batch_app: Flask, sandbox: Sandbox, redis_url: str
) -> None:
    bad = messages(5)
    bad[3]["to"] = "nope"
    with batch_app.app_context():
        for call in (send_batch, enqueue_batch, enqueue_many):
            with pytest.raises(InvalidEmailError) as info:
                call(bad)
            assert info.value.argument == "messages[3].to"
        with pytest.raises(InvalidEmailError, match="messages"):
            send_batch([])
        with pytest.raises(InvalidEmailError, match=r"messages\[0\]"):
            send_batch([{"too": "x"}])  # type: ignore[typeddict-unknown-key]
    assert sandbox.stats["requests"] == 0
    assert redis.Redis.from_url(redis_url).dbsize() == 0


def test_send_batch_when_suppressed(batch_app: Flask, sandbox: Sandbox) -> None:
    batch_app.config["POSTSTACK_SUPPRESS_SEND"] = True
    with batch_app.app_context():
        items = send_batch(messages(3))
    assert all(item.id and item.id.startswith("em_suppressed_") for item in items)
    assert len(outbox(batch_app)) == 3
    assert sandbox.stats["requests"] == 0
