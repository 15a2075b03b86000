from __future__ import annotations

import os
from pathlib import Path

import pytest

import example_app
from example_app import create_app
from flask_poststack import get_state
from flask_poststack.config import DEFAULTS
from flask_poststack.testing import RecordedEmail

ENV_EXAMPLE = Path(example_app.__file__).parent / ".env.example"


def read_env_example() -> dict[str, str]:
    pairs = {}
    for line in ENV_EXAMPLE.read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            key, _, value = line.partition("=")
            pairs[key.strip()] = value.strip()
    return pairs


def test_configuration_comes_from_the_environment(
    monkeypatch: pytest.MonkeyPatch, poststack_outbox: list[RecordedEmail]
) -> None:
    monkeypatch.setenv("FLASK_TESTING", "true")
    monkeypatch.setenv("FLASK_SITE_NAME", "Globex")
    monkeypatch.setenv("POSTSTACK_DEFAULT_FROM", "Globex <hi@globex.example>")

    app = create_app()

    assert app.testing
    assert app.config["SITE_NAME"] == "Globex"
    app.test_client().post("/billing/receipt/42", data={"email": "ada@example.com"})
    assert poststack_outbox[0].payload["from"] == "Globex <hi@globex.example>"


def test_the_env_example_works(monkeypatch: pytest.MonkeyPatch) -> None:
    env = read_env_example()
    assert {k for k in env if k.startswith("POSTSTACK_")} <= set(DEFAULTS)
    for key, value in env.items():
        monkeypatch.setenv(key, value)

    app = create_app()  # not TESTING: the API key is required and checked

    assert app.secret_key == "change-me"
    assert get_state(app).settings.base_url == "http://127.0.0.1:8025"
    # From the environment, so not written into app.config: a TESTING turned
    # on later must not find it there.
    assert "POSTSTACK_BASE_URL" not in app.config
    assert "poststack_webhooks.receive" in app.view_functions  # the secret is set


def test_flask_loads_a_dotenv_file(tmp_path: Path) -> None:
    """The documented way: Flask reads .env with python-dotenv."""
    from flask.cli import load_dotenv

    dotenv = tmp_path / ".env"
    dotenv.write_text(ENV_EXAMPLE.read_text())
    try:
        assert load_dotenv(dotenv)
        app = create_app()
        assert app.config["SITE_NAME"] == "Acme"
        assert app.config["POSTSTACK_DEFAULT_FROM"] == "Acme <hello@example.com>"
    finally:
        for key in read_env_example():
            os.environ.pop(key, None)
