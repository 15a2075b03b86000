from __future__ import annotations

import base64
import io

from flask.testing import FlaskClient

from flask_poststack.testing import RecordedEmail


def test_the_flask_mail_view_sends_through_poststack(
    client: FlaskClient, poststack_outbox: list[RecordedEmail]
) -> None:
    response = client.post(
        "/support/",
        data={
            "email": "ada@example.com",
            "message": "The export button does nothing.",
            "screenshot": (io.BytesIO(b"\x89PNG fake"), "shot.png", "image/png"),
        },
        follow_redirects=True,
    )

    assert response.status_code == 200
    assert b"Thanks, we will get back to you." in response.data
    (email,) = poststack_outbox
    assert email.status == "sent" and email.job is None  # sent at once
    assert email.to == ["support@example.com"]
    assert email.from_ == "Acme <hello@example.com>"  # POSTSTACK_DEFAULT_FROM
    assert email.reply_to == "ada@example.com"
    assert email.subject == "Support request from ada@example.com"
    assert email.text == "The export button does nothing."
    (shot,) = email.attachments
    assert (shot["filename"], shot["content_type"]) == ("shot.png", "image/png")
    assert base64.b64decode(shot["content"]) == b"\x89PNG fake"


def test_a_bad_reply_address_is_a_form_error(
    client: FlaskClient, poststack_outbox: list[RecordedEmail]
) -> None:
    response = client.post(
        "/support/",
        data={"email": "nope", "message": "hi"},
        follow_redirects=True,
    )
    assert b"Please check the form (reply_to)." in response.data
    assert poststack_outbox == []


def test_the_form_renders(client: FlaskClient) -> None:
    assert b"Contact support" in client.get("/support/").data
