"""``make demo`` (``python -m example_app.demo``) end to end, in a subprocess.

Each run starts the sandbox, a Redis, a real ``rq worker`` and the example
app, so these tests also check that nothing is left running afterwards.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DEMO = [sys.executable, "-u", "-m", "example_app.demo"]

pytestmark = pytest.mark.slow


def run_demo(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*DEMO, *args], cwd=ROOT, capture_output=True, text=True, timeout=60
    )


def assert_all_stopped(out: str) -> None:
    """The worker process is gone and nothing listens on the demo's ports."""
    worker_pid = re.search(r"^Worker: +pid (\d+):", out, re.M)
    assert worker_pid, out
    with pytest.raises(ProcessLookupError):
        os.kill(int(worker_pid.group(1)), 0)
    for port in re.findall(
        r"http://127\.0\.0\.1:(\d+)|redis://127\.0\.0\.1:(\d+)", out
    ):
        number = int(port[0] or port[1])
        with pytest.raises(OSError), socket.create_connection(("127.0.0.1", number), 1):
            pass


def test_demo_signs_up_and_follows_the_email_to_delivery() -> None:
    started = time.monotonic()
    result = run_demo()

    out = result.stdout
    assert result.returncode == 0, out + result.stderr
    assert time.monotonic() - started < 60
    worker = re.search(r"^Worker: +pid \d+: (.*)$", out, re.M)
    assert worker, out
    assert "rq worker --url redis://127.0.0.1:" in worker.group(1)
    assert " --worker-class flask_poststack.worker.PostStackWorker " in worker.group(1)
    assert "Signed up ada@example.com: POST /signup -> 303 /signup/done" in out
    email_id = re.search(r"^Email id: +(em_\w+)$", out, re.M)
    assert email_id, out
    assert re.search(r"^Sandbox status: +delivered ", out, re.M), out
    assert re.search(r"^Job state: +sent ", out, re.M), out
    assert re.search(r"^Webhook status: +delivered \(recorded by the app\)$", out, re.M)
    assert re.search(r"^Inbox: +http://127\.0\.0\.1:\d+/$", out, re.M), out
    assert out.rstrip().endswith("Stopped.")
    assert_all_stopped(out)


def test_demo_fails_clearly_and_still_cleans_up() -> None:
    result = run_demo("--timeout", "0")

    assert result.returncode == 1
    assert "Demo failed: timed out after 0 s: job " in result.stderr
    assert "Worker log:" in result.stderr
    assert result.stdout.rstrip().endswith("Stopped.")
    assert_all_stopped(result.stdout)


def test_demo_keep_serves_until_ctrl_c() -> None:
    lines: list[str] = []
    with subprocess.Popen(
        [*DEMO, "--keep"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    ) as proc:
        assert proc.stdout is not None
        reader = threading.Thread(target=lines.extend, args=(proc.stdout,))
        reader.start()
        try:
            deadline = time.monotonic() + 45
            while not any("Press Ctrl-C" in line for line in lines):
                assert proc.poll() is None, "".join(lines)
                assert time.monotonic() < deadline, "".join(lines)
                time.sleep(0.1)
            port = re.search(r"^App: +http://127.0.0.1:(\d+)/$", "".join(lines), re.M)
            assert port, "".join(lines)
            with socket.create_connection(("127.0.0.1", int(port.group(1))), 1):
                pass  # still serving

            proc.send_signal(signal.SIGINT)
            assert proc.wait(timeout=30) == 0
        finally:
            if proc.poll() is None:
                proc.kill()
            proc.wait()
            reader.join(timeout=5)
    out = "".join(lines)
    assert out.rstrip().endswith("Stopped.")
    assert_all_stopped(out)
