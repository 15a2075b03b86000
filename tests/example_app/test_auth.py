from __future__ import annotations

import typing as t

import pytest
from flask import Flask
from flask.testing import FlaskClient
from werkzeug.test import TestResponse

from example_app import create_app
from example_app.store import db
from example_app.store import get_store
from example_app.store import outbox
from example_app.store import Store
from flask_poststack import get_state
from flask_poststack.outbox import store
from flask_poststack.outbox.relay import relay_once
from flask_poststack.pytest_plugin import FakeQueue
from flask_poststack.redis_server import free_port
from flask_poststack.testing import RecordedEmail


def signup(
    client: FlaskClient, name: str = "Ada", email: str = "ada@example.com"
) -> TestResponse:
    return client.post("/signup", data={"name": name, "email": email})


def test_form_renders(client: FlaskClient) -> None:
    response = client.get("/signup")
    assert response.status_code == 200
    assert b'<input name="email"' in response.data


def test_signup_enqueues_the_welcome_email(
    app: Flask,
    client: FlaskClient,
    poststack_outbox: list[RecordedEmail],
    poststack_queue: FakeQueue,
) -> None:
    response = signup(client)

    assert response.status_code == 303
    assert response.location == "/signup/done"
    assert b"ada@example.com" in client.get("/signup/done").data
    (email,) = poststack_outbox
    assert email.kind == "enqueued"
    assert email.to == ["ada@example.com"]
    assert email.subject == "Welcome to Acme, Ada!"
    assert email.payload["from"] == "Acme <hello@example.com>"
    assert "http://localhost/" in email.payload["text"]
    (job,) = poststack_queue.jobs
    assert email.job is not None and job.id == email.job.id
    with app.app_context():
        user = get_store().get_user("ada@example.com")
        assert user is not None and user.name == "Ada"
        assert [e.job_id for e in get_store().emails()] == [job.id]
        assert store.counts(db.engine, outbox) == (0, 1)  # pushed at the commit

    # The worker's part, run here with the real task code.
    (job,) = poststack_queue.run()
    assert job.get_status() == "finished"
    (row,) = client.get("/emails.json").json["emails"]  # type: ignore[index]
    assert row["kind"] == "welcome"
    assert row["job_state"] == "sent"
    assert row["email_id"].startswith("em_suppressed_")
    assert row["delivery"] is None


def test_the_address_is_normalised(
    client: FlaskClient,
    poststack_outbox: list[RecordedEmail],
    poststack_queue: FakeQueue,
) -> None:
    signup(client, email="  Ada@EXAMPLE.com ")
    assert poststack_outbox[0].to == ["Ada@example.com"]


def test_a_bad_address_queues_nothing(
    client: FlaskClient,
    poststack_outbox: list[RecordedEmail],
    poststack_queue: FakeQueue,
) -> None:
    response = signup(client, email="ada@")

    assert response.status_code == 400
    assert b"Please enter a valid email address" in response.data
    assert b'value="ada@"' in response.data  # the form keeps what was typed
    assert poststack_outbox == []
    assert poststack_queue.jobs == []


def test_a_name_is_required(
    client: FlaskClient,
    poststack_outbox: list[RecordedEmail],
    poststack_queue: FakeQueue,
) -> None:
    response = signup(client, name=" ")
    assert response.status_code == 400
    assert b"Please tell us your name" in response.data
    assert poststack_outbox == []


def test_the_welcome_email_renders_and_autoescapes(
    client: FlaskClient,
    poststack_outbox: list[RecordedEmail],
    poststack_queue: FakeQueue,
) -> None:
    signup(client, name="<b>Ada</b> & Co")

    (email,) = poststack_outbox
    html, text = email.payload["html"], email.payload["text"]
    assert "<h1>Welcome, &lt;b&gt;Ada&lt;/b&gt; &amp; Co!</h1>" in html
    assert "<b>Ada</b>" not in html
    assert "\n\nWelcome, <b>Ada</b> & Co!\n" in text  # plain text: not escaped
    assert email.subject == "Welcome to Acme, <b>Ada</b> & Co!"


def test_a_second_sign_up_with_the_address_is_refused(
    client: FlaskClient, poststack_queue: FakeQueue
) -> None:
    signup(client)
    again = signup(client, name="Eve", email="ADA@example.com")
    assert again.status_code == 400
    assert b"ADA@example.com already has an account." in again.data
    assert len(poststack_queue.jobs) == 1


def test_a_sign_up_that_rolls_back_sends_nothing(
    app: Flask,
    client: FlaskClient,
    poststack_queue: FakeQueue,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Two sign-ups racing: both pass the form's check, the database's
    unique constraint refuses the second, and its email goes with it."""
    signup(client)
    monkeypatch.setattr(Store, "get_user", lambda self, email: None)
    again = signup(client, name="Eve")
    assert again.status_code == 400
    assert b"already has an account" in again.data
    assert len(poststack_queue.jobs) == 1
    with app.app_context():
        assert [u.name for u in get_store().users()] == ["Ada"]
        assert len(get_store().emails()) == 1
        assert store.counts(db.engine, outbox) == (0, 1)


def test_a_redis_outage_keeps_the_account_and_its_email(
    _poststack_memory_redis: t.Any,
) -> None:
    app = create_app(
        {
            "TESTING": True,
            "POSTSTACK_DEFAULT_FROM": "hello@example.com",
            "POSTSTACK_REDIS_URL": f"redis://127.0.0.1:{free_port()}/0",  # closed
        }
    )
    client = app.test_client()
    response = signup(client)

    assert response.status_code == 303  # the view did not fail
    assert b"We are sending a welcome email" in client.get("/signup/done").data
    with app.app_context():
        assert get_store().get_user("ada@example.com") is not None
        (sent,) = get_store().emails()
        assert store.counts(db.engine, outbox) == (1, 0)  # waits in the outbox
        # Redis is back: the relay (flask poststack relay) pushes it.
        redis = _poststack_memory_redis.get()
        with get_state(app).use_redis(redis):
            assert relay_once(app, grace=0) == 1
        assert store.counts(db.engine, outbox) == (0, 1)
    assert [j.id for j in FakeQueue(app, redis).jobs] == [sent.job_id]


def test_every_email_extends_the_layout(
    client: FlaskClient, poststack_outbox: list[RecordedEmail]
) -> None:
    signup(client)
    (email,) = poststack_outbox
    html, text = email.payload["html"], email.payload["text"]
    assert '<div class="header">Acme</div>' in html
    assert "<h1>Welcome, Ada!</h1>" in html
    link = "http://localhost/unsubscribe?email=ada@example.com"
    assert f'<a href="{link}">Unsubscribe</a>' in html
    assert text.startswith("Acme\n====\n\nWelcome, Ada!")
    assert text.endswith(
        f"\n--\nAcme, 1 Example Street, Exampletown.\nUnsubscribe: {link}\n"
    )
    assert email.payload["unsubscribe"] is True
    assert client.get(link).status_code == 200


def test_the_password_reset_email_has_tracking_off(
    client: FlaskClient, poststack_outbox: list[RecordedEmail]
) -> None:
    signup(client)
    poststack_outbox.clear()
    response = client.post("/reset", data={"email": "ada@example.com"})
    assert b"a reset link is on its way" in response.data
    (email,) = poststack_outbox
    assert email.subject == "Reset your Acme password"
    assert email.payload["tracking"] == {"opens": False, "clicks": False}
    assert "unsubscribe" not in email.payload
    assert "Unsubscribe" not in email.payload["html"]  # the layout's footer, replaced
    assert '<div class="header">Acme</div>' in email.payload["html"]
    link = email.payload["text"].split("one hour):\n", 1)[1].split("\n", 1)[0]
    assert client.get(link.removeprefix("http://localhost")).status_code == 200
    assert client.get("/reset/forged").status_code == 404
    # An unknown address gets the same page, and no email.
    client.post("/reset", data={"email": "nobody@example.com"})
    assert len(poststack_outbox) == 1


def test_preview_shows_the_layout(app: Flask) -> None:
    result = app.test_cli_runner().invoke(
        args=["poststack", "preview", "emails/password_reset", "--context",
              '{"reset_url": "https://acme.test/r/1"}']
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert '<div class="header">Acme</div>' in result.output
    assert "Acme\n====\n\nSomeone asked to reset" in result.output
    assert "https://acme.test/r/1" in result.output
