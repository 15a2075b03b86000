"""The Celery producer against a real redis-server that fails: refused,
hung (SIGSTOP), and a repeated ``job_id``."""

from __future__ import annotations

import os
import signal
import threading
import typing as t

import pytest
import redis
from flask import Flask

from flask_poststack import email_status
from flask_poststack import enqueue_email
from flask_poststack import QueueUnavailableError
from flask_poststack import signals
from flask_poststack._celery_queue import celery_app
from flask_poststack._state import get_state
from flask_poststack.redis_server import RedisServer
from tests.conftest import AppFactory


def test_a_hung_broker_fails_within_the_timeout_and_may_have_queued(
    make_app: AppFactory,
) -> None:
    with RedisServer() as server:
        assert server.process is not None
        pid = server.process.pid
        app = make_app(POSTSTACK_QUEUE_BACKEND="celery", POSTSTACK_REDIS_URL=server.url,
                       POSTSTACK_REDIS_TIMEOUT=0.5)  # fmt: skip
        ended = threading.Event()
        caught: list[BaseException] = []

        def enqueue() -> None:
            with app.app_context():
                try:
                    enqueue_email(to="a@example.com", subject="Hi", text="t")
                except BaseException as exc:
                    caught.append(exc)
            ended.set()

        with app.app_context():  # a warm pool: the next write is the one hung
            enqueue_email(to="a@example.com", subject="Warm", text="t")
        os.kill(pid, signal.SIGSTOP)
        try:
            threading.Thread(target=enqueue, daemon=True).start()
            # Without a socket timeout it never ends; with 0.5 s it ends soon.
            assert ended.wait(60), "enqueue_email hung on a stopped broker"
        finally:
            os.kill(pid, signal.SIGCONT)
    [error] = caught
    assert isinstance(error, QueueUnavailableError), error
    assert error.may_have_been_queued
    assert "may have been queued" in str(error)


def test_the_broker_and_ledger_clients_have_the_redis_timeout(
    make_app: AppFactory, redis_url: str
) -> None:
    from flask_poststack import _celery_ledger as ledger

    app = make_app(POSTSTACK_QUEUE_BACKEND="celery", POSTSTACK_REDIS_URL=redis_url,
                   POSTSTACK_REDIS_TIMEOUT=2.5)  # fmt: skip
    with app.app_context():
        celery = celery_app(get_state())
    transport = celery.conf.broker_transport_options
    assert (transport["socket_timeout"], transport["socket_connect_timeout"]) == (
        2.5,
        2.5,
    )
    found = ledger.for_app(celery)
    assert found is not None
    params = found.client.connection_pool.connection_kwargs
    assert (params["socket_timeout"], params["socket_connect_timeout"]) == (2.5, 2.5)
    # Waits for a free connection, in either pool, as long at most.
    assert t.cast(t.Any, found.client.connection_pool).timeout == 2.5
    assert celery.conf.broker_pool_acquire_timeout == 2.5


def test_a_wait_for_a_free_connection_or_producer_is_not_queued(
    redis_url: str,
) -> None:
    from celery.exceptions import OperationalError
    from kombu.exceptions import LimitExceeded

    from flask_poststack._redis_errors import may_have_reached

    pool: t.Any = redis.BlockingConnectionPool.from_url(
        redis_url, max_connections=1, timeout=0.1
    )
    pool.get_connection()
    with pytest.raises(redis.ConnectionError) as no_connection:
        pool.get_connection()  # the one connection is taken: nothing sent
    pool.disconnect()
    try:  # as Celery's producer_or_acquire raises it
        raise OperationalError("All 10 producer slots are in use.") from (
            LimitExceeded(10)
        )
    except OperationalError as exc:
        no_producer = exc
    assert not may_have_reached([no_connection.value])
    assert not may_have_reached([no_producer])


@pytest.fixture
def app(make_app: AppFactory, redis_url: str) -> Flask:
    return make_app(POSTSTACK_QUEUE_BACKEND="celery", POSTSTACK_REDIS_URL=redis_url)


def test_a_repeated_job_id_returns_the_first_task_unpublished(
    app: Flask, conn: redis.Redis
) -> None:
    announced: list[object] = []
    with (
        app.app_context(),
        signals.email_enqueued.connected_to(lambda sender, **kw: announced.append(kw)),
    ):
        first: t.Any = enqueue_email(to="a@example.com", subject="One", text="t",
                                     job_id="order-7")  # fmt: skip
        again: t.Any = enqueue_email(to="b@example.com", subject="Two", text="u",
                                     job_id="order-7")  # fmt: skip
    assert first.id == again.id == "order-7"
    assert conn.llen("poststack") == 1  # published once
    assert len(announced) == 1


@pytest.mark.filterwarnings("ignore:Call to deprecated setex")  # celery's backend
def test_a_repeated_job_id_of_a_finished_task_is_not_sent_again(
    app: Flask, conn: redis.Redis
) -> None:
    from flask_poststack import _celery_ledger as ledger

    with app.app_context():
        celery = celery_app(get_state())
        enqueue_email(to="a@example.com", subject="One", text="t", job_id="order-8")
        # A worker sent it: its result is stored, its entry removed.
        conn.delete("poststack")
        celery.backend.mark_as_done("order-8", "em_123")
        found = ledger.for_app(celery)
        assert found is not None
        ledger.forget(found, "order-8")
        again: t.Any = enqueue_email(to="b@example.com", subject="Two", text="u",
                                     job_id="order-8")  # fmt: skip
        status = email_status(again)
    assert conn.llen("poststack") == 0
    assert (status.state, status.email_id) == ("sent", "em_123")
    assert ledger.is_finished(found, "order-8")
