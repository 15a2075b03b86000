"""The :class:`PostStack` extension: registers Flask-PostStack on an app."""

from __future__ import annotations

import os
import weakref

import poststack
from flask import current_app
from flask import Flask

from ._state import AppState
from ._state import Mode
from ._state import STATE_KEY
from .cli import poststack_cli
from .client import ClientSlot
from .config import app_settings
from .config import OUTSIDE_KEYS
from .queueing import enqueue_email
from .sending import send_email
from .webhooks import register_default_blueprint

__all__ = ["PostStack"]


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
        ``app.config``. While ``TESTING`` is on (checked at each use, so it
        may be set after ``init_app``), the keys that reach outside (API key,
        base URL, Redis URL, suppression, eager mode) come from
        ``app.config`` only; those found in the environment are therefore not
        written back. Configuration is read once, here, except
        ``POSTSTACK_SUPPRESS_SEND`` and ``POSTSTACK_EAGER``, which are read
        at each use. No API key is needed to load the app or run its
        CLI: a send without one fails, naming ``POSTSTACK_API_KEY``.

        :raises RuntimeError: if the extension is already registered on ``app``.
        :raises ConfigurationError: for a malformed setting.
        """
        if "poststack" in app.extensions:
            raise RuntimeError(
                "Flask-PostStack is already registered on this app. Call"
                " 'init_app' once per app, or reuse the existing"
                " app.extensions['poststack'] client."
            )
        app_ref = weakref.ref(app)

        def mode(testing: bool) -> Mode:
            settings = app_settings(app.config, testing=testing)

            def on_new(client: poststack.PostStack) -> None:  # in a forked child
                renewed = app_ref()
                if renewed is not None and renewed.testing == testing:
                    renewed.extensions["poststack"] = client

            slot = ClientSlot(settings, on_new=on_new)
            # Closes the client when the app is collected, or at interpreter exit.
            weakref.finalize(app, slot.close)
            in_config = app.config.get("POSTSTACK_REDIS_URL") is not None
            return Mode(settings, slot, redis_url_in_config=in_config)

        state = AppState(app, (mode(False), mode(True)))
        # Keys that reach outside stay out of app.config when they come from
        # the environment: a live TESTING must not find them there.
        for key, value in state.settings.as_config().items():
            if key not in OUTSIDE_KEYS or os.environ.get(key) is None:
                app.config.setdefault(key, value)
        app.extensions[STATE_KEY] = state
        state.follow_testing()
        app.before_request(state.follow_testing)

        app.cli.add_command(poststack_cli)
        # The webhook endpoint, when a secret is set (or as
        # POSTSTACK_WEBHOOK_REGISTER says); raises if its name is taken.
        register_default_blueprint(app)

    #: Same as :func:`flask_poststack.send_email`.
    send_email = staticmethod(send_email)
    #: Same as :func:`flask_poststack.enqueue_email`.
    enqueue_email = staticmethod(enqueue_email)

    @property
    def client(self) -> poststack.PostStack:
        """The current app's SDK client."""
        client: poststack.PostStack = current_app.extensions["poststack"]
        return client

    def __repr__(self) -> str:
        return f"<{type(self).__name__}>"
