"""``flask poststack dev`` end to end: real processes, as a user runs it.

The command runs as a subprocess for a small app (``tests/e2e/dev_app.py``)
on free ports; the app, configured only by the ``export`` lines it printed,
queues a sign-up email; the worker it started sends it to its sandbox; a
SIGINT then stops everything, and no process it started is left.
"""

from __future__ import annotations

import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import threading
import time
import typing as t
from pathlib import Path

import httpx
import pytest

from flask_poststack.redis_server import free_port
from tests.helpers import alive
from tests.helpers import descendants
from tests.helpers import wait_until

from .dev_app import create_app

ROOT = Path(__file__).resolve().parents[2]
APP = "tests.e2e.dev_app:create_app"

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs /proc"),
]


class Dev:
    """``flask poststack dev`` as a subprocess, its output read as it comes."""

    def __init__(self, *args: str) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("POSTSTACK_")}
        env.update(PYTHONUNBUFFERED="1", FLASK_APP=APP)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "flask", "poststack", "dev", *args],
            cwd=ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.lines: list[str] = []
        assert self.proc.stdout is not None
        self.reader = threading.Thread(
            target=self.lines.extend, args=(self.proc.stdout,), daemon=True
        )
        self.reader.start()

    @property
    def output(self) -> str:
        return "".join(self.lines)

    def wait_for(self, text: str, timeout: float = 45) -> None:
        deadline = time.monotonic() + timeout
        while text not in self.output:
            assert self.proc.poll() is None, self.output
            assert time.monotonic() < deadline, self.output
            time.sleep(0.1)

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        self.reader.join(timeout=5)
        if self.proc.stdout is not None:
            self.proc.stdout.close()


@pytest.fixture
def dev() -> t.Iterator[t.Callable[..., Dev]]:
    started: list[Dev] = []

    def start(*args: str) -> Dev:
        started.append(Dev(*args))
        return started[-1]

    yield start
    for one in started:
        one.close()


def three_children(run: Dev) -> set[int]:
    """Redis, the worker and the scheduler the worker forks (a moment after
    the worker registers: waited for)."""
    children: set[int] = set()

    def three() -> bool:
        assert run.proc.poll() is None, run.output
        children.update(descendants(run.proc.pid))
        return len(children) >= 3

    wait_until(three, 90, "Redis, the worker and its scheduler")
    return children


def exports_of(output: str) -> dict[str, str]:
    pairs = re.findall(r"^  export (POSTSTACK_\w+)=(.*)$", output, re.M)
    return {key: shlex.split(value)[0] for key, value in pairs}


def test_dev_runs_everything_the_app_needs_and_stops_it_all(
    dev: t.Callable[..., Dev], monkeypatch: pytest.MonkeyPatch
) -> None:
    sandbox_port, redis_port = free_port(), free_port()
    run = dev("--sandbox-port", str(sandbox_port), "--redis-port", str(redis_port))
    run.wait_for("Press Ctrl-C to stop.")
    out = run.output
    inbox = f"http://127.0.0.1:{sandbox_port}/"
    assert f"  inbox    {inbox}\n" in out
    exports = exports_of(out)
    assert exports == {
        "POSTSTACK_BASE_URL": f"http://127.0.0.1:{sandbox_port}",
        "POSTSTACK_REDIS_URL": f"redis://127.0.0.1:{redis_port}/0",
        "POSTSTACK_API_KEY": "sk_test_dev_local",
    }
    assert "flask --app tests.e2e.dev_app:create_app run" in out
    children = three_children(run)

    # The user's app in "another terminal": only the printed exports.
    for key, value in exports.items():
        monkeypatch.setenv(key, value)
    app = create_app()
    answer = app.test_client().post(
        "/signup", data={"name": "Ada", "email": "ada@example.com"}
    )
    assert answer.status_code == 202, answer.data

    deadline = time.monotonic() + 20
    emails: list[dict[str, t.Any]] = []
    while not emails:
        emails = httpx.get(f"{inbox}_sandbox/emails", timeout=5).json()["emails"]
        assert time.monotonic() < deadline, run.output
        time.sleep(0.1)
    (email,) = emails
    assert email["toAddresses"] == ["ada@example.com"]
    assert email["subject"] == "Welcome to the dev app"
    assert email["testMode"] is True
    page = httpx.get(inbox, timeout=5)
    assert "Welcome to the dev app" in page.text

    run.proc.send_signal(signal.SIGINT)
    assert run.proc.wait(timeout=30) == 0, run.output
    run.reader.join(timeout=5)
    assert run.output.rstrip().endswith("Stopped."), run.output
    assert "warm shut down requested" in run.output  # the worker stopped cleanly
    left = [pid for pid in children if alive(pid)]
    assert left == [], run.output
    for port in (sandbox_port, redis_port):
        with pytest.raises(OSError), socket.create_connection(("127.0.0.1", port), 1):
            pass


def test_dev_says_which_port_is_taken_and_leaves_nothing(
    dev: t.Callable[..., Dev],
) -> None:
    sandbox_port = free_port()
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        run = dev("--sandbox-port", str(sandbox_port), "--redis-port", str(port))
        assert run.proc.wait(timeout=30) == 1
    run.reader.join(timeout=5)
    last = run.output.rstrip().splitlines()[-1]
    assert last == (
        f"Error: Redis cannot listen on 127.0.0.1:{port} (Address already in use);"
        " pass another --redis-port."
    )
    assert "Stopping" not in run.output  # the ports are checked before any start
    with pytest.raises(OSError), socket.create_connection(("127.0.0.1", sandbox_port)):
        pass  # the sandbox was never started


def test_a_killed_dev_leaves_no_process_behind(dev: t.Callable[..., Dev]) -> None:
    sandbox_port, redis_port = free_port(), free_port()
    run = dev("--sandbox-port", str(sandbox_port), "--redis-port", str(redis_port))
    run.wait_for("Press Ctrl-C to stop.")
    children = three_children(run)
    run.proc.send_signal(signal.SIGKILL)  # no clean-up of its own can run
    assert run.proc.wait(timeout=10) == -signal.SIGKILL
    try:
        took = wait_until(lambda: not any(alive(pid) for pid in children), 60,
                          "every process dev started gone")  # fmt: skip
    finally:
        for pid in children:
            if alive(pid):
                os.kill(pid, signal.SIGKILL)
    print(f"every child of the killed dev gone {took:.2f} s after the SIGKILL")
    with pytest.raises(OSError), socket.create_connection(("127.0.0.1", redis_port), 1):
        pass
    # At once on the same ports, though the killed Redis's connections may
    # linger in TIME-WAIT there.
    again = dev("--sandbox-port", str(sandbox_port), "--redis-port", str(redis_port))
    again.wait_for("Press Ctrl-C to stop.")
    again.proc.send_signal(signal.SIGINT)
    assert again.proc.wait(timeout=30) == 0, again.output
