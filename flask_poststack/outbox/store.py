"""Reading and writing outbox rows (SQLAlchemy Core, any database).

Rows are claimed with one ``UPDATE ... WHERE`` that re-checks the claim, so
two relays never push the same row at once, on SQLite as on PostgreSQL (where
the re-check runs on the row's latest version, and the candidates are
selected ``FOR UPDATE SKIP LOCKED``: a relay takes the rows that another is
not claiming at that moment instead of waiting for them). A row pushed twice all the
same (a relay killed after the push) still makes one job: its id is the job
id, and RQ refuses a second job with an id already in Redis.
"""

from __future__ import annotations

import contextlib
import json
import threading
import typing as t
import uuid
from datetime import datetime
from datetime import timedelta
from datetime import timezone

from ..errors import ConfigurationError
from . import outbox_table

if t.TYPE_CHECKING:
    from sqlalchemy import Engine
    from sqlalchemy import Table
    from sqlalchemy.orm import Session

__all__ = [
    "PARKED",
    "claim",
    "counts",
    "existing",
    "held_back",
    "mark_pushed",
    "park",
    "prune",
    "release",
    "require_table",
    "table",
    "table_errors",
    "write",
]

#: ``claimed_by`` of a row the relay cannot push (its job does not decode):
#: kept for a person to look at, never claimed again.
PARKED = "parked"

_tables: dict[str, Table] = {}
_lock = threading.Lock()


def table(name: str) -> Table:
    """The outbox table ``name``, on a metadata of Flask-PostStack's own."""
    found = _tables.get(name)
    if found is None:
        from sqlalchemy import MetaData

        with _lock:
            found = _tables.get(name) or outbox_table(MetaData(), name)
            _tables[name] = found
    return found


_FOREVER = datetime(9999, 1, 1, tzinfo=timezone.utc)


def _now() -> datetime:
    return datetime.now(timezone.utc)


def require_table(engine: Engine, outbox: Table) -> None:
    """Raise :exc:`~flask_poststack.ConfigurationError` naming
    ``POSTSTACK_OUTBOX_TABLE`` when the outbox table does not exist."""
    from sqlalchemy import inspect

    if not inspect(engine).has_table(outbox.name):
        raise ConfigurationError(
            "POSTSTACK_OUTBOX_TABLE",
            f"the outbox table {outbox.name!r} does not exist: declare it with"
            " outbox_table(db.metadata) and create it (db.create_all(), your"
            " migrations, or the CREATE TABLE in the transactions docs).",
        )


@contextlib.contextmanager
def table_errors(engine: Engine, outbox: Table) -> t.Iterator[None]:
    """Turn a database error that comes from a missing outbox table into
    :func:`require_table`'s error."""
    from sqlalchemy.exc import DBAPIError

    try:
        yield
    except DBAPIError:
        # The database not answering at all: the first error it is.
        with contextlib.suppress(DBAPIError):
            require_table(engine, outbox)
        raise


def existing(
    session: Session, outbox: Table, ids: list[str]
) -> dict[str, dict[str, t.Any]]:
    """The job specs of the rows among ``ids`` already in the table (as
    ``session`` sees it), by id."""
    from sqlalchemy import select

    if not ids:
        return {}
    with session.no_autoflush:
        found = session.execute(
            select(outbox.c.id, outbox.c.job).where(outbox.c.id.in_(ids))
        ).all()
    return {row.id: json.loads(row.job) for row in found}


def write(session: Session, outbox: Table, specs: list[dict[str, t.Any]]) -> None:
    """Insert one row per job spec, in ``session``'s transaction.

    The session is not flushed first: an error in the app's own pending rows
    surfaces at the app's commit, not here."""
    from sqlalchemy import insert

    now = _now()
    rows = [
        {
            "id": spec["id"],
            "idempotency_key": spec["key"],
            "queue": spec["queue"],
            "job": json.dumps(spec, separators=(",", ":")),
            "created_at": now,
            "attempts": 0,
        }
        for spec in specs
    ]
    with session.no_autoflush:
        session.execute(insert(outbox), rows)


def mark_pushed(engine: Engine, outbox: Table, ids: list[str]) -> None:
    """Mark rows as in Redis, in a transaction of their own."""
    from sqlalchemy import update

    if not ids:
        return
    statement = (
        update(outbox)
        .where(outbox.c.id.in_(ids), outbox.c.pushed_at.is_(None))
        .values(pushed_at=_now(), claimed_until=None)
    )
    with engine.begin() as conn:
        conn.execute(statement)


def claim(
    engine: Engine, outbox: Table, *, limit: int, lease: float, grace: float
) -> list[tuple[str, str | None]]:
    """Claim up to ``limit`` unpushed rows older than ``grace`` seconds for
    ``lease`` seconds; returns their ``(id, job JSON)``, oldest first.

    The job is ``None`` when it is not text (bytes that are not UTF-8 in a
    SQLite file): one such row must not stop the others."""
    from sqlalchemy import and_
    from sqlalchemy import cast
    from sqlalchemy import LargeBinary
    from sqlalchemy import or_
    from sqlalchemy import select
    from sqlalchemy import update

    now = _now()
    token = uuid.uuid4().hex
    free = and_(
        outbox.c.pushed_at.is_(None),
        or_(outbox.c.claimed_until.is_(None), outbox.c.claimed_until < now),
    )
    candidates = (
        select(outbox.c.id)
        .where(free, outbox.c.created_at <= now - timedelta(seconds=grace))
        .order_by(outbox.c.created_at)
        .limit(limit)
    )
    if engine.dialect.name == "postgresql":
        # Rows another relay is claiming now are skipped, not waited for.
        candidates = candidates.with_for_update(skip_locked=True)
    with engine.begin() as conn:
        conn.execute(
            update(outbox)
            .where(outbox.c.id.in_(candidates.scalar_subquery()), free)
            .values(
                claimed_by=token,
                claimed_until=now + timedelta(seconds=lease),
                attempts=outbox.c.attempts + 1,
            )
            .execution_options(synchronize_session=False)
        )
        # SQLite hands back whatever bytes a row holds; decoded here, a row
        # that is not UTF-8 is one unreadable job, not a failed claim.
        sqlite = engine.dialect.name == "sqlite"
        job = cast(outbox.c.job, LargeBinary) if sqlite else outbox.c.job
        rows = conn.execute(
            select(outbox.c.id, job.label("job"))
            .where(outbox.c.claimed_by == token, outbox.c.pushed_at.is_(None))
            .order_by(outbox.c.created_at)
        ).all()
    return [(row.id, _text(row.job)) for row in rows]


def _text(job: str | bytes) -> str | None:
    if isinstance(job, str):
        return job
    try:
        return bytes(job).decode()
    except UnicodeDecodeError:
        return None


def release(engine: Engine, outbox: Table, ids: list[str]) -> None:
    """End the claim on unpushed rows (their push failed), so that the next
    claim takes them at once instead of after the lease."""
    from sqlalchemy import update

    if not ids:
        return
    with engine.begin() as conn:
        conn.execute(
            update(outbox)
            .where(
                outbox.c.id.in_(ids),
                outbox.c.pushed_at.is_(None),
                outbox.c.claimed_by != PARKED,
            )
            .values(claimed_by=None, claimed_until=None)
        )


def park(engine: Engine, outbox: Table, ids: list[str]) -> None:
    """Keep rows that cannot be pushed out of every later claim (not pushed,
    so never pruned): ``claimed_by`` is :data:`PARKED`."""
    from sqlalchemy import update

    with engine.begin() as conn:
        conn.execute(
            update(outbox)
            .where(outbox.c.id.in_(ids))
            .values(claimed_by=PARKED, claimed_until=_FOREVER)
        )


def prune(engine: Engine, outbox: Table, keep: float) -> int:
    """Delete rows pushed more than ``keep`` seconds ago; returns how many."""
    from sqlalchemy import delete

    with engine.begin() as conn:
        result = conn.execute(
            delete(outbox).where(outbox.c.pushed_at < _now() - timedelta(seconds=keep))
        )
    return int(result.rowcount or 0)


def counts(engine: Engine, outbox: Table) -> tuple[int, int]:
    """``(waiting, pushed)`` row counts."""
    from sqlalchemy import func
    from sqlalchemy import select

    with engine.connect() as conn:
        waiting = conn.scalar(select(func.count()).where(outbox.c.pushed_at.is_(None)))
        total = conn.scalar(select(func.count()).select_from(outbox))
    return int(waiting or 0), int(total or 0) - int(waiting or 0)


def held_back(engine: Engine, outbox: Table, grace: float) -> dict[str, int]:
    """Why unpushed rows are waiting: ``"parked"``, ``"claimed"`` (under a
    relay's lease) and ``"grace"`` (younger than ``grace`` seconds)."""
    from sqlalchemy import func
    from sqlalchemy import select

    now = _now()
    c = outbox.c
    unparked = c.claimed_by.is_(None) | (c.claimed_by != PARKED)
    claimed = c.claimed_until > now
    unclaimed = c.claimed_until.is_(None) | (c.claimed_until <= now)
    young = c.created_at > now - timedelta(seconds=grace)
    waiting = c.pushed_at.is_(None)
    counts = {
        "parked": waiting & (c.claimed_by == PARKED),
        "claimed": waiting & unparked & claimed,
        "grace": waiting & unparked & unclaimed & young,
    }
    with engine.connect() as conn:
        return {
            name: int(conn.scalar(select(func.count()).where(where)) or 0)
            for name, where in counts.items()
        }
