"""Sign-up: store the user and queue a welcome email in one transaction, then
say "check your inbox"; and a password reset, whose email has tracking off.

The views never wait on the email API: ``enqueue_email`` renders the
templates (all extend ``emails/layout``) and writes the email to the outbox
table in the view's transaction (``POSTSTACK_OUTBOX``); once the view
commits, it is pushed to Redis and an RQ worker sends it.
"""

from __future__ import annotations

from email_validator import EmailNotValidError
from email_validator import validate_email
from flask import abort
from flask import Blueprint
from flask import current_app
from flask import redirect
from flask import render_template
from flask import request
from flask import session
from flask import url_for
from flask.typing import ResponseReturnValue
from itsdangerous import BadSignature
from itsdangerous import URLSafeTimedSerializer
from sqlalchemy.exc import IntegrityError

from flask_poststack import enqueue_email

from .store import db
from .store import get_store

bp = Blueprint("auth", __name__)


@bp.route("/signup", methods=["GET", "POST"])
def signup() -> ResponseReturnValue:
    if request.method == "GET":
        return render_template("auth/signup.html", form={}, error=None)

    name = request.form.get("name", "").strip()
    error, email = _check_email(request.form.get("email", ""))
    if error is None and get_store().get_user(email) is not None:
        error = f"{email} already has an account."
    if error is None and not name:
        error = "Please tell us your name."
    if error is not None:
        return render_template("auth/signup.html", form=request.form, error=error), 400

    store = get_store()
    # One transaction: the user, the email's row and the welcome email's
    # outbox row (templates/emails/welcome.*, rendered now) are committed
    # together, or none of them is and nothing is sent.
    user = store.add_user(email, name)
    try:
        job = enqueue_email(
            to=user.email,
            template="emails/welcome",
            context={
                "name": user.name,
                "site_url": url_for("index", _external=True),
                # The layout's footer links to it; unsubscribe=True adds the
                # one-click List-Unsubscribe header as well.
                "unsubscribe_url": url_for(
                    "auth.unsubscribe", email=user.email, _external=True
                ),
            },
            unsubscribe=True,
        )
        store.add_email("welcome", user.email, job_id=job.id)
        db.session.commit()
    except IntegrityError:  # the address has an account (two sign-ups racing)
        db.session.rollback()  # and the welcome email with it
        error = f"{email} already has an account."
        return render_template("auth/signup.html", form=request.form, error=error), 400
    session["signup_email"] = user.email
    return redirect(url_for("auth.check_inbox"), code=303)


@bp.route("/reset", methods=["GET", "POST"])
def reset() -> ResponseReturnValue:
    if request.method == "GET":
        return render_template("auth/reset.html", sent=False)
    error, email = _check_email(request.form.get("email", ""))
    if error is None and get_store().get_user(email) is not None:
        token = _reset_tokens().dumps(email)
        reset_url = url_for("auth.new_password", token=token, _external=True)
        job = enqueue_email(
            to=email,
            template="emails/password_reset",
            context={"reset_url": reset_url},
            # Click tracking would rewrite the link through a redirect (and
            # break it in some mail clients): off for this email.
            tracking=False,
        )
        get_store().add_email("password_reset", email, job_id=job.id)
        db.session.commit()  # the outbox row with it: sent from here on
    # The same answer whether or not the account exists.
    return render_template("auth/reset.html", sent=True)


@bp.get("/reset/<token>")
def new_password(token: str) -> ResponseReturnValue:
    try:
        email = _reset_tokens().loads(token, max_age=3600)
    except BadSignature:
        abort(404)
    return render_template("auth/reset.html", sent=False, email=email)


@bp.get("/unsubscribe")
def unsubscribe() -> str:
    email = request.args.get("email", "")
    return render_template("auth/unsubscribed.html", email=email)


def _reset_tokens() -> URLSafeTimedSerializer:
    return URLSafeTimedSerializer(current_app.secret_key or "", salt="password-reset")


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
