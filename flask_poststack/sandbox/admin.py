"""The admin API under ``/_sandbox/`` (JSON, no auth), for other processes
and for the inbox's buttons (the pages themselves are in :mod:`.inbox`)."""

from __future__ import annotations

import typing as t

from .inbox import attachment_response
from .inbox import email_detail
from .inbox import filter_emails
from .inbox import FILTERS
from .inbox import Inbox
from .lifecycle import OUTCOMES
from .messages import error_response
from .messages import json_response
from .messages import Request
from .messages import Response
from .store import StoredEmail
from .validation import InvalidRequest

if t.TYPE_CHECKING:
    from . import Sandbox


def _flag(value: str, name: str) -> bool:
    """A boolean query parameter: ``1``/``true`` or ``0``/``false``.

    :raises ValueError: for anything else (a 400).
    """
    lowered = value.lower()
    if lowered in ("1", "true"):
        return True
    if lowered in ("0", "false"):
        return False
    raise ValueError(f"{name!r} must be 0, 1, true or false, not {value!r}")


class Admin:
    """Handlers for ``/_sandbox/...`` and the inbox."""

    def __init__(self, sandbox: Sandbox) -> None:
        self.sandbox = sandbox
        self._inbox = Inbox(sandbox)

    def handle(self, req: Request) -> Response:
        try:
            return self._route(req, req.segments[1:])
        except (InvalidRequest, ValueError, TypeError) as exc:
            if isinstance(exc, InvalidRequest):
                return error_response(exc.status, exc.message, exc.code)
            return error_response(400, str(exc), "invalid_request")

    def _route(self, req: Request, path: list[str]) -> Response:
        sb, method = self.sandbox, req.method
        name = path[0] if path else ""
        if method == "GET" and name in ("", "health"):
            return json_response(200, {"ok": True, "base_url": sb.base_url})
        if method == "GET" and name == "stats":
            keys = _flag(req.query.get("keys", "1"), "keys")
            return json_response(200, sb.store.stats(keys=keys))
        if method == "POST" and name == "reset":
            sb.reset()
            return json_response(200, {"success": True})
        if name == "config" and method == "GET":
            return json_response(200, sb.config.as_dict())
        if name == "config" and method in ("POST", "PATCH"):
            body = req.json()
            if not isinstance(body, dict):
                raise ValueError("the body must be an object of settings")
            sb.configure(**body)
            return json_response(200, sb.config.as_dict())
        if name == "requests" and method == "GET":
            limit = int(req.query.get("limit", "1000"))
            return json_response(
                200, {"requests": sb.requests[-limit:] if limit else []}
            )
        if name == "emails":
            return self._emails(req, path[1:])
        if name == "deliveries" and method == "GET":
            return json_response(200, {"deliveries": sb.deliveries})
        if name == "faults":
            return self._faults(req, path[1:])
        if name == "outcomes":
            return self._outcomes(req)
        if name == "held":
            return self._held(req, path[1:])
        return error_response(404, "No such admin route", "not_found")

    def _emails(self, req: Request, path: list[str]) -> Response:
        store = self.sandbox.store
        if req.method == "DELETE":
            if len(path) > 1:
                return error_response(404, "No such admin route", "not_found")
            deleted = store.delete_emails(path[0] if path else None)
            if path and not deleted:
                return error_response(404, "Email not found", "not_found")
            return json_response(200, {"deleted": deleted})
        if req.method != "GET":
            return error_response(405, "Method not allowed", "method_not_allowed")
        query = {name: req.query.get(name, "") for name in FILTERS}
        if not path:
            # Oldest first, as before filters existed.
            found = filter_emails(self.sandbox.emails, query)[::-1]
            return json_response(200, {"emails": [email_detail(e) for e in found]})
        if path == ["latest"]:
            newest = filter_emails(self.sandbox.emails, query)[:1]
            if not newest:
                return error_response(404, "No email matches", "not_found")
            return json_response(200, {"email": email_detail(newest[0])})
        email = store.find(path[0])
        if email is None:
            return error_response(404, "Email not found", "not_found")
        if len(path) == 1:
            return json_response(200, {"email": email_detail(email)})
        if len(path) == 3 and path[1] == "attachments":
            return self._attachment(email, path[2])
        return error_response(404, "No such admin route", "not_found")

    @staticmethod
    def _attachment(email: StoredEmail, index: str) -> Response:
        if not index.isdigit() or int(index) >= len(email.attachments):
            return error_response(404, "Attachment not found", "not_found")
        return attachment_response(email.attachments[int(index)], download=True)

    def _faults(self, req: Request, path: list[str]) -> Response:
        faults = self.sandbox.faults
        if req.method == "GET":
            return json_response(200, {"faults": [r.to_dict() for r in faults.rules]})
        if req.method == "POST" and not path:
            body = req.json()
            specs = body if isinstance(body, list) else [body]
            if not all(isinstance(s, dict) for s in specs):
                raise ValueError("a fault spec must be an object")
            rules = [faults.add_spec(spec) for spec in specs]
            return json_response(201, {"faults": [r.to_dict() for r in rules]})
        if req.method == "DELETE" and not path:
            faults.clear()
            return json_response(200, {"success": True})
        if req.method == "DELETE" and len(path) == 1 and path[0].isdigit():
            return json_response(200, {"success": faults.remove(int(path[0]))})
        return error_response(404, "No such admin route", "not_found")

    def _held(self, req: Request, path: list[str]) -> Response:
        sb = self.sandbox
        if req.method == "GET" and not path:
            return json_response(200, {"held": sb.held})
        if req.method == "POST" and path == ["release"]:
            return json_response(200, {"released": sb.release()})
        if (
            req.method == "POST"
            and len(path) == 2
            and path[0].isdigit()
            and path[1] == "release"
        ):
            return json_response(200, {"released": sb.release(int(path[0]))})
        return error_response(404, "No such admin route", "not_found")

    def _outcomes(self, req: Request) -> Response:
        outcomes = self.sandbox.outcomes
        if req.method == "GET":
            return json_response(
                200,
                {
                    "outcomes": [r.to_dict() for r in outcomes.rules],
                    "choices": OUTCOMES,
                },
            )
        if req.method == "POST":
            body = req.json()
            if not isinstance(body, dict) or not isinstance(body.get("outcome"), str):
                raise ValueError("the body must have an 'outcome'")
            rule = outcomes.add(
                body["outcome"], body.get("pattern"), times=body.get("times")
            )
            return json_response(201, {"outcome": rule.to_dict()})
        if req.method == "DELETE":
            outcomes.clear()
            return json_response(200, {"success": True})
        return error_response(405, "Method not allowed", "method_not_allowed")

    def page(self, req: Request) -> Response:
        """An inbox page (``GET /`` or ``/inbox/...``)."""
        return self._inbox.page(req)
