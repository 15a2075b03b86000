"""The event: parsing lenient envelopes, timestamps and the normalised kind."""

from __future__ import annotations

import typing as t
from datetime import datetime
from datetime import timezone

import pytest

from flask_poststack.webhooks import make_event_payload
from flask_poststack.webhooks import parse_event
from flask_poststack.webhooks import sign_webhook
from flask_poststack.webhooks import WebhookEvent

from .conftest import make_app
from .conftest import post
from .conftest import Recorder
from .conftest import SECRET

# Every event name of the API reference (poststack-api.md, 6.1 and 8.3), the
# sandbox's test event and names nobody has seen yet.
KINDS = [
    ("email.queued", "queued"),
    ("email.sent", "sent"),
    ("email.delivered", "delivered"),
    ("email.deferred", "deferred"),
    ("email.soft_bounced", "deferred"),
    ("email.bounced", "bounced"),
    ("email.complained", "complained"),
    ("email.opened", "opened"),
    ("email.clicked", "clicked"),
    ("email.unsubscribed", "unsubscribed"),
    ("email.failed", "failed"),
    ("email.inbound", "inbound"),
    ("inbound_email.received", "inbound"),
    # The email's own event list uses bare names.
    ("delivered", "delivered"),
    ("soft_bounced", "deferred"),
    ("Email.Bounced", "bounced"),
    ("contact.created", "unknown"),
    ("webhook.test", "unknown"),
    ("email.something_new", "unknown"),
    ("", "unknown"),
]


@pytest.mark.parametrize(("type", "kind"), KINDS)
def test_kind(type: str, kind: str) -> None:
    event = parse_event({"type": type, "data": {"email_id": "em_1"}})
    assert (event.type, event.kind) == (type, kind)
    assert WebhookEvent(type, None, None, None, None, {}).kind == kind


def test_every_kind_reaches_the_receivers(recorder: Recorder) -> None:
    client = make_app().test_client()
    for type, _ in KINDS:
        body, headers = sign_webhook(make_event_payload(type, "em_1"), SECRET)
        assert post(client, body, headers).status_code == 200
    assert [(e.type, e.kind) for e in recorder.events()] == KINDS
    assert [e.type for e in recorder.events("deferred")] == [
        "email.deferred",
        "email.soft_bounced",
        "soft_bounced",
    ]


def test_kind_is_part_of_the_repr_and_not_an_argument() -> None:
    event = parse_event(make_event_payload("email.bounced", "em_1"))
    assert "kind='bounced'" in repr(event)
    with pytest.raises(TypeError):
        WebhookEvent("x", None, None, None, None, {}, "bounced")  # type: ignore[call-arg]


def test_parse_the_sandbox_envelope() -> None:
    event = parse_event(
        {
            "id": "evt_1",
            "type": "email.bounced",
            "timestamp": "2026-01-02T03:04:05.678Z",
            "data": {
                "email_id": "em_9",
                "to": ["x@y.test", "z@y.test"],
                "metadata": {"recipient": "z@y.test"},
            },
        }
    )
    assert (event.type, event.id, event.email_id, event.recipient) == (
        "email.bounced",
        "evt_1",
        "em_9",
        "z@y.test",
    )
    assert event.timestamp == datetime(2026, 1, 2, 3, 4, 5, 678000, timezone.utc)


@pytest.mark.parametrize(
    ("payload", "expected"),
    [
        # Flat, as the sandbox's custom envelope test sends it.
        (
            {"event": "email.queued", "email_id": "em_1", "to": ["a@b.test"]},
            ("email.queued", "em_1", "a@b.test", None),
        ),
        (
            {"type": "email.opened", "emailId": "em_2"},
            ("email.opened", "em_2", None, None),
        ),
        # An em_ id names the email, never the event (events share it).
        (
            {"event": "email.clicked", "id": "em_3"},
            ("email.clicked", "em_3", None, None),
        ),
        (
            {"event": "email.delivered", "id": 123},
            ("email.delivered", None, None, "123"),
        ),
        (
            {
                "eventType": "email.sent",
                "data": {"id": "em_4", "recipient": "r@s.test"},
            },
            ("email.sent", "em_4", "r@s.test", None),
        ),
        (
            {"type": "x", "data": {"email": {"id": "em_5"}}, "event_id": "e5"},
            ("x", "em_5", None, "e5"),
        ),
        ({}, ("", None, None, None)),
        (
            {"type": 5, "id": True, "data": [1], "email_id": ["em_x"], "to": 3},
            ("", None, None, None),
        ),
    ],
)
def test_parse_other_envelopes(
    payload: dict[str, t.Any], expected: tuple[str, str | None, str | None, str | None]
) -> None:
    event = parse_event(payload)
    assert (event.type, event.email_id, event.recipient, event.id) == expected
    assert event.payload is payload


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (1767225600, datetime(2026, 1, 1, tzinfo=timezone.utc)),
        (1767225600000, datetime(2026, 1, 1, tzinfo=timezone.utc)),
        ("2026-01-01T00:00:00", datetime(2026, 1, 1, tzinfo=timezone.utc)),
        ("2026-01-01T01:00:00+01:00", datetime(2026, 1, 1, tzinfo=timezone.utc)),
        # The same answers on every Python (fromisoformat differs by version).
        (
            "2026-01-02T03:04:05.12Z",
            datetime(2026, 1, 2, 3, 4, 5, 120000, timezone.utc),
        ),
        (
            "2026-01-02T03:04:05.1234567Z",
            datetime(2026, 1, 2, 3, 4, 5, 123456, timezone.utc),
        ),
        ("20260102T030405Z", None),
        ("2026-13-01T00:00:00Z", None),
        ("yesterday", None),
        (10**30, None),
        (float("nan"), None),
        (True, None),
        (None, None),
    ],
)
def test_parse_timestamps(value: object, expected: datetime | None) -> None:
    assert parse_event({"timestamp": value}).timestamp == expected


@pytest.mark.parametrize(
    "body",
    [
        rb'{"id": "\ud800", "type": "x"}',
        rb'{"type": "\udfff", "data": {"email_id": "\ud800", "to": "\ud800@x"}}',
        b'{"timestamp": 1e400, "id": 99999999999999999999999999999}',
        b'{"timestamp": "9999-12-31T23:59:59-23:59", "data": null}',
    ],
)
def test_odd_but_valid_json_is_dispatched(body: bytes, recorder: Recorder) -> None:
    response = post(make_app().test_client(), *sign_webhook(body, SECRET))
    assert response.status_code == 200
    assert len(recorder.events()) == 1
