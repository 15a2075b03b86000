"""Helpers that drive real ``rq worker`` processes, Redis and the sandbox.

Used by the end-to-end tests (``tests/e2e/test_delivery.py``) and, through
``benchmarks/_harness.py``, by the reliability benchmarks (the soak). Nothing
here imports pytest: a failed
wait raises :class:`HarnessError` (an ``AssertionError``), which fails a test.

Every worker is started with exactly the command the docs give
(:func:`flask_poststack.cli.worker_command`) and an environment that holds
only ``PATH``/``HOME``/locale and ``POSTSTACK_*`` variables: no Flask app, no
``FLASK_APP``. Each runs in its own session (process group), so that it can
be killed with the scheduler process it forks.
"""

from __future__ import annotations

import collections
import contextlib
import os
import re
import secrets
import signal
import subprocess
import time
import typing as t
from pathlib import Path

import redis
from flask import Flask
from rq import Queue
from rq import Worker
from rq.job import Job
from rq.job import JobStatus
from rq.registry import FailedJobRegistry
from rq.registry import FinishedJobRegistry
from rq.registry import ScheduledJobRegistry
from rq.registry import StartedJobRegistry
from rq.serializers import JSONSerializer

from flask_poststack import enqueue_email
from flask_poststack import get_state
from flask_poststack import PostStack
from flask_poststack.cli import worker_command
from flask_poststack.config import Settings
from flask_poststack.sandbox import Sandbox
from flask_poststack.sandbox import StoredEmail

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


def enqueue(app: Flask, count: int, label: str = "Hello") -> list[Job]:
    with app.app_context():
        return [
            enqueue_email(
                to=f"user{i}@example.com",
                subject=f"{label} {i}",
                text=f"Message number {i}.",
            )
            for i in range(count)
        ]


def wait_until(
    predicate: t.Callable[[], bool],
    timeout: float,
    what: str,
    diagnose: t.Callable[[], object] | None = None,
) -> float:
    """Poll until ``predicate()``; return the seconds it took, or raise."""
    started = time.monotonic()
    deadline = started + timeout
    while not predicate():
        if time.monotonic() > deadline:
            extra = f"\n{diagnose()}" if diagnose else ""
            raise HarnessError(f"timed out after {timeout}s waiting for {what}{extra}")
        time.sleep(0.05)
    return time.monotonic() - started


def rq_queue(app: Flask) -> Queue:
    state = get_state(app)
    return Queue(
        state.settings.queue, connection=state.redis, serializer=JSONSerializer
    )


def fetch_jobs(app: Flask, jobs: list[Job]) -> list[Job]:
    found = Job.fetch_many(
        [job.id for job in jobs],
        connection=get_state(app).redis,
        serializer=JSONSerializer,
    )
    assert all(job is not None for job in found), "a job vanished from Redis"
    return [job for job in found if job is not None]


def registry_counts(app: Flask) -> dict[str, int]:
    q = rq_queue(app)
    return {
        "queued": q.count,
        "started": StartedJobRegistry(queue=q).count,
        "scheduled": ScheduledJobRegistry(queue=q).count,
        "finished": FinishedJobRegistry(queue=q).count,
        "failed": FailedJobRegistry(queue=q).count,
    }


def keys_stored(sandbox: Sandbox) -> collections.Counter[str | None]:
    """How many stored emails each body idempotency key produced."""
    return collections.Counter(e.input.idempotency_key for e in sandbox.emails)


def assert_delivered_once(app: Flask, sandbox: Sandbox, jobs: list[Job]) -> None:
    """Every job finished, and its email is stored exactly once."""
    emails: dict[str, StoredEmail] = {e.id: e for e in sandbox.emails}
    per_key = keys_stored(sandbox)
    twice = {key: n for key, n in per_key.items() if n > 1}
    assert not twice, f"emails sent more than once: {twice}"
    assert len(emails) == len(jobs), (len(emails), len(jobs))
    for job in fetch_jobs(app, jobs):
        key = job.meta["idempotency_key"]
        assert job.get_status() == JobStatus.FINISHED, (job.id, job.get_status())
        assert per_key[key] == 1, (key, per_key[key])
        email_id = job.meta.get("poststack_id")
        assert email_id == job.return_value(), (job.id, email_id)
        assert email_id in emails, (job.id, email_id)
        assert emails[email_id].input.idempotency_key == key
        assert "poststack_error" not in job.meta, job.meta


def diagnose_unfinished(app: Flask, jobs: list[Job]) -> str:
    """Where the jobs that did not finish are, for a failure message."""
    q = rq_queue(app)
    lock = f"rq:scheduler-lock:{q.name}"
    lines = [
        f"intermediate queue: {q.intermediate_queue.get_job_ids()}",
        f"maintenance lock ttl: {q.connection.ttl(q.registry_cleaning_key)}",
        f"scheduler lock: {q.connection.get(lock)!r} ttl {q.connection.ttl(lock)}",
        f"workers: {[(w.name, w.pid, w.state) for w in Worker.all(queue=q)]}",
    ]
    for job in fetch_jobs(app, jobs):
        if job.get_status() != JobStatus.FINISHED:
            lines.append(
                f"{job.id}: {job.get_status()} retries_left={job.retries_left}"
                f" worker={job.worker_name} meta={job.meta}"
            )
    return "\n".join(lines)


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
