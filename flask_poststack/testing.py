"""Helpers for testing an app that sends email with Flask-PostStack.

- :func:`record_messages` captures every email sent or queued inside a
  ``with`` block, with or without ``POSTSTACK_SUPPRESS_SEND``;
- :func:`outbox` is what a suppressed app would have sent;
- :func:`fail_next` makes the next sends fail as the API would;
- ``POSTSTACK_EAGER = True`` runs queued jobs inside ``enqueue_email``.

The pytest fixtures built on these are in :mod:`flask_poststack.pytest_plugin`.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import typing as t

from blinker import ANY
from flask import Flask
from poststack import PostStackError

from . import signals
from ._state import get_state
from .client import process_faults
from .results import SendResult

if t.TYPE_CHECKING:
    from rq.job import Job

__all__ = ["RecordedEmail", "clear_failures", "fail_next", "outbox", "record_messages"]


@dataclasses.dataclass(frozen=True)
class RecordedEmail:
    """One email seen by :func:`record_messages`."""

    #: ``"sent"`` (sent, or captured while suppressed) or ``"enqueued"``.
    kind: str
    #: A deep copy of the wire payload, taken when the signal fired.
    payload: dict[str, t.Any]
    #: The app that sent it, or ``None`` for a job run by a worker.
    sender: Flask | None
    #: The API's answer, for ``"sent"``.
    result: SendResult | None = None
    #: The RQ job, for ``"enqueued"``.
    job: Job | None = None

    @property
    def to(self) -> list[str]:
        """The recipients."""
        return list(self.payload.get("to", []))

    @property
    def subject(self) -> str | None:
        """The subject."""
        return self.payload.get("subject")


@contextlib.contextmanager
def record_messages(app: Flask | None = None) -> t.Iterator[list[RecordedEmail]]:
    """Record every email sent or queued in the block (by ``app``, or any).

    ::

        with record_messages(app) as emails:
            client.post("/signup", data={"email": "ada@example.com"})
        assert emails[0].to == ["ada@example.com"]

    Each record holds a deep copy of the payload, so later changes to the
    caller's objects don't show. Suppressed sends are recorded too.
    """
    records: list[RecordedEmail] = []
    sender: t.Any = ANY if app is None else app

    def on_sent(
        sender: Flask | None, payload: dict[str, t.Any], result: SendResult, **_: t.Any
    ) -> None:
        records.append(
            RecordedEmail("sent", copy.deepcopy(payload), sender, result=result)
        )

    def on_enqueued(
        sender: Flask | None, payload: dict[str, t.Any], job: Job, **_: t.Any
    ) -> None:
        records.append(
            RecordedEmail("enqueued", copy.deepcopy(payload), sender, job=job)
        )

    with (
        signals.email_sent.connected_to(on_sent, sender=sender),
        signals.email_enqueued.connected_to(on_enqueued, sender=sender),
    ):
        yield records


def outbox(app: Flask) -> list[dict[str, t.Any]]:
    """The payloads ``app`` captured while sending was suppressed, oldest first.

    The list is live: clear it with ``outbox(app).clear()``.
    """
    return get_state(app).outbox


def fail_next(
    count: int = 1,
    *,
    status: int = 500,
    code: str | None = None,
    error: str = "Injected failure",
    retry_after: float | None = None,
    exception: Exception | None = None,
) -> None:
    """Make the next ``count`` sends in this process fail, as the API would.

    Each raises a :exc:`poststack.PostStackError` built from ``status``,
    ``code``, ``error`` and ``retry_after`` (or ``exception`` itself), at the
    point where the API would be called, whether sending is suppressed or
    not: in ``send_email`` it reaches the caller, in a job the worker's retry
    rules apply. For example ``fail_next(status=429, code="rate_limit_exceeded",
    retry_after=1)`` is a throttle and ``fail_next(status=429,
    code="monthly_limit_exceeded")`` a quota.

    It reaches sends by any app and by jobs run in this process, not those
    of a worker in another process.
    """
    if count < 1:
        raise ValueError("count must be at least 1")
    failure = exception or PostStackError(
        status_code=status,
        error=error,
        code=code,
        request_id="req_injected",
        retry_after=retry_after,
    )
    process_faults().add(failure, count)


def clear_failures() -> None:
    """Forget failures queued by :func:`fail_next` that have not fired."""
    process_faults().clear()
