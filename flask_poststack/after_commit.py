"""Run queueing steps when the app's SQLAlchemy transaction commits.

:func:`defer` holds a step (a callable that puts jobs in Redis) on the
session's current transaction: a released SAVEPOINT hands its steps to its
parent, a rolled-back one drops them, and the outermost commit runs them. Out
of a transaction the step runs at once. The session is Flask-SQLAlchemy's
``db.session``, or the one ``POSTSTACK_SQLALCHEMY_SESSION`` names.

Session events are listened to on the :class:`~sqlalchemy.orm.Session` class,
once, from the first deferred email on; they return at once for sessions that
hold nothing.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import typing as t

from flask import Flask

from .errors import ConfigurationError

if t.TYPE_CHECKING:
    from sqlalchemy.orm import Session
    from sqlalchemy.orm import SessionTransaction

__all__ = ["Deferred", "current_session", "defer", "pending", "run_after_commit"]

logger = logging.getLogger("flask_poststack")

SESSION_KEY = "POSTSTACK_SQLALCHEMY_SESSION"
_PENDING = "poststack.pending"
_OUTCOME = "poststack.outcome"
_CACHE = "poststack.session"
_hooked = False
_hook_lock = threading.Lock()


@dataclasses.dataclass(eq=False)
class Deferred:
    """One queueing step waiting for a commit."""

    #: The payloads it will queue (already validated and rendered).
    payloads: list[dict[str, t.Any]]
    #: Puts the jobs in Redis (or the outbox rows' jobs); run once.
    run: t.Callable[[], object] = dataclasses.field(repr=False)
    #: The job ids it will use.
    job_ids: list[str] = dataclasses.field(default_factory=list)


def current_session(
    app: Flask, name: str | None = None, setting: str = "POSTSTACK_AFTER_COMMIT"
) -> Session:
    """The app's SQLAlchemy session for this context.

    :raises ConfigurationError: naming ``setting`` when there is no usable
        session (none registered, one closed for good, or one in a failed
        state), or naming
        ``POSTSTACK_SQLALCHEMY_SESSION`` when that does not import.
    """
    from sqlalchemy.orm import scoped_session
    from sqlalchemy.orm import Session

    source = app.extensions.get(_CACHE)
    if source is None:
        if name:
            from werkzeug.utils import import_string

            try:
                source = import_string(name.replace(":", "."))
            except (ImportError, AttributeError) as exc:
                raise ConfigurationError(
                    SESSION_KEY, f"cannot import {name!r}: {exc}"
                ) from None
        elif (db := app.extensions.get("sqlalchemy")) is not None:
            source = db.session
        else:
            raise ConfigurationError(
                setting,
                "needs a SQLAlchemy session: register Flask-SQLAlchemy on the"
                f" app, or name a session in {SESSION_KEY}"
                " ('package.module:session'), or pass after_commit=False.",
            )
        app.extensions[_CACHE] = source
    session = source() if isinstance(source, scoped_session) else source
    if not isinstance(session, Session):
        raise ConfigurationError(
            SESSION_KEY, f"must name a SQLAlchemy Session, not {type(session)!r}."
        )
    # A Session(close_resets_only=False) refuses any use once closed; there
    # is no public way to ask (SQLAlchemy 2.0.22+).
    if getattr(getattr(session, "_close_state", None), "name", None) == "CLOSED":
        raise ConfigurationError(
            setting,
            "the SQLAlchemy session is closed for good (close_resets_only=False):"
            " queue the email on an open session, or pass after_commit=False.",
        )
    transaction = session.get_nested_transaction() or session.get_transaction()
    if transaction is not None and not transaction.is_active:
        raise ConfigurationError(
            setting,
            "the SQLAlchemy session is in a failed state (an earlier flush or"
            " commit failed): roll it back before queueing an email, or pass"
            " after_commit=False.",
        )
    return session


def defer(session: Session, step: Deferred) -> bool:
    """Hold ``step`` until ``session``'s outermost transaction commits.

    Returns ``False`` (holding nothing) when the session is not in a
    transaction: the caller runs the step at once.
    """
    transaction = session.get_nested_transaction() or session.get_transaction()
    if transaction is None:
        return False
    _hook()
    held: dict[SessionTransaction, list[Deferred]]
    held = session.info.setdefault(_PENDING, {})
    held.setdefault(transaction, []).append(step)
    return True


def pending(session: Session) -> list[dict[str, t.Any]]:
    """The payloads waiting for ``session`` to commit, oldest first."""
    held = session.info.get(_PENDING, {})
    return [p for steps in held.values() for s in steps for p in s.payloads]


def run_after_commit(session: Session) -> int:
    """Run the steps waiting on ``session`` as if it had committed (tests whose
    transaction never commits), and forget them. Returns how many ran."""
    held = session.info.pop(_PENDING, {})
    steps = [s for group in held.values() for s in group]
    _run(steps)
    return len(steps)


def _hook() -> None:
    global _hooked
    if _hooked:
        return
    with _hook_lock:
        if not _hooked:
            from sqlalchemy import event
            from sqlalchemy.orm import Session

            event.listen(Session, "after_commit", _on_commit)
            event.listen(Session, "after_rollback", _on_rollback)
            event.listen(Session, "after_transaction_end", _on_end)
            _hooked = True


# after_commit / after_rollback fire (for SAVEPOINTs too) just before the
# after_transaction_end of the transaction they finished: the innermost
# SAVEPOINT, or the outermost transaction. The outcome is kept per transaction
# because a failed flush rolls the outermost one back (after_rollback) while
# its own inner transaction ends first.
def _finished(session: Session) -> SessionTransaction | None:
    return session.get_nested_transaction() or session.get_transaction()


def _on_commit(session: Session) -> None:
    if session.info.get(_PENDING):
        session.info.setdefault(_OUTCOME, {})[_finished(session)] = "commit"


def _on_rollback(session: Session) -> None:
    if session.info.get(_PENDING):
        session.info.setdefault(_OUTCOME, {})[_finished(session)] = "rollback"


def _on_end(session: Session, transaction: SessionTransaction) -> None:
    outcomes: dict[SessionTransaction, str] | None = session.info.get(_OUTCOME)
    outcome = outcomes.pop(transaction, None) if outcomes else None
    held: dict[SessionTransaction, list[Deferred]] | None
    held = session.info.get(_PENDING)
    if not held:
        return
    if transaction not in held:
        return
    steps = held.pop(transaction)
    if len(held) == 0:
        del session.info[_PENDING]
    if outcome != "commit":
        # A rollback is the app's choice; a close (the app context's teardown)
        # with emails still held is most often a forgotten commit.
        keys = [p.get("idempotency_key") for s in steps for p in s.payloads]
        if outcome == "rollback":
            logger.info("Dropped %d email(s) of a rolled-back transaction: %s",
                        len(keys), keys)  # fmt: skip
        else:
            logger.warning(
                "Dropped %d email(s) of a session closed without a commit"
                " (commit it to queue them): %s",
                len(keys),
                keys,
            )
        return
    if transaction.parent is not None:
        session.info.setdefault(_PENDING, {}).setdefault(transaction.parent, []).extend(
            steps
        )
        return
    _run(steps)


def _run(steps: list[Deferred]) -> None:
    # The data is committed: a failure here must not fail the view.
    for step in steps:
        try:
            step.run()
        except Exception:
            keys = [p.get("idempotency_key") for p in step.payloads]
            logger.exception("Could not queue email(s) after the commit: %s", keys)
