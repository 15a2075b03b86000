"""Many jobs in flight in one worker process: sender threads for PostStackWorker.

With ``POSTSTACK_WORKER_CONCURRENCY`` above 1, :class:`SenderPool` runs that
many sender threads, each with a *lane*: a shallow copy of the worker, so
that rq's per-job code (``perform_job`` and the success, retry and failure
handling it calls, which rq 2.x keeps on ``worker.execution``) runs unchanged,
one job per lane, on rq's own queues, registries and job hashes.

The promises, and how they are kept:

- A job is taken off the queue only when a lane is free
  (:meth:`SenderPool.reserve`): no prefetch.
- The main thread moves it into the started registry (rq's
  ``prepare_execution``) before handing it to the lane's thread; one thread
  renews every in-flight job's heartbeat, and the worker's, in one pipeline.
  A job whose heartbeat lapses (a killed worker) is retried by rq's
  abandoned-job clean-up, as for one job at a time.
- A lane's job stops beating (:meth:`SenderPool.forget`, from the worker's
  ``cleanup_execution``) before rq's transaction that removes it from the
  started registry: no beat can put it back.
- A job's timeout is enforced without ``SIGALRM`` (which only the main
  thread can receive): the SDK's own timeout bounds each request, and
  the heartbeat thread raises :class:`SendTimeout` in a sender thread whose
  job outlived its timeout, as rq's ``TimerDeathPenalty`` does, but with no
  thread per job.
- Warm shutdown (:meth:`SenderPool.drain`): nothing new is taken, what is in
  flight finishes. Cold shutdown: the process exits with its jobs in the
  started registry, to be retried once their heartbeats lapse.
"""

from __future__ import annotations

import copy
import ctypes
import inspect
import os
import queue as queue_module
import threading
import time
import typing as t

from rq.timeouts import JobTimeoutException
from rq.utils import now

from . import _coalesce
from . import _finishing
from ._taking import start

if t.TYPE_CHECKING:
    from rq.job import Job
    from rq.queue import Queue

__all__ = ["SendTimeout", "SenderPool"]

#: How often the main thread, waiting for a free lane, wakes up to run the
#: worker's maintenance and see a stop request.
_WAIT_STEP = 1.0


def _takes_execution(worker: t.Any) -> bool:
    # rq 3 passes the Execution to perform_job; rq 2.x keeps it on the worker.
    return "execution" in inspect.signature(worker.perform_job).parameters


#: glibc's mallopt() parameter for the most malloc arenas.
_M_ARENA_MAX = -8


def _fewer_malloc_arenas() -> None:
    """At most two malloc arenas (glibc gives each busy thread its own, up to
    8 per core): about 2 MB less peak RSS with 64 senders, no CPU cost.
    ``MALLOC_ARENA_MAX`` in the environment wins."""
    if "MALLOC_ARENA_MAX" in os.environ:
        return
    mallopt = getattr(ctypes.CDLL(None), "mallopt", None)
    if mallopt is not None:
        mallopt(_M_ARENA_MAX, 2)


def _send_slots(senders: int) -> int:
    """How many send requests the sender threads keep in flight at most."""
    return max(1, -(-senders // 2))


class SendTimeout(JobTimeoutException):
    """A job ran longer than its timeout in a sender thread."""

    def __init__(self, *args: t.Any) -> None:
        super().__init__(*(args or ("The job ran longer than its timeout",)))


class _Lane:
    """One sender thread and the worker copy its jobs run on."""

    def __init__(self, pool: SenderPool, number: int) -> None:
        self.worker: t.Any = copy.copy(pool.worker)
        self.worker.death_penalty_class = pool.penalty
        self.worker._finisher = pool.finisher
        self.inbox: queue_module.SimpleQueue[tuple[Job, Queue, t.Any] | None] = (
            queue_module.SimpleQueue()
        )
        self.thread = threading.Thread(
            target=pool._run_lane,
            args=(self,),
            name=f"poststack-sender-{number}",
            daemon=True,  # a cold shutdown must not wait for them
        )


class _Penalty:
    """The death penalty rq's ``perform_job`` enters around a job, for a
    sender thread: registered with the pool's heartbeat thread."""

    def __init__(self, pool: SenderPool, timeout: float, *args: t.Any, **kw: t.Any):
        self._pool = pool
        self._timeout = timeout
        self._entry: object | None = None

    def __enter__(self) -> _Penalty:
        if self._timeout and self._timeout > 0:
            self._entry = self._pool._arm(self._timeout)
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._entry is not None:
            self._pool._disarm(self._entry)


class SenderPool:
    """``size`` sender threads for ``worker`` (a :class:`PostStackWorker`);
    with ``batch_sends``, their sends are coalesced (:mod:`._coalesce`)."""

    def __init__(self, worker: t.Any, size: int, *, batch_sends: bool = True) -> None:
        self.worker = worker
        self.size = size
        self._lock = threading.Condition()
        #: job id -> (job, execution) of every job in the started registry
        #: that this process is running.
        self._flights: dict[str, tuple[Job, t.Any]] = {}
        #: Timeouts: thread ident -> (deadline, token) of its running job.
        self._deadlines: dict[int, tuple[float, object]] = {}
        #: When the heartbeat thread wakes next (monotonic).
        self._wake_at = 0.0
        self._free: queue_module.Queue[_Lane] = queue_module.Queue()
        self._lanes: list[_Lane] = []
        #: Free lanes kept for the jobs being dequeued, one each.
        self._reserved: list[_Lane] = []
        self._beat_thread: threading.Thread | None = None
        self._stopping = False
        self._pass_execution = _takes_execution(worker)
        #: Jobs whose prepare_job_execution :meth:`prepare` made.
        self._started: set[str] = set()
        #: Commits the lanes' successful jobs together.
        self.finisher = _finishing.Finisher(worker.connection)
        self._coalescer = (
            _coalesce.Coalescer(_send_slots(size)) if batch_sends else None
        )
        #: True from a job's dequeue until its lane has it: a stop request
        #: then waits instead of interrupting the main thread.
        self.handing_off = False

    # -- the main thread ------------------------------------------------------

    def start(self) -> None:
        """Start the sender threads and the heartbeat thread (once)."""
        if self._lanes:
            return
        self._stopping = False
        _fewer_malloc_arenas()
        for number in range(self.size):
            lane = _Lane(self, number)
            self._lanes.append(lane)
            lane.thread.start()
            self._free.put(lane)
        self._beat_thread = threading.Thread(
            target=self._beat_loop, name="poststack-heartbeat", daemon=True
        )
        self._beat_thread.start()

    def penalty(self, timeout: float, *args: t.Any, **kwargs: t.Any) -> _Penalty:
        """rq's ``death_penalty_class`` for a lane."""
        return _Penalty(self, timeout)

    def reserve(self, between: t.Callable[[], None]) -> bool:
        """Wait for a free lane and keep it for the next job; ``between`` runs
        while waiting (maintenance). False when the worker is stopping."""
        self.start()
        while not self._reserved:
            if self.worker._stop_requested:
                return False
            try:
                self._reserved.append(self._free.get(timeout=_WAIT_STEP))
            except queue_module.Empty:
                between()
        return True

    def reserve_more(self, limit: int) -> int:
        """Keep up to ``limit`` more free lanes, without waiting; how many."""
        kept = 0
        while kept < limit:
            try:
                self._reserved.append(self._free.get_nowait())
            except queue_module.Empty:
                break
            kept += 1
        return kept

    def unreserve(self, keep: int = 0) -> None:
        """Give back the kept lanes beyond ``keep``: no job came for them."""
        while len(self._reserved) > keep:
            self._free.put(self._reserved.pop())

    def busy(self) -> bool:
        """Whether any lane is running a job."""
        return self._free.qsize() + len(self._reserved) < len(self._lanes)

    def wait_for_one(self) -> None:
        """Wait until a running job ends (or a step passes)."""
        with self._lock:
            if self.busy():
                self._lock.wait(_WAIT_STEP)

    def prepare(self, jobs: list[Job], queue: Queue) -> list[t.Any]:
        """Start ``jobs`` in one round trip (:func:`._taking.start`); their
        executions."""
        executions, done = start(self.worker, jobs, queue)
        with self._lock:
            self._started |= done
        return executions

    def started_already(self, job: Job) -> bool:
        """Whether :meth:`prepare` did rq's ``prepare_job_execution`` for
        ``job`` (asked once, by its sender)."""
        with self._lock:
            if job.id not in self._started:
                return False
            self._started.discard(job.id)
            return True

    def submit(self, job: Job, queue: Queue, execution: t.Any = None) -> None:
        """Hand ``job`` to a kept lane, moving it into the started registry
        first unless :meth:`prepare` did (``execution``)."""
        assert self._reserved, "submit() without reserve()"
        lane = self._reserved.pop()
        if execution is None:
            try:
                execution = lane.worker.prepare_execution(job)
            except BaseException:
                self._free.put(lane)
                raise
        with self._lock:
            self._flights[job.id] = (job, execution)
        if self._coalescer is not None:
            self._coalescer.expect()
        lane.inbox.put((job, queue, execution))

    def drain(self) -> None:
        """Warm shutdown: wait for every running job to end, stop the threads."""
        with self._lock:
            while self.busy():
                self._lock.wait(_WAIT_STEP)
        self.stop()

    def stop(self) -> None:
        """Stop the threads; jobs still running stay in the started registry."""
        with self._lock:
            self._stopping = True
            self._lock.notify_all()
        for lane in self._lanes:
            lane.inbox.put(None)
        beat, self._beat_thread = self._beat_thread, None
        if beat is not None:
            beat.join()
        self._lanes = []
        self._free = queue_module.Queue()
        self._reserved = []

    # -- the sender threads ---------------------------------------------------

    def _run_lane(self, lane: _Lane) -> None:
        worker, coalescer = lane.worker, self._coalescer
        _coalesce.use(coalescer)
        while True:
            item = lane.inbox.get()
            if item is None:
                return
            job, queue, execution = item
            _finishing.mark(job)
            if coalescer is not None:
                coalescer.begin()
            try:
                if self._pass_execution:
                    worker.perform_job(job, queue, execution)
                else:
                    worker.execution = execution
                    worker.perform_job(job, queue)
            except Exception:  # rq's perform_job handles its own; never die
                worker.log.exception("Sender thread failed on job %s", job.id)
            finally:
                if coalescer is not None:
                    coalescer.end()
                self.forget(job)
                if not self._pass_execution:
                    worker.execution = None
                with self._lock:
                    self._free.put(lane)
                    self._lock.notify_all()

    def forget(self, job: Job) -> None:
        """Stop heartbeating ``job``; returns once no beat of it is under way."""
        with self._lock:
            self._flights.pop(job.id, None)

    # -- timeouts -------------------------------------------------------------

    def _arm(self, timeout: float) -> object:
        token = object()
        deadline = time.monotonic() + timeout
        with self._lock:
            self._deadlines[threading.get_ident()] = (deadline, token)
            if deadline < self._wake_at:
                self._lock.notify_all()
        return token

    def _disarm(self, token: object) -> None:
        with self._lock:
            ident = threading.get_ident()
            entry = self._deadlines.get(ident)
            if entry is not None and entry[1] is token:
                del self._deadlines[ident]

    def _fire_due(self) -> None:
        """Raise SendTimeout in each thread whose job is past its deadline
        (with the lock held: a disarmed deadline never fires)."""
        moment = time.monotonic()
        for ident, (deadline, _) in list(self._deadlines.items()):
            if deadline <= moment:
                del self._deadlines[ident]
                ctypes.pythonapi.PyThreadState_SetAsyncExc(
                    ctypes.c_ulong(ident), ctypes.py_object(SendTimeout)
                )

    # -- heartbeats -----------------------------------------------------------

    def _beat_loop(self) -> None:
        worker = self.worker
        interval = float(worker.heartbeat_interval)
        due = time.monotonic() + interval
        with self._lock:
            while not self._stopping:
                self._fire_due()
                wake = min([due, *(d for d, _ in self._deadlines.values())])
                left = wake - time.monotonic()
                if left > 0:
                    self._wake_at = wake
                    self._lock.wait(left)
                    continue
                if time.monotonic() < due:
                    continue
                due = time.monotonic() + interval
                if not self._flights:
                    continue
                try:
                    self._beat(list(self._flights.values()))
                except Exception:  # a missed beat must never stop the jobs
                    worker.log.warning("Heartbeat of the jobs in flight failed",
                                       exc_info=True)  # fmt: skip

    def _beat(self, flights: list[tuple[Job, t.Any]]) -> None:
        """One pipeline: the worker's heartbeat, and every job's and
        execution's (rq's ``maintain_heartbeats``, for all at once)."""
        worker = self.worker
        stamp = now()
        with worker.connection.pipeline() as pipeline:
            worker.heartbeat(worker.job_monitoring_interval + 60, pipeline=pipeline)
            for job, execution in flights:
                ttl = int(worker.get_heartbeat_ttl(job))
                execution.heartbeat(job.started_job_registry, ttl, pipeline=pipeline)
                job.heartbeat(stamp, ttl, pipeline=pipeline, xx=True)
            pipeline.execute()
