"""Run every benchmark, then draw the plots: what ``make bench`` does.

Each script runs in its own process, one after the other (they would
disturb each other's timings on a small machine); a failing one is reported
and the others still run. ``--quick`` passes ``--quick`` to every script that
has it (``--runs 1 --out results/quick/NAME.json`` to one that has those
instead), for a fast pass whose figures are not the ones to quote: they go to
``benchmarks/results/quick/``, and so do its plots.

    python benchmarks/run_all.py [--quick] [--only enqueue_cost bulk ...]
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
import typing as t
from pathlib import Path

HERE = Path(__file__).resolve().parent
#: In this order; worker_classes.py runs when it is there.
SCRIPTS = (
    "enqueue_cost",
    "render_cost",
    "request_latency",
    "worker_classes",
    "bulk",
    "worker_rss",
)
QUICK = HERE / "results" / "quick"
#: A benchmark that takes longer than this is stopped.
TIMEOUT = 1800


def quick_flags(script: Path) -> list[str]:
    """Flags for a fast pass that writes to results/quick/, not results/."""
    source = script.read_text()
    if '"--quick"' in source:
        return ["--quick"]
    flags = ["--runs", "1"] if '"--runs"' in source else []
    if '"--out"' in source:
        flags += ["--out", str(QUICK / f"{script.stem}.json")]
    return flags


def main(argv: t.Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--only", nargs="*", choices=SCRIPTS)
    args = parser.parse_args(argv)
    failed: list[str] = []
    for name in args.only or SCRIPTS:
        script = HERE / f"{name}.py"
        if not script.exists():
            print(f"== {name}: not there, skipped", flush=True)
            continue
        argv_ = [
            sys.executable,
            str(script),
            *(quick_flags(script) if args.quick else []),
        ]
        print(f"== {name}: {' '.join(argv_[1:])}", flush=True)
        start = time.monotonic()
        # Its own process group: on a timeout, SIGTERM lets the script stop
        # what it started (see _common.py); SIGKILL the group if it hangs.
        process = subprocess.Popen(argv_, start_new_session=True)
        try:
            code = process.wait(timeout=TIMEOUT)
        except subprocess.TimeoutExpired:
            print(f"== {name}: stopped after {TIMEOUT} s", flush=True)
            os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
            code = -1
        print(
            f"== {name}: exit {code} after {time.monotonic() - start:.0f} s\n",
            flush=True,
        )
        if code != 0:
            failed.append(name)
    print("== plot", flush=True)
    plot = [sys.executable, str(HERE / "plot.py")]
    if args.quick:
        plot += ["--results", str(QUICK)]
    plotted = subprocess.run(plot, check=False)
    if plotted.returncode != 0:
        failed.append("plot")
    if failed:
        print(f"failed: {', '.join(failed)}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
