"""Sign-up: store the user, queue a welcome email, say "check your inbox".

The view never waits on the email API: ``enqueue_email`` renders the
templates and puts the email in Redis, and an RQ worker sends it.
"""

from __future__ import annotations

import logging

from email_validator import EmailNotValidError
from email_validator import validate_email
from flask import Blueprint
from flask import flash
from flask import redirect
from flask import render_template
from flask import request
from flask import session
from flask import url_for
from flask.typing import ResponseReturnValue

from flask_poststack import enqueue_email
from flask_poststack import QueueUnavailableError

from .store import get_store

logger = logging.getLogger(__name__)

bp = Blueprint("auth", __name__)


@bp.route("/signup", methods=["GET", "POST"])
def signup() -> ResponseReturnValue:
    if request.method == "GET":
        return render_template("auth/signup.html", form={}, error=None)

    name = request.form.get("name", "").strip()
    error, email = _check_email(request.form.get("email", ""))
    if error is None and not name:
        error = "Please tell us your name."
    if error is not None:
        return render_template("auth/signup.html", form=request.form, error=error), 400

    store = get_store()
    user = store.add_user(email, name)
    try:
        # Rendered now (templates/emails/welcome.*), sent by the worker.
        job = enqueue_email(
            to=user.email,
            template="emails/welcome",
            context={"name": user.name, "site_url": url_for("index", _external=True)},
        )
    except QueueUnavailableError:
        # The account exists; only the welcome email is missing.
        logger.exception("Could not queue the welcome email for %s", user.email)
        flash("Your welcome email is delayed; you can use your account.", "error")
    else:
        store.add_email("welcome", user.email, job_id=job.id)
    session["signup_email"] = user.email
    return redirect(url_for("auth.check_inbox"), code=303)


@bp.get("/signup/done")
def check_inbox() -> str:
    return render_template("auth/check_inbox.html", email=session.get("signup_email"))


def _check_email(value: str) -> tuple[str | None, str]:
    """Return ``(error, normalised address)``."""
    try:
        # Syntax only: a deliverability (DNS) check would slow every sign-up.
        address = validate_email(value.strip(), check_deliverability=False)
    except EmailNotValidError as exc:
        return f"Please enter a valid email address ({exc}).", value
    user = get_store().get_user(address.normalized)
    if user is not None and user.undeliverable:
        return f"Mail to {address.normalized} bounced; please use another.", value
    return None, address.normalized
