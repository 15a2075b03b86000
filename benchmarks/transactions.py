"""What after-commit queueing and the outbox cost a sign-up view.

One process, a throwaway ``redis-server``, and one SQLite file per variant
(WAL, ``synchronous=NORMAL``). Each variant's view inserts a user and queues
its welcome email, then commits, through Flask's test client:

* ``enqueue_email``: the plain call (queued before the commit);
* ``after_commit=True``: held, queued when the commit succeeds;
* ``outbox``: ``POSTSTACK_OUTBOX = "sqlalchemy"`` (one more INSERT, then the
  push and an UPDATE after the commit).

Variants take turns in rounds whose order flips each round; medians and p99
of the request time, and each median over the plain one (targets: 1.2x for
after-commit, 2x for the outbox). Then the relay: rows pushed per second by
``relay_once`` for rows that a Redis outage left behind. Writes
``benchmarks/results/transactions.json``.

    python benchmarks/transactions.py [--quick] [--requests 600] [--rows 3000]
"""

from __future__ import annotations

import argparse
import itertools
import logging
import tempfile
import time
import typing as t
from pathlib import Path

import redis
from _common import make_app
from _common import print_table
from _common import redis_process
from _common import summary_ms
from _common import write_results
from flask import Flask
from flask_sqlalchemy import SQLAlchemy
from redis.backoff import NoBackoff
from redis.retry import Retry
from sqlalchemy import event

from flask_poststack import enqueue_email
from flask_poststack import get_state
from flask_poststack.outbox import outbox_table
from flask_poststack.outbox.relay import relay_once
from flask_poststack.redis_server import free_port

VARIANTS = {
    "enqueue_email": {},
    "after_commit=True": {"POSTSTACK_AFTER_COMMIT": True},
    "outbox": {"POSTSTACK_OUTBOX": "sqlalchemy"},
}
ROUND = 20
_counter = itertools.count()


def _pragmas(dbapi_connection: t.Any, _record: t.Any) -> None:
    dbapi_connection.execute("PRAGMA journal_mode=WAL")
    dbapi_connection.execute("PRAGMA synchronous=NORMAL")


def build(redis_url: str, path: Path, config: dict[str, t.Any]) -> Flask:
    app = make_app(redis_url, SQLALCHEMY_DATABASE_URI=f"sqlite:///{path}", **config)
    db = SQLAlchemy()

    class User(db.Model):  # type: ignore[name-defined,misc]
        __tablename__ = "users"
        id = db.Column(db.Integer, primary_key=True)
        email = db.Column(db.String, unique=True, nullable=False)

    outbox_table(db.metadata)
    db.init_app(app)
    with app.app_context():
        event.listen(db.engine, "connect", _pragmas)
        db.create_all()

    @app.post("/signup")
    def signup() -> tuple[str, int]:
        address = f"user{next(_counter)}@example.com"
        db.session.add(User(email=address))
        enqueue_email(to=address, subject="Welcome", text="Thanks for signing up.")
        db.session.commit()
        return "", 201

    return app


def measure(apps: dict[str, Flask], requests: int) -> dict[str, list[float]]:
    clients = {name: app.test_client() for name, app in apps.items()}
    times: dict[str, list[float]] = {name: [] for name in apps}
    for client in clients.values():  # warm up: imports, pools, statements
        for _ in range(20):
            client.post("/signup")
    names = list(apps)
    for r in range(max(1, requests // ROUND)):
        for name in names if r % 2 == 0 else reversed(names):
            for _ in range(ROUND):
                started = time.perf_counter()
                response = clients[name].post("/signup")
                times[name].append(time.perf_counter() - started)
                assert response.status_code == 201, response.data
    return times


def relay_rate(app: Flask, rows: int) -> dict[str, float]:
    # No retries: a refused connection fails the push at once.
    dead = redis.Redis(port=free_port(), retry=Retry(NoBackoff(), 0))
    client = app.test_client()
    logging.getLogger("flask_poststack").setLevel(logging.ERROR)  # one per row
    with get_state(app).use_redis(dead):
        for _ in range(rows):
            client.post("/signup")  # committed, the push fails: left for the relay
    with app.app_context():
        started = time.perf_counter()
        pushed = 0
        while n := relay_once(app, grace=0):
            pushed += n
        elapsed = time.perf_counter() - started
    assert pushed == rows, (pushed, rows)
    return {"rows": rows, "seconds": round(elapsed, 3), "rows_per_s": rows / elapsed}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=600)
    parser.add_argument("--rows", type=int, default=3000)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    if args.quick:
        args.requests, args.rows = 100, 300
    with redis_process() as server, tempfile.TemporaryDirectory() as tmp:
        apps = {
            name: build(server.url, Path(tmp) / f"{i}.db", config)
            for i, (name, config) in enumerate(VARIANTS.items())
        }
        times = measure(apps, args.requests)
        relay = relay_rate(apps["outbox"], args.rows)
    summaries = {name: summary_ms(values) for name, values in times.items()}
    plain = summaries["enqueue_email"]["median_ms"]
    print_table(
        ["variant", "median ms", "p99 ms", "x plain"],
        [
            (n, s["median_ms"], s["p99_ms"], round(s["median_ms"] / plain, 2))
            for n, s in summaries.items()
        ],
    )
    print(
        f"\nrelay: {relay['rows']} rows in {relay['seconds']} s,"
        f" {relay['rows_per_s']:.0f} rows/s"
    )
    write_results(
        "transactions",
        {"requests": args.requests, "views": summaries, "relay": relay},
        quick=args.quick,
    )


if __name__ == "__main__":
    main()
