"""What became of each email: webhook receivers and the ``/emails`` page.

Flask-PostStack's webhook endpoint (registered by ``init_app`` when
``POSTSTACK_WEBHOOK_SECRET`` is set) checks each delivery's signature and
sends a signal with a parsed ``event``; the receivers below record it (and
commit: they run inside the endpoint's request).
"""

from __future__ import annotations

import dataclasses
import typing as t
from urllib.parse import urlsplit

import redis
from flask import Blueprint
from flask import Flask
from flask import render_template

from flask_poststack import get_state
from flask_poststack import signals
from flask_poststack.config import TESTING_BASE_URL
from flask_poststack.status import email_status
from flask_poststack.webhooks import WebhookEvent

from .store import db
from .store import get_store

bp = Blueprint("tracking", __name__)


def connect_receivers(app: Flask) -> None:
    """Listen to ``app``'s webhook signals (a receiver that raises makes the
    endpoint answer 500, and PostStack delivers the event again)."""
    signals.webhook_received.connect(record_status, sender=app)
    signals.webhook_received.connect(mark_bounced, sender=app)


def record_status(sender: Flask, event: WebhookEvent, **extra: t.Any) -> None:
    """Every event: keep the email's latest status ("delivered", "bounced"...)."""
    if event.email_id and event.type.startswith("email."):
        status = event.type.removeprefix("email.")
        get_store().record_status(event.email_id, status, event.timestamp)
        db.session.commit()


def mark_bounced(sender: Flask, event: WebhookEvent, **extra: t.Any) -> None:
    """A permanent bounce: stop mailing that address."""
    if event.kind == "bounced" and event.recipient:
        get_store().mark_undeliverable(event.recipient, "bounced")
        db.session.commit()


@dataclasses.dataclass(frozen=True)
class Row:
    kind: str
    to: str
    #: The RQ job's state (``email_status``), ``None`` for a direct send.
    job_state: str | None
    email_id: str | None
    #: The latest webhook status, ``None`` until the first event arrives.
    delivery: str | None


def email_rows() -> list[Row]:
    store = get_store()
    rows = []
    for sent in store.emails():
        job_state, email_id = None, sent.email_id
        if sent.job_id is not None:
            try:
                status = email_status(sent.job_id)
            except redis.RedisError:
                job_state = "unknown (Redis is unreachable)"
            else:
                job_state, email_id = status.state, status.email_id
        delivery = store.delivery(email_id) if email_id else None
        rows.append(
            Row(
                sent.kind,
                sent.to,
                job_state,
                email_id,
                delivery.status if delivery else None,
            )
        )
    return rows


@bp.get("/emails")
def emails() -> str:
    return render_template(
        "tracking/emails.html",
        rows=email_rows(),
        users=get_store().users(),
        inbox=sandbox_inbox(),
    )


def sandbox_inbox() -> str | None:
    """The sandbox's inbox URL prefix for an ``em_`` id, when
    ``POSTSTACK_BASE_URL`` is a sandbox on this machine."""
    base_url = get_state().settings.base_url.rstrip("/")
    if base_url == TESTING_BASE_URL:  # a testing app that names no sandbox
        return None
    host = urlsplit(base_url).hostname
    return f"{base_url}/inbox/" if host in ("127.0.0.1", "localhost") else None


@bp.get("/emails.json")
def emails_json() -> dict[str, t.Any]:
    """The same, for scripts (the demo reads it)."""
    return {
        "emails": [dataclasses.asdict(row) for row in email_rows()],
        "users": [user.as_dict() for user in get_store().users()],
    }
