"""A killed worker's scheduler process stops and frees the scheduler lock.

From outside: two real ``rq worker --with-scheduler`` processes of
PostStackWorker on a real redis-server; the one whose forked scheduler holds
the queue's lock is SIGKILLed, and the other takes the lock over.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
import typing as t
from pathlib import Path

import pytest
import redis
from rq import Worker as RQWorker
from rq.scheduler import RQScheduler

from flask_poststack.cli import worker_command
from flask_poststack.config import load_settings
from tests.helpers import alive
from tests.helpers import descendants
from tests.helpers import wait_until

pytestmark = pytest.mark.skipif(
    not Path("/proc/self/stat").exists(), reason="needs /proc"
)

#: rq's lock lasts 61 s: an orphan that kept it, or died holding it, fails this.
ORPHAN_DEADLINE = 15.0


@pytest.fixture
def conn(redis_url: str) -> t.Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url)
    yield client
    client.close()


class Worker:
    """``rq worker --with-scheduler`` of PostStackWorker, as documented
    (``--maintenance-interval 1``), in a subprocess logging to a file."""

    def __init__(self, redis_url: str, log: Path) -> None:
        argv = worker_command(load_settings({"POSTSTACK_REDIS_URL": redis_url}),
                              maintenance_interval=1)  # fmt: skip
        assert "--with-scheduler" in argv
        env = {k: os.environ[k] for k in ("PATH", "HOME", "LANG") if k in os.environ}
        env["POSTSTACK_SUPPRESS_SEND"] = "1"
        self.log = log
        with open(log, "wb") as out:
            self.proc = subprocess.Popen(argv, env=env, stdout=out,
                                         stderr=subprocess.STDOUT)  # fmt: skip
        self.children: set[int] = set()

    def scheduler(self) -> set[int]:
        """Its scheduler process (if it holds the lock), remembered."""
        assert self.proc.poll() is None, self.log.read_text()
        self.children.update(descendants(self.proc.pid))
        return self.children

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        for pid in self.children:
            if alive(pid):
                os.kill(pid, signal.SIGKILL)


def test_a_killed_workers_scheduler_stops_and_another_takes_over(
    redis_url: str, conn: redis.Redis, tmp_path: Path
) -> None:
    lock = RQScheduler.get_locking_key("poststack")
    first = Worker(redis_url, tmp_path / "first.log")
    second: Worker | None = None
    try:
        wait_until(lambda: first.scheduler() and conn.exists(lock), 90,
                   "the first worker's scheduler holding the lock")  # fmt: skip
        (child,) = first.children
        holder = conn.get(lock)
        second = Worker(redis_url, tmp_path / "second.log")
        wait_until(lambda: len(RQWorker.all(connection=conn)) == 2, 90,
                   "the second worker registered")  # fmt: skip
        assert not second.scheduler()  # the first one holds the lock
        first.proc.send_signal(signal.SIGKILL)
        first.proc.wait(timeout=10)
        killed = time.monotonic()
        took: dict[str, float] = {}

        def over() -> bool:
            assert second is not None
            value = conn.get(lock)
            if "freed" not in took and value != holder:
                took["freed"] = time.monotonic() - killed
            if "exited" not in took and not alive(child):
                took["exited"] = time.monotonic() - killed
            taken = value not in (None, holder) and second.scheduler()
            if "taken" not in took and taken:
                took["taken"] = time.monotonic() - killed
            return len(took) == 3

        wait_until(over, ORPHAN_DEADLINE, f"the orphan's stop and a take-over {took}")
    finally:
        first.close()
        if second is not None:
            second.close()
    text = first.log.read_text(errors="replace")
    assert "is gone; stopping" in text, text
    # The figures docs/reliability.md quotes (pytest -s).
    print(f"after the SIGKILL: lock freed {took['freed']:.2f} s, orphan exited"
          f" {took['exited']:.2f} s, lock taken by the other worker"
          f" {took['taken']:.2f} s")  # fmt: skip
