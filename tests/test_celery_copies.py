"""A second copy of a Celery task that already ended (the same message
handed out again, e.g. after a kill between its end and its ack) runs
through Celery's real tracer, as a worker would run it: it does nothing and
records nothing."""

from __future__ import annotations

import typing as t

import pytest
import redis
from celery.app.trace import build_tracer
from flask import Flask

from flask_poststack import _celery_ledger as ledger
from flask_poststack import email_status
from flask_poststack import enqueue_email
from flask_poststack._celery_queue import celery_app
from flask_poststack._state import get_state
from flask_poststack.celery_tasks import EmailFailed
from flask_poststack.celery_tasks import TASK
from flask_poststack.sandbox import Sandbox
from tests.conftest import AppFactory

FAILED = {
    "status": 422,
    "code": "invalid_recipient",
    "request_id": "req_1",
    "error": "no such address",
    "retry_after": None,
    "retryable": False,
}


@pytest.fixture
def app(make_app: AppFactory, redis_url: str, worker_env: None) -> Flask:
    return make_app(POSTSTACK_QUEUE_BACKEND="celery", POSTSTACK_REDIS_URL=redis_url)


@pytest.mark.filterwarnings("ignore:Call to deprecated setex")  # celery's backend
@pytest.mark.parametrize("entry_left", [False, True])
def test_a_copy_of_a_task_failed_for_good_keeps_its_failure(
    app: Flask, conn: redis.Redis, sandbox: Sandbox, entry_left: bool
) -> None:
    with app.app_context():
        result: t.Any = enqueue_email(to="a@example.com", subject="Hi", text="t")
        celery = celery_app(get_state(app))
    message = conn.rpop("poststack")
    assert message is not None
    # The first run failed for good; the kill came before (entry_left) or
    # after its ledger entry was moved to the failed set.
    celery.backend.mark_as_failure(result.id, EmailFailed(FAILED))
    found = ledger.for_app(celery)
    assert found is not None
    entry = ledger.entry(found, result.id)
    assert entry is not None
    if not entry_left:
        ledger.keep_failed(found, entry)
        ledger.forget(found, result.id)
    requests = sandbox.stats["requests"]

    trace = build_tracer(TASK, celery.tasks[TASK], app=celery, eager=False)
    request = {
        "id": result.id,
        "kwargs": dict(entry.kwargs),
        "delivery_info": {"routing_key": "poststack", "redelivered": True},
    }
    trace(result.id, list(entry.args), dict(entry.kwargs), request=request)

    assert sandbox.stats["requests"] == requests  # nothing sent again
    with app.app_context():
        status = email_status(result.id)
    assert status.state == "failed"
    assert status.error is not None and status.error["code"] == "invalid_recipient"
