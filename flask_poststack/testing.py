"""Helpers for testing an app that sends email with Flask-PostStack.

- :func:`record_messages` records every email sent, captured or queued
  inside a ``with`` block, one :class:`RecordedEmail` per email (the pytest
  fixture ``poststack_outbox`` is this, for a whole test: use it);
- :func:`outbox` is the raw payloads a suppressed app captured (low level);
- :func:`fail_next` makes the next sends fail as the API would;
- ``POSTSTACK_EAGER = True`` runs queued jobs inside ``enqueue_email``.

The pytest fixtures built on these are in :mod:`flask_poststack.pytest_plugin`.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import threading
import typing as t

from blinker import ANY
from flask import Flask
from poststack import PostStackError

from . import after_commit
from . import signals
from ._state import get_state
from .client import process_faults
from .results import SendResult

if t.TYPE_CHECKING:
    from rq.job import Job
    from sqlalchemy.orm import Session

__all__ = [
    "RecordedEmail",
    "Status",
    "clear_failures",
    "fail_next",
    "outbox",
    "pending_emails",
    "record_messages",
    "run_after_commit",
]


#: What :attr:`RecordedEmail.status` can be.
Status = t.Literal["queued", "sent", "failed"]


@dataclasses.dataclass(eq=False)
class RecordedEmail:
    """One email seen by :func:`record_messages` (and ``poststack_outbox``).

    There is one record per email, whichever way it went: sent now, captured
    while sending is suppressed, or queued. A queued email that the test
    then runs (``poststack_queue.run()``, eager mode) is the same record,
    updated in place: :attr:`status` goes from ``"queued"`` to ``"sent"``
    (or ``"failed"``) and :attr:`result` is set. The email is recognised
    across its queueing and its send by its job and ``idempotency_key``: a
    direct send that reuses a queued email's key is a record of its own.

    Every field of the wire payload reads as an attribute (``.to``,
    ``.subject``, ``.html``, ``.from_`` for ``"from"``...), with ``None``
    (or an empty list or dict) for a field the email does not have.
    """

    #: A deep copy of the wire payload, taken when the email was sent or queued.
    payload: dict[str, t.Any]
    #: The app that sent or queued it, or ``None`` for a job run by a worker.
    sender: Flask | None
    #: ``"queued"`` (waiting for a worker, or to be retried), ``"sent"``
    #: (accepted by the API, or captured while suppressed: see
    #: :attr:`captured`) or ``"failed"`` (for good).
    status: Status
    #: The API's answer, once sent.
    result: SendResult | None = None
    #: The RQ job, for a queued email.
    job: Job | None = None
    #: The last failure, if any (a queued email keeps it while it is retried).
    error: Exception | None = None

    @property
    def kind(self) -> str:
        """``"enqueued"`` for an email that went through the queue, else
        ``"sent"``. Kept for older tests: prefer :attr:`status` and :attr:`job`.
        """
        return "enqueued" if self.job is not None else "sent"

    @property
    def captured(self) -> bool:
        """Whether it was captured (suppressed) rather than sent to the API."""
        return self.result is not None and self.result.suppressed

    @property
    def to(self) -> list[str]:
        """The recipients."""
        return list(self.payload.get("to", []))

    @property
    def cc(self) -> list[str]:
        """The ``cc`` recipients."""
        return list(self.payload.get("cc", []))

    @property
    def bcc(self) -> list[str]:
        """The ``bcc`` recipients."""
        return list(self.payload.get("bcc", []))

    @property
    def from_(self) -> str | None:
        """The sender (the wire key ``from``)."""
        return self.payload.get("from")

    @property
    def reply_to(self) -> str | None:
        """The reply-to address."""
        return self.payload.get("reply_to")

    @property
    def subject(self) -> str | None:
        """The subject."""
        return self.payload.get("subject")

    @property
    def html(self) -> str | None:
        """The HTML body."""
        return self.payload.get("html")

    @property
    def text(self) -> str | None:
        """The plain-text body."""
        return self.payload.get("text")

    @property
    def headers(self) -> dict[str, str]:
        """The extra headers."""
        return dict(self.payload.get("headers", {}))

    @property
    def tags(self) -> list[str]:
        """The tags."""
        return list(self.payload.get("tags", []))

    @property
    def attachments(self) -> list[dict[str, t.Any]]:
        """The attachments, as sent (``filename``, base64 ``content``...)."""
        return list(self.payload.get("attachments", []))

    @property
    def template_id(self) -> str | None:
        """The server-side template."""
        return self.payload.get("template_id")

    @property
    def variables(self) -> dict[str, str]:
        """The server-side template's variables."""
        return dict(self.payload.get("variables", {}))

    @property
    def scheduled_at(self) -> str | None:
        """When the API is to send it (ISO 8601), if scheduled."""
        return self.payload.get("scheduled_at")

    @property
    def idempotency_key(self) -> str | None:
        """The idempotency key (every queued email has one)."""
        return self.payload.get("idempotency_key")


class _Recorder:
    """Turns the signals into one :class:`RecordedEmail` per email.

    A queued email's records are matched by job and idempotency key, so a
    direct send that reuses the key of a queued email is an email of its own.
    """

    def __init__(self, app: Flask | None) -> None:
        self.app = app
        self.records: list[RecordedEmail] = []
        # Sends by jobs not yet matched to a queued email: in eager mode the
        # job runs before ``email_enqueued`` fires.
        self._unclaimed: dict[tuple[str, str | None], RecordedEmail] = {}
        self._lock = threading.Lock()

    def _queued(self, job: Job | None, key: str | None) -> RecordedEmail | None:
        if job is None:
            return None
        for record in reversed(self.records):
            same_job = record.job is not None and record.job.id == job.id
            if same_job and record.idempotency_key == key and record.status == "queued":
                return record
        return None

    def on_enqueued(
        self, sender: Flask | None, payload: dict[str, t.Any], job: Job, **_: t.Any
    ) -> None:
        key = payload.get("idempotency_key")
        with self._lock:
            record = self._unclaimed.pop((job.id, key), None)
            if record is None:
                record = RecordedEmail(copy.deepcopy(payload), sender, "queued")
            if not any(r is record for r in self.records):
                self.records.append(record)
            record.sender, record.job = sender, job

    def on_sent(
        self,
        sender: Flask | None,
        payload: dict[str, t.Any],
        result: SendResult,
        job: Job | None = None,
        **_: t.Any,
    ) -> None:
        key = payload.get("idempotency_key")
        with self._lock:
            record = self._queued(job, key)
            if record is not None:
                record.status, record.result = "sent", result
                return
            record = RecordedEmail(copy.deepcopy(payload), sender, "sent", result)
            if job is not None:
                # Perhaps an eager job, whose email_enqueued comes next.
                self._unclaimed[(job.id, key)] = record
            if self.app is None or sender is self.app:
                self.records.append(record)

    def on_failed(
        self,
        sender: Flask | None,
        payload: dict[str, t.Any],
        exception: Exception,
        job: Job | None = None,
        will_retry: bool = False,
        **_: t.Any,
    ) -> None:
        status: Status = "queued" if will_retry else "failed"
        key = payload.get("idempotency_key")
        with self._lock:
            record = self._queued(job, key)
            if record is not None:
                record.status, record.error = status, exception
            elif job is not None:
                # An eager job that failed: recorded once it counts as queued.
                self._unclaimed[(job.id, key)] = RecordedEmail(
                    copy.deepcopy(payload), sender, status, error=exception
                )


@contextlib.contextmanager
def record_messages(app: Flask | None = None) -> t.Iterator[list[RecordedEmail]]:
    """Record every email sent, captured or queued in the block (by ``app``,
    or by any app), one :class:`RecordedEmail` per email.

    ::

        with record_messages(app) as emails:
            client.post("/signup", data={"email": "ada@example.com"})
        assert emails[0].to == ["ada@example.com"]

    Each record holds a deep copy of the payload, so later changes to the
    caller's objects don't show. Suppressed sends are recorded too. A queued
    email run in the block (by ``poststack_queue.run()`` or in eager mode)
    updates its record. A send that fails is not recorded, unless the
    email was queued: then its record's ``status`` and ``error`` say so.

    The pytest plugin's ``poststack_outbox`` fixture is this, for the whole
    test.
    """
    recorder = _Recorder(app)
    sender: t.Any = ANY if app is None else app
    with (
        # Jobs run in this process signal with the sender None: always heard,
        # so that a queued email's record follows it to its send.
        signals.email_sent.connected_to(recorder.on_sent),
        signals.email_failed.connected_to(recorder.on_failed),
        signals.email_enqueued.connected_to(recorder.on_enqueued, sender=sender),
    ):
        yield recorder.records


def outbox(app: Flask) -> list[dict[str, t.Any]]:
    """The raw payloads ``app`` captured while sending was suppressed, oldest
    first.

    This is the app's own low-level capture: only suppressed sends, only
    payloads, nothing about queued emails. In tests, prefer
    ``poststack_outbox`` (or :func:`record_messages`), one
    :class:`RecordedEmail` per email. The list is live: clear it with
    ``outbox(app).clear()``.
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


def _session(session: Session | None) -> Session:
    if session is not None:
        return session
    settings = get_state().settings
    return after_commit.current_session(get_state().app, settings.sqlalchemy_session)


def pending_emails(session: Session | None = None) -> list[dict[str, t.Any]]:
    """The payloads queued with ``after_commit`` (or to the outbox) that wait
    for ``session`` (default: the current app's) to commit, oldest first."""
    return after_commit.pending(_session(session))


def run_after_commit(session: Session | None = None) -> int:
    """Queue what waits for ``session`` to commit, as the commit would, for
    tests that wrap each test in a transaction that never commits. Returns
    how many queueing steps ran; a later rollback no longer drops them."""
    return after_commit.run_after_commit(_session(session))
