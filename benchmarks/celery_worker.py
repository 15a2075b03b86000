"""Celery: ``flask_poststack.celery_tasks`` against a hand-written task
that reuses one client (``celery_seed_task.py``), same pool, same
concurrency, same run, sandbox at 200 ms latency by default.

Each run queues N tasks, then starts one ``celery worker --pool threads``
and measures from the first email the sandbox stored to the last (its own
timestamps, so worker start-up is not counted). Scenarios alternate, in an
order that flips every round; medians reported.

    python benchmarks/celery_worker.py                  # 400 emails, -c 16, 3 runs
    python benchmarks/celery_worker.py --count 100 --runs 1
"""

from __future__ import annotations

import argparse
import datetime
import os
import signal
import statistics
import subprocess
import sys
import time
import typing as t

import redis
from _common import Admin
from _common import make_app
from _common import print_table
from _common import redis_process
from _common import sandbox_process
from _common import worker_env
from _common import write_results

from flask_poststack import enqueue_many

SCENARIOS = {
    "ours": "flask_poststack.celery_tasks",
    "hand-written": "celery_seed_task",
}


def queue_ours(redis_url: str, base_url: str, count: int) -> None:
    app = make_app(redis_url, base_url, POSTSTACK_QUEUE_BACKEND="celery")
    with app.app_context():
        for start in range(0, count, 100):
            enqueue_many(
                [
                    {"to": f"user{i}@example.com", "subject": "Welcome to Acme",
                     "html": f"<h1>Welcome, user {i}!</h1>"}
                    for i in range(start, min(count, start + 100))
                ]
            )  # fmt: skip


def queue_hand_written(redis_url: str, count: int) -> None:
    from celery import Celery

    producer = Celery("seed", broker=redis_url, backend=redis_url)
    for i in range(count):
        producer.send_task(
            "seed.send_welcome_email",
            args=[f"user{i}@example.com", f"user {i}"],
            queue="poststack",
        )


def run_one(
    scenario: str, redis_url: str, base_url: str, count: int, concurrency: int
) -> float:
    """Emails a second, first stored email to last."""
    admin = Admin(base_url)
    admin.reset(latency=LATENCY, lifecycle_delay=3600)
    conn = redis.Redis.from_url(redis_url)
    conn.flushall()
    if scenario == "ours":
        queue_ours(redis_url, base_url, count)
    else:
        queue_hand_written(redis_url, count)
    argv = [sys.executable, "-m", "celery", "-A", SCENARIOS[scenario], "worker",
            "--pool", "threads", "-c", str(concurrency), "-Q", "poststack",
            "--without-mingle", "--without-gossip", "-l", "warning"]  # fmt: skip
    env = {**worker_env(base_url), "POSTSTACK_REDIS_URL": redis_url}
    proc = subprocess.Popen(
        argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        start_new_session=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 30 + count * LATENCY
        while admin.stats()["emails_created"] < count:
            if time.monotonic() > deadline or proc.poll() is not None:
                raise TimeoutError(f"{scenario}: {admin.stats()['emails_created']}")
            time.sleep(0.2)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    times = sorted(
        datetime.datetime.fromisoformat(e["createdAt"].replace("Z", "+00:00"))
        for e in admin.emails()
    )
    assert len(times) == count, (scenario, len(times))
    admin.close()
    conn.close()
    return (count - 1) / (times[-1] - times[0]).total_seconds()


LATENCY = 0.2


def main() -> None:
    global LATENCY
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--count", type=int, default=400)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--latency", type=float, default=200, help="ms")
    args = parser.parse_args()
    LATENCY = args.latency / 1000
    rates: dict[str, list[float]] = {name: [] for name in SCENARIOS}
    with redis_process() as server, sandbox_process(LATENCY) as base_url:
        for run in range(args.runs):
            order = list(SCENARIOS) if run % 2 == 0 else list(SCENARIOS)[::-1]
            for name in order:
                rate = run_one(name, server.url, base_url, args.count, args.concurrency)
                rates[name].append(rate)
                print(f"run {run + 1} {name}: {rate:.1f} emails/s", flush=True)
    bound = args.concurrency / LATENCY
    rows: list[list[t.Any]] = []
    for name, values in rates.items():
        median = statistics.median(values)
        rows.append([name, args.concurrency, f"{median:.1f}", f"{median / bound:.0%}"])
    ratio = statistics.median(rates["ours"]) / statistics.median(rates["hand-written"])
    print_table(["task", "threads", "emails/s (median)", "% of bound"], rows)
    print(f"ours / hand-written: {ratio:.1%}")
    write_results(
        "celery_worker",
        {"args": vars(args), "rates": rates, "ratio": ratio, "bound": bound},
    )


if __name__ == "__main__":
    main()
