"""The outbox under bad input, duplicates, a missing table and a sick database."""

from __future__ import annotations

import logging
import typing as t
from datetime import datetime
from datetime import timezone

import pytest
from sqlalchemy import text
from sqlalchemy.exc import IntegrityError

from flask_poststack import ConfigurationError
from flask_poststack import enqueue_email
from flask_poststack import InvalidEmailError
from flask_poststack.outbox import store
from flask_poststack.outbox.relay import relay_once
from flask_poststack.outbox.relay import run_relay
from flask_poststack.pytest_plugin import FakeQueue
from tests.db.conftest import outbox_rows as rows

_FUTURE = datetime(2999, 1, 1, tzinfo=timezone.utc)
MAIL: t.Any = {"to": "ada@example.com", "subject": "Welcome", "text": "Hi"}


def test_the_apps_own_integrity_error_surfaces_at_its_commit(
    outbox_setup: t.Any,
) -> None:
    app, db, user, conn = outbox_setup
    db.session.add(user(email="ada@example.com"))
    db.session.commit()
    db.session.add(user(email="ada@example.com"))  # a duplicate, not flushed yet
    enqueue_email(**MAIL)  # does not flush the user's row
    with pytest.raises(IntegrityError):
        db.session.commit()
    db.session.rollback()
    assert rows(db) == [] or all(r.pushed_at for r in rows(db))
    assert FakeQueue(app, conn).jobs == []


def test_a_job_id_reused_in_the_outbox_is_the_first_job(outbox_setup: t.Any) -> None:
    app, db, user, conn = outbox_setup
    first = enqueue_email(**MAIL, job_id="welcome-1")  # committed on its own
    db.session.add(user(email="ada@example.com"))
    again = enqueue_email(**{**MAIL, "subject": "Other"}, job_id="welcome-1")
    db.session.commit()  # the user's transaction is not broken
    assert again.id == first.id
    assert again.meta["idempotency_key"] == first.meta["idempotency_key"]
    assert again.args[0]["subject"] == "Welcome"
    assert len(rows(db)) == 1
    assert [j.id for j in FakeQueue(app, conn).jobs] == ["welcome-1"]
    db.session.add(user(email="bob@example.com"))
    enqueue_email(**MAIL, job_id="welcome-2")
    twice = enqueue_email(**MAIL, job_id="welcome-2")  # same transaction
    db.session.commit()
    assert twice.id == "welcome-2" and len(rows(db)) == 2
    assert sorted(j.id for j in FakeQueue(app, conn).jobs) == [
        "welcome-1",
        "welcome-2",
    ]


def test_the_longest_job_id_fits_the_outbox(outbox_setup: t.Any) -> None:
    _app, db, _user, _conn = outbox_setup
    job = enqueue_email(**MAIL, job_id="j" * 128)
    assert [r.id for r in rows(db)] == [job.id]
    with pytest.raises(InvalidEmailError, match="job_id"):
        enqueue_email(**MAIL, job_id="j" * 129)


def test_a_missing_table_names_the_setting(outbox_setup: t.Any) -> None:
    app, db, user, _conn = outbox_setup
    with db.engine.begin() as c:
        c.execute(text("DROP TABLE poststack_outbox"))
    db.session.add(user(email="ada@example.com"))
    with pytest.raises(ConfigurationError, match="POSTSTACK_OUTBOX_TABLE") as caught:
        enqueue_email(**MAIL)
    assert "db.create_all()" in str(caught.value)
    db.session.rollback()
    with pytest.raises(ConfigurationError, match="POSTSTACK_OUTBOX_TABLE"):
        relay_once(app, grace=0)


def test_the_relay_parks_a_row_it_cannot_read_and_goes_on(
    outbox_setup: t.Any, caplog: pytest.LogCaptureFixture
) -> None:
    app, db, _user, conn = outbox_setup
    good = enqueue_email(**MAIL, after_commit=True)
    outbox = store.table("poststack_outbox")
    with db.engine.begin() as c:
        c.execute(outbox.update().values(pushed_at=None))
        c.execute(
            outbox.insert().values(
                id="bad", idempotency_key="k", queue="default", job="{not json",
                created_at=rows(db)[0].created_at, attempts=0,
            )
        )  # fmt: skip
    with caplog.at_level(logging.INFO, "flask_poststack"):
        assert relay_once(app, grace=0) == 1
    assert "'bad'" in caplog.text
    assert "Outbox relay: pushed 1 job(s)" in caplog.text  # one line a batch
    assert [j.id for j in FakeQueue(app, conn).jobs] == [good.id]
    by_id = {r.id: r for r in rows(db)}
    assert by_id["bad"].pushed_at is None  # kept, not lost, and not retried
    assert by_id["bad"].claimed_by == store.PARKED
    assert relay_once(app, grace=0) == 0
    result = relay_cli(app, "--grace", "0")  # cron must notice
    assert result.exit_code == 1, result.output
    assert "1 row(s) parked" in result.output


def test_the_relay_loop_survives_a_database_error(
    outbox_setup: t.Any,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import threading

    from sqlalchemy.exc import OperationalError

    app, _db, _user, _conn = outbox_setup
    stop = threading.Event()
    calls: list[float] = []
    real_claim = store.claim

    def claim(*args: t.Any, **kwargs: t.Any) -> t.Any:
        calls.append(1)
        if len(calls) < 3:
            raise OperationalError("UPDATE", {}, Exception("database is locked"))
        stop.set()
        return real_claim(*args, **kwargs)

    monkeypatch.setattr(store, "claim", claim)
    waits: list[float] = []

    def wait(seconds: float) -> bool:
        waits.append(seconds)
        return stop.is_set()

    monkeypatch.setattr(stop, "wait", wait)
    with caplog.at_level(logging.WARNING, "flask_poststack"):
        run_relay(app, interval=0.01, stop=stop)
    assert len(calls) == 3
    assert "database is locked" in caplog.text and "retrying in" in caplog.text
    assert waits[0] >= 1 and waits[1] > waits[0]  # backs off, never hot


def relay_cli(app: t.Any, *flags: str) -> t.Any:
    return app.test_cli_runner().invoke(args=["poststack", "relay", "--once", *flags])


def test_relay_once_says_why_rows_wait(outbox_setup: t.Any) -> None:
    import redis

    from flask_poststack import get_state
    from flask_poststack.redis_server import free_port

    app, db, user, _conn = outbox_setup
    dead = redis.Redis(port=free_port(), socket_connect_timeout=1)
    with get_state(app).use_redis(dead):
        db.session.add(user(email="ada@example.com"))
        enqueue_email(**MAIL)
        db.session.commit()  # Redis down: the row waits for the relay
        result = relay_cli(app)
    assert result.exit_code == 1
    assert "does not answer" in result.output and "Traceback" not in result.output
    result = relay_cli(app, "--grace", "3600")  # the row is younger than that
    assert result.exit_code == 0, result.output
    assert "Pushed 0" in result.output
    assert "1 row(s) waiting inside the grace period (3600 s" in result.output
    outbox = store.table("poststack_outbox")
    with db.engine.begin() as c:
        c.execute(outbox.update().values(claimed_by="other", claimed_until=_FUTURE))
    result = relay_cli(app, "--grace", "0")
    assert "Pushed 0" in result.output
    assert "1 row(s) claimed by another relay" in result.output


def test_relay_cli_names_a_missing_table(outbox_setup: t.Any) -> None:
    app, db, _user, _conn = outbox_setup
    with db.engine.begin() as c:
        c.execute(text("DROP TABLE poststack_outbox"))
    for flags in [("--once",), ()]:
        result = app.test_cli_runner().invoke(args=["poststack", "relay", *flags])
        assert result.exit_code == 1
        assert "POSTSTACK_OUTBOX_TABLE" in result.output
        assert "Traceback" not in result.output


def test_dev_refuses_to_start_without_the_outbox_table(outbox_setup: t.Any) -> None:
    from flask_poststack.redis_server import free_port

    app, db, _user, _conn = outbox_setup
    with db.engine.begin() as c:
        c.execute(text("DROP TABLE poststack_outbox"))
    ports = ["--sandbox-port", str(free_port()), "--redis-port", str(free_port())]
    result = app.test_cli_runner().invoke(args=["poststack", "dev", *ports])
    assert result.exit_code == 1, result.output
    assert "POSTSTACK_OUTBOX_TABLE" in result.output
    assert "Flask-PostStack dev" not in result.output  # nothing was started


def test_a_job_id_written_by_a_racing_transaction_is_a_clear_error(
    outbox_setup: t.Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    _app, db, user, _conn = outbox_setup
    enqueue_email(**MAIL, job_id="welcome-1")
    # The other transaction committed after this one looked: the look misses.
    monkeypatch.setattr(store, "existing", lambda *args: {})
    db.session.add(user(email="ada@example.com"))
    with pytest.raises(InvalidEmailError, match="job_id") as caught:
        enqueue_email(**MAIL, job_id="welcome-1")
    assert isinstance(caught.value.__cause__, IntegrityError)
    db.session.rollback()
    monkeypatch.undo()
    assert enqueue_email(**MAIL, job_id="welcome-1").id == "welcome-1"
    assert len(rows(db)) == 1


def test_a_failed_mark_after_the_push_says_the_emails_were_queued(
    outbox_setup: t.Any,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    app, db, user, conn = outbox_setup

    def locked(*args: t.Any) -> None:
        raise RuntimeError("database is locked")

    monkeypatch.setattr(store, "mark_pushed", locked)
    db.session.add(user(email="ada@example.com"))
    job = enqueue_email(**MAIL)
    with caplog.at_level(logging.INFO, "flask_poststack"):
        db.session.commit()
    assert [j.id for j in FakeQueue(app, conn).jobs] == [job.id]
    (record,) = [r for r in caplog.records if job.id in r.getMessage()]
    assert record.levelname == "WARNING"
    assert record.getMessage().startswith("Queued")
    assert "database is locked" in record.getMessage()


def test_check_reports_the_outbox(outbox_setup: t.Any) -> None:
    from datetime import timedelta

    app, db, _user, _conn = outbox_setup
    check = ["poststack", "check"]
    result = app.test_cli_runner().invoke(args=check)
    assert "ok  outbox 'poststack_outbox': exists, 0 row(s)" in result.output
    outbox = store.table("poststack_outbox")
    old = datetime.now(timezone.utc) - timedelta(minutes=5)
    with db.engine.begin() as c:
        for row_id, by in [("late", None), ("bad", store.PARKED)]:
            c.execute(
                outbox.insert().values(
                    id=row_id, idempotency_key="k", queue="default", job="{}",
                    created_at=old, attempts=0, claimed_by=by,
                    claimed_until=_FUTURE if by else None,
                )
            )  # fmt: skip
    result = app.test_cli_runner().invoke(args=check)
    assert result.exit_code == 1, result.output
    assert "warn  outbox relay: 1 row(s) older than 5 s" in result.output
    assert "FAIL  parked outbox rows: 1" in result.output
    with db.engine.begin() as c:
        c.execute(text("DROP TABLE poststack_outbox"))
    result = app.test_cli_runner().invoke(args=check)
    assert "POSTSTACK_OUTBOX_TABLE" in result.output and result.exit_code == 1
