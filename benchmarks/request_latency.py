"""How long a sign-up request takes when it queues the welcome email, and
when it sends it inline, as the email API gets slower.

Processes, all on 127.0.0.1: the sandbox, a ``redis-server``, one
``PostStackWorker`` (the documented command) working off the queue, and the
Flask app served by werkzeug's threaded server in a process of its own. The
app has one sign-up view in two variants that differ only in the call that
sends the email:

* ``POST /signup``: ``enqueue_email(to=..., template="emails/welcome", ...)``;
* ``POST /signup-inline``: ``send_email(...)`` with the same arguments.

The welcome template is the example app's (``example_app/templates``). This
process POSTs the form over one reused HTTP/1.1 connection per variant, at
sandbox latencies of 0, 50 and 200 ms, in rounds that alternate the two
variants. Median and p99 of the request latency; the target is the enqueue
path staying flat at a few milliseconds. Writes
``benchmarks/results/request_latency.json``.

    python benchmarks/request_latency.py [--quick] [--requests 200]
"""

from __future__ import annotations

import argparse
import http.client
import subprocess
import sys
import time
import typing as t
import urllib.parse
from pathlib import Path

from _common import Admin
from _common import make_app
from _common import print_table
from _common import redis_process
from _common import sandbox_process
from _common import summary_ms
from _common import wait_for_workers
from _common import workers
from _common import write_results
from flask import Flask
from flask import redirect
from flask import request
from flask.typing import ResponseReturnValue

from flask_poststack import enqueue_email
from flask_poststack import send_email

LATENCIES = (0.0, 0.050, 0.200)
VARIANTS = {"enqueue_email": "/signup", "send_email (inline)": "/signup-inline"}
SCRIPT = Path(__file__).resolve()
TEMPLATES = Path(__file__).resolve().parent.parent / "example_app" / "templates"
#: No latency step may take longer than this, whatever the count.
DEADLINE = 180.0
#: Requests per variant before each variant's turn within a round.
ROUND = 10


def create_app(redis_url: str, base_url: str) -> Flask:
    """The app under test: one sign-up view, queued or inline."""
    app = make_app(redis_url, base_url, SITE_NAME="Acme")
    app.template_folder = str(TEMPLATES)

    def welcome_args() -> dict[str, t.Any]:
        name = request.form.get("name", "").strip()
        email = request.form.get("email", "").strip()
        return {
            "to": email,
            "template": "emails/welcome",
            "context": {"name": name, "site_url": "https://acme.example/start"},
        }

    @app.post("/signup")
    def signup() -> ResponseReturnValue:
        enqueue_email(**welcome_args())
        return redirect("/signup/done", code=303)

    @app.post("/signup-inline")
    def signup_inline() -> ResponseReturnValue:
        send_email(**welcome_args())
        return redirect("/signup/done", code=303)

    return app


def serve(redis_url: str, base_url: str) -> None:
    """Run the app (a child process); print its port."""
    import logging

    from werkzeug.serving import make_server

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    server = make_server("127.0.0.1", 0, create_app(redis_url, base_url), threaded=True)
    print(f"port {server.server_port}", flush=True)
    server.serve_forever()


class Client:
    """POSTs the sign-up form over one kept-alive connection."""

    def __init__(self, port: int, path: str) -> None:
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        self.path = path
        self.sent = 0

    def post(self) -> float:
        self.sent += 1
        body = urllib.parse.urlencode(
            {"name": f"User {self.sent}", "email": f"user{self.sent}@example.com"}
        )
        headers = {"Content-Type": "application/x-www-form-urlencoded"}
        start = time.perf_counter()
        self.conn.request("POST", self.path, body=body, headers=headers)
        response = self.conn.getresponse()
        response.read()
        elapsed = time.perf_counter() - start
        if response.status != 303:
            raise RuntimeError(f"{self.path} answered {response.status}")
        return elapsed

    def close(self) -> None:
        self.conn.close()


def main(argv: t.Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="40 requests each")
    parser.add_argument(
        "--requests", type=int, default=200, help="per variant and latency"
    )
    parser.add_argument("--serve", nargs=2, metavar=("REDIS_URL", "BASE_URL"))
    args = parser.parse_args(argv)
    if args.serve:
        serve(*args.serve)
        return 0
    count = min(40 if args.quick else args.requests, 2000)

    rows: list[dict[str, t.Any]] = []
    with sandbox_process() as base_url, redis_process() as server:
        admin = Admin(base_url)
        app = make_app(server.url, base_url)
        app_process = subprocess.Popen(
            [sys.executable, str(SCRIPT), "--serve", server.url, base_url],
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            assert app_process.stdout is not None
            line = app_process.stdout.readline()
            if not line.startswith("port "):
                raise RuntimeError(f"the app did not start: {line!r}")
            port = int(line.split()[1])
            with workers(app, base_url, 1):
                wait_for_workers(app, 1)
                for latency in LATENCIES:
                    admin.reset(latency=latency)
                    clients = {n: Client(port, p) for n, p in VARIANTS.items()}
                    for client in clients.values():  # warm up
                        for _ in range(5):
                            client.post()
                    samples: dict[str, list[float]] = {n: [] for n in VARIANTS}
                    deadline = time.monotonic() + DEADLINE
                    names = list(VARIANTS)
                    turn = 0
                    while min(len(s) for s in samples.values()) < count:
                        if time.monotonic() > deadline:
                            print(f"deadline reached at {latency * 1000:.0f} ms")
                            break
                        for name in names if turn % 2 == 0 else names[::-1]:
                            n = min(ROUND, count - len(samples[name]))
                            samples[name].extend(clients[name].post() for _ in range(n))
                        turn += 1
                    for client in clients.values():
                        client.close()
                    for name, values in samples.items():
                        row = {
                            "variant": name,
                            "latency_ms": round(latency * 1000),
                            **summary_ms(values),
                        }
                        rows.append(row)
                        print(
                            f"{row['latency_ms']:>4} ms API latency, {name:21}"
                            f" median {row['median_ms']:8.2f} ms"
                            f"  p99 {row['p99_ms']:8.2f} ms  (n={row['n']})",
                            flush=True,
                        )
                sent = admin.stats()["emails_created"]
        finally:
            app_process.terminate()
            app_process.wait(timeout=10)
            admin.close()

    print()
    print_table(
        ["API latency", "variant", "median ms", "p99 ms", "requests"],
        [
            [f"{r['latency_ms']} ms", r["variant"], f"{r['median_ms']:.2f}",
             f"{r['p99_ms']:.2f}", r["n"]]
            for r in rows
        ],
    )  # fmt: skip
    queued = [r for r in rows if r["variant"] == "enqueue_email"]
    spread = max(r["median_ms"] for r in queued) - min(r["median_ms"] for r in queued)
    flat = max(r["median_ms"] for r in queued) < 10 and spread < 2
    print(
        f"\nenqueue path: medians {', '.join(str(r['median_ms']) for r in queued)} ms"
        f" across latencies (spread {spread:.2f} ms): "
        f"{'flat, target met' if flat else 'NOT flat'}"
    )
    write_results(
        "request_latency",
        {
            "requests_per_variant": count,
            "round": ROUND,
            "server": "werkzeug make_server(threaded=True), own process",
            "client": "http.client, one kept-alive connection per variant",
            "workers": "1 PostStackWorker, the documented command",
            "emails_sent_during_run": sent,
            "results": rows,
            "target": "enqueue path flat at a few ms (median < 10 ms, spread < 2 ms)",
            "target_met": flat,
        },
        quick=args.quick,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
