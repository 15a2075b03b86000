"""The inbox pages (``/`` and ``/inbox/...``): the list with its filters, the
email view's tabs, attachments served with their stored type, and the rules
that keep an email's HTML from running in the inbox's origin."""

from __future__ import annotations

import base64
import json
import re
import typing as t
import unicodedata
import urllib.parse
from pathlib import Path

import jinja2
from markupsafe import escape
from markupsafe import Markup

from .messages import html_response
from .messages import Request
from .messages import Response
from .preview import spam_report
from .store import StoredEmail
from .validation import Attachment

if t.TYPE_CHECKING:
    from . import Sandbox

_HERE = Path(__file__).parent
_env = jinja2.Environment(
    loader=jinja2.FileSystemLoader(_HERE / "templates"),
    autoescape=True,
    undefined=jinja2.StrictUndefined,
)
_env.filters["pretty"] = lambda value: json.dumps(value, indent=2, default=str)

#: Query parameters of the list and of ``GET /_sandbox/emails``.
FILTERS = ("q", "to", "from", "subject", "status", "tag")
#: The email view's tabs, in order: ``?tab=<name>``.
TABS = {
    "html": "HTML",
    "text": "Text",
    "source": "HTML source",
    "headers": "Headers",
    "raw": "Raw JSON",
    "attachments": "Attachments",
    "events": "Events",
    "webhooks": "Webhooks",
}
#: Types a browser shows inline without running anything of the file's own
#: (SVG and HTML can carry script: they are always downloaded).
INLINE_TYPES = frozenset(
    {
        "image/png",
        "image/jpeg",
        "image/gif",
        "image/webp",
        "image/avif",
        "image/bmp",
        "application/pdf",
        "text/plain",
    }
)
_MIME = re.compile(r"[A-Za-z0-9][\w.+-]*/[A-Za-z0-9][\w.+-]*")
_CID = re.compile(r"""cid:([^"'\s)>]+)""", re.IGNORECASE)
_MARKUP = re.compile(r"(<!--.*?-->)|(<[^>]*>)", re.DOTALL)
_QUOTED = re.compile(r"(&#34;.*?&#34;|&#39;.*?&#39;)")
_ATTACHMENT_CSP = "default-src 'none'; img-src 'self'; style-src 'unsafe-inline'"


def email_detail(email: StoredEmail) -> dict[str, t.Any]:
    """The admin API's view of an email: the full row plus attachments'
    metadata (their bytes are at ``/_sandbox/emails/<id>/attachments/<n>``)."""
    row = email.row(full=True)
    row["attachments"] = [a.to_dict() for a in email.attachments]
    row["templateId"] = email.input.template_id
    row["variables"] = email.input.variables
    return row


def matches(email: StoredEmail, query: t.Mapping[str, str]) -> bool:
    """Whether ``email`` passes the :data:`FILTERS` in ``query``: ``to``,
    ``from`` and ``subject`` are case-insensitive substrings, ``status`` and
    ``tag`` exact, ``q`` a substring of any of to, from and subject."""
    data = email.input
    to = " ".join([*data.to, *(data.cc or []), *(data.bcc or [])]).lower()
    sender = f"{data.from_name or ''} {data.from_address}".lower()
    subject = (data.subject or "").lower()
    checks: dict[str, t.Callable[[str], bool]] = {
        "q": lambda v: v in to or v in sender or v in subject,
        "to": lambda v: v in to,
        "from": lambda v: v in sender,
        "subject": lambda v: v in subject,
        "status": lambda v: v == email.status,
        "tag": lambda v: v in [tag.lower() for tag in data.tags or []],
    }
    return all(
        checks[name](query[name].strip().lower())
        for name in FILTERS
        if query.get(name, "").strip()
    )


def filter_emails(
    emails: t.Iterable[StoredEmail], query: t.Mapping[str, str]
) -> list[StoredEmail]:
    """The emails that pass ``query``'s filters, newest first."""
    return [email for email in reversed(list(emails)) if matches(email, query)]


def content_type(item: Attachment) -> str:
    """The attachment's stored type, or ``application/octet-stream`` when it
    has none or it is not a plain ``type/subtype``."""
    value = (item.content_type or "").partition(";")[0].strip().lower()
    return value if _MIME.fullmatch(value) else "application/octet-stream"


def resolve_cids(html: str, attachments: list[Attachment]) -> str:
    """``cid:`` references to this email's own image attachments, replaced
    by ``data:`` URLs (the only images the inbox frame may load)."""
    by_id = {
        item.content_id.strip("<>"): item
        for item in attachments
        if item.content_id and content_type(item).startswith("image/")
    }

    def replace(match: re.Match[str]) -> str:
        item = by_id.get(urllib.parse.unquote(match.group(1)).strip("<>"))
        if item is None:
            return match.group(0)
        encoded = base64.b64encode(item.content).decode()
        return f"data:{content_type(item)};base64,{encoded}"

    return _CID.sub(replace, html)


def _named(name: str, *, ascii_only: bool) -> str:
    """``name`` with only letters, digits and ``._- `` (so no quote, slash or
    control character), and ``file`` for a stem left empty."""
    kept = "".join(
        c
        for c in name
        if (c.isalnum() or c in "._- ") and (c.isascii() or not ascii_only)
    )
    stem, dot, ext = kept.rpartition(".")
    if not any(c.isalnum() for c in (stem if dot else kept)):
        return "file" + dot + ext
    return kept


def content_disposition(disposition: str, filename: str) -> str:
    """A ``Content-Disposition`` header that is all ASCII: ``filename=`` for
    every client, plus RFC 5987 ``filename*=UTF-8''...`` when the name has
    characters ASCII cannot hold (``отчёт.txt``, ``café.pdf``)."""
    full = _named(unicodedata.normalize("NFC", filename), ascii_only=False)
    # "café" falls back to "cafe", not "caf": accents come off first.
    fallback = _named(unicodedata.normalize("NFKD", full), ascii_only=True)
    header = f'{disposition}; filename="{fallback}"'
    if full != fallback:
        header += f"; filename*=UTF-8''{urllib.parse.quote(full, safe='')}"
    return header


def attachment_response(item: Attachment, *, download: bool) -> Response:
    """An attachment with its stored type: inline for :data:`INLINE_TYPES`
    (unless ``download``), as a download otherwise, never sniffed."""
    kind = content_type(item)
    inline = kind in INLINE_TYPES and not download
    csp = _ATTACHMENT_CSP
    if kind != "application/pdf":  # Chromium's PDF viewer needs no sandbox
        csp += "; sandbox"
    return Response(
        200,
        item.content,
        kind,
        {
            "Content-Disposition": content_disposition(
                "inline" if inline else "attachment", item.filename
            ),
            "Content-Security-Policy": csp,
            "X-Content-Type-Options": "nosniff",
        },
    )


def highlight_html(source: str) -> Markup:
    """HTML source, escaped, with its tags, quoted values and comments in
    ``<span class="hl-t|hl-v|hl-c">`` (only spans are added, to escaped
    text)."""
    parts: list[Markup] = []
    pos = 0
    for match in _MARKUP.finditer(source):
        parts.append(escape(source[pos : match.start()]))
        if match.group(1):
            parts.append(Markup('<span class="hl-c">%s</span>') % match.group(1))
        else:
            tag = _QUOTED.sub(r'<span class="hl-v">\1</span>', str(escape(match[0])))
            parts.append(Markup(f'<span class="hl-t">{tag}</span>'))
        pos = match.end()
    parts.append(escape(source[pos:]))
    return Markup("").join(parts)


def event_rows(event: dict[str, t.Any]) -> list[tuple[str, str]]:
    """An event's metadata as ``(name, value)`` pairs for a table."""
    metadata = event.get("metadata") or {}
    if not isinstance(metadata, dict):
        return [("", str(metadata))]
    return [
        (str(key), value if isinstance(value, str) else json.dumps(value))
        for key, value in metadata.items()
    ]


class Inbox:
    """Renders the inbox pages from a sandbox's store."""

    def __init__(self, sandbox: Sandbox) -> None:
        self.sandbox = sandbox

    def page(self, req: Request) -> Response:
        path = req.segments
        if not path:
            return self._list(req)
        if path == ["inbox", "_static", "inbox.js"]:
            script = (_HERE / "templates" / "inbox.js").read_bytes()
            return Response(200, script, "text/javascript; charset=utf-8")
        email = self.sandbox.store.find(path[1]) if len(path) >= 2 else None
        if email is None:
            return html_response(404, "<h1>Email not found</h1>")
        if len(path) == 2:
            return self._email(req, email)
        if len(path) == 4 and path[2] == "attachments":
            index = path[3]
            if not index.isdigit() or int(index) >= len(email.attachments):
                return html_response(404, "<h1>Attachment not found</h1>")
            return attachment_response(
                email.attachments[int(index)], download="download" in req.query
            )
        return html_response(404, "<h1>Not found</h1>")

    def _list(self, req: Request) -> Response:
        query = {name: req.query.get(name, "") for name in FILTERS}
        every = self.sandbox.emails
        statuses = sorted({e.status for e in every} | {"delivered", query["status"]})
        name = "_rows.html" if "partial" in req.query else "inbox.html"
        html = _env.get_template(name).render(
            emails=filter_emails(every, query),
            query=query,
            total=len(every),
            statuses=[s for s in statuses if s],
        )
        return html_response(200, html)

    def _email(self, req: Request, email: StoredEmail) -> Response:
        tab = req.query.get("tab", "html")
        if tab not in TABS:
            tab = "html"
        data = email.input
        deliveries = [
            d
            for d in self.sandbox.deliveries
            if email.id in json.dumps(d.get("payload"), default=str)
        ]
        html = _env.get_template("email.html").render(
            email=email,
            tab=tab,
            tabs=TABS,
            mobile=req.query.get("width") == "mobile",
            frame_html=resolve_cids(data.html, data.attachments)
            if data.html is not None
            else None,
            content_type=content_type,
            inline_types=INLINE_TYPES,
            event_rows=event_rows,
            highlight_html=highlight_html,
            deliveries=deliveries,
            spam=spam_report(data.subject or "", data.html or "", data.text or ""),
            raw=email_detail(email),
        )
        return html_response(200, html)
