"""Receive PostStack webhooks: delivery, bounce and complaint events.

``init_app`` registers the endpoint by itself when ``POSTSTACK_WEBHOOK_SECRET``
is set; connect to :data:`~flask_poststack.signals.webhook_received` and look
at the event's :attr:`~WebhookEvent.kind`::

    from flask_poststack.signals import webhook_received

    @webhook_received.connect_via(app)
    def on_event(sender, event, **extra):
        if event.kind == "bounced":
            mark_undeliverable(event.recipient)

Each request goes through the same steps:

1. ``HEAD`` answers 200 (endpoint checks); other methods but ``POST`` 405.
2. The ``X-PostStack-Signature`` header is checked against the raw body with
   the SDK's verifier, for each configured secret. Failing that: 401, a
   warning in the log (at most one a minute per app), and nothing else
   happens. With no secret configured every delivery fails, and one error
   is logged.
3. A body that is not a JSON object: 400.
4. A delivery seen before (within ``POSTSTACK_WEBHOOK_DEDUPE_SECONDS``) is
   acknowledged with 200 and not dispatched again. A copy that arrives
   while the first is being dispatched, or any delivery while the dedupe
   store (Redis) cannot be reached: 503, so PostStack delivers it again
   later.
5. :data:`~flask_poststack.signals.webhook_received` is sent. A receiver
   that raises: 500 (PostStack retries, and the retry is dispatched again).
   Otherwise 200.

The modules: :mod:`~flask_poststack.webhooks.events` (the event and its
parser), :mod:`~flask_poststack.webhooks.signature` (checking and signing),
:mod:`~flask_poststack.webhooks.dedupe` (the dedupe stores) and
:mod:`~flask_poststack.webhooks.view` (the endpoint). Import the names below
from this package.
"""

from __future__ import annotations

from .events import EventKind
from .events import parse_event
from .events import WebhookEvent
from .signature import make_event_payload
from .signature import sign_webhook
from .signature import SIGNATURE_HEADER
from .signature import verify_webhook
from .view import BLUEPRINT_NAME
from .view import receive_webhook
from .view import register_default_blueprint
from .view import webhook_blueprint

__all__ = [
    "BLUEPRINT_NAME",
    "SIGNATURE_HEADER",
    "EventKind",
    "WebhookEvent",
    "make_event_payload",
    "parse_event",
    "receive_webhook",
    "register_default_blueprint",
    "sign_webhook",
    "verify_webhook",
    "webhook_blueprint",
]

# The path Flask-WTF's ``csrf.exempt("flask_poststack.webhooks.receive_webhook")``
# compares with the view's own ``__module__`` and ``__name__``.
receive_webhook.__module__ = __name__
