"""An example Flask app that sends its email with Flask-PostStack.

A skeleton for now: the app factory. The sign-up and billing blueprints, the
templates and the webhook receiver come with the extension.
"""

from __future__ import annotations

import typing as t

from flask import Flask


def create_app(test_config: t.Mapping[str, t.Any] | None = None) -> Flask:
    """Build the example app; ``test_config`` overrides the environment."""
    app = Flask(__name__)
    app.config.from_prefixed_env()
    if test_config:
        app.config.update(test_config)

    @app.get("/")
    def index() -> str:
        return "Flask-PostStack example app"

    return app
