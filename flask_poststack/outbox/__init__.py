"""The transactional outbox (``POSTSTACK_OUTBOX = "sqlalchemy"``).

Each queued email is first a row of the outbox table, written in the app's
own transaction; once it commits, the row is pushed to RQ as a job whose id
is the row's id. :func:`outbox_table` declares the table on your metadata so
that Alembic sees it; :mod:`flask_poststack.outbox.store` reads and writes it
and :mod:`flask_poststack.outbox.relay` pushes what the fast path left.
"""

from __future__ import annotations

import typing as t

if t.TYPE_CHECKING:
    from sqlalchemy import MetaData
    from sqlalchemy import Table

__all__ = ["TABLE_NAME", "outbox_table"]

#: The table's name; ``POSTSTACK_OUTBOX_TABLE`` changes it.
TABLE_NAME = "poststack_outbox"


def outbox_table(metadata: MetaData, name: str = TABLE_NAME) -> Table:
    """Declare the outbox table on ``metadata`` (e.g. ``db.metadata``), once.

    Returns the existing table when ``metadata`` already has it, so a module
    may call this at import time.
    """
    from sqlalchemy import Column
    from sqlalchemy import DateTime
    from sqlalchemy import Index
    from sqlalchemy import Integer
    from sqlalchemy import String
    from sqlalchemy import Table
    from sqlalchemy import Text

    if name in metadata.tables:
        return metadata.tables[name]
    return Table(
        name,
        metadata,
        # The RQ job id (up to 128 characters, RQ's rule): pushing the row
        # twice queues one job.
        Column("id", String(128), primary_key=True),
        Column("idempotency_key", String(256), nullable=False),
        Column("queue", String(128), nullable=False),
        # The job as JSON: task, payload(s) and queue options.
        Column("job", Text, nullable=False),
        Column("created_at", DateTime(timezone=True), nullable=False),
        Column("claimed_until", DateTime(timezone=True), nullable=True),
        Column("claimed_by", String(64), nullable=True),
        Column("attempts", Integer, nullable=False, default=0),
        Column("pushed_at", DateTime(timezone=True), nullable=True),
        Index(f"ix_{name}_pushed_at", "pushed_at", "created_at"),
    )
