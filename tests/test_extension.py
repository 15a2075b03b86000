from __future__ import annotations

import gc
import logging
import os
import typing as t
import warnings

import poststack
import pytest
from flask import current_app
from flask import Flask

from flask_poststack import ConfigurationError
from flask_poststack import get_state
from flask_poststack import PostStack
from flask_poststack import send_email

KEY = "sk_test_extension0123456789"


def make_app(**config: t.Any) -> Flask:
    app = Flask(__name__)
    app.config.update(config)
    return app


def test_client_is_a_real_sdk_client_at_the_seed_location() -> None:
    app = make_app(POSTSTACK_API_KEY=KEY)
    PostStack(app)
    assert isinstance(app.extensions["poststack"], poststack.PostStack)


def test_init_app_later_in_a_factory() -> None:
    ext = PostStack()
    app = make_app(POSTSTACK_API_KEY=KEY)
    ext.init_app(app)
    with app.app_context():
        assert ext.client is app.extensions["poststack"]
    assert repr(ext) == "<PostStack>"


def test_registering_twice_is_an_error() -> None:
    app = make_app(POSTSTACK_API_KEY=KEY)
    PostStack(app)
    with pytest.raises(RuntimeError, match="already registered"):
        PostStack(app)


def test_two_apps_keep_separate_clients_and_settings() -> None:
    ext = PostStack()
    one = make_app(POSTSTACK_API_KEY=KEY, POSTSTACK_QUEUE="one")
    two = make_app(POSTSTACK_API_KEY="sk_live_other0123", POSTSTACK_QUEUE="two")
    ext.init_app(one)
    ext.init_app(two)
    assert one.extensions["poststack"] is not two.extensions["poststack"]
    assert get_state(one).settings.queue == "one"
    assert get_state(two).settings.queue == "two"
    assert get_state(two).settings.mode == "live"


def test_the_app_loads_without_a_key_and_a_send_names_it() -> None:
    app = make_app(POSTSTACK_DEFAULT_FROM="a@acme.test")
    PostStack(app)
    assert isinstance(app.extensions["poststack"], poststack.PostStack)
    with app.app_context(), pytest.raises(ConfigurationError) as info:
        send_email(to="ada@example.com", subject="s", text="t")
    assert info.value.key == "POSTSTACK_API_KEY"
    assert "app.config" in str(info.value)


def test_malformed_key_is_refused_at_the_send_without_being_echoed() -> None:
    app = make_app(POSTSTACK_API_KEY="pk_Secret123", POSTSTACK_DEFAULT_FROM="a@a.test")
    PostStack(app)
    with app.app_context(), pytest.raises(ConfigurationError) as info:
        send_email(to="ada@example.com", subject="s", text="t")
    assert info.value.key == "POSTSTACK_API_KEY"
    assert "Secret123" not in str(info.value)


def test_no_key_is_fine_when_sending_is_suppressed() -> None:
    app = make_app(TESTING=True)
    PostStack(app)
    assert isinstance(app.extensions["poststack"], poststack.PostStack)


def test_config_falls_back_to_the_environment_and_is_written_back(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("POSTSTACK_API_KEY", KEY)
    monkeypatch.setenv("POSTSTACK_TIMEOUT", "2.5")
    monkeypatch.setenv("POSTSTACK_QUEUE", "from-env")
    app = make_app(POSTSTACK_QUEUE="from-config")
    PostStack(app)
    settings = get_state(app).settings
    assert settings.api_key == KEY
    assert settings.timeout == 2.5
    assert settings.queue == "from-config"
    assert app.config["POSTSTACK_TIMEOUT"] == 2.5
    assert app.config["POSTSTACK_BASE_URL"] == "https://api.poststack.dev"


def test_unparseable_number_from_the_environment_names_the_key(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("POSTSTACK_MAX_RETRIES", "three")
    with pytest.raises(ConfigurationError, match="POSTSTACK_MAX_RETRIES"):
        PostStack(make_app(POSTSTACK_API_KEY=KEY))


def test_get_state_without_init_app_says_how_to_fix_it() -> None:
    with pytest.raises(RuntimeError, match="init_app"):
        get_state(make_app())


def test_key_not_in_reprs_or_logs(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    app = make_app(POSTSTACK_API_KEY=KEY)
    ext = PostStack(app)
    state = get_state(app)
    for text in (repr(ext), repr(state), repr(state.settings), caplog.text):
        assert KEY not in text


def test_forked_child_gets_a_fresh_client() -> None:
    app = make_app(POSTSTACK_API_KEY=KEY)
    PostStack(app)
    parent_client = app.extensions["poststack"]
    read, write = os.pipe()
    with warnings.catch_warnings():  # 3.12+ warns about fork with threads
        warnings.simplefilter("ignore", DeprecationWarning)
        pid = os.fork()
    if pid == 0:  # pragma: no cover - runs in the child
        fresh = app.extensions["poststack"] is not parent_client
        usable = isinstance(app.extensions["poststack"], poststack.PostStack)
        os.write(write, b"1" if fresh and usable else b"0")
        os._exit(0)
    os.close(write)
    answer = os.read(read, 1)
    os.close(read)
    os.waitpid(pid, 0)
    assert answer == b"1"
    assert app.extensions["poststack"] is parent_client


def test_client_is_closed_with_its_app_or_at_exit() -> None:
    app = make_app(POSTSTACK_API_KEY=KEY)
    PostStack(app)
    client = app.extensions["poststack"]
    del app
    gc.collect()
    assert client._client._httpx.is_closed


def test_seed_view_pattern_works_unchanged(sandbox: t.Any) -> None:
    app = make_app(POSTSTACK_API_KEY=KEY, POSTSTACK_BASE_URL=sandbox.base_url)
    PostStack(app)

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


def test_an_app_referenced_by_another_extension_is_still_collected() -> None:
    class SelfReferencing:
        def __init__(self, app: Flask) -> None:
            self.app = app
            app.extensions["self_referencing"] = self

    app = make_app(POSTSTACK_API_KEY=KEY)
    PostStack(app)
    SelfReferencing(app)
    client = app.extensions["poststack"]
    del app
    gc.collect()
    assert client._client._httpx.is_closed
