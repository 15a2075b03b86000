"""Email previews in the browser, at ``/_poststack/previews``: a
development-only blueprint that shows what :func:`~flask_poststack.send_email`
would send for the arguments a registered preview function returns.

A preview is built by :func:`~flask_poststack.message.build_payload`, the
code every send goes through, so a preview and a send have the same subject,
HTML and text, byte for byte.
"""

from __future__ import annotations

import base64
import collections.abc as cabc
import typing as t
from pathlib import Path
from urllib.parse import urlsplit

import flask
import jinja2
from werkzeug.wrappers import Response as BaseResponse

from ._loopback import forwarded_from_elsewhere
from ._loopback import is_loopback_address
from ._loopback import is_loopback_host
from ._loopback import is_loopback_origin
from ._state import get_state
from ._templates import undefined_variables
from .config import TESTING_BASE_URL
from .errors import FlaskPostStackError
from .message import build_payload
from .message import EmailArgs
from .message import Payload

__all__ = ["PREVIEWS_URL", "PreviewFunction", "previews_blueprint"]

#: Where the preview pages are.
PREVIEWS_URL = "/_poststack/previews"
#: A preview: takes nothing, returns the arguments of ``send_email``
#: (:class:`~flask_poststack.message.EmailArgs`, or any mapping of them).
PreviewFunction = t.Callable[[], "EmailArgs | t.Mapping[str, t.Any]"]

_env = jinja2.Environment(
    loader=jinja2.FileSystemLoader(Path(__file__).with_name("templates")),
    autoescape=True,
    undefined=jinja2.StrictUndefined,
)
#: The pages need no script: the email's HTML is in a sandboxed frame, and
#: loads nothing but the ``data:`` URLs its ``cid:`` images became.
_CSP = (
    "default-src 'none'; style-src 'unsafe-inline'; img-src 'self' data:;"
    " form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
)
_DRAFT_KEYS = frozenset({"from", "to", "subject", "html", "text"})


def previews_enabled(app: flask.Flask) -> bool:
    """``POSTSTACK_PREVIEWS``, or ``app.debug`` when it is unset."""
    setting = get_state(app).settings.previews
    return app.debug if setting is None else setting


def is_local(environ: t.Mapping[str, t.Any]) -> bool:
    """Whether a request is from this machine, to this machine: a loopback
    client address, no proxy header naming another client, and a loopback
    ``Host`` (so a page whose name was rebound to 127.0.0.1 cannot read
    the previews or press "Send to the sandbox")."""
    headers = [
        (key[5:].replace("_", "-"), str(value))
        for key, value in environ.items()
        if key.startswith("HTTP_")
    ]
    return (
        is_loopback_address(environ.get("REMOTE_ADDR"))
        and is_loopback_host(str(environ.get("HTTP_HOST", "")))
        and not forwarded_from_elsewhere(headers)
    )


def sends_to_sandbox(base_url: str) -> bool:
    """Whether ``POSTSTACK_BASE_URL`` is on this machine (a sandbox), so
    that "send to sandbox" can never reach the real API."""
    if base_url == TESTING_BASE_URL:  # a testing app that names no sandbox
        return False
    return is_loopback_host(urlsplit(base_url).netloc.rpartition("@")[2])


class Preview(t.NamedTuple):
    """One rendered preview: the payload, or the error that stopped it."""

    name: str
    payload: Payload | None
    error: str | None
    #: ``(template file, [variable, ...])`` the context does not define.
    undefined: list[tuple[str, list[str]]]


def preview_args(
    name: str, function: PreviewFunction, locale: str | None = None
) -> t.Mapping[str, t.Any]:
    """What a preview function returns, with ``locale`` (the page's locale
    switch) in place of its own when given."""
    args = function()
    if not isinstance(args, cabc.Mapping):
        raise TypeError(
            f"preview {name!r} must return a dict of send_email arguments,"
            f" not {type(args).__name__}"
        )
    return {**args, "locale": locale} if locale else args


def render_preview(
    name: str, function: PreviewFunction, locale: str | None = None
) -> Preview:
    """Call a preview function and build its payload, as a send would."""
    try:
        args = preview_args(name, function, locale)
        undefined = []
        template = args.get("template")
        if isinstance(template, str):
            undefined = undefined_variables(template, args.get("context") or {})
        payload = build_payload(get_state().settings, args)
    except Exception as exc:  # the app's own preview code: show, don't 500
        return Preview(name, None, f"{type(exc).__name__}: {exc}", [])
    return Preview(name, payload, None, undefined)


def frame_html(payload: Payload) -> str:
    """The payload's HTML with ``cid:`` images resolved from its own
    attachments, for the sandboxed frame."""
    from .sandbox.inbox import resolve_cids
    from .sandbox.validation import Attachment

    attachments = [
        Attachment(
            item["filename"],
            base64.b64decode(item["content"]),
            item.get("content_type"),
            item.get("content_id"),
        )
        for item in payload.get("attachments", [])
    ]
    return resolve_cids(payload.get("html", ""), attachments)


def spam_score(payload: Payload) -> dict[str, t.Any] | None:
    """The sandbox's ``POST /emails/preview`` spam report for a payload, or
    ``None`` when it cannot be had (no key, the sandbox is down)."""
    import httpx
    import poststack

    draft = {k: v for k, v in payload.items() if k in _DRAFT_KEYS}
    try:
        client = get_state().client_slot.for_send()
        answer = client.emails.preview(draft)
    except (FlaskPostStackError, poststack.PostStackError, httpx.HTTPError):
        return None
    spam = answer.get("spam") if isinstance(answer, dict) else None
    return spam if isinstance(spam, dict) else None


def previews_blueprint(registry: t.Mapping[str, PreviewFunction]) -> flask.Blueprint:
    """The preview pages for the functions in ``registry`` (read at each
    request, so previews registered after ``init_app`` appear)."""
    bp = flask.Blueprint("poststack_previews", __name__, url_prefix=PREVIEWS_URL)

    @bp.before_request
    def local_only() -> None:
        if not is_local(flask.request.environ):
            flask.abort(404)

    @bp.after_request
    def strict(response: flask.Response) -> flask.Response:
        response.headers.setdefault("Content-Security-Policy", _CSP)
        response.headers["X-Content-Type-Options"] = "nosniff"
        return response

    def find(name: str) -> PreviewFunction:
        function = registry.get(name)
        if function is None:
            flask.abort(404)
        return function

    @bp.get("/")
    def index() -> str:
        return _env.get_template("poststack/previews/index.html").render(
            previews=[render_preview(n, f) for n, f in sorted(registry.items())],
            url=PREVIEWS_URL,
        )

    @bp.get("/<name>")
    def show(name: str) -> str:
        locale = flask.request.args.get("locale") or None
        preview = render_preview(name, find(name), locale)
        settings = get_state().settings
        can_send = sends_to_sandbox(settings.base_url)
        return _env.get_template("poststack/previews/preview.html").render(
            spam=spam_score(preview.payload) if can_send and preview.payload else None,
            preview=preview,
            p=preview.payload or {},
            frame_html=frame_html(preview.payload) if preview.payload else None,
            mobile=flask.request.args.get("width") == "mobile",
            url=PREVIEWS_URL,
            can_send=can_send,
            inbox=settings.base_url.rstrip("/") + "/inbox/",
            sent=flask.request.args.get("sent"),
            locale=locale or "",
            babel="babel" in flask.current_app.extensions,
        )

    @bp.get("/<name>.json")
    def as_json(name: str) -> flask.Response:
        locale = flask.request.args.get("locale") or None
        preview = render_preview(name, find(name), locale)
        return flask.jsonify(
            payload=preview.payload,
            error=preview.error,
            undefined=dict(preview.undefined),
        )

    @bp.get("/<name>/attachments/<int:index>")
    def attachment(name: str, index: int) -> flask.Response:
        from .sandbox.inbox import attachment_response
        from .sandbox.validation import Attachment

        items = (render_preview(name, find(name)).payload or {}).get("attachments")
        if not items or index >= len(items):
            flask.abort(404)
        item = items[index]
        answer = attachment_response(
            Attachment(
                item["filename"],
                base64.b64decode(item["content"]),
                item.get("content_type"),
            ),
            download="download" in flask.request.args,
        )
        return flask.Response(
            answer.body, content_type=answer.content_type, headers=answer.headers
        )

    @bp.post("/<name>/send")
    def send(name: str) -> BaseResponse:
        import poststack

        from .sending import send_email

        # A form of another origin must not send: browsers name their own.
        origin = flask.request.headers.get("Origin", "")
        same = origin.rstrip("/") == flask.request.host_url.rstrip("/")
        if not (same and is_loopback_origin(origin)):
            flask.abort(
                403,
                description="A preview is sent only from its own page: the"
                " request needs this page's loopback Origin header.",
            )
        if not sends_to_sandbox(get_state().settings.base_url):
            flask.abort(
                403,
                description="POSTSTACK_BASE_URL is not a sandbox on this"
                " machine, so a preview is never sent from here.",
            )
        locale = flask.request.form.get("locale") or None
        preview = render_preview(name, find(name), locale)
        if preview.payload is None:  # the page shows the error; nothing sent
            flask.abort(400, description=preview.error)
        args = t.cast(EmailArgs, preview_args(name, find(name), locale))
        try:
            result = send_email(**args)
        except (FlaskPostStackError, poststack.PostStackError) as exc:
            # Most often POSTSTACK_API_KEY is not set: say so on the page.
            flask.abort(400, description=f"Not sent: {exc}")
        back = flask.url_for(".show", name=name, sent=result.id, locale=locale)
        return flask.redirect(back)

    return bp


def register_previews(
    app: flask.Flask, registry: t.Mapping[str, PreviewFunction]
) -> None:
    """Register the preview pages on ``app`` if :func:`previews_enabled`."""
    if previews_enabled(app):
        app.register_blueprint(previews_blueprint(registry))
