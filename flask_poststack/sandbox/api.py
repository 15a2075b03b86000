"""The PostStack API routes: ``/emails`` and ``/webhooks``.

Handlers take an authenticated :class:`Request` and return a
:class:`Response`; they raise :class:`InvalidRequest` for error answers.
"""

from __future__ import annotations

import fnmatch
import json
import time
import typing as t
from datetime import timedelta

from . import preview
from ._util import fingerprint
from ._util import parse_iso
from .config import SandboxConfig
from .lifecycle import Lifecycle
from .messages import json_response
from .messages import Request
from .messages import Response
from .store import Replay
from .store import Store
from .store import StoredEmail
from .validation import EmailInput
from .validation import InvalidRequest
from .validation import parse_send
from .validation import split_address
from .validation import unprocessable
from .webhook_api import not_found
from .webhook_api import page_args
from .webhook_api import paginate
from .webhook_api import WebhookRoutes
from .webhooks import Webhooks

Handler = t.Callable[[Request, list[str]], Response]
_SEND_ROUTES = {
    ("POST", "/emails"),
    ("POST", "/emails/send"),
    ("POST", "/emails/batch"),
}
#: What a ``sending_access`` key may do: send, and read emails' status.
_SENDING_ACCESS = (
    ("POST", ("emails",)),
    ("POST", ("emails", "send")),
    ("POST", ("emails", "batch")),
    ("GET", ("emails",)),
    ("GET", ("emails", "*")),
    ("GET", ("emails", "*", "events")),
)
#: How long a duplicate waits for the request holding its key.
CLAIM_TIMEOUT = 60.0


def _match(pattern: tuple[str, ...], segments: list[str]) -> list[str] | None:
    """The segments ``*`` stands for, or ``None`` if ``pattern`` does not
    match."""
    if len(pattern) != len(segments) or any(
        p != "*" and p != s for p, s in zip(pattern, segments, strict=True)
    ):
        return None
    return [s for p, s in zip(pattern, segments, strict=True) if p == "*"]


class Api(WebhookRoutes):
    """Routes and handlers of the emulated API."""

    def __init__(
        self,
        config: SandboxConfig,
        store: Store,
        lifecycle: Lifecycle,
        webhooks: Webhooks,
    ) -> None:
        self.config = config
        self.store = store
        self.lifecycle = lifecycle
        self.webhooks = webhooks
        self.routes: list[tuple[str, tuple[str, ...], Handler]] = [
            ("POST", ("emails",), self.send),
            ("POST", ("emails", "send"), self.send),
            ("POST", ("emails", "batch"), self.batch),
            ("POST", ("emails", "preview"), self.preview),
            ("POST", ("emails", "spam-preview"), self.spam_preview),
            ("GET", ("emails",), self.list_emails),
            ("GET", ("emails", "*"), self.get_email),
            ("PATCH", ("emails", "*"), self.reschedule),
            ("POST", ("emails", "*", "cancel"), self.cancel),
            ("GET", ("emails", "*", "events"), self.events),
            ("GET", ("emails", "*", "insights"), self.insights),
            ("POST", ("webhooks",), self.create_webhook),
            ("GET", ("webhooks",), self.list_webhooks),
            ("GET", ("webhooks", "*"), self.get_webhook),
            ("PATCH", ("webhooks", "*"), self.update_webhook),
            ("DELETE", ("webhooks", "*"), self.delete_webhook),
            ("POST", ("webhooks", "*", "test"), self.test_webhook),
            ("POST", ("webhooks", "*", "rotate-secret"), self.rotate_secret),
            ("GET", ("webhooks", "*", "deliveries"), self.deliveries),
            (
                "POST",
                ("webhooks", "*", "deliveries", "batch-replay"),
                self.batch_replay,
            ),
            ("POST", ("webhooks", "*", "deliveries", "*", "replay"), self.replay),
        ]

    def handle(self, req: Request) -> Response:
        """Route ``req``; 404 / 405 when nothing matches, 403 when a
        ``sending_access`` key asks for anything but sending and reading."""
        segments = req.segments
        if (
            req.auth is not None
            and req.auth.sending_only
            and not any(
                method == req.method and _match(pattern, segments) is not None
                for method, pattern in _SENDING_ACCESS
            )
        ):
            raise InvalidRequest("API key does not have permission", 403, "forbidden")
        allowed = False
        for method, pattern, handler in self.routes:
            args = _match(pattern, segments)
            if args is None:
                continue
            if method != req.method:
                allowed = True
                continue
            if req.method == "POST" and (
                (req.method, req.path) in _SEND_ROUTES
                or self.config.idempotency_all_posts
            ):
                return self._idempotent(req, args, handler)
            return handler(req, args)
        if allowed:
            raise InvalidRequest("Method not allowed", 405, "method_not_allowed")
        raise not_found("Route")

    # Idempotency ----------------------------------------------------------

    def _body_keys(self, req: Request) -> set[str]:
        try:
            body = req.json()
        except InvalidRequest:
            return set()
        items = (
            body.get("emails")
            if req.path == "/emails/batch" and isinstance(body, dict)
            else [body]
        )
        if not isinstance(items, list):
            return set()
        return {
            item["idempotency_key"]
            for item in items
            if isinstance(item, dict) and isinstance(item.get("idempotency_key"), str)
        }

    def _idempotent(self, req: Request, args: list[str], handler: Handler) -> Response:
        assert req.auth is not None
        team, config = req.auth.team, self.config
        header_key = req.headers.get("Idempotency-Key") or None
        body_keys = self._body_keys(req) if req.path.startswith("/emails") else set()
        if config.idempotency_precedence == "header" and header_key:
            body_keys = set()
        elif config.idempotency_precedence == "body" and body_keys:
            header_key = None
        req.use_body_keys = bool(body_keys)
        claims = {("b", team, key) for key in body_keys}
        if header_key:
            claims.add(("h", team, header_key))
        if not self.store.claim(
            claims, wait=config.idempotency_concurrent == "wait", timeout=CLAIM_TIMEOUT
        ):
            raise InvalidRequest(
                "A request with this idempotency key is already in progress",
                409,
                "conflict",
            )
        try:
            if not header_key:
                return handler(req, args)
            route = "/emails" if req.path == "/emails/send" else req.path
            digest = fingerprint([route, req.json()])
            found = self.store.lookup_header(team, header_key)
            if found is not None:
                if found.fingerprint != digest:
                    raise self._key_conflict()
                self.store.count("replays")
                return json_response(found.status, self._replayed(found.body))
            response = handler(req, args)
            if 200 <= response.status < 300:
                replay = Replay(digest, response.status, json.loads(response.body))
                self.store.remember_header(
                    team,
                    header_key,
                    replay,
                    config.idempotency_header_ttl,
                    config.idempotency_header_max_keys,
                )
            return response
        finally:
            self.store.release(claims)

    def _key_conflict(self) -> InvalidRequest:
        return InvalidRequest(
            "Idempotency key was already used with a different payload",
            422,
            self.config.idempotency_conflict_code,
        )

    @staticmethod
    def _replayed(body: t.Any) -> t.Any:
        if not isinstance(body, dict):
            return body
        if isinstance(body.get("data"), list):
            data = [{**r, "replayed": True} if "id" in r else r for r in body["data"]]
            return {**body, "data": data, "replayed": True}
        return {**body, "replayed": True}

    # Emails ---------------------------------------------------------------

    def _create(self, req: Request, raw: t.Any) -> dict[str, t.Any]:
        """Validate and store one email (or replay it by its body key)."""
        assert req.auth is not None
        auth, config = req.auth, self.config
        data = parse_send(raw, config)
        key = data.idempotency_key if req.use_body_keys else None
        digest = fingerprint(raw)
        if key:
            found = self.store.lookup_body(auth.team, key)
            if found is not None:
                if found.fingerprint != digest:
                    raise self._key_conflict()
                self.store.count("replays")
                return {**found.body, "replayed": True}
        self._refuse(data)
        if config.processing_delay:
            time.sleep(config.processing_delay)
        if not auth.test_mode and (
            config.daily_quota is not None or config.monthly_quota is not None
        ):
            code = self.store.use_quota(
                auth.team, config.daily_quota, config.monthly_quota
            )
            if code is not None:
                self.store.count("quota_refused")
                message = (
                    "Monthly email limit reached. Upgrade your plan."
                    if code == "monthly_limit_exceeded"
                    else "Daily send limit reached."
                )
                legacy = "rate_limit_exceeded" if config.quota_legacy_code else code
                raise InvalidRequest(message, 429, legacy)
        email = self.store.add_email(data, test_mode=auth.test_mode)
        result: dict[str, t.Any] = {"id": email.id}
        if auth.test_mode:
            result["test_mode"] = True
        if key:
            self.store.remember_body(auth.team, key, Replay(digest, 202, result))
        self.lifecycle.begin(email)
        return result

    def _refuse(self, data: EmailInput) -> None:
        """The per-email rejections the API makes after validation."""
        domain = data.from_address.rpartition("@")[2].lower()
        if any(
            fnmatch.fnmatchcase(domain, p.lower())
            for p in self.config.unverified_domains
        ):
            raise unprocessable(f"Domain not verified: {domain}")
        for address in data.to + (data.cc or []) + (data.bcc or []):
            bare = split_address(address)[0].lower()
            for pattern in self.config.suppressed_recipients:
                if fnmatch.fnmatchcase(bare, pattern.lower()):
                    raise unprocessable(f"Recipient is suppressed: {bare}")

    def send(self, req: Request, args: list[str]) -> Response:
        return json_response(202, self._create(req, req.json()))

    def batch(self, req: Request, args: list[str]) -> Response:
        body = req.json()
        items = body.get("emails") if isinstance(body, dict) else None
        if not isinstance(items, list):
            raise InvalidRequest("'emails' must be an array")
        if len(items) > self.config.batch_limit:
            raise unprocessable("Batch size exceeds limit")
        if not items:
            status = self.config.empty_batch_status
            raise InvalidRequest(
                "'emails' must contain at least one email",
                status,
                "invalid_request" if status == 400 else "unprocessable_entity",
            )
        results: list[dict[str, t.Any]] = []
        for item in items:
            try:
                results.append(self._create(req, item))
            except InvalidRequest as exc:
                results.append({"error": exc.message, "code": exc.code})
        return json_response(202, {"data": results})

    def preview(self, req: Request, args: list[str]) -> Response:
        return json_response(200, preview.preview(req.json()))

    def spam_preview(self, req: Request, args: list[str]) -> Response:
        return json_response(200, preview.spam_report(*preview.draft(req.json())))

    def _email(self, email_id: str) -> StoredEmail:
        email = self.store.find(email_id)
        if email is None:
            raise not_found("Email")
        return email

    def get_email(self, req: Request, args: list[str]) -> Response:
        email = self._email(args[0])
        with self.store.lock:
            return json_response(200, {"email": email.row(full=True)})

    def list_emails(self, req: Request, args: list[str]) -> Response:
        page, per_page = page_args(req)
        q = {k: v.lower() for k, v in req.query.items()}
        start = end = None
        if "date_from" in q:
            start = parse_iso(q["date_from"])
        if "date_to" in q:
            end = parse_iso(q["date_to"])
            if end is not None and len(q["date_to"]) == 10:
                end += timedelta(days=1)
        if ("date_from" in q and start is None) or ("date_to" in q and end is None):
            raise InvalidRequest("'date_from' and 'date_to' must be dates")

        # Exact-match filters on facts the sandbox never records (it has no
        # domains, providers or opens), so no email matches any value.
        unknowable = {
            k for k in ("domain_id", "provider", "country", "device") if q.get(k)
        }

        def keep(email: StoredEmail) -> bool:
            data = email.input
            return (
                not unknowable
                and ("to" not in q or any(q["to"] in a.lower() for a in data.to))
                and (
                    "from" not in q
                    or q["from"] in f"{data.from_name} {data.from_address}".lower()
                )
                and ("subject" not in q or q["subject"] in (data.subject or "").lower())
                and ("tag" not in q or req.query["tag"] in (data.tags or []))
                and ("status" not in q or email.status == q["status"])
                and (start is None or email.created_at >= start)
                and (end is None or email.created_at < end)
            )

        with self.store.lock:
            rows = [e.row() for e in reversed(self.store.all_emails()) if keep(e)]
        data, meta = paginate(rows, page, per_page)
        # The SDK reads data/meta; the docs pages show emails/pagination.
        pagination = {
            "total": meta["total"],
            "page": meta["page"],
            "per_page": meta["perPage"],
            "total_pages": meta["totalPages"],
        }
        return json_response(
            200, {"data": data, "meta": meta, "emails": data, "pagination": pagination}
        )

    def _scheduled(self, email: StoredEmail) -> None:
        if (
            email.status != "queued"
            or email.scheduled_at is None
            or email.generation < 0
        ):
            status = self.config.not_scheduled_status
            raise InvalidRequest(
                "Email is not scheduled",
                status,
                "conflict" if status == 409 else "unprocessable_entity",
            )

    def reschedule(self, req: Request, args: list[str]) -> Response:
        email = self._email(args[0])
        body = req.json()
        raw = body.get("scheduled_at") if isinstance(body, dict) else None
        when = parse_iso(raw) if isinstance(raw, str) else None
        if when is None:
            raise InvalidRequest("'scheduled_at' must be an ISO-8601 datetime")
        with self.store.lock:
            self._scheduled(email)
            email.scheduled_at = when
            email.generation += 1
        self.lifecycle.schedule(email)
        return json_response(200, {"success": True})

    def cancel(self, req: Request, args: list[str]) -> Response:
        email = self._email(args[0])
        with self.store.lock:
            if self.store.emails.get(email.id) is not email:
                raise not_found("Email")  # the sandbox was reset meanwhile
            self._scheduled(email)
            email.generation = -1
            events = self.lifecycle.record(
                email,
                self.config.cancelled_status,
                [("failed", {"reason": "cancelled"})],
            )
        self.lifecycle.announce(email, events)
        return json_response(200, {"success": True})

    def events(self, req: Request, args: list[str]) -> Response:
        email = self._email(args[0])
        with self.store.lock:
            return json_response(200, {"events": [dict(e) for e in email.events]})

    def insights(self, req: Request, args: list[str]) -> Response:
        self._email(args[0])
        return json_response(200, {"warnings": []})
