"""Small helpers the unit tests share (fixtures are in ``conftest.py``)."""

from __future__ import annotations

import typing as t

import redis
from rq import Queue
from rq import SimpleWorker
from rq.serializers import JSONSerializer

from flask_poststack.sandbox import Sandbox


def messages(count: int, **extra: t.Any) -> list[t.Any]:
    """``count`` distinct emails, for the batch functions."""
    return [
        {"to": f"user{n}@example.com", "subject": f"Hi {n}", "text": "t", **extra}
        for n in range(count)
    ]


def work(
    conn: redis.Redis | str, worker_class: type[SimpleWorker] = SimpleWorker
) -> None:
    """Run every job queued on ``poststack`` in this process (burst, no scheduler)."""
    if isinstance(conn, str):
        with redis.Redis.from_url(conn) as client:
            return work(client, worker_class)
    queue = Queue("poststack", connection=conn, serializer=JSONSerializer)
    worker = worker_class([queue], connection=conn, serializer=JSONSerializer)
    worker.work(burst=True, with_scheduler=False)
    return None


def batch_requests(sandbox: Sandbox) -> list[dict[str, t.Any]]:
    """The ``POST /emails/batch`` requests the sandbox received."""
    return [r for r in sandbox.requests if r["path"] == "/emails/batch"]
