"""The Celery twin of the soak: workers SIGKILLed repeatedly; lost and
duplicated emails counted.

Each round queues N emails with ``POSTSTACK_QUEUE_BACKEND = "celery"``,
starts two ``celery worker --pool threads`` processes (the documented
command, visibility timeout 2 s), SIGKILLs one each time another fraction
of the emails is stored and starts another, then waits well past the
visibility timeout. An email is lost if its task never finished and the
sandbox never stored it; duplicated if the sandbox stored it twice.
``requeued`` counts the tasks the ledger's reconciler queued again (a
worker killed between BRPOP and kombu's record of the task), from the
workers' logs; ``drain_s`` is how long after the last kill the last task
finished.

    python benchmarks/celery_soak.py                  # 20 rounds, 40 emails, 4 kills
    python benchmarks/celery_soak.py --rounds 5
"""

from __future__ import annotations

import argparse
import collections
import os
import signal
import subprocess
import sys
import tempfile
import time
import typing as t
from pathlib import Path

import redis
from _common import print_table
from _common import write_results
from flask import Flask

from flask_poststack import enqueue_many
from flask_poststack import PostStack
from flask_poststack.redis_server import RedisServer
from flask_poststack.sandbox import Sandbox

API_KEY = "sk_test_celerysoak0123456789"
WORKER = [sys.executable, "-m", "celery", "-A", "flask_poststack.celery_tasks",
          "worker", "--pool", "threads", "-c", "4", "-Q", "poststack",
          "--without-mingle", "--without-gossip", "-l", "warning"]  # fmt: skip


REQUEUED = b"did not know the task); queued again"


def start(env: dict[str, str], logs: Path) -> subprocess.Popen[bytes]:
    with open(logs / f"w{len(list(logs.iterdir()))}.log", "wb") as log:
        return subprocess.Popen(
            WORKER, env=env, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip


def kill(proc: subprocess.Popen[bytes]) -> None:
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def one_round(
    server: RedisServer, sandbox: Sandbox, count: int, kills: int
) -> dict[str, t.Any]:
    conn = redis.Redis.from_url(server.url)
    conn.flushall()
    sandbox.reset()
    sandbox.configure(latency=0.05)
    app = Flask("soak")
    app.config.update(
        POSTSTACK_API_KEY=API_KEY, POSTSTACK_BASE_URL=sandbox.base_url,
        POSTSTACK_REDIS_URL=server.url, POSTSTACK_DEFAULT_FROM="a@acme.test",
        POSTSTACK_QUEUE_BACKEND="celery",
    )  # fmt: skip
    PostStack(app)
    with app.app_context():
        results: list[t.Any] = enqueue_many(
            [{"to": f"u{i}@example.com", "subject": "Hi", "text": "t"}
             for i in range(count)]
        )  # fmt: skip
    env = {k: os.environ[k] for k in ("PATH", "HOME", "LANG") if k in os.environ}
    env.update(
        POSTSTACK_API_KEY=API_KEY, POSTSTACK_BASE_URL=sandbox.base_url,
        POSTSTACK_REDIS_URL=server.url, POSTSTACK_MAX_RETRIES="0",
        POSTSTACK_RETRY_INTERVALS="0,0,0,0,0",
        POSTSTACK_CELERY_VISIBILITY_TIMEOUT="2",
    )  # fmt: skip
    logs = Path(tempfile.mkdtemp(prefix="celery-soak-"))
    live = [start(env, logs), start(env, logs)]
    drained = 0.0
    try:
        for k in range(1, kills + 1):
            deadline = time.monotonic() + 60
            while len(sandbox.emails) < count * k // (kills + 1):
                if time.monotonic() > deadline:
                    break
                time.sleep(0.02)
            kill(live[k % 2])
            live[k % 2] = start(env, logs)
        # Well past the visibility timeout, the sweeps and their lock.
        last_kill = time.monotonic()
        deadline = last_kill + 40
        while not all(r.ready() for r in results) and time.monotonic() < deadline:
            time.sleep(0.1)
        drained = time.monotonic() - last_kill
    finally:
        for proc in live:
            kill(proc)
    stored = collections.Counter(e.input.idempotency_key for e in sandbox.emails)
    unfinished = [r for r in results if not r.ready()]
    if unfinished:
        # Where the lost tasks are (or are not), for the report.
        print(
            f"  unfinished: {[r.state for r in unfinished]}"
            f" queued={conn.llen('poststack')} unacked={conn.hlen('unacked')}"
            f" sweep lock ttl={conn.ttl('unacked_mutex')}"
            f" statuses={collections.Counter(q['status'] for q in sandbox.requests)}",
            flush=True,
        )
    conn.close()
    requeued = sum(p.read_bytes().count(REQUEUED) for p in logs.iterdir())
    for path in logs.iterdir():
        path.unlink()
    logs.rmdir()
    return {
        "emails": count,
        "lost": count - len(stored),
        "duplicated": sum(n - 1 for n in stored.values() if n > 1),
        "unfinished_tasks": sum(1 for r in results if not r.ready()),
        "requests": len(sandbox.requests),
        "requeued": requeued,
        "drain_s": round(drained, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--count", type=int, default=40)
    parser.add_argument("--kills", type=int, default=4)
    args = parser.parse_args()
    rounds = []
    server = RedisServer().start()
    sandbox = Sandbox(port=0, lifecycle_delay=3600).start()
    try:
        for n in range(args.rounds):
            row = one_round(server, sandbox, args.count, args.kills)
            rounds.append(row)
            print(f"round {n + 1}: {row}", flush=True)
    finally:
        sandbox.stop()
        server.stop()
    totals = {key: sum(r[key] for r in rounds) for key in rounds[0]}
    totals["drain_s"] = max(r["drain_s"] for r in rounds)  # the slowest round
    print_table(
        ["rounds", "emails", "SIGKILLs", "lost", "duplicated", "requests",
         "requeued by the ledger", "slowest drain (s)"],
        [[args.rounds, totals["emails"], args.rounds * args.kills, totals["lost"],
          totals["duplicated"], totals["requests"], totals["requeued"],
          totals["drain_s"]]],
    )  # fmt: skip
    write_results(
        "celery_soak", {"args": vars(args), "rounds": rounds, "totals": totals}
    )


if __name__ == "__main__":
    main()
