"""The outbox relay: pushes the rows that the after-commit push left behind.

A row is left behind when the app process died between its commit and the
push, or Redis was down at that moment. The relay claims rows older than a
grace period (so that it seldom races the fast path), pushes them under their
own ids and marks them; rows pushed long enough ago are pruned. Any number
of relays may run: a row is claimed by one at a time, and a row pushed twice
anyway (a relay killed after its push) is still one job.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import typing as t

from flask import Flask

from .._push import push_specs
from .._state import get_state
from ..after_commit import current_session
from ..errors import ConfigurationError
from ..errors import QueueUnavailableError
from . import store

if t.TYPE_CHECKING:
    import redis
    from sqlalchemy import Engine

__all__ = [
    "GRACE",
    "check_outbox",
    "database_error",
    "engine_of",
    "relay_in_thread",
    "relay_once",
    "run_relay",
]

logger = logging.getLogger("flask_poststack")

#: Seconds a new row is left to the after-commit push (``--grace``).
GRACE = 5.0
#: Seconds between prunes of pushed rows.
PRUNE_EVERY = 60.0
#: Longest wait, in seconds, between tries after a database error.
MAX_BACKOFF = 30.0
#: What a row's job must hold to be pushed.
_SPEC_KEYS = frozenset({"id", "task", "queue", "key", "args", "meta", "run_at"})


def engine_of(app: Flask) -> Engine:
    """The engine of the app's session, for the outbox (``POSTSTACK_OUTBOX``)."""
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


def database_error(engine: Engine, exc: Exception) -> str:
    """One line on a database error, for a log or a message: the driver's
    first line only (SQLAlchemy's text adds the SQL and its parameters, a
    driver's DETAIL may quote a row), without the URL's password."""
    text = str(getattr(exc, "orig", None) or exc).strip()
    line = text.splitlines()[0] if text else type(exc).__name__
    password = engine.url.password
    return line.replace(str(password), "***") if password else line


def check_outbox(app: Flask) -> None:
    """Check, in an app context, that the relay has a session and a table.

    :raises ConfigurationError: naming the setting to fix.
    """
    outbox = store.table(get_state(app).settings.outbox_table)
    store.require_table(engine_of(app), outbox)


def relay_once(
    app: Flask, *, limit: int = 500, lease: float = 60.0, grace: float = GRACE
) -> int:
    """Push up to ``limit`` waiting rows once; returns how many were pushed.

    Run inside an app context. A row whose job cannot be read or pushed is
    logged at ERROR and parked (kept, never claimed again: see
    :data:`~flask_poststack.outbox.store.PARKED`).

    :raises QueueUnavailableError: when Redis cannot be reached; the rows
        not pushed are released, for the next call to push. ``lease``
        (seconds) is how long a relay that dies keeps its rows.
    :raises ConfigurationError: naming ``POSTSTACK_OUTBOX_TABLE`` when the
        table does not exist.
    """
    state = get_state(app)
    outbox = store.table(state.settings.outbox_table)
    engine = engine_of(app)
    with store.table_errors(engine, outbox):
        claimed = store.claim(engine, outbox, limit=limit, lease=lease, grace=grace)
    pushed: list[str] = []
    bad: list[str] = []
    try:
        for row_id, job in claimed:
            try:
                spec = json.loads(job) if job is not None else None
                if not isinstance(spec, dict) or not spec.keys() >= _SPEC_KEYS:
                    raise ValueError("not a job spec")
                push_specs(state, [spec])
            except QueueUnavailableError:
                raise
            except Exception as exc:
                # The row id only: the error's text may quote the row.
                logger.error(
                    "Outbox relay: cannot push row %r (%s); parked (claimed_by=%r)"
                    " for you to look at. Set claimed_by and claimed_until to"
                    " NULL to try again.",
                    row_id,
                    type(exc).__name__,
                    store.PARKED,
                )
                bad.append(row_id)
            else:
                pushed.append(row_id)
    finally:
        if pushed:
            logger.info("Outbox relay: pushed %d job(s).", len(pushed))
        store.mark_pushed(engine, outbox, pushed)
        if bad:
            store.park(engine, outbox, bad)
        # Rows left by a Redis error are claimed again at once, not after
        # the lease: Redis may be back by the next round.
        done = {*pushed, *bad}
        store.release(engine, outbox, [i for i, _ in claimed if i not in done])
    return len(pushed)


def run_relay(
    app: Flask,
    *,
    interval: float = 1.0,
    batch: int = 500,
    grace: float = GRACE,
    lease: float = 60.0,
    stop: threading.Event | None = None,
) -> None:
    """Relay until ``stop`` is set: push waiting rows, prune old ones, and
    wait ``interval`` seconds when there was nothing to do.

    Rows claimed by a relay that died are pushed again once their ``lease``
    (seconds) runs out. Redis and database errors (a locked SQLite file, a
    missing table, a lost connection) are logged at WARNING and retried, the
    database ones after 1, 2, 4... up to :data:`MAX_BACKOFF` seconds."""
    from sqlalchemy.exc import SQLAlchemyError

    stop = stop or threading.Event()
    state = get_state(app)
    outbox = store.table(state.settings.outbox_table)
    pruned = 0.0
    backoff = 0.0
    with app.app_context():
        engine = engine_of(app)
        while not stop.is_set():
            try:
                try:
                    pushed = relay_once(app, limit=batch, lease=lease, grace=grace)
                except QueueUnavailableError as exc:
                    logger.warning("Outbox relay: %s; retrying.", exc)
                    pushed = 0
                if time.monotonic() - pruned > PRUNE_EVERY:
                    store.prune(engine, outbox, state.settings.outbox_keep)
                    pruned = time.monotonic()
            except (SQLAlchemyError, ConfigurationError) as exc:
                backoff = min(MAX_BACKOFF, max(1.0, backoff * 2))
                reason = database_error(engine, exc)
                logger.warning("Outbox relay: %s; retrying in %.0f s.", reason, backoff)
                stop.wait(backoff)
                continue
            backoff = 0.0
            if not pushed:
                stop.wait(interval)


def relay_in_thread(app: Flask, conn: redis.Redis, stop: threading.Event) -> None:
    """:func:`run_relay` on ``conn`` as a thread's target, logging what ends it."""
    with get_state(app).use_redis(conn):
        try:
            run_relay(app, stop=stop)
        except Exception:  # a thread's error would go to no log otherwise
            logger.exception("The relay stopped.")
