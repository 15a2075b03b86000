"""What the benchmark scripts share: processes, the app, statistics, output.

Not a benchmark itself. Every process started here binds 127.0.0.1 only and
is stopped by the context manager that started it.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import math
import os
import platform
import signal
import statistics
import subprocess
import sys
import time
import typing as t
from importlib import metadata
from pathlib import Path

import httpx
from flask import Flask

from flask_poststack import get_state
from flask_poststack import PostStack
from flask_poststack.cli import worker_command
from flask_poststack.redis_server import find_redis_server
from flask_poststack.redis_server import RedisServer

# SIGTERM (run_all.py's timeout, a plain `kill`) unwinds like Ctrl-C, so the
# context managers below stop every process they started.
signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
QUICK_RESULTS = RESULTS / "quick"
API_KEY = "sk_test_benchmark"
SENDER = "Acme <hello@acme.example>"

#: A realistic small transactional email: one recipient, subject, both bodies.
SMALL_EMAIL: dict[str, t.Any] = {
    "to": "ada.lovelace@example.com",
    "subject": "Welcome to Acme, Ada",
    "html": "<h1>Welcome, Ada!</h1><p>Thanks for signing up to Acme.</p>"
    '<p><a href="https://acme.example/start">Start here</a>.</p>',
    "text": "Welcome, Ada!\n\nThanks for signing up to Acme.\n"
    "Start here: https://acme.example/start",
    "tags": ["welcome"],
}


# -- processes ---------------------------------------------------------------


@contextlib.contextmanager
def sandbox_process(
    latency: float = 0.0, lifecycle_delay: float = 3600.0
) -> t.Iterator[str]:
    """Run the sandbox in a subprocess (no shared GIL); yield its base URL.

    The lifecycle (queued, sent, delivered) is pushed an hour out by default
    so that the sandbox spends the run answering the API and nothing else.
    """
    process = subprocess.Popen(
        [sys.executable, "-m", "flask_poststack.sandbox", "--port", "0", "--quiet",
         "--latency", str(latency * 1000), "--lifecycle-delay", str(lifecycle_delay)],
        stdout=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        if " on http://127.0.0.1:" not in line:
            raise RuntimeError(f"the sandbox did not start: {line!r}")
        yield line.split(" on ")[1].strip()
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        if process.stdout is not None:
            process.stdout.close()


@contextlib.contextmanager
def redis_process() -> t.Iterator[RedisServer]:
    """A throwaway ``redis-server`` on 127.0.0.1, stopped afterwards."""
    server = RedisServer().start()
    try:
        yield server
    finally:
        server.stop()


class Admin:
    """The sandbox's admin API (``/_sandbox/``)."""

    def __init__(self, base_url: str) -> None:
        self.http = httpx.Client(base_url=base_url, timeout=30)

    def reset(self, **config: t.Any) -> None:
        self.http.post("/_sandbox/reset", json={}).raise_for_status()
        if config:
            self.http.post("/_sandbox/config", json=config).raise_for_status()

    def configure(self, **config: t.Any) -> None:
        self.http.post("/_sandbox/config", json=config).raise_for_status()

    def stats(self) -> dict[str, t.Any]:
        # Without the per-key attempt counts: they grow with every request.
        response = self.http.get("/_sandbox/stats", params={"keys": "0"})
        response.raise_for_status()
        return t.cast(dict[str, t.Any], response.json())

    def emails(self) -> list[dict[str, t.Any]]:
        response = self.http.get("/_sandbox/emails")
        response.raise_for_status()
        body = response.json()
        rows = body["emails"] if isinstance(body, dict) else body
        return t.cast(list[dict[str, t.Any]], rows)

    def close(self) -> None:
        self.http.close()


def make_app(
    redis_url: str, base_url: str = "http://127.0.0.1:9", **config: t.Any
) -> Flask:
    """A Flask app with Flask-PostStack on ``redis_url`` and ``base_url``."""
    app = Flask("benchmark")
    app.config.update(
        POSTSTACK_API_KEY=API_KEY,
        POSTSTACK_BASE_URL=base_url,
        POSTSTACK_REDIS_URL=redis_url,
        POSTSTACK_DEFAULT_FROM=SENDER,
        POSTSTACK_SUPPRESS_SEND=False,
        **config,
    )
    PostStack(app)
    return app


def worker_env(base_url: str, code: str | None = None) -> dict[str, str]:
    """A minimal environment for a worker: ``POSTSTACK_*`` and nothing secret.

    ``code``: a directory holding another copy of ``flask_poststack`` for the
    worker to import instead of the installed one (a before/after comparison).
    """
    env = {k: os.environ[k] for k in ("PATH", "HOME", "LANG") if k in os.environ}
    env.update(POSTSTACK_API_KEY=API_KEY, POSTSTACK_BASE_URL=base_url)
    # HERE: for job modules kept here (seed_task).
    env["PYTHONPATH"] = os.pathsep.join([code, str(HERE)] if code else [str(HERE)])
    return env


@contextlib.contextmanager
def spawn(
    argvs: t.Sequence[t.Sequence[str]], base_url: str, code: str | None = None
) -> t.Iterator[list[subprocess.Popen[bytes]]]:
    """One worker subprocess per command line, with :func:`worker_env`, each
    in its own session; stopped (and its scheduler with it) afterwards."""
    procs = [
        subprocess.Popen(
            argv,
            env=worker_env(base_url, code),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        for argv in argvs
    ]
    try:
        yield procs
    finally:
        for proc in procs:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


@contextlib.contextmanager
def workers(
    app: Flask,
    base_url: str,
    count: int,
    *,
    worker_class: str | None = None,
    burst: bool = False,
) -> t.Iterator[list[subprocess.Popen[bytes]]]:
    """``count`` worker subprocesses on the documented command line
    (:func:`~flask_poststack.cli.worker_command`), stopped afterwards.

    ``worker_class`` swaps ``--worker-class`` (e.g. ``rq.Worker``).
    """
    argv = worker_command(get_state(app).settings, burst=burst)
    if worker_class is not None:
        argv[argv.index("--worker-class") + 1] = worker_class
    with spawn([argv] * count, base_url) as procs:
        yield procs


def wait_for_workers(app: Flask, count: int, timeout: float = 30.0) -> None:
    """Wait until ``count`` workers have registered in Redis."""
    from rq import Worker

    deadline = time.monotonic() + timeout
    redis = get_state(app).redis
    while len(Worker.all(connection=redis)) < count:
        if time.monotonic() > deadline:
            raise TimeoutError(f"{count} workers did not start in {timeout} s")
        time.sleep(0.05)


def wait_until(
    predicate: t.Callable[[], bool], timeout: float, interval: float = 0.02
) -> bool:
    """Poll ``predicate`` until true or ``timeout`` seconds have passed."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(interval)
    return True


# -- statistics ----------------------------------------------------------------


def percentile(values: t.Sequence[float], pct: float) -> float:
    """The ``pct`` percentile (nearest rank) of ``values``."""
    ordered = sorted(values)
    rank = max(1, math.ceil(pct / 100 * len(ordered)))
    return ordered[rank - 1]


def summary_ms(seconds: t.Sequence[float]) -> dict[str, float]:
    """Median, p99, mean and count of durations, in milliseconds."""
    return {
        "n": len(seconds),
        "median_ms": round(statistics.median(seconds) * 1000, 4),
        "p99_ms": round(percentile(seconds, 99) * 1000, 4),
        "mean_ms": round(statistics.fmean(seconds) * 1000, 4),
    }


# -- output --------------------------------------------------------------------


def machine() -> dict[str, t.Any]:
    """Where and with what the figures were taken."""
    redis_version = "unknown"
    with contextlib.suppress(Exception):
        out = subprocess.run(
            [find_redis_server(), "--version"],
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout
        redis_version = next(
            (w.split("=", 1)[1] for w in out.split() if w.startswith("v=")), out.strip()
        )
    return {
        "nproc": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "rq": metadata.version("rq"),
        "redis_py": metadata.version("redis"),
        "redis_server": redis_version,
        "flask_poststack": metadata.version("Flask-PostStack"),
    }


def document(
    name: str, data: dict[str, t.Any], *, quick: bool = False
) -> dict[str, t.Any]:
    """``data`` with the benchmark's name, the date and the machine."""
    return {
        "benchmark": name,
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(
            timespec="seconds"
        ),
        "quick": quick,
        "machine": machine(),
        **data,
    }


def write_json(path: Path, data: dict[str, t.Any]) -> Path:
    """Write ``data`` to ``path`` as indented JSON and say so."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2, default=str) + "\n")
    print(f"\nwrote {path}")
    return path


def write_results(name: str, data: dict[str, t.Any], *, quick: bool = False) -> Path:
    """Write ``benchmarks/results/NAME.json`` with the machine and the date.

    A ``--quick`` run writes to ``benchmarks/results/quick/`` instead (not
    kept in git), so it never replaces the figures of a full run.
    """
    directory = QUICK_RESULTS if quick else RESULTS
    return write_json(directory / f"{name}.json", document(name, data, quick=quick))


def print_table(headers: t.Sequence[str], rows: t.Iterable[t.Sequence[t.Any]]) -> None:
    """Print a Markdown table."""
    print("| " + " | ".join(headers) + " |")
    print("|" + "---|" * len(headers))
    for row in rows:
        print("| " + " | ".join(str(cell) for cell in row) + " |", flush=True)
