from __future__ import annotations

import typing as t

import redis
from sqlalchemy import create_engine
from sqlalchemy import select
from sqlalchemy import text
from sqlalchemy import update
from sqlalchemy.orm import Session

from flask_poststack import enqueue_email
from flask_poststack import enqueue_many
from flask_poststack import get_state
from flask_poststack.outbox import store
from flask_poststack.outbox.relay import relay_once
from flask_poststack.pytest_plugin import FakeQueue
from flask_poststack.redis_server import free_port
from tests.db.conftest import outbox_rows as rows
from tests.postgres import PostgresServer

MAIL: t.Any = {"to": "ada@example.com", "subject": "Welcome", "text": "Hi"}


def test_the_row_lives_and_dies_with_the_transaction(outbox_setup: t.Any) -> None:
    app, db, user, conn = outbox_setup
    db.session.add(user(email="ada@example.com"))
    enqueue_email(**MAIL)
    db.session.rollback()
    assert rows(db) == []
    db.session.add(user(email="ada@example.com"))
    job = enqueue_email(**MAIL)
    assert FakeQueue(app, conn).jobs == []
    db.session.commit()
    (row,) = rows(db)
    assert row.id == job.id
    assert row.idempotency_key == job.meta["idempotency_key"]
    assert row.pushed_at is not None  # the fast path pushed and marked it
    assert [j.id for j in FakeQueue(app, conn).jobs] == [job.id]


def test_redis_down_at_commit_fails_no_view_and_the_relay_delivers(
    outbox_setup: t.Any,
) -> None:
    app, db, user, conn = outbox_setup
    dead = redis.Redis(port=free_port(), socket_connect_timeout=1)
    with get_state(app).use_redis(dead):
        db.session.add(user(email="ada@example.com"))
        jobs = enqueue_many([MAIL, MAIL])
        db.session.commit()  # does not raise
    assert [r.pushed_at for r in rows(db)] == [None, None]
    assert relay_once(app, grace=0) == 2
    assert {j.id for j in FakeQueue(app, conn).jobs} == {j.id for j in jobs}
    assert all(r.pushed_at is not None for r in rows(db))
    assert relay_once(app, grace=0) == 0


def test_pushing_a_row_twice_queues_one_job(outbox_setup: t.Any) -> None:
    app, db, _user, conn = outbox_setup
    job = enqueue_email(**MAIL)  # outside a transaction: committed and pushed
    db.session.execute(update(store.table("poststack_outbox")).values(pushed_at=None))
    db.session.commit()
    assert relay_once(app, grace=0) == 1
    assert [j.id for j in FakeQueue(app, conn).jobs] == [job.id]


def test_pushed_rows_are_pruned(outbox_setup: t.Any) -> None:
    db = outbox_setup[1]
    enqueue_email(**MAIL)
    db.session.execute(
        text("UPDATE poststack_outbox SET pushed_at = '2000-01-01 00:00:00'")
    )
    db.session.commit()
    outbox = store.table("poststack_outbox")
    assert store.prune(db.engine, outbox, keep=60) == 1
    assert rows(db) == []


def test_a_relay_skips_the_rows_another_is_claiming(
    postgres_server: PostgresServer,
) -> None:
    """PostgreSQL: the candidates are selected FOR UPDATE SKIP LOCKED, so a
    relay claims other rows at once instead of waiting for locked ones (the
    lock_timeout turns a wait into a failure instead of a hang)."""
    options = {"options": "-c lock_timeout=10000"}
    engine = create_engine(postgres_server.create_database(), connect_args=options)
    outbox = store.table("poststack_outbox")
    outbox.metadata.create_all(engine)
    with Session(engine) as session:
        for i in range(6):
            store.write(
                session, outbox, [{"id": f"job{i}", "key": f"k{i}", "queue": "q"}]
            )
        session.commit()
    ids = {f"job{i}" for i in range(6)}
    with engine.connect() as other:  # another relay, halfway through its claim
        locked = set(
            other.scalars(
                select(outbox.c.id)
                .order_by(outbox.c.created_at)
                .limit(3)
                .with_for_update()
            )
        )
        mine = store.claim(engine, outbox, limit=6, lease=60, grace=0)
        assert {row_id for row_id, _job in mine} == ids - locked
        other.rollback()
    rest = store.claim(engine, outbox, limit=6, lease=60, grace=0)
    assert {row_id for row_id, _job in rest} == locked
    engine.dispose()
