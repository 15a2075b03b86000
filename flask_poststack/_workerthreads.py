"""rq's SimpleWorker with its jobs run in sender threads, when asked.

:class:`SenderThreadsWorker` is the base of
:class:`~flask_poststack.worker.PostStackWorker`. With a size above 1
(``POSTSTACK_WORKER_CONCURRENCY``) it hands each job to a
:class:`~flask_poststack._threadpool.SenderPool` thread instead of running
it in the main thread, and adjusts rq's main loop around that:

- a job is dequeued only once a sender thread is free (no prefetch);
- the main thread's own worker heartbeats (three round trips around every
  job) and its suspension check (one) are made at most once a second
  while jobs are in flight, and the
  worker stays ``busy`` while it dequeues the next; the pool's heartbeat
  thread keeps the worker and every job in flight alive meanwhile;
- a warm shutdown takes nothing new and teardown waits for the jobs in
  flight; a cold one (a second signal) leaves them in the started registry.

With a size of 1 everything is rq's ``SimpleWorker``.
"""

from __future__ import annotations

import copy
import time
import typing as t

from rq import SimpleWorker
from rq.exceptions import StopRequested
from rq.utils import now
from rq.worker import WorkerStatus

from . import _finishing
from ._taking import put_back
from ._taking import take
from ._threadpool import SenderPool
from .client import worker_slot
from .errors import ConfigurationError

if t.TYPE_CHECKING:
    from rq.job import Job
    from rq.queue import Queue

__all__ = ["SenderThreadsWorker"]

#: The most jobs taken in one round trip (one per free sender thread).
MAX_TAKE = 32


class SenderThreadsWorker(SimpleWorker):
    """A :class:`~rq.SimpleWorker` that can run its jobs in sender threads."""

    _pool: SenderPool | None = None
    _cold = False
    _suspension_checked = 0.0
    #: The job dequeued last and its execution, when started with others.
    _prepared: tuple[str, t.Any] | None = None
    #: Whether to take a job for each free sender (not under ``max_jobs``,
    #: which rq counts one dequeue at a time).
    _take_many = True
    #: A sender thread's copy: its jobs' successes committed together.
    _finisher: _finishing.Finisher | None = None

    @property
    def _log(self) -> t.Any:
        """rq's logger (``self.log`` is :class:`_StartLines` while dequeueing)."""
        log = self.log
        return log.wrapped if isinstance(log, _StartLines) else log

    def start_senders(self, size: int | None = None) -> None:
        """Run jobs in ``size`` sender threads (1: in the main thread);
        ``None``: ``POSTSTACK_WORKER_CONCURRENCY`` from the environment."""
        batch = True
        if size is None:
            try:
                settings = worker_slot().settings
                size, batch = settings.worker_concurrency, settings.worker_batch_sends
            except ConfigurationError:
                size = 1  # the first job fails naming the bad setting
        self._pool = SenderPool(self, size, batch_sends=batch) if size > 1 else None

    def work(self, *args: t.Any, **kwargs: t.Any) -> bool:
        """rq's work loop."""
        max_jobs = args[4] if len(args) > 4 else kwargs.get("max_jobs")
        self._take_many = max_jobs is None
        return bool(super().work(*args, **kwargs))

    def dequeue_job_and_maintain_ttl(
        self, timeout: int | None, max_idle_time: int | None = None
    ) -> tuple[Job, Queue] | None:
        """rq's; with sender threads, only once one of them is free, and a
        job for each other free one at the same time."""
        pool = self._pool
        if pool is None:
            return super().dequeue_job_and_maintain_ttl(timeout, max_idle_time)
        while pool.reserve(self._between_jobs):
            self.log = t.cast("t.Any", _StartLines(self._log))
            # A job ending during the dequeue may have queued a dependent
            # after the dequeue looked: burst looks again if one was running.
            running = pool.busy()
            try:
                result = super().dequeue_job_and_maintain_ttl(timeout, max_idle_time)
            finally:
                self.log = self._log
            if result is not None:
                pool.handing_off = True
                self._take_more(pool, *result)
                return result
            pool.unreserve()
            if timeout is not None or not running:
                return None
            pool.wait_for_one()  # burst: a job in flight may come back
        return None

    def _take_more(self, pool: SenderPool, job: Job, queue: Queue) -> None:
        """Take a job for each other free sender in one round trip, start
        them and ``job`` in one more, and hand the others to their senders
        (one queue only: rq's dequeue from several uses no intermediate list)."""
        version = self.get_redis_server_version()  # type: ignore[no-untyped-call]
        if not self._take_many or len(self.queues) != 1 or version < (6, 2, 0):
            return
        count = pool.reserve_more(MAX_TAKE - 1)
        jobs: list[Job] = []
        try:
            jobs = take(self, queue, count) if count else []
        except Exception:  # one job is enough; maintenance puts back the rest
            self.log.warning("Taking more jobs failed", exc_info=True)
        finally:
            pool.unreserve(keep=1 + len(jobs))
        if not jobs:
            return
        try:
            executions = pool.prepare([job, *jobs], queue)
        except Exception:
            back = put_back(self.connection, [(extra, queue) for extra in jobs])
            pool.unreserve(keep=1)
            self.log.warning("Worker %s: starting %d jobs failed; %d put back in"
                             " their queue", self.name, len(jobs), back,
                             exc_info=True)  # fmt: skip
            return
        self._prepared = (job.id, executions[0])
        for extra, execution in zip(jobs, executions[1:], strict=True):
            extra.redis_server_version = version
            if self.log_job_description:  # as rq's dequeue logs each job
                self.log.debug("Worker %s: %s: %s (%s)", self.name, queue.name,
                               extra.description, extra.id)  # fmt: skip
            else:
                self.log.debug("Worker %s: %s: %s", self.name, queue.name, extra.id)
            pool.submit(extra, queue, execution)

    def _between_jobs(self) -> None:
        if self.should_run_maintenance_tasks:
            self.run_maintenance_tasks()  # type: ignore[no-untyped-call]

    def execute_job(self, job: Job, queue: Queue) -> None:
        """rq's; with sender threads, hand ``job`` to the free one and return."""
        pool = self._pool
        if pool is None:
            super().execute_job(job, queue)
            return
        prepared, self._prepared = self._prepared, None
        execution = prepared[1] if prepared and prepared[0] == job.id else None
        try:
            pool.submit(job, queue, execution)
        finally:
            pool.handing_off = False

    def prepare_job_execution(
        self, job: Job, remove_from_intermediate_queue: bool = False
    ) -> None:
        """rq's; not again for a job started with others (:meth:`_take_more`)."""
        if self._pool is not None and self._pool.started_already(job):
            return
        super().prepare_job_execution(job, remove_from_intermediate_queue)

    def handle_job_success(
        self, job: Job, queue: Queue, *args: t.Any, **kwargs: t.Any
    ) -> None:
        """rq's; in a sender thread, in one transaction with the other jobs
        finishing now (:mod:`._finishing`), the job's ``meta`` with it."""
        finisher = self._finisher
        if finisher is None or not _finishing.together(job, self.default_result_ttl):
            _finishing.save_meta(job)
            super().handle_job_success(job, queue, *args, **kwargs)
            return

        def own_path() -> None:
            _finishing.save_meta(job)
            SimpleWorker.handle_job_success(self, job, queue, *args, **kwargs)

        def queue_writes(pipeline: t.Any) -> None:
            _finishing.save_meta(job, pipeline)
            worker: t.Any = copy.copy(self)
            worker.connection = _finishing.InGroup(self.connection, pipeline)
            queued: t.Any = _finishing.NoDependents(queue)
            SimpleWorker.handle_job_success(worker, job, queued, *args, **kwargs)

        finisher.finish(job.dependents_key, queue_writes, own_path)

    def handle_execution_ended(
        self, job: Job, queue: Queue, heartbeat_ttl: int
    ) -> None:
        """rq's, without its heartbeat round trip in a sender thread: the
        pool's heartbeat thread beats the job until its end is written."""
        if self._finisher is None:
            super().handle_execution_ended(job, queue, heartbeat_ttl)
            return
        job.ended_at = now()

    def handle_job_failure(
        self, job: Job, queue: Queue, *args: t.Any, **kwargs: t.Any
    ) -> None:
        """rq's, after writing a ``meta`` left for a success that did not come."""
        _finishing.save_meta(job)
        super().handle_job_failure(job, queue, *args, **kwargs)

    def cleanup_execution(self, job: Job, *args: t.Any, **kwargs: t.Any) -> None:
        """rq's; a sender's job stops beating first (before rq's transaction
        that takes it out of the started registry: no beat comes after it)."""
        if self._pool is not None:
            self._pool.forget(job)
        super().cleanup_execution(job, *args, **kwargs)

    def heartbeat(self, timeout: int | None = None, pipeline: t.Any = None) -> None:
        """rq's; with jobs in flight, the main thread's own at most once a
        second (the pool's heartbeat thread keeps the worker alive)."""
        pool, last = self._pool, getattr(self, "last_heartbeat", None)
        if (
            pool is not None
            and timeout is None
            and pipeline is None
            and last is not None
            and pool.busy()
            and (now() - last).total_seconds() < 1
        ):
            return
        super().heartbeat(timeout, pipeline)

    def check_for_suspension(self, burst: bool) -> None:
        """rq's; with jobs in flight, at most once a second (rq: a round trip
        before every job): ``rq suspend`` stops new jobs within a second."""
        pool, moment = self._pool, time.monotonic()
        if pool is not None and pool.busy() and moment - self._suspension_checked < 1:
            return
        self._suspension_checked = moment
        super().check_for_suspension(burst)

    def set_state(self, state: str, pipeline: t.Any = None) -> None:
        """rq's; a worker with jobs in flight stays busy while it dequeues."""
        pool = self._pool
        if (
            pool is not None
            and pipeline is None
            and state == WorkerStatus.IDLE
            and pool.busy()
        ):
            return
        super().set_state(state, pipeline)

    def _shutdown(self) -> None:
        """rq's warm shutdown; with sender threads: take nothing new, and let
        teardown wait for the jobs in flight."""
        pool = self._pool
        if pool is None:
            super()._shutdown()  # type: ignore[no-untyped-call]
            return
        self._stop_requested = True
        self.set_shutdown_requested_date()  # type: ignore[no-untyped-call]
        if self.scheduler:
            self.stop_scheduler()  # type: ignore[no-untyped-call]
        self.log.info("Worker %s: stopping once the sender threads' jobs in"
                      " flight end", self.name)  # fmt: skip
        if not pool.handing_off:
            raise StopRequested()

    def request_stop(self, signum: int, frame: t.Any) -> None:
        """rq's; its lines at their own level even while dequeueing."""
        log, self.log = self.log, self._log
        try:
            super().request_stop(signum, frame)  # type: ignore[no-untyped-call]
        finally:
            self.log = log

    def request_force_stop(self, signum: int, frame: t.Any) -> None:
        """rq's cold shutdown: jobs in flight stay in the started registry."""
        log, self.log = self.log, self._log
        try:
            super().request_force_stop(signum, frame)
        except SystemExit:
            self._cold = True
            raise
        finally:
            self.log = log

    def teardown(self) -> None:
        """Wait for the jobs in flight (not after a cold shutdown), then rq's."""
        try:
            self._stop_senders()
        finally:
            super().teardown()  # type: ignore[no-untyped-call]

    def _stop_senders(self) -> None:
        pool = self._pool
        if pool is None:
            return
        if self._cold:
            pool.stop()
            return
        try:
            pool.drain()
        except BaseException:  # a second signal: cold shutdown
            pool.stop()
            raise


class _StartLines:
    """rq's logger, with a job's start line at DEBUG: with sender threads,
    rq's line when it ends ("Successfully completed ...", or the failure)
    is each job's line at INFO, as a second one costs CPU per email."""

    def __init__(self, wrapped: t.Any) -> None:
        self.wrapped = wrapped

    def info(self, *args: t.Any, **kwargs: t.Any) -> None:
        self.wrapped.debug(*args, **kwargs)

    def __getattr__(self, name: str) -> t.Any:
        return getattr(self.wrapped, name)
