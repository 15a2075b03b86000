"""The endpoint: its view, its blueprint and its registration by ``init_app``."""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
import typing as t

from flask import Blueprint
from flask import current_app
from flask import Flask
from flask import jsonify
from flask import request
from flask import Response
from flask.blueprints import BlueprintSetupState
from flask.sansio.app import App

from .. import signals
from .._state import get_state
from ..errors import WebhookVerificationError
from .dedupe import ClaimStore
from .dedupe import dedupe_key
from .dedupe import MemoryClaims
from .dedupe import PROCESSING_SECONDS
from .dedupe import RedisClaims
from .dedupe import Renewal
from .dedupe import StoreUnavailable
from .signature import SIGNATURE_HEADER
from .signature import verify_webhook

__all__ = [
    "BLUEPRINT_NAME",
    "receive_webhook",
    "register_default_blueprint",
    "webhook_blueprint",
]

logger = logging.getLogger(__name__)

#: The name ``init_app`` registers the blueprint under.
BLUEPRINT_NAME = "poststack_webhooks"

#: Where the per-app webhook state lives in ``app.extensions``.
_EXTENSION_KEY = "poststack.webhooks"

#: At most one bad-signature warning per app in this many seconds, so that
#: forged deliveries cannot flood the log.
_WARN_EVERY_SECONDS = 60.0


@dataclasses.dataclass(eq=False)
class _WebhookState:
    claims: ClaimStore
    warned_no_secret: bool = False
    # For each kind of refused signature ("wrong", "missing"), each with a
    # rate limit of its own: when its last warning was logged, and how many
    # were held back since.
    warned_at: dict[str, float] = dataclasses.field(default_factory=dict)
    held_back: dict[str, int] = dataclasses.field(default_factory=dict)
    lock: threading.Lock = dataclasses.field(default_factory=threading.Lock)

    def warning_due(self, kind: str) -> int | None:
        """``None`` to stay quiet, else how many ``kind`` warnings were held
        back since the last."""
        now = time.monotonic()
        with self.lock:
            last = self.warned_at.get(kind)
            if last is not None and now - last < _WARN_EVERY_SECONDS:
                self.held_back[kind] = self.held_back.get(kind, 0) + 1
                return None
            self.warned_at[kind] = now
            return self.held_back.pop(kind, 0)


def _error(status: int, message: str) -> Response:
    response = jsonify({"error": message})
    response.status_code = status
    return response


def _retry_later(message: str) -> Response:
    response = _error(503, message)
    response.headers["Retry-After"] = "60"
    return response


def _warn_bad_signature(state: _WebhookState, signature: str | None) -> None:
    # Never the secret, the header's value or the body: only what is wrong.
    held_back = state.warning_due("wrong" if signature else "missing")
    if held_back is None:
        return
    if signature:
        logger.warning(
            "PostStack webhook refused with 401: the %s header matches no secret"
            " in POSTSTACK_WEBHOOK_SECRET. If PostStack's own deliveries get"
            " this, check that POSTSTACK_WEBHOOK_SECRET holds the webhook's"
            " signingSecret (both, during a rotation). Logged at most once a"
            " minute; %d held back since the last.",
            SIGNATURE_HEADER,
            held_back,
        )
        return
    logger.warning(
        "PostStack webhook refused with 401: the request has no %s header, so"
        " it is not a signed PostStack delivery (or a proxy in front of the app"
        " drops the header); POSTSTACK_WEBHOOK_SECRET is not the cause. Logged"
        " at most once a minute; %d without the header held back since the last.",
        SIGNATURE_HEADER,
        held_back,
    )


def receive_webhook() -> Response:
    """The endpoint's view function (see :mod:`flask_poststack.webhooks`).

    Its import path, ``"flask_poststack.webhooks.receive_webhook"``, is what
    Flask-WTF's ``csrf.exempt`` takes.
    """
    if request.method == "HEAD":
        return Response(status=200)
    app: Flask = current_app._get_current_object()  # type: ignore[attr-defined]
    settings = get_state(app).settings
    webhook_state: _WebhookState = app.extensions[_EXTENSION_KEY]
    if not settings.webhook_secrets:
        if not webhook_state.warned_no_secret:
            webhook_state.warned_no_secret = True
            logger.error(
                "PostStack webhook refused: POSTSTACK_WEBHOOK_SECRET is not"
                " set, so no delivery can be verified. Set it to the"
                " webhook's signingSecret."
            )
        return _error(401, "invalid signature")

    body = request.get_data(cache=True)
    signature = request.headers.get(SIGNATURE_HEADER)
    try:
        event = verify_webhook(body, signature, settings.webhook_secrets)
    except WebhookVerificationError:
        _warn_bad_signature(webhook_state, signature)
        return _error(401, "invalid signature")
    except ValueError as exc:
        return _error(400, str(exc))

    window = settings.webhook_dedupe_seconds
    key = dedupe_key(event, body)
    claims = webhook_state.claims if window > 0 else None
    claim_seconds = min(window, PROCESSING_SECONDS)
    if claims is not None:
        try:
            found = claims.claim(key, claim_seconds)
        except StoreUnavailable:
            return _retry_later("dedupe store unavailable")
        if found == "done":
            return jsonify({"ok": True, "duplicate": True})
        if found == "busy":
            # Not 2xx: if the request dispatching it fails or dies, this
            # copy must come back.
            return _retry_later("this delivery is being processed")

    dispatched = False
    # Renewed while the receivers run, however long they take; stopped
    # before the claim is kept or released.
    renewal = None
    if claims is not None:
        renewal = Renewal(claims, key, claim_seconds).start()
    try:
        signals.webhook_received.send(app, event=event)
        dispatched = True
    except Exception:
        logger.exception(
            "A receiver of the PostStack webhook %s (event %s, email %s)"
            " raised; answering 500 so that PostStack delivers it again",
            event.type or "(no type)",
            event.id,
            event.email_id,
        )
        return _error(500, "receiver error")
    finally:
        if renewal is not None:
            renewal.stop()
        if claims is not None:
            if dispatched:
                claims.keep(key, window)
            else:
                claims.release(key)
    return jsonify({"ok": True})


class _WebhookBlueprint(Blueprint):
    def register(self, app: App, options: dict[str, t.Any]) -> None:
        name = options.get("name", self.name)
        if app.blueprints.get(name, self) is not self:
            raise ValueError(
                f"A blueprint named {name!r} is already registered on this app,"
                " so the PostStack webhook blueprint cannot use that name."
                " If init_app registered it (it does when"
                " POSTSTACK_WEBHOOK_SECRET is set), set"
                " POSTSTACK_WEBHOOK_REGISTER = False to register it yourself,"
                " or pass another name: webhook_blueprint(name=...)."
            )
        super().register(app, options)


def webhook_blueprint(
    url: str | None = None, *, name: str = BLUEPRINT_NAME
) -> Blueprint:
    """A blueprint with the webhook endpoint, to register yourself.

    ``init_app`` registers one by itself when ``POSTSTACK_WEBHOOK_SECRET``
    is set (see ``POSTSTACK_WEBHOOK_REGISTER``). To choose where and when::

        app.config["POSTSTACK_WEBHOOK_REGISTER"] = False
        poststack.init_app(app)
        app.register_blueprint(webhook_blueprint("/hooks/poststack"))

    Register it after ``init_app``: it reads the app's settings then.

    :param url: the endpoint's path; default ``POSTSTACK_WEBHOOK_URL``.
        A ``url_prefix`` given to ``register_blueprint`` is prepended.
    :param name: the blueprint's name; the endpoint is ``f"{name}.receive"``.
    :raises ValueError: at registration, if ``name`` is taken.
    :raises RuntimeError: at registration, if Flask-PostStack is not
        registered on the app.
    """
    blueprint = _WebhookBlueprint(name, __name__)
    blueprint.record(lambda state: _setup(state, url))
    return blueprint


def _setup(state: BlueprintSetupState, url: str | None) -> None:
    app = t.cast(Flask, state.app)
    settings = get_state(app).settings
    if _EXTENSION_KEY not in app.extensions:
        claims: ClaimStore
        if settings.webhook_dedupe_store == "redis":
            claims = RedisClaims(get_state(app).redis, settings.redis_url)
        else:
            claims = MemoryClaims()
        app.extensions[_EXTENSION_KEY] = _WebhookState(claims)
    if not settings.webhook_secrets:
        logger.warning(
            "The PostStack webhook endpoint is registered but"
            " POSTSTACK_WEBHOOK_SECRET is not set: every delivery will be"
            " refused with 401."
        )
    state.add_url_rule(
        url or settings.webhook_url,
        "receive",
        receive_webhook,
        methods=["POST", "HEAD"],
    )


#: Where the not-registered warning's rate limit lives in ``app.extensions``.
_UNREGISTERED_KEY = "poststack.webhooks.unregistered"


@dataclasses.dataclass(eq=False)
class _Unregistered:
    """When the last "POST to an unregistered endpoint" warning was logged."""

    warned_at: float | None = None
    lock: threading.Lock = dataclasses.field(default_factory=threading.Lock)

    def due(self) -> bool:
        now = time.monotonic()
        with self.lock:
            if self.warned_at is not None and now - self.warned_at < (
                _WARN_EVERY_SECONDS
            ):
                return False
            self.warned_at = now
            return True


def _has_endpoint(app: Flask) -> bool:
    return any(view is receive_webhook for view in app.view_functions.values())


def _warn_unregistered(response: Response) -> Response:
    """An ``after_request`` hook: a POST that 404s at ``POSTSTACK_WEBHOOK_URL``
    while no webhook endpoint is registered is most likely PostStack's own
    delivery, lost without a word. Say why, at most once a minute."""
    if response.status_code != 404 or request.method != "POST":
        return response
    app: Flask = current_app._get_current_object()  # type: ignore[attr-defined]
    settings = get_state(app).settings
    if request.path != settings.webhook_url or _has_endpoint(app):
        return response
    limit: _Unregistered = app.extensions[_UNREGISTERED_KEY]
    if limit.due():
        why = (
            "POSTSTACK_WEBHOOK_REGISTER is False"
            if settings.webhook_register is False
            else "POSTSTACK_WEBHOOK_SECRET is not set"
        )
        logger.warning(
            "A POST to %s (POSTSTACK_WEBHOOK_URL) answered 404: the PostStack"
            " webhook endpoint is not registered, because %s. Set"
            " POSTSTACK_WEBHOOK_SECRET to the webhook's signingSecret (init_app"
            " then registers it), or register webhook_blueprint() yourself"
            " with POSTSTACK_WEBHOOK_REGISTER = False. Logged at most once a"
            " minute.",
            request.path,
            why,
        )
    return response


def register_default_blueprint(app: Flask) -> None:
    """What ``init_app`` does: register the endpoint when so configured;
    otherwise, watch for deliveries that arrive at its path anyway."""
    settings = get_state(app).settings
    wanted = settings.webhook_register
    if wanted is None:
        wanted = bool(settings.webhook_secrets)
    if wanted:
        app.register_blueprint(webhook_blueprint())
    else:
        app.extensions[_UNREGISTERED_KEY] = _Unregistered()
        app.after_request(_warn_unregistered)
