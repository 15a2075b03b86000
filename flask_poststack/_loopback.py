"""What counts as "this machine": the one rule for loopback addresses,
``Host`` headers and ``Origin`` values, used by the sandbox and by the
preview pages to refuse remote clients and DNS rebinding."""

from __future__ import annotations

import collections.abc as cabc
import ipaddress
import re

#: ``host[:port]``, nothing else: a bracketed IPv6 literal or a plain name
#: or IPv4 literal, then an optional port (no spaces, no trailing text).
_HOST = re.compile(r"(\[[0-9a-f:.]+\]|[a-z0-9.-]+)(?::[0-9]{1,5})?")
#: The headers a proxy names the real client in.
_FORWARDING = ("x-forwarded-for", "x-real-ip", "forwarded")


def is_loopback_address(address: str | None) -> bool:
    """Whether an IP address (no brackets, no port) is a loopback one:
    ``127.0.0.0/8`` or ``::1``."""
    try:
        return address is not None and ipaddress.ip_address(address).is_loopback
    except ValueError:
        return False


def host_name(value: str) -> str | None:
    """A ``Host`` header's name, lower-cased, without its port (``[::1]``
    keeps its brackets); ``None`` unless the header is exactly
    ``host[:port]``."""
    value = value.lower()
    match = _HOST.fullmatch(value)
    return match.group(1) if match else None


def is_loopback_name(name: str) -> bool:
    """Whether a host name (as :func:`host_name` gives it) is this machine:
    ``localhost``, ``127.0.0.0/8`` or ``[::1]``. Only IP literals and
    ``localhost``: no other name is safe from DNS rebinding."""
    if name == "localhost":
        return True
    if name.startswith("["):
        inner = name[1:-1]
        return ":" in inner and is_loopback_address(inner)
    return ":" not in name and is_loopback_address(name)


def is_loopback_host(value: str, also: cabc.Set[str] = frozenset()) -> bool:
    """Whether a ``Host`` header is exactly a loopback ``host[:port]`` (or
    one of the names in ``also``, written as :func:`host_name` gives them)."""
    name = host_name(value)
    return name is not None and (is_loopback_name(name) or name in also)


def is_loopback_origin(origin: str) -> bool:
    """Whether an ``Origin`` header is ``http(s)://`` a loopback host."""
    scheme, sep, host = origin.partition("://")
    return bool(sep) and scheme in ("http", "https") and is_loopback_host(host)


def _forwarded_for(value: str) -> list[str]:
    """The ``for=`` values of an RFC 7239 ``Forwarded`` header."""
    found = []
    for element in value.split(","):
        for pair in element.split(";"):
            key, _, item = pair.partition("=")
            if key.strip().lower() == "for":
                found.append(item.strip().strip('"'))
    return found


def _address(node: str) -> str:
    """A forwarded node without its port or brackets."""
    node = node.strip()
    if node.startswith("["):
        return node[1:].partition("]")[0]
    return node.partition(":")[0] if node.count(":") == 1 else node


def forwarded_from_elsewhere(headers: cabc.Iterable[tuple[str, str]]) -> bool:
    """Whether ``X-Forwarded-For``, ``X-Real-IP`` or ``Forwarded`` names a
    client that is not loopback: a proxy on this machine passing on a
    remote request. Anything in them that is not a loopback address counts
    as remote (``unknown``, an obfuscated ``_node``, garbage)."""
    for key, value in headers:
        key = key.lower()
        if key not in _FORWARDING:
            continue
        nodes = _forwarded_for(value) if key == "forwarded" else value.split(",")
        for node in nodes:
            if node.strip() and not is_loopback_address(_address(node)):
                return True
    return False
