"""``celery -A tests.e2e.celery_window worker``: the documented worker, held
in the window where kombu's Redis transport loses a task.

kombu takes a message off the queue (``BRPOP``) and then, in a second round
trip, records it as unacknowledged (``QoS.append``). This worker touches
the file named by ``CELERY_WINDOW_MARK`` and stops in between, so a test can
SIGKILL it there: the task is then on neither the queue nor the
unacknowledged hash.
"""

from __future__ import annotations

import os
import time
import typing as t

from kombu.transport import redis as kombu_redis

from flask_poststack.celery_tasks import app


def _held_append(self: t.Any, message: t.Any, delivery_tag: str) -> None:
    with open(os.environ["CELERY_WINDOW_MARK"], "w"):
        pass
    time.sleep(3600)  # until the test's SIGKILL


kombu_redis.QoS.append = _held_append  # type: ignore[method-assign]

__all__ = ["app"]
