"""email_status: where a queued email is, from its job (and the API)."""

from __future__ import annotations

import typing as t

import pytest
import redis
from flask import Flask
from rq.job import Job

from flask_poststack import enqueue_email
from flask_poststack.sandbox import Sandbox
from flask_poststack.status import email_status
from tests.helpers import work

if t.TYPE_CHECKING:
    from tests.conftest import AppFactory

pytestmark = pytest.mark.usefixtures("worker_env")


@pytest.fixture
def app(make_app: AppFactory, redis_url: str) -> Flask:
    return make_app(
        TESTING=False,  # the key comes from the environment, as in the worker
        POSTSTACK_SUPPRESS_SEND=False,
        POSTSTACK_REDIS_URL=redis_url,
        POSTSTACK_RETRY_INTERVALS="0,0",
    )


def enqueue(app: Flask, **kwargs: t.Any) -> Job:
    email = {"to": "ada@example.com", "subject": "Hi", "text": "Hi", **kwargs}
    with app.app_context():
        return enqueue_email(**email)


def test_status_follows_the_job(
    app: Flask, conn: redis.Redis, sandbox: Sandbox
) -> None:
    refused = enqueue(app)
    retried = enqueue(app)
    later = enqueue(app, delay=3600)
    with app.app_context():
        assert email_status(refused).state == "queued"
        assert email_status(later.id).state == "scheduled"
        assert email_status("no-such-job").state == "unknown"
    # Jobs run in order: the 422 hits the first, the 503 the second.
    sandbox.faults.add("error", status=422, code="unprocessable_entity", times=1)
    sandbox.faults.add("error", status=503, times=1)
    work(conn)
    with app.app_context():
        failed = email_status(refused)
        assert failed.state == "failed"
        assert failed.error is not None
        assert failed.error["code"] == "unprocessable_entity"
        sent = email_status(retried)
        assert (sent.state, sent.error) == ("sent", None)
        assert sent.email_id == sandbox.emails[0].id
        assert sent.retries_left == 1  # the 503 cost one retry
        assert sent.email_id is not None
        sandbox.wait_for_status(sent.email_id, "delivered")
        assert email_status(retried, check_api=True).api_status == "delivered"


def test_status_says_retrying_with_the_last_error(
    app: Flask, conn: redis.Redis, sandbox: Sandbox
) -> None:
    sandbox.faults.add("throttle", retry_after=90, path="/emails", times=1)
    job = enqueue(app)
    work(conn)
    with app.app_context():
        status = email_status(job)
    assert status.state == "retrying"
    assert status.error is not None
    assert (status.error["status"], status.error["retry_after"]) == (429, 90)


def test_a_worker_that_cannot_read_the_job_is_named_with_the_fix(
    app: Flask, make_app: AppFactory, redis_url: str
) -> None:
    import os
    import subprocess
    import sys
    from pathlib import Path

    job = enqueue(app)  # retries at once: fails for good in the burst
    waiting = make_app(TESTING=False, POSTSTACK_SUPPRESS_SEND=False,
                       POSTSTACK_REDIS_URL=redis_url,
                       POSTSTACK_RETRY_INTERVALS="60")  # fmt: skip
    retried = enqueue(waiting)  # its retry waits: rq records no error
    # A plain `rq worker` without -S: rq's pickle serializer meets a JSON job.
    rq = Path(sys.executable).with_name("rq")
    subprocess.run(
        [str(rq), "worker", "--burst", "--url", redis_url, "poststack"],
        env={**os.environ}, capture_output=True, timeout=120, check=False,
    )  # fmt: skip
    with app.app_context():
        status = email_status(job)
    assert status.error is not None, status
    assert "JSONSerializer" in status.error["hint"]
    assert status.state == "failed"
    assert status.error["code"] == "DeserializationError"
    with waiting.app_context():
        status = email_status(retried)
    assert status.state == "retrying", status
    assert status.error is not None
    assert "JSONSerializer" in status.error["hint"]
    assert "the worker's log has it" in status.error["error"]
