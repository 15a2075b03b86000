"""Emails a second per rq worker class, against the sandbox at 20 ms latency.

A real ``redis-server`` and real ``rq worker`` subprocesses, the sandbox in a
subprocess of its own (so it shares no GIL with anything), 20 ms added to
every API response. Each scenario queues N emails, starts its workers in
burst mode and measures from the first job's start to the last job's end
(from the jobs' own timestamps in Redis, so worker start-up is not counted):

* ``seed``: the seeds' pattern, ``benchmarks/seed_task.py`` (a new
  ``PostStack`` client per job), on rq's default forking ``Worker``;
* ``fork``: our ``send_payload`` on the default forking ``Worker``;
* ``simple``: our task on ``SimpleWorker``;
* ``poststack``: our task on ``PostStackWorker``, the documented command;
* ``pool``: ``rq worker-pool -n 2`` of ``PostStackWorker``;
* ``before``: ``PostStackWorker`` as in another copy of the code
  (``--before DIR``, a directory holding a ``flask_poststack`` package, put
  first on the workers' ``PYTHONPATH``), for a before/after comparison;
* ``loop``: no queue at all, ``benchmarks/sdk_loop.py`` calling the SDK in a
  loop (one process per "worker"): the practical ceiling on this machine,
  since even a bare loop pays the HTTP exchange on top of the latency.

The latency bound is workers / 0.020 s: no worker can send faster than one
email per round trip. Each scenario runs 3 times, in rounds: every round
runs each scenario once, in an order that flips from round to round, so that
the machine's drift hits them alike. Medians are reported, a table is
printed and the figures go to ``benchmarks/results/worker_classes.json``.
``--latency`` takes several values (one table row per scenario and latency).

    python benchmarks/worker_classes.py [--count 300] [--runs 3]
    python benchmarks/worker_classes.py --only before poststack --before /tmp/old \
        --latency 20 200
"""

from __future__ import annotations

import argparse
import datetime
import json
import statistics
import subprocess
import sys
import time
import typing as t
from pathlib import Path

import httpx
from _common import document
from _common import HERE
from _common import make_app
from _common import redis_process
from _common import sandbox_process
from _common import spawn
from _common import worker_env
from _common import write_json
from flask import Flask
from rq import Queue
from rq.job import Job
from rq.serializers import JSONSerializer

from flask_poststack import enqueue_email
from flask_poststack import get_state
from flask_poststack.cli import worker_command

LATENCY = 0.020
#: No scenario may run longer than this, whatever the count.
DEADLINE = 150.0

#: name -> (worker class, workers per pool process, job kind)
SCENARIOS: dict[str, tuple[str, str]] = {
    "seed": ("rq.Worker", "seed"),
    "fork": ("rq.Worker", "ours"),
    "simple": ("rq.SimpleWorker", "ours"),
    "poststack": ("flask_poststack.worker.PostStackWorker", "ours"),
    "pool": ("flask_poststack.worker.PostStackWorker", "ours"),
    "before": ("flask_poststack.worker.PostStackWorker (--before)", "ours"),
    "loop": ("(no queue) SDK loop", "loop"),
}


def enqueue(app: Flask, kind: str, count: int) -> list[str]:
    state = get_state(app)
    if kind == "seed":
        queue = Queue("poststack", connection=state.redis, serializer=JSONSerializer)
        return [
            queue.enqueue(
                "seed_task.send_welcome_email", f"user{i}@example.com", f"User {i}"
            ).id
            for i in range(count)
        ]
    with app.app_context():
        return [
            enqueue_email(
                to=f"user{i}@example.com", subject="Welcome", html="<h1>Hi</h1>"
            ).id
            for i in range(count)
        ]


def commands(name: str, app: Flask, workers: int) -> list[list[str]]:
    worker_class, _ = SCENARIOS[name]
    settings = get_state(app).settings
    base = worker_command(settings, burst=True)
    if name in ("poststack", "before"):
        return [base for _ in range(workers)]
    if name == "pool":
        rq = base[0]
        return [
            [rq, "worker-pool", "--burst", "-n", str(workers), "--url",
             settings.redis_url, "-S", "rq.serializers.JSONSerializer",
             "-w", worker_class, "poststack"]
        ]  # fmt: skip
    argv = list(base)
    argv[argv.index("--worker-class") + 1] = worker_class
    return [argv for _ in range(workers)]


def run_once(
    name: str,
    app: Flask,
    base_url: str,
    workers: int,
    count: int,
    latency: float,
    before: str | None = None,
) -> float:
    """Run one scenario; return emails/s."""
    with httpx.Client(base_url=base_url) as admin:
        admin.post("/_sandbox/reset", json={}).raise_for_status()
        admin.post("/_sandbox/config", json={"latency": latency}).raise_for_status()
    if SCENARIOS[name][1] == "loop":
        return sdk_loop(base_url, workers, count)
    state = get_state(app)
    state.redis.flushall()
    ids = enqueue(app, SCENARIOS[name][1], count)
    code = before if name == "before" else None
    with spawn(commands(name, app, workers), base_url, code) as procs:
        deadline = time.monotonic() + DEADLINE
        for proc in procs:
            proc.wait(timeout=max(1.0, deadline - time.monotonic()))
    jobs = Job.fetch_many(ids, connection=state.redis, serializer=JSONSerializer)
    done = [j for j in jobs if j is not None and j.get_status() == "finished"]
    if len(done) != count:
        raise RuntimeError(f"{name}: {count - len(done)} of {count} jobs not finished")
    first = min(t.cast(datetime.datetime, j.started_at) for j in done)
    last = max(t.cast(datetime.datetime, j.ended_at) for j in done)
    return count / (last - first).total_seconds()


def sdk_loop(base_url: str, workers: int, count: int) -> float:
    """Send ``count`` emails from ``workers`` bare SDK loops; return emails/s."""
    share = count // workers
    script = str(HERE / "sdk_loop.py")
    procs = [
        subprocess.Popen(
            [sys.executable, script, base_url, str(share), str(n * share)],
            env=worker_env(base_url),
            stdout=subprocess.PIPE,
            text=True,
        )
        for n in range(workers)
    ]
    spans = []
    for proc in procs:
        out, _ = proc.communicate(timeout=DEADLINE)
        if proc.returncode != 0:
            raise RuntimeError(f"sdk_loop.py exited with {proc.returncode}")
        spans.append(json.loads(out))
    first = min(span["start"] for span in spans)
    last = max(span["end"] for span in spans)
    return share * workers / (last - first)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=300, help="emails per run")
    parser.add_argument(
        "--fork-count", type=int, default=100, help="emails per run, forking workers"
    )
    parser.add_argument(
        "--slow-count",
        type=int,
        default=None,
        help="emails per run at a latency of 100 ms or more (default: --count)",
    )
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--only", nargs="*", choices=list(SCENARIOS))
    parser.add_argument(
        "--latency",
        type=float,
        nargs="+",
        default=[LATENCY * 1000],
        help="API latency, ms (several: one row each)",
    )
    parser.add_argument(
        "--before",
        type=Path,
        default=None,
        help="directory with another flask_poststack, for the 'before' scenario",
    )
    parser.add_argument(
        "--out", type=Path, default=HERE / "results" / "worker_classes.json"
    )
    args = parser.parse_args(argv)
    names = args.only or [n for n in SCENARIOS if n != "before"]
    if "before" in names and args.before is None:
        parser.error("the 'before' scenario needs --before DIR")
    before = str(args.before.resolve()) if args.before else None
    if before and not (Path(before) / "flask_poststack" / "worker.py").is_file():
        parser.error(f"{before} holds no flask_poststack package")

    def count_for(name: str, latency: float) -> int:
        if SCENARIOS[name][0] == "rq.Worker":
            return int(args.fork_count)
        if latency >= 0.1 and args.slow_count:
            return int(args.slow_count)
        return int(args.count)

    rows: list[dict[str, t.Any]] = []
    with sandbox_process() as base_url, redis_process() as redis_server:
        app = make_app(redis_server.url, base_url)
        for latency in (ms / 1000 for ms in args.latency):
            for workers in (1, 2):
                group = [n for n in names if not (n == "pool" and workers == 1)]
                rates: dict[str, list[float]] = {n: [] for n in group}
                for round_ in range(args.runs):
                    order = group if round_ % 2 == 0 else group[::-1]
                    for name in order:
                        rates[name].append(
                            run_once(name, app, base_url, workers,
                                     count_for(name, latency), latency, before)
                        )  # fmt: skip
                for name in group:
                    median = statistics.median(rates[name])
                    bound = workers / latency if latency else float("inf")
                    row = {
                        "scenario": name,
                        "worker_class": SCENARIOS[name][0],
                        "latency_ms": round(latency * 1000, 3),
                        "workers": workers,
                        "emails": count_for(name, latency),
                        "runs": [round(r, 1) for r in rates[name]],
                        "emails_per_s": round(median, 1),
                        "per_worker": round(median / workers, 1),
                        "pct_of_bound": round(100 * median / bound),
                    }
                    rows.append(row)
                    print(
                        f"{name:10} {latency * 1000:5.0f} ms {workers} worker(s):"
                        f" {median:6.1f} emails/s ({median / workers:5.1f}/worker,"
                        f" {row['pct_of_bound']:3d}% of {bound:.0f}/s)"
                        f" runs {row['runs']}",
                        flush=True,
                    )

    print()
    print(
        "| scenario | worker class | latency | workers | emails/s | per worker"
        " | % of bound |"
    )
    print("|---|---|---|---|---|---|---|")
    for row in rows:
        print(
            f"| {row['scenario']} | `{row['worker_class']}` | {row['latency_ms']} ms"
            f" | {row['workers']} | {row['emails_per_s']} | {row['per_worker']}"
            f" | {row['pct_of_bound']}% |"
        )
    result = {
        "latency_s": args.latency[0] / 1000,  # what plot.py reads
        "latencies_s": [ms / 1000 for ms in args.latency],
        "runs": args.runs,
        "before": before,
        "results": rows,
    }
    write_json(args.out, document("worker_classes", result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
