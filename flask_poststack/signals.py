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
    after a suppressed send; for a queued email, also with its ``job``
    (``None`` for a direct send). A receiver that raises is logged and ignored:
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

email_dispatched = _signals.signal(
    "email-dispatched",
    doc="""Flask-Mail's signal: sent with ``message`` (a
    :class:`flask_poststack.flask_mail.Message`) once
    :meth:`Mail.send <flask_poststack.flask_mail.Mail.send>` has sent,
    captured or queued it, after ``email_sent`` (or ``email_enqueued``). The
    sender is the app. A receiver that raises is logged and ignored.""",
)

__all__ += ["email_dispatched"]

# Webhooks -----------------------------------------------------------------

webhook_received = _signals.signal(
    "webhook-received",
    doc="""Sent with ``event`` (a
    :class:`~flask_poststack.webhooks.WebhookEvent`) by the webhook endpoint
    for every verified, first-seen delivery, whatever its type; the sender is
    the app. Tell events apart by :attr:`event.kind
    <flask_poststack.webhooks.WebhookEvent.kind>` (``"delivered"``,
    ``"bounced"``, ...). A receiver that raises makes the endpoint answer 500
    so that PostStack delivers the event again: receivers must cope with
    seeing an event more than once.""",
)

__all__ += ["webhook_received"]
