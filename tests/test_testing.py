from __future__ import annotations

import datetime
import typing as t

import pytest
from flask import Flask
from rq.job import JobStatus

from flask_poststack import enqueue_batch
from flask_poststack import enqueue_email
from flask_poststack import PostStackError
from flask_poststack import send_batch
from flask_poststack import send_email
from flask_poststack import signals
from flask_poststack.sandbox import Sandbox
from flask_poststack.testing import clear_failures
from flask_poststack.testing import fail_next
from flask_poststack.testing import outbox
from flask_poststack.testing import record_messages
from tests.helpers import batch_requests
from tests.helpers import messages

if t.TYPE_CHECKING:
    from flask_poststack.pytest_plugin import FakeQueue
    from tests.conftest import AppFactory

KEY = "sk_test_testing0123456789"


@pytest.fixture
def app(make_app: AppFactory, poststack_sandbox: t.Any) -> t.Iterator[Flask]:
    yield make_app(
        TESTING=True,
        POSTSTACK_API_KEY=KEY,
        POSTSTACK_BASE_URL=poststack_sandbox.base_url,
        POSTSTACK_MAX_RETRIES=0,
        POSTSTACK_RETRY_INTERVALS="0,0",
    )
    clear_failures()


def test_record_messages_keeps_copies_immune_to_later_changes(app: Flask) -> None:
    recipients = ["ada@example.com"]
    tags = ["welcome"]
    with record_messages(app) as emails, app.app_context():
        send_email(to=recipients, subject="Hi", text="Hi", tags=tags)
    recipients.append("eve@example.com")
    tags.append("changed")
    emails[0].payload["subject"] = "mutated by the test"
    with record_messages(app) as again, app.app_context():
        send_email(to="bob@example.com", subject="Hi", text="Hi")
    assert emails[0].to == ["ada@example.com"]
    assert emails[0].payload["tags"] == ["welcome"]
    assert len(emails) == 1 and again[0].to == ["bob@example.com"]


def test_record_messages_with_suppression_on_and_off(
    app: Flask, poststack_sandbox: t.Any
) -> None:
    with record_messages() as emails, app.app_context():
        send_email(to="a@example.com", subject="suppressed", text="t")
        app.config["POSTSTACK_SUPPRESS_SEND"] = False
        send_email(to="a@example.com", subject="real", text="t")
    assert [e.subject for e in emails] == ["suppressed", "real"]
    assert emails[0].result is not None and emails[0].result.suppressed
    assert emails[1].result is not None
    assert emails[1].result.id == poststack_sandbox.emails[0].id
    assert [p["subject"] for p in outbox(app)] == ["suppressed"]


def test_fail_next_drives_sync_errors_even_when_suppressed(app: Flask) -> None:
    fail_next(status=429, code="monthly_limit_exceeded")
    with app.app_context():
        with pytest.raises(PostStackError) as info:
            send_email(to="a@example.com", subject="s", text="t")
        assert info.value.code == "monthly_limit_exceeded"
        assert send_email(to="a@example.com", subject="s", text="t").suppressed
    assert len(outbox(app)) == 1


def test_fail_next_drives_worker_retries(
    app: Flask, poststack_queue: FakeQueue
) -> None:
    with app.app_context():
        retried = enqueue_email(to="a@example.com", subject="retried", text="t")
        refused = enqueue_email(to="b@example.com", subject="refused", text="t")
    fail_next(status=503)
    fail_next(status=422, code="unprocessable_entity")
    poststack_queue.run()
    retried.refresh()
    refused.refresh()
    assert retried.get_status() == JobStatus.FINISHED
    assert retried.retries_left == 1
    assert refused.get_status() == JobStatus.FAILED
    assert refused.meta["poststack_error"]["code"] == "unprocessable_entity"
    assert [p["subject"] for p in outbox(app)] == ["retried"]


def test_queue_fixture_runs_jobs_through_the_task(
    app: Flask, poststack_queue: FakeQueue, poststack_outbox: list[t.Any]
) -> None:
    with app.app_context():
        job = enqueue_email(to="a@example.com", subject="queued", text="t")
    assert [j.id for j in poststack_queue.jobs] == [job.id]
    assert outbox(app) == []
    (record,) = poststack_outbox
    assert (record.status, record.job.id, record.result) == ("queued", job.id, None)
    (done,) = poststack_queue.run()
    assert str(done.return_value()).startswith("em_suppressed_")
    # The same record, followed to its send: one email, one record.
    (same,) = poststack_outbox
    assert same is record and record.status == "sent" and record.captured
    assert record.result is not None and record.result.id == done.return_value()
    assert record.kind == "enqueued"


def test_eager_mode_runs_the_job_inline(app: Flask, poststack_queue: FakeQueue) -> None:
    app.config["POSTSTACK_EAGER"] = True
    with record_messages(app) as emails, app.app_context():
        job = enqueue_email(to="a@example.com", subject="now", text="t")
    assert job.get_status() == JobStatus.FINISHED
    assert [p["subject"] for p in outbox(app)] == ["now"]
    assert poststack_queue.jobs == []
    (email,) = emails  # the job ran before it was queued: still one record
    assert (email.status, email.job, email.sender) == ("sent", job, app)


def test_one_record_per_email_sent_captured_or_queued(
    app: Flask, poststack_queue: FakeQueue, poststack_sandbox: t.Any
) -> None:
    with record_messages() as everyone, record_messages(app) as emails:
        with app.app_context():
            send_email(to="a@example.com", subject="captured", text="t")
            app.config["POSTSTACK_SUPPRESS_SEND"] = False
            send_email(to="b@example.com", subject="sent", text="t")
            app.config["POSTSTACK_SUPPRESS_SEND"] = True
            enqueue_email(to="c@example.com", subject="queued", text="t")
            enqueue_email(to="d@example.com", subject="run", text="t")
        assert [e.status for e in emails] == ["sent", "sent", "queued", "queued"]
        poststack_queue.run()
    for records in (emails, everyone):
        assert [(e.subject, e.status, e.captured) for e in records] == [
            ("captured", "sent", True),
            ("sent", "sent", False),
            ("queued", "sent", True),
            ("run", "sent", True),
        ]
        assert [e.kind for e in records] == ["sent", "sent", "enqueued", "enqueued"]
        assert all(e.sender is app for e in records)
    assert emails[1].result is not None
    assert emails[1].result.id == poststack_sandbox.emails[0].id
    assert all(e.job is not None and e.idempotency_key for e in emails[2:])


def test_a_direct_send_reusing_a_queued_key_is_its_own_record(
    app: Flask, poststack_queue: FakeQueue
) -> None:
    """The documented fallback after a hung Redis sends with the queued
    email's key: the outbox must show both, not merge them."""
    with record_messages(app) as emails, app.app_context():
        job = enqueue_email(to="a@example.com", subject="queued", text="t")
        key = job.args[0]["idempotency_key"]
        send_email(to="a@example.com", subject="direct", text="t", idempotency_key=key)
        assert [(e.subject, e.status) for e in emails] == [
            ("queued", "queued"),
            ("direct", "sent"),
        ]
        poststack_queue.run()
    assert [(e.subject, e.status) for e in emails] == [
        ("queued", "sent"),
        ("direct", "sent"),
    ]
    assert emails[0].job is not None and emails[1].job is None


def test_a_queued_email_that_fails_keeps_its_record(
    app: Flask, poststack_queue: FakeQueue
) -> None:
    with record_messages(app) as emails, app.app_context():
        enqueue_email(to="a@example.com", subject="retried", text="t")
        enqueue_email(to="b@example.com", subject="refused", text="t")
        fail_next(status=503)
        fail_next(status=422, code="unprocessable_entity")
        poststack_queue.run()
    retried, refused = emails
    assert retried.status == "sent"
    assert isinstance(retried.error, PostStackError)  # the retried failure
    assert refused.status == "failed" and refused.result is None
    assert isinstance(refused.error, PostStackError)
    assert refused.error.code == "unprocessable_entity"


def test_every_payload_field_reads_as_an_attribute(app: Flask) -> None:
    with record_messages(app) as emails, app.app_context():
        enqueue_email(
            to=["a@example.com"],
            cc="c@example.com",
            bcc=["b@example.com"],
            from_="Acme <hi@acme.test>",
            reply_to="help@acme.test",
            subject="All of it",
            html="<p>Hi</p>",
            text="Hi",
            headers={"X-Campaign": "spring"},
            tags=["welcome"],
            attachments=[{"filename": "a.txt", "content": b"hello"}],
            scheduled_at="2030-01-01T00:00:00Z",
            idempotency_key="key-all-of-it",
        )
        send_email(
            to="a@example.com", template_id="tmpl_welcome", variables={"name": "Ada"}
        )
    queued, templated = emails
    payload = queued.payload
    assert queued.to == ["a@example.com"] and queued.cc == ["c@example.com"]
    assert queued.bcc == ["b@example.com"]
    assert queued.from_ == payload["from"] == "Acme <hi@acme.test>"
    assert queued.reply_to == "help@acme.test"
    assert (queued.subject, queued.html) == ("All of it", "<p>Hi</p>")
    assert queued.text == "Hi"
    assert queued.headers == {"X-Campaign": "spring"}
    assert queued.tags == payload["tags"]
    assert queued.attachments == payload["attachments"]
    assert queued.attachments[0]["filename"] == "a.txt"
    assert queued.scheduled_at == payload["scheduled_at"]
    assert queued.idempotency_key == "key-all-of-it"
    assert (queued.template_id, queued.variables) == (None, {})
    assert templated.template_id == "tmpl_welcome"
    assert templated.variables == {"name": "Ada"}
    assert (templated.cc, templated.html, templated.headers) == ([], None, {})


def test_eager_mode_still_serializes_like_the_queue(
    app: Flask, poststack_queue: FakeQueue
) -> None:
    def add_a_datetime(sender: Flask, payload: dict[str, t.Any], **_: t.Any) -> None:
        payload["metadata"] = datetime.datetime.now()

    app.config["POSTSTACK_EAGER"] = True
    with (
        signals.before_send.connected_to(add_a_datetime),
        app.app_context(),
        pytest.raises(TypeError),
    ):
        enqueue_email(to="a@example.com", subject="s", text="t")
    assert outbox(app) == []


def test_the_plugin_from_a_users_test_module(pytester: pytest.Pytester) -> None:
    pytester.makeconftest(
        """
        import pytest
        from flask import Flask
        from flask_poststack import PostStack

        pytest_plugins = ["flask_poststack.pytest_plugin"]

        @pytest.fixture
        def app():
            app = Flask("users_app")
            app.config.update(TESTING=True, POSTSTACK_DEFAULT_FROM="a@acme.test")
            PostStack(app)

            @app.post("/signup")
            def signup():
                from flask_poststack import enqueue_email
                enqueue_email(to="ada@example.com", subject="Welcome", text="Hi")
                return "ok"

            return app
        """
    )
    pytester.makepyfile(
        """
        from flask_poststack import send_email
        from flask_poststack.testing import outbox

        def test_view_enqueues(app, poststack_queue, poststack_outbox):
            app.test_client().post("/signup")
            assert [e.kind for e in poststack_outbox] == ["enqueued"]
            poststack_queue.run()
            assert outbox(app)[0]["subject"] == "Welcome"

        def test_sandbox(poststack_sandbox):
            from flask import Flask
            from flask_poststack import PostStack
            app = Flask(__name__)
            app.config.update(
                TESTING=True,
                POSTSTACK_SUPPRESS_SEND=False,
                POSTSTACK_API_KEY="sk_test_x1234",
                POSTSTACK_BASE_URL=poststack_sandbox.base_url,
                POSTSTACK_DEFAULT_FROM="a@acme.test",
            )
            PostStack(app)
            with app.app_context():
                result = send_email(to="ada@example.com", subject="s", text="t")
            assert poststack_sandbox.emails[0].id == result.id

        def test_fail_next(app, poststack_fail_next):
            import pytest
            from poststack import PostStackError
            poststack_fail_next(status=500)
            with app.app_context(), pytest.raises(PostStackError):
                send_email(to="ada@example.com", subject="s", text="t")
        """
    )
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=3)


def test_batches_are_recorded_like_single_sends(
    batch_app: Flask, sandbox: Sandbox
) -> None:
    batch_app.config["POSTSTACK_SUPPRESS_SEND"] = True
    with record_messages(batch_app) as records, batch_app.app_context():
        send_batch(messages(2))
        enqueue_batch(messages(3))
    assert [r.kind for r in records] == ["sent"] * 2 + ["enqueued"] * 3
    assert records[0].to == ["user0@example.com"]
    assert len({r.job.id for r in records[2:] if r.job}) == 1  # one job, 3 emails


def test_fail_next_reaches_batch_requests(batch_app: Flask, sandbox: Sandbox) -> None:
    fail_next(status=503)
    with batch_app.app_context():
        items = send_batch(messages(150))
    assert not any(item.ok for item in items[:100])
    assert all(item.ok for item in items[100:])
    assert len(batch_requests(sandbox)) == 1
