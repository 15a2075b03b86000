"""The app's own tests, written for Flask-Mail and unchanged since."""

from __future__ import annotations

import json
import logging
import typing as t

import pytest
from flask import Flask
from flask.testing import FlaskClient

from .app import create_app
from .app import mail
from .config import TestConfig


@pytest.fixture
def app() -> t.Iterator[Flask]:
    app = create_app(TestConfig)
    with app.app_context():
        yield app


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


def test_reset_password_email(client: FlaskClient) -> None:
    with mail.record_messages() as outbox:
        response = client.post("/reset_password", data={"email": "susan@example.com"})
    assert response.text == "Check your email"
    assert len(outbox) == 1
    msg = outbox[0]
    assert msg.subject == "[Microblog] Reset Your Password"
    assert msg.recipients == ["susan@example.com"]
    assert msg.sender == "Microblog <noreply@microblog.test>"
    assert "Dear susan@example.com" in (msg.body or "")
    assert "click here" in (msg.html or "")
    assert "Content-Type: multipart/alternative" in msg.as_string()


def test_export_attaches_the_posts(client: FlaskClient) -> None:
    with mail.record_messages() as outbox:
        client.post(
            "/export", data={"email": "susan@example.com", "post": ["one", "two"]}
        )
    (msg,) = outbox
    assert msg.sender == "admin@microblog.test"
    (attachment,) = msg.attachments
    assert attachment.filename == "posts.json"
    assert attachment.content_type == "application/json"
    assert json.loads(attachment.data) == ["one", "two"]
    assert 'filename="posts.json"' in msg.as_string()


def test_newsletter_uses_one_connection(client: FlaskClient) -> None:
    with mail.record_messages() as outbox:
        client.post("/newsletter", data={"user": ["a@example.com", "b@example.com"]})
    assert [m.recipients for m in outbox] == [["a@example.com"], ["b@example.com"]]
    assert outbox[1].body == "Hello b"


def test_sent_emails_are_logged(
    client: FlaskClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    client.post("/reset_password", data={"email": "susan@example.com"})
    assert "email sent: [Microblog] Reset Your Password" in caplog.text


def test_mail_settings(app: Flask) -> None:
    assert mail.state is None  # Mail() then init_app(): state lives on the app
    state = app.extensions["mail"]
    assert state.default_sender == ("Microblog", "noreply@microblog.test")
