"""rq's success bookkeeping for several jobs in one transaction.

rq finishes each job on its own: a ``WATCH`` of the job's dependents set, a
read of it, then one ``MULTI``/``EXEC`` (status, result, registries, the
execution's removal), three round trips per job, and our ``save_meta`` a
fourth. The sender threads' jobs finish close together (a batch request
answers many at once), so :class:`Finisher` commits those that finish while
another commit is under way in one go (group commit):

- one ``WATCH`` of all their dependents sets and one ``EXISTS`` of them;
- then rq's own ``handle_job_success`` for each, its writes queued into one
  ``MULTI``/``EXEC`` (:class:`_InTransaction`), with each job's ``meta``;
- a job with dependents, a ``WatchError`` (a dependent added meanwhile), or
  an error while queueing sends every job of the group down rq's own path,
  in its own thread, as rq alone would run it. Jobs that repeat, have a rate
  limit, or keep no result (``result_ttl=0``) always take rq's own path.

An error from the ``EXEC`` itself (the connection) is raised in each job's
thread, as rq's own ``EXEC`` raises it.
"""

from __future__ import annotations

import threading
import typing as t

if t.TYPE_CHECKING:
    from rq.job import Job

__all__ = [
    "Finisher",
    "InGroup",
    "NoDependents",
    "defer_meta",
    "mark",
    "save_meta",
    "together",
]

#: On a job whose sender finishes it with a :class:`Finisher`.
_TOGETHER = "_poststack_finish_together"
#: On such a job whose ``meta`` waits to be written with its success.
_META_DUE = "_poststack_meta_due"


def together(job: Job, default_result_ttl: int) -> bool:
    """Whether ``job``'s success can be committed with others'."""
    return bool(
        getattr(job, _TOGETHER, False)
        and not getattr(job, "repeats_left", None)
        and not getattr(job, "has_rate_limit", False)
        and job.get_result_ttl(default_result_ttl) != 0
    )


def mark(job: Job) -> None:
    """Let ``job``'s ``meta`` wait for its success (:func:`defer_meta`)."""
    setattr(job, _TOGETHER, True)


def defer_meta(job: t.Any) -> bool:
    """Instead of ``job.save_meta()`` now, write it with the job's success;
    False when the job is not finished by a :class:`Finisher`."""
    if not getattr(job, _TOGETHER, False):
        return False
    setattr(job, _META_DUE, True)
    return True


def save_meta(job: t.Any, pipeline: t.Any = None) -> None:
    """Write ``job``'s deferred ``meta``: now, or queued in ``pipeline``
    (still due then: the group may take rq's own path after all)."""
    if not getattr(job, _META_DUE, False):
        return
    if pipeline is None:
        job.save_meta()
        setattr(job, _META_DUE, False)
        return
    serialize = getattr(job, "_serialize_meta", None)  # rq 3
    meta = serialize() if serialize else job.serializer.dumps(job.meta)
    pipeline.hset(job.key, "meta", meta)


class _Entry:
    def __init__(self, key: str, queue_writes: t.Callable[[t.Any], None]) -> None:
        self.key = key
        self.queue_writes = queue_writes
        #: None while waiting; then "done", "own" (rq's path) or "error".
        self.outcome: str | None = None
        self.error: BaseException | None = None


class Finisher:
    """Group commit of the sender threads' successful jobs."""

    def __init__(self, connection: t.Any) -> None:
        self._connection = connection
        self._lock = threading.Condition()
        self._waiting: list[_Entry] = []
        self._committing = False

    def finish(
        self,
        dependents_key: str,
        queue_writes: t.Callable[[t.Any], None],
        own_path: t.Callable[[], None],
    ) -> None:
        """Commit a job's success with the others finishing now:
        ``queue_writes(pipeline)`` queues its writes; ``own_path()`` is rq's
        own handling, run instead when the group cannot be committed."""
        entry = _Entry(dependents_key, queue_writes)
        with self._lock:
            self._waiting.append(entry)
            while entry.outcome is None and self._committing:
                self._lock.wait()
            group: list[_Entry] = []
            if entry.outcome is None:
                self._committing = True
                group, self._waiting = self._waiting, []
        if group:
            try:
                self._commit(group)
            finally:
                with self._lock:
                    self._committing = False
                    self._lock.notify_all()
        if entry.outcome == "own":
            own_path()
        elif entry.outcome == "error":
            assert entry.error is not None
            raise entry.error

    def _commit(self, group: list[_Entry]) -> None:
        import redis

        outcome, error = "done", None
        try:
            with self._connection.pipeline() as pipeline:
                keys = [entry.key for entry in group]
                pipeline.watch(*keys)
                if pipeline.exists(*keys):
                    outcome = "own"  # a dependent to enqueue: rq's own path
                else:
                    pipeline.multi()
                    try:
                        for entry in group:
                            entry.queue_writes(pipeline)
                    except Exception:
                        outcome = "own"
                    else:
                        pipeline.execute()
        except redis.WatchError:
            outcome = "own"
        except BaseException as exc:
            outcome, error = "error", exc
        with self._lock:
            for entry in group:
                entry.outcome, entry.error = outcome, error
            self._lock.notify_all()


class InTransaction:
    """The group's pipeline, already in ``MULTI``, as rq's
    ``handle_job_success`` uses its own: its ``WATCH``, ``MULTI`` and
    ``EXEC`` are the group's."""

    explicit_transaction = True
    watching = True

    def __init__(self, pipeline: t.Any) -> None:
        self._pipeline = pipeline

    def __enter__(self) -> InTransaction:
        return self

    def __exit__(self, *exc_info: object) -> None:
        return None

    def watch(self, *names: t.Any) -> None:
        return None

    def multi(self) -> None:
        return None

    def execute(self, *args: t.Any, **kwargs: t.Any) -> list[t.Any]:
        return []

    def __getattr__(self, name: str) -> t.Any:
        return getattr(self._pipeline, name)


class InGroup:
    """A connection whose ``pipeline()`` is the group's (:class:`InTransaction`)."""

    def __init__(self, connection: t.Any, pipeline: t.Any) -> None:
        self._connection = connection
        self._pipeline = InTransaction(pipeline)

    def pipeline(self, *args: t.Any, **kwargs: t.Any) -> InTransaction:
        return self._pipeline

    def __getattr__(self, name: str) -> t.Any:
        return getattr(self._connection, name)


class NoDependents:
    """A queue whose job has no dependents (the group's ``EXISTS`` said so)."""

    def __init__(self, queue: t.Any) -> None:
        self._queue = queue

    def move_dependents_to_ready(self, *args: t.Any, **kw: t.Any) -> dict[str, t.Any]:
        return {}  # rq 3

    def enqueue_dependents(self, *args: t.Any, **kwargs: t.Any) -> None:
        return None  # rq 2.x

    def enqueue_ready_jobs_by_queue(self, *args: t.Any, **kwargs: t.Any) -> None:
        return None

    def __getattr__(self, name: str) -> t.Any:
        return getattr(self._queue, name)
