from __future__ import annotations

import logging
import typing as t

import httpx
import poststack
import pytest
import redis
from flask import current_app

from flask_poststack import ConfigurationError
from flask_poststack import get_state
from flask_poststack import PostStack
from flask_poststack import send_email
from tests.conftest import LIVE_KEY

if t.TYPE_CHECKING:
    from flask_poststack.sandbox import Sandbox
    from tests.conftest import AppFactory

KEY = "sk_test_extension0123456789"


def test_client_is_a_real_sdk_client_at_the_seed_location(make_app: AppFactory) -> None:
    app = make_app(POSTSTACK_API_KEY=KEY)
    assert isinstance(app.extensions["poststack"], poststack.PostStack)


def test_init_app_later_in_a_factory(make_app: AppFactory) -> None:
    ext = PostStack()
    app = make_app(register=False, POSTSTACK_API_KEY=KEY)
    ext.init_app(app)
    with app.app_context():
        assert ext.client is app.extensions["poststack"]
    assert repr(ext) == "<PostStack>"


def test_registering_twice_is_an_error(make_app: AppFactory) -> None:
    app = make_app(POSTSTACK_API_KEY=KEY)
    with pytest.raises(RuntimeError, match="already registered"):
        PostStack(app)


def test_two_apps_keep_separate_clients_and_settings(make_app: AppFactory) -> None:
    ext = PostStack()
    one = make_app(register=False, POSTSTACK_API_KEY=KEY, POSTSTACK_QUEUE="one")
    two = make_app(
        register=False, POSTSTACK_API_KEY="sk_live_other0123", POSTSTACK_QUEUE="two"
    )
    ext.init_app(one)
    ext.init_app(two)
    assert one.extensions["poststack"] is not two.extensions["poststack"]
    assert get_state(one).settings.queue == "one"
    assert get_state(two).settings.queue == "two"
    assert get_state(two).settings.mode == "live"


def test_the_app_loads_without_a_key_and_a_send_names_it(make_app: AppFactory) -> None:
    app = make_app(TESTING=False, POSTSTACK_DEFAULT_FROM="a@acme.test")
    assert isinstance(app.extensions["poststack"], poststack.PostStack)
    with app.app_context(), pytest.raises(ConfigurationError) as info:
        send_email(to="ada@example.com", subject="s", text="t")
    assert info.value.key == "POSTSTACK_API_KEY"
    assert "app.config" in str(info.value)


@pytest.mark.parametrize(
    "key",
    [
        "pk_Secret123",
        "sk_test_Secret123\nabc",
        "sk_test_Secret123 x",
        "sk_test_Secret123é",
    ],
)
def test_malformed_key_is_refused_at_the_send_without_being_echoed(
    make_app: AppFactory, key: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    app = make_app(
        TESTING=False,
        POSTSTACK_API_KEY=key,
        POSTSTACK_DEFAULT_FROM="a@a.test",
    )
    with app.app_context(), pytest.raises(ConfigurationError) as info:
        send_email(to="ada@example.com", subject="s", text="t")
    assert info.value.key == "POSTSTACK_API_KEY"
    assert "Secret123" not in str(info.value)
    assert "Secret123" not in caplog.text


def test_no_key_is_fine_when_sending_is_suppressed(make_app: AppFactory) -> None:
    app = make_app(TESTING=True)
    assert isinstance(app.extensions["poststack"], poststack.PostStack)


def test_config_falls_back_to_the_environment_and_is_written_back(
    make_app: AppFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("POSTSTACK_API_KEY", KEY)
    monkeypatch.setenv("POSTSTACK_TIMEOUT", "2.5")
    monkeypatch.setenv("POSTSTACK_QUEUE", "from-env")
    app = make_app(TESTING=False, POSTSTACK_QUEUE="from-config")
    settings = get_state(app).settings
    assert settings.api_key == KEY
    assert settings.timeout == 2.5
    assert settings.queue == "from-config"
    assert app.config["POSTSTACK_TIMEOUT"] == 2.5
    # Not set anywhere: not written, so a copy of this config names no API.
    assert "POSTSTACK_BASE_URL" not in app.config


def test_unparseable_number_from_the_environment_names_the_key(
    make_app: AppFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("POSTSTACK_MAX_RETRIES", "three")
    with pytest.raises(ConfigurationError, match="POSTSTACK_MAX_RETRIES"):
        PostStack(make_app(register=False, POSTSTACK_API_KEY=KEY))


def test_get_state_without_init_app_says_how_to_fix_it(make_app: AppFactory) -> None:
    with pytest.raises(RuntimeError, match="init_app"):
        get_state(make_app(register=False))


def test_key_not_in_reprs_or_logs(
    make_app: AppFactory, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    app = make_app(register=False, POSTSTACK_API_KEY=KEY)
    ext = PostStack(app)
    state = get_state(app)
    for text in (repr(ext), repr(state), repr(state.settings), caplog.text):
        assert KEY not in text


def test_seed_view_pattern_works_unchanged(
    make_app: AppFactory, sandbox: t.Any
) -> None:
    app = make_app(POSTSTACK_API_KEY=KEY, POSTSTACK_BASE_URL=sandbox.base_url)

    @app.post("/signup")
    def signup() -> dict[str, t.Any]:
        result: dict[str, t.Any] = current_app.extensions["poststack"].emails.send(
            {
                "from": "hello@example.com",
                "to": ["ada@example.com"],
                "subject": "Welcome to Acme",
                "html": "<h1>Welcome, Ada!</h1>",
            }
        )
        return result

    response = app.test_client().post("/signup")
    assert response.status_code == 200
    email_id = response.get_json()["id"]
    assert email_id.startswith("em_")
    assert [e.id for e in sandbox.emails] == [email_id]


def test_testing_turned_on_after_init_app_ignores_the_shell(
    make_app: AppFactory,
    monkeypatch: pytest.MonkeyPatch,
    sandbox: Sandbox,
    redis_url: str,
) -> None:
    """Flask's testing docs set TESTING after create_app(): the shell's key,
    API, Redis, suppression and eager mode must not reach that app."""
    from flask_poststack import enqueue_email

    monkeypatch.setenv("POSTSTACK_API_KEY", LIVE_KEY)
    monkeypatch.setenv("POSTSTACK_BASE_URL", sandbox.base_url)
    monkeypatch.setenv("POSTSTACK_SUPPRESS_SEND", "0")
    monkeypatch.setenv("POSTSTACK_REDIS_URL", redis_url)
    monkeypatch.setenv("POSTSTACK_EAGER", "1")
    app = make_app(TESTING=False)
    assert get_state(app).settings.api_key == LIVE_KEY  # production reads the shell

    app.config.update(TESTING=True)
    state = get_state(app)
    assert state.settings.api_key is None
    assert state.suppressed and not state.eager
    with app.app_context():  # the SDK client itself follows too
        assert app.extensions["poststack"] is state.mode.client_slot.get()
        message = {"from": "a@acme.test", "to": ["ada@example.com"], "subject": "Hi"}
        with pytest.raises(httpx.ConnectError):  # a closed port on this machine
            app.extensions["poststack"].emails.send({**message, "text": "Hi"})
    with app.app_context():
        send_email(to="ada@example.com", subject="Hi", text="Hi")
        job = enqueue_email(to="ada@example.com", subject="Hi", text="Hi")
    assert type(job.connection).__module__.startswith("fakeredis")
    assert sandbox.stats["requests"] == 0
    assert redis.Redis.from_url(redis_url).dbsize() == 0


def test_a_shell_eager_setting_does_not_reach_a_testing_app(
    make_app: AppFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("POSTSTACK_EAGER", "1")
    assert not get_state(make_app()).eager
    assert get_state(make_app(TESTING=False)).eager
    assert get_state(make_app(POSTSTACK_EAGER=True)).eager
