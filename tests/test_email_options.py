"""What one email can say besides its content: tracking, unsubscribe,
``extra``; each checked on the wire against the sandbox."""

from __future__ import annotations

import typing as t
from pathlib import Path

import pytest
from flask import Flask

from flask_poststack import ConfigurationError
from flask_poststack import enqueue_email
from flask_poststack import InvalidEmailError
from flask_poststack import send_email
from flask_poststack._state import get_state
from flask_poststack.config import load_settings
from flask_poststack.sandbox import Sandbox
from flask_poststack.signals import email_failed
from tests.helpers import german_templates

if t.TYPE_CHECKING:
    from tests.conftest import AppFactory

KEY = "sk_test_options0123456789"
BASE: dict[str, t.Any] = {"to": "ada@example.com", "subject": "Hi", "text": "Hi"}


@pytest.fixture
def app(make_app: AppFactory, sandbox: Sandbox, tmp_path: Path) -> Flask:
    return make_app(
        template_folder=str(tmp_path),
        TESTING=False,
        POSTSTACK_API_KEY=KEY,
        POSTSTACK_BASE_URL=sandbox.base_url,
    )


# Tracking and unsubscribe


def test_tracking_and_unsubscribe_reach_the_wire(app: Flask, sandbox: Sandbox) -> None:
    with app.app_context():
        result = send_email(
            **BASE, tracking={"opens": True, "clicks": False}, unsubscribe=True
        )
    email = sandbox.get_email(result.id)
    assert email.input.tracking == {"opens": True, "clicks": False}
    assert email.input.unsubscribe is True
    assert email.row()["unsubscribeEnabled"] is True


def test_tracking_false_turns_both_off(app: Flask, sandbox: Sandbox) -> None:
    with app.app_context():
        result = send_email(**BASE, tracking=False)
    assert sandbox.get_email(result.id).input.tracking == {
        "opens": False,
        "clicks": False,
    }


def test_unset_tracking_leaves_the_domain_default(app: Flask, sandbox: Sandbox) -> None:
    with app.app_context():
        result = send_email(**BASE)
    email = sandbox.get_email(result.id)
    assert email.input.tracking is None
    assert email.input.unsubscribe is False


def test_app_defaults_apply_and_an_email_overrides_them(
    make_app: AppFactory, sandbox: Sandbox
) -> None:
    app = make_app(
        TESTING=False,
        POSTSTACK_API_KEY=KEY,
        POSTSTACK_BASE_URL=sandbox.base_url,
        POSTSTACK_TRACKING={"clicks": False},
        POSTSTACK_UNSUBSCRIBE=True,
    )
    with app.app_context():
        default = send_email(**BASE)
        reset = send_email(**BASE, tracking={"opens": False}, unsubscribe=False)
    first = sandbox.get_email(default.id).input
    assert (first.tracking, first.unsubscribe) == ({"clicks": False}, True)
    second = sandbox.get_email(reset.id).input
    assert second.tracking == {"clicks": False, "opens": False}
    assert second.unsubscribe is False


def test_queued_email_keeps_tracking(
    make_app: AppFactory, redis_url: str, sandbox: Sandbox
) -> None:
    app = make_app(POSTSTACK_REDIS_URL=redis_url, POSTSTACK_EAGER=False)
    with app.app_context():
        job = enqueue_email(**BASE, tracking={"clicks": False}, unsubscribe=True)
    payload = job.args[0]
    assert payload["tracking"] == {"clicks": False}
    assert payload["unsubscribe"] is True


@pytest.mark.parametrize(
    ("argument", "value", "fragment"),
    [
        ("tracking", "off", "must be"),
        ("tracking", {"links": False}, "unknown key 'links'"),
        ("tracking", {"clicks": "no"}, "True or False"),
        ("unsubscribe", "yes", "True or False"),
        ("unsubscribe", 1, "True or False"),
    ],
)
def test_bad_values_name_the_argument(
    app: Flask, sandbox: Sandbox, argument: str, value: object, fragment: str
) -> None:
    with app.app_context(), pytest.raises(InvalidEmailError) as info:
        send_email(**{**BASE, argument: value})
    assert info.value.argument == argument
    assert fragment in str(info.value)
    assert sandbox.stats["requests"] == 0


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("off", {"opens": False, "clicks": False}),
        (True, {"opens": True, "clicks": True}),
        ("clicks=off", {"clicks": False}),
        ({"opens": "yes"}, {"opens": True}),
    ],
)
def test_tracking_setting_parses(value: object, expected: dict[str, bool]) -> None:
    assert load_settings({"POSTSTACK_TRACKING": value}).tracking == expected


@pytest.mark.parametrize("value", ["clicks", {"links": True}, 5, "opens=maybe"])
def test_bad_tracking_setting_names_the_key(value: object) -> None:
    with pytest.raises(ConfigurationError) as info:
        load_settings({"POSTSTACK_TRACKING": value})
    assert info.value.key == "POSTSTACK_TRACKING"


# extra


def test_extra_fields_reach_the_wire(app: Flask, sandbox: Sandbox) -> None:
    with app.app_context():
        result = send_email(
            **BASE, extra={"signature": "none", "idempotency_window_hours": 48}
        )
    sent = sandbox.get_email(result.id).input
    assert sent.other == {"signature": "none", "idempotency_window_hours": 48}
    assert sent.subject == "Hi"


def test_extra_survives_the_queue(
    make_app: AppFactory, redis_url: str, sandbox: Sandbox
) -> None:
    app = make_app(POSTSTACK_REDIS_URL=redis_url)
    with app.app_context():
        job = enqueue_email(**BASE, extra={"signature": "auto"})
    assert job.args[0]["signature"] == "auto"


@pytest.mark.parametrize(
    ("extra", "fragment"),
    [
        ({"subject": "x"}, "'subject' is a known field: pass subject="),
        ({"from": "a@b.test"}, "pass from_="),
        ({"tracking": {}}, "pass tracking="),
        ({"template": "x"}, "pass template="),
        ({"when": object()}, "not JSON data"),
        ({"ratio": float("nan")}, "not JSON data"),
        ({3: "x"}, "not a field name"),
        ({"\ud800": "x"}, "not valid Unicode"),
        ({"To": "x"}, "pass to="),
        ({"TO": "x"}, "pass to="),
        ({"Bcc": "x"}, "pass bcc="),
        ({" to": "x"}, "' to' is not a field name"),
        ({"to\u200b": "x"}, "'-' only"),
        ({"sig nature": "x"}, "'-' only"),
        ({"replyTo": "x"}, "pass reply_to="),
        ({"Reply-To": "x"}, "pass reply_to="),
        ({"scheduledAt": "x"}, "pass scheduled_at="),
        ({"toAddresses": "x"}, "pass to="),
        ({"bccAddresses": "x"}, "pass bcc="),
        ({"idempotencyKey": "x"}, "pass idempotency_key="),
        ({"templateId": "x"}, "pass template_id="),
        ({"Headers": {}}, "pass headers="),
        ({"Tracking": {}}, "pass tracking="),
        (["signature"], "must be a dict"),
    ],
)
def test_bad_extra_names_extra_and_the_key(
    app: Flask, sandbox: Sandbox, extra: object, fragment: str
) -> None:
    with app.app_context(), pytest.raises(InvalidEmailError) as info:
        send_email(**{**BASE, "extra": extra})
    assert info.value.argument == "extra"
    assert fragment in str(info.value)
    assert sandbox.stats["requests"] == 0


def test_a_bad_extra_key_fires_nothing_and_queues_nothing(
    make_app: AppFactory, redis_url: str
) -> None:
    app = make_app(POSTSTACK_REDIS_URL=redis_url)
    failed: list[object] = []
    email_failed.connect(lambda *a, **k: failed.append(k), app, weak=False)
    with app.app_context():
        for extra in ({"\ud800": "x"}, {"To": "x"}):
            with pytest.raises(InvalidEmailError):
                send_email(**BASE, extra=extra)
            with pytest.raises(InvalidEmailError):
                enqueue_email(**BASE, extra=extra)
        assert get_state(app).queue().count == 0
    assert failed == []


@pytest.mark.parametrize(
    ("name", "hint"),
    [("body", "text"), ("recipients", "to"), ("sender", "from_"), ("extras", "extra")],
)
def test_unknown_keyword_names_the_closest(app: Flask, name: str, hint: str) -> None:
    with app.app_context(), pytest.raises(InvalidEmailError) as info:
        send_email(**{**BASE, name: "x"})
    assert info.value.argument == name
    assert f"Did you mean {hint!r}?" in str(info.value)


# locale


@pytest.fixture
def babel_app(
    make_app: AppFactory, sandbox: Sandbox, redis_url: str, tmp_path: Path
) -> Flask:
    """The app with Flask-Babel and a German catalog, and a template that
    says "Welcome" in the email's locale."""
    from flask_babel import Babel

    translations = german_templates(
        tmp_path,
        "{{ _('Hello %(name)s', name=name) }}",
        **{"Welcome": "Willkommen", "Hello %(name)s": "Hallo %(name)s"},
    )
    app = make_app(
        template_folder=str(tmp_path),
        TESTING=False,
        POSTSTACK_API_KEY=KEY,
        POSTSTACK_BASE_URL=sandbox.base_url,
        POSTSTACK_REDIS_URL=redis_url,
        BABEL_TRANSLATION_DIRECTORIES=str(translations),
    )
    Babel(app)
    return app


def test_locale_renders_the_template_in_it(babel_app: Flask, sandbox: Sandbox) -> None:
    with babel_app.app_context():
        german = send_email(
            to="ada@example.com", template="emails/hi", context={"name": "Ada"},
            locale="de",
        )  # fmt: skip
        default = send_email(
            to="ada@example.com", template="emails/hi", context={"name": "Ada"}
        )
    sent = sandbox.get_email(german.id).input
    assert (sent.subject, sent.text) == ("Willkommen", "Hallo Ada")
    other = sandbox.get_email(default.id).input
    assert (other.subject, other.text) == ("Welcome", "Hello Ada")


def test_locale_formats_constants_too(babel_app: Flask, tmp_path: Path) -> None:
    """Jinja folds a filter of a literal at compile time; the email's locale
    must still apply, whichever locale compiled the template first."""
    (tmp_path / "emails" / "total.txt").write_text("{{ 1234.5|decimalformat }}")
    args: dict[str, t.Any] = {**BASE, "template": "emails/total"}
    del args["text"]
    with babel_app.app_context():
        jobs = [enqueue_email(**args, locale=locale) for locale in (None, "de") * 2]
    assert [job.args[0]["text"] for job in jobs] == [
        "1,234.5", "1.234,5", "1,234.5", "1.234,5"
    ]  # fmt: skip


def test_queued_email_is_rendered_in_its_locale(babel_app: Flask) -> None:
    with babel_app.test_request_context(headers={"Accept-Language": "en"}):
        job = enqueue_email(
            to="ada@example.com", template="emails/hi", context={"name": "Ada"},
            locale="de",
        )  # fmt: skip
    assert job.args[0]["subject"] == "Willkommen"
    assert "locale" not in job.args[0]


@pytest.mark.parametrize(
    ("locale", "fragment"),
    [("xx_QQ", "not a known locale"), ("", "a locale name"), (5, "a locale name")],
)
def test_bad_locale_names_it(
    babel_app: Flask, sandbox: Sandbox, locale: object, fragment: str
) -> None:
    with babel_app.app_context(), pytest.raises(InvalidEmailError) as info:
        send_email(to="ada@example.com", template="emails/hi", locale=locale)  # type: ignore[arg-type]
    assert info.value.argument == "locale"
    assert fragment in str(info.value)
    assert sandbox.stats["requests"] == 0


def test_locale_without_flask_babel_is_refused(
    app: Flask, sandbox: Sandbox, tmp_path: Path
) -> None:
    (tmp_path / "hi.txt").write_text("Hi")
    with app.app_context(), pytest.raises(InvalidEmailError) as info:
        send_email(to="ada@example.com", subject="Hi", template="hi", locale="de")
    assert info.value.argument == "locale"
    assert "needs Flask-Babel" in str(info.value)
    with app.app_context(), pytest.raises(InvalidEmailError) as info:
        send_email(**BASE, locale="de")
    assert "only used together with 'template'" in str(info.value)
    assert sandbox.stats["requests"] == 0


# Text from HTML, CSS inlining

RECEIPT = (
    "<html><head><style>p { color: #333 } @media (max-width: 600px)"
    " { p { font-size: 18px } }</style></head><body><p>Thanks, {{ name }}!</p>"
    '<p><a href="https://acme.test/orders/7">See your order</a></p></body></html>'
)


@pytest.fixture
def html_only(tmp_path: Path) -> str:
    (tmp_path / "emails").mkdir(exist_ok=True)
    (tmp_path / "emails" / "receipt.html").write_text(RECEIPT)
    return "emails/receipt"


def test_text_and_inlined_css_reach_the_wire(
    make_app: AppFactory, sandbox: Sandbox, tmp_path: Path, html_only: str
) -> None:
    app = make_app(
        template_folder=str(tmp_path),
        TESTING=False,
        POSTSTACK_API_KEY=KEY,
        POSTSTACK_BASE_URL=sandbox.base_url,
        POSTSTACK_TEXT_FROM_HTML=True,
        POSTSTACK_INLINE_CSS="on",
    )
    with app.app_context():
        result = send_email(
            to="ada@example.com", subject="Receipt", template=html_only,
            context={"name": "Ada"},
        )  # fmt: skip
        given = send_email(
            to="ada@example.com", subject="Receipt", template=html_only,
            context={"name": "Ada"}, text="Mine",
        )  # fmt: skip
    sent = sandbox.get_email(result.id).input
    assert sent.text == ("Thanks, Ada!\n\n[See your order](https://acme.test/orders/7)")
    assert sent.html is not None
    assert '<p style="color: #333;">Thanks, Ada!</p>' in sent.html
    assert "@media (max-width: 600px)" in sent.html  # kept for the clients
    assert sandbox.get_email(given.id).input.text == "Mine"


def test_both_are_off_by_default(app: Flask, sandbox: Sandbox, html_only: str) -> None:
    with app.app_context():
        result = send_email(
            to="ada@example.com", subject="R", template=html_only, context={"name": "A"}
        )
    sent = sandbox.get_email(result.id).input
    assert sent.text is None
    assert sent.html == RECEIPT.replace("{{ name }}", "A")


def test_a_txt_template_wins_over_the_generated_text(
    make_app: AppFactory, tmp_path: Path, html_only: str
) -> None:
    (tmp_path / "emails" / "receipt.txt").write_text("Thanks, {{ name }}.")
    app = make_app(template_folder=str(tmp_path), POSTSTACK_TEXT_FROM_HTML=True)
    with app.app_context():
        send_email(to="a@example.com", subject="R", template=html_only, context={})
        (payload,) = app.extensions["poststack.state"].outbox
    assert payload["text"] == "Thanks, ."


@pytest.mark.parametrize(
    ("key", "module", "extra"),
    [
        ("POSTSTACK_TEXT_FROM_HTML", "inscriptis", "text"),
        ("POSTSTACK_INLINE_CSS", "css_inline", "css"),
    ],
)
def test_a_missing_library_names_the_setting_and_the_extra(
    make_app: AppFactory,
    tmp_path: Path,
    html_only: str,
    monkeypatch: pytest.MonkeyPatch,
    key: str,
    module: str,
    extra: str,
) -> None:
    monkeypatch.setitem(__import__("sys").modules, module, None)
    app = make_app(template_folder=str(tmp_path), **{key: True})
    with app.app_context(), pytest.raises(ConfigurationError) as info:
        send_email(to="a@example.com", subject="R", template=html_only, context={})
    assert info.value.key == key
    assert f"flask-poststack[{extra}]" in str(info.value)
    assert app.extensions["poststack.state"].outbox == []


def test_batches_take_the_same_arguments(app: Flask, sandbox: Sandbox) -> None:
    from flask_poststack import send_batch

    with app.app_context():
        messages: list[t.Any] = [
            {**BASE, "tracking": False, "extra": {"signature": "none"}},
            {**BASE, "unsubscribe": True},
        ]
        items = send_batch(messages)
    first, second = (sandbox.get_email(str(item.id)).input for item in items)
    assert first.tracking == {"opens": False, "clicks": False}
    assert first.other == {"signature": "none"}
    assert second.unsubscribe is True


def test_preview_renders_as_a_send_would(
    make_app: AppFactory, tmp_path: Path, html_only: str
) -> None:
    app = make_app(
        template_folder=str(tmp_path),
        POSTSTACK_TEXT_FROM_HTML=True,
        POSTSTACK_INLINE_CSS=True,
    )
    args = ["poststack", "preview", html_only, "--context", '{"name": "Ada"}']
    result = app.test_cli_runner().invoke(args=args)
    assert result.exit_code == 0, result.output
    assert "[See your order](https://acme.test/orders/7)" in result.output
    assert '<p style="color: #333;">Thanks, Ada!</p>' in result.output
    bad = app.test_cli_runner().invoke(args=[*args, "--locale", "de"])
    assert bad.exit_code == 2
    assert "'--locale'" in bad.output and "Flask-Babel" in bad.output


def test_check_reports_the_render_options(
    make_app: AppFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: None if name == "css_inline" else real(name, *a),
    )
    app = make_app(POSTSTACK_TEXT_FROM_HTML=True, POSTSTACK_INLINE_CSS=True)
    result = app.test_cli_runner().invoke(args=["poststack", "check"])
    assert "ok  POSTSTACK_TEXT_FROM_HTML: on (inscriptis)" in result.output
    assert "FAIL  POSTSTACK_INLINE_CSS: on, but css_inline is missing" in result.output
    assert result.exit_code == 1
