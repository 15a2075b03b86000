"""The request and response objects the sandbox's handlers work with."""

from __future__ import annotations

import dataclasses
import http
import json
import time
import typing as t
import urllib.parse

from ._util import dumps
from .validation import InvalidRequest


@dataclasses.dataclass
class Auth:
    """Who is calling. Holds no part of the key beyond its mode prefix."""

    test_mode: bool
    label: str
    #: The idempotency / quota namespace (a digest when scoped per key).
    team: str
    #: The throttle bucket, a digest of the key.
    bucket: str
    #: A ``sending_access`` key: it may only send and read emails.
    sending_only: bool = False


@dataclasses.dataclass
class Request:
    method: str
    #: The raw path, without the query string.
    path: str
    query: dict[str, str]
    headers: t.Mapping[str, str]
    body: bytes
    request_id: str
    auth: Auth | None = None
    #: Cleared when the idempotency precedence ignores body keys.
    use_body_keys: bool = True
    #: ``time.monotonic()`` when the request line came in.
    arrived: float = dataclasses.field(default_factory=time.monotonic)

    @property
    def segments(self) -> list[str]:
        """Path segments, each percent-decoded (``%2F`` stays inside one)."""
        return [urllib.parse.unquote(s) for s in self.path.strip("/").split("/") if s]

    def json(self) -> t.Any:
        """The body as JSON; an empty body is ``{}``."""
        if not self.body.strip():
            return {}
        try:
            return json.loads(self.body)
        except ValueError:
            raise InvalidRequest("Request body is not valid JSON") from None


@dataclasses.dataclass
class Response:
    status: int
    body: bytes = b""
    content_type: str = "application/json"
    headers: dict[str, str] = dataclasses.field(default_factory=dict)

    def encode(
        self,
        request_id: str,
        *,
        close: bool = False,
        body: bytes | None = None,
        length: int | None = None,
    ) -> bytes:
        """Status line, headers and body as one buffer, for one ``sendall``.

        ``body`` and ``length`` replace what is sent and announced, for the
        faults that cut a response short.
        """
        body = self.body if body is None else body
        length = len(self.body) if length is None else length
        try:
            reason = http.HTTPStatus(self.status).phrase
        except ValueError:
            reason = "Unknown"
        lines = [
            f"HTTP/1.1 {self.status} {reason}",
            f"Content-Type: {self.content_type}",
            f"Content-Length: {length}",
            f"X-Request-Id: {request_id}",
        ]
        lines += [f"{name}: {value}" for name, value in self.headers.items()]
        if close:
            lines.append("Connection: close")
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


def json_response(
    status: int, data: t.Any, headers: dict[str, str] | None = None
) -> Response:
    return Response(status, dumps(data), headers=headers or {})


def error_response(
    status: int, message: str, code: str | None, headers: dict[str, str] | None = None
) -> Response:
    body: dict[str, str] = {"error": message}
    if code is not None:
        body["code"] = code
    return json_response(status, body, headers)


def html_response(status: int, html: str) -> Response:
    return Response(
        status,
        html.encode(),
        "text/html; charset=utf-8",
        {
            # Email HTML is in sandboxed srcdoc frames, which inherit this
            # policy: nothing loads from outside the sandbox's origin.
            "Content-Security-Policy": (
                "default-src 'none'; style-src 'unsafe-inline'; img-src 'self' data:;"
                " script-src 'self'; connect-src 'self'; frame-src 'self';"
                " form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
            ),
            "X-Content-Type-Options": "nosniff",
        },
    )
