"""The admin API refuses what a page of another origin can send, and every
route refuses a ``Host`` that is not loopback (DNS rebinding). Raw HTTP, so
that each request carries exactly the headers a browser would."""

from __future__ import annotations

import http.client
import json
import socket
import typing as t

import pytest

from flask_poststack.sandbox import Sandbox

JSON = {"Content-Type": "application/json"}
#: What a cross-origin ``fetch(url, {method: "POST", mode: "no-cors", body})``
#: sends: a CORS-safelisted content type (or none).
NO_CORS = ["text/plain;charset=UTF-8", "application/x-www-form-urlencoded", None]


def raw(
    sandbox: Sandbox,
    method: str,
    path: str,
    body: bytes = b"",
    headers: dict[str, str] | None = None,
) -> tuple[int, t.Any]:
    conn = http.client.HTTPConnection("127.0.0.1", sandbox.port, timeout=10)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        response = conn.getresponse()
        data = response.read()
        kind = response.getheader("Content-Type", "")
        return response.status, json.loads(data) if "json" in kind else data
    finally:
        conn.close()


@pytest.mark.parametrize("content_type", NO_CORS)
def test_state_changing_admin_requests_need_json(
    sandbox: Sandbox, content_type: str | None
) -> None:
    headers = {} if content_type is None else {"Content-Type": content_type}
    sandbox.faults.add("error", status=500, path="/nothing")
    before = sandbox.config.as_dict()
    latency = json.dumps({"latency": 5}).encode()
    fault = json.dumps({"kind": "error", "status": 503}).encode()
    for method, path, body in [
        ("POST", "/_sandbox/reset", b""),
        ("POST", "/_sandbox/config", latency),
        ("PATCH", "/_sandbox/config", latency),
        ("POST", "/_sandbox/faults", fault),
        ("DELETE", "/_sandbox/faults", b""),
        ("DELETE", "/_sandbox/faults/1", b""),
        ("POST", "/_sandbox/outcomes", b'{"outcome": "bounced"}'),
        ("DELETE", "/_sandbox/outcomes", b""),
        ("POST", "/_sandbox/held/release", b""),
        ("PUT", "/_sandbox/config", latency),
    ]:
        status, answer = raw(sandbox, method, path, body, headers)
        assert status == 403, (method, path)
        assert answer["code"] == "forbidden"
        assert "application/json" in answer["error"]
    # Nothing changed.
    assert sandbox.config.as_dict() == before
    assert [r.to_dict()["path"] for r in sandbox.faults.rules] == ["/nothing"]
    assert sandbox.outcomes.rules == []


def test_the_same_requests_with_json_go_through(sandbox: Sandbox) -> None:
    charset = {"Content-Type": "Application/JSON; charset=utf-8"}
    status, answer = raw(
        sandbox, "POST", "/_sandbox/config", b'{"latency": 0}', charset
    )
    assert (status, answer["latency"]) == (200, 0)
    status, _ = raw(
        sandbox,
        "POST",
        "/_sandbox/faults",
        b'{"kind": "error", "status": 503, "path": "/x"}',
        JSON,
    )
    assert status == 201 and len(sandbox.faults.rules) == 1
    assert raw(sandbox, "DELETE", "/_sandbox/faults", headers=JSON)[0] == 200
    assert sandbox.faults.rules == []
    assert raw(sandbox, "POST", "/_sandbox/reset", headers=JSON) == (
        200,
        {"success": True},
    )
    # Reads need no content type.
    assert raw(sandbox, "GET", "/_sandbox/stats?keys=0")[0] == 200


@pytest.mark.parametrize(
    "host",
    [
        "attacker.example",
        "attacker.example:{port}",
        "127.0.0.1.nip.io",
        "",
        "[::1]evil",
        "[::1].attacker.example:{port}",
        "localhost:{port}x",
    ],
)
@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/"),
        ("GET", "/inbox/em_1"),
        ("GET", "/_sandbox/health"),
        ("POST", "/_sandbox/reset"),
        ("GET", "/emails"),
        ("POST", "/emails"),
    ],
)
def test_a_host_that_is_not_loopback_is_refused(
    sandbox: Sandbox, host: str, method: str, path: str
) -> None:
    sandbox.configure(latency=0.0)
    headers = {**JSON, "Host": host.format(port=sandbox.port)}
    headers["Authorization"] = "Bearer sk_test_rebinding"
    status, answer = raw(sandbox, method, path, b"{}", headers)
    assert status == 421
    assert answer["code"] == "misdirected_request"
    assert sandbox.requests == []  # not even logged as an API request


def test_no_host_header_is_refused(sandbox: Sandbox) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", sandbox.port, timeout=10)
    try:
        conn.putrequest("GET", "/_sandbox/health", skip_host=True)
        conn.endheaders()
        assert conn.getresponse().status == 421
    finally:
        conn.close()


def test_a_host_folded_onto_a_second_line_is_refused(sandbox: Sandbox) -> None:
    # An obsolete line fold keeps its tab in the value: not exactly a host.
    with socket.create_connection(("127.0.0.1", sandbox.port), timeout=10) as conn:
        conn.sendall(
            b"GET /_sandbox/health HTTP/1.1\r\nHost:\r\n\tlocalhost\r\n"
            b"Connection: close\r\n\r\n"
        )
        assert conn.recv(64).startswith(b"HTTP/1.1 421 ")


@pytest.mark.parametrize(
    "host",
    [
        "127.0.0.1",
        "127.8.9.10:{port}",
        "127.0.0.1:{port}",
        "localhost",
        "LocalHost:{port}",
        "[::1]:{port}",
    ],
)
def test_loopback_hosts_are_answered(sandbox: Sandbox, host: str) -> None:
    headers = {"Host": host.format(port=sandbox.port)}
    assert raw(sandbox, "GET", "/_sandbox/health", headers=headers)[0] == 200
    status, page = raw(sandbox, "GET", "/", headers=headers)
    assert status == 200 and b"<html" in page.lower()
