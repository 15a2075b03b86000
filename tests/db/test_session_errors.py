"""A session that cannot hold the email, and bad input: errors that say what
to do, raised in the call, with nothing written or queued."""

from __future__ import annotations

import typing as t

import pytest
from sqlalchemy import func
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from flask_poststack import ConfigurationError
from flask_poststack import enqueue_email
from flask_poststack import enqueue_many
from flask_poststack import InvalidEmailError
from flask_poststack.outbox import store
from flask_poststack.pytest_plugin import FakeQueue
from flask_poststack.testing import pending_emails

MAIL: t.Any = {"to": "ada@example.com", "subject": "Welcome", "text": "Hi"}
BAD: t.Any = {**MAIL, "to": "nobody"}
MODES: dict[str, dict[str, t.Any]] = {
    "POSTSTACK_AFTER_COMMIT": {"POSTSTACK_AFTER_COMMIT": True},
    "POSTSTACK_OUTBOX": {"POSTSTACK_OUTBOX": "sqlalchemy"},
}

#: The session that POSTSTACK_SQLALCHEMY_SESSION names in some tests.
NAMED: Session | None = None


@pytest.fixture(params=list(MODES))
def mode(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def setup(db_app: t.Any, _poststack_memory_redis: t.Any, mode: str) -> t.Any:
    app, db, user = db_app(**MODES[mode])
    with app.app_context():
        yield app, db, user, _poststack_memory_redis.get()


def outbox_rows(db: t.Any) -> int:
    outbox = store.table("poststack_outbox")
    with db.engine.connect() as conn:
        return int(conn.scalar(select(func.count()).select_from(outbox)) or 0)


def nothing_sent(app: t.Any, db: t.Any, redis: t.Any) -> bool:
    return FakeQueue(app, redis).jobs == [] and outbox_rows(db) == 0


def test_a_session_after_a_failed_flush_names_the_setting(
    setup: t.Any, mode: str
) -> None:
    app, db, user, redis = setup
    db.session.add(user(email="ada@example.com"))
    db.session.commit()
    db.session.add(user(email="ada@example.com"))
    with pytest.raises(IntegrityError):
        db.session.flush()  # the session now needs a rollback
    for call in (lambda: enqueue_email(**MAIL), lambda: enqueue_many([MAIL])):
        with pytest.raises(ConfigurationError, match=mode) as info:
            call()
        assert "failed state" in str(info.value)
        assert "roll it back" in str(info.value)
    db.session.rollback()
    db.session.commit()
    assert FakeQueue(app, redis).jobs == []
    assert outbox_rows(db) == 0
    enqueue_email(**MAIL)  # rolled back: usable again
    db.session.commit()
    assert len(FakeQueue(app, redis).jobs) == 1


def test_bad_input_raises_in_the_transaction_before_anything_is_written(
    setup: t.Any,
) -> None:
    app, db, user, redis = setup
    db.session.add(user(email="ada@example.com"))
    with pytest.raises(InvalidEmailError, match="to"):
        enqueue_email(to="not an address", subject="x", text="x")
    with pytest.raises(InvalidEmailError):  # one bad email: none of them
        enqueue_many([MAIL, BAD])
    assert pending_emails() == []
    db.session.commit()  # the app's own transaction is untouched
    assert db.session.scalar(select(func.count()).select_from(user)) == 1
    assert nothing_sent(app, db, redis)


@pytest.fixture
def named(db_app: t.Any) -> t.Iterator[t.Callable[..., t.Any]]:
    """``named(session, mode)``: ``(app, db)`` of an app in ``mode`` whose
    POSTSTACK_SQLALCHEMY_SESSION names ``session``."""
    global NAMED

    def build(session: Session, mode: str) -> t.Any:
        global NAMED
        NAMED = session
        app, db, _user = db_app(
            POSTSTACK_SQLALCHEMY_SESSION=f"{__name__}:NAMED", **MODES[mode]
        )
        return app, db

    yield build
    NAMED = None


def test_a_session_closed_for_good_names_the_setting(
    named: t.Any, mode: str, _poststack_memory_redis: t.Any
) -> None:
    closed = Session(close_resets_only=False)
    closed.close()
    app, db = named(closed, mode)
    with app.app_context():
        with pytest.raises(ConfigurationError, match=f"{mode}.*closed for good"):
            enqueue_email(**MAIL)
        assert nothing_sent(app, db, _poststack_memory_redis.get())


def test_an_unbound_session_names_the_outbox(
    named: t.Any, _poststack_memory_redis: t.Any
) -> None:
    app, db = named(Session(), "POSTSTACK_OUTBOX")  # bound to nothing
    with app.app_context():
        with pytest.raises(ConfigurationError, match="POSTSTACK_OUTBOX") as info:
            enqueue_email(**MAIL)
        assert "bound to no database" in str(info.value)
        assert nothing_sent(app, db, _poststack_memory_redis.get())


def test_a_name_that_is_not_a_session_names_its_setting(
    db_app: t.Any, _poststack_memory_redis: t.Any
) -> None:
    app, _db, _user = db_app(
        POSTSTACK_AFTER_COMMIT=True,
        POSTSTACK_SQLALCHEMY_SESSION=f"{__name__}:MODES",
    )
    with (
        app.app_context(),
        pytest.raises(ConfigurationError, match="POSTSTACK_SQLALCHEMY_SESSION"),
    ):
        enqueue_email(**MAIL)
