"""The outbox against hostile rows, bad queue names, and a database or Redis
that is not there when the relay needs it."""

from __future__ import annotations

import logging
import sqlite3
import typing as t
from pathlib import Path

import pytest
import redis
from sqlalchemy import create_engine
from sqlalchemy import func
from sqlalchemy import select
from sqlalchemy import text
from sqlalchemy.exc import OperationalError

from flask_poststack import enqueue_batch
from flask_poststack import enqueue_email
from flask_poststack import enqueue_many
from flask_poststack import get_state
from flask_poststack import InvalidEmailError
from flask_poststack import QueueUnavailableError
from flask_poststack.outbox import relay_cli
from flask_poststack.outbox import store
from flask_poststack.outbox.relay import relay_once
from flask_poststack.pytest_plugin import FakeQueue
from flask_poststack.redis_server import free_port
from tests.conftest import AppFactory
from tests.db.conftest import make_db
from tests.db.conftest import outbox_rows as rows

MAIL: t.Any = {"to": "ada@example.com", "subject": "Welcome", "text": "Hi"}


@pytest.fixture
def sqlite_outbox(db_app: t.Any, _poststack_memory_redis: t.Any) -> t.Iterator[t.Any]:
    app, db, user = db_app(POSTSTACK_OUTBOX="sqlalchemy")
    with app.app_context():
        yield app, db, user, _poststack_memory_redis.get()
        db.session.remove()
        db.engine.dispose()


def test_a_row_that_is_not_utf8_is_parked_and_the_others_pushed(
    sqlite_outbox: t.Any, caplog: pytest.LogCaptureFixture
) -> None:
    app, db, _user, conn = sqlite_outbox
    good = enqueue_email(**MAIL)
    outbox = store.table("poststack_outbox")
    with db.engine.begin() as c:
        c.execute(outbox.update().values(pushed_at=None))
        c.execute(
            text(
                "INSERT INTO poststack_outbox (id, idempotency_key, queue, job,"
                " created_at, attempts) VALUES ('bad', 'k', 'poststack',"
                " CAST(X'FFFE7B' AS TEXT), :at, 0)"
            ),
            {"at": rows(db)[0].created_at},
        )
    with caplog.at_level(logging.INFO, "flask_poststack"):
        assert relay_once(app, grace=0) == 1
    assert "'bad'" in caplog.text and "decode" not in caplog.text
    assert [j.id for j in FakeQueue(app, conn).jobs] == [good.id]
    with db.engine.connect() as c:
        parked = c.scalar(select(outbox.c.claimed_by).where(outbox.c.id == "bad"))
    assert parked == store.PARKED
    assert relay_once(app, grace=0) == 0


@pytest.mark.parametrize("queue", ["q" * 129, "a\x00b", "a\nb", " "])
def test_a_bad_queue_name_is_refused_before_anything_is_written(
    outbox_setup: t.Any, queue: str
) -> None:
    _app, db, user, _conn = outbox_setup
    db.session.add(user(email="ada@example.com"))
    calls = [
        lambda: enqueue_email(**MAIL, queue=queue),
        lambda: enqueue_many([MAIL], queue=queue),
        lambda: enqueue_batch([MAIL], queue=queue),
    ]
    for call in calls:
        with pytest.raises(InvalidEmailError, match="queue"):
            call()
    db.session.commit()  # the sign-up is not lost
    assert db.session.scalar(select(func.count()).select_from(user)) == 1
    assert rows(db) == []
    enqueue_email(**MAIL, queue="q" * 128)  # the longest name fits
    db.session.commit()
    assert [r.queue for r in rows(db)] == ["q" * 128]


def test_rows_of_a_failed_push_are_claimed_again_at_once(outbox_setup: t.Any) -> None:
    app, db, user, conn = outbox_setup
    dead = redis.Redis(port=free_port(), socket_connect_timeout=1)
    with get_state(app).use_redis(dead):
        db.session.add(user(email="ada@example.com"))
        job = enqueue_email(**MAIL)
        db.session.commit()  # Redis down: the row waits
        with pytest.raises(QueueUnavailableError):
            relay_once(app, grace=0, lease=3600)
    [row] = rows(db)
    assert (row.claimed_by, row.claimed_until, row.pushed_at) == (None, None, None)
    assert relay_once(app, grace=0, lease=3600) == 1  # Redis back: no lease wait
    assert [j.id for j in FakeQueue(app, conn).jobs] == [job.id]


@pytest.fixture
def locked_sqlite(
    make_app: AppFactory, _poststack_memory_redis: t.Any, tmp_path: Path
) -> t.Iterator[t.Any]:
    """An outbox app on a SQLite file that another process holds locked."""
    path = tmp_path / "app.db"
    app = make_app(
        POSTSTACK_OUTBOX="sqlalchemy",
        SQLALCHEMY_DATABASE_URI=f"sqlite:///{path}",
        SQLALCHEMY_ENGINE_OPTIONS={"connect_args": {"timeout": 0.1}},
    )
    db, _user = make_db()
    db.init_app(app)
    with app.app_context():
        db.create_all()
        db.engine.dispose()
    locker = sqlite3.connect(path, isolation_level=None)
    locker.execute("BEGIN EXCLUSIVE")  # no journal_mode=WAL: readers wait too
    yield app
    locker.close()


def test_relay_once_on_a_locked_database_says_so_in_one_line(
    locked_sqlite: t.Any,
) -> None:
    result = locked_sqlite.test_cli_runner().invoke(
        args=["poststack", "relay", "--once"]
    )
    assert result.exit_code == 1
    assert result.output.splitlines() == ["Error: database error: database is locked"]


def test_the_relay_started_before_its_database_retries(
    locked_sqlite: t.Any,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    started: list[t.Any] = []
    monkeypatch.setattr(relay_cli, "run_relay", lambda app, **kw: started.append(app))
    with caplog.at_level(logging.WARNING, "flask_poststack"):
        result = locked_sqlite.test_cli_runner().invoke(args=["poststack", "relay"])
    assert result.exit_code == 0, result.output
    assert started == [locked_sqlite]  # the loop, which backs off and retries
    assert "database is locked; retrying" in caplog.text


def test_a_database_error_is_one_line_without_the_password() -> None:
    from flask_poststack.outbox.relay import database_error

    engine = create_engine("postgresql+psycopg://ada:s3cret@127.0.0.1:1/app")
    cause = Exception("password s3cret refused\nDETAIL: Key (job)=(the row)")
    exc = OperationalError("SELECT job", {"job": "the row"}, cause)
    assert database_error(engine, exc) == "password *** refused"
