"""What the reliability benchmarks share: real workers, Redis and the sandbox.

Used by ``benchmarks/soak.py`` and ``benchmarks/redis_durability.py``. The
workers, the app and the Redis helpers are the end-to-end tests' own
(``tests/e2e/harness.py``), so the benchmarks start workers exactly as the
tests do; what only the benchmarks need (fault plans, the secret scan, the
machine description) is here.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import sys
import typing as t
import zlib
from pathlib import Path

import _common
import redis
from rq import Worker

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
sys.path.insert(0, str(HERE.parent))  # the checkout's tests package

from tests.e2e.harness import API_KEY  # noqa: E402
from tests.e2e.harness import dump_redis  # noqa: E402
from tests.e2e.harness import failure_lines  # noqa: E402
from tests.e2e.harness import make_app  # noqa: E402
from tests.e2e.harness import registry_counts  # noqa: E402
from tests.e2e.harness import rq_queue  # noqa: E402
from tests.e2e.harness import settings_of  # noqa: E402
from tests.e2e.harness import Workers  # noqa: E402

__all__ = [
    "API_KEY",
    "RESULTS",
    "Workers",
    "add_faults",
    "current_jobs_of",
    "dump_redis",
    "failure_lines",
    "machine",
    "make_app",
    "registry_counts",
    "rq_queue",
    "secret_scan",
    "settings_of",
    "write_json",
]


def current_jobs_of(conn: redis.Redis, pid: int) -> list[str]:
    """The ids of every job the worker process ``pid`` has in flight (one
    unless POSTSTACK_WORKER_CONCURRENCY is set; rq 2.x tells only one)."""
    for worker in Worker.all(connection=conn):
        if worker.pid == pid:
            executions = getattr(worker, "get_current_executions", None)
            ids = [e.job_id for e in executions()] if executions else []
            job_id = worker.get_current_job_id()
            return ids or ([job_id] if job_id else [])
    return []


def add_faults(
    sandbox: t.Any,
    *,
    error: float,
    throttle: float,
    drop_after: float,
    seed: int,
) -> list[tuple[str, dict[str, t.Any], float]]:
    """Make ``POST /emails`` fail with these overall probabilities.

    5xx (500/502/503/504 alike), throttling 429s (``Retry-After`` 0 or 1,
    half each) and a connection reset after the email is stored. Rules are
    tried in order and the first that fires decides, so each rule's own
    probability is its share of what the earlier rules let through.
    """
    sandbox.faults.seed(seed)
    plan: list[tuple[str, dict[str, t.Any], float]] = [
        *[("error", {"status": s}, error / 4) for s in (500, 502, 503, 504)],
        ("throttle", {"retry_after": 0}, throttle / 2),
        ("throttle", {"retry_after": 1}, throttle / 2),
        ("drop_after", {}, drop_after),
    ]
    left = 1.0
    for kind, fields, overall in plan:
        own = min(1.0, overall / left) if left > 0 else 0.0
        left -= overall
        sandbox.faults.add(kind, method="POST", path="/emails", probability=own,
                           **fields)  # fmt: skip
    return plan


def _texts(blob: bytes) -> list[bytes]:
    """``blob`` and, if it is zlib data (rq compresses exc_info), its contents."""
    out = [blob]
    with contextlib.suppress(zlib.error):
        out.append(zlib.decompress(blob))
    return out


def secret_scan(
    *,
    secret: str,
    redis_blobs: list[bytes],
    jobs: list[t.Any],
    logs: str,
    other_text: str = "",
) -> dict[str, t.Any]:
    """Where ``secret`` appears: Redis, jobs (meta, exc_info, results), logs.

    ``secret`` should be the random part of the API key (without the
    ``sk_test_`` prefix), so that a partial leak is caught too.
    """
    needle = secret.encode()
    redis_hits = sum(
        1 for blob in redis_blobs for text in _texts(blob) if needle in text
    )
    job_hits = 0
    exception_texts = 0
    for job in jobs:
        texts = [json.dumps(job.meta, default=str)]
        if job.exc_info:
            texts.append(str(job.exc_info))
            exception_texts += 1
        for result in job.results():
            if result.exc_string:
                texts.append(str(result.exc_string))
                exception_texts += 1
        job_hits += sum(secret in text for text in texts)
    log_lines = logs.splitlines()
    log_hits = sum(secret in line for line in log_lines)
    other_hits = other_text.count(secret)
    return {
        "redis_blobs_scanned": len(redis_blobs),
        "redis_hits": redis_hits,
        "jobs_scanned": len(jobs),
        "exception_texts_scanned": exception_texts,
        "job_hits": job_hits,
        "log_lines_scanned": len(log_lines),
        "traceback_lines_scanned": sum("Traceback" in line for line in log_lines),
        "log_hits": log_hits,
        "other_hits": other_hits,
        "clean": redis_hits == job_hits == log_hits == other_hits == 0,
    }


def machine() -> dict[str, t.Any]:
    """Where and with what the figures were taken, and when."""
    return {"date": datetime.date.today().isoformat(), **_common.machine()}


write_json = _common.write_json
