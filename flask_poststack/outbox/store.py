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

import json
import threading
import typing as t
import uuid
from datetime import datetime
from datetime import timedelta
from datetime import timezone

from . import outbox_table

if t.TYPE_CHECKING:
    from sqlalchemy import Engine
    from sqlalchemy import Table
    from sqlalchemy.orm import Session

__all__ = ["claim", "counts", "mark_pushed", "prune", "table", "write"]

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


def _now() -> datetime:
    return datetime.now(timezone.utc)


def write(session: Session, outbox: Table, specs: list[dict[str, t.Any]]) -> None:
    """Insert one row per job spec, in ``session``'s transaction."""
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
) -> list[dict[str, t.Any]]:
    """Claim up to ``limit`` unpushed rows older than ``grace`` seconds for
    ``lease`` seconds; returns their job specs, oldest first."""
    from sqlalchemy import and_
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
        rows = conn.execute(
            select(outbox.c.job)
            .where(outbox.c.claimed_by == token, outbox.c.pushed_at.is_(None))
            .order_by(outbox.c.created_at)
        ).all()
    return [json.loads(row.job) for row in rows]


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
