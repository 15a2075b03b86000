from __future__ import annotations

import subprocess
import textwrap
import typing as t
from pathlib import Path

import pytest
import redis
from flask import Flask
from rq import Queue
from rq import SimpleWorker
from rq.job import JobStatus
from rq.serializers import JSONSerializer

from flask_poststack import enqueue_email
from flask_poststack import PostStackError
from flask_poststack import send_email
from flask_poststack import SendCancelled
from flask_poststack import signals
from flask_poststack.cli import worker_command
from flask_poststack.client import reset_worker
from flask_poststack.config import load_settings
from flask_poststack.sandbox import Sandbox

if t.TYPE_CHECKING:
    from tests.conftest import AppFactory

KEY = "sk_test_signals0123456789"
EMAIL: dict[str, t.Any] = {"to": "ada@example.com", "subject": "Hi", "text": "Hi"}


@pytest.fixture
def app(make_app: AppFactory, sandbox: Sandbox, redis_url: str) -> Flask:
    return make_app(
        TESTING=False,
        POSTSTACK_API_KEY=KEY,
        POSTSTACK_BASE_URL=sandbox.base_url,
        POSTSTACK_REDIS_URL=redis_url,
        POSTSTACK_MAX_RETRIES=0,
        POSTSTACK_RETRY_INTERVALS="0",
    )


class Calls:
    """Receivers that remember what they were sent."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, t.Any, dict[str, t.Any]]] = []

    def receiver(self, name: str) -> t.Callable[..., None]:
        def receive(sender: t.Any, **kwargs: t.Any) -> None:
            self.seen.append((name, sender, kwargs))

        return receive

    def names(self) -> list[str]:
        return [name for name, _, _ in self.seen]


@pytest.fixture
def calls() -> t.Iterator[Calls]:
    calls = Calls()
    receivers = {
        name: calls.receiver(name)
        for name in ("before_send", "email_sent", "email_failed", "email_enqueued")
    }
    for name, receiver in receivers.items():
        getattr(signals, name).connect(receiver)
    yield calls
    for name, receiver in receivers.items():
        getattr(signals, name).disconnect(receiver)


def test_send_email_fires_before_send_and_email_sent(
    app: Flask, sandbox: Sandbox, calls: Calls
) -> None:
    with app.app_context():
        result = send_email(**EMAIL)
    assert calls.names() == ["before_send", "email_sent"]
    (_, sender, kwargs) = calls.seen[1]
    assert sender is app
    assert kwargs["result"] is result
    assert kwargs["payload"]["to"] == ["ada@example.com"]


def test_suppressed_sends_fire_email_sent_too(app: Flask, calls: Calls) -> None:
    app.testing = True
    with app.app_context():
        result = send_email(**EMAIL)
    assert calls.names() == ["before_send", "email_sent"]
    assert calls.seen[1][2]["result"] is result and result.suppressed


def test_before_send_may_change_the_payload(app: Flask, sandbox: Sandbox) -> None:
    def tag_everything(sender: Flask, payload: dict[str, t.Any], **_: t.Any) -> None:
        payload["tags"] = [*payload.get("tags", []), "from-receiver"]

    with signals.before_send.connected_to(tag_everything), app.app_context():
        result = send_email(**EMAIL)
    assert sandbox.get_email(result.id).input.tags == ["from-receiver"]


def test_before_send_may_cancel_sends_and_enqueues(
    app: Flask, sandbox: Sandbox, redis_url: str, calls: Calls
) -> None:
    def cancel(sender: Flask, payload: dict[str, t.Any], **_: t.Any) -> None:
        raise SendCancelled("address is on our suppression list")

    with signals.before_send.connected_to(cancel), app.app_context():
        with pytest.raises(SendCancelled):
            send_email(**EMAIL)
        with pytest.raises(SendCancelled):
            enqueue_email(**EMAIL)
    assert sandbox.stats["requests"] == 0
    assert redis.Redis.from_url(redis_url).dbsize() == 0
    assert "email_sent" not in calls.names()
    assert "email_enqueued" not in calls.names()


def test_email_failed_carries_the_exception(
    app: Flask, sandbox: Sandbox, calls: Calls
) -> None:
    sandbox.faults.add("error", status=422, code="unprocessable_entity")
    with app.app_context(), pytest.raises(PostStackError) as info:
        send_email(**EMAIL)
    assert calls.names() == ["before_send", "email_failed"]
    assert calls.seen[1][2]["exception"] is info.value


def test_a_failing_email_sent_receiver_does_not_fail_the_send(
    app: Flask, sandbox: Sandbox, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(sender: Flask, **_: t.Any) -> None:
        raise RuntimeError("receiver bug")

    with signals.email_sent.connected_to(broken), app.app_context():
        result = send_email(**EMAIL)
    assert sandbox.get_email(result.id)
    assert "receiver bug" in caplog.text


def test_enqueue_fires_before_send_and_email_enqueued(app: Flask, calls: Calls) -> None:
    with app.app_context():
        job = enqueue_email(**EMAIL)
    assert calls.names() == ["before_send", "email_enqueued"]
    assert calls.seen[1][1] is app
    assert calls.seen[1][2]["job"] is job


def test_in_a_worker_the_sender_is_none(
    app: Flask,
    sandbox: Sandbox,
    redis_url: str,
    calls: Calls,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("POSTSTACK_API_KEY", KEY)
    monkeypatch.setenv("POSTSTACK_BASE_URL", sandbox.base_url)
    monkeypatch.setenv("POSTSTACK_MAX_RETRIES", "0")
    with app.app_context():
        job = enqueue_email(**EMAIL)
    sandbox.faults.add("error", status=503, path="/emails", times=1)
    calls.seen.clear()
    conn = redis.Redis.from_url(redis_url)
    queue = Queue("poststack", connection=conn, serializer=JSONSerializer)
    SimpleWorker([queue], connection=conn, serializer=JSONSerializer).work(burst=True)
    reset_worker()
    # before_send fired once, in the app, at enqueue: never in the worker.
    assert calls.names() == ["email_failed", "email_sent"]
    assert {sender for _, sender, _ in calls.seen} == {None}
    failed = calls.seen[0][2]
    assert failed["will_retry"] is True and failed["job"].id == job.id
    assert calls.seen[1][2]["result"].id == sandbox.emails[0].id


def test_receivers_in_a_real_worker_process(
    app: Flask, sandbox: Sandbox, redis_url: str, tmp_path: Path
) -> None:
    """A worker loads receivers from its rq settings module (``-c``)."""
    log = tmp_path / "seen.txt"
    (tmp_path / "worker_settings.py").write_text(
        textwrap.dedent(
            f"""
            from flask_poststack import signals

            def record(sender, payload, result, **extra):
                with open({str(log)!r}, "a") as f:
                    f.write(f"{{sender}} {{result.id}}\\n")

            def broken(sender, **extra):
                raise RuntimeError("a receiver bug must not fail the job")

            signals.email_sent.connect(record, weak=False)
            signals.email_sent.connect(broken, weak=False)
            """
        )
    )
    with app.app_context():
        job = enqueue_email(**EMAIL)
    argv = worker_command(load_settings(app.config), burst=True)
    env = {
        "PATH": "/usr/bin:/bin",
        "PYTHONPATH": str(tmp_path),
        "POSTSTACK_API_KEY": KEY,
        "POSTSTACK_BASE_URL": sandbox.base_url,
    }
    subprocess.run([*argv, "-c", "worker_settings"], env=env, timeout=60, check=True,
                   capture_output=True)  # fmt: skip
    job.refresh()
    assert job.get_status() == JobStatus.FINISHED
    assert log.read_text().split() == ["None", sandbox.emails[0].id]
