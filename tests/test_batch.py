from __future__ import annotations

import typing as t

import pytest
import redis
from flask import Flask
from poststack.resources import EmailsResource
from rq import Queue
from rq import SimpleWorker
from rq.job import JobStatus
from rq.serializers import JSONSerializer

from flask_poststack import enqueue_batch
from flask_poststack import enqueue_many
from flask_poststack import InvalidEmailError
from flask_poststack import PostStack
from flask_poststack import send_batch
from flask_poststack import signals
from flask_poststack.client import reset_worker
from flask_poststack.sandbox import Sandbox
from flask_poststack.status import email_status
from flask_poststack.testing import fail_next
from flask_poststack.testing import outbox
from flask_poststack.testing import record_messages

KEY = "sk_live_batch0123456789"  # live: quotas apply to live keys only


@pytest.fixture
def app(sandbox: Sandbox, redis_url: str, monkeypatch: pytest.MonkeyPatch) -> Flask:
    for name, value in {
        "POSTSTACK_API_KEY": KEY,
        "POSTSTACK_BASE_URL": sandbox.base_url,
        "POSTSTACK_MAX_RETRIES": "0",
    }.items():
        monkeypatch.setenv(name, value)  # the worker's environment
    app = Flask(__name__)
    app.config.update(
        POSTSTACK_REDIS_URL=redis_url,
        POSTSTACK_DEFAULT_FROM="hello@acme.test",
        POSTSTACK_RETRY_INTERVALS="0,0",
        POSTSTACK_SUPPRESS_SEND=False,
    )
    PostStack(app)
    return app


def messages(count: int, **extra: t.Any) -> list[t.Any]:
    return [
        {"to": f"user{n}@example.com", "subject": f"Hi {n}", "text": "t", **extra}
        for n in range(count)
    ]


def work(redis_url: str) -> None:
    conn = redis.Redis.from_url(redis_url)
    queue = Queue("poststack", connection=conn, serializer=JSONSerializer)
    SimpleWorker([queue], connection=conn, serializer=JSONSerializer).work(burst=True)
    reset_worker()
    conn.close()


def batch_requests(sandbox: Sandbox) -> list[dict[str, t.Any]]:
    return [r for r in sandbox.requests if r["path"] == "/emails/batch"]


def test_send_batch_chunks_by_100_and_keeps_the_order(
    app: Flask, sandbox: Sandbox
) -> None:
    with app.app_context():
        items = send_batch(messages(250))
    assert len(batch_requests(sandbox)) == 3
    assert [item.index for item in items] == list(range(250))
    stored = {email.id: email for email in sandbox.emails}
    assert len(stored) == 250
    for n, item in enumerate(items):
        assert item.ok
        email = stored[item.id or ""]
        assert email.to == [f"user{n}@example.com"]
        assert email.input.idempotency_key == item.idempotency_key
    assert len({item.idempotency_key for item in items}) == 250


def test_send_batch_reports_refused_emails_in_place(
    app: Flask, sandbox: Sandbox
) -> None:
    sandbox.configure(suppressed_recipients=["user1@example.com"])
    with app.app_context():
        items = send_batch(messages(3))
    assert [item.ok for item in items] == [True, False, True]
    assert items[1].error and items[1].code == "unprocessable_entity"
    assert len(sandbox.emails) == 2


def test_a_failed_request_marks_its_chunk_and_the_others_still_go(
    app: Flask, sandbox: Sandbox
) -> None:
    sandbox.faults.add("error", status=503, path="/emails/batch", times=1)
    with app.app_context():
        items = send_batch(messages(150))
    assert {item.code for item in items[:100]} == {None}
    assert not any(item.ok for item in items[:100])
    assert all(item.ok for item in items[100:])
    assert len(sandbox.emails) == 50


def test_bad_input_names_the_message_and_sends_nothing(
    app: Flask, sandbox: Sandbox, redis_url: str
) -> None:
    bad = messages(5)
    bad[3]["to"] = "nope"
    with app.app_context():
        for call in (send_batch, enqueue_batch, enqueue_many):
            with pytest.raises(InvalidEmailError) as info:
                call(bad)
            assert info.value.argument == "messages[3].to"
        with pytest.raises(InvalidEmailError, match="messages"):
            send_batch([])
        with pytest.raises(InvalidEmailError, match=r"messages\[0\]"):
            send_batch([{"too": "x"}])  # type: ignore[typeddict-unknown-key]
    assert sandbox.stats["requests"] == 0
    assert redis.Redis.from_url(redis_url).dbsize() == 0


def test_send_batch_when_suppressed(app: Flask, sandbox: Sandbox) -> None:
    app.config["POSTSTACK_SUPPRESS_SEND"] = True
    with app.app_context():
        items = send_batch(messages(3))
    assert all(item.id and item.id.startswith("em_suppressed_") for item in items)
    assert len(outbox(app)) == 3
    assert sandbox.stats["requests"] == 0


def test_enqueue_batch_makes_one_job_per_100(
    app: Flask, sandbox: Sandbox, redis_url: str
) -> None:
    with app.app_context():
        jobs = enqueue_batch(messages(250))
    assert [len(job.args[0]) for job in jobs] == [100, 100, 50]
    work(redis_url)
    assert len(batch_requests(sandbox)) == 3
    stored = {email.input.idempotency_key: email for email in sandbox.emails}
    assert len(stored) == 250
    for job in jobs:
        job.refresh()
        assert job.get_status() == JobStatus.FINISHED
        results = job.return_value()
        assert results == job.meta["results"]
        for payload, result in zip(job.args[0], results, strict=True):
            assert stored[payload["idempotency_key"]].id == result["id"]


# drop_after: the answer is lost; empty_2xx: it comes back unreadable.
@pytest.mark.parametrize("fault", ["drop_after", "empty_2xx"])
def test_a_batch_retry_replays_instead_of_sending_twice(
    app: Flask, sandbox: Sandbox, redis_url: str, fault: str
) -> None:
    sandbox.faults.add(fault, path="/emails/batch", times=1)
    with app.app_context():
        (job,) = enqueue_batch(messages(40))
    work(redis_url)
    job.refresh()
    assert job.get_status() == JobStatus.FINISHED
    assert job.retries_left == 1
    assert len(sandbox.emails) == 40
    assert sandbox.stats["replays"] == 40
    assert [r["id"] for r in job.return_value() or []] == [e.id for e in sandbox.emails]


def test_refused_emails_of_a_batch_job_are_not_retried(
    app: Flask, sandbox: Sandbox, redis_url: str
) -> None:
    sandbox.configure(daily_quota=3)
    with app.app_context():
        (job,) = enqueue_batch(messages(5))
    work(redis_url)
    job.refresh()
    assert job.get_status() == JobStatus.FINISHED
    assert job.retries_left == 2
    codes = [result.get("code") for result in job.return_value() or []]
    assert codes == [None, None, None, "daily_limit_exceeded", "daily_limit_exceeded"]
    assert len(batch_requests(sandbox)) == 1


def test_a_legacy_quota_in_a_batch_fails_at_once(
    app: Flask, sandbox: Sandbox, redis_url: str
) -> None:
    # Before 0.14 the API refused over-quota emails with rate_limit_exceeded.
    # A throttle refuses a whole request, so on one email that code is a
    # quota: retrying cannot help.
    sandbox.configure(daily_quota=3, quota_legacy_code=True)
    failed: list[BaseException] = []

    def on_failed(sender: t.Any, exception: BaseException, **extra: t.Any) -> None:
        failed.append(exception)

    with app.app_context():
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
    app: Flask, sandbox: Sandbox, redis_url: str, monkeypatch: pytest.MonkeyPatch
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
    with app.app_context():
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
    with app.app_context():
        assert email_status(job).state == "failed"
        broken.clear()
        result = app.test_cli_runner().invoke(args=["poststack", "requeue-failed"])
    assert "1 job(s) requeued" in result.output
    work(redis_url)
    job.refresh()
    assert job.get_status() == JobStatus.FINISHED
    assert len(sandbox.emails) == 5  # the two unsent ones, and only them
    assert sandbox.stats["replays"] == 0


def test_enqueue_many_is_one_job_per_email(
    app: Flask, sandbox: Sandbox, redis_url: str
) -> None:
    with app.app_context():
        jobs = enqueue_many(messages(30))
    assert len(jobs) == 30
    assert len({job.meta["idempotency_key"] for job in jobs}) == 30
    work(redis_url)
    assert len(sandbox.emails) == 30


def test_batches_are_recorded_like_single_sends(app: Flask, sandbox: Sandbox) -> None:
    app.config["POSTSTACK_SUPPRESS_SEND"] = True
    with record_messages(app) as records, app.app_context():
        send_batch(messages(2))
        enqueue_batch(messages(3))
    assert [r.kind for r in records] == ["sent"] * 2 + ["enqueued"] * 3
    assert records[0].to == ["user0@example.com"]
    assert len({r.job.id for r in records[2:] if r.job}) == 1  # one job, 3 emails


def test_fail_next_reaches_batch_requests(app: Flask, sandbox: Sandbox) -> None:
    fail_next(status=503)
    with app.app_context():
        items = send_batch(messages(150))
    assert not any(item.ok for item in items[:100])
    assert all(item.ok for item in items[100:])
    assert len(batch_requests(sandbox)) == 1
