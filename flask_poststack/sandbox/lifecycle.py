"""The life of an email after it is accepted: queued, sent, then delivered
(or bounced, complained, deferred, failed by injection), each step recorded
as an event and announced to the webhooks. Runs on a timer thread."""

from __future__ import annotations

import dataclasses
import fnmatch
import heapq
import itertools
import logging
import threading
import time
import typing as t

from ._util import utcnow
from .config import SandboxConfig
from .store import Store
from .store import StoredEmail

log = logging.getLogger("flask_poststack.sandbox")

#: Outcomes that can be injected, see :meth:`Outcomes.add`.
OUTCOMES = ("delivered", "bounced", "soft_bounced", "complained", "deferred", "failed")


class Scheduler:
    """Runs callbacks at a given time on one daemon thread."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._heap: list[tuple[float, int, t.Callable[[], None]]] = []
        self._seq = itertools.count()
        self._thread: threading.Thread | None = None
        self._stopped = False

    def start(self) -> None:
        with self._cond:
            self._stopped = False
        self._thread = threading.Thread(
            target=self._run, name="sandbox-scheduler", daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        with self._cond:
            self._stopped = True
            self._heap.clear()
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def clear(self) -> None:
        """Drop every pending callback."""
        with self._cond:
            self._heap.clear()

    def call_later(self, delay: float, func: t.Callable[[], None]) -> None:
        with self._cond:
            heapq.heappush(
                self._heap, (time.monotonic() + delay, next(self._seq), func)
            )
            self._cond.notify()

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._stopped:
                    if not self._heap:
                        self._cond.wait()
                        continue
                    wait = self._heap[0][0] - time.monotonic()
                    if wait <= 0:
                        break
                    self._cond.wait(wait)
                if self._stopped:
                    return
                _, _, func = heapq.heappop(self._heap)
            try:
                func()
            except Exception:
                log.exception("sandbox timer callback failed")


@dataclasses.dataclass
class OutcomeRule:
    """Gives matching emails an outcome other than ``delivered``."""

    id: int
    outcome: str
    pattern: str | None = None
    times: int | None = None
    fired: int = 0

    def to_dict(self) -> dict[str, t.Any]:
        return dataclasses.asdict(self)


class Outcomes:
    """Injected delivery outcomes (``sandbox.outcomes``). Test-mode emails
    ignore them: they always end ``delivered``."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._rules: list[OutcomeRule] = []
        self._ids = itertools.count(1)

    def add(
        self, outcome: str, pattern: str | None = None, *, times: int | None = None
    ) -> OutcomeRule:
        """Give emails an ``outcome`` (one of :data:`OUTCOMES`).

        :param pattern: a glob matched case-insensitively against each
            recipient (``to``, ``cc``, ``bcc``), e.g. ``"*@bounce.test"``;
            ``None`` matches the next emails whatever their recipients.
        :param times: how many emails the rule applies to; ``None`` means
            forever when a pattern is given and once when it is not.
        """
        if outcome not in OUTCOMES:
            raise ValueError(f"outcome must be one of {OUTCOMES}")
        if pattern is None and times is None:
            times = 1
        with self._lock:
            rule = OutcomeRule(next(self._ids), outcome, pattern, times)
            self._rules.append(rule)
            return rule

    def clear(self) -> None:
        with self._lock:
            self._rules.clear()

    @property
    def rules(self) -> list[OutcomeRule]:
        with self._lock:
            return list(self._rules)

    def pick(self, recipients: list[str]) -> tuple[str, str | None]:
        """The outcome for an email and the recipient it is blamed on."""
        with self._lock:
            for rule in self._rules:
                if rule.times is not None and rule.fired >= rule.times:
                    continue
                if rule.pattern is None:
                    rule.fired += 1
                    return rule.outcome, recipients[0] if recipients else None
                for address in recipients:
                    if fnmatch.fnmatchcase(address.lower(), rule.pattern.lower()):
                        rule.fired += 1
                        return rule.outcome, address
        return "delivered", None


class Lifecycle:
    """Moves emails through their statuses and emits the events."""

    def __init__(
        self,
        store: Store,
        config: SandboxConfig,
        scheduler: Scheduler,
        outcomes: Outcomes,
        emit: t.Callable[[StoredEmail, dict[str, t.Any]], None],
    ) -> None:
        self.store = store
        self.config = config
        self.scheduler = scheduler
        self.outcomes = outcomes
        self.emit = emit

    def begin(self, email: StoredEmail) -> None:
        """Start the lifecycle of a freshly stored email: its ``queued``
        event was recorded by the store and is announced here."""
        self.emit(email, email.events[0])
        self.schedule(email)

    def schedule(self, email: StoredEmail) -> None:
        with self.store.lock:
            generation = email.generation
            delay = self.config.lifecycle_delay
            if email.scheduled_at is not None:
                delay = max(delay, (email.scheduled_at - utcnow()).total_seconds())
        self.scheduler.call_later(delay, lambda: self._send(email, generation))

    def _send(self, email: StoredEmail, generation: int) -> None:
        with self.store.lock:
            if not self._current(email, generation) or email.status != "queued":
                return
            email.sent_at = utcnow()
            events = self.record(email, self.config.sent_status, [("sent", None)])
        self.announce(email, events)
        self.scheduler.call_later(
            self.config.lifecycle_delay, lambda: self._finish(email, generation)
        )

    def _finish(self, email: StoredEmail, generation: int) -> None:
        with self.store.lock:
            if not self._current(email, generation):
                return
            # Picked under the lock, after the check: a timer left over from
            # before a reset must not use up the next test's outcome rule.
            if email.test_mode:
                outcome, recipient = "delivered", None
            else:
                data = email.input
                outcome, recipient = self.outcomes.pick(
                    data.to + (data.cc or []) + (data.bcc or [])
                )
            meta = {"recipient": recipient} if recipient else None
            steps = [(outcome, meta)]
            if outcome == "complained":
                steps.insert(0, ("delivered", None))
            status = "bounced" if outcome == "soft_bounced" else outcome
            events = self.record(email, status, steps)
        self.announce(email, events)

    def _current(self, email: StoredEmail, generation: int) -> bool:
        # Still stored (no reset since), and not rescheduled or cancelled.
        stored = self.store.emails.get(email.id) is email
        return stored and email.generation == generation

    def record(
        self,
        email: StoredEmail,
        status: str,
        events: t.Sequence[tuple[str, dict[str, t.Any] | None]],
    ) -> list[dict[str, t.Any]]:
        """Record ``events`` (``(type, metadata)`` pairs) on ``email``, then
        give it ``status``: last, so that a reader polling the status without
        the lock finds its events. Call with the store's lock held, and
        :meth:`announce` what it returns once the lock is released."""
        recorded = [self.store.add_event(email, *event) for event in events]
        email.status = status
        return recorded

    def announce(self, email: StoredEmail, events: list[dict[str, t.Any]]) -> None:
        """Send recorded events to the webhooks. Never with the store's lock
        held: the webhooks' lock may take the store's, not the other way."""
        for event in events:
            self.emit(email, event)
