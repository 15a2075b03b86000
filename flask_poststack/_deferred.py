"""Where a queued email goes first: Redis now, the commit, or the outbox.

:mod:`flask_poststack.queueing` describes each job as a JSON *spec* (its id,
task, payload and options) and hands it here: :func:`hold` queues it at
once, holds it for the commit (``POSTSTACK_AFTER_COMMIT``), or writes it as an
outbox row (``POSTSTACK_OUTBOX``) pushed after the commit.
"""

from __future__ import annotations

import logging
import typing as t
import uuid
from datetime import datetime

from . import after_commit
from .errors import ConfigurationError
from .errors import InvalidEmailError
from .errors import QueueUnavailableError
from .outbox import store

if t.TYPE_CHECKING:
    from rq.job import Job
    from sqlalchemy.orm import Session

    from ._state import AppState

__all__ = ["hold", "spec"]

logger = logging.getLogger("flask_poststack")

Spec = dict[str, t.Any]
Push = t.Callable[[list[Spec]], list["Job"]]


def spec(
    task: str,
    queue: str,
    options: dict[str, t.Any],
    when: datetime | None,
    *,
    unique: bool = False,
) -> Spec:
    """The JSON description of one job, from its rq options.

    :param unique: the caller chose the job id, so a second push of the id
        must find the first job instead of replacing it.
    """
    meta = options["meta"]
    return {
        "id": options["job_id"] or uuid.uuid4().hex,
        "task": task,
        "queue": queue,
        "key": meta.get("idempotency_key"),
        "args": list(options["args"]),
        "job_timeout": options["job_timeout"],
        "result_ttl": options["result_ttl"],
        "failure_ttl": options["failure_ttl"],
        "description": options["description"],
        "meta": meta,
        "run_at": when.isoformat() if when is not None else None,
        # A caller's job id, or an outbox row that may be pushed twice.
        "unique": unique,
    }


def payloads_of(job_spec: Spec) -> list[dict[str, t.Any]]:
    """The email payloads one spec's job sends."""
    argument = job_spec["args"][0]
    return list(argument) if isinstance(argument, list) else [argument]


def deferring(state: AppState, after: bool | None) -> bool:
    """Whether an enqueue with ``after_commit=after`` waits for the commit
    (or goes through the outbox)."""
    settings = state.settings
    return after is not False and bool(
        after or settings.after_commit or settings.outbox
    )


def hold(
    state: AppState,
    after: bool | None,
    specs: list[Spec],
    push: Push,
) -> list[Job] | None:
    """Hold ``specs`` for the commit or write them to the outbox, and return
    their jobs (not yet in Redis); ``None`` when they should be queued now.

    :raises ConfigurationError: when the mode needs a session and there is
        no usable one.
    """
    settings = state.settings
    if not deferring(state, after):
        return None
    setting = "POSTSTACK_OUTBOX" if settings.outbox else "POSTSTACK_AFTER_COMMIT"
    if after and not settings.outbox:
        setting += " (or after_commit=True in the call)"
    session = after_commit.current_session(
        state.app, settings.sqlalchemy_session, setting
    )
    if settings.outbox:
        specs = _write_outbox(state, session, specs, push)
    else:
        payloads = [p for s in specs for p in payloads_of(s)]
        ids = [s["id"] for s in specs]
        step = after_commit.Deferred(payloads, lambda: push(specs), ids)
        if not after_commit.defer(session, step):
            return push(specs)
    return [_job(state, s) for s in specs]


def _write_outbox(
    state: AppState, session: Session, specs: list[Spec], push: Push
) -> list[Spec]:
    """Write the rows of ``specs`` and push them after the commit; returns
    the specs as stored (a caller's job id already in the outbox is its
    first job, which is not written again)."""
    from sqlalchemy.exc import IntegrityError
    from sqlalchemy.exc import UnboundExecutionError

    outbox = store.table(state.settings.outbox_table)
    try:
        engine = session.get_bind()
    except UnboundExecutionError:
        raise ConfigurationError(
            "POSTSTACK_OUTBOX",
            "the SQLAlchemy session is bound to no database, so the outbox row"
            " has nowhere to go: bind it to an engine.",
        ) from None
    ours = not session.in_transaction()
    chosen = [s["id"] for s in specs if s["unique"]]
    with store.table_errors(engine, outbox):  # type: ignore[arg-type]
        found = store.existing(session, outbox, chosen)
        new = [s for s in specs if s["id"] not in found]
        for job_spec in new:
            job_spec["unique"] = True  # a row may be pushed twice
        try:
            if new:
                store.write(session, outbox, new)
        except IntegrityError as exc:
            if not chosen:
                raise
            raise InvalidEmailError(
                "job_id",
                "another transaction wrote an outbox row with this job id at the"
                " same time: roll back, then enqueue again to get its job.",
            ) from exc
    if new:
        ids = [s["id"] for s in new]

        def run() -> None:
            try:
                push(new)
            except QueueUnavailableError as exc:
                logger.warning("%s The outbox relay will push %s.", exc, ids)
                return
            try:
                store.mark_pushed(engine, outbox, ids)  # type: ignore[arg-type]
            except Exception as exc:
                logger.warning(
                    "Queued %s, but could not mark their outbox rows pushed (%s):"
                    " the relay will push them again, which queues no second job.",
                    ids,
                    getattr(exc, "orig", None) or exc,
                )

        payloads = [p for s in new for p in payloads_of(s)]
        after_commit.defer(session, after_commit.Deferred(payloads, run, ids))
    if ours:
        # Queued outside the app's transaction: the row is the whole of it.
        session.commit()
    return [found.get(s["id"], s) for s in specs]


def _job(state: AppState, job_spec: Spec) -> Job:
    """The job a spec will be, before it is in Redis (its id is final)."""
    from rq.job import Job
    from rq.serializers import JSONSerializer

    return Job.create(
        job_spec["task"],
        args=job_spec["args"],
        kwargs={},
        connection=state.redis,
        id=job_spec["id"],
        origin=job_spec["queue"],
        meta=job_spec["meta"],
        description=job_spec["description"],
        timeout=job_spec["job_timeout"],
        result_ttl=job_spec["result_ttl"],
        failure_ttl=job_spec["failure_ttl"],
        serializer=JSONSerializer,
    )
