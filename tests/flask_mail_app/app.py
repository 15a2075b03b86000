from __future__ import annotations

import json
import logging
from threading import Thread

from flask import current_app
from flask import Flask
from flask import render_template
from flask import request

from flask_poststack.flask_mail import email_dispatched  # was: flask_mail
from flask_poststack.flask_mail import Mail  # was: flask_mail
from flask_poststack.flask_mail import Message  # was: flask_mail

from .config import Config

mail = Mail()
log = logging.getLogger(__name__)


def send_async_email(app: Flask, msg: Message) -> None:
    with app.app_context():
        mail.send(msg)


def send_email(
    subject: str,
    sender: str | None,
    recipients: list[str],
    text_body: str,
    html_body: str | None = None,
    attachments: list[tuple[str, str, bytes]] | None = None,
) -> Thread:
    msg = Message(subject, sender=sender, recipients=recipients)
    msg.body = text_body
    msg.html = html_body
    for filename, content_type, data in attachments or []:
        msg.attach(filename, content_type, data)
    app = current_app._get_current_object()  # type: ignore[attr-defined]
    thread = Thread(target=send_async_email, args=(app, msg))
    thread.start()
    return thread


def log_message(app: Flask, message: Message) -> None:
    log.info("email sent: %s to %s", message.subject, message.recipients)


def create_app(config_class: type = Config) -> Flask:
    app = Flask(__name__)
    app.config.from_object(config_class)
    mail.init_app(app)
    email_dispatched.connect(log_message)

    @app.post("/reset_password")
    def reset_password() -> str:
        email = request.form["email"]
        send_email(
            "[Microblog] Reset Your Password",
            sender=None,
            recipients=[email],
            text_body=render_template("email/reset_password.txt", email=email),
            html_body=render_template("email/reset_password.html", email=email),
        ).join()
        return "Check your email"

    @app.post("/export")
    def export() -> str:
        posts = json.dumps(request.form.getlist("post")).encode()
        send_email(
            "[Microblog] Your blog posts",
            sender=app.config["ADMINS"][0],
            recipients=[request.form["email"]],
            text_body="Please find attached the archive of your posts.",
            attachments=[("posts.json", "application/json", posts)],
        ).join()
        return "Exported"

    @app.post("/newsletter")
    def newsletter() -> str:
        with mail.connect() as conn:
            for user in request.form.getlist("user"):
                conn.send(
                    Message(
                        "News", recipients=[user], body=f"Hello {user.split('@')[0]}"
                    )
                )
        return "Sent"

    return app
