from __future__ import annotations

import typing as t
from pathlib import Path

import pytest
from flask import Flask
from flask.testing import FlaskClient

from example_app import create_app

WEBHOOK_SECRET = "whsec_example_tests"


@pytest.fixture(autouse=True)
def database(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """Each test's own SQLite file, also for apps a test builds itself
    (``FLASK_SQLALCHEMY_DATABASE_URI``, read by ``from_prefixed_env``)."""
    uri = f"sqlite:///{tmp_path / 'example.db'}"
    monkeypatch.setenv("FLASK_SQLALCHEMY_DATABASE_URI", uri)
    return uri


@pytest.fixture
def app() -> t.Iterator[Flask]:
    # TESTING suppresses sending: no API key, no sandbox needed.
    yield create_app(
        {
            "TESTING": True,
            "POSTSTACK_DEFAULT_FROM": "Acme <hello@example.com>",
            "POSTSTACK_WEBHOOK_SECRET": WEBHOOK_SECRET,
        }
    )


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()
