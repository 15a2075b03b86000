"""The ``flask poststack`` command group."""

from __future__ import annotations

import os
import shlex
import shutil
import sys
import typing as t

import click
from flask import current_app
from flask.cli import AppGroup

from .config import Settings
from .extension import get_state

__all__ = ["poststack_cli", "worker_command", "worker_environ"]

poststack_cli = AppGroup("poststack", help="Flask-PostStack commands.")


def worker_command(
    settings: Settings,
    *,
    queues: t.Sequence[str] = (),
    burst: bool = False,
    maintenance_interval: int = 30,
) -> list[str]:
    """The documented ``rq worker`` command line for ``settings``.

    The API key is not in it: the worker reads ``POSTSTACK_*`` from its
    environment (see :func:`worker_environ`).
    """
    here = os.path.dirname(sys.executable)
    rq = shutil.which("rq", path=here) or shutil.which("rq") or "rq"
    argv = [
        rq, "worker",
        "--url", settings.redis_url,
        "--serializer", "rq.serializers.JSONSerializer",
        "--worker-class", "flask_poststack.worker.PostStackWorker",
        "--with-scheduler",
        "--maintenance-interval", str(maintenance_interval),
    ]  # fmt: skip
    if burst:
        argv.append("--burst")
    argv.extend(queues or [settings.queue])
    return argv


def worker_environ(config: t.Mapping[str, t.Any]) -> dict[str, str]:
    """``os.environ`` plus every ``POSTSTACK_*`` key set in ``config``."""
    env = dict(os.environ)
    for key, value in config.items():
        if not key.startswith("POSTSTACK_") or value is None:
            continue
        if isinstance(value, (list, tuple)):
            value = ",".join(str(item) for item in value)
        env[key] = str(value)
    return env


@poststack_cli.command("worker")
@click.option("--queue", "-q", "queues", multiple=True, help="Queue(s) to listen on.")
@click.option("--burst", is_flag=True, help="Quit once the queues are empty.")
@click.option(
    "--maintenance-interval",
    default=30,
    show_default=True,
    help="Seconds between checks for jobs abandoned by a dead worker.",
)
@click.option("--print", "print_only", is_flag=True, help="Print the command only.")
def worker(
    queues: tuple[str, ...], burst: bool, maintenance_interval: int, print_only: bool
) -> None:
    """Run an RQ worker for Flask-PostStack jobs, from the app's config.

    Runs the same `rq worker` command the docs give, with the app's
    POSTSTACK_* settings passed in its environment.
    """
    argv = worker_command(
        get_state().settings,
        queues=queues,
        burst=burst,
        maintenance_interval=maintenance_interval,
    )
    click.echo(shlex.join(argv))
    if print_only:
        return
    sys.stdout.flush()
    os.execvpe(argv[0], argv, worker_environ(current_app.config))
