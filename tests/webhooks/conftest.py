"""Helpers for the webhook tests: an app, a signal recorder, a served app."""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import threading
import typing as t

import poststack
import pytest
from flask import Flask
from flask.testing import FlaskClient
from werkzeug.serving import make_server
from werkzeug.test import TestResponse

from flask_poststack import PostStack
from flask_poststack import signals
from flask_poststack.sandbox import Sandbox
from flask_poststack.webhooks import WebhookEvent

SECRET = "whsec_test_0123456789"
OTHER = "whsec_other_9876543210"
URL = "/poststack/webhooks"
TEST_KEY = "sk_test_webhooks0123"
LIVE_KEY = "sk_live_webhooks0123"


def make_app(**config: t.Any) -> Flask:
    app = Flask(__name__)
    app.config.update(TESTING=True, POSTSTACK_WEBHOOK_SECRET=SECRET)
    app.config.update(config)
    PostStack(app)
    return app


def redis_app(redis_url: str, **config: t.Any) -> Flask:
    return make_app(POSTSTACK_REDIS_URL=redis_url, **config)


def post(
    client: FlaskClient, body: bytes, headers: dict[str, str], url: str = URL
) -> TestResponse:
    return client.post(url, data=body, headers=headers)


def hex_digest(body: bytes, secret: str, algo: str = "sha256") -> str:
    return hmac.new(secret.encode(), body, getattr(hashlib, algo)).hexdigest()


class Recorder:
    """Collects ``(sender, event)`` from ``webhook_received``."""

    def __init__(self) -> None:
        self.calls: list[tuple[t.Any, WebhookEvent]] = []
        self.lock = threading.Lock()
        self.raise_next = 0

    def receive(self, sender: t.Any, event: WebhookEvent, **extra: t.Any) -> None:
        with self.lock:
            if self.raise_next:
                self.raise_next -= 1
                raise RuntimeError("receiver failed")
            self.calls.append((sender, event))

    @contextlib.contextmanager
    def connected(self) -> t.Iterator[Recorder]:
        with signals.webhook_received.connected_to(self.receive):
            yield self

    def events(self, kind: str | None = None) -> list[WebhookEvent]:
        with self.lock:
            return [e for _, e in self.calls if kind is None or e.kind == kind]


@pytest.fixture
def recorder() -> t.Iterator[Recorder]:
    with Recorder().connected() as rec:
        yield rec


# The sandbox delivering to a served app ---------------------------------------


@contextlib.contextmanager
def serve(app: t.Callable[..., t.Any]) -> t.Iterator[str]:
    """Serve a WSGI app on 127.0.0.1 in a thread; yield its base URL."""
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.05}
    )
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


class Switch:
    """A WSGI app that forwards to whichever Flask app is current."""

    def __init__(self) -> None:
        self.app: Flask | None = None

    def __call__(self, environ: t.Any, start_response: t.Any) -> t.Any:
        assert self.app is not None
        return self.app(environ, start_response)


@pytest.fixture
def switch() -> t.Iterator[tuple[Switch, str]]:
    wsgi = Switch()
    with serve(wsgi) as base:
        yield wsgi, base + URL


def sandbox_app(
    sandbox: Sandbox, secret: str | list[str], key: str = TEST_KEY
) -> Flask:
    return make_app(
        POSTSTACK_API_KEY=key,
        POSTSTACK_BASE_URL=sandbox.base_url,
        POSTSTACK_SUPPRESS_SEND=False,
        POSTSTACK_WEBHOOK_SECRET=secret,
    )


def create_webhook(sandbox: Sandbox, url: str, events: list[str]) -> tuple[int, str]:
    with poststack.PostStack(api_key=TEST_KEY, base_url=sandbox.base_url) as client:
        created = client.webhooks.create({"url": url, "events": events})
    return created["webhook"]["id"], created["signingSecret"]


def send(app: Flask, to: str = "bob@example.com") -> str:
    sent = app.extensions["poststack"].emails.send(
        {
            "from": "Ada <ada@example.com>",
            "to": [to],
            "subject": "Hello",
            "html": "<p>Hi</p>",
        }
    )
    return t.cast(str, sent["id"])


def statuses(sandbox: Sandbox, email_id: str) -> list[int | None]:
    return [
        d["statusCode"]
        for d in sandbox.deliveries
        if d["payload"].get("data", {}).get("email_id") == email_id
    ]
