"""The worker side, run in-process with rq's own workers (burst mode).

The same code under real ``rq worker`` subprocesses, kills and restarts is
in ``test_delivery.py``.
"""

from __future__ import annotations

import logging
import typing as t
from datetime import datetime
from datetime import timezone

import pytest
import redis
from flask import Flask
from rq import Queue
from rq import SimpleWorker
from rq.job import Job
from rq.job import JobStatus
from rq.registry import FailedJobRegistry
from rq.registry import ScheduledJobRegistry
from rq.serializers import JSONSerializer

from flask_poststack import enqueue_email
from flask_poststack import PostStack
from flask_poststack.client import reset_worker
from flask_poststack.sandbox import Sandbox
from flask_poststack.status import email_status
from flask_poststack.worker import PostStackWorker

KEY = "sk_test_tasks0123456789"


@pytest.fixture(autouse=True)
def worker_env(monkeypatch: pytest.MonkeyPatch, sandbox: Sandbox) -> None:
    """What a worker process has: environment variables, no app."""
    monkeypatch.setenv("POSTSTACK_API_KEY", KEY)
    monkeypatch.setenv("POSTSTACK_BASE_URL", sandbox.base_url)
    monkeypatch.setenv("POSTSTACK_MAX_RETRIES", "0")  # RQ's retries, not the SDK's


@pytest.fixture
def conn(redis_url: str) -> t.Iterator[redis.Redis]:
    conn = redis.Redis.from_url(redis_url)
    yield conn
    conn.close()
    reset_worker()


@pytest.fixture
def app(redis_url: str) -> Flask:
    app = Flask(__name__)
    app.config.update(
        POSTSTACK_SUPPRESS_SEND=False,
        POSTSTACK_REDIS_URL=redis_url,
        POSTSTACK_DEFAULT_FROM="hello@acme.test",
        POSTSTACK_RETRY_INTERVALS="0,0",  # retry at once: no scheduler needed here
    )
    PostStack(app)  # the key comes from the environment, as in the worker
    return app


def enqueue(app: Flask, **kwargs: t.Any) -> Job:
    email = {"to": "ada@example.com", "subject": "Hi", "text": "Hi", **kwargs}
    with app.app_context():
        return enqueue_email(**email)


def work(conn: redis.Redis, worker_class: type[SimpleWorker] = SimpleWorker) -> None:
    queue = Queue("poststack", connection=conn, serializer=JSONSerializer)
    worker = worker_class([queue], connection=conn, serializer=JSONSerializer)
    worker.work(burst=True, with_scheduler=False)


def failed_ids(conn: redis.Redis) -> list[str]:
    queue = Queue("poststack", connection=conn, serializer=JSONSerializer)
    return list(FailedJobRegistry(queue=queue).get_job_ids())


def test_delivers_and_records_the_email_id(
    app: Flask, conn: redis.Redis, sandbox: Sandbox
) -> None:
    job = enqueue(app)
    work(conn)
    job.refresh()
    assert job.get_status() == JobStatus.FINISHED
    (email,) = sandbox.emails
    assert job.return_value() == job.meta["poststack_id"] == email.id
    assert email.input.idempotency_key == job.meta["idempotency_key"]


def test_the_recommended_worker_class_delivers(
    app: Flask, conn: redis.Redis, sandbox: Sandbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("POSTSTACK_HEARTBEAT_INTERVAL", "1")
    sandbox.faults.add("latency", delay=1.5, path="/emails", times=1)
    job = enqueue(app)
    work(conn, PostStackWorker)
    assert job.latest_result() is not None
    assert job.return_value() == sandbox.emails[0].id


@pytest.mark.parametrize(
    ("kind", "fields"),
    [
        ("error", {"status": 503}),
        ("error", {"status": 502, "body": "html"}),
        ("error", {"status": 408}),
        ("throttle", {"retry_after": 0}),
        ("bare_429", {}),
        ("drop_before", {}),
        # Another request with the same key in flight (a fake may say 409).
        ("error", {"status": 409, "code": "conflict"}),
        # Stored, but the answer is unreadable: the retry replays it.
        ("empty_2xx", {}),
    ],
)
def test_transient_failures_are_retried_by_rq(
    app: Flask,
    conn: redis.Redis,
    sandbox: Sandbox,
    kind: str,
    fields: dict[str, t.Any],
) -> None:
    sandbox.faults.add(kind, path="/emails", times=1, **fields)
    job = enqueue(app)
    work(conn)
    job.refresh()
    assert job.get_status() == JobStatus.FINISHED
    assert job.retries_left == 1
    assert len(sandbox.emails) == 1


def test_a_drop_after_the_api_stored_it_replays_instead_of_sending_twice(
    app: Flask, conn: redis.Redis, sandbox: Sandbox
) -> None:
    sandbox.faults.add("drop_after", path="/emails", times=1)
    job = enqueue(app)
    work(conn)
    (email,) = sandbox.emails
    assert job.return_value() == email.id
    assert sandbox.stats["replays"] == 1


@pytest.mark.parametrize(
    ("kind", "status", "code"),
    [
        ("error", 422, "unprocessable_entity"),
        ("error", 400, "invalid_request"),
        ("quota", 429, "monthly_limit_exceeded"),
        ("quota", 429, "daily_limit_exceeded"),
    ],
)
def test_permanent_failures_fail_at_once_with_the_api_error_on_the_job(
    app: Flask,
    conn: redis.Redis,
    sandbox: Sandbox,
    caplog: pytest.LogCaptureFixture,
    kind: str,
    status: int,
    code: str,
) -> None:
    fields: dict[str, t.Any] = {"status": status} if kind == "error" else {}
    sandbox.faults.add(kind, path="/emails", code=code, **fields)
    job = enqueue(app)
    with caplog.at_level(logging.INFO, logger="flask_poststack"):
        work(conn)
    job.refresh()
    assert job.get_status() == JobStatus.FAILED
    assert failed_ids(conn) == [job.id]
    assert job.retries_left == 0
    assert sandbox.stats["requests"] == 1
    error = job.meta["poststack_error"]
    assert (error["status"], error["code"], error["retryable"]) == (status, code, False)
    assert error["request_id"].startswith("req_")
    (line,) = [r for r in caplog.records if r.msg.startswith("PostStack send failed")]
    message = line.getMessage()
    for fact in (job.id, job.meta["idempotency_key"], code, error["request_id"]):
        assert fact in message
    assert KEY not in caplog.text
    assert KEY not in str(job.latest_result().exc_string)  # type: ignore[union-attr]


def test_retry_after_is_honoured_as_the_minimum_wait(
    app: Flask, conn: redis.Redis, sandbox: Sandbox
) -> None:
    sandbox.faults.add("throttle", retry_after=90, path="/emails", times=1)
    job = enqueue(app)
    work(conn)
    queue = Queue("poststack", connection=conn, serializer=JSONSerializer)
    registry = ScheduledJobRegistry(queue=queue)
    assert registry.get_job_ids() == [job.id]
    wait = registry.get_scheduled_time(job) - datetime.now(timezone.utc)
    assert 80 < wait.total_seconds() <= 91
    assert sandbox.emails == []


def test_retries_run_out_into_the_failed_registry(
    app: Flask, conn: redis.Redis, sandbox: Sandbox
) -> None:
    sandbox.faults.add("error", status=500, path="/emails")
    job = enqueue(app)
    work(conn)
    assert failed_ids(conn) == [job.id]
    assert sandbox.stats["requests"] == 3  # the first try and two retries
    job.refresh()
    assert job.meta["poststack_error"]["retryable"] is True


def test_suppressed_worker_sends_nothing(
    app: Flask, conn: redis.Redis, sandbox: Sandbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("POSTSTACK_SUPPRESS_SEND", "1")
    job = enqueue(app)
    work(conn)
    assert str(job.return_value()).startswith("em_suppressed_")
    assert sandbox.stats["requests"] == 0


def test_missing_key_in_the_worker_fails_the_job_without_retries(
    app: Flask, conn: redis.Redis, sandbox: Sandbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("POSTSTACK_API_KEY")
    job = enqueue(app)
    work(conn)
    job.refresh()
    assert failed_ids(conn) == [job.id]
    assert job.meta["poststack_error"]["code"] == "ConfigurationError"
    assert "POSTSTACK_API_KEY" in job.meta["poststack_error"]["error"]


def test_flask_poststack_worker_prints_the_documented_command() -> None:
    app = Flask(__name__)
    app.config["POSTSTACK_API_KEY"] = KEY
    app.config["POSTSTACK_REDIS_URL"] = "redis://:hunter2@127.0.0.1:6379/0"
    PostStack(app)
    result = app.test_cli_runner().invoke(args=["poststack", "worker", "--print"])
    assert result.exit_code == 0, result.output
    words = result.output.split()
    assert words[0] == "RQ_REDIS_URL='redis://:***@127.0.0.1:6379/0'"
    assert words[2:] == [
        "worker",
        "--serializer",
        "rq.serializers.JSONSerializer",
        "--worker-class",
        "flask_poststack.worker.PostStackWorker",
        "--with-scheduler",
        "--maintenance-interval",
        "30",
        "poststack",
    ]
    assert KEY not in result.output
    assert "hunter2" not in result.output


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
