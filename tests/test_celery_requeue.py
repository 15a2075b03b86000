"""``requeue-failed`` with Celery, on the real bundled redis-server: two at
once publish each failed task once."""

from __future__ import annotations

import json
import typing as t

import pytest
import redis
from flask import Flask

from flask_poststack import _celery_ledger as ledger
from flask_poststack import enqueue_many
from flask_poststack._celery_queue import celery_app
from flask_poststack._requeue import _requeue_celery
from flask_poststack._state import get_state
from tests.conftest import AppFactory


@pytest.fixture
def app(make_app: AppFactory, redis_url: str, worker_env: None) -> Flask:
    return make_app(POSTSTACK_QUEUE_BACKEND="celery", POSTSTACK_REDIS_URL=redis_url)


@pytest.mark.filterwarnings("ignore:Call to deprecated setex")  # celery's backend
def test_two_requeues_at_once_publish_each_task_once(
    app: Flask, conn: redis.Redis
) -> None:
    with app.app_context():
        emails: t.Any = [{"to": f"u{i}@example.com", "subject": "Hi", "text": "t"}
                  for i in range(3)]  # fmt: skip
        results: t.Any = enqueue_many(emails)
        celery = celery_app(get_state(app))
    found = ledger.for_app(celery)
    assert found is not None
    conn.delete("poststack")
    for result in results:  # each failed for good
        celery.backend.mark_as_failure(result.id, ValueError("x"))
        entry = ledger.entry(found, result.id)
        assert entry is not None
        ledger.keep_failed(found, entry)
        ledger.forget(found, result.id)

    # The second requeue runs while the first publishes its first task,
    # after the first has read the whole failed set.
    send_task = celery.send_task
    second: list[list[str]] = []

    def first_publish(*args: t.Any, **kwargs: t.Any) -> t.Any:
        if not second:
            celery.send_task = send_task
            second.append(_requeue_celery(celery))
        return send_task(*args, **kwargs)

    celery.send_task = first_publish
    try:
        first = _requeue_celery(celery)
    finally:
        celery.send_task = send_task
    queued = [json.loads(m)["headers"]["id"] for m in conn.lrange("poststack", 0, -1)]
    assert sorted(queued) == sorted(r.id for r in results)
    assert sorted(first + second[0]) == sorted(queued)
    assert not conn.exists(ledger.FAILED)
