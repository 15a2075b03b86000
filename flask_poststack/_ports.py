"""Whether a local port can be listened on, checked before anything starts."""

from __future__ import annotations

import os
import socket

__all__ = ["port_taken"]


def port_taken(port: int) -> str | None:
    """Why 127.0.0.1:``port`` cannot be listened on, or ``None``."""
    if port == 0:
        return None
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        # As redis-server and the sandbox bind: a port whose last connections
        # linger in TIME-WAIT (a dev just SIGKILLed) is free to listen on.
        # Not on Windows, where SO_REUSEADDR lets a bind steal a live port.
        if os.name != "nt":
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError as exc:
            return exc.strerror or str(exc)
    return None
