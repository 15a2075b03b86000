from __future__ import annotations

import typing as t
from pathlib import Path

import pytest
from flask import Flask
from flask_sqlalchemy import SQLAlchemy
from sqlalchemy import event
from sqlalchemy import select
from sqlalchemy.orm import DeclarativeBase
from sqlalchemy.orm import Mapped
from sqlalchemy.orm import mapped_column

from flask_poststack.outbox import outbox_table
from flask_poststack.outbox import store
from tests.conftest import AppFactory
from tests.postgres import find_bindir
from tests.postgres import PostgresServer


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
    """``db_app(**config)``: an app on a real SQLite file in WAL mode, or on
    the database of ``SQLALCHEMY_DATABASE_URI`` in ``config``."""

    def build(**config: t.Any) -> tuple[Flask, SQLAlchemy, t.Any]:
        config.setdefault("SQLALCHEMY_DATABASE_URI", f"sqlite:///{tmp_path / 'app.db'}")
        app = make_app(**config)
        db, user = make_db()
        db.init_app(app)
        with app.app_context():
            if db.engine.dialect.name == "sqlite":
                event.listen(db.engine, "connect", wal)
            db.create_all()
        return app, db, user

    return build


@pytest.fixture(scope="session")
def postgres_server() -> t.Iterator[PostgresServer]:
    """A PostgreSQL server of this test process (``make postgresql``)."""
    bindir = find_bindir()
    if bindir is None:
        # A failure, not a skip: a missing server must not pass as green.
        pytest.fail("PostgreSQL is not installed: run `make postgresql`")
    with PostgresServer(bindir) as server:
        yield server


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The URL of an empty database: a SQLite file, or a PostgreSQL database."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'app.db'}"
    server: PostgresServer = request.getfixturevalue("postgres_server")
    return server.create_database()


@pytest.fixture
def outbox_setup(
    db_app: t.Any, _poststack_memory_redis: t.Any, database_url: str
) -> t.Iterator[tuple[Flask, SQLAlchemy, t.Any, t.Any]]:
    """An outbox app in an app context: ``(app, db, User, fake redis)``."""
    app, db, user = db_app(
        POSTSTACK_OUTBOX="sqlalchemy",
        POSTSTACK_OUTBOX_KEEP=60,
        SQLALCHEMY_DATABASE_URI=database_url,
    )
    with app.app_context():
        yield app, db, user, _poststack_memory_redis.get()
        db.session.remove()
        db.engine.dispose()  # no connection left open on the server


def outbox_rows(db: SQLAlchemy) -> list[t.Any]:
    """The outbox table's rows, oldest first."""
    outbox = store.table("poststack_outbox")
    with db.engine.connect() as conn:
        return list(conn.execute(select(outbox).order_by(outbox.c.created_at)))
