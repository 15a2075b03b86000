"""send_email_async from Flask's async views: one AsyncPostStack per event
loop, never shared across loops, closed with its loop; the pipeline's
validation, signals and result."""

from __future__ import annotations

import asyncio
import threading
import typing as t

import poststack
import pytest
from flask import Flask

from flask_poststack import ConfigurationError
from flask_poststack import get_state
from flask_poststack import InvalidEmailError
from flask_poststack import send_email_async
from flask_poststack import signals
from flask_poststack.sandbox import Sandbox

if t.TYPE_CHECKING:
    from tests.conftest import AppFactory

KEY = "sk_test_async0123456789"
EMAIL: dict[str, t.Any] = {"to": "ada@example.com", "subject": "Hi", "text": "Hi"}


@pytest.fixture
def app(make_app: AppFactory, sandbox: Sandbox) -> Flask:
    return make_app(
        TESTING=False, POSTSTACK_API_KEY=KEY, POSTSTACK_BASE_URL=sandbox.base_url
    )


def is_closed(client: poststack.AsyncPostStack) -> bool:
    return bool(client._client._httpx.is_closed)


def test_async_views_get_a_client_per_request_loop(
    app: Flask, sandbox: Sandbox
) -> None:
    seen: list[tuple[asyncio.AbstractEventLoop, poststack.AsyncPostStack]] = []

    @app.post("/signup")
    async def signup() -> dict[str, str]:
        first = await send_email_async(**EMAIL)
        second = await send_email_async(**{**EMAIL, "subject": "Again"})
        client = await get_state().loop_clients.for_send()
        seen.append((asyncio.get_running_loop(), client))
        assert not is_closed(client)
        return {"first": first.id, "second": second.id}

    with app.test_client() as browser:
        answers = [browser.post("/signup").get_json() for _ in range(2)]
    ids = {answer[key] for answer in answers for key in ("first", "second")}
    assert ids == {email.id for email in sandbox.emails}
    assert len(ids) == 4
    (loop1, client1), (loop2, client2) = seen
    assert loop1 is not loop2  # Flask runs each async view in its own loop
    assert client1 is not client2  # so each got its own client...
    assert is_closed(client1) and is_closed(client2)  # ...closed with its loop


def test_one_loop_reuses_its_client_and_another_loop_never_sees_it(
    app: Flask, sandbox: Sandbox
) -> None:
    clients = get_state(app).loop_clients
    mine: list[poststack.AsyncPostStack] = []
    theirs: list[poststack.AsyncPostStack] = []
    started, release = threading.Event(), threading.Event()

    async def long_lived() -> None:  # a loop that lives on, as under Quart
        with app.app_context():
            await send_email_async(**EMAIL)
            theirs.append(await clients.for_send())
            started.set()
            while not release.is_set():
                await asyncio.sleep(0.01)
            await send_email_async(**EMAIL)
            theirs.append(await clients.for_send())

    thread = threading.Thread(target=asyncio.run, args=(long_lived(),))
    thread.start()
    assert started.wait(10)

    async def request() -> None:
        with app.app_context():
            await send_email_async(**EMAIL)
            mine.append(await clients.for_send())
            await send_email_async(**EMAIL)
            mine.append(await clients.for_send())

    asyncio.run(request())
    release.set()
    thread.join(10)
    assert mine[0] is mine[1] and theirs[0] is theirs[1]
    assert mine[0] is not theirs[0]
    assert is_closed(mine[0]) and is_closed(theirs[0])
    assert len(sandbox.emails) == 4


def test_the_same_validation_signals_and_result(app: Flask, sandbox: Sandbox) -> None:
    events: list[str] = []

    def before(sender: Flask, payload: dict[str, t.Any], **extra: t.Any) -> None:
        payload["tags"] = ["async"]
        events.append("before")

    def sent(sender: Flask, payload: dict[str, t.Any], **extra: t.Any) -> None:
        events.append(f"sent {extra['result'].id}")

    async def run() -> t.Any:
        with app.app_context():
            with pytest.raises(InvalidEmailError) as info:
                await send_email_async(**{**EMAIL, "to": "not an address"})
            assert info.value.argument == "to"
            return await send_email_async(**EMAIL)

    with (
        signals.before_send.connected_to(before, app),
        signals.email_sent.connected_to(sent, app),
    ):
        result = asyncio.run(run())
    assert result.id.startswith("em_") and result.test_mode is True
    assert events == ["before", f"sent {result.id}"]
    assert sandbox.get_email(result.id).input.tags == ["async"]
    assert sandbox.stats["requests"] == 1


def test_suppressed_and_keyless_apps(make_app: AppFactory, sandbox: Sandbox) -> None:
    testing = make_app()  # TESTING: suppressed
    keyless = make_app(TESTING=False, POSTSTACK_SUPPRESS_SEND=False)

    async def run(app: Flask) -> t.Any:
        with app.app_context():
            return await send_email_async(**EMAIL)

    assert asyncio.run(run(testing)).suppressed is True
    assert get_state(testing).outbox[0]["subject"] == "Hi"
    with pytest.raises(ConfigurationError) as info:
        asyncio.run(run(keyless))
    assert info.value.key == "POSTSTACK_API_KEY"
    assert sandbox.stats["requests"] == 0


def test_an_api_error_is_raised_logged_and_signalled(
    app: Flask, sandbox: Sandbox, caplog: pytest.LogCaptureFixture
) -> None:
    sandbox.faults.add("error", status=422, code="unprocessable_entity", path="/emails")
    failed: list[Exception] = []

    def on_failed(sender: Flask, exception: Exception, **extra: t.Any) -> None:
        failed.append(exception)

    async def run() -> None:
        with app.app_context():
            await send_email_async(**EMAIL)

    listening = signals.email_failed.connected_to(on_failed, app)
    with listening, pytest.raises(poststack.PostStackError) as info:
        asyncio.run(run())
    assert info.value.status_code == 422
    assert failed == [info.value]
    assert "PostStack send failed: status=422" in caplog.text
