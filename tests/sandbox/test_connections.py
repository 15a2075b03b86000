"""Clients that go away mid-connection."""

from __future__ import annotations

import logging
import socket
import struct

import httpx
import pytest

from flask_poststack.sandbox import Sandbox

REQUEST = (
    b"GET /emails HTTP/1.1\r\nHost: 127.0.0.1\r\n"
    b"Authorization: Bearer sk_test_connections\r\n\r\n"
)


def reset(sock: socket.socket) -> None:
    """Close with an RST, as the kernel does for a killed process's
    connections with unread data."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


def test_client_resets_are_quiet(
    capfd: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="flask_poststack.sandbox")

    def quiet() -> list[logging.LogRecord]:
        return [
            r
            for r in caplog.records
            if r.levelno == logging.DEBUG and "closed the connection" in r.getMessage()
        ]

    with Sandbox() as sb:
        # An idle keep-alive connection: the server is waiting to read.
        idle = socket.create_connection(("127.0.0.1", sb.port))
        idle.sendall(REQUEST)
        assert idle.recv(65536).startswith(b"HTTP/1.1 200 ")
        reset(idle)
        # A reset while the server is still answering: it writes to a dead
        # socket.
        sb.faults.add("latency", delay=0.2, times=1)
        busy = socket.create_connection(("127.0.0.1", sb.port))
        busy.sendall(REQUEST)
        reset(busy)
        assert sb.wait_for(lambda: len(quiet()) == 2, timeout=5)
    err = capfd.readouterr().err
    assert "Traceback" not in err and "Exception occurred" not in err


def test_handler_errors_still_print_a_traceback(
    sandbox: Sandbox,
    capfd: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def broken(req: object) -> None:
        raise RuntimeError("a sandbox bug")

    monkeypatch.setattr(sandbox._admin, "handle", broken)
    with (
        httpx.Client(base_url=sandbox.base_url) as raw,
        pytest.raises(httpx.TransportError),
    ):
        raw.get("/_sandbox/stats")
    err = capfd.readouterr().err
    assert "Traceback" in err and "RuntimeError: a sandbox bug" in err
