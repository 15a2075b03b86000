"""The one pipeline: every entry point fires the signals, logs a failure and
survives a raising ``email_sent`` receiver the same way.

Each test runs every entry point: ``send_email``, ``send_batch``,
``enqueue_email`` and ``enqueue_batch``, the queued ones run by a real
in-process worker against a real Redis, or inline (``POSTSTACK_EAGER``).
"""

from __future__ import annotations

import logging
import typing as t
from contextlib import nullcontext

import pytest
import redis
from flask import Flask
from rq import Queue
from rq import SimpleWorker
from rq.job import JobStatus
from rq.serializers import JSONSerializer

from flask_poststack import EmailArgs
from flask_poststack import enqueue_batch
from flask_poststack import enqueue_email
from flask_poststack import PostStackError
from flask_poststack import send_batch
from flask_poststack import send_email
from flask_poststack import signals
from flask_poststack.sandbox import Sandbox

if t.TYPE_CHECKING:
    from tests.conftest import AppFactory

KEY = "sk_live_pipeline0123456789"
EMAIL: EmailArgs = {"to": "ada@example.com", "subject": "Hi", "text": "t"}
ENTRY_POINTS = ["send_email", "send_batch", "enqueue_email", "enqueue_batch"]


@pytest.fixture
def app_config(
    sandbox: Sandbox, redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> dict[str, t.Any]:
    for name, value in {
        "POSTSTACK_API_KEY": KEY,
        "POSTSTACK_BASE_URL": sandbox.base_url,
        "POSTSTACK_MAX_RETRIES": "0",
    }.items():
        monkeypatch.setenv(name, value)  # the worker's environment
    return {
        "POSTSTACK_API_KEY": KEY,
        "POSTSTACK_BASE_URL": sandbox.base_url,
        "POSTSTACK_MAX_RETRIES": 0,
        "POSTSTACK_REDIS_URL": redis_url,
        "POSTSTACK_RETRY_INTERVALS": "",  # no retries: one attempt per job
        "POSTSTACK_SUPPRESS_SEND": False,
    }


@pytest.fixture
def app(make_app: AppFactory, app_config: dict[str, t.Any]) -> Flask:
    return make_app(**app_config)


def send(app: Flask, entry: str, redis_url: str) -> t.Any:
    """Send one email through ``entry``; a queued one is then worked off."""
    with app.app_context():
        if entry == "send_email":
            return send_email(**EMAIL)
        if entry == "send_batch":
            return send_batch([EMAIL])
        if entry == "enqueue_email":
            jobs = [enqueue_email(**EMAIL)]
        else:
            jobs = enqueue_batch([EMAIL])
    if not app.config["POSTSTACK_EAGER"]:
        conn = redis.Redis.from_url(redis_url)
        queue = Queue("poststack", connection=conn, serializer=JSONSerializer)
        SimpleWorker([queue], connection=conn, serializer=JSONSerializer).work(
            burst=True
        )
        conn.close()
    for job in jobs:
        job.refresh()
    return jobs


@pytest.mark.parametrize("eager", [False, True], ids=["worker", "eager"])
@pytest.mark.parametrize("entry", ENTRY_POINTS)
def test_a_raising_email_sent_receiver_is_harmless(
    app: Flask,
    sandbox: Sandbox,
    redis_url: str,
    entry: str,
    eager: bool,
    caplog: pytest.LogCaptureFixture,
) -> None:
    app.config["POSTSTACK_EAGER"] = eager

    def broken(sender: t.Any, **extra: t.Any) -> None:
        raise RuntimeError("receiver bug")

    with signals.email_sent.connected_to(broken):
        outcome = send(app, entry, redis_url)
    assert len(sandbox.emails) == 1  # sent once, not retried
    assert "An email_sent receiver failed" in caplog.text
    if entry == "send_batch":
        assert outcome[0].ok
    elif entry.startswith("enqueue"):
        assert outcome[0].get_status() == JobStatus.FINISHED


@pytest.mark.parametrize("eager", [False, True], ids=["worker", "eager"])
@pytest.mark.parametrize("entry", ENTRY_POINTS)
def test_before_send_fires_once_per_email_in_the_app(
    app: Flask, redis_url: str, entry: str, eager: bool
) -> None:
    app.config["POSTSTACK_EAGER"] = eager
    seen: list[t.Any] = []

    def receiver(sender: t.Any, payload: dict[str, t.Any], **extra: t.Any) -> None:
        seen.append(sender)

    with (
        signals.before_send.connected_to(receiver),
        signals.email_sent.connected_to(lambda sender, **extra: None),
    ):
        send(app, entry, redis_url)
    assert seen == [app]


@pytest.mark.parametrize("entry", ENTRY_POINTS)
def test_every_failed_send_logs_the_same_line(
    app: Flask,
    sandbox: Sandbox,
    redis_url: str,
    entry: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    sandbox.faults.add("error", status=422, code="unprocessable_entity", times=1)
    caplog.set_level(logging.INFO)
    raises = pytest.raises(PostStackError) if entry == "send_email" else nullcontext()
    with raises:
        outcome = send(app, entry, redis_url)
    (record,) = [r for r in caplog.records if r.msg.startswith("PostStack send failed")]
    facts = record.poststack  # type: ignore[attr-defined]
    assert record.name == "flask_poststack"
    assert record.levelno == logging.ERROR
    assert (facts["status"], facts["code"]) == (422, "unprocessable_entity")
    assert facts["request_id"].startswith("req_")
    assert facts["will_retry"] is False
    message = record.getMessage()
    assert message.startswith(
        f"PostStack send failed: status=422 code=unprocessable_entity"
        f" request_id={facts['request_id']} idempotency_key={facts['idempotency_key']}"
        f" job={facts['job_id']} retry=no: "
    )
    if entry.startswith("enqueue"):
        assert facts["job_id"] == outcome[0].id
        assert facts["idempotency_key"]
    else:
        assert facts["job_id"] is None
    assert KEY not in caplog.text


def test_a_raising_email_failed_receiver_changes_nothing(
    app: Flask, sandbox: Sandbox, redis_url: str
) -> None:
    # One email of the batch is refused for good (422), one is accepted.
    sandbox.configure(unverified_domains=["bad.example"])

    def broken(sender: t.Any, **extra: t.Any) -> None:
        raise RuntimeError("receiver bug")

    with app.app_context():
        (batch,) = enqueue_batch(
            [EMAIL, {**EMAIL, "from_": "x@bad.example", "to": "b@example.com"}]
        )
    sandbox.faults.add("error", status=422, path="/emails", times=1)
    with app.app_context():
        single = enqueue_email(**EMAIL)
    with signals.email_failed.connected_to(broken):
        send(app, "enqueue_email", redis_url)  # works off both jobs
    batch.refresh()
    single.refresh()
    assert batch.get_status() == JobStatus.FINISHED
    assert single.get_status() == JobStatus.FAILED
    assert single.retries_left == 0
    assert sandbox.stats["requests"] == 3  # the batch once, the 422 once, one more
    assert len(sandbox.emails) == 2  # the batch's good email and the new one


@pytest.mark.parametrize("entry", ["enqueue_email", "enqueue_batch"])
def test_queued_email_signals_are_the_same_in_eager_mode_and_in_a_worker(
    app: Flask, sandbox: Sandbox, redis_url: str, entry: str
) -> None:
    seen: dict[bool, list[t.Any]] = {}
    for eager in (False, True):
        app.config["POSTSTACK_EAGER"] = eager
        seen[eager] = senders = []

        def receiver(sender: t.Any, **extra: t.Any) -> None:
            senders.append(sender)  # noqa: B023 - used inside the iteration

        with signals.email_sent.connected_to(receiver):
            send(app, entry, redis_url)
    assert seen[False] == seen[True] == [None]


def test_an_eager_job_is_never_logged_as_retried(
    make_app: AppFactory,
    app_config: dict[str, t.Any],
    sandbox: Sandbox,
    redis_url: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    app = make_app(
        **{**app_config, "POSTSTACK_RETRY_INTERVALS": "0,0", "POSTSTACK_EAGER": True}
    )
    sandbox.faults.add("error", status=503, path="/emails", times=1)
    failed: list[bool] = []
    with signals.email_failed.connected_to(
        lambda sender, will_retry, **extra: failed.append(will_retry)
    ):
        send(app, "enqueue_email", redis_url)
    assert failed == [False]
    assert " retry=no: " in caplog.text and " retry=yes: " not in caplog.text


@pytest.mark.parametrize("entry", ["enqueue_email", "enqueue_batch"])
def test_a_raising_email_enqueued_receiver_does_not_hide_the_job(
    app: Flask, sandbox: Sandbox, redis_url: str, entry: str
) -> None:
    def broken(sender: t.Any, **extra: t.Any) -> None:
        raise RuntimeError("receiver bug")

    with signals.email_enqueued.connected_to(broken):
        (job,) = send(app, entry, redis_url)
    assert job.get_status() == JobStatus.FINISHED
    assert len(sandbox.emails) == 1
