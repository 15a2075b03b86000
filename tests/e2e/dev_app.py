"""A small user app for ``tests/e2e/test_dev.py``: a sign-up that queues a
welcome email. Its settings come from the environment, as the exports that
``flask poststack dev`` prints set them."""

from __future__ import annotations

from flask import Flask
from flask import request

from flask_poststack import enqueue_email
from flask_poststack import PostStack


def create_app() -> Flask:
    app = Flask(__name__)
    app.config["POSTSTACK_DEFAULT_FROM"] = "Dev <dev@example.com>"
    PostStack(app)

    @app.post("/signup")
    def signup() -> tuple[str, int]:
        job = enqueue_email(
            to=request.form["email"],
            subject="Welcome to the dev app",
            text=f"Hello {request.form['name']}!",
        )
        return job.id, 202

    return app
