"""Short versions of the reliability benchmarks, run by ``make test``.

Each test runs the benchmark script itself (``benchmarks/soak.py``,
``benchmarks/redis_durability.py``) as a subprocess with small counts, and
checks the JSON report it writes: the figures in ``docs/reliability.md`` come
from the same code with the default, larger counts.

The property-based half of issue 9 lives elsewhere: ``tests/test_properties.py``
(any input to ``send_email``/``enqueue_email`` succeeds or raises
``InvalidEmailError``, and nothing invalid reaches the queue) and
``tests/webhooks/test_view.py::test_fuzz_never_500_never_unsigned_dispatch``.
"""

from __future__ import annotations

import json
import subprocess
import sys
import typing as t
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"


def run_script(name: str, out: Path, *args: str, timeout: float) -> dict[str, t.Any]:
    proc = subprocess.run(
        [sys.executable, str(BENCHMARKS / name), "--out", str(out), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    print(proc.stdout)
    assert out.exists(), f"{name} wrote no report:\n{proc.stdout}\n{proc.stderr}"
    report: dict[str, t.Any] = json.loads(out.read_text())
    report["_exit"] = proc.returncode
    report["_output"] = proc.stdout + proc.stderr
    return report


def test_soak_short(tmp_path: Path) -> None:
    r = run_script(
        "soak.py",
        tmp_path / "soak.json",
        "--emails", "300", "--seconds", "25", "--kill-every", "2", "--max-kills", "3",
        timeout=60,
    )  # fmt: skip
    summary = {k: v for k, v in r.items() if not k.startswith("_")}
    assert r["drained"], summary
    assert r["lost"] == 0, summary
    assert r["duplicated"] == 0, summary
    assert r["delivered_exactly_once"] == r["should_deliver"] == 294, summary
    assert r["sandbox_distinct_keys"] == r["sandbox_emails_stored"] == 294
    assert r["finished_with_email_id"] == 294
    # The 422s: failed at once, one 422 answer each, nothing stored.
    assert r["refused_422"] == 6
    assert r["refused_422_failed_at_once"] == 6, r["refused_422_problems"]
    assert 0 <= r["refused_422_extra_answers"] <= r["refused_422_interrupted_by_kill"]
    assert r["interrupted_jobs_not_back"] == 0
    assert r["refused_422_stored"] == 0
    assert r["left_in_redis"] == {
        "queued": 0,
        "started": 0,
        "scheduled": 0,
        "unfinished_jobs": 0,
    }
    # The run proves something: faults fired, RQ retried, workers were killed.
    assert r["kills"] == 3
    assert r["rq_retries"] > 50
    assert r["api_replays"] > 0, "no drop_after fault was replayed"
    assert r["secrets"]["clean"], r["secrets"]
    assert r["secrets"]["redis_blobs_scanned"] > 1000
    assert r["secrets"]["log_lines_scanned"] > 500
    assert r["ok"] and r["_exit"] == 0, r["_output"][-3000:]


def test_redis_killed_mid_run(tmp_path: Path) -> None:
    r = run_script(
        "redis_durability.py",
        tmp_path / "durability.json",
        "--emails", "100", "--runs", "1", "--rate", "50", "--downtime", "0.3",
        "--bound", "45",  # a generous drain bound: under load a retry waits a beat
        "--settings", "always", "everysec", "off", "--hold-sends",
        timeout=240,
    )  # fmt: skip
    by = {s["setting"]: s for s in r["summary"]}
    runs = {row["setting"]: row for row in r["runs"]}
    for setting in ("always", "everysec", "off"):
        assert by[setting]["drained"], runs[setting]
        assert by[setting]["duplicated"] == 0, runs[setting]
        # Redis was killed half-way through, with both workers' sends held
        # by the API (stored, not yet answered): so by construction while
        # they were sending, and with all the rest of the first half queued.
        assert runs[setting]["acknowledged_before_kill"] == 50
        assert runs[setting]["sends_held_at_kill"] == 2
        assert runs[setting]["backlog_at_kill"] == 48
    assert by["always"]["lost"] == 0, runs["always"]
    assert by["everysec"]["lost"] == 0, runs["everysec"]  # a process kill only
    # Without persistence the restart empties the queue: the contrast that
    # shows the test can see a loss at all.
    assert by["off"]["lost"] > 0, runs["off"]
    assert r["_exit"] == 0, r["_output"][-3000:]
