"""cancel_email and reschedule_email: in Redis before a worker takes the
job, at the API (the sandbox, over HTTP) for a scheduled send."""

from __future__ import annotations

import typing as t
from datetime import datetime
from datetime import timedelta
from datetime import timezone

import pytest
import redis
from flask import Flask

from flask_poststack import cancel_email
from flask_poststack import email_status
from flask_poststack import enqueue_email
from flask_poststack import InvalidEmailError
from flask_poststack import reschedule_email
from flask_poststack import send_email
from flask_poststack.sandbox import Sandbox
from tests.helpers import work

EMAIL: dict[str, t.Any] = {"to": "ada@example.com", "subject": "Hi", "text": "Hi"}


def later(hours: float = 1) -> datetime:
    return datetime.now(timezone.utc) + timedelta(hours=hours)


def test_a_queued_job_is_cancelled_and_never_sent(
    batch_app: Flask, conn: redis.Redis, sandbox: Sandbox
) -> None:
    with batch_app.app_context():
        job = enqueue_email(**EMAIL)
        change = cancel_email(job)
        assert (change.done, change.where, change.job_id) == (True, "queue", job.id)
        assert email_status(job).state == "canceled"
        again = cancel_email(job.id)
    assert (again.done, again.where) == (False, "canceled")
    work(conn)
    assert sandbox.stats["requests"] == 0


def test_a_delayed_job_is_cancelled(
    batch_app: Flask, conn: redis.Redis, sandbox: Sandbox
) -> None:
    with batch_app.app_context():
        job = enqueue_email(**EMAIL, run_at=later())
        assert email_status(job).state == "scheduled"
        assert cancel_email(job.id).where == "queue"
        assert email_status(job).state == "canceled"
    assert conn.zcard("rq:scheduled:poststack") == 0


def test_a_sent_email_says_so(
    batch_app: Flask, conn: redis.Redis, sandbox: Sandbox
) -> None:
    with batch_app.app_context():
        job = enqueue_email(**EMAIL)
        work(conn)
        change = cancel_email(job)
        assert (change.done, change.where) == (False, "sent")
        assert change.email_id == sandbox.emails[0].id
        assert "did not cancel" in change.message  # the API refused: not scheduled
        assert email_status(job).state == "sent"


def test_a_scheduled_send_is_cancelled_at_the_api(
    batch_app: Flask, conn: redis.Redis, sandbox: Sandbox
) -> None:
    with batch_app.app_context():
        job = enqueue_email(**EMAIL, scheduled_at=later())
        work(conn)
        change = cancel_email(job)
        assert (change.done, change.where) == (True, "api")
        status = email_status(job, check_api=True)
    (email,) = sandbox.emails
    assert change.email_id == email.id
    assert email.status == "failed"  # the sandbox's status for a cancelled send
    assert "cancel" in [r["path"].rsplit("/", 1)[-1] for r in sandbox.requests]
    assert (status.state, status.scheduled_change) == ("canceled", "cancelled")


def test_send_email_result_is_cancelled_and_rescheduled(
    batch_app: Flask, sandbox: Sandbox
) -> None:
    with batch_app.app_context():
        first = send_email(**EMAIL, scheduled_at=later())
        moved = reschedule_email(first, "2031-05-01T09:00:00Z")
        assert (moved.done, moved.where) == (True, "api")
        assert sandbox.get_email(first.id).scheduled_at == datetime(
            2031, 5, 1, 9, tzinfo=timezone.utc
        )
        assert cancel_email(first.id).done is True
        now = send_email(**EMAIL)
        refused = reschedule_email(now, later())
    assert (refused.done, refused.where) == (False, "sent")


def test_reschedule_checks_its_time_and_leaves_a_queued_job(
    batch_app: Flask, conn: redis.Redis
) -> None:
    with batch_app.app_context():
        job = enqueue_email(**EMAIL)
        with pytest.raises(InvalidEmailError) as info:
            reschedule_email(job, datetime(2031, 1, 1))  # naive
        assert info.value.argument == "scheduled_at"
        for past in ("2026-03-26T09:00:00Z", later(-1)):
            with pytest.raises(InvalidEmailError, match="in the past") as info:
                reschedule_email(job, past)
            assert info.value.argument == "scheduled_at"
        change = reschedule_email(job, later())
        assert (change.done, change.where) == (False, "queue")
        assert email_status(job).state == "queued"


def test_unknown_job(batch_app: Flask, conn: redis.Redis) -> None:
    with batch_app.app_context():
        change = cancel_email("no-such-job")
    assert (change.done, change.where) == (False, "unknown")


def test_a_job_a_worker_has_taken_is_not_cancelled(
    batch_app: Flask, conn: redis.Redis
) -> None:
    with batch_app.app_context():
        job = enqueue_email(**EMAIL)
        # What a worker's dequeue does: the job leaves the queue's list.
        assert conn.lrem("rq:queue:poststack", 0, job.id) == 1
        change = cancel_email(job)
        assert (change.done, change.where) == (False, "started")
        assert email_status(job).state == "queued"  # untouched
