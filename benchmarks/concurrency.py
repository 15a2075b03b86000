"""One PostStackWorker process at POSTSTACK_WORKER_CONCURRENCY 1, 16 and 64,
against the sandbox at 20, 100 and 200 ms: emails/s, CPU per email, peak RSS,
and redis-server's CPU per email, side by side in one run.

A real ``redis-server``, the sandbox in its own process, one worker started
with the documented command (without ``--with-scheduler``, so that the CPU
counted is the worker's alone) in its own process. Each trial:

1. starts the worker and waits until it has registered, so that start-up
   (imports) is not counted;
2. reads the worker's CPU time (``/proc/PID/stat``) and redis-server's
   (``INFO cpu``), then queues N emails with one ``enqueue_many`` (one
   round trip; redis-server's CPU for it is counted, as a producer's share);
3. waits (bounded) until all N jobs have finished, reads both CPU times
   again and the worker's peak RSS (``VmHWM``), and stops the worker;
4. checks exactly-once at the sandbox: N emails stored, N distinct
   idempotency keys, no replays.

Emails/s is measured from the first job's start to the last job's end (the
jobs' own timestamps in Redis). N is about three seconds of work at the
bound (``concurrency / latency``), between ``--min-count`` and
``--max-count``. Every configuration runs ``--runs`` times (3), in rounds
whose order flips, and medians are reported. Results go to
``benchmarks/results/concurrency.json``.

    python benchmarks/concurrency.py [--latency 20 100 200] [--concurrency 1 16 64]
        [--before DIR]

``--before DIR`` runs a second worker variant (``flask_poststack`` imported
from ``DIR``, e.g. a checkout of an earlier commit) in the same rounds,
side by side.
"""

from __future__ import annotations

import argparse
import datetime
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import typing as t
from pathlib import Path

from _common import Admin
from _common import document
from _common import HERE
from _common import make_app
from _common import redis_process
from _common import sandbox_process
from _common import SMALL_EMAIL
from _common import wait_for_workers
from _common import worker_env
from _common import write_json
from flask import Flask
from rq import Queue
from rq.job import Job
from rq.serializers import JSONSerializer

from flask_poststack import enqueue_many
from flask_poststack import get_state
from flask_poststack.cli import worker_command

#: No trial may take longer than this to drain.
DEADLINE = 120.0
TICK = os.sysconf("SC_CLK_TCK")
#: The workers' output, for when a trial fails.
LOG = Path(tempfile.gettempdir()) / "poststack-concurrency-workers.log"


def cpu_seconds(pid: int) -> float:
    """User + system CPU of process ``pid`` so far (threads included)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


def redis_cpu(app: Flask) -> float:
    info = get_state(app).redis.info("cpu")
    return float(info["used_cpu_sys"]) + float(info["used_cpu_user"])


def trial(
    app: Flask, admin: Admin, base_url: str, concurrency: int, count: int,
    latency: float, code: str | None = None,
) -> dict[str, float]:  # fmt: skip
    state = get_state(app)
    conn = state.redis
    conn.flushall()
    admin.reset(latency=latency)
    argv = worker_command(state.settings, maintenance_interval=30)
    argv.remove("--with-scheduler")
    env = worker_env(base_url, code)
    env["POSTSTACK_WORKER_CONCURRENCY"] = str(concurrency)
    log = open(LOG, "ab")  # noqa: SIM115
    proc = subprocess.Popen(argv, env=env, stdout=log, stderr=log,
                            start_new_session=True)  # fmt: skip
    log.close()
    try:
        wait_for_workers(app, 1)
        messages = [{**SMALL_EMAIL, "to": f"user{i}@example.com"} for i in range(count)]
        cpu0, redis0 = cpu_seconds(proc.pid), redis_cpu(app)
        with app.app_context():
            jobs = enqueue_many(messages)  # one round trip: all at once
        queue = Queue("poststack", connection=conn, serializer=JSONSerializer)
        deadline = time.monotonic() + DEADLINE
        while queue.finished_job_registry.count < count:
            if time.monotonic() > deadline or proc.poll() is not None:
                raise RuntimeError(f"c={concurrency}: not drained in {DEADLINE}s")
            time.sleep(0.05)
        cpu1, redis1 = cpu_seconds(proc.pid), redis_cpu(app)
        rss = peak_rss_mb(proc.pid)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    stats = admin.stats()
    if not (stats["emails_stored"] == stats["body_keys_stored"] == count
            and stats["replays"] == 0):  # fmt: skip
        raise RuntimeError(f"c={concurrency}: not exactly once: {stats}")
    done = [j for j in Job.fetch_many([j.id for j in jobs], connection=conn,
                                      serializer=JSONSerializer) if j]  # fmt: skip
    first = min(t.cast(datetime.datetime, j.started_at) for j in done)
    last = max(t.cast(datetime.datetime, j.ended_at) for j in done)
    return {
        "emails_per_s": count / (last - first).total_seconds(),
        "cpu_ms_per_email": 1000 * (cpu1 - cpu0) / count,
        "redis_cpu_ms_per_email": 1000 * (redis1 - redis0) / count,
        "peak_rss_mb": rss,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--latency", type=float, nargs="+", default=[20, 100, 200])
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 16, 64])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=3.0,
                        help="work per trial at the bound")  # fmt: skip
    parser.add_argument("--min-count", type=int, default=40)
    parser.add_argument("--max-count", type=int, default=1200)
    parser.add_argument(
        "--out", type=Path, default=HERE / "results" / "concurrency.json"
    )
    parser.add_argument("--before", metavar="DIR",
                        help="a directory holding another flask_poststack: its"
                        " worker runs side by side, as 'before'")  # fmt: skip
    args = parser.parse_args(argv)

    def count_for(concurrency: int, latency: float) -> int:
        at_bound = int(args.seconds * concurrency / latency)
        return max(args.min_count, min(args.max_count, at_bound))

    variants: list[tuple[str, str | None]] = [("after" if args.before else "", None)]
    if args.before:
        variants.insert(0, ("before", args.before))
    configs = [(name, code, c) for name, code in variants for c in args.concurrency]
    rows: list[dict[str, t.Any]] = []
    with sandbox_process() as base_url, redis_process() as server:
        app = make_app(server.url, base_url)
        admin = Admin(base_url)
        for latency in (ms / 1000 for ms in args.latency):
            trials: dict[tuple[str, int], list[dict[str, float]]] = {
                (name, c): [] for name, _, c in configs
            }
            for round_ in range(args.runs):
                for name, code, c in configs[:: 1 if round_ % 2 == 0 else -1]:
                    trials[name, c].append(trial(app, admin, base_url, c,
                                                 count_for(c, latency), latency,
                                                 code))  # fmt: skip
            for name, _, c in configs:
                row: dict[str, t.Any] = {
                    "variant": name,
                    "latency_ms": round(latency * 1000),
                    "concurrency": c,
                    "emails": count_for(c, latency),
                }
                for key in trials[name, c][0]:
                    values = [tr[key] for tr in trials[name, c]]
                    row[key] = round(statistics.median(values), 2)
                    row[key + "_runs"] = [round(v, 2) for v in values]
                row["pct_of_bound"] = round(100 * row["emails_per_s"] * latency / c)
                rows.append(row)
                print(
                    f"{name:6s} {row['latency_ms']:4d} ms c={c:3d}:"
                    f" {row['emails_per_s']:7.1f}"
                    f" emails/s ({row['pct_of_bound']}% of bound),"
                    f" {row['cpu_ms_per_email']:.2f} ms CPU/email,"
                    f" redis {row['redis_cpu_ms_per_email']:.2f} ms/email,"
                    f" peak RSS {row['peak_rss_mb']:.1f} MB",
                    flush=True,
                )
        admin.close()
    print()
    print("| worker | latency | in flight | emails/s | % of bound | worker CPU"
          " ms/email | redis CPU ms/email | peak RSS MB |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|")
    for row in rows:
        cells = [row["variant"], f"{row['latency_ms']} ms", row["concurrency"],
                 row["emails_per_s"],
                 f"{row['pct_of_bound']}%", row["cpu_ms_per_email"],
                 row["redis_cpu_ms_per_email"], row["peak_rss_mb"]]  # fmt: skip
        print("| " + " | ".join(str(c) for c in cells) + " |")
    write_json(args.out, document("concurrency", {"runs": args.runs, "results": rows}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
