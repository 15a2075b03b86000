from __future__ import annotations

import base64
import re
import typing as t

from flask import Flask
from flask.testing import FlaskClient

from example_app.billing import ORDERS
from example_app.billing import receipt_pdf
from example_app.pdf import text_pdf
from example_app.store import get_store
from flask_poststack.testing import RecordedEmail


def test_the_receipt_has_the_pdf_attached(
    app: Flask, client: FlaskClient, poststack_outbox: list[RecordedEmail]
) -> None:
    response = client.post(
        "/billing/receipt/42", data={"email": "ada@example.com"}, follow_redirects=True
    )

    assert response.status_code == 200
    assert b"Receipt sent to ada@example.com (em_suppressed_" in response.data
    (email,) = poststack_outbox
    assert email.kind == "sent"  # send_email: at once, not queued
    assert email.to == ["ada@example.com"]
    assert email.subject == "Your Acme receipt for order #42"
    assert "24.00 EUR" in email.payload["text"]
    (attachment,) = email.payload["attachments"]
    assert attachment["filename"] == "receipt-42.pdf"
    assert attachment["content_type"] == "application/pdf"
    assert base64.b64decode(attachment["content"]) == receipt_pdf(ORDERS[42])
    with app.app_context():
        (sent,) = get_store().emails()
    assert sent.kind == "receipt" and sent.email_id == email.result.id  # type: ignore[union-attr]


def test_an_api_error_shows_a_friendly_message(
    app: Flask, client: FlaskClient, poststack_fail_next: t.Callable[..., None]
) -> None:
    poststack_fail_next(status=503)

    response = client.post(
        "/billing/receipt/42", data={"email": "ada@example.com"}, follow_redirects=True
    )

    assert response.status_code == 200
    assert b"We could not email your receipt just now" in response.data
    assert b"reference: req_injected" in response.data
    with app.app_context():
        assert get_store().emails() == []


def test_a_bad_address_is_a_form_error(
    client: FlaskClient, poststack_outbox: list[RecordedEmail]
) -> None:
    response = client.post(
        "/billing/receipt/42", data={"email": "nope"}, follow_redirects=True
    )
    assert b"Please enter a valid email address" in response.data
    assert poststack_outbox == []


def test_an_unknown_order_is_404(client: FlaskClient) -> None:
    assert (
        client.post("/billing/receipt/7", data={"email": "a@example.com"}).status_code
        == 404
    )


def test_the_pdf_is_well_formed() -> None:
    pdf = text_pdf(["Total (EUR) \\ 24.00"])

    assert pdf.startswith(b"%PDF-1.4\n")
    assert pdf.endswith(b"%%EOF\n")
    assert b"(Total \\(EUR\\) \\\\ 24.00) Tj" in pdf
    # startxref points at the xref table, whose entries point at each object.
    xref_at = int(pdf.rsplit(b"startxref\n", 1)[1].split(b"\n")[0])
    assert pdf[xref_at:].startswith(b"xref\n0 6\n")
    entries = re.findall(rb"(\d{10}) 00000 n \n", pdf[xref_at:])
    assert len(entries) == 5
    for number, offset in enumerate(entries, start=1):
        assert pdf[int(offset) :].startswith(b"%d 0 obj\n" % number)
    # The content stream's /Length is its exact size.
    length = int(re.search(rb"/Length (\d+)", pdf).group(1))  # type: ignore[union-attr]
    stream = pdf.split(b"stream\n", 1)[1].split(b"\nendstream", 1)[0]
    assert len(stream) == length
