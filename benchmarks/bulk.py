"""10,000 emails end to end: ``enqueue_batch`` against 10,000 single jobs.

Processes, all on 127.0.0.1: the sandbox at 20 ms API latency, a
``redis-server``, and two ``PostStackWorker`` subprocesses (the documented
command) that stay up for the whole run, so that their start-up is not
timed. Each leg times from the first enqueue call until the sandbox reports
(``GET /_sandbox/stats``) that it has stored all N emails:

* ``enqueue_batch(messages)``: one job per 100 emails, each sent by the
  worker as one ``POST /emails/batch``;
* ``enqueue_many(messages)``: one ordinary job per email (pipelined, 1,000
  jobs per call), each sent as one ``POST /emails``.

The legs run batch, singles, batch (the batch figure is the median of its
two legs); both get the same N messages (distinct recipients). After each
leg the sandbox's emails are checked for exactly-once: N stored, N distinct
recipients, no replays. Target: batch at least 20x faster. Writes
``benchmarks/results/bulk.json``.

    python benchmarks/bulk.py [--quick] [--count 10000]

``--quick`` uses 2,000 emails per leg; nothing is extrapolated.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
import typing as t

from _common import Admin
from _common import make_app
from _common import print_table
from _common import redis_process
from _common import sandbox_process
from _common import SMALL_EMAIL
from _common import wait_for_workers
from _common import workers
from _common import write_results
from flask import Flask

from flask_poststack import enqueue_batch
from flask_poststack import enqueue_many

LATENCY = 0.020
WORKERS = 2
TARGET = 20.0
#: No leg may take longer than this.
DEADLINE = 400.0
#: Jobs per enqueue_many call in the singles leg.
MANY_CHUNK = 1000


def run_leg(
    app: Flask, admin: Admin, kind: str, count: int, leg: int
) -> dict[str, t.Any]:
    """Enqueue ``count`` emails one way; wait until all are stored."""
    admin.reset(latency=LATENCY)
    messages = [
        {**SMALL_EMAIL, "to": f"leg{leg}-user{i}@example.com"} for i in range(count)
    ]
    with app.app_context():
        start = time.perf_counter()
        if kind == "batch":
            jobs = len(enqueue_batch(messages))
        else:
            jobs = 0
            for at in range(0, count, MANY_CHUNK):
                jobs += len(enqueue_many(messages[at : at + MANY_CHUNK]))
        enqueued = time.perf_counter() - start
        deadline = time.monotonic() + DEADLINE
        created = 0
        while created < count:
            if time.monotonic() > deadline:
                raise RuntimeError(f"{kind}: {created} of {count} stored in time")
            time.sleep(0.05)
            created = admin.stats()["emails_created"]
        elapsed = time.perf_counter() - start
    time.sleep(0.5)  # anything sent twice would arrive now
    stats = admin.stats()
    rows = admin.emails()
    recipients = {row["toAddresses"][0] for row in rows}
    expected = {m["to"] for m in messages}
    exactly_once = (
        stats["emails_created"] == count
        and len(rows) == count
        and recipients == expected
        and stats["replays"] == 0
    )
    result = {
        "kind": kind,
        "emails": count,
        "jobs": jobs,
        "enqueue_s": round(enqueued, 3),
        "end_to_end_s": round(elapsed, 3),
        "emails_per_s": round(count / elapsed, 1),
        "api_requests": stats["requests"],
        "stored": len(rows),
        "distinct_recipients": len(recipients),
        "replays": stats["replays"],
        "exactly_once": exactly_once,
    }
    print(
        f"{kind:7} {count} emails in {jobs} jobs: enqueued in {enqueued:.2f} s,"
        f" all stored after {elapsed:.2f} s ({count / elapsed:.0f} emails/s,"
        f" {stats['requests']} API requests); exactly once: {exactly_once}",
        flush=True,
    )
    return result


def main(argv: t.Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="2,000 emails a leg")
    parser.add_argument("--count", type=int, default=10_000)
    args = parser.parse_args(argv)
    count = min(2000 if args.quick else args.count, 20_000)

    legs: list[dict[str, t.Any]] = []
    with sandbox_process(LATENCY) as base_url, redis_process() as server:
        admin = Admin(base_url)
        app = make_app(server.url, base_url)
        try:
            with workers(app, base_url, WORKERS):
                wait_for_workers(app, WORKERS)
                for leg, kind in enumerate(("batch", "singles", "batch")):
                    legs.append(run_leg(app, admin, kind, count, leg))
        finally:
            admin.close()

    batch = statistics.median(r["end_to_end_s"] for r in legs if r["kind"] == "batch")
    single = statistics.median(
        r["end_to_end_s"] for r in legs if r["kind"] == "singles"
    )
    speedup = single / batch
    once = all(r["exactly_once"] for r in legs)
    print()
    print_table(
        ["way", "emails", "jobs", "API requests", "enqueue s", "end to end s",
         "emails/s", "exactly once"],
        [
            [r["kind"], r["emails"], r["jobs"], r["api_requests"], r["enqueue_s"],
             r["end_to_end_s"], r["emails_per_s"], r["exactly_once"]]
            for r in legs
        ],
    )  # fmt: skip
    print(
        f"\nbatch is {speedup:.1f}x faster end to end (target >= {TARGET:.0f}x:"
        f" {'met' if speedup >= TARGET else 'NOT met'}); exactly once: {once}"
    )
    write_results(
        "bulk",
        {
            "latency_s": LATENCY,
            "workers": f"{WORKERS} PostStackWorker, the documented command",
            "emails_per_leg": count,
            "many_chunk": MANY_CHUNK,
            "legs": legs,
            "batch_s_median": batch,
            "singles_s": single,
            "speedup": round(speedup, 1),
            "target": TARGET,
            "target_met": speedup >= TARGET,
            "exactly_once": once,
        },
        quick=args.quick,
    )
    return 0 if once else 1


if __name__ == "__main__":
    sys.exit(main())
