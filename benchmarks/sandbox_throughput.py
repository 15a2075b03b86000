"""How many ``POST /emails`` a second the sandbox serves to the real SDK.

Starts the sandbox in a subprocess on 127.0.0.1 (so client and server do not
share a GIL), then sends emails through reused ``poststack.PostStack``
clients, one per thread:

* 0 ms latency, 1 thread and 4 threads: the sandbox's raw throughput;
* 20 ms latency, 2 threads: compared with the latency bound (threads /
  latency = 100/s). A server that wrote headers and body in two sends
  without TCP_NODELAY would reach about a third of it (Nagle + delayed ACK).

Each scenario runs 3 times; the median is printed. Bounded in count and time.

    python benchmarks/sandbox_throughput.py [--count 2000] [--runs 3]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import threading
import time
import typing as t

import httpx
from _common import sandbox_process
from poststack import PostStack

MESSAGE = {
    "from": "bench@example.com",
    "to": ["ada@example.com"],
    "subject": "Benchmark",
    "html": "<p>Hello</p>",
}
#: No scenario may run longer than this, whatever the count.
DEADLINE = 120.0


def run(base_url: str, threads: int, count: int, latency: float) -> float:
    """Send ``count`` emails from ``threads`` threads; return emails/s."""
    with httpx.Client(base_url=base_url) as admin:
        admin.post("/_sandbox/reset", json={}).raise_for_status()
        admin.post("/_sandbox/config", json={"latency": latency}).raise_for_status()
    per_thread = count // threads
    deadline = time.monotonic() + DEADLINE
    barrier = threading.Barrier(threads + 1)
    sent = [0] * threads

    def work(index: int) -> None:
        with PostStack("sk_live_benchmark", base_url=base_url) as client:
            client.emails.send(MESSAGE)  # warm the connection up
            barrier.wait()
            for _ in range(per_thread):
                if time.monotonic() > deadline:
                    break
                client.emails.send(MESSAGE)
                sent[index] += 1

    workers = [threading.Thread(target=work, args=(i,)) for i in range(threads)]
    for worker in workers:
        worker.start()
    barrier.wait()
    started = time.perf_counter()
    for worker in workers:
        worker.join(DEADLINE + 10)
    elapsed = time.perf_counter() - started
    with httpx.Client(base_url=base_url) as admin:
        created = admin.get("/_sandbox/stats?keys=0").json()["emails_created"]
    if created != sum(sent) + threads:
        raise RuntimeError(f"sent {sum(sent) + threads} emails, {created} stored")
    return sum(sent) / elapsed


def main(argv: t.Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--count", type=int, default=2000, help="emails per run at 0 ms"
    )
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args(argv)
    count = min(args.count, 20_000)
    scenarios = [
        (1, 0.0, count),
        (4, 0.0, count),
        (2, 0.020, min(count, 600)),
    ]
    with sandbox_process() as base_url:
        print(
            f"| threads | latency | emails/s (median of {args.runs}) | of the bound |"
        )
        print("|---|---|---|---|")
        for threads, latency, n in scenarios:
            rates = [run(base_url, threads, n, latency) for _ in range(args.runs)]
            rate = statistics.median(rates)
            bound = f"{rate / (threads / latency):.0%}" if latency else "-"
            print(
                f"| {threads} | {latency * 1000:.0f} ms | {rate:.0f} | {bound} |",
                flush=True,
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
