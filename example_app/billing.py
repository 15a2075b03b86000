"""Billing: email a receipt with a PDF attached, right now.

``send_email`` waits for the API's answer, so the page can say whether it
worked; an API error becomes a message on the page, never a 500.
"""

from __future__ import annotations

import dataclasses
import logging

from flask import abort
from flask import Blueprint
from flask import flash
from flask import redirect
from flask import render_template
from flask import request
from flask import url_for
from flask.typing import ResponseReturnValue

from flask_poststack import Attachment
from flask_poststack import InvalidEmailError
from flask_poststack import PostStackError
from flask_poststack import send_email

from .pdf import text_pdf
from .store import db
from .store import get_store

logger = logging.getLogger(__name__)

bp = Blueprint("billing", __name__, url_prefix="/billing")


@dataclasses.dataclass(frozen=True)
class Order:
    id: int
    items: tuple[tuple[str, int], ...]  # (description, amount in cents)

    @property
    def total(self) -> int:
        return sum(amount for _, amount in self.items)


#: The app's only order, to keep the example short.
ORDERS = {42: Order(42, (("Pro plan, 1 month", 1900), ("Extra seat", 500)))}


def receipt_pdf(order: Order) -> bytes:
    lines = [f"Receipt for order #{order.id}", ""]
    lines += [f"{text:<30} {cents / 100:>8.2f} EUR" for text, cents in order.items]
    lines += ["", f"{'Total':<30} {order.total / 100:>8.2f} EUR"]
    return text_pdf(lines)


@bp.get("/")
def index() -> str:
    return render_template("billing/index.html", order=ORDERS[42])


@bp.post("/receipt/<int:order_id>")
def send_receipt(order_id: int) -> ResponseReturnValue:
    order = ORDERS.get(order_id) or abort(404)
    to = request.form.get("email", "")
    try:
        sent = send_email(
            to=to,
            template="emails/receipt",
            context={"order": order},
            attachments=[Attachment(f"receipt-{order.id}.pdf", receipt_pdf(order))],
        )
    except InvalidEmailError:  # bad input: nothing was sent
        flash("Please enter a valid email address.", "error")
    except PostStackError as exc:  # the API refused, after the SDK's retries
        logger.warning("Receipt for order %s not sent: %s", order.id, exc)
        flash(
            "We could not email your receipt just now. Please try again in a"
            f" few minutes (reference: {exc.request_id or 'none'}).",
            "error",
        )
    else:
        get_store().add_email("receipt", to.strip(), email_id=sent.id)
        db.session.commit()
        flash(f"Receipt sent to {to.strip()} ({sent.id}).", "info")
    return redirect(url_for("billing.index"), code=303)
