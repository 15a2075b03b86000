"""The HTTP server.

Why ``http.server`` and not Flask/werkzeug: the sandbox must answer each
request in ONE ``sendall`` (headers and body together, with ``TCP_NODELAY``)
so that Nagle's algorithm and the client's delayed ACK never add ~40 ms to a
request, and it must be able to misbehave at the socket level: reset a
connection before or after processing, or cut a response off after its
headers. A small ``BaseHTTPRequestHandler`` that builds every response as one
bytes buffer gives both with no extra dependency; werkzeug's server would
hide the socket behind its WSGI layer. Connections are HTTP/1.1 keep-alive
(the SDK reuses them), one thread per connection.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import struct
import sys
import threading
import time
import typing as t
import urllib.parse
from http.server import BaseHTTPRequestHandler
from http.server import ThreadingHTTPServer

from ._util import random_id
from .messages import error_response
from .messages import Request

if t.TYPE_CHECKING:
    from .app import App

log = logging.getLogger("flask_poststack.sandbox")


class Server(ThreadingHTTPServer):
    """A threaded server that keeps track of its open connections so that
    :meth:`close_connections` can end them on stop."""

    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 256

    def __init__(
        self, address: tuple[str, int], app: App, max_body: t.Callable[[], int]
    ) -> None:
        self.app = app
        self.max_body = max_body
        self._conn_lock = threading.Lock()
        self._connections: set[socket.socket] = set()
        self._reset: set[socket.socket] = set()
        super().__init__(address, Handler)

    def track(self, conn: socket.socket, *, add: bool) -> None:
        with self._conn_lock:
            if add:
                self._connections.add(conn)
            else:
                self._connections.discard(conn)

    def mark_reset(self, conn: socket.socket) -> None:
        """Close ``conn`` with an RST instead of a FIN."""
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        with self._conn_lock:
            self._reset.add(conn)

    def shutdown_request(self, request: t.Any) -> None:
        with self._conn_lock:
            reset = request in self._reset
            self._reset.discard(request)
        if reset:
            # A plain close: shutdown() would send a FIN before the RST.
            request.close()
        else:
            super().shutdown_request(request)

    def handle_error(self, request: t.Any, client_address: t.Any) -> None:
        """Print a handler's traceback, as ``socketserver`` does, unless the
        client just went away (killed, or reset a keep-alive connection)."""
        exc = sys.exc_info()[1]
        if isinstance(exc, ConnectionError):
            log.debug("client %s closed the connection: %s", client_address, exc)
            return
        super().handle_error(request, client_address)

    def close_connections(self, timeout: float = 2.0) -> None:
        """Shut down every open connection and wait (bounded) for their
        threads to let go of them."""
        with self._conn_lock:
            open_now = list(self._connections)
        for conn in open_now:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._conn_lock:
                if not self._connections:
                    return
            time.sleep(0.01)


class Handler(BaseHTTPRequestHandler):
    """Reads a request, asks the app, writes the answer in one send."""

    server: Server
    protocol_version = "HTTP/1.1"
    server_version = "PostStackSandbox/1"
    disable_nagle_algorithm = True

    def setup(self) -> None:
        super().setup()
        self.server.track(self.connection, add=True)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.server.track(self.connection, add=False)

    def parse_request(self) -> bool:
        # Called as soon as the request line is read: the sandbox's latency
        # counts from here, so it covers reading the headers and body too.
        self.arrived = time.monotonic()
        return super().parse_request()

    def log_message(self, format: str, *args: t.Any) -> None:
        pass  # the app keeps its own request log

    def do_GET(self) -> None:
        self._serve()

    do_POST = do_PATCH = do_PUT = do_DELETE = do_GET

    def _serve(self) -> None:
        request_id = random_id("req_", 24)
        length_header = self.headers.get("Content-Length") or "0"
        if not length_header.isdigit() or int(length_header) > self.server.max_body():
            self.close_connection = True
            too_large = error_response(
                413, "Request body too large", "payload_too_large"
            )
            self.wfile.write(too_large.encode(request_id, close=True))
            return
        body = self.rfile.read(int(length_header)) if int(length_header) else b""
        url = urllib.parse.urlsplit(self.path)
        query = dict(urllib.parse.parse_qsl(url.query, keep_blank_values=True))
        headers = {name.title(): value for name, value in self.headers.items()}
        req = Request(
            self.command,
            url.path or "/",
            query,
            headers,
            body,
            request_id,
            arrived=self.arrived,
        )
        reply = self.server.app.handle(req)
        response = reply.response
        if reply.drop == "reset" or response is None:
            self.close_connection = True
            self.server.mark_reset(self.connection)
            return
        if reply.drop == "close":
            self.close_connection = True
            return
        if reply.drop == "headers":
            self.close_connection = True
            cut = response.body[: len(response.body) // 2]
            self.wfile.write(response.encode(request_id, body=cut))
            return
        if reply.empty_body:
            # The malformed 2xx fault: claim JSON, send nothing.
            data = response.encode(
                request_id, close=self.close_connection, body=b"", length=0
            )
        else:
            data = response.encode(request_id, close=self.close_connection)
        self.wfile.write(data)
