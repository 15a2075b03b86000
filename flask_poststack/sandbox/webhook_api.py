"""The ``/webhooks`` routes, mixed into :class:`~.api.Api`."""

from __future__ import annotations

import math
import typing as t
from datetime import timedelta

from ._util import utcnow
from .config import SandboxConfig
from .messages import json_response
from .messages import Request
from .messages import Response
from .validation import InvalidRequest
from .validation import unprocessable
from .webhooks import is_loopback
from .webhooks import Webhook
from .webhooks import Webhooks


def not_found(what: str) -> InvalidRequest:
    return InvalidRequest(f"{what} not found", 404, "not_found")


def page_args(req: Request) -> tuple[int, int]:
    """``page`` and ``per_page`` from the query (defaults 1 and 20)."""
    try:
        page = int(req.query.get("page", "1"))
        per_page = int(req.query.get("per_page", "20"))
    except ValueError:
        raise InvalidRequest("'page' and 'per_page' must be integers") from None
    if page < 1 or not 1 <= per_page <= 100:
        raise InvalidRequest("'page' must be >= 1 and 'per_page' between 1 and 100")
    return page, per_page


def paginate(
    items: list[t.Any], page: int, per_page: int
) -> tuple[list[t.Any], dict[str, int]]:
    total = len(items)
    meta = {
        "page": page,
        "perPage": per_page,
        "total": total,
        "totalPages": math.ceil(total / per_page),
    }
    return items[(page - 1) * per_page : page * per_page], meta


class WebhookRoutes:
    config: SandboxConfig
    webhooks: Webhooks

    # Webhooks -------------------------------------------------------------

    def _hook(self, raw_id: str) -> Webhook:
        hook = self.webhooks.get(int(raw_id)) if raw_id.isdigit() else None
        if hook is None:
            raise not_found("Webhook")
        return hook

    def _hook_fields(self, body: t.Any, *, partial: bool) -> dict[str, t.Any]:
        if not isinstance(body, dict):
            raise InvalidRequest("Request body must be a JSON object")
        out: dict[str, t.Any] = {}
        url = body.get("url")
        if url is not None or not partial:
            if not isinstance(url, str) or not url.startswith(("http://", "https://")):
                raise InvalidRequest("'url' must be an http(s) URL")
            if not self.config.webhook_allow_remote and not is_loopback(url):
                raise unprocessable(
                    "The sandbox only delivers to loopback URLs"
                    " (see the webhook_allow_remote setting)"
                )
            out["url"] = url
        events = body.get("events")
        if events is not None or not partial:
            if (
                not isinstance(events, list)
                or not events
                or not all(isinstance(e, str) and e for e in events)
            ):
                raise InvalidRequest(
                    "'events' must be a non-empty array of event names"
                )
            out["events"] = list(events)
        for name in ("enabled", "active"):
            if body.get(name) is not None:
                if not isinstance(body[name], bool):
                    raise InvalidRequest(f"'{name}' must be a boolean")
                out["active"] = body[name]
        if isinstance(body.get("description"), str):
            out["description"] = body["description"]
        return out

    def create_webhook(self, req: Request, args: list[str]) -> Response:
        fields = self._hook_fields(req.json(), partial=False)
        hook, secret = self.webhooks.create(
            fields["url"], fields["events"], fields.get("description")
        )
        return json_response(201, {"webhook": hook.to_dict(), "signingSecret": secret})

    def list_webhooks(self, req: Request, args: list[str]) -> Response:
        with self.webhooks.lock:
            hooks = [h.to_dict(listing=True) for h in self.webhooks.hooks.values()]
        return json_response(200, {"webhooks": hooks})

    def get_webhook(self, req: Request, args: list[str]) -> Response:
        return json_response(200, {"webhook": self._hook(args[0]).to_dict()})

    def update_webhook(self, req: Request, args: list[str]) -> Response:
        hook = self._hook(args[0])
        fields = self._hook_fields(req.json(), partial=True)
        with self.webhooks.lock:
            for name, value in fields.items():
                setattr(hook, name, value)
            if fields.get("active"):
                hook.consecutive_failures = 0
                hook.disabled_at = hook.disabled_reason = None
        return json_response(200, {"webhook": hook.to_dict()})

    def delete_webhook(self, req: Request, args: list[str]) -> Response:
        self._hook(args[0])
        self.webhooks.delete(int(args[0]))
        return json_response(200, {"success": True})

    def test_webhook(self, req: Request, args: list[str]) -> Response:
        hook = self._hook(args[0])
        data = {
            "webhook_id": hook.id,
            "message": "Test delivery from the PostStack sandbox",
        }
        self.webhooks.deliver(hook, "webhook.test", data)
        return json_response(200, {"success": True})

    def rotate_secret(self, req: Request, args: list[str]) -> Response:
        hook = self._hook(args[0])
        body = req.json()
        grace = body.get("graceHours", 24) if isinstance(body, dict) else 24
        if (
            isinstance(grace, bool)
            or not isinstance(grace, int)
            or not 0 <= grace <= 168
        ):
            raise InvalidRequest("'graceHours' must be an integer from 0 to 168")
        secret = self.webhooks.rotate(hook, grace)
        return json_response(200, {"webhook": hook.to_dict(), "signingSecret": secret})

    def deliveries(self, req: Request, args: list[str]) -> Response:
        hook = self._hook(args[0])
        page, per_page = page_args(req)
        with self.webhooks.lock:
            rows = [
                d.to_dict() for d in reversed(self.webhooks.list_deliveries(hook.id))
            ]
        data, meta = paginate(rows, page, per_page)
        return json_response(200, {"deliveries": data, "pagination": meta})

    def replay(self, req: Request, args: list[str]) -> Response:
        hook = self._hook(args[0])
        with self.webhooks.lock:
            delivery = (
                self.webhooks.deliveries.get(int(args[1]))
                if args[1].isdigit()
                else None
            )
        if delivery is None or delivery.webhook_id != hook.id:
            raise not_found("Delivery")
        self.webhooks.replay(delivery)
        return json_response(200, {"success": True})

    def batch_replay(self, req: Request, args: list[str]) -> Response:
        hook = self._hook(args[0])
        body = req.json()
        body = body if isinstance(body, dict) else {}
        within, event_type, limit = (
            body.get("withinMinutes"),
            body.get("eventType"),
            body.get("limit", 1000),
        )
        if not isinstance(limit, int) or limit < 1:
            raise InvalidRequest("'limit' must be a positive integer")
        if within is not None and (
            not isinstance(within, int) or not 0 < within <= 43200
        ):
            raise InvalidRequest("'withinMinutes' must be from 1 to 43200")
        since = utcnow() - timedelta(minutes=within) if within else None
        with self.webhooks.lock:
            failed = [
                d
                for d in self.webhooks.list_deliveries(hook.id)
                if d.failed
                and (event_type is None or d.event_type == event_type)
                and (since is None or d.created_at >= since)
            ]
        chosen = failed[: min(limit, 1000)]
        for delivery in chosen:
            self.webhooks.replay(delivery)
        return json_response(
            200, {"replayed": len(chosen), "remaining": len(failed) - len(chosen)}
        )
