from __future__ import annotations

from datetime import datetime
from datetime import timedelta
from datetime import timezone

from flask import Flask
from flask.testing import FlaskClient

from example_app import create_app
from example_app.store import db
from example_app.store import get_store
from flask_poststack.pytest_plugin import FakeQueue
from flask_poststack.redis_server import free_port
from flask_poststack.webhooks import make_event_payload
from flask_poststack.webhooks import sign_webhook

from .conftest import WEBHOOK_SECRET


def queue_and_send_welcome(client: FlaskClient, queue: FakeQueue) -> str:
    """Sign up, run the worker's job; return the email's em_ id."""
    client.post("/signup", data={"name": "Ada", "email": "ada@example.com"})
    (job,) = queue.run()
    email_id = job.return_value()
    assert isinstance(email_id, str)
    return email_id


def post_webhook(
    client: FlaskClient, event_type: str, email_id: str, recipient: str | None = None
) -> int:
    payload = make_event_payload(event_type, email_id, recipient=recipient)
    body, headers = sign_webhook(payload, WEBHOOK_SECRET)
    return client.post("/poststack/webhooks", data=body, headers=headers).status_code


def test_a_delivered_webhook_shows_on_the_status_page(
    client: FlaskClient, poststack_queue: FakeQueue
) -> None:
    email_id = queue_and_send_welcome(client, poststack_queue)
    assert b"waiting" in client.get("/emails").data

    assert post_webhook(client, "email.delivered", email_id) == 200

    page = client.get("/emails").data.decode()
    assert f"<td>{email_id}</td>" in page
    assert "<td>delivered</td>" in page
    (row,) = client.get("/emails.json").json["emails"]  # type: ignore[index]
    assert row == {
        "kind": "welcome",
        "to": "ada@example.com",
        "job_state": "sent",
        "email_id": email_id,
        "delivery": "delivered",
    }


def test_a_bounce_marks_the_address_undeliverable(
    app: Flask, client: FlaskClient, poststack_queue: FakeQueue
) -> None:
    email_id = queue_and_send_welcome(client, poststack_queue)

    status = post_webhook(
        client, "email.bounced", email_id, recipient="ada@example.com"
    )

    assert status == 200
    with app.app_context():
        user = get_store().get_user("ada@example.com")
        assert user is not None and user.undeliverable == "bounced"
    page = client.get("/emails").data.decode()
    assert "<td>bounced</td>" in page
    assert "no: bounced" in page
    # Signing up again with that address is refused.
    again = client.post("/signup", data={"name": "Ada", "email": "ada@example.com"})
    assert again.status_code == 400
    assert b"bounced; please use another" in again.data
    assert len(poststack_queue.jobs) == 0


def test_a_badly_signed_webhook_changes_nothing(
    app: Flask, client: FlaskClient, poststack_queue: FakeQueue
) -> None:
    email_id = queue_and_send_welcome(client, poststack_queue)
    body, headers = sign_webhook(
        make_event_payload("email.bounced", email_id, recipient="ada@example.com"),
        "whsec_not_ours",
    )

    response = client.post("/poststack/webhooks", data=body, headers=headers)

    assert response.status_code == 401
    with app.app_context():
        assert get_store().delivery(email_id) is None
        user = get_store().get_user("ada@example.com")
        assert user is not None and user.undeliverable is None


def test_a_late_event_does_not_overwrite_a_newer_one(app: Flask) -> None:
    store = get_store()
    now = datetime.now(timezone.utc)
    with app.app_context():
        store.record_status("em_1", "delivered", now)
        db.session.commit()
    with app.app_context():  # read back from the database, as a new request
        store.record_status("em_1", "sent", now - timedelta(seconds=1))  # late
        db.session.commit()
        delivery = store.delivery("em_1")
        assert delivery is not None and delivery.status == "delivered"


def test_the_status_page_survives_a_redis_outage() -> None:
    app = create_app(
        {"TESTING": True, "POSTSTACK_REDIS_URL": f"redis://127.0.0.1:{free_port()}/0"}
    )
    with app.app_context():
        get_store().add_email("welcome", "ada@example.com", job_id="job-1")
        db.session.commit()

    response = app.test_client().get("/emails")

    assert response.status_code == 200
    assert b"unknown (Redis is unreachable)" in response.data


def test_the_status_page_links_to_a_local_sandbox_inbox(
    poststack_queue: FakeQueue,
) -> None:
    base_url = "http://127.0.0.1:8025"
    app = create_app(
        {
            "TESTING": True,
            "POSTSTACK_DEFAULT_FROM": "Acme <hello@example.com>",
            "POSTSTACK_BASE_URL": base_url,
        }
    )
    client = app.test_client()
    email_id = queue_and_send_welcome(client, poststack_queue)
    link = f'<a href="{base_url}/inbox/{email_id}">{email_id}</a>'
    assert link in client.get("/emails").text
