"""The Celery engine in-process: eager mode, the options it refuses, config.

The worker process is tested in tests/e2e/test_celery.py.
"""

from __future__ import annotations

import datetime as dt
import typing as t

import pytest
from celery import Celery
from flask import Flask

from flask_poststack import email_status
from flask_poststack import enqueue_batch
from flask_poststack import enqueue_email
from flask_poststack import InvalidEmailError
from flask_poststack import QueueUnavailableError
from flask_poststack import signals
from flask_poststack.celery_tasks import make_celery
from flask_poststack.celery_tasks import visibility_timeout
from flask_poststack.config import Settings
from flask_poststack.testing import fail_next
from flask_poststack.testing import RecordedEmail
from tests.conftest import AppFactory


@pytest.fixture
def app(make_app: AppFactory) -> Flask:
    # An unreachable broker: eager mode must not need one.
    return make_app(POSTSTACK_QUEUE_BACKEND="celery", POSTSTACK_EAGER=True,
                    POSTSTACK_REDIS_URL="redis://127.0.0.1:9/0")  # fmt: skip


def test_eager_runs_the_task_through_the_pipeline(
    app: Flask, poststack_outbox: list[RecordedEmail]
) -> None:
    with app.app_context():
        result = enqueue_email(to="a@example.com", subject="Hi", text="t")
        [batch] = enqueue_batch([{"to": "b@example.com", "subject": "B", "text": "t"}])
        status = email_status(result)
    assert type(result).__name__ == "EagerResult"
    assert status.state == "sent" and status.email_id == result.result
    assert email_status(batch).state == "sent"
    assert [r.status for r in poststack_outbox] == ["sent", "sent"]
    assert poststack_outbox[0].job is result


def test_eager_goes_through_json_like_a_broker(app: Flask) -> None:
    def add_a_date(sender: object, payload: dict[str, t.Any]) -> None:
        payload["headers"] = {"X-When": dt.date(2026, 1, 1)}

    with (
        app.app_context(),
        signals.before_send.connected_to(add_a_date),
        pytest.raises(TypeError, match="JSON serializable"),
    ):
        enqueue_email(to="a@example.com", subject="Hi", text="t")


def test_eager_failure_is_recorded_not_retried(app: Flask) -> None:
    fail_next(status=503)
    with app.app_context():
        result = enqueue_email(to="a@example.com", subject="Hi", text="t")
        status = email_status(result)
    assert status.state == "failed"
    assert status.error is not None and status.error["status"] == 503
    assert status.error["retryable"] is True


def test_task_always_eager_on_the_apps_own_celery(make_app: AppFactory) -> None:
    app = make_app(POSTSTACK_QUEUE_BACKEND="celery")
    celery = make_celery(Settings(queue="mail"))
    celery.conf.task_always_eager = True
    app.extensions["poststack_celery"] = celery
    with app.app_context():
        result: t.Any = enqueue_email(to="a@example.com", subject="Hi", text="t")
    assert result.successful()


@pytest.mark.parametrize(
    ("option", "value"),
    [("job_timeout", 30), ("result_ttl", 10), ("failure_ttl", 10), ("delay", 10**6)],
)
def test_refuses_what_celery_cannot_do(app: Flask, option: str, value: int) -> None:
    sent: list[object] = []
    with (
        app.app_context(),
        signals.before_send.connected_to(lambda sender, payload: sent.append(payload)),
        pytest.raises(InvalidEmailError) as caught,
    ):
        options: t.Any = {option: value}
        enqueue_email(to="a@example.com", subject="Hi", text="t", **options)
    assert caught.value.argument == option
    assert not sent


def test_visibility_timeout_outlasts_a_task_and_its_longest_wait() -> None:
    assert visibility_timeout(Settings()) == 310 + 300 + 60
    assert visibility_timeout(Settings(celery_visibility_timeout=5)) == 5
    conf = make_celery(Settings(retry_intervals=(1, 2))).conf
    assert conf.broker_transport_options["visibility_timeout"] == 310 + 2 + 60
    assert conf.task_default_queue == "poststack"
    assert conf.broker_transport_options["unacked_mutex_expire"] == 30
    theirs = make_celery(app=Celery("theirs", broker="redis://h/0")).conf
    assert theirs.task_default_queue == "celery"  # their routing stays
    assert theirs.broker_transport_options["visibility_timeout"] == 670
    # The producer does not subscribe to each task's result as it sends it.
    assert type(make_celery(Settings()).backend).__name__ == "ResultBackend"


def test_an_unreachable_broker_is_queue_unavailable(make_app: AppFactory) -> None:
    app = make_app(POSTSTACK_QUEUE_BACKEND="celery",
                   POSTSTACK_REDIS_URL="redis://127.0.0.1:9/0")  # fmt: skip
    with app.app_context(), pytest.raises(QueueUnavailableError) as caught:
        enqueue_email(to="a@example.com", subject="Hi", text="t")
    assert "127.0.0.1:9" in str(caught.value)
    # Refused: nothing reached Redis (the rule of _redis_errors, as for RQ).
    assert not caught.value.may_have_been_queued
    assert "Nothing was queued" in str(caught.value)
    assert len(caught.value.idempotency_keys) == len(caught.value.job_ids) == 1


@pytest.mark.parametrize(
    ("failure", "countdown"),
    [
        ({"status": 429, "code": "rate_limit_exceeded", "retry_after": 7}, 7),
        ({"status": 503}, 2),
        ({"status": 429, "code": "monthly_limit_exceeded"}, None),
        ({"status": 422, "code": "validation_error"}, None),
    ],
)
def test_the_task_retries_as_the_policy_says(
    worker_env: None,
    monkeypatch: pytest.MonkeyPatch,
    failure: dict[str, t.Any],
    countdown: int | None,
) -> None:
    from celery.exceptions import Retry

    from flask_poststack.celery_tasks import EmailFailed
    from flask_poststack.celery_tasks import send_payload

    monkeypatch.setenv("POSTSTACK_RETRY_INTERVALS", "2,5")
    asked: list[dict[str, t.Any]] = []

    def retry(**options: t.Any) -> t.NoReturn:
        asked.append(options)
        raise Retry()

    monkeypatch.setattr(send_payload, "retry", retry)
    fail_next(**failure)
    payload = {"from": "a@example.com", "to": ["b@example.com"], "subject": "S",
               "text": "t", "idempotency_key": "k-1"}  # fmt: skip
    result = send_payload.apply(args=(payload,))
    if countdown is None:
        assert not asked
        assert isinstance(result.result, EmailFailed)
        assert result.result.fields["status"] == failure["status"]
        assert result.result.fields["retryable"] is False
    else:
        [options] = asked
        assert options["countdown"] == countdown
        assert options["args"] == (payload,)


def test_a_task_queued_with_another_key_is_refused_for_good(worker_env: None) -> None:
    from flask_poststack._keyprint import fingerprint
    from flask_poststack.celery_tasks import EmailFailed
    from flask_poststack.celery_tasks import send_payload
    from tests.conftest import LIVE_KEY

    payload = {"from": "a@example.com", "to": ["b@example.com"], "subject": "S",
               "text": "t", "idempotency_key": "k-2"}  # fmt: skip
    result = send_payload.apply(args=(payload,), kwargs={"key": fingerprint(LIVE_KEY)})
    assert isinstance(result.result, EmailFailed)
    assert result.result.fields["code"] == "ConfigurationError"
    assert result.result.fields["retryable"] is False
    assert LIVE_KEY not in str(result.result.fields)


def test_a_refused_publish_is_not_queued_and_retried_once(
    make_app: AppFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    # No ledger (as on another broker than Redis): the publish fails first.
    from flask_poststack import _celery_ledger
    from flask_poststack import _redis_errors

    monkeypatch.setattr(_celery_ledger, "for_app", lambda app: None)
    tries: list[BaseException] = []
    real = _redis_errors.record

    def record(exc: BaseException) -> None:
        tries.append(exc)
        real(exc)

    monkeypatch.setattr(_redis_errors, "record", record)
    app = make_app(POSTSTACK_QUEUE_BACKEND="celery",
                   POSTSTACK_REDIS_URL="redis://127.0.0.1:9/0")  # fmt: skip
    with app.app_context(), pytest.raises(QueueUnavailableError) as caught:
        enqueue_email(to="a@example.com", subject="Hi", text="t")
    assert not caught.value.may_have_been_queued
    assert len(tries) == 1  # kombu's one retry, recorded for the rule


def test_a_retry_waits_less_than_the_visibility_timeout(
    worker_env: None,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    request: pytest.FixtureRequest,
) -> None:
    from celery.exceptions import Retry

    from flask_poststack.celery_tasks import send_payload
    from flask_poststack.client import worker_slot

    # Longer than the broker waits for an ack: handed out again, run twice.
    conf = send_payload.app.conf
    before = conf.broker_transport_options
    conf.broker_transport_options = {**(before or {}), "visibility_timeout": 670}
    request.addfinalizer(lambda: setattr(conf, "broker_transport_options", before))
    asked: list[dict[str, t.Any]] = []

    def retry(**options: t.Any) -> t.NoReturn:
        asked.append(options)
        raise Retry()

    monkeypatch.setattr(send_payload, "retry", retry)
    fail_next(status=429, code="rate_limited", retry_after=900)
    payload = {"from": "a@example.com", "to": ["b@example.com"], "subject": "S",
               "text": "t", "idempotency_key": "k-1"}  # fmt: skip
    send_payload.apply(args=(payload,))
    [options] = asked
    limit = 670 - worker_slot().settings.job_timeout - 60
    assert options["countdown"] == limit
    assert f"retries in {limit} s, not 900" in caplog.text


def test_a_retry_interval_the_broker_would_not_wait_fails_at_init_app(
    make_app: AppFactory,
) -> None:
    from flask_poststack import ConfigurationError

    with pytest.raises(ConfigurationError) as caught:
        make_app(POSTSTACK_QUEUE_BACKEND="celery", POSTSTACK_RETRY_INTERVALS="12",
                 POSTSTACK_CELERY_VISIBILITY_TIMEOUT=3)  # fmt: skip
    assert caught.value.key == "POSTSTACK_RETRY_INTERVALS"
    assert "POSTSTACK_CELERY_VISIBILITY_TIMEOUT" in caught.value.message
    # Unset, the visibility timeout outlasts the longest interval.
    make_app(POSTSTACK_QUEUE_BACKEND="celery", POSTSTACK_RETRY_INTERVALS="900")
