"""The sender threads' single-email sends, coalesced into ``POST /emails/batch``.

With many emails in flight, a worker spends more CPU on HTTP requests (and
on a pool of one connection per sender thread) than on anything else. A
:class:`Coalescer` bounds the requests in flight to a few *slots*: a sender
that finds a slot free sends once the senders just handed a job have come
to their send too (at most :data:`MAX_LINGER`: a burst goes in one
request); the others wait, and the next sender to get a slot takes every
waiting email with it in one batch request (group commit: nothing waits for
a batch to fill, the batch is whatever came while the slots were busy).

Coalescing only ever saves requests, it never changes an answer: an email
the batch accepted gets that element's answer (``{"id", "replayed"?}``,
as a single send would, and each element carries its own idempotency key);
every other email (refused in the batch, or the batch request failed or
could not be read) is sent on its own by its sender, as without coalescing,
and gets its own answer and error. A resend after a batch that may have
been processed is a replay, never a second email.
"""

from __future__ import annotations

import logging
import threading
import time
import typing as t
from collections.abc import Mapping

__all__ = ["Coalescer", "send", "use"]

logger = logging.getLogger("flask_poststack.worker")

#: The API takes at most 100 emails per batch request.
MAX_BATCH = 100
#: The longest a sender holding a free slot waits for the senders that have
#: a job but have not come to their send yet (a burst goes in one request).
MAX_LINGER = 0.01
#: A waiting sender wakes this often, so that a job timeout raised in its
#: thread (:class:`~flask_poststack._threadpool.SendTimeout`) gets through.
_WAIT_STEP = 0.25

#: An email's state: waiting for a slot; given a slot; sending in the slot
#: it was given; taken into another sender's batch; answered (or to be
#: sent on its own).
_WAITING, _LEAD, _LEADING, _SENDING, _DONE = range(5)

_local = threading.local()


def use(coalescer: Coalescer | None) -> None:
    """Coalesce this thread's sends with ``coalescer`` (``None``: don't)."""
    _local.coalescer = coalescer


def send(client: t.Any, payload: Mapping[str, t.Any]) -> t.Any:
    """``client.emails.send(payload)``, coalesced in a sender thread."""
    coalescer: Coalescer | None = getattr(_local, "coalescer", None)
    if coalescer is None:
        return client.emails.send(dict(payload))
    return coalescer.send(client, payload)


class _Item:
    __slots__ = ("answer", "client", "done", "payload", "state")

    def __init__(self, client: t.Any, payload: Mapping[str, t.Any]) -> None:
        self.client = client
        self.payload = payload
        self.state = _WAITING
        self.answer: dict[str, t.Any] | None = None
        self.done = threading.Event()


class Coalescer:
    """At most ``slots`` send requests in flight; the emails waiting for a
    slot go together in the next one."""

    def __init__(self, slots: int) -> None:
        self._lock = threading.Lock()
        self._arrival = threading.Condition(self._lock)
        self._free = max(1, slots)
        self._pending: list[_Item] = []
        #: Senders given a job (:meth:`expect`) that have not sent yet.
        self._coming = 0

    def expect(self) -> None:
        """A sender thread is about to start a job (which may send)."""
        with self._lock:
            self._coming += 1

    def begin(self) -> None:
        """In the sender thread: its job (expected) starts."""
        _local.expected = True

    def end(self) -> None:
        """In the sender thread: its job is over (whether it sent or not)."""
        if getattr(_local, "expected", False):
            with self._lock:
                self._arrived()

    def _arrived(self) -> None:
        if getattr(_local, "expected", False):
            _local.expected = False
            self._coming -= 1
            self._arrival.notify_all()

    def send(self, client: t.Any, payload: Mapping[str, t.Any]) -> t.Any:
        """Send ``payload``; the answer a single send would get."""
        item = _Item(client, payload)
        with self._lock:
            self._arrived()
            self._pending.append(item)
            if self._free:
                self._free -= 1
                item.state = _LEAD
        try:
            while item.state in (_WAITING, _SENDING):
                item.done.wait(_WAIT_STEP)
            if item.state == _LEAD:
                return self._lead(item)
        except BaseException:  # a timeout: an email not taken yet stays unsent
            self._abandon(item)
            raise
        if item.answer is not None:
            return item.answer
        return client.emails.send(dict(payload))  # on its own, as without us

    def _abandon(self, item: _Item) -> None:
        with self._lock:
            if item in self._pending:
                self._pending.remove(item)
            if item.state == _LEAD:  # given a slot it never used
                self._hand_on()
            item.state = _DONE

    def _hand_on(self) -> None:
        """Give the slot just freed to the first email waiting, or free it
        (with the lock held)."""
        for waiting in self._pending:
            if waiting.state == _WAITING:
                waiting.state = _LEAD
                waiting.done.set()
                return
        self._free += 1

    def _lead(self, me: _Item) -> t.Any:
        """Send ``me`` in the slot it holds, with up to 99 emails waiting;
        alone, with ``POST /emails``."""
        with self._lock:
            linger_until = time.monotonic() + MAX_LINGER
            while self._coming > 0 and len(self._pending) < MAX_BATCH:
                left = linger_until - time.monotonic()
                if left <= 0:
                    break
                self._arrival.wait(left)
            me.state = _LEADING
            self._pending.remove(me)
            batch = [me]
            for item in self._pending:
                if item.state == _WAITING and item.client is me.client:
                    batch.append(item)
                    if len(batch) == MAX_BATCH:
                        break
            if len(batch) > 1:
                taken = set(map(id, batch))
                self._pending = [i for i in self._pending if id(i) not in taken]
                for item in batch:
                    item.state = _SENDING
        try:
            if len(batch) == 1:
                return me.client.emails.send(dict(me.payload))
            self._send(batch)
        finally:
            with self._lock:
                self._hand_on()
        if me.answer is not None:
            return me.answer
        return me.client.emails.send(dict(me.payload))

    def _send(self, batch: list[_Item]) -> None:
        """One batch request; each accepted email gets its element's answer."""
        try:
            body = {"emails": [dict(item.payload) for item in batch]}
            response = batch[0].client.emails.batch(body)
            data = response.get("data") if isinstance(response, Mapping) else None
            if isinstance(data, list) and len(data) == len(batch):
                for item, answer in zip(batch, data, strict=True):
                    if isinstance(answer, Mapping) and isinstance(
                        answer.get("id"), str
                    ):
                        item.answer = dict(answer)
        except Exception as exc:  # each email is sent on its own instead
            logger.debug("A batch of %d emails failed (%s); sending each"
                         " on its own", len(batch), type(exc).__name__)  # fmt: skip
        finally:
            for item in batch:
                item.state = _DONE
                item.done.set()
