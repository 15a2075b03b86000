"""The ledger that keeps a Celery task from being lost by a killed worker.

kombu's Redis transport takes a message off the queue (``BRPOP``) and only
then, in another round trip, records it as unacknowledged: a worker killed
between the two loses the task, ``acks_late`` or not. So each task is also
written here when it is queued, and stays until it ends for good (sent or
failed): a sorted set of task ids, scored by when the task was last known
to be due or queued, and a hash of what it takes to queue it again (task
name, arguments, queue, retries; the payload and the key's fingerprint,
never the key).

Each worker runs a :class:`Reconciler`: a task overdue by the visibility
timeout, and found neither on its queue nor among kombu's unacknowledged
messages (twice, a second apart), is queued again under the same task id.
A task whose entry is gone has already finished and does nothing
(:func:`is_finished`); the idempotency key makes any other repeat a replay
at the API.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import re
import threading
import time
import typing as t
from collections.abc import Iterable
from collections.abc import Iterator
from collections.abc import Sequence

import redis

if t.TYPE_CHECKING:
    from celery import Celery

__all__ = ["Entry", "Reconciler", "best_effort", "broker", "ended", "ended_before",
           "for_app", "forget", "is_finished", "keep_failed", "reconcile",
           "retried", "revoked_again"]  # fmt: skip

log = logging.getLogger("flask_poststack.celery")

LEDGER = "poststack:celery:ledger"
ENTRIES = "poststack:celery:ledger:tasks"
#: The entries of the tasks that failed for good, for ``requeue-failed``.
FAILED = "poststack:celery:failed"
#: A marker per task cancelled through the ledger (:mod:`._celery_cancel`).
CANCELED = "poststack:celery:canceled:"
#: How many overdue tasks one sweep looks at; the next sweep takes the rest.
SWEEP_SIZE = 1000

#: Move an entry's score to now if it is still overdue, and return the
#: entry: exactly one reconciler wins each overdue task.
_CLAIM = """
local score = redis.call('ZSCORE', KEYS[1], ARGV[1])
if score and tonumber(score) <= tonumber(ARGV[2]) then
  redis.call('ZADD', KEYS[1], ARGV[3], ARGV[1])
  return redis.call('HGET', KEYS[2], ARGV[1])
end
return false
"""


@dataclasses.dataclass(frozen=True)
class Entry:
    """What it takes to queue a task again."""

    task_id: str
    task: str
    args: Sequence[t.Any]
    kwargs: t.Mapping[str, t.Any]
    queue: str
    retries: int = 0

    def dumps(self) -> str:
        data = dataclasses.asdict(self)
        del data["task_id"]
        return json.dumps(data)


@dataclasses.dataclass(frozen=True)
class Broker:
    """The broker's Redis, as kombu's Redis transport names its keys."""

    client: redis.Redis
    prefix: str
    unacked: str
    queue_keys: t.Callable[[str], list[str]]

    def key(self, name: str) -> str:
        return self.prefix + name

    def record(self, entries: Iterable[Entry], due: float) -> None:
        """Write entries, due at ``due`` (a Unix time), in one round trip."""
        entries = list(entries)
        if not entries:
            return
        with self.client.pipeline() as pipe:
            pipe.zadd(self.key(LEDGER), {e.task_id: due for e in entries})
            pipe.hset(
                self.key(ENTRIES), mapping={e.task_id: e.dumps() for e in entries}
            )
            pipe.execute()

    def record_new(self, new: Entry, due: float) -> bool:
        """Write ``new`` unless its task id has an entry; whether it was written.

        Atomic: of two enqueues with one ``job_id``, one writes the entry."""
        with self.client.pipeline() as pipe:
            pipe.hsetnx(self.key(ENTRIES), new.task_id, new.dumps())
            pipe.zadd(self.key(LEDGER), {new.task_id: due}, nx=True)
            written, _ = pipe.execute()
        return bool(written)


def broker(channel: t.Any) -> Broker | None:
    """The ledger's view of a kombu channel; ``None`` off a Redis broker
    (other brokers hand a message out and record it in one step)."""
    from kombu.transport.redis import Channel

    if not isinstance(channel, Channel):
        return None
    found: t.Any = channel  # kombu is untyped
    prefix = found.global_keyprefix or ""

    def queue_keys(queue: str) -> list[str]:
        return [prefix + found._q_for_pri(queue, p) for p in found.priority_steps]

    # A pool of its own: kombu's holds 10 connections and fails the 11th,
    # which would be one of its acknowledgements.
    params = dict(found.pool.connection_kwargs)
    params.pop("maint_notifications_pool_handler", None)  # bound to kombu's pool
    pool = redis.BlockingConnectionPool(  # type: ignore[no-untyped-call]
        connection_class=found.pool.connection_class,
        max_connections=64,
        timeout=params.get("socket_timeout") or 20,  # POSTSTACK_REDIS_TIMEOUT
        **params,
    )
    return Broker(
        client=redis.Redis(connection_pool=pool),
        prefix=prefix,
        unacked=prefix + found.unacked_key,
        queue_keys=queue_keys,
    )


_held_lock = threading.Lock()


def for_app(app: Celery) -> Broker | None:
    """The ledger on ``app``'s broker, one connection pool per process."""
    held = getattr(app, "_poststack_ledger", None)
    if held is None or held[0] != os.getpid():  # a forked child opens its own
        # Connected outside the lock: with the broker hung, callers would
        # each wait out the one before them (80 threads: 80 timeouts).
        conn = app.connection_for_write()
        try:  # one try, not kombu's retries: a refused broker fails at once
            conn.ensure_connection(max_retries=1, interval_start=0, interval_step=0)
            opened = (os.getpid(), conn, broker(conn.default_channel))
        except Exception:
            conn.release()
            raise
        with _held_lock:
            held = getattr(app, "_poststack_ledger", None)
            if held is None or held[0] != os.getpid():
                held = app._poststack_ledger = opened
            else:  # another thread's came first
                conn.release()
    return t.cast("Broker | None", held[2])


def is_finished(found: Broker, task_id: str) -> bool:
    """Whether the task has no entry: it ended for good, this run is a repeat."""
    return found.client.zscore(found.key(LEDGER), task_id) is None


def forget(found: Broker, task_id: str) -> None:
    """Drop a task that ended for good (sent, or failed for good)."""
    with found.client.pipeline() as pipe:
        pipe.zrem(found.key(LEDGER), task_id)
        pipe.hdel(found.key(ENTRIES), task_id)
        pipe.execute()


def ended_before(task: t.Any) -> bool:
    """Whether this run copies a task that ended for good (or was cancelled)."""
    try:
        if task.request.is_eager or (found := for_app(task.app)) is None:
            return False
        if is_finished(found, task.request.id):
            return True
        meta = task.backend.get_task_meta(task.request.id, cache=False)
        return bool(meta["status"] == "FAILURE")  # uncached: requeue-failed resets
    except Exception:  # a broker blip must not fail an email
        log.warning("poststack: the ledger is unreachable; sending", exc_info=True)
        return False


def ended(task: t.Any, task_id: str, failed: bool = False) -> None:
    """Forget a task that ended for good (a failed one: :func:`keep_failed`);
    if the broker cannot be told, the sweep does it later."""
    with best_effort("the sweep will forget it"):
        found = for_app(task.app)
        if found is None:
            return
        if failed and (kept := entry(found, task_id)) is not None:
            keep_failed(found, kept)
        forget(found, task_id)


def keep_failed(found: Broker, failed: Entry) -> None:
    """Keep a failed task's entry in :data:`FAILED` for ``requeue-failed``,
    for ``POSTSTACK_FAILURE_TTL`` after the latest failure."""
    from .client import worker_slot

    with found.client.pipeline() as pipe:
        pipe.hset(found.key(FAILED), failed.task_id, failed.dumps())
        pipe.expire(found.key(FAILED), worker_slot().settings.failure_ttl)
        pipe.execute()


def revoked_again(task: t.Any) -> None:
    """For a task without an entry: if it was cancelled, record it as
    revoked again (Celery stored ``STARTED`` over it)."""
    found = for_app(task.app)
    if found is not None and found.client.exists(found.key(CANCELED + task.request.id)):
        task.backend.mark_as_revoked(task.request.id)


def retried(
    task: t.Any, args: Sequence[t.Any], kwargs: t.Mapping[str, t.Any], due: float
) -> None:
    """Record a retry's arguments, due when the retry is; if the broker
    cannot be told, the old entry still brings the task back."""
    with best_effort("retrying"):
        found = for_app(task.app)
        old = found and entry(found, task.request.id)
        if found is not None and old:
            new = dataclasses.replace(
                old, args=list(args), kwargs=kwargs, retries=task.request.retries + 1
            )
            found.record([new], due=due)


@contextlib.contextmanager
def best_effort(then: str) -> Iterator[None]:
    # A broker blip must not fail an email: the sweep is the safety net.
    try:
        yield
    except Exception:
        log.warning("poststack: the ledger is unreachable; %s", then, exc_info=True)


def entry(found: Broker, task_id: str) -> Entry | None:
    """A task's entry, if it has one."""
    raw = found.client.hget(found.key(ENTRIES), task_id)
    return None if raw is None else _load(task_id, raw)


def _load(task_id: str, raw: bytes | str) -> Entry:
    return Entry(task_id=task_id, **json.loads(raw))


def reconcile(
    app: Celery,
    found: Broker,
    visibility_timeout: float,
    *,
    recheck: float = 1.0,
) -> list[str]:
    """Queue again the tasks overdue by ``visibility_timeout`` that are
    nowhere on the broker; return their ids."""
    from celery.states import READY_STATES

    client = found.client
    now = time.time()
    due = client.zrangebyscore(
        found.key(LEDGER), "-inf", now - visibility_timeout, 0, SWEEP_SIZE
    )
    overdue = [_text(i) for i in t.cast("list[bytes]", due)]
    if not overdue:
        return []
    raws = client.hmget(found.key(ENTRIES), overdue)
    entries = {i: _load(i, r) for i, r in zip(overdue, raws, strict=True) if r}
    if len(entries) < len(overdue):  # half-written or half-removed: drop it
        client.zrem(found.key(LEDGER), *(i for i in overdue if i not in entries))
    missing = _absent(found, entries.values())
    if missing and recheck:
        # A live worker holds a task in neither place only for a moment,
        # between BRPOP and recording it: a lost one is missing again.
        time.sleep(recheck)
        missing = _absent(found, missing)
    seen = [i for i in entries if i not in {e.task_id for e in missing}]
    if seen:  # still queued or handed out: look again a timeout from now
        client.zadd(found.key(LEDGER), {i: now for i in seen}, xx=True)
    claim = client.register_script(_CLAIM)
    queued = []
    for lost in missing:
        state = app.AsyncResult(lost.task_id).state
        if state in READY_STATES:  # revoked, or ended before a kill
            if state == "FAILURE":
                keep_failed(found, lost)
            forget(found, lost.task_id)
            continue
        raw = claim(
            keys=[found.key(LEDGER), found.key(ENTRIES)],
            args=[lost.task_id, now - visibility_timeout, time.time()],
        )
        if not raw:
            continue  # finished meanwhile, or another worker took it
        again = _load(lost.task_id, raw)
        app.send_task(
            again.task,
            args=list(again.args),
            kwargs=dict(again.kwargs),
            task_id=again.task_id,
            queue=again.queue,
            retries=again.retries,
        )
        log.warning(
            "poststack: task %s was not acknowledged by a worker (killed, or one"
            " that did not know the task); queued again",
            again.task_id,
        )
        queued.append(again.task_id)
    return queued


def _absent(found: Broker, entries: Iterable[Entry]) -> list[Entry]:
    """The entries whose task is neither queued nor unacknowledged: one
    read of their queues and of kombu's unacknowledged hash."""
    wanted = {e.task_id: e for e in entries}
    for chunk in _messages(found, sorted({e.queue for e in wanted.values()})):
        if not wanted:
            break
        for message in chunk:
            for task_id in _TASK_ID.findall(message):
                wanted.pop(json.loads(task_id), None)
    return list(wanted.values())


#: How kombu's JSON names the task: ``"id": "<task id>"`` in its headers.
_TASK_ID = re.compile(rb'"id": ("(?:[^"\\]|\\.)*")')


def _messages(found: Broker, queues: Iterable[str]) -> Iterator[list[bytes]]:
    client = found.client
    for queue in queues:
        for key in found.queue_keys(queue):
            start = 0
            while True:
                chunk = t.cast("list[bytes]", client.lrange(key, start, start + 499))
                yield chunk
                if len(chunk) < 500:
                    break
                start += 500
    cursor: int | None = None
    while cursor != 0:
        cursor, values = t.cast(
            "tuple[int, dict[bytes, bytes]]",
            client.hscan(found.unacked, cursor or 0, count=500),
        )
        yield list(values.values())


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


class Reconciler(threading.Thread):
    """A worker's sweep for lost tasks, every ``interval`` seconds."""

    def __init__(self, app: Celery, visibility_timeout: float, interval: float):
        super().__init__(name="poststack-ledger", daemon=True)
        self.app = app
        self.visibility_timeout = visibility_timeout
        self.interval = interval
        self.stopping = threading.Event()

    def run(self) -> None:
        while not self.stopping.wait(self.interval):
            try:
                found = for_app(self.app)
                if found is None:
                    return
                reconcile(self.app, found, self.visibility_timeout)
            except Exception:  # a broker down now may be back at the next sweep
                log.warning("poststack: ledger sweep failed", exc_info=True)

    def stop(self) -> None:
        self.stopping.set()
