"""Support: a contact form still written the Flask-Mail way.

``Message`` and ``mail.send`` as an app that used Flask-Mail has them; only
the import changed (``flask_poststack.flask_mail``). The email goes through
Flask-PostStack like the others, so it is tested the same way.
"""

from __future__ import annotations

from flask import Blueprint
from flask import current_app
from flask import flash
from flask import redirect
from flask import render_template
from flask import request
from flask import url_for
from flask.typing import ResponseReturnValue

from flask_poststack import InvalidEmailError
from flask_poststack import PostStackError
from flask_poststack.flask_mail import Mail
from flask_poststack.flask_mail import Message

mail = Mail()

bp = Blueprint("support", __name__, url_prefix="/support")


@bp.route("/", methods=["GET", "POST"])
def contact() -> ResponseReturnValue:
    if request.method == "GET":
        return render_template("support/contact.html")
    reply_to = request.form.get("email", "").strip()
    msg = Message(
        f"Support request from {reply_to}",
        recipients=[current_app.config["SUPPORT_ADDRESS"]],
        reply_to=reply_to,
        body=request.form.get("message", ""),
    )
    if "screenshot" in request.files and request.files["screenshot"].filename:
        upload = request.files["screenshot"]
        msg.attach(upload.filename, upload.mimetype, upload.read())
    try:
        mail.send(msg)
    except InvalidEmailError as exc:  # nothing was sent
        flash(f"Please check the form ({exc.argument}).", "error")
    except PostStackError:
        flash("We could not send your message just now; please try again.", "error")
    else:
        flash("Thanks, we will get back to you.", "info")
    return redirect(url_for("support.contact"), code=303)
