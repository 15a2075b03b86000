"""The app's data: users, the emails it sent and what became of them.

Three tables, through Flask-SQLAlchemy, in a SQLite file by default
(``SQLALCHEMY_DATABASE_URI``), next to Flask-PostStack's outbox table: a
sign-up writes its user, its email's row and the outbox row in one
transaction. The store's methods only add to the session; the view (or the
webhook receiver) commits.
"""

from __future__ import annotations

import typing as t
from datetime import datetime
from datetime import timezone

from flask import Flask
from flask_sqlalchemy import SQLAlchemy
from sqlalchemy import DateTime
from sqlalchemy import event
from sqlalchemy import select
from sqlalchemy import String
from sqlalchemy.orm import DeclarativeBase
from sqlalchemy.orm import Mapped
from sqlalchemy.orm import mapped_column

from flask_poststack.outbox import outbox_table


class Base(DeclarativeBase):
    pass


db = SQLAlchemy(model_class=Base)

#: Flask-PostStack's outbox, declared on the app's metadata (Alembic sees it).
outbox = outbox_table(db.metadata)


def _now() -> datetime:
    return datetime.now(timezone.utc)


class User(db.Model):  # type: ignore[name-defined,misc]
    __tablename__ = "users"
    id: Mapped[int] = mapped_column(primary_key=True)
    #: The address in lower case: one account per address.
    key: Mapped[str] = mapped_column(String(320), unique=True)
    email: Mapped[str] = mapped_column(String(320))
    name: Mapped[str] = mapped_column(String(200))
    #: Why mail to this address stopped (``"bounced"``), or ``None``.
    undeliverable: Mapped[str | None] = mapped_column(String(32), default=None)

    def as_dict(self) -> dict[str, t.Any]:
        return {
            "email": self.email,
            "name": self.name,
            "undeliverable": self.undeliverable,
        }


class SentEmail(db.Model):  # type: ignore[name-defined,misc]
    """One email the app sent (``email_id``) or queued (``job_id``)."""

    __tablename__ = "sent_emails"
    id: Mapped[int] = mapped_column(primary_key=True)
    kind: Mapped[str] = mapped_column(String(32))
    to: Mapped[str] = mapped_column(String(320))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    job_id: Mapped[str | None] = mapped_column(String(64), default=None)
    email_id: Mapped[str | None] = mapped_column(String(64), default=None)


class Delivery(db.Model):  # type: ignore[name-defined,misc]
    """The latest webhook event of one email (``"delivered"``, ``"bounced"``...)."""

    __tablename__ = "deliveries"
    email_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    status: Mapped[str] = mapped_column(String(32))
    at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class Store:
    """The queries the views need, on ``db.session``."""

    # Users, found by their address in any case.

    def add_user(self, email: str, name: str) -> User:
        user = User(key=email.lower(), email=email, name=name)
        db.session.add(user)
        return user

    def get_user(self, email: str) -> User | None:
        found: User | None = db.session.scalar(
            select(User).where(User.key == email.lower())
        )
        return found

    def users(self) -> list[User]:
        return list(db.session.scalars(select(User).order_by(User.id)))

    def mark_undeliverable(self, email: str, reason: str) -> None:
        user = self.get_user(email)
        if user is not None:
            user.undeliverable = reason

    # Emails, newest first.

    def add_email(
        self,
        kind: str,
        to: str,
        *,
        job_id: str | None = None,
        email_id: str | None = None,
    ) -> SentEmail:
        sent = SentEmail(
            kind=kind, to=to, created_at=_now(), job_id=job_id, email_id=email_id
        )
        db.session.add(sent)
        return sent

    def emails(self) -> list[SentEmail]:
        query = select(SentEmail).order_by(SentEmail.id.desc())
        return list(db.session.scalars(query))

    # Webhook statuses, keyed by the API's em_ id.

    def record_status(self, email_id: str, status: str, at: datetime | None) -> None:
        """Keep the newest event: webhooks may arrive out of order, or twice."""
        known = db.session.get(Delivery, email_id)
        if known is None:
            db.session.add(Delivery(email_id=email_id, status=status, at=at))
        elif at is None or known.at is None or at >= _aware(known.at):
            known.status, known.at = status, at

    def delivery(self, email_id: str) -> Delivery | None:
        return db.session.get(Delivery, email_id)


def _aware(at: datetime) -> datetime:
    # SQLite hands back naive datetimes; they were stored in UTC.
    return at if at.tzinfo else at.replace(tzinfo=timezone.utc)


def _sqlite_pragmas(dbapi_connection: t.Any, _record: t.Any) -> None:
    # WAL: the relay and the request threads write without blocking readers.
    dbapi_connection.execute("PRAGMA journal_mode=WAL")
    dbapi_connection.execute("PRAGMA busy_timeout=10000")


def init_app(app: Flask) -> None:
    """Bind the tables to ``app`` and create them (a real app would migrate)."""
    db.init_app(app)
    with app.app_context():
        if db.engine.dialect.name == "sqlite":
            event.listen(db.engine, "connect", _sqlite_pragmas)
        db.create_all()


_store = Store()


def get_store() -> Store:
    """The store; its queries run on the current app's ``db.session``."""
    return _store
