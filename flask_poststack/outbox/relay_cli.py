"""``flask poststack relay``: the outbox relay as a command."""

from __future__ import annotations

import logging

import click
from flask import current_app
from flask import Flask
from flask.cli import with_appcontext

from .._state import get_state
from ..errors import ConfigurationError
from ..errors import QueueUnavailableError
from ..errors import redact_url
from . import store
from .relay import check_outbox
from .relay import database_error
from .relay import engine_of
from .relay import GRACE
from .relay import relay_once
from .relay import run_relay

__all__ = ["relay_command"]

logger = logging.getLogger("flask_poststack")


@click.command("relay")
@click.option("--once", is_flag=True, help="Push what waits now, then quit.")
@click.option(
    "--interval",
    default=1.0,
    show_default=True,
    type=click.FloatRange(min=0, min_open=True),
    help="Idle seconds.",
)
@click.option(
    "--batch",
    default=500,
    show_default=True,
    type=click.IntRange(min=1),
    help="Rows per claim.",
)
@click.option(
    "--grace",
    default=GRACE,
    show_default=True,
    type=click.FloatRange(min=0),
    help="Leave rows younger than this many seconds to the after-commit push.",
)
@click.option(
    "--lease",
    default=60.0,
    show_default=True,
    type=click.FloatRange(min=0, min_open=True),
    help="Seconds a claim holds; a dead relay's rows are pushed after it.",
)
@with_appcontext
def relay_command(
    once: bool, interval: float, batch: int, grace: float, lease: float
) -> None:
    """Push outbox rows that were committed but not queued (POSTSTACK_OUTBOX)."""
    app: Flask = current_app._get_current_object()  # type: ignore[attr-defined]
    state = get_state(app)
    from sqlalchemy.exc import SQLAlchemyError

    try:
        _check_database(app, once)
        _ping(app)
        if not once:
            click.echo("Relaying the outbox; Ctrl-C to stop.")
            run_relay(app, interval=interval, batch=batch, grace=grace, lease=lease)
            return
        total = 0
        while pushed := relay_once(app, limit=batch, lease=lease, grace=grace):
            total += pushed
        outbox = store.table(state.settings.outbox_table)
        store.prune(engine_of(app), outbox, state.settings.outbox_keep)
        left = store.held_back(engine_of(app), outbox, grace)
    except (ConfigurationError, QueueUnavailableError) as exc:
        raise click.ClickException(str(exc)) from None
    except SQLAlchemyError as exc:
        message = database_error(engine_of(app), exc)
        raise click.ClickException(f"database error: {message}") from None
    click.echo(f"Pushed {total} email job(s) from the outbox.")
    for reason, text in _LEFT.items():
        if left.get(reason):
            click.echo(
                f"{left[reason]} row(s) {text}.".replace("{grace}", f"{grace:g}")
            )
    if left.get("parked"):
        raise SystemExit(1)  # a person must look: let cron notice


_LEFT = {
    "grace": "waiting inside the grace period ({grace} s, for the after-commit"
    " push); run again later or pass --grace 0",
    "claimed": "claimed by another relay (or one that died): pushed by it, or"
    " here once its --lease runs out",
    "parked": f"parked (claimed_by = {store.PARKED!r}): their job could not be"
    " read or pushed; see the relay's log",
}


def _check_database(app: Flask, once: bool) -> None:
    """:func:`check_outbox`; a long-running relay started before its
    database answers logs that and retries it, as it does once running."""
    from sqlalchemy.exc import SQLAlchemyError

    try:
        check_outbox(app)
    except SQLAlchemyError as exc:
        if once:
            raise
        reason = database_error(engine_of(app), exc)
        logger.warning("Outbox relay: %s; retrying.", reason)


def _ping(app: Flask) -> None:
    import redis

    state = get_state(app)
    try:
        state.redis.ping()
    except redis.RedisError as exc:
        url = redact_url(state.settings.redis_url)
        raise click.ClickException(
            f"Redis at {url} does not answer ({exc or type(exc).__name__}):"
            " start it, or set POSTSTACK_REDIS_URL."
        ) from None
