"""Peak memory (RSS) of a worker process while it works off a queue.

Processes, all on 127.0.0.1: the sandbox (no added latency, so the queue
drains quickly), a ``redis-server``, and one worker on the documented command
line. N emails are queued first (``enqueue_many``); the worker is started
after, and this process samples its ``VmRSS`` from ``/proc/PID/status``
every 0.1 s together with the number of emails the sandbox has stored. Once
all are stored it reads ``VmHWM`` (the peak RSS the kernel recorded) and the
proportional set size (``Pss`` in ``/proc/PID/smaps_rollup``), then stops
the worker.

* ``PostStackWorker``, 2,000 emails (the recommended worker);
* rq's default forking ``Worker``, 300 emails (it sends about 10 a second):
  the parent's peak, and the largest work-horse child seen by the sampler.

``--with-scheduler`` (part of the documented command) forks a scheduler
process per worker; its peak RSS and PSS are reported too. RSS counts pages
shared with the parent after the fork; PSS splits them, so PSS is the figure
to add up.

The samples show whether memory grows with the number of jobs. Writes
``benchmarks/results/worker_rss.json``.

    python benchmarks/worker_rss.py [--quick] [--count 2000] [--fork-count 300]
"""

from __future__ import annotations

import argparse
import sys
import time
import typing as t
from pathlib import Path

from _common import Admin
from _common import make_app
from _common import print_table
from _common import redis_process
from _common import sandbox_process
from _common import SMALL_EMAIL
from _common import workers
from _common import write_results
from flask import Flask

from flask_poststack import enqueue_many

#: No scenario may take longer than this.
DEADLINE = 300.0
INTERVAL = 0.1


def status_kb(pid: int, *fields: str) -> dict[str, int]:
    """``VmRSS``/``VmHWM``-style fields of /proc/PID/status, in kB (0 if gone)."""
    found = dict.fromkeys(fields, 0)
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return found
    for line in text.splitlines():
        name, _, value = line.partition(":")
        if name in found:
            found[name] = int(value.split()[0])
    return found


def pss_kb(pid: int) -> int:
    try:
        text = Path(f"/proc/{pid}/smaps_rollup").read_text()
    except OSError:
        return 0
    for line in text.splitlines():
        if line.startswith("Pss:"):
            return int(line.split()[1])
    return 0


def children(pid: int) -> list[int]:
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
        return [int(child) for child in text.split()]
    except OSError:
        return []


def run(
    app: Flask, admin: Admin, base_url: str, name: str, worker_class: str, count: int
) -> dict[str, t.Any]:
    admin.reset(latency=0.0)
    messages = [{**SMALL_EMAIL, "to": f"user{i}@example.com"} for i in range(count)]
    with app.app_context():
        for at in range(0, count, 1000):
            enqueue_many(messages[at : at + 1000])
    samples: list[dict[str, float]] = []
    # child pid -> [peak RSS kB, samples seen]: the scheduler (``--with-scheduler``
    # forks it) is seen throughout, a forking Worker's work-horses briefly.
    kids: dict[int, list[int]] = {}
    with workers(app, base_url, 1, worker_class=worker_class) as (proc,):
        start = time.monotonic()
        created = 0
        while created < count:
            if time.monotonic() - start > DEADLINE:
                raise RuntimeError(f"{name}: {created} of {count} sent in time")
            if proc.poll() is not None:
                raise RuntimeError(f"{name}: the worker exited with {proc.returncode}")
            time.sleep(INTERVAL)
            rss = status_kb(proc.pid, "VmRSS")["VmRSS"]
            for child in children(proc.pid):
                seen = kids.setdefault(child, [0, 0])
                seen[0] = max(seen[0], status_kb(child, "VmRSS")["VmRSS"])
                seen[1] += 1
            created = admin.stats()["emails_created"]
            samples.append(
                {"t_s": round(time.monotonic() - start, 2), "rss_kb": rss,
                 "emails": created}
            )  # fmt: skip
        elapsed = time.monotonic() - start
        end = status_kb(proc.pid, "VmRSS", "VmHWM")
        pss = pss_kb(proc.pid)
        long_lived = [pid for pid, (_, n) in kids.items() if n > len(samples) // 2]
        scheduler = long_lived[0] if len(long_lived) == 1 else None
        scheduler_end = status_kb(scheduler, "VmHWM") if scheduler else {"VmHWM": 0}
        scheduler_pss = pss_kb(scheduler) if scheduler else 0
    horse_peak = max(
        (rss for pid, (rss, _) in kids.items() if pid != scheduler), default=0
    )

    def rss_at(fraction: float) -> int:
        return next(
            int(s["rss_kb"]) for s in samples if s["emails"] >= fraction * count
        )

    result = {
        "worker": name,
        "worker_class": worker_class,
        "emails": count,
        "seconds": round(elapsed, 1),
        "peak_rss_mb": round(end["VmHWM"] / 1024, 1),
        "end_rss_mb": round(end["VmRSS"] / 1024, 1),
        "end_pss_mb": round(pss / 1024, 1),
        "rss_after_10pct_mb": round(rss_at(0.1) / 1024, 1),
        "rss_after_50pct_mb": round(rss_at(0.5) / 1024, 1),
        "scheduler_peak_rss_mb": round(scheduler_end["VmHWM"] / 1024, 1),
        "scheduler_end_pss_mb": round(scheduler_pss / 1024, 1),
        "horses_seen": len(kids) - (1 if scheduler else 0),
        "horse_peak_rss_mb": round(horse_peak / 1024, 1) if horse_peak else None,
        "samples": samples,
    }
    print(
        f"{name}: {count} emails in {elapsed:.1f} s; peak RSS"
        f" {result['peak_rss_mb']} MB, at the end {result['end_rss_mb']} MB"
        f" (PSS {result['end_pss_mb']} MB); after 10% {result['rss_after_10pct_mb']}"
        f" MB, after 50% {result['rss_after_50pct_mb']} MB; its scheduler process"
        f" {result['scheduler_peak_rss_mb']} MB (PSS {result['scheduler_end_pss_mb']})"
        + (f"; largest work-horse {horse_peak / 1024:.1f} MB" if horse_peak else ""),
        flush=True,
    )
    return result


def main(argv: t.Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="500 and 100 emails")
    parser.add_argument("--count", type=int, default=2000)
    parser.add_argument("--fork-count", type=int, default=300)
    args = parser.parse_args(argv)
    count = min(500 if args.quick else args.count, 20_000)
    fork_count = min(100 if args.quick else args.fork_count, 2000)

    rows = []
    with sandbox_process() as base_url, redis_process() as server:
        admin = Admin(base_url)
        app = make_app(server.url, base_url)
        try:
            for name, worker_class, n in (
                ("PostStackWorker", "flask_poststack.worker.PostStackWorker", count),
                ("rq Worker (forking)", "rq.Worker", fork_count),
            ):
                rows.append(run(app, admin, base_url, name, worker_class, n))
        finally:
            admin.close()

    print()
    print_table(
        ["worker", "emails", "peak RSS MB (VmHWM)", "RSS after 10% / 50% / end MB",
         "PSS at end MB", "scheduler process peak RSS / PSS MB",
         "largest work-horse RSS MB"],
        [
            [r["worker"], r["emails"], r["peak_rss_mb"],
             f"{r['rss_after_10pct_mb']} / {r['rss_after_50pct_mb']}"
             f" / {r['end_rss_mb']}",
             r["end_pss_mb"],
             f"{r['scheduler_peak_rss_mb']} / {r['scheduler_end_pss_mb']}",
             r["horse_peak_rss_mb"] or "-"]
            for r in rows
        ],
    )  # fmt: skip
    write_results(
        "worker_rss",
        {
            "sandbox_latency_s": 0.0,
            "sample_interval_s": INTERVAL,
            "results": rows,
        },
        quick=args.quick,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
