"""The :class:`PostStack` extension: registers Flask-PostStack on an app."""

from __future__ import annotations

import typing as t
import weakref

import poststack
from flask import appcontext_pushed
from flask import current_app
from flask import Flask

from ._optional import require_engine
from ._state import AppState
from ._state import get_state
from ._state import Mode
from ._state import STATE_KEY
from .cli import poststack_cli
from .client import ClientSlot
from .config import app_settings
from .config import written_back
from .previews import PreviewFunction
from .previews import register_previews
from .queueing import enqueue_email
from .sending import send_email
from .webhooks import register_default_blueprint

__all__ = ["PostStack"]


def _follow_testing(app: Flask, **_: t.Any) -> None:
    get_state(app).follow_testing()


class PostStack:
    """The Flask-PostStack extension.

    Call :meth:`init_app` (or pass the app to the constructor) in your app
    factory. It builds one :class:`poststack.PostStack` client per app and
    stores it at ``app.extensions["poststack"]``, so views can use the SDK
    directly::

        current_app.extensions["poststack"].emails.send({...})

    The object keeps no per-app state itself, so one instance can serve any
    number of apps; it holds the previews registered with :meth:`preview`.

    :param app: an app to initialise right away.
    """

    def __init__(self, app: Flask | None = None) -> None:
        #: Preview functions by name, for the ``/_poststack/previews`` pages.
        self.previews: dict[str, PreviewFunction] = {}
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
        :raises ConfigurationError: for a malformed setting, or
            ``POSTSTACK_QUEUE_BACKEND = "celery"`` without Celery installed
            or with a retry interval its broker would not wait.
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
        for backend in {m.settings.queue_backend for m in state.modes}:
            require_engine(backend)
        for m in state.modes:
            if m.settings.queue_backend == "celery":
                from .celery_tasks import check_retry_intervals

                check_retry_intervals(m.settings)
        for key, value in written_back(state.settings, app.config).items():
            app.config.setdefault(key, value)
        app.extensions[STATE_KEY] = state
        state.follow_testing()
        # The client at app.extensions["poststack"] follows a TESTING set
        # after init_app from the next app context on (requests, CLI, tests).
        appcontext_pushed.connect(_follow_testing, app)

        app.cli.add_command(poststack_cli)
        # The webhook endpoint, when a secret is set (or as
        # POSTSTACK_WEBHOOK_REGISTER says); raises if its name is taken.
        register_default_blueprint(app)
        # The preview pages, in debug mode (or as POSTSTACK_PREVIEWS says).
        register_previews(app, self.previews)

    @t.overload
    def preview(self, function: PreviewFunction, /) -> PreviewFunction: ...
    @t.overload
    def preview(
        self, name: str | None = None, /
    ) -> t.Callable[[PreviewFunction], PreviewFunction]: ...
    def preview(
        self, arg: PreviewFunction | str | None = None, /
    ) -> PreviewFunction | t.Callable[[PreviewFunction], PreviewFunction]:
        """Register a preview: a function that takes nothing and returns the
        arguments of :func:`~flask_poststack.send_email` (``template=`` and
        ``context=``, or any others). Use as ``@poststack.preview`` or
        ``@poststack.preview("name")``; the name defaults to the function's.
        See :doc:`/previews`.

        :raises ValueError: if a preview of that name is already registered.
        """

        def register(function: PreviewFunction) -> PreviewFunction:
            name = arg if isinstance(arg, str) else function.__name__
            if name in self.previews and self.previews[name] is not function:
                raise ValueError(f"a preview named {name!r} is already registered")
            self.previews[name] = function
            return function

        if callable(arg):
            return register(arg)
        return register

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
