"""A killed worker's scheduler process stops and frees the scheduler lock.

From outside: a real ``rq worker --with-scheduler`` process of
PostStackWorker on a real redis-server, SIGKILLed once its forked scheduler
holds the queue's lock.
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


def test_a_killed_workers_scheduler_stops_and_frees_the_lock(
    redis_url: str, conn: redis.Redis, tmp_path: Path
) -> None:
    argv = worker_command(load_settings({"POSTSTACK_REDIS_URL": redis_url}),
                          maintenance_interval=1)  # fmt: skip
    assert "--with-scheduler" in argv
    env = {k: os.environ[k] for k in ("PATH", "HOME", "LANG") if k in os.environ}
    env["POSTSTACK_SUPPRESS_SEND"] = "1"
    lock = RQScheduler.get_locking_key("poststack")
    log = tmp_path / "worker.log"
    with open(log, "wb") as out:
        worker = subprocess.Popen(argv, env=env, stdout=out, stderr=subprocess.STDOUT)
    scheduler: set[int] = set()
    try:

        def scheduling() -> bool:
            assert worker.poll() is None, log.read_text()
            scheduler.update(descendants(worker.pid))
            return bool(scheduler) and bool(conn.exists(lock))

        wait_until(scheduling, 30, "the worker's scheduler holding the lock")
        (child,) = scheduler
        assert alive(child)
        worker.send_signal(signal.SIGKILL)
        worker.wait(timeout=10)
        killed = time.monotonic()
        took: dict[str, float] = {}

        def gone() -> bool:
            if "lock" not in took and not conn.exists(lock):
                took["lock"] = time.monotonic() - killed
            if "exit" not in took and not alive(child):
                took["exit"] = time.monotonic() - killed
            return len(took) == 2

        wait_until(gone, ORPHAN_DEADLINE, f"the orphaned scheduler's stop {took}")
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait()
        for pid in scheduler:
            if alive(pid):
                os.kill(pid, signal.SIGKILL)
    text = log.read_text(errors="replace")
    assert "is gone; stopping" in text, text
    # The figures docs/reliability.md quotes (pytest -s).
    print(f"lock freed {took['lock']:.2f} s, scheduler exited {took['exit']:.2f} s"
          " after the SIGKILL")  # fmt: skip
