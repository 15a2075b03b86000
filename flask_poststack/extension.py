"""The :class:`PostStack` extension and the per-app state it registers."""

from __future__ import annotations

import dataclasses
import os
import threading
import typing as t
import weakref

import poststack
from flask import current_app
from flask import Flask

from .config import check_api_key
from .config import load_settings
from .config import Settings

if t.TYPE_CHECKING:
    import redis
    from rq import Queue
    from rq.job import Job

    from .sending import SendResult

__all__ = ["PostStack", "get_state"]

#: Stands in for the key when sending is suppressed and none is configured,
#: so ``app.extensions["poststack"]`` is always a real client.
_PLACEHOLDER_KEY = "sk_test_suppressed"


@dataclasses.dataclass(eq=False)
class _State:
    """Everything Flask-PostStack keeps for one app, outside the SDK client."""

    settings: Settings
    #: Payloads captured while sending was suppressed, oldest first.
    outbox: list[dict[str, t.Any]] = dataclasses.field(default_factory=list)
    _redis: redis.Redis | None = None
    _lock: threading.Lock = dataclasses.field(default_factory=threading.Lock)
    #: RQ queues by (name, is_async), reused by ``sending.app_queue``.
    queues: dict[tuple[str, bool], Queue] = dataclasses.field(default_factory=dict)
    #: The SDK client(s) to close with the app.
    clients: list[poststack.PostStack] = dataclasses.field(default_factory=list)

    @property
    def redis(self) -> redis.Redis:
        """The app's Redis client: one connection pool per app, made lazily."""
        if self._redis is None:
            with self._lock:
                if self._redis is None:
                    import redis

                    # Timeouts so that a dead Redis fails an enqueue in
                    # seconds instead of hanging the request.
                    self._redis = redis.Redis.from_url(
                        self.settings.redis_url,
                        socket_connect_timeout=5,
                        socket_timeout=10,
                        health_check_interval=30,
                    )
        return self._redis


class PostStack:
    """The Flask-PostStack extension.

    Call :meth:`init_app` (or pass the app to the constructor) in your app
    factory. It builds one :class:`poststack.PostStack` client per app and
    stores it at ``app.extensions["poststack"]``, so views can use the SDK
    directly::

        current_app.extensions["poststack"].emails.send({...})

    The object keeps no per-app state itself, so one instance can serve any
    number of apps.

    :param app: an app to initialise right away.
    """

    def __init__(self, app: Flask | None = None) -> None:
        if app is not None:
            self.init_app(app)

    def init_app(self, app: Flask) -> None:
        """Register the extension on ``app``.

        Reads every ``POSTSTACK_*`` key from ``app.config``, falling back to
        ``os.environ``, and writes the effective values back into
        ``app.config``. Configuration is read once, here, except
        ``POSTSTACK_SUPPRESS_SEND``, which is read at each send.

        :raises RuntimeError: if the extension is already registered on ``app``.
        :raises ConfigurationError: for a missing or malformed setting. A
            missing API key is an error unless sending is suppressed.
        """
        if "poststack" in app.extensions:
            raise RuntimeError(
                "Flask-PostStack is already registered on this app. Call"
                " 'init_app' once per app, or reuse the existing"
                " app.extensions['poststack'] client."
            )
        settings = load_settings(app.config, os.environ)
        for key, value in settings.as_config().items():
            app.config.setdefault(key, value)
        if not _suppressed(app, settings) or settings.api_key is not None:
            check_api_key(settings.api_key)

        client = make_client(settings)
        app.extensions["poststack"] = client
        state = app.extensions["poststack.state"] = _State(settings=settings)
        state.clients.append(client)
        _live_apps.add(app)
        # Closes the client when the app is collected, or at interpreter exit.
        # The finalizer holds only the list of clients: anything that could
        # reach the app would keep it alive forever.
        weakref.finalize(app, _close_clients, state.clients)

        from .cli import poststack_cli

        app.cli.add_command(poststack_cli)

        # The webhook endpoint, when a secret is set (or as
        # POSTSTACK_WEBHOOK_REGISTER says); raises if its name is taken.
        from .webhooks import register_default_blueprint

        register_default_blueprint(app)

    def send_email(self, **kwargs: t.Any) -> SendResult:
        """Same as :func:`flask_poststack.send_email`."""
        from .sending import send_email

        return send_email(**kwargs)

    def enqueue_email(self, **kwargs: t.Any) -> Job:
        """Same as :func:`flask_poststack.enqueue_email`."""
        from .sending import enqueue_email

        return enqueue_email(**kwargs)

    @property
    def client(self) -> poststack.PostStack:
        """The current app's SDK client."""
        client: poststack.PostStack = current_app.extensions["poststack"]
        return client

    def __repr__(self) -> str:
        return f"<{type(self).__name__}>"


def make_client(settings: Settings) -> poststack.PostStack:
    """Build an SDK client from ``settings``."""
    return poststack.PostStack(
        api_key=settings.api_key or _PLACEHOLDER_KEY,
        base_url=settings.base_url,
        timeout=settings.timeout,
        max_retries=settings.max_retries,
    )


def get_state(app: Flask | None = None) -> _State:
    """Return the Flask-PostStack state of ``app`` (default: the current app)."""
    if app is None:
        app = t.cast(Flask, current_app._get_current_object())  # type: ignore[attr-defined]
    try:
        state: _State = app.extensions["poststack.state"]
    except KeyError:
        raise RuntimeError(
            "Flask-PostStack is not registered on this app. Did you forget"
            " to call 'PostStack(app)' or 'poststack.init_app(app)'?"
        ) from None
    return state


def app_client(app: Flask) -> poststack.PostStack:
    """``app``'s SDK client, for a real send: its API key is checked first.

    :raises ConfigurationError: naming ``POSTSTACK_API_KEY`` when it is
        missing (allowed at ``init_app`` while sending was suppressed).
    """
    check_api_key(get_state(app).settings.api_key)
    client: poststack.PostStack = app.extensions["poststack"]
    return client


def is_suppressed(app: Flask) -> bool:
    """Whether sends on ``app`` are captured instead of sent, right now."""
    return _suppressed(app, get_state(app).settings)


def _suppressed(app: Flask, settings: Settings) -> bool:
    # Read live from app.config so that toggling it (or TESTING) after
    # init_app takes effect: the flask-mail #96 trap.
    live = load_settings(
        {"POSTSTACK_SUPPRESS_SEND": app.config.get("POSTSTACK_SUPPRESS_SEND")}
    ).suppress_send
    return app.testing if live is None else live


# Process-wide bookkeeping for a fork: the child must not reuse the parent's
# connections. Holds apps weakly; no settings live here.
_live_apps: weakref.WeakSet[Flask] = weakref.WeakSet()


def _renew_clients_after_fork() -> None:
    for app in list(_live_apps):
        state = app.extensions.get("poststack.state")
        if state is not None:
            # Drop, don't close, the inherited client: closing would shut
            # down sockets (and TLS sessions) the parent is still using.
            client = app.extensions["poststack"] = make_client(state.settings)
            state.clients[:] = [client]
            state._lock = threading.Lock()


def _close_clients(clients: list[poststack.PostStack]) -> None:
    for client in clients:
        client.close()


os.register_at_fork(after_in_child=_renew_clients_after_fork)
