"""The app's data: users, the emails it sent and what became of them.

Kept in memory behind one lock, so it is safe under a threaded server and
forgotten at exit. A real app would keep the same three things in its
database.
"""

from __future__ import annotations

import dataclasses
import threading
from datetime import datetime
from datetime import timezone

from flask import current_app
from flask import Flask

#: Where the store lives in ``app.extensions``.
EXTENSION_KEY = "example_app.store"


@dataclasses.dataclass(frozen=True)
class User:
    email: str
    name: str
    #: Why mail to this address stopped (``"bounced"``), or ``None``.
    undeliverable: str | None = None


@dataclasses.dataclass(frozen=True)
class SentEmail:
    """One email the app sent (``email_id``) or queued (``job_id``)."""

    kind: str
    to: str
    created_at: datetime
    job_id: str | None = None
    email_id: str | None = None


@dataclasses.dataclass(frozen=True)
class Delivery:
    """The latest webhook event of one email (``"delivered"``, ``"bounced"``...)."""

    status: str
    at: datetime | None


class Store:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._users: dict[str, User] = {}
        self._emails: list[SentEmail] = []
        self._deliveries: dict[str, Delivery] = {}

    # Users, keyed by their address in lower case.

    def add_user(self, email: str, name: str) -> User:
        user = User(email=email, name=name)
        with self._lock:
            self._users[email.lower()] = user
        return user

    def get_user(self, email: str) -> User | None:
        with self._lock:
            return self._users.get(email.lower())

    def users(self) -> list[User]:
        with self._lock:
            return list(self._users.values())

    def mark_undeliverable(self, email: str, reason: str) -> None:
        with self._lock:
            user = self._users.get(email.lower())
            if user is not None:
                self._users[email.lower()] = dataclasses.replace(
                    user, undeliverable=reason
                )

    # Emails, newest first.

    def add_email(
        self,
        kind: str,
        to: str,
        *,
        job_id: str | None = None,
        email_id: str | None = None,
    ) -> SentEmail:
        sent = SentEmail(kind, to, datetime.now(timezone.utc), job_id, email_id)
        with self._lock:
            self._emails.insert(0, sent)
        return sent

    def emails(self) -> list[SentEmail]:
        with self._lock:
            return list(self._emails)

    # Webhook statuses, keyed by the API's em_ id.

    def record_status(self, email_id: str, status: str, at: datetime | None) -> None:
        """Keep the newest event: webhooks may arrive out of order, or twice."""
        with self._lock:
            known = self._deliveries.get(email_id)
            if known is None or at is None or known.at is None or at >= known.at:
                self._deliveries[email_id] = Delivery(status, at)

    def delivery(self, email_id: str) -> Delivery | None:
        with self._lock:
            return self._deliveries.get(email_id)


def init_app(app: Flask) -> None:
    app.extensions[EXTENSION_KEY] = Store()


def get_store(app: Flask | None = None) -> Store:
    """The store of ``app``, or of the current app."""
    extensions = (app or current_app).extensions
    store: Store = extensions[EXTENSION_KEY]
    return store
