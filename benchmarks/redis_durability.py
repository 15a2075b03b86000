"""What a Redis crash in the middle of a run loses, per persistence setting.

For each setting and run: a fresh ``redis-server``, two ``PostStackWorker``
processes started with the documented command, and the sandbox (in this
process) as the API. A producer thread queues emails with ``enqueue_email``,
each with its own idempotency key: half of them at once (a backlog, since the
API answers in 20 ms), then the rest at a steady rate. Right after the first
half is acknowledged, while the workers are sending, ``redis-server`` is SIGKILLed
(no shutdown, no final flush) and started again on the same port from its
files, and the producer goes on. Workers that exit meanwhile are restarted, as a process
manager would.

Then it counts, by idempotency key:

* **acknowledged**: ``enqueue_email`` returned a job;
* **refused**: ``enqueue_email`` raised (Redis was down): the caller knows;
* **lost**: acknowledged but never delivered (the promise broken);
* **duplicated**: delivered more than once (none expected: the idempotency
  key makes a re-run job replay at the API);
* **replayed**: re-sent after the restart and answered from the API's
  idempotency store, so not delivered twice.

Settings: ``always``, ``everysec`` and ``no`` (``appendonly yes`` with that
``appendfsync``), and ``off`` (no persistence at all) for contrast. A SIGKILL
of the Redis process is what is measured; an OS crash or power loss, which
also drops what the kernel had not written to disk yet, cannot be caused
from here.

    python benchmarks/redis_durability.py [--emails 1000] [--runs 3] [--hold-sends]

``--hold-sends`` makes the moment of the kill certain instead of likely: the
sandbox holds each worker's first send after storing its email
(``hold_after_store``), the kill waits until both are held, and the answers
are released right after Redis is killed. So Redis dies with exactly two
sends in flight and all but those two of the first half not yet sent,
however the machine schedules the processes (the tests use it; the figures
in ``docs/reliability.md`` were measured without it).

Results go to ``benchmarks/results/redis_durability.json``.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import statistics
import sys
import tempfile
import threading
import time
import typing as t
from pathlib import Path

import _harness
from _harness import make_app
from _harness import rq_queue
from _harness import settings_of
from _harness import Workers
from flask import Flask
from rq import Worker
from rq.registry import ScheduledJobRegistry
from rq.registry import StartedJobRegistry

from flask_poststack import enqueue_email
from flask_poststack import get_state
from flask_poststack.redis_server import RedisServer
from flask_poststack.sandbox import Sandbox

SETTINGS = ("always", "everysec", "no", "off")


class Producer(threading.Thread):
    """Queues half the emails at once, waits for ``resume`` (set once Redis
    is killed, so exactly half are acknowledged before the kill), then the
    rest at ``rate`` a second.

    Records, by idempotency key, which ``enqueue_email`` calls returned a job
    and which raised.
    """

    def __init__(self, app: Flask, prefix: str, count: int, rate: float) -> None:
        super().__init__(name="producer", daemon=True)
        self.app, self.prefix, self.count, self.rate = app, prefix, count, rate
        self.acked: list[str] = []
        self.refused: list[str] = []
        self.stop = threading.Event()
        self.resume = threading.Event()

    def run(self) -> None:
        burst = self.count // 2  # a backlog first, as fast as it goes
        started = time.monotonic()
        with self.app.app_context():
            for i in range(self.count):
                if i == burst:
                    self.resume.wait(60)
                    started = time.monotonic()
                if self.stop.is_set():
                    break
                key = f"{self.prefix}-{i}"
                try:
                    enqueue_email(
                        to=f"user{i}@example.com",
                        subject=f"Durability {i}",
                        text="Hello.",
                        idempotency_key=key,
                    )
                except Exception:  # QueueUnavailableError while Redis is down
                    self.refused.append(key)
                else:
                    self.acked.append(key)
                pause = started + (i + 1 - burst) / self.rate - time.monotonic()
                if i >= burst and pause > 0:
                    time.sleep(pause)


def pending(app: Flask) -> int:
    """Jobs still to run: queued, started, scheduled or stranded."""
    try:
        q = rq_queue(app)
        return int(
            q.count
            + StartedJobRegistry(queue=q).count
            + ScheduledJobRegistry(queue=q).count
            + len(q.intermediate_queue.get_job_ids())
        )
    except Exception:  # Redis still coming back
        return -1


def run_once(
    setting: str,
    run: int,
    sandbox: Sandbox,
    *,
    emails: int,
    rate: float,
    downtime: float,
    bound: float,
    log_dir: Path,
    hold_sends: bool = False,
) -> dict[str, t.Any]:
    sandbox.reset()  # keeps the construction-time latency
    in_flight = 2 if hold_sends else 0  # one send per worker
    if hold_sends:
        sandbox.faults.add("hold_after_store", method="POST", path="/emails",
                           seconds=max(1.0, min(bound, 600.0)),
                           times=in_flight)  # fmt: skip
    with contextlib.ExitStack() as stack:
        server = RedisServer(appendonly=None if setting == "off" else setting)
        server.start()
        stack.callback(server.stop)
        app = make_app(server.url, sandbox)
        settings = settings_of(app)
        workers = Workers(log_dir)
        stack.callback(workers.close)
        live = [workers.start(settings, sandbox) for _ in range(2)]
        started = time.monotonic()
        deadline = started + bound
        conn = get_state(app).redis
        while Worker.count(connection=conn) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)  # both workers listening before the first email
        producer = Producer(app, f"dur-{setting}-{run}", emails, rate)
        producer.start()

        # Kill Redis half-way through production, while the workers drain
        # (the API has stored at least one email, and a backlog is queued;
        # with hold_sends, each worker's send is held after the API stored
        # it, so nothing else can be sent before the kill).
        while (
            len(producer.acked) < emails // 2
            or not sandbox.emails
            or len(sandbox.held) < in_flight
        ) and time.monotonic() < deadline:
            time.sleep(0.002)
        acked_before = len(producer.acked)
        delivered_before = len(sandbox.emails)
        held_at_kill = len(sandbox.held)
        server.stop(kill=True, keep_data=True)  # SIGKILL: no final flush
        killed_at = time.monotonic()
        sandbox.release()  # the answers reach workers whose Redis is down
        producer.resume.set()  # the second half meets Redis down, then back
        time.sleep(downtime)
        server.start()
        restarted_at = time.monotonic()
        with contextlib.suppress(Exception):
            get_state(app).redis.connection_pool.disconnect()

        restarts = 0
        quiet_since: float | None = None
        while time.monotonic() < deadline:
            for i, proc in enumerate(live):  # Restart=always
                if proc.poll() is not None:
                    restarts += 1
                    live[i] = workers.start(settings, sandbox)
            if producer.is_alive() or pending(app) != 0:
                quiet_since = None
            elif quiet_since is None:
                quiet_since = time.monotonic()
            elif time.monotonic() - quiet_since > 2.0:
                break  # nothing left to run for 2 s
            time.sleep(0.05)
        producer.stop.set()
        producer.join(timeout=10)
        drained = quiet_since is not None and time.monotonic() < deadline

        per_key = collections.Counter(e.input.idempotency_key for e in sandbox.emails)
        acked, refused = set(producer.acked), set(producer.refused)
        lost = sorted(acked - set(per_key), key=lambda k: int(k.rsplit("-", 1)[1]))
        result = {
            "setting": setting,
            "run": run,
            "acknowledged": len(acked),
            "refused": len(refused),
            "acknowledged_before_kill": acked_before,
            "delivered_before_kill": delivered_before,
            "backlog_at_kill": acked_before - delivered_before,
            "sends_held_at_kill": held_at_kill,
            "delivered": sum(1 for k in acked if per_key[k]),
            "lost": len(lost),
            "lost_keys_sample": lost[:10],
            "duplicated": sum(n - 1 for n in per_key.values() if n > 1),
            "refused_but_delivered": sum(1 for k in refused if per_key[k]),
            "replayed": sandbox.stats["replays"],
            "worker_restarts": restarts,
            "redis_down_s": round(restarted_at - killed_at, 2),
            "drained": drained,
            "seconds": round(time.monotonic() - started, 1),
        }
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--emails", type=int, default=1000, help="per run")
    parser.add_argument("--runs", type=int, default=3, help="per setting")
    parser.add_argument(
        "--rate", type=float, default=100.0, help="enqueues a second, second half"
    )
    parser.add_argument("--downtime", type=float, default=0.5, help="seconds")
    parser.add_argument(
        "--latency", type=float, default=0.02, help="API latency, seconds"
    )
    parser.add_argument("--bound", type=float, default=60.0, help="seconds per run")
    parser.add_argument("--settings", nargs="*", choices=SETTINGS, default=SETTINGS)
    parser.add_argument(
        "--hold-sends",
        action="store_true",
        help="kill Redis while the API holds each worker's first send",
    )
    parser.add_argument(
        "--out", type=Path, default=_harness.RESULTS / "redis_durability.json"
    )
    args = parser.parse_args(argv)

    rows: list[dict[str, t.Any]] = []
    with (
        tempfile.TemporaryDirectory(prefix="poststack-durability-") as tmp,
        Sandbox(port=0, latency=args.latency, lifecycle_delay=0.05) as sandbox,
    ):
        for setting in args.settings:
            for run in range(args.runs):
                log_dir = Path(tmp) / f"{setting}-{run}"
                log_dir.mkdir()
                row = run_once(
                    setting,
                    run,
                    sandbox,
                    emails=args.emails,
                    rate=args.rate,
                    downtime=args.downtime,
                    bound=args.bound,
                    log_dir=log_dir,
                    hold_sends=args.hold_sends,
                )
                rows.append(row)
                print(
                    f"{setting:9} run {run}: {row['acknowledged']} acknowledged"
                    f" ({row['acknowledged_before_kill']} before the kill,"
                    f" {row['backlog_at_kill']} of them not yet sent),"
                    f" {row['refused']} refused, lost {row['lost']},"
                    f" duplicated {row['duplicated']}, replayed {row['replayed']},"
                    f" worker restarts {row['worker_restarts']}"
                    + ("" if row["drained"] else ", NOT DRAINED"),
                    flush=True,
                )

    summary = []
    for setting in args.settings:
        mine = [r for r in rows if r["setting"] == setting]
        summary.append(
            {
                "setting": setting,
                "runs": len(mine),
                "acknowledged": sum(r["acknowledged"] for r in mine),
                "refused": sum(r["refused"] for r in mine),
                "lost": sum(r["lost"] for r in mine),
                "lost_per_run": [r["lost"] for r in mine],
                "lost_median": statistics.median(r["lost"] for r in mine),
                "duplicated": sum(r["duplicated"] for r in mine),
                "replayed": sum(r["replayed"] for r in mine),
                "drained": all(r["drained"] for r in mine),
            }
        )
    print()
    print("| setting | runs | acknowledged | refused while down | lost (per run)"
          " | duplicated | replayed |")  # fmt: skip
    print("|---|---|---|---|---|---|---|")
    for s in summary:
        print(
            f"| {s['setting']} | {s['runs']} | {s['acknowledged']} | {s['refused']}"
            f" | {s['lost']} ({', '.join(map(str, s['lost_per_run']))})"
            f" | {s['duplicated']} | {s['replayed']} |"
        )
    _harness.write_json(
        args.out,
        {
            "machine": _harness.machine(),
            "config": {
                "emails_per_run": args.emails,
                "enqueue": "half at once, the rest at enqueue_rate_per_s",
                "enqueue_rate_per_s": args.rate,
                "redis_downtime_s": args.downtime,
                "api_latency_s": args.latency,
                "kill": "SIGKILL of redis-server half-way through production",
                "hold_sends": args.hold_sends,
            },
            "summary": summary,
            "runs": rows,
        },
    )
    print(f"\nwrote {args.out}")
    ok = all(s["drained"] and s["duplicated"] == 0 for s in summary) and all(
        s["lost"] == 0 for s in summary if s["setting"] == "always"
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
