from __future__ import annotations

import typing as t

import pytest
from flask import Flask
from flask_sqlalchemy import SQLAlchemy
from sqlalchemy import event
from sqlalchemy.orm import DeclarativeBase
from sqlalchemy.orm import Mapped
from sqlalchemy.orm import mapped_column

from flask_poststack.outbox import outbox_table
from tests.conftest import AppFactory


def make_db() -> tuple[SQLAlchemy, type[t.Any]]:
    """A Flask-SQLAlchemy with a users table and the outbox table."""

    class Base(DeclarativeBase):
        pass

    db = SQLAlchemy(model_class=Base, disable_autonaming=True)

    class User(db.Model):  # type: ignore[name-defined,misc]
        __tablename__ = "users"
        id: Mapped[int] = mapped_column(primary_key=True)
        email: Mapped[str] = mapped_column(unique=True)

    outbox_table(db.metadata)
    return db, User


def wal(dbapi_connection: t.Any, _record: t.Any) -> None:
    dbapi_connection.execute("PRAGMA journal_mode=WAL")
    dbapi_connection.execute("PRAGMA busy_timeout=10000")


@pytest.fixture
def db_app(
    make_app: AppFactory, tmp_path: t.Any
) -> t.Callable[..., tuple[Flask, SQLAlchemy, t.Any]]:
    """``db_app(**config)``: an app on a real SQLite file in WAL mode."""

    def build(**config: t.Any) -> tuple[Flask, SQLAlchemy, t.Any]:
        app = make_app(
            SQLALCHEMY_DATABASE_URI=f"sqlite:///{tmp_path / 'app.db'}", **config
        )
        db, user = make_db()
        db.init_app(app)
        with app.app_context():
            event.listen(db.engine, "connect", wal)
            db.create_all()
        return app, db, user

    return build
