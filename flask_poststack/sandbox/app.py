"""Request dispatch: the inbox pages, the admin API, and the API behind
faults, latency, authentication and throttling. Also the request log."""

from __future__ import annotations

import dataclasses
import fnmatch
import functools
import hashlib
import http
import json
import logging
import time
import typing as t

from .._loopback import is_loopback_host
from ._util import iso
from ._util import key_label
from ._util import utcnow
from .faults import Fault
from .messages import Auth
from .messages import error_response
from .messages import Request
from .messages import Response
from .validation import InvalidRequest

if t.TYPE_CHECKING:
    from . import Sandbox

log = logging.getLogger("flask_poststack.sandbox")

_HTML_ERROR = (
    "<html><head><title>{0} {1}</title></head><body><h1>{0} {1}</h1></body></html>"
)


@dataclasses.dataclass
class Reply:
    """What the server sends: a response, possibly mangled by a fault.

    ``drop`` is ``None`` or a :data:`~flask_poststack.sandbox.faults.DROP_MODES`
    value; with ``drop="reset"`` and no response nothing was processed.
    """

    response: Response | None
    drop: str | None = None
    empty_body: bool = False


def fault_response(fault: Fault) -> Response:
    """The answer a responding fault gives in place of the API."""
    status = t.cast(int, fault.status)
    try:
        reason = http.HTTPStatus(status).phrase
    except ValueError:
        reason = "Unknown"
    headers = {}
    if fault.retry_after is not None:
        headers["Retry-After"] = str(fault.retry_after)
    if fault.body == "html":
        body = _HTML_ERROR.format(status, reason).encode()
        return Response(status, body, "text/html; charset=utf-8", headers)
    if fault.body == "text":
        return Response(
            status, (fault.message or reason).encode(), "text/plain", headers
        )
    if fault.body == "empty":
        return Response(status, b"", "application/json", headers)
    code = fault.code or ("internal_error" if status == 500 else None)
    return error_response(status, fault.message or reason, code, headers)


def idempotency_keys(req: Request) -> list[str]:
    """The request's ``Idempotency-Key`` header and body ``idempotency_key``,
    for the fault rules that filter on them."""
    keys = []
    header = req.headers.get("Idempotency-Key")
    if header:
        keys.append(header)
    try:
        body = req.json()
    except (InvalidRequest, RecursionError):  # the API answers these later
        body = None
    if isinstance(body, dict) and isinstance(body.get("idempotency_key"), str):
        keys.append(body["idempotency_key"])
    return keys


#: Admin methods that change state: they need ``Content-Type:
#: application/json``, which a cross-origin ``no-cors`` fetch cannot send
#: without a CORS preflight (that the sandbox never grants).
_WRITES = frozenset({"POST", "PUT", "PATCH", "DELETE"})


def bound_host(bound: str) -> frozenset[str]:
    """The ``Host`` name every route answers besides the loopback ones (the
    pages and admin API must not be reachable through a name a remote page
    controls: DNS rebinding): the address the sandbox is bound to when it
    is a specific one (``0.0.0.0`` and ``::`` are not a host anyone names)."""
    if bound in ("", "0.0.0.0", "::"):
        return frozenset()
    return frozenset({f"[{bound}]" if ":" in bound else bound.lower()})


def is_json(content_type: str) -> bool:
    """Whether a ``Content-Type`` header is ``application/json``."""
    return content_type.partition(";")[0].strip().lower() == "application/json"


def _email_id(response: Response) -> str | None:
    """The ``em_`` id in a send's answer, if it has one."""
    try:
        data = json.loads(response.body)
    except ValueError:
        return None
    email_id = data.get("id") if isinstance(data, dict) else None
    return email_id if isinstance(email_id, str) else None


class App:
    """Turns a :class:`Request` into a :class:`Reply`."""

    def __init__(self, sandbox: Sandbox) -> None:
        self.sandbox = sandbox

    def handle(self, req: Request) -> Reply:
        segments = req.segments
        host = req.headers.get("Host", "")
        if not is_loopback_host(host, bound_host(self.sandbox.host)):
            return Reply(
                error_response(
                    421,
                    "The sandbox only answers requests to 127.0.0.1, localhost"
                    " or [::1]",
                    "misdirected_request",
                )
            )
        if (
            segments
            and segments[0] == "_sandbox"
            and req.method in _WRITES
            and not is_json(req.headers.get("Content-Type", ""))
        ):
            return Reply(
                error_response(
                    403,
                    "Admin requests that change state need"
                    " Content-Type: application/json",
                    "forbidden",
                )
            )
        if req.method == "GET" and (not segments or segments[0] == "inbox"):
            return Reply(self.sandbox._admin.page(req))
        if segments and segments[0] == "_sandbox":
            return Reply(self.sandbox._admin.handle(req))
        started = req.arrived
        # Parsed only if a fault rule filters on them, and then only once.
        request_keys = functools.cache(lambda: idempotency_keys(req))
        fault = self.sandbox.faults.pick(req.method, req.path, request_keys)
        reply = self._api(req, fault)
        self._log(req, reply, fault, time.monotonic() - started)
        return reply

    def _api(self, req: Request, fault: Fault | None) -> Reply:
        # A latency fault is a slow request: it waits before anything is
        # processed. The global latency is the API's response time: the answer
        # leaves that long after the request arrived, the sandbox's own work
        # included, so that a benchmark at 20 ms sees 20 ms and not 20 ms plus
        # the sandbox.
        sandbox, config = self.sandbox, self.sandbox.config
        slow = 0.0
        if fault is not None:
            if fault.kind != "pass":
                sandbox.store.count("faults_fired")
            slow = fault.delay + sandbox.faults.jitter(fault.jitter)
            if slow > 0:
                time.sleep(slow)
        latency = config.latency + sandbox.faults.jitter(config.latency_jitter)
        reply = self._answer(req, fault)
        wait = req.arrived + slow + latency - time.monotonic()
        if wait > 0:
            time.sleep(wait)
        if (
            fault is not None
            and fault.kind == "hold_after_store"
            and reply.response is not None
        ):
            sandbox._holds.hold(
                t.cast(float, fault.seconds),
                method=req.method,
                path=req.path,
                request_id=req.request_id,
                idempotency_key=req.headers.get("Idempotency-Key"),
                status=reply.response.status,
                email_id=_email_id(reply.response),
            )
        return reply

    def _answer(self, req: Request, fault: Fault | None) -> Reply:
        sandbox = self.sandbox
        if fault is not None and fault.kind == "drop_before":
            return Reply(None, drop="reset")
        if fault is not None and fault.responds:
            return Reply(fault_response(fault))
        try:
            req.auth = self._authenticate(req)
            limit_headers = self._throttle(req.auth)
            try:
                response = sandbox._api.handle(req)
            except InvalidRequest as exc:
                response = error_response(exc.status, exc.message, exc.code)
            except Exception:
                # A sandbox bug must still answer, as the real API's 500 would.
                log.exception("sandbox error on %s %s", req.method, req.path)
                response = error_response(
                    500, "Internal server error", "internal_error"
                )
            response.headers.update(limit_headers)
        except InvalidRequest as exc:
            response = error_response(exc.status, exc.message, exc.code, exc.headers)
        if fault is not None and fault.kind == "drop_after":
            return Reply(response, drop=fault.mode)
        if (
            fault is not None
            and fault.kind == "empty_2xx"
            and 200 <= response.status < 300
        ):
            return Reply(response, empty_body=True)
        return Reply(response)

    def _authenticate(self, req: Request) -> Auth:
        scheme, _, key = req.headers.get("Authorization", "").partition(" ")
        key = key.strip()
        if (
            scheme.lower() != "bearer"
            or not key.startswith(("sk_live_", "sk_test_"))
            or len(key) <= len("sk_live_")
        ):
            raise InvalidRequest("Invalid API key", 401, "unauthorized")
        config = self.sandbox.config
        digest = hashlib.sha256(key.encode()).hexdigest()[:16]
        team = digest if config.idempotency_scope == "key" else "team"
        sending_only = any(
            fnmatch.fnmatchcase(key, pattern) for pattern in config.sending_access_keys
        )
        return Auth(
            key.startswith("sk_test_"), key_label(key), team, digest, sending_only
        )

    def _throttle(self, auth: Auth) -> dict[str, str]:
        config = self.sandbox.config
        rate = config.throttle_rate
        if not rate:
            return {}
        burst = config.throttle_burst or max(1, int(rate))
        allowed, remaining, wait = self.sandbox.store.take_token(
            auth.bucket, rate, burst
        )
        reset = int(time.time() + (burst - remaining) / rate)
        headers = {
            "X-RateLimit-Limit": str(burst),
            "X-RateLimit-Remaining": str(remaining),
            "X-RateLimit-Reset": str(reset),
        }
        if not allowed:
            self.sandbox.store.count("throttled")
            raise InvalidRequest(
                "Too many requests",
                429,
                "rate_limit_exceeded",
                {**headers, "Retry-After": str(wait)},
            )
        return headers

    def _log(
        self, req: Request, reply: Reply, fault: Fault | None, seconds: float
    ) -> None:
        status = reply.response.status if reply.response is not None else 0
        auth = req.auth
        entry = {
            "time": iso(utcnow()),
            "request_id": req.request_id,
            "method": req.method,
            "path": req.path,
            "query": dict(req.query),
            "status": status,
            "key": auth.label
            if auth
            else key_label(
                req.headers.get("Authorization", "").partition(" ")[2].strip()
            ),
            "test_mode": auth.test_mode if auth else None,
            "idempotency_key": req.headers.get("Idempotency-Key"),
            "user_agent": req.headers.get("User-Agent"),
            "fault": fault.kind if fault is not None and fault.kind != "pass" else None,
            "duration_ms": round(seconds * 1000, 3),
        }
        self.sandbox.store.log_request(
            entry, self.sandbox.config.idempotency_attempts_max_keys
        )
        if log.isEnabledFor(logging.INFO):
            log.info(
                "%s %s %s %s key=%s ua=%s%s",
                req.method,
                req.path,
                status or "dropped",
                req.request_id,
                entry["key"],
                entry["user_agent"],
                f" fault={entry['fault']}" if entry["fault"] else "",
            )
