"""The seeds' job function, as the PostStack Flask guide writes it.

A new ``PostStack`` client (and so a new connection pool) per job; the
benchmark in ``worker_classes.py`` runs it on rq's default forking worker to
measure what users get without Flask-PostStack.
"""

from __future__ import annotations

import logging
import os
import typing as t

from poststack import PostStack
from poststack import PostStackError

logger = logging.getLogger(__name__)


def send_welcome_email(email: str, name: str) -> t.Any:
    ps = PostStack(
        api_key=os.environ["POSTSTACK_API_KEY"],
        base_url=os.environ["POSTSTACK_BASE_URL"],  # the sandbox, not the API
    )
    try:
        return ps.emails.send(
            {
                "from": "hello@example.com",
                "to": [email],
                "subject": "Welcome to Acme",
                "html": f"<h1>Welcome, {name}!</h1>",
            }
        )
    except PostStackError as exc:
        logger.error("PostStack send failed: %s (req %s)", exc.error, exc.request_id)
        raise
