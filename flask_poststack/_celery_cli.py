"""``flask poststack worker`` and ``check`` with ``POSTSTACK_QUEUE_BACKEND =
"celery"``: the documented ``celery worker`` command, and the broker's checks.
"""

from __future__ import annotations

import os
import shlex
import shutil
import sys
import typing as t

import click

from ._cli_checks import redis_unreachable
from ._state import AppState
from ._workercmd import printed_command
from .config import Settings
from .errors import ConfigurationError
from .errors import redact_url

__all__ = ["CELERY_APP", "celery_check", "celery_worker_command", "run_celery_worker"]

#: How to start a local broker (``flask poststack dev`` is RQ's).
LOCAL = "run `python -m flask_poststack.redis_server`"
#: The ``-A`` of the documented command: the tasks' own app, which registers
#: them (``-A`` names an app; ``-Q`` alone does not import the tasks).
CELERY_APP = "flask_poststack.celery_tasks"

#: Why ``flask poststack dev`` does not run under Celery, and what to run.
NO_DEV = (
    "flask poststack dev runs an RQ worker, and this app queues on Celery"
    " (POSTSTACK_QUEUE_BACKEND = 'celery'). Run the parts yourself:"
    f" `flask poststack sandbox`, a local Redis ({LOCAL[4:]}), then"
    " `flask poststack worker`."
)


def celery_worker_command(
    settings: Settings, *, queues: t.Sequence[str] = (), concurrency: int = 16
) -> list[str]:
    """The documented ``celery worker`` command line for ``settings``.

    Neither the key nor the broker URL is in it: the worker reads
    ``POSTSTACK_*`` from its environment.
    """
    here = os.path.dirname(sys.executable)
    celery = shutil.which("celery", path=here) or shutil.which("celery") or "celery"
    queue = ",".join(queues or [settings.queue])
    return [celery, "-A", CELERY_APP, "worker", "--pool", "threads",
            "-c", str(concurrency), "-Q", queue]  # fmt: skip


def run_celery_worker(
    state: AppState,
    env: dict[str, str],
    *,
    queues: t.Sequence[str],
    burst: bool,
    concurrency: int | None,
    print_only: bool,
    loglevel: str | None = None,
) -> None:
    """Print, then run (unless ``print_only``), the Celery worker command
    with the app's ``POSTSTACK_*`` settings in ``env``."""
    if burst:
        raise click.ClickException("--burst is an RQ option; Celery has no burst mode.")
    from ._celery_queue import no_broker_error

    try:
        redis_url = state.redis_url()
    except ConfigurationError:
        raise click.ClickException(str(no_broker_error())) from None
    if not print_only and (unreachable := redis_unreachable(redis_url, LOCAL)):
        raise click.ClickException(unreachable)
    argv = celery_worker_command(
        state.settings, queues=queues, concurrency=concurrency or 16
    )
    if loglevel:
        argv += ["--loglevel", loglevel]
    click.echo(printed_command(env, argv, ("POSTSTACK_REDIS_URL", redis_url)))
    if print_only:
        return
    sys.stdout.flush()
    env["POSTSTACK_REDIS_URL"] = redis_url
    os.execvpe(argv[0], argv, env)


#: How long ``check`` waits for the workers' answers to a ping.
PING_TIMEOUT = 1.0


def celery_workers(app: t.Any) -> list[str]:
    """The names of the Celery workers that answer a ping within
    :data:`PING_TIMEOUT` (none if the broker fails mid-ping)."""
    try:
        replies = app.control.ping(timeout=PING_TIMEOUT) or []
    except Exception:  # the broker's own errors: the broker row says why
        return []
    return sorted(name for reply in replies for name in reply)


def celery_check(state: AppState) -> t.Iterator[tuple[str, str, str]]:
    """``flask poststack check``'s rows for Celery: installed, the broker,
    the ledger's tasks not yet done, the failed tasks kept for requeueing."""
    from . import _celery_ledger as ledger
    from ._celery_queue import celery_app

    try:
        import celery
    except ImportError:
        yield ("FAIL", "Celery", "not installed: pip install 'flask-poststack[celery]'")
        return
    yield "ok", "Celery", f"{celery.__version__} (POSTSTACK_QUEUE_BACKEND)"
    url = state.settings.redis_url
    if unreachable := redis_unreachable(url, LOCAL):
        yield "FAIL", f"broker at {redact_url(url)}", unreachable
        return
    yield "ok", f"broker at {redact_url(url)}", "reachable"
    app = celery_app(state)
    start = "celery " + shlex.join(celery_worker_command(state.settings)[1:])
    answering = celery_workers(app)
    if answering:
        yield "ok", "workers", f"{len(answering)} answering: {', '.join(answering)}"
    else:
        yield "warn", "workers", f"none answering; start one: {start}"
    found = ledger.for_app(app)
    if found is None:
        return
    pending = found.client.zcard(found.key(ledger.LEDGER))
    failed = found.client.hlen(found.key(ledger.FAILED))
    waiting = f"; they need a worker: {start}" if pending and not answering else ""
    yield "ok", "tasks not done", f"{pending}{waiting}"
    if failed:
        yield (
            "warn",
            "failed tasks",
            f"{failed}. Once fixed, send them again: flask poststack requeue-failed",
        )
    else:
        yield "ok", "failed tasks", "0"
