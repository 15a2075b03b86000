"""The worker side, run in-process with rq's own workers (burst mode).

Single emails (``send_payload``) and batches (``send_batch_payloads``). The
same code under real ``rq worker`` subprocesses, kills and restarts is in
``e2e/test_delivery.py``.
"""

from __future__ import annotations

import logging
import typing as t
from datetime import datetime
from datetime import timezone

import pytest
import redis
from flask import Flask
from poststack.resources import EmailsResource
from rq import Queue
from rq.job import Job
from rq.job import JobStatus
from rq.registry import FailedJobRegistry
from rq.registry import ScheduledJobRegistry
from rq.serializers import JSONSerializer

from flask_poststack import enqueue_batch
from flask_poststack import enqueue_email
from flask_poststack import signals
from flask_poststack.sandbox import Sandbox
from flask_poststack.status import email_status
from flask_poststack.worker import PostStackWorker
from tests.conftest import LIVE_KEY
from tests.conftest import TEST_KEY
from tests.helpers import batch_requests
from tests.helpers import messages
from tests.helpers import work

if t.TYPE_CHECKING:
    from tests.conftest import AppFactory

KEY = TEST_KEY  # the worker's, from the worker_env fixture

pytestmark = pytest.mark.usefixtures("worker_env")


@pytest.fixture
def app(make_app: AppFactory, redis_url: str) -> Flask:
    # The key comes from the environment, as in the worker.
    return make_app(
        TESTING=False,
        POSTSTACK_SUPPRESS_SEND=False,
        POSTSTACK_REDIS_URL=redis_url,
        POSTSTACK_RETRY_INTERVALS="0,0",  # retry at once: no scheduler needed here
    )


def enqueue(app: Flask, **kwargs: t.Any) -> Job:
    email = {"to": "ada@example.com", "subject": "Hi", "text": "Hi", **kwargs}
    with app.app_context():
        return enqueue_email(**email)


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


def test_a_job_queued_with_another_key_is_refused_for_good(
    make_app: AppFactory,
    redis_url: str,
    conn: redis.Redis,
    sandbox: Sandbox,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Two apps on one Redis and queue: a test key's email never goes out on
    the live worker's key (issue 17, item 5)."""
    test_app = make_app(
        TESTING=False,
        POSTSTACK_SUPPRESS_SEND=False,
        POSTSTACK_API_KEY=TEST_KEY,
        POSTSTACK_REDIS_URL=redis_url,
        POSTSTACK_RETRY_INTERVALS="0,0",
    )
    monkeypatch.setenv("POSTSTACK_API_KEY", LIVE_KEY)  # the worker's
    single = enqueue(test_app)
    with test_app.app_context():
        (batch,) = enqueue_batch(messages(2))
    assert single.meta["poststack_key"].startswith("test:")
    work(conn)
    assert sandbox.stats["requests"] == 0
    assert set(failed_ids(conn)) == {single.id, batch.id}
    for job in (single, batch):
        job.refresh()
        error = job.meta["poststack_error"]
        assert (error["code"], error["retryable"]) == ("ConfigurationError", False)
        text = error["error"]
        assert "test key (test:" in text and "live key (live:" in text, text
        assert "'poststack'" in text and "POSTSTACK_QUEUE" in text, text
        # The likelier cause (app and worker in two terminals) comes first.
        assert "give the worker the app's key" in text, text
        assert TEST_KEY not in text and LIVE_KEY not in text
        assert TEST_KEY[8:] not in text and LIVE_KEY[8:] not in text


def test_a_job_without_a_key_fingerprint_still_runs(
    app: Flask, conn: redis.Redis, sandbox: Sandbox
) -> None:
    job = enqueue(app)  # as an older version queued it: no fingerprint
    job.meta.pop("poststack_key")
    job.save_meta()
    work(conn)
    job.refresh()
    assert job.get_status() == JobStatus.FINISHED
    assert len(sandbox.emails) == 1


# Batch jobs (enqueue_batch) ---------------------------------------------------


# drop_after: the answer is lost; empty_2xx: it comes back unreadable.
@pytest.mark.parametrize("fault", ["drop_after", "empty_2xx"])
def test_a_batch_retry_replays_instead_of_sending_twice(
    batch_app: Flask, sandbox: Sandbox, redis_url: str, fault: str
) -> None:
    sandbox.faults.add(fault, path="/emails/batch", times=1)
    with batch_app.app_context():
        (job,) = enqueue_batch(messages(40))
    work(redis_url)
    job.refresh()
    assert job.get_status() == JobStatus.FINISHED
    assert job.retries_left == 1
    assert len(sandbox.emails) == 40
    assert sandbox.stats["replays"] == 40
    assert [r["id"] for r in job.return_value() or []] == [e.id for e in sandbox.emails]


def test_refused_emails_of_a_batch_job_are_not_retried(
    batch_app: Flask, sandbox: Sandbox, redis_url: str
) -> None:
    sandbox.configure(daily_quota=3)
    with batch_app.app_context():
        (job,) = enqueue_batch(messages(5))
    work(redis_url)
    job.refresh()
    assert job.get_status() == JobStatus.FINISHED
    assert job.retries_left == 2
    codes = [result.get("code") for result in job.return_value() or []]
    assert codes == [None, None, None, "daily_limit_exceeded", "daily_limit_exceeded"]
    assert len(batch_requests(sandbox)) == 1


def test_a_legacy_quota_in_a_batch_fails_at_once(
    batch_app: Flask, sandbox: Sandbox, redis_url: str
) -> None:
    # Before 0.14 the API refused over-quota emails with rate_limit_exceeded.
    # A throttle refuses a whole request, so on one email that code is a
    # quota: retrying cannot help.
    sandbox.configure(daily_quota=3, quota_legacy_code=True)
    failed: list[BaseException] = []

    def on_failed(sender: t.Any, exception: BaseException, **extra: t.Any) -> None:
        failed.append(exception)

    with batch_app.app_context():
        (job,) = enqueue_batch(messages(5))
    with signals.email_failed.connected_to(on_failed):
        work(redis_url)
    job.refresh()
    assert job.get_status() == JobStatus.FINISHED
    assert job.retries_left == 2
    assert len(batch_requests(sandbox)) == 1
    codes = [result.get("code") for result in job.return_value() or []]
    assert codes == [None, None, None, "rate_limit_exceeded", "rate_limit_exceeded"]
    assert [(e.status_code, e.code) for e in failed] == [  # type: ignore[attr-defined]
        (429, "rate_limit_exceeded"),
        (429, "rate_limit_exceeded"),
    ]


def test_a_retry_resends_only_the_emails_with_an_internal_error(
    batch_app: Flask, sandbox: Sandbox, redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The sandbox never refuses one email with internal_error; this stands
    # in for an API that does: those two are not sent, the rest are.
    broken = {"user3@example.com", "user4@example.com"}
    asked: list[int] = []  # how many emails each try of the job sent
    batch = EmailsResource.batch

    def partly_broken(self: EmailsResource, body: dict[str, t.Any]) -> t.Any:
        emails = body["emails"]
        asked.append(len(emails))
        good = [e for e in emails if e["to"][0] not in broken]
        sent = iter(batch(self, {"emails": good})["data"] if good else [])
        refused = {"error": "Internal server error", "code": "internal_error"}
        answers = [refused if e["to"][0] in broken else next(sent) for e in emails]
        return {"data": answers}

    failed: list[t.Any] = []

    def on_failed(sender: t.Any, exception: t.Any, **extra: t.Any) -> None:
        failed.append((exception.status_code, exception.code))

    monkeypatch.setattr(EmailsResource, "batch", partly_broken)
    with batch_app.app_context():
        (job,) = enqueue_batch(messages(5))
    with signals.email_failed.connected_to(on_failed):
        work(redis_url)
    job.refresh()
    assert asked == [5, 2, 2]  # the first try, then two retries of the two
    assert failed == [(500, "internal_error")] * 6  # a server error: retried
    assert sandbox.stats["replays"] == 0  # the accepted three were not resent
    assert len(sandbox.emails) == 3
    # Retries used up with emails still unsent: the job fails, visibly,
    # with every answer kept.
    assert job.get_status() == JobStatus.FAILED
    assert [r.get("code") for r in job.meta["results"]][3:] == [
        "internal_error",
        "internal_error",
    ]
    with batch_app.app_context():
        assert email_status(job).state == "failed"
        broken.clear()
        result = batch_app.test_cli_runner().invoke(
            args=["poststack", "requeue-failed"]
        )
    assert "1 job(s) requeued" in result.output
    work(redis_url)
    job.refresh()
    assert job.get_status() == JobStatus.FINISHED
    assert len(sandbox.emails) == 5  # the two unsent ones, and only them
    assert sandbox.stats["replays"] == 0
