"""The outbox relay: pushes the rows that the after-commit push left behind.

A row is left behind when the app process died between its commit and the
push, or Redis was down at that moment. The relay claims rows older than a
grace period (so that it seldom races the fast path), pushes them under their
own ids and marks them; rows pushed long enough ago are pruned. Any number
of relays may run: a row is claimed by one at a time, and a row pushed twice
anyway (a relay killed after its push) is still one job.
"""

from __future__ import annotations

import logging
import threading
import time
import typing as t

import click
from flask import current_app
from flask import Flask
from flask.cli import with_appcontext

from .._push import push_specs
from .._state import get_state
from ..after_commit import current_session
from ..errors import ConfigurationError
from ..errors import QueueUnavailableError
from . import store

if t.TYPE_CHECKING:
    from sqlalchemy import Engine

__all__ = ["relay_command", "relay_once", "run_relay"]

logger = logging.getLogger("flask_poststack")

#: Seconds between prunes of pushed rows.
PRUNE_EVERY = 60.0


def _engine(app: Flask) -> Engine:
    state = get_state(app)
    if not state.settings.outbox:
        raise ConfigurationError(
            "POSTSTACK_OUTBOX", 'the relay needs POSTSTACK_OUTBOX = "sqlalchemy".'
        )
    session = current_session(
        app, state.settings.sqlalchemy_session, "POSTSTACK_OUTBOX"
    )
    engine: Engine = session.get_bind()  # type: ignore[assignment]
    return engine


def relay_once(
    app: Flask, *, limit: int = 500, lease: float = 60.0, grace: float = 5.0
) -> int:
    """Push up to ``limit`` waiting rows once; returns how many were pushed.

    Run inside an app context.

    :raises QueueUnavailableError: when Redis cannot be reached; the claimed
        rows are pushed again once their ``lease`` (seconds) runs out.
    """
    state = get_state(app)
    outbox = store.table(state.settings.outbox_table)
    engine = _engine(app)
    specs = store.claim(engine, outbox, limit=limit, lease=lease, grace=grace)
    if specs:
        push_specs(state, specs)
        store.mark_pushed(engine, outbox, [s["id"] for s in specs])
    return len(specs)


def run_relay(
    app: Flask,
    *,
    interval: float = 1.0,
    batch: int = 500,
    grace: float = 5.0,
    lease: float = 60.0,
    stop: threading.Event | None = None,
) -> None:
    """Relay until ``stop`` is set: push waiting rows, prune old ones, and
    wait ``interval`` seconds when there was nothing to do.

    Rows claimed by a relay that died are pushed again once their ``lease``
    (seconds) runs out."""
    stop = stop or threading.Event()
    state = get_state(app)
    outbox = store.table(state.settings.outbox_table)
    pruned = 0.0
    with app.app_context():
        engine = _engine(app)
        while not stop.is_set():
            try:
                pushed = relay_once(app, limit=batch, lease=lease, grace=grace)
            except QueueUnavailableError as exc:
                logger.warning("Outbox relay: %s; retrying.", exc)
                pushed = 0
            if time.monotonic() - pruned > PRUNE_EVERY:
                store.prune(engine, outbox, state.settings.outbox_keep)
                pruned = time.monotonic()
            if pushed:
                logger.info("Outbox relay pushed %d email job(s).", pushed)
            else:
                stop.wait(interval)


@click.command("relay")
@click.option("--once", is_flag=True, help="Push what waits now, then quit.")
@click.option("--interval", default=1.0, show_default=True, help="Idle seconds.")
@click.option("--batch", default=500, show_default=True, help="Rows per claim.")
@click.option(
    "--grace",
    default=5.0,
    show_default=True,
    help="Leave rows younger than this many seconds to the after-commit push.",
)
@click.option(
    "--lease",
    default=60.0,
    show_default=True,
    help="Seconds a claim holds; a dead relay's rows are pushed after it.",
)
@with_appcontext
def relay_command(
    once: bool, interval: float, batch: int, grace: float, lease: float
) -> None:
    """Push outbox rows that were committed but not queued (POSTSTACK_OUTBOX)."""
    app: Flask = current_app._get_current_object()  # type: ignore[attr-defined]
    try:
        if once:
            total = 0
            while pushed := relay_once(app, limit=batch, lease=lease, grace=grace):
                total += pushed
            state = get_state(app)
            outbox = store.table(state.settings.outbox_table)
            store.prune(_engine(app), outbox, state.settings.outbox_keep)
            click.echo(f"Pushed {total} email job(s) from the outbox.")
            return
        click.echo("Relaying the outbox; Ctrl-C to stop.")
        run_relay(app, interval=interval, batch=batch, grace=grace, lease=lease)
    except (ConfigurationError, QueueUnavailableError) as exc:
        raise click.ClickException(str(exc)) from None
