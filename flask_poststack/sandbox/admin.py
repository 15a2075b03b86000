"""The admin API under ``/_sandbox/`` (JSON, no auth) and the inbox pages
(``/`` and ``/inbox/<id>``), for people and for other processes."""

from __future__ import annotations

import typing as t
from pathlib import Path

import jinja2

from .lifecycle import OUTCOMES
from .messages import error_response
from .messages import html_response
from .messages import json_response
from .messages import Request
from .messages import Response
from .store import StoredEmail
from .validation import InvalidRequest

if t.TYPE_CHECKING:
    from . import Sandbox

_env = jinja2.Environment(
    loader=jinja2.FileSystemLoader(Path(__file__).with_name("templates")),
    autoescape=True,
    undefined=jinja2.StrictUndefined,
)


def email_detail(email: StoredEmail) -> dict[str, t.Any]:
    """The admin API's view of an email: the full row plus attachments'
    metadata (their bytes are at ``/_sandbox/emails/<id>/attachments/<n>``)."""
    row = email.row(full=True)
    row["attachments"] = [a.to_dict() for a in email.attachments]
    row["templateId"] = email.input.template_id
    row["variables"] = email.input.variables
    return row


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
        if name == "emails" and method == "GET":
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
        if not path:
            rows = [email_detail(e) for e in self.sandbox.emails]
            return json_response(200, {"emails": rows})
        email = self.sandbox.store.find(path[0])
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
        item = email.attachments[int(index)]
        safe_name = (
            "".join(c for c in item.filename if c.isalnum() or c in "._- ") or "file"
        )
        return Response(
            200,
            item.content,
            "application/octet-stream",
            {"Content-Disposition": f'attachment; filename="{safe_name}"'},
        )

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

    # Inbox pages ----------------------------------------------------------

    def page(self, req: Request) -> Response:
        path = req.segments
        if not path:
            emails = list(reversed(self.sandbox.emails))
            html = _env.get_template("inbox.html").render(emails=emails)
            return html_response(200, html)
        email = self.sandbox.store.find(path[1]) if len(path) >= 2 else None
        if email is None:
            return html_response(404, "<h1>Email not found</h1>")
        if len(path) == 2:
            html = _env.get_template("email.html").render(email=email)
            return html_response(200, html)
        if len(path) == 4 and path[2] == "attachments":
            return self._attachment(email, path[3])
        return html_response(404, "<h1>Not found</h1>")
