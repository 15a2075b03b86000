"""What the reliability benchmarks share: real workers, Redis and the sandbox.

Used by ``benchmarks/soak.py`` and ``benchmarks/redis_durability.py``. The
benchmarks keep their own harness instead of importing ``tests`` (the
end-to-end tests have theirs in ``tests/e2e/harness.py``), so that either
can change without breaking the other.

Every worker is started with exactly the command the docs give
(:func:`flask_poststack.cli.worker_command`) and an environment that holds
only ``PATH``/``HOME``/locale and ``POSTSTACK_*`` variables: no Flask app, no
``FLASK_APP``. Each runs in its own session (process group), so that it can
be killed with the scheduler process it forks.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import os
import re
import secrets
import signal
import subprocess
import typing as t
import zlib
from pathlib import Path

import _common
import redis
from flask import Flask
from rq import Queue
from rq import Worker
from rq.registry import FailedJobRegistry
from rq.registry import FinishedJobRegistry
from rq.registry import ScheduledJobRegistry
from rq.registry import StartedJobRegistry
from rq.serializers import JSONSerializer

from flask_poststack import get_state
from flask_poststack import PostStack
from flask_poststack.cli import worker_command
from flask_poststack.config import Settings
from flask_poststack.sandbox import Sandbox

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"

#: A fresh, recognisable key per process, so the secret scans cannot pass by luck.
API_KEY = "sk_test_" + secrets.token_hex(20)
#: Short retry intervals: each retry goes through the scheduler that the
#: documented command starts (--with-scheduler), and comes back in a second.
RETRY_INTERVALS = "1,1,1,1,1,1,1,1"
RETRIES = len(RETRY_INTERVALS.split(","))
#: Variables a worker may inherit besides POSTSTACK_*: nothing app-specific.
BASE_ENV = ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR")


class HarnessError(AssertionError):
    """A wait timed out or a process misbehaved."""


def base_url_of(api: Sandbox | str) -> str:
    return api if isinstance(api, str) else api.base_url


def make_app(
    redis_url: str,
    api: Sandbox | str,
    *,
    api_key: str = API_KEY,
    retry_intervals: str = RETRY_INTERVALS,
    **config: t.Any,
) -> Flask:
    app = Flask(__name__)
    app.config.update(
        POSTSTACK_API_KEY=api_key,
        POSTSTACK_BASE_URL=base_url_of(api),
        POSTSTACK_REDIS_URL=redis_url,
        POSTSTACK_DEFAULT_FROM="Acme <hello@example.com>",
        POSTSTACK_RETRY_INTERVALS=retry_intervals,
        **config,
    )
    PostStack(app)
    return app


def rq_queue(app: Flask) -> Queue:
    state = get_state(app)
    return Queue(
        state.settings.queue, connection=state.redis, serializer=JSONSerializer
    )


def registry_counts(app: Flask) -> dict[str, int]:
    q = rq_queue(app)
    return {
        "queued": q.count,
        "started": StartedJobRegistry(queue=q).count,
        "scheduled": ScheduledJobRegistry(queue=q).count,
        "finished": FinishedJobRegistry(queue=q).count,
        "failed": FailedJobRegistry(queue=q).count,
    }


class Workers:
    """``rq worker`` subprocesses started with the documented command.

    Each one runs in its own session, so that teardown can kill it with the
    scheduler process it forks (which outlives a SIGKILL of the worker).
    """

    def __init__(self, log_dir: Path, *, api_key: str = API_KEY) -> None:
        self.log_dir = log_dir
        self.api_key = api_key
        self.procs: list[subprocess.Popen[bytes]] = []
        self._logs: list[t.IO[bytes]] = []

    def start(
        self,
        settings: Settings,
        api: Sandbox | str,
        *,
        burst: bool = False,
        maintenance_interval: int = 1,
        **env: str,
    ) -> subprocess.Popen[bytes]:
        argv = worker_command(
            settings, burst=burst, maintenance_interval=maintenance_interval
        )
        environ = {k: os.environ[k] for k in BASE_ENV if k in os.environ}
        environ.update(
            POSTSTACK_API_KEY=self.api_key,
            POSTSTACK_BASE_URL=base_url_of(api),
            POSTSTACK_HEARTBEAT_INTERVAL="1",
        )
        environ.update(env)
        assert "FLASK_APP" not in environ
        n = len(self.procs)
        out = open(self.log_dir / f"worker{n}.out", "wb")  # noqa: SIM115
        err = open(self.log_dir / f"worker{n}.err", "wb")  # noqa: SIM115
        self._logs += [out, err]
        proc = subprocess.Popen(
            argv, env=environ, stdout=out, stderr=err, start_new_session=True
        )
        self.procs.append(proc)
        return proc

    def kill(self, proc: subprocess.Popen[bytes], *, group: bool = False) -> None:
        """SIGKILL the worker process itself, as the OOM killer would.

        ``group=True`` kills its scheduler process too, as a container's
        OOM kill (or a process manager cleaning up after it) would.
        """
        with contextlib.suppress(ProcessLookupError, PermissionError):
            if group:
                os.killpg(proc.pid, signal.SIGKILL)
            else:
                os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)

    def wait(self, proc: subprocess.Popen[bytes], timeout: float) -> int:
        try:
            return proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise HarnessError(
                f"worker {proc.pid} still running after {timeout}s"
            ) from None

    def logs(self) -> str:
        for f in self._logs:
            f.flush()
        return "\n".join(
            path.read_text(errors="replace")
            for path in sorted(self.log_dir.iterdir())
            if path.name.startswith("worker")
        )

    def close(self) -> None:
        for proc in self.procs:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)  # the worker and its scheduler
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=10)
        for f in self._logs:
            f.close()


def current_job_of(conn: redis.Redis, pid: int) -> str | None:
    """The id of the job the worker process ``pid`` is running, if any."""
    for worker in Worker.all(connection=conn):
        if worker.pid == pid:
            job_id: str | None = worker.get_current_job_id()
            return job_id
    return None


def current_jobs_of(conn: redis.Redis, pid: int) -> list[str]:
    """The ids of every job the worker process ``pid`` has in flight (one
    unless POSTSTACK_WORKER_CONCURRENCY is set; rq 2.x tells only one)."""
    for worker in Worker.all(connection=conn):
        if worker.pid == pid:
            executions = getattr(worker, "get_current_executions", None)
            ids = [e.job_id for e in executions()] if executions else []
            job_id = worker.get_current_job_id()
            return ids or ([job_id] if job_id else [])
    return []


def settings_of(app: Flask) -> Settings:
    return get_state(app).settings


def dump_redis(client: redis.Redis) -> list[bytes]:
    """Every key and value in the database, as bytes."""
    conn: t.Any = client  # redis-py's return types are unions of every mode
    blobs: list[bytes] = []
    for key in conn.scan_iter(count=500):
        blobs.append(key)
        kind = conn.type(key).decode()
        if kind == "string":
            blobs.append(conn.get(key) or b"")
        elif kind == "hash":
            for field, value in conn.hgetall(key).items():
                blobs += [field, value]
        elif kind == "list":
            blobs += conn.lrange(key, 0, -1)
        elif kind == "set":
            blobs += list(conn.smembers(key))
        elif kind == "zset":
            blobs += [member for member, _ in conn.zrange(key, 0, -1, withscores=True)]
        elif kind == "stream":
            for entry_id, fields in conn.xrange(key):
                blobs.append(entry_id)
                for field, value in fields.items():
                    blobs += [field, value]
        elif kind == "none":
            continue  # expired between SCAN and TYPE
        else:
            raise HarnessError(f"unexpected Redis type {kind} for {key!r}")
    return blobs


#: One line per failed send, as flask_poststack.tasks logs it.
FAILURE_LINE = re.compile(
    r"PostStack send failed: status=(?P<status>\S+) code=(?P<code>\S+)"
    r" request_id=(?P<request_id>\S+) idempotency_key=(?P<key>\S+)"
    r" job=(?P<job>\S+) retry=(?P<retry>yes|no)"
)


def failure_lines(logs: str) -> list[dict[str, str]]:
    """The fields of every ``PostStack send failed`` line in ``logs``."""
    return [m.groupdict() for m in FAILURE_LINE.finditer(logs)]


def add_faults(
    sandbox: t.Any,
    *,
    error: float,
    throttle: float,
    drop_after: float,
    seed: int,
) -> list[tuple[str, dict[str, t.Any], float]]:
    """Make ``POST /emails`` fail with these overall probabilities.

    5xx (500/502/503/504 alike), throttling 429s (``Retry-After`` 0 or 1,
    half each) and a connection reset after the email is stored. Rules are
    tried in order and the first that fires decides, so each rule's own
    probability is its share of what the earlier rules let through.
    """
    sandbox.faults.seed(seed)
    plan: list[tuple[str, dict[str, t.Any], float]] = [
        *[("error", {"status": s}, error / 4) for s in (500, 502, 503, 504)],
        ("throttle", {"retry_after": 0}, throttle / 2),
        ("throttle", {"retry_after": 1}, throttle / 2),
        ("drop_after", {}, drop_after),
    ]
    left = 1.0
    for kind, fields, overall in plan:
        own = min(1.0, overall / left) if left > 0 else 0.0
        left -= overall
        sandbox.faults.add(kind, method="POST", path="/emails", probability=own,
                           **fields)  # fmt: skip
    return plan


def _texts(blob: bytes) -> list[bytes]:
    """``blob`` and, if it is zlib data (rq compresses exc_info), its contents."""
    out = [blob]
    with contextlib.suppress(zlib.error):
        out.append(zlib.decompress(blob))
    return out


def secret_scan(
    *,
    secret: str,
    redis_blobs: list[bytes],
    jobs: list[t.Any],
    logs: str,
    other_text: str = "",
) -> dict[str, t.Any]:
    """Where ``secret`` appears: Redis, jobs (meta, exc_info, results), logs.

    ``secret`` should be the random part of the API key (without the
    ``sk_test_`` prefix), so that a partial leak is caught too.
    """
    needle = secret.encode()
    redis_hits = sum(
        1 for blob in redis_blobs for text in _texts(blob) if needle in text
    )
    job_hits = 0
    exception_texts = 0
    for job in jobs:
        texts = [json.dumps(job.meta, default=str)]
        if job.exc_info:
            texts.append(str(job.exc_info))
            exception_texts += 1
        for result in job.results():
            if result.exc_string:
                texts.append(str(result.exc_string))
                exception_texts += 1
        job_hits += sum(secret in text for text in texts)
    log_lines = logs.splitlines()
    log_hits = sum(secret in line for line in log_lines)
    other_hits = other_text.count(secret)
    return {
        "redis_blobs_scanned": len(redis_blobs),
        "redis_hits": redis_hits,
        "jobs_scanned": len(jobs),
        "exception_texts_scanned": exception_texts,
        "job_hits": job_hits,
        "log_lines_scanned": len(log_lines),
        "traceback_lines_scanned": sum("Traceback" in line for line in log_lines),
        "log_hits": log_hits,
        "other_hits": other_hits,
        "clean": redis_hits == job_hits == log_hits == other_hits == 0,
    }


def machine() -> dict[str, t.Any]:
    """Where and with what the figures were taken, and when."""
    return {"date": datetime.date.today().isoformat(), **_common.machine()}


write_json = _common.write_json
