from __future__ import annotations

import dataclasses
import threading
import typing as t
from http.server import BaseHTTPRequestHandler
from http.server import ThreadingHTTPServer

import pytest
from poststack import PostStack

from flask_poststack.sandbox import Sandbox

TEST_KEY = "sk_test_sandbox_suite"
LIVE_KEY = "sk_live_sandbox_suite"


def message(**overrides: t.Any) -> dict[str, t.Any]:
    """A valid send body."""
    body: dict[str, t.Any] = {
        "from": "Ada <ada@example.com>",
        "to": ["bob@example.com"],
        "subject": "Hello",
        "html": "<p>Hi</p>",
    }
    body.update(overrides)
    return body


@pytest.fixture
def client(sandbox: Sandbox) -> t.Iterator[PostStack]:
    """A sync SDK client with a test key, pointed at the sandbox."""
    with PostStack(TEST_KEY, base_url=sandbox.base_url) as client:
        yield client


@pytest.fixture
def live_client(sandbox: Sandbox) -> t.Iterator[PostStack]:
    """A sync SDK client with a live key."""
    with PostStack(LIVE_KEY, base_url=sandbox.base_url) as client:
        yield client


@dataclasses.dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes


class Receiver:
    """A webhook endpoint on 127.0.0.1 that records what it gets and answers
    with the next status of ``statuses`` (then 200)."""

    def __init__(self) -> None:
        self.received: list[Received] = []
        self.statuses: list[int] = []
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                body = self.rfile.read(length)
                with receiver.lock:
                    receiver.received.append(
                        Received(self.path, dict(self.headers), body)
                    )
                    status = receiver.statuses.pop(0) if receiver.statuses else 200
                self.send_response(status)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, format: str, *args: t.Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(
            target=self.server.serve_forever,
            kwargs={"poll_interval": 0.05},
            daemon=True,
        )
        self.thread.start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hooks"

    def events(self) -> list[Received]:
        with self.lock:
            return list(self.received)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)


@pytest.fixture
def receiver() -> t.Iterator[Receiver]:
    recv = Receiver()
    yield recv
    recv.close()
