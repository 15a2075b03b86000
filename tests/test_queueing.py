from __future__ import annotations

import json
import typing as t
import zlib
from datetime import datetime
from datetime import timedelta
from datetime import timezone

import pytest
import redis
from flask import Flask
from rq import Queue
from rq.job import Job
from rq.job import JobStatus
from rq.registry import ScheduledJobRegistry
from rq.serializers import JSONSerializer

from flask_poststack import enqueue_batch
from flask_poststack import enqueue_email
from flask_poststack import enqueue_many
from flask_poststack import InvalidEmailError
from flask_poststack import PostStack
from flask_poststack import QueueUnavailableError
from flask_poststack.redis_server import free_port
from flask_poststack.sandbox import Sandbox
from tests.helpers import batch_requests
from tests.helpers import messages
from tests.helpers import work

if t.TYPE_CHECKING:
    from tests.conftest import AppFactory

KEY = "sk_test_enqueue0123456789"


@pytest.fixture
def app(make_app: AppFactory, redis_url: str) -> Flask:
    return make_app(
        TESTING=False,
        POSTSTACK_API_KEY=KEY,
        POSTSTACK_REDIS_URL=redis_url,
    )


@pytest.fixture
def conn(redis_url: str) -> t.Iterator[redis.Redis]:
    conn = redis.Redis.from_url(redis_url)
    yield conn
    conn.close()


def queue(conn: redis.Redis, name: str = "poststack") -> Queue:
    return Queue(name, connection=conn, serializer=JSONSerializer)


def raw_payload(conn: redis.Redis, job: Job) -> t.Any:
    """The job's arguments exactly as stored: RQ's zlib'd JSON, nothing pickled."""
    data = conn.hget(job.key, "data")
    assert isinstance(data, bytes)
    return json.loads(zlib.decompress(data))


def test_enqueue_returns_the_job_with_a_json_payload(
    app: Flask, conn: redis.Redis
) -> None:
    with app.app_context():
        job = enqueue_email(to="ada@example.com", subject="Hi", html="<p>Hi</p>")
    assert isinstance(job, Job)
    assert queue(conn).job_ids == [job.id]
    func, _, args, kwargs = raw_payload(conn, job)
    assert func == "flask_poststack.tasks.send_payload"
    (payload,) = args
    assert kwargs == {}
    assert payload["from"] == "hello@acme.test"
    assert payload["to"] == ["ada@example.com"]
    assert payload["idempotency_key"].startswith("fps-")
    assert job.meta["idempotency_key"] == payload["idempotency_key"]
    assert job.retries_left == 5


def test_nothing_in_redis_contains_the_key_or_the_body_twice(
    app: Flask, conn: redis.Redis
) -> None:
    with app.app_context():
        job = enqueue_email(
            to="ada@example.com", subject="Hi", html="<p>SECRETBODY</p>"
        )
    for key in conn.scan_iter():
        values: list[bytes] = (
            [t.cast(bytes, v) for v in conn.hgetall(key).values()]
            if conn.type(key) == b"hash"
            else [t.cast(bytes, conn.dump(key))]
        )
        for value in values:
            assert KEY.encode() not in value
            assert KEY.encode() not in zlib_or_raw(value)
    assert "SECRETBODY" not in (job.description or "")


def zlib_or_raw(value: bytes) -> bytes:
    try:
        return zlib.decompress(value)
    except zlib.error:
        return value


def test_each_email_gets_its_own_key_and_the_callers_key_is_kept(
    app: Flask, conn: redis.Redis
) -> None:
    with app.app_context():
        one = enqueue_email(to="a@example.com", subject="s", text="t")
        two = enqueue_email(to="a@example.com", subject="s", text="t")
        mine = enqueue_email(
            to="a@example.com", subject="s", text="t", idempotency_key="order-7"
        )
    keys = [raw_payload(conn, job)[2][0]["idempotency_key"] for job in (one, two, mine)]
    assert keys[0] != keys[1]
    assert keys[2] == "order-7"


def test_same_job_id_does_not_queue_a_second_job(app: Flask, conn: redis.Redis) -> None:
    with app.app_context():
        first = enqueue_email(
            to="a@example.com", subject="s", text="t", job_id="welcome-7"
        )
        again = enqueue_email(
            to="a@example.com", subject="s", text="t", job_id="welcome-7"
        )
    assert first.id == again.id == "welcome-7"
    assert queue(conn).job_ids == ["welcome-7"]
    assert raw_payload(conn, first)[2][0]["idempotency_key"] == "job-welcome-7"


@pytest.mark.parametrize(
    ("kwargs", "argument"),
    [
        ({"to": "nope"}, "to"),
        ({"job_id": "has space"}, "job_id"),
        ({"delay": -1}, "delay"),
        ({"run_at": datetime(2030, 1, 1)}, "run_at"),
        ({"delay": 5, "run_at": datetime(2030, 1, 1, tzinfo=timezone.utc)}, "delay"),
    ],
)
def test_bad_input_queues_nothing(
    app: Flask, conn: redis.Redis, kwargs: dict[str, t.Any], argument: str
) -> None:
    email = {"to": "a@example.com", "subject": "s", "text": "t", **kwargs}
    with app.app_context(), pytest.raises(InvalidEmailError) as info:
        enqueue_email(**email)
    assert info.value.argument == argument
    assert conn.dbsize() == 0


def test_delay_and_run_at_go_to_the_scheduled_registry(
    app: Flask, conn: redis.Redis
) -> None:
    at = datetime.now(timezone.utc) + timedelta(hours=1)
    with app.app_context():
        delayed = enqueue_email(to="a@example.com", subject="s", text="t", delay=60)
        timed = enqueue_email(to="a@example.com", subject="s", text="t", run_at=at)
    registry = ScheduledJobRegistry(queue=queue(conn))
    assert set(registry.get_job_ids()) == {delayed.id, timed.id}
    assert queue(conn).job_ids == []
    scheduled = registry.get_scheduled_time(timed)
    assert abs((scheduled - at).total_seconds()) < 1


def test_queue_options(app: Flask, conn: redis.Redis) -> None:
    with app.app_context():
        job = enqueue_email(
            to="a@example.com",
            subject="s",
            text="t",
            queue="urgent",
            job_timeout=15,
            result_ttl=60,
            failure_ttl=120,
        )
    assert queue(conn, "urgent").job_ids == [job.id]
    assert (job.timeout, job.result_ttl, job.failure_ttl) == (15, 60, 120)


def test_unreachable_redis_is_a_clear_error_and_nothing_is_lost_silently() -> None:
    url = f"redis://:hunter2@127.0.0.1:{free_port()}/0"
    app = Flask(__name__)
    app.config.update(POSTSTACK_API_KEY=KEY, POSTSTACK_REDIS_URL=url)
    PostStack(app)
    with app.app_context(), pytest.raises(QueueUnavailableError) as info:
        enqueue_email(from_="a@acme.test", to="b@example.com", subject="s", text="t")
    assert isinstance(info.value, ConnectionError)
    assert "hunter2" not in str(info.value)
    assert f"127.0.0.1:{url.rsplit(':', 1)[1]}" in str(info.value)
    assert "Nothing was queued" in str(info.value)
    # Refused before anything was sent, and the error names what it was given.
    assert info.value.may_have_been_queued is False
    assert info.value.idempotency_key and info.value.idempotency_key.startswith("fps-")
    assert info.value.job_id and len(info.value.job_ids) == 1


@pytest.mark.parametrize("function", [enqueue_many, enqueue_batch])
def test_a_refused_enqueue_of_many_names_every_key_and_job(function: t.Any) -> None:
    app = Flask(__name__)
    redis_url = f"redis://127.0.0.1:{free_port()}/0"
    app.config.update(POSTSTACK_API_KEY=KEY, POSTSTACK_REDIS_URL=redis_url)
    PostStack(app)
    emails = messages(3, from_="a@acme.test")
    emails[1]["idempotency_key"] = "mine-1"
    with app.app_context(), pytest.raises(QueueUnavailableError) as info:
        function(emails)
    err = info.value
    assert err.may_have_been_queued is False and "Nothing was queued" in str(err)
    assert len(err.idempotency_keys) == 3 and err.idempotency_keys[1] == "mine-1"
    assert len(err.job_ids) == (3 if function is enqueue_many else 1)


def test_a_timeout_after_the_write_says_it_may_have_been_queued(
    app: Flask, conn: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A read timeout does not mean the command was not run (issue 17)."""
    from redis.connection import Connection

    real = Connection.read_response

    def hang_after_sending(self: t.Any, *args: t.Any, **kwargs: t.Any) -> t.Any:
        real(self, *args, **kwargs)  # Redis ran it; the answer comes too late
        raise redis.TimeoutError("Timeout reading from socket")

    with app.app_context():
        enqueue_email(to="b@example.com", subject="s", text="t")  # a warm pool
        monkeypatch.setattr(Connection, "read_response", hang_after_sending)
        with pytest.raises(QueueUnavailableError) as info:
            enqueue_email(
                to="b@example.com", subject="s", text="t", idempotency_key="k1"
            )
        monkeypatch.undo()
    err = info.value
    assert err.may_have_been_queued is True
    assert "may have been queued" in str(err) and "Nothing was queued" not in str(err)
    assert err.idempotency_key == "k1"
    assert err.job_id is not None
    job = Job.fetch(err.job_id, connection=conn, serializer=JSONSerializer)
    assert job.meta["idempotency_key"] == "k1"  # it was queued, under that id


@pytest.mark.parametrize(
    ("kwargs", "argument"),
    [
        ({"delay": float("nan")}, "delay"),
        ({"delay": float("inf")}, "delay"),
        ({"delay": 1e20}, "delay"),
        ({"job_timeout": "abc"}, "job_timeout"),
        ({"job_timeout": -5}, "job_timeout"),
        ({"job_timeout": True}, "job_timeout"),
        ({"result_ttl": "x"}, "result_ttl"),
        ({"failure_ttl": 1.5}, "failure_ttl"),
        ({"queue": 5}, "queue"),
        ({"queue": " "}, "queue"),
        ({"text": "broken \ud800 text"}, "text"),
        ({"headers": {"X-A": "\udfff"}}, "headers"),
    ],
)
def test_queue_options_and_unencodable_text_are_named(
    app: Flask, conn: redis.Redis, kwargs: dict[str, t.Any], argument: str
) -> None:
    email = {"to": "a@example.com", "subject": "s", "text": "t", **kwargs}
    with app.app_context(), pytest.raises(InvalidEmailError) as info:
        enqueue_email(**email)
    assert info.value.argument == argument
    assert conn.dbsize() == 0


def test_the_queue_is_reused_and_follows_a_swapped_redis(app: Flask) -> None:
    import fakeredis

    from flask_poststack import get_state

    state = get_state(app)
    first = state.queue()
    assert state.queue() is first
    assert state.queue("other") is not first
    fake = fakeredis.FakeRedis()
    with state.use_redis(fake):
        swapped = state.queue()
        assert swapped is not first and swapped.connection is fake
        app.config["POSTSTACK_EAGER"] = True
        assert state.queue().is_async is False
    fake.close()


def test_one_transaction_per_email(app: Flask, conn: redis.Redis) -> None:
    # rq's own enqueue makes two round trips (the queue's registration, then
    # the job); enqueue_email sends both in one MULTI/EXEC.
    def transactions() -> int:
        stats = conn.info("commandstats")
        return int(stats.get("cmdstat_exec", {}).get("calls", 0))

    with app.app_context():
        enqueue_email(to="a@example.com", subject="Hi", text="Hello")  # warm up
        before = transactions()
        job = enqueue_email(to="b@example.com", subject="Hi", text="Hello")
        after = transactions()
    assert after - before == 1
    assert queue(conn).job_ids[-1] == job.id
    assert conn.sismember("rq:queues", "rq:queue:poststack")


# Many emails: enqueue_many and enqueue_batch ------------------------------------


def test_enqueue_many_is_one_job_per_email(
    batch_app: Flask, sandbox: Sandbox, redis_url: str
) -> None:
    with batch_app.app_context():
        jobs = enqueue_many(messages(30))
    assert len(jobs) == 30
    assert len({job.meta["idempotency_key"] for job in jobs}) == 30
    work(redis_url)
    assert len(sandbox.emails) == 30


def test_enqueue_batch_makes_one_job_per_100(
    batch_app: Flask, sandbox: Sandbox, redis_url: str
) -> None:
    with batch_app.app_context():
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
