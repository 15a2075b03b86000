"""What ``enqueue_email`` costs a request, against a bare ``rq`` enqueue.

One real ``redis-server`` on 127.0.0.1, no worker (nothing is sent). In the
same process, on the same Redis connection pool, interleaved call by call
(the order flips every call; Redis is flushed between rounds), so drift and
other processes on a noisy machine hit every variant alike:

* ``enqueue_email(**SMALL_EMAIL)`` in an app context: validation, the
  payload, a fresh idempotency key, the signals, our job options, one
  ``Queue.enqueue``;
* the bare baseline: ``Queue(..., serializer=JSONSerializer).enqueue(
  "flask_poststack.tasks.send_payload", payload)`` of the same JSON payload;
* the same bare enqueue given a pipeline, so that it too makes one round
  trip to Redis instead of two (what ``enqueue_email`` does), to show what
  our own code costs on top of rq's;
* ``build_payload`` alone (no Redis), to show where the difference goes;
* ``enqueue_many`` of 100 emails against a bare ``Queue.enqueue_many`` of the
  same 100 payloads (``prepare_data`` included), per job.

Median and p99 per call; the target is ``enqueue_email`` at most 1.2x the
bare enqueue. Writes ``benchmarks/results/enqueue_cost.json``.

    python benchmarks/enqueue_cost.py [--quick] [--rounds 20] [--calls 250]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
import typing as t

from _common import make_app
from _common import print_table
from _common import redis_process
from _common import SMALL_EMAIL
from _common import summary_ms
from _common import write_results
from rq import Queue
from rq.serializers import JSONSerializer

from flask_poststack import enqueue_email
from flask_poststack import enqueue_many
from flask_poststack import get_state
from flask_poststack.message import build_payload
from flask_poststack.message import new_key
from flask_poststack.queueing import TASK

TARGET = 1.2
#: The whole run stops measuring after this many seconds, whatever the counts.
DEADLINE = 240.0


def main(argv: t.Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="5 rounds of 100")
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--calls", type=int, default=250, help="single calls a round")
    parser.add_argument("--batches", type=int, default=5, help="enqueue_many a round")
    args = parser.parse_args(argv)
    rounds, calls, batches = (
        (5, 100, 2) if args.quick else (args.rounds, args.calls, args.batches)
    )
    rounds, calls, batches = min(rounds, 200), min(calls, 5000), min(batches, 50)

    with redis_process() as server:
        app = make_app(server.url)
        state = get_state(app)
        redis = state.redis
        bare_queue = Queue("bare", connection=redis, serializer=JSONSerializer)
        messages = [{**SMALL_EMAIL, "to": f"user{i}@example.com"} for i in range(100)]
        with app.app_context():
            payload = dict(build_payload(state.settings, SMALL_EMAIL))
            payload["idempotency_key"] = new_key()
            payloads = [dict(build_payload(state.settings, m)) for m in messages]
            for p in payloads:
                p["idempotency_key"] = new_key()

            def ours() -> None:
                enqueue_email(**SMALL_EMAIL)

            def bare() -> None:
                bare_queue.enqueue(TASK, payload)

            def bare_pipelined() -> None:
                with redis.pipeline() as pipe:
                    bare_queue.enqueue(TASK, payload, pipeline=pipe)
                    pipe.execute()

            def validate() -> None:
                build_payload(state.settings, SMALL_EMAIL)

            def ours_many() -> None:
                enqueue_many(messages)

            def bare_many() -> None:
                bare_queue.enqueue_many(
                    [bare_queue.prepare_data(TASK, args=(p,)) for p in payloads]
                )

            singles = {
                "enqueue_email": ours,
                "bare": bare,
                "bare_pipelined": bare_pipelined,
                "build_payload": validate,
            }
            manys = {"enqueue_many": ours_many, "bare_many": bare_many}
            times: dict[str, list[float]] = {name: [] for name in [*singles, *manys]}
            round_ratios: list[float] = []
            for fn in [*singles.values(), *manys.values()]:  # warm up
                for _ in range(20):
                    fn()
            redis.flushdb()
            deadline = time.monotonic() + DEADLINE
            done = 0
            for index in range(rounds):
                if time.monotonic() > deadline:
                    break
                # Interleaved call by call, the order flipping every call, so
                # that drift and noise from other processes hit all alike.
                names = list(singles)
                samples: dict[str, list[float]] = {name: [] for name in names}
                for call in range(calls):
                    for name in names if (index + call) % 2 == 0 else names[::-1]:
                        fn = singles[name]
                        start = time.perf_counter()
                        fn()
                        samples[name].append(time.perf_counter() - start)
                medians = {}
                for name in names:
                    times[name].extend(samples[name])
                    medians[name] = statistics.median(samples[name])
                round_ratios.append(medians["enqueue_email"] / medians["bare"])
                many_order = list(manys) if index % 2 == 0 else list(reversed(manys))
                for name in many_order:
                    fn = manys[name]
                    for _ in range(batches):
                        start = time.perf_counter()
                        fn()
                        times[name].append((time.perf_counter() - start) / 100)
                redis.flushdb()
                done += 1

    stats = {name: summary_ms(samples) for name, samples in times.items()}
    ratio = stats["enqueue_email"]["median_ms"] / stats["bare"]["median_ms"]
    p99_ratio = stats["enqueue_email"]["p99_ms"] / stats["bare"]["p99_ms"]
    piped_ratio = (
        stats["enqueue_email"]["median_ms"] / stats["bare_pipelined"]["median_ms"]
    )
    many_ratio = stats["enqueue_many"]["median_ms"] / stats["bare_many"]["median_ms"]
    labels = {
        "enqueue_email": "`enqueue_email` (per call)",
        "bare": "bare `Queue.enqueue` (per call)",
        "bare_pipelined": "bare `Queue.enqueue` in a pipeline (per call)",
        "build_payload": "`build_payload` alone (no Redis)",
        "enqueue_many": "`enqueue_many` of 100 (per job)",
        "bare_many": "bare `Queue.enqueue_many` of 100 (per job)",
    }
    print(f"\n{done} rounds of {calls} single calls and {batches} x 100 in bulk\n")
    print_table(
        ["what", "median ms", "p99 ms", "samples"],
        [
            [labels[n], f"{s['median_ms']:.3f}", f"{s['p99_ms']:.3f}", s["n"]]
            for n, s in stats.items()
        ],
    )
    print()
    print(
        f"enqueue_email / bare: {ratio:.2f}x median, {p99_ratio:.2f}x p99"
        f" (per-round medians: {min(round_ratios):.2f}x to"
        f" {max(round_ratios):.2f}x); target <= {TARGET}x:"
        f" {'met' if ratio <= TARGET else 'NOT met'}"
    )
    print(f"enqueue_email / bare in a pipeline: {piped_ratio:.2f}x median")
    print(f"enqueue_many / bare enqueue_many: {many_ratio:.2f}x median per job")
    write_results(
        "enqueue_cost",
        {
            "rounds": done,
            "calls_per_round": calls,
            "bulk_calls_per_round": batches,
            "email": SMALL_EMAIL,
            "results": {labels[n]: s for n, s in stats.items()},
            "keys": stats,
            "ratio_median": round(ratio, 3),
            "ratio_p99": round(p99_ratio, 3),
            "ratio_pipelined_median": round(piped_ratio, 3),
            "ratio_round_medians": [round(r, 3) for r in round_ratios],
            "ratio_many_median": round(many_ratio, 3),
            "target": TARGET,
            "target_met": ratio <= TARGET,
        },
        quick=args.quick,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
