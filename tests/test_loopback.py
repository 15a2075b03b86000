"""The one loopback rule: Host headers, Origins and proxy headers."""

from __future__ import annotations

import pytest

from flask_poststack._loopback import forwarded_from_elsewhere
from flask_poststack._loopback import is_loopback_host
from flask_poststack._loopback import is_loopback_origin


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("localhost", True),
        ("LOCALHOST:5000", True),
        ("127.0.0.1", True),
        ("127.255.0.9:80", True),
        ("[::1]", True),
        ("[::1]:8025", True),
        ("[::1]evil", False),
        ("[::1]:80evil", False),
        (" localhost", False),
        ("\tlocalhost", False),
        ("localhost ", False),
        ("localhost\n", False),
        ("[127.0.0.1]", False),
        ("::1", False),
        ("128.0.0.1", False),
        ("127.0.0.1.nip.io", False),
        ("localhost.attacker.example", False),
        ("localhost:", False),
        ("", False),
    ],
)
def test_a_host_is_loopback_only_exactly(host: str, loopback: bool) -> None:
    assert is_loopback_host(host) is loopback


def test_a_bound_name_is_answered_too() -> None:
    assert is_loopback_host("192.168.1.5:80", frozenset({"192.168.1.5"}))
    assert not is_loopback_host("192.168.1.5 :80", frozenset({"192.168.1.5"}))


@pytest.mark.parametrize(
    ("origin", "loopback"),
    [
        ("http://localhost:5000", True),
        ("https://[::1]", True),
        ("http://attacker.example", False),
        ("null", False),
        ("file://localhost", False),
        ("", False),
    ],
)
def test_origins(origin: str, loopback: bool) -> None:
    assert is_loopback_origin(origin) is loopback


@pytest.mark.parametrize(
    ("headers", "remote"),
    [
        ([], False),
        ([("Accept", "203.0.113.9")], False),
        ([("X-Forwarded-For", "127.0.0.1, ::1")], False),
        ([("x-forwarded-for", "127.0.0.1,203.0.113.9")], True),
        ([("X-Real-IP", "203.0.113.9")], True),
        ([("X-Real-IP", "127.0.0.1:4000")], False),
        ([("Forwarded", "proto=https;host=example.com")], False),
        ([("Forwarded", 'for="[::1]:80";proto=http, for=127.0.0.1')], False),
        ([("Forwarded", "for=_hidden")], True),
        ([("Forwarded", "For=198.51.100.1:443")], True),
        ([("X-Forwarded-For", "garbage")], True),
    ],
)
def test_proxy_headers_naming_a_remote_client(
    headers: list[tuple[str, str]], remote: bool
) -> None:
    assert forwarded_from_elsewhere(headers) is remote
