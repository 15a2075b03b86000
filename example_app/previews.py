"""Previews of the app's emails, at ``/_poststack/previews`` in debug mode
(``flask --debug run``) or with ``POSTSTACK_PREVIEWS=1`` (the demo sets it).

Each returns the arguments the real view passes to ``send_email`` or
``enqueue_email``, with sample data.
"""

from __future__ import annotations

import typing as t

from flask_poststack import Attachment

from . import poststack
from .billing import ORDERS
from .billing import receipt_pdf


@poststack.preview
def welcome() -> dict[str, t.Any]:
    return {
        "to": "ada@example.com",
        "template": "emails/welcome",
        "context": {"name": "Ada", "site_url": "http://127.0.0.1:5025/"},
    }


@poststack.preview
def receipt() -> dict[str, t.Any]:
    order = ORDERS[42]
    return {
        "to": "ada@example.com",
        "template": "emails/receipt",
        "context": {"order": order},
        "attachments": [Attachment(f"receipt-{order.id}.pdf", receipt_pdf(order))],
    }
