from __future__ import annotations

import typing as t

import pytest
from sqlalchemy import text

from flask_poststack import ConfigurationError
from flask_poststack import enqueue_batch
from flask_poststack import enqueue_email
from flask_poststack import enqueue_many
from flask_poststack import InvalidEmailError
from flask_poststack.pytest_plugin import FakeQueue
from flask_poststack.testing import pending_emails
from flask_poststack.testing import run_after_commit

MAIL: t.Any = {"to": "ada@example.com", "subject": "Welcome", "text": "Hi"}


def queued_keys(app: t.Any, connection: t.Any) -> list[str]:
    return [j.meta["idempotency_key"] for j in FakeQueue(app, connection).jobs]


@pytest.fixture
def setup(db_app: t.Any, _poststack_memory_redis: t.Any) -> t.Any:
    app, db, user = db_app(POSTSTACK_AFTER_COMMIT=True)
    with app.app_context():
        assert db.session.execute(text("PRAGMA journal_mode")).scalar() == "wal"
        db.session.rollback()
        yield app, db, user, _poststack_memory_redis.get()


def test_commit_queues_once_and_the_handle_knows_the_job(setup: t.Any) -> None:
    app, db, user, redis = setup
    db.session.add(user(email="ada@example.com"))
    job = enqueue_email(**MAIL)
    key = job.meta["idempotency_key"]
    assert queued_keys(app, redis) == []
    assert [p["idempotency_key"] for p in pending_emails()] == [key]
    db.session.commit()
    jobs = FakeQueue(app, redis).jobs
    assert [j.id for j in jobs] == [job.id]
    assert jobs[0].args[0]["idempotency_key"] == key
    db.session.commit()  # a second commit queues nothing more
    assert len(FakeQueue(app, redis).jobs) == 1


def test_rollback_drops(setup: t.Any) -> None:
    app, db, user, redis = setup
    db.session.add(user(email="ada@example.com"))
    enqueue_many([MAIL, MAIL])
    enqueue_batch([MAIL])
    db.session.rollback()
    db.session.commit()
    assert queued_keys(app, redis) == []


def test_a_rolled_back_savepoint_drops_only_its_emails(setup: t.Any) -> None:
    app, db, user, redis = setup
    db.session.add(user(email="ada@example.com"))
    outer = enqueue_email(**MAIL)
    savepoint = db.session.begin_nested()
    enqueue_email(**MAIL)
    savepoint.rollback()
    with db.session.begin_nested():
        kept = enqueue_email(**MAIL)
    assert queued_keys(app, redis) == []
    db.session.commit()
    assert {j.id for j in FakeQueue(app, redis).jobs} == {outer.id, kept.id}
    assert db.session.scalar(text("select count(*) from users")) == 1


def test_outside_a_transaction_and_opt_out_queue_at_once(setup: t.Any) -> None:
    app, db, user, redis = setup
    assert not db.session().in_transaction()
    first = enqueue_email(**MAIL)
    db.session.add(user(email="ada@example.com"))
    second = enqueue_email(after_commit=False, **MAIL)
    assert {j.id for j in FakeQueue(app, redis).jobs} == {first.id, second.id}
    db.session.rollback()
    assert len(FakeQueue(app, redis).jobs) == 2


def test_bad_input_raises_at_once_and_holds_nothing(setup: t.Any) -> None:
    app, db, user, redis = setup
    db.session.add(user(email="ada@example.com"))
    with pytest.raises(InvalidEmailError, match="to"):
        enqueue_email(to="not an address", subject="x", text="x")
    assert pending_emails() == []
    db.session.commit()
    assert queued_keys(app, redis) == []


def test_a_failed_session_gets_an_error_naming_the_setting(setup: t.Any) -> None:
    _app, db, user, _redis = setup
    db.session.add(user(email="ada@example.com"))
    db.session.commit()
    db.session.add(user(email="ada@example.com"))
    with pytest.raises(Exception, match="UNIQUE"):
        db.session.flush()
    with pytest.raises(ConfigurationError, match="POSTSTACK_AFTER_COMMIT"):
        enqueue_email(**MAIL)
    db.session.rollback()


def test_no_session_names_the_setting(make_app: t.Any) -> None:
    app = make_app(POSTSTACK_AFTER_COMMIT=True)
    with app.app_context(), pytest.raises(ConfigurationError, match="SQLALCHEMY"):
        enqueue_email(**MAIL)


def test_a_per_call_after_commit_error_names_the_argument_too(
    make_app: t.Any,
) -> None:
    app = make_app()
    with app.app_context(), pytest.raises(ConfigurationError) as caught:
        enqueue_email(**MAIL, after_commit=True)
    assert "after_commit=True" in str(caught.value)
    assert "POSTSTACK_AFTER_COMMIT" in str(caught.value)


def test_a_never_committed_test_transaction_can_run_the_step(setup: t.Any) -> None:
    app, db, user, redis = setup
    db.session.add(user(email="ada@example.com"))
    job = enqueue_email(**MAIL)
    assert run_after_commit() == 1
    assert [j.id for j in FakeQueue(app, redis).jobs] == [job.id]
    db.session.rollback()
    assert pending_emails() == []


def test_eager_mode_runs_the_job_at_commit(
    setup: t.Any, poststack_outbox: t.Any
) -> None:
    app, db, user, _redis = setup
    app.config["POSTSTACK_EAGER"] = True
    db.session.add(user(email="ada@example.com"))
    enqueue_email(**MAIL)
    assert [r.status for r in poststack_outbox] == []
    db.session.commit()
    assert [r.status for r in poststack_outbox] == ["sent"]


def test_a_session_closed_without_commit_warns_a_rollback_informs(
    setup: t.Any, caplog: pytest.LogCaptureFixture
) -> None:
    import logging

    app, db, user, redis = setup
    with caplog.at_level(logging.INFO, "flask_poststack"):
        db.session.add(user(email="ada@example.com"))
        first = enqueue_email(**MAIL)
        db.session.rollback()  # what the app asked for
        dropped = [r for r in caplog.records if "Dropped" in r.getMessage()]
        assert [r.levelname for r in dropped] == ["INFO"]
        caplog.clear()
        db.session.add(user(email="ada@example.com"))
        second = enqueue_email(**MAIL)
        db.session.remove()  # the app context's teardown, with no commit
    (record,) = [r for r in caplog.records if "Dropped" in r.getMessage()]
    assert record.levelname == "WARNING"
    assert "without a commit" in record.getMessage()
    assert second.meta["idempotency_key"] in record.getMessage()
    assert first.meta["idempotency_key"] not in record.getMessage()
    assert queued_keys(app, redis) == []


@pytest.mark.parametrize("mode", ["after_commit", "outbox"])
def test_a_failed_commit_then_rollback_informs(
    db_app: t.Any,
    _poststack_memory_redis: t.Any,
    caplog: pytest.LogCaptureFixture,
    mode: str,
) -> None:
    """The docs' sign-up: a duplicate fails the commit, the view rolls back."""
    import logging

    from sqlalchemy.exc import IntegrityError

    config: dict[str, t.Any] = {"POSTSTACK_AFTER_COMMIT": True}
    if mode == "outbox":
        config = {"POSTSTACK_OUTBOX": "sqlalchemy"}
    app, db, user = db_app(**config)
    redis = _poststack_memory_redis.get()
    with app.app_context(), caplog.at_level(logging.INFO, "flask_poststack"):
        db.session.add(user(email="ada@example.com"))
        db.session.commit()
        db.session.add(user(email="ada@example.com"))
        job = enqueue_email(**MAIL)
        with pytest.raises(IntegrityError):
            db.session.commit()
        db.session.rollback()
        db.session.remove()
    (record,) = [r for r in caplog.records if "Dropped" in r.getMessage()]
    assert (record.levelname, "rolled-back" in record.getMessage()) == ("INFO", True)
    assert job.meta["idempotency_key"] in record.getMessage()
    assert queued_keys(app, redis) == []
