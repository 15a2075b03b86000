"""The Celery ledger on the real bundled redis-server, without a worker: what
enqueueing writes, and what the reconciler queues again (or leaves alone).

A killed worker's loss is simulated by taking the message off the queue, as
kombu's BRPOP does just before the worker dies; tests/e2e/test_celery.py
kills real workers.
"""

from __future__ import annotations

import json
import typing as t

import pytest
import redis
from flask import Flask

from flask_poststack import _celery_ledger as ledger
from flask_poststack import enqueue_email
from flask_poststack import enqueue_many
from flask_poststack._celery_queue import celery_app
from flask_poststack._state import get_state
from flask_poststack.celery_tasks import TASK
from tests.conftest import AppFactory

KEY = "sk_test_ledger0123456789abcdef"


@pytest.fixture
def app(make_app: AppFactory, redis_url: str) -> Flask:
    return make_app(POSTSTACK_QUEUE_BACKEND="celery", POSTSTACK_REDIS_URL=redis_url,
                    POSTSTACK_API_KEY=KEY)  # fmt: skip


def queued_ids(conn: redis.Redis) -> list[str]:
    raw = t.cast("list[bytes]", conn.lrange("poststack", 0, -1))
    return [json.loads(m)["headers"]["id"] for m in raw]


def broker(app: Flask) -> tuple[t.Any, ledger.Broker]:
    celery = celery_app(get_state(app))
    found = ledger.for_app(celery)
    assert found is not None
    return celery, found


def test_a_queued_task_is_in_the_ledger_without_the_key(
    app: Flask, conn: redis.Redis
) -> None:
    with app.app_context():
        result: t.Any = enqueue_email(to="a@example.com", subject="Hi", text="t")
        _, found = broker(app)
    entry = ledger.entry(found, result.id)
    assert entry is not None
    assert (entry.task, entry.queue, entry.retries) == (TASK, "poststack", 0)
    assert entry.args[0]["to"] == ["a@example.com"]
    assert entry.kwargs["ledger"] is True
    assert not ledger.is_finished(found, result.id)
    assert queued_ids(conn) == [result.id]
    assert not [v for v in conn.hvals(ledger.ENTRIES) if KEY.encode() in v]
    ledger.forget(found, result.id)
    assert ledger.is_finished(found, result.id)
    assert ledger.entry(found, result.id) is None


def test_a_task_dropped_from_the_broker_is_queued_again_under_its_id(
    app: Flask, conn: redis.Redis
) -> None:
    with app.app_context():
        emails: t.Any = [{"to": f"u{i}@example.com", "subject": "Hi", "text": "t"}
                          for i in range(2)]  # fmt: skip
        kept, dropped = t.cast("list[t.Any]", enqueue_many(emails))
        celery, found = broker(app)
    # Taken off the queue and never recorded as unacknowledged: lost.
    assert conn.lpop("poststack") is not None
    assert queued_ids(conn) == [kept.id]

    assert ledger.reconcile(celery, found, 0, recheck=0.05) == [dropped.id]
    assert sorted(queued_ids(conn)) == sorted([kept.id, dropped.id])
    again = json.loads(t.cast(bytes, conn.lindex("poststack", 0)))
    assert again["headers"]["task"] == TASK
    # Queued again once: now it is on the queue, so it is left alone.
    assert ledger.reconcile(celery, found, 0, recheck=0.05) == []
    assert len(queued_ids(conn)) == 2


def test_a_handed_out_or_not_yet_overdue_task_is_left_alone(
    app: Flask, conn: redis.Redis
) -> None:
    with app.app_context():
        result: t.Any = enqueue_email(to="a@example.com", subject="Hi", text="t")
        celery, found = broker(app)
    # Not overdue yet: not even looked for.
    assert ledger.reconcile(celery, found, 3600, recheck=0) == []
    # Handed out: in kombu's unacknowledged hash, as kombu records it.
    raw = t.cast(bytes, conn.rpop("poststack"))
    conn.hset("unacked", "tag-1", json.dumps([json.loads(raw), "", "poststack"]))
    assert ledger.reconcile(celery, found, 0, recheck=0) == []
    assert queued_ids(conn) == []
    # A task that ended for good has no entry, so nothing to queue again.
    conn.delete("unacked")
    ledger.forget(found, result.id)
    assert ledger.reconcile(celery, found, 0, recheck=0) == []
    assert queued_ids(conn) == []


@pytest.mark.filterwarnings("ignore:Call to deprecated setex")  # celery's backend
def test_a_revoked_task_is_forgotten_not_queued_again(
    app: Flask, conn: redis.Redis
) -> None:
    with app.app_context():
        result: t.Any = enqueue_email(to="a@example.com", subject="Hi", text="t")
        celery, found = broker(app)
    # A worker took it, saw it revoked, acknowledged it: gone from the broker.
    assert conn.rpop("poststack") is not None
    celery.backend.mark_as_revoked(result.id)
    assert ledger.reconcile(celery, found, 0, recheck=0) == []
    assert queued_ids(conn) == []
    assert ledger.is_finished(found, result.id)


@pytest.mark.filterwarnings("ignore:Call to deprecated setex")  # celery's backend
def test_a_task_failed_before_a_kill_is_kept_for_requeue_failed(
    app: Flask, conn: redis.Redis
) -> None:
    with app.app_context():
        result: t.Any = enqueue_email(to="a@example.com", subject="Hi", text="t")
        celery, found = broker(app)
    # Its failure stored, the worker killed before it moved the entry.
    assert conn.rpop("poststack") is not None
    celery.backend.mark_as_failure(result.id, ValueError("x"))
    assert ledger.reconcile(celery, found, 0, recheck=0) == []
    assert ledger.is_finished(found, result.id)
    assert conn.hexists(ledger.FAILED, result.id)
