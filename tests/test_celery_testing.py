"""A testing app on the Celery backend never reaches a broker on localhost."""

from __future__ import annotations

import typing as t

import pytest
from flask import Flask

from flask_poststack import _state
from flask_poststack import ConfigurationError
from flask_poststack import email_status
from flask_poststack import enqueue_email
from flask_poststack import QueueUnavailableError
from flask_poststack.testing import RecordedEmail
from tests.conftest import AppFactory


@pytest.fixture
def app(make_app: AppFactory) -> Flask:
    # TESTING on, no POSTSTACK_REDIS_URL in app.config (nor in the environment).
    return make_app(POSTSTACK_QUEUE_BACKEND="celery")


def test_a_testing_app_without_a_broker_runs_tasks_inline(
    app: Flask, poststack_outbox: list[RecordedEmail]
) -> None:
    with app.app_context():
        result: t.Any = enqueue_email(to="a@example.com", subject="Hi", text="t")
        by_id = email_status(result.id)
    assert type(result).__name__ == "EagerResult"
    assert by_id.state == "sent" and by_id.email_id == result.result
    assert [r.status for r in poststack_outbox] == ["sent"]
    assert poststack_outbox[0].job is result


def test_an_unknown_task_id_is_unknown_not_looked_up(app: Flask) -> None:
    with app.app_context():
        assert email_status("no-such-task").state == "unknown"


def test_outside_the_pytest_plugin_it_names_the_setting(
    app: Flask, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_state, "_testing_redis", None)
    with app.app_context(), pytest.raises(ConfigurationError) as caught:
        enqueue_email(to="a@example.com", subject="Hi", text="t")
    text = str(caught.value)
    assert "POSTSTACK_REDIS_URL" in text and "no Celery broker" in text
    # The RQ hints (use_redis, a FakeRedis) do nothing for Celery.
    assert "use_redis" not in text and "fakeredis" not in text.lower()
    assert "POSTSTACK_EAGER = True" in text and "poststack_celery" in text


def test_poststack_queue_says_what_to_use_instead(
    app: Flask, request: pytest.FixtureRequest
) -> None:
    with pytest.raises(RuntimeError, match="poststack_outbox"):
        request.getfixturevalue("poststack_queue")


def test_eager_status_by_id_is_the_tasks_outcome(make_app: AppFactory) -> None:
    # POSTSTACK_EAGER with an unreachable broker: the result is kept in-process.
    app = make_app(POSTSTACK_QUEUE_BACKEND="celery", POSTSTACK_EAGER=True,
                   POSTSTACK_REDIS_URL="redis://127.0.0.1:9/0")  # fmt: skip
    with app.app_context():
        result: t.Any = enqueue_email(to="a@example.com", subject="Hi", text="t")
        assert email_status(result.id).state == "sent"


def test_status_with_the_backend_down_is_queue_unavailable(
    make_app: AppFactory,
) -> None:
    app = make_app(POSTSTACK_QUEUE_BACKEND="celery",
                   POSTSTACK_REDIS_URL="redis://127.0.0.1:9/0")  # fmt: skip
    with app.app_context(), pytest.raises(QueueUnavailableError) as caught:
        email_status("some-task")
    assert "some-task" in str(caught.value) and "127.0.0.1:9" in str(caught.value)
