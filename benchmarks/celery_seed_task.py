"""A hand-written Celery task, as a careful user writes it without
Flask-PostStack: one ``PostStack`` client per worker process, reused.

``celery_worker.py`` runs it side by side with ``flask_poststack.celery_tasks``.
"""

from __future__ import annotations

import logging
import os
import typing as t

from celery import Celery
from poststack import PostStack
from poststack import PostStackError

logger = logging.getLogger(__name__)

app = Celery(
    "seed",
    broker=os.environ["POSTSTACK_REDIS_URL"],
    backend=os.environ["POSTSTACK_REDIS_URL"],
)
app.conf.broker_connection_retry_on_startup = True
ps = PostStack(
    api_key=os.environ["POSTSTACK_API_KEY"],
    base_url=os.environ["POSTSTACK_BASE_URL"],  # the sandbox, not the API
)


@app.task(name="seed.send_welcome_email")
def send_welcome_email(email: str, name: str) -> t.Any:
    try:
        return ps.emails.send(
            {
                "from": "hello@example.com",
                "to": [email],
                "subject": "Welcome to Acme",
                "html": f"<h1>Welcome, {name}!</h1>",
            }
        )["id"]
    except PostStackError as exc:
        logger.error("PostStack send failed: %s (req %s)", exc.error, exc.request_id)
        raise
