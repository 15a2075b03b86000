"""What the reliability benchmarks share, on top of ``tests/harness.py``.

Importing this module puts the repository root on ``sys.path``, so that a
script run as ``python benchmarks/<name>.py`` can import ``tests.harness``
(the worker, Redis and sandbox helpers the end-to-end tests use).
"""

from __future__ import annotations

import contextlib
import datetime
import json
import sys
import typing as t
import zlib
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import _common  # noqa: E402  (after the path is set)

RESULTS = HERE / "results"


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
