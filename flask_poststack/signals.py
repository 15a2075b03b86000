"""Signals Flask-PostStack sends (blinker; ``pip install blinker`` comes with Flask).

Connect receivers as with Flask's own signals::

    from flask_poststack import signals

    @signals.email_sent.connect_via(app)
    def on_sent(sender, payload, result, **extra):
        ...

The sender is the app, or ``None`` inside a worker, which has no app.
Receivers should accept ``**extra``: new keyword arguments may be added.
"""

from __future__ import annotations

from blinker import Namespace

__all__ = ["before_send", "email_enqueued", "email_failed", "email_sent"]

_signals = Namespace()

before_send = _signals.signal(
    "before-send",
    doc="""Sent with ``payload`` (the wire dict) just before an email is sent
    (``send_email``, and the worker for queued email) or queued
    (``enqueue_email``). Receivers may change ``payload`` in place, or raise
    :exc:`~flask_poststack.SendCancelled` to stop it.""",
)

email_sent = _signals.signal(
    "email-sent",
    doc="""Sent with ``payload`` and ``result`` (a
    :class:`~flask_poststack.SendResult`) after the API accepted an email, or
    after a suppressed send. A receiver that raises is logged and ignored:
    the email was sent.""",
)

email_failed = _signals.signal(
    "email-failed",
    doc="""Sent with ``payload`` and ``exception`` when a send failed. In a
    worker, also with ``job`` and ``will_retry``.""",
)

email_enqueued = _signals.signal(
    "email-enqueued",
    doc="""Sent with ``payload`` and ``job`` once ``enqueue_email`` has put
    the email in Redis.""",
)

# Webhooks -----------------------------------------------------------------
# Sent by the webhook blueprint (flask_poststack.webhooks) with ``event``, a
# WebhookEvent. The sender is the app. A receiver that raises makes the
# endpoint answer 500, so PostStack delivers the event again: receivers must
# cope with seeing an event more than once.

webhook_received = _signals.signal(
    "webhook-received",
    doc="""Sent with ``event`` (a
    :class:`~flask_poststack.webhooks.WebhookEvent`) for every verified,
    first-seen webhook delivery, whatever its type, before the per-type
    signal below. A receiver that raises makes the endpoint answer 500 so
    that PostStack retries.""",
)

webhook_sent = _signals.signal(
    "webhook-sent",
    doc="""Sent with ``event`` for ``email.sent``: PostStack handed the email
    to a mail server.""",
)

webhook_delivered = _signals.signal(
    "webhook-delivered",
    doc="""Sent with ``event`` for ``email.delivered``.""",
)

webhook_deferred = _signals.signal(
    "webhook-deferred",
    doc="""Sent with ``event`` for temporary delivery problems,
    ``email.deferred`` and ``email.soft_bounced``: PostStack keeps trying.""",
)

webhook_bounced = _signals.signal(
    "webhook-bounced",
    doc="""Sent with ``event`` for ``email.bounced``, a permanent bounce: the
    address does not take mail. (Soft bounces go to
    :data:`webhook_deferred`.)""",
)

webhook_complained = _signals.signal(
    "webhook-complained",
    doc="""Sent with ``event`` for ``email.complained``: the recipient marked
    the email as spam.""",
)

webhook_opened = _signals.signal(
    "webhook-opened",
    doc="""Sent with ``event`` for ``email.opened``.""",
)

webhook_clicked = _signals.signal(
    "webhook-clicked",
    doc="""Sent with ``event`` for ``email.clicked``.""",
)

webhook_delivery_failed = _signals.signal(
    "webhook-delivery-failed",
    doc="""Sent with ``event`` for ``email.failed``: PostStack gave up on the
    email. (Not :data:`email_failed`, which is about a send from this app
    failing.)""",
)

__all__ += [
    "webhook_bounced",
    "webhook_clicked",
    "webhook_complained",
    "webhook_deferred",
    "webhook_delivered",
    "webhook_delivery_failed",
    "webhook_opened",
    "webhook_received",
    "webhook_sent",
]
