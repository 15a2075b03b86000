"""The Celery worker commands the docs and ``flask poststack worker --print``
give, run exactly as given: the tasks are registered, a worker without a key
says so at start, and ``requeue-failed`` sends a failed task again."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import typing as t
from pathlib import Path

import pytest
import redis

from flask_poststack import email_status
from flask_poststack import enqueue_email
from flask_poststack._celery_cli import celery_worker_command
from flask_poststack._celery_ledger import FAILED
from flask_poststack._state import get_state
from flask_poststack.sandbox import Sandbox
from tests.e2e.harness import API_KEY
from tests.e2e.harness import BASE_ENV
from tests.e2e.harness import keys_stored
from tests.e2e.harness import make_app
from tests.e2e.harness import wait_until

pytestmark = pytest.mark.slow


def run(argv: list[str], log: Path, **env: str) -> subprocess.Popen[bytes]:
    base = {k: os.environ[k] for k in BASE_ENV if k in os.environ}
    with open(log, "wb") as out:
        return subprocess.Popen(
            argv,
            env={**base, **env},
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)


def test_the_printed_worker_command_registers_the_tasks_and_warns_without_a_key(
    redis_url: str, sandbox: Sandbox, tmp_path: Path
) -> None:
    app = make_app(redis_url, sandbox, POSTSTACK_QUEUE_BACKEND="celery")
    argv = celery_worker_command(get_state(app).settings)
    log = tmp_path / "worker.log"
    env = {"POSTSTACK_REDIS_URL": redis_url, "POSTSTACK_BASE_URL": sandbox.base_url,
           "POSTSTACK_RETRY_INTERVALS": "0", "PYTHONUNBUFFERED": "1"}  # fmt: skip
    proc = run(argv, log, **env)  # no POSTSTACK_API_KEY
    try:
        wait_until(lambda: b"POSTSTACK_API_KEY is not set" in log.read_bytes(), 120,
                   "the start-up warning", log.read_text)  # fmt: skip

        def check() -> str:
            return app.test_cli_runner().invoke(args=["poststack", "check"]).output

        # A ping answered within 1 s; a busy machine may need a second try.
        wait_until(lambda: "ok  workers: 1 answering" in check(), 120,
                   "check to see the worker", check)  # fmt: skip
        with app.app_context():
            result: t.Any = enqueue_email(to="a@example.com", subject="Hi", text="t")
            wait_until(lambda: email_status(result).state == "failed", 120,
                       "the task to fail for want of a key", log.read_text)  # fmt: skip
            error = email_status(result).error
            # Kept for requeue-failed just after its result is stored.
            broker = redis.Redis.from_url(redis_url)
            wait_until(lambda: broker.hexists(FAILED, result.id), 120,
                       "the failed task to be kept", log.read_text)  # fmt: skip
        assert error is not None and error["code"] == "ConfigurationError"
        text = log.read_text()
        assert "NotRegistered" not in text and "Received unregistered" not in text
        assert text.count("POSTSTACK_API_KEY is not set") == 1
        assert API_KEY not in text
    finally:
        stop(proc)

    # With the key, requeue-failed sends it again, under the same task id.
    proc = run(argv, log, **env, POSTSTACK_API_KEY=API_KEY)
    try:
        cli = app.test_cli_runner().invoke(args=["poststack", "requeue-failed"])
        assert cli.exit_code == 0, cli.output
        assert "1 job(s) requeued" in cli.output
        with app.app_context():
            wait_until(
                lambda: email_status(result).state == "sent",
                120,
                "the requeued task",
                lambda: (email_status(result), log.read_text()),
            )
        assert list(keys_stored(sandbox).values()) == [1]  # one email, sent once
    finally:
        stop(proc)


@pytest.mark.filterwarnings("ignore:Call to deprecated setex")  # celery's backend
def test_a_task_cancelled_with_no_worker_running_is_never_sent(
    redis_url: str, sandbox: Sandbox, tmp_path: Path
) -> None:
    from flask_poststack import cancel_email

    app = make_app(redis_url, sandbox, POSTSTACK_QUEUE_BACKEND="celery")
    with app.app_context():
        dropped: t.Any = enqueue_email(to="a@example.com", subject="No", text="t")
        change = cancel_email(dropped)
        assert (change.done, change.where, change.job_id) == (True, "queue", dropped.id)
        assert email_status(dropped.id).state == "canceled"
        again = cancel_email(dropped.id)
        assert (again.done, again.where) == (False, "canceled")
        kept: t.Any = enqueue_email(to="b@example.com", subject="Yes", text="t")
    argv = celery_worker_command(get_state(app).settings)
    log = tmp_path / "worker.log"
    proc = run(argv, log, POSTSTACK_REDIS_URL=redis_url, POSTSTACK_API_KEY=API_KEY,
               POSTSTACK_BASE_URL=sandbox.base_url, PYTHONUNBUFFERED="1")  # fmt: skip
    try:
        with app.app_context():
            wait_until(lambda: email_status(kept).state == "sent", 120,
                       "the email after the cancelled one", log.read_text)  # fmt: skip
            # Taken, found without its entry, recorded as revoked again.
            broker = redis.Redis.from_url(redis_url)
            taken = lambda: not broker.llen("poststack") and not broker.hlen("unacked")  # noqa: E731
            wait_until(taken, 120, "the worker to take both tasks", log.read_text)
            wait_until(lambda: email_status(dropped).state == "canceled", 120,
                       "the cancelled task's state", log.read_text)  # fmt: skip
    finally:
        stop(proc)
    assert list(keys_stored(sandbox).values()) == [1]  # the kept email only


#: docs/celery.md's own Celery app, with and without make_celery.
OWN_APP = """
import os
from celery import Celery
from flask_poststack.celery_tasks import make_celery

redis_url = os.environ["POSTSTACK_REDIS_URL"]
celery_app = make_celery(app=Celery("myapp", broker=redis_url, backend=redis_url))
"""
PLAIN_APP = """
import os
from celery import Celery

redis_url = os.environ["POSTSTACK_REDIS_URL"]
celery_app = Celery("myapp", broker=redis_url, backend=redis_url)
"""


@pytest.mark.parametrize(
    ("source", "command"),
    [
        (OWN_APP, "celery -A myapp.celery_app worker --pool threads -c 16"
                  " -Q poststack,celery"),
        (PLAIN_APP, "celery -A myapp.celery_app worker -I flask_poststack.celery_tasks"
                    " --pool threads -c 16 -Q poststack,celery"),
    ],
)  # fmt: skip
def test_the_documented_commands_for_your_own_app_register_the_tasks(
    redis_url: str, sandbox: Sandbox, tmp_path: Path, source: str, command: str
) -> None:
    from celery import Celery

    from flask_poststack.celery_tasks import make_celery

    docs = Path(__file__).parents[2] / "docs" / "celery.md"
    assert f"\n{command}\n" in docs.read_text()  # as documented
    (tmp_path / "myapp.py").write_text(source)
    app = make_app(redis_url, sandbox, POSTSTACK_QUEUE_BACKEND="celery")
    own = Celery("myapp", broker=redis_url, backend=redis_url)
    app.extensions["poststack_celery"] = make_celery(app=own)
    log = tmp_path / "worker.log"
    argv = command.split()
    argv[0] = str(Path(sys.executable).parent / "celery")
    env = {
        "PYTHONPATH": str(tmp_path),
        "POSTSTACK_REDIS_URL": redis_url,
        "POSTSTACK_API_KEY": API_KEY,
        "POSTSTACK_BASE_URL": sandbox.base_url,
    }
    proc = run(argv, log, **env)
    try:
        with app.app_context():
            result: t.Any = enqueue_email(to="a@example.com", subject="Hi", text="t")
            wait_until(lambda: email_status(result.id).state == "sent", 120,
                       "the task on your own app", log.read_text)  # fmt: skip
    finally:
        stop(proc)
    assert "NotRegistered" not in log.read_text()
