"""The recommended RQ worker class for Flask-PostStack jobs.

:class:`PostStackWorker` is rq's :class:`~rq.SimpleWorker` (jobs run in the
worker process, so the SDK client and its connections are reused from job to
job) with two changes that keep the "never lost, not late" promise:

- While a job runs, a thread renews the job's heartbeat every
  ``POSTSTACK_HEARTBEAT_INTERVAL`` seconds (10) with a short TTL. A
  worker killed mid-send is then noticed within ``3 * heartbeat_interval``
  seconds, not after the job timeout plus 60 s as with ``SimpleWorker``.
- An idle worker wakes up at least every ``--maintenance-interval`` seconds,
  so abandoned jobs are put back promptly even when no new job arrives.
- A job that a worker took off the queue but died before starting (it is
  left in rq's intermediate queue, outside the started registry) is retried
  once it has been stranded for ``3 * heartbeat_interval`` seconds, not
  after rq's fixed minute plus two maintenance passes.
- Fewer Redis round trips per job: rq calls the worker's heartbeat several
  times per job, three commands each; here one is one round trip, and one
  that would change nothing (a few seconds after the last) is skipped.
- On rq 3, rq's bookkeeping overlaps the sends (:attr:`~PostStackWorker.prefetch`):
  while one email is with the API, a helper thread records the previous
  job's success and takes the next job off the queue and starts it. Still
  one email in flight per worker; the API's wait is no longer followed by
  rq's few milliseconds of Redis round trips.

Start it with::

    rq worker -w flask_poststack.worker.PostStackWorker \\
        -S rq.serializers.JSONSerializer --with-scheduler \\
        --maintenance-interval 30 --url "$POSTSTACK_REDIS_URL" poststack
"""

from __future__ import annotations

import inspect
import threading
import time
import typing as t
from concurrent.futures import Future
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

from rq import SimpleWorker
from rq.exceptions import NoSuchJobError
from rq.job import Job as RQJob
from rq.utils import now
from rq.worker import WorkerStatus

if t.TYPE_CHECKING:
    from rq.job import Job
    from rq.queue import Queue

    _Prefetched = tuple[Job, Queue, t.Any]  # the job, its queue, its Execution

__all__ = ["PostStackJob", "PostStackWorker"]

# rq 3 passes the job's Execution to perform_job and maintain_heartbeats;
# rq 2.x keeps it on the worker (self.execution) and takes no argument.
_PASS_EXECUTION = "execution" in inspect.signature(SimpleWorker.perform_job).parameters


class PostStackJob(RQJob):
    """rq's :class:`~rq.job.Job`, with a retry that cannot be half-done.

    rq's ``Job.retry()`` writes the ``scheduled`` status at once, outside the
    transaction that then puts the job in the scheduled registry and takes it
    out of the started one. A worker killed between the two leaves a job that
    is in no queue and no registry and is never run again: an email lost.
    Here the status goes into that same transaction.
    """

    _retry_pipeline: t.Any = None

    def retry(self, queue: Queue, pipeline: t.Any) -> None:
        """Retry the job, writing its new status in ``pipeline`` with the rest."""
        self._retry_pipeline = pipeline
        try:
            super().retry(queue, pipeline)
        finally:
            self._retry_pipeline = None

    def set_status(self, status: t.Any, pipeline: t.Any = None) -> None:
        """Set the status; inside :meth:`retry`, in the retry's transaction."""
        if pipeline is None:  # not "or": an empty Pipeline is falsy
            pipeline = self._retry_pipeline
        super().set_status(status, pipeline=pipeline)


class PostStackWorker(SimpleWorker):
    """A :class:`~rq.SimpleWorker` that heartbeats while a job runs.

    Its jobs are :class:`PostStackJob`, unless ``--job-class`` names another
    class than rq's own.
    """

    #: A plain heartbeat this many seconds after one that set the same TTL
    #: is skipped: the worker key's expiry moves by less than that.
    heartbeat_slack = 5.0

    #: Overlap rq's bookkeeping with the sends (rq 3 only; see the module
    #: docs). Set it to ``False`` in a subclass to run jobs strictly one
    #: after the other, as :class:`~rq.SimpleWorker` does.
    prefetch = True

    def __init__(self, *args: t.Any, **kwargs: t.Any) -> None:
        super().__init__(*args, **kwargs)
        if self.job_class is RQJob:  # rq's CLI passes its default explicitly
            self.job_class = PostStackJob
        # time.monotonic() until which the worker key surely lives: only
        # heartbeats this class executed itself count.
        self._alive_until = 0.0
        # Prefetching: one helper thread runs, in order, "finish job k" and
        # "dequeue and start job k+1" while the main thread sends.
        self._helper: ThreadPoolExecutor | None = None
        self._next: Future[_Prefetched | None] | None = None
        self._prefetched: _Prefetched | None = None
        self._started_early: Job | None = None
        # Set while the main thread runs a job: the helper's Redis work then
        # overlaps the API's wait instead of competing for the GIL between jobs.
        self._busy = threading.Event()
        self._jobs_left: int | None = None
        self._cold = False

    def heartbeat(self, timeout: int | None = None, pipeline: t.Any = None) -> None:
        """rq's heartbeat, in one round trip, and skipped when it would be a no-op."""
        until = time.monotonic() + (timeout or self.worker_ttl + 60)
        if pipeline is not None:
            # The caller executes it, maybe with a shorter TTL (a job's 30 s
            # while it runs): it can only lower what we know to be safe.
            self._alive_until = min(self._alive_until, until)
            super().heartbeat(timeout, pipeline=pipeline)
            return
        if timeout is None and self._alive_until >= until - self.heartbeat_slack:
            return
        with self.connection.pipeline(transaction=False) as pipe:
            super().heartbeat(timeout, pipeline=pipe)
            pipe.execute()
        self._alive_until = until

    def set_state(self, state: str, pipeline: t.Any = None) -> None:
        """rq's set_state, without the round trip when the state is unchanged."""
        if pipeline is None and state == getattr(self, "_state", None):
            return
        super().set_state(state, pipeline=pipeline)

    @property
    def heartbeat_interval(self) -> int:
        """Seconds between heartbeats: ``POSTSTACK_HEARTBEAT_INTERVAL`` (10)."""
        from .tasks import worker_settings

        return worker_settings().heartbeat_interval

    def get_heartbeat_ttl(self, job: Job, working_time: float = 0.0) -> int:
        """Three heartbeats: a dead worker's job is abandoned after that."""
        return 3 * self.heartbeat_interval

    @property
    def dequeue_timeout(self) -> int:
        """Wake an idle worker every ``--maintenance-interval`` seconds."""
        return max(1, min(self.worker_ttl - 15, int(self.maintenance_interval)))

    def clean_registries(self) -> None:
        """rq's clean-up, plus jobs stranded by a worker killed mid-dequeue."""
        super().clean_registries()  # type: ignore[no-untyped-call]
        for queue in self.queues:
            try:
                self._retry_stranded(queue)
            except Exception:  # maintenance must never stop the worker
                self.log.warning("Checking %s for stranded jobs failed", queue.name,
                                 exc_info=True)  # fmt: skip

    def _retry_stranded(self, queue: Queue) -> None:
        """Retry jobs dequeued by a worker that died before it started them."""
        stranded = queue.intermediate_queue
        limit = timedelta(seconds=3 * self.heartbeat_interval)
        for job_id in stranded.get_job_ids():
            if job_id in queue.started_job_registry:
                continue  # started: the abandoned-job check covers it
            if stranded.set_first_seen(job_id):
                continue  # seen for the first time now
            first_seen = stranded.get_first_seen(job_id)
            if first_seen is None or now() - first_seen <= limit:
                continue
            if not self.connection.lrem(stranded.key, 1, job_id):
                continue  # another worker got there first
            try:
                job = self.job_class.fetch(
                    job_id, connection=self.connection, serializer=self.serializer
                )
            except NoSuchJobError:
                continue
            self.log.warning("Job %s was dequeued by a worker that died; retrying",
                             job_id)  # fmt: skip
            self.handle_job_failure(
                job, queue, exc_string="Dequeued by a worker that died before it ran"
            )

    def work(self, *args: t.Any, **kwargs: t.Any) -> bool:
        """rq's work loop; remembers ``max_jobs`` so as not to prefetch past it."""
        self._jobs_left = kwargs.get("max_jobs")
        return bool(super().work(*args, **kwargs))

    def dequeue_job_and_maintain_ttl(
        self, timeout: int | None, max_idle_time: int | None = None
    ) -> tuple[Job, Queue] | None:
        """The job the helper already started, if any; else rq's dequeue."""
        # self._next is cleared only once the result is in: a stop request
        # raised meanwhile leaves it for teardown(), so the job is not lost.
        prefetched = self._next.result() if self._next is not None else None
        self._next = None
        if prefetched is not None:
            self.reorder_queues(reference_queue=prefetched[1])
            return prefetched[0], prefetched[1]
        return super().dequeue_job_and_maintain_ttl(timeout, max_idle_time)

    def execute_job(self, job: Job, queue: Queue) -> None:
        """Run ``job`` in this process, heartbeating from a thread meanwhile."""
        prefetched, self._prefetched = self._prefetched, None
        if prefetched is not None and prefetched[0] is job:
            execution = prefetched[2]
            self._started_early = job  # prepare_job_execution is done
        else:
            execution = self.prepare_execution(job)
        if self._jobs_left is not None:
            self._jobs_left -= 1
        if self._may_prefetch():
            self._next = self._run_in_helper(self._prefetch_next)
        done = threading.Event()
        beat = threading.Thread(
            target=self._beat, args=(job, execution, done), daemon=True
        )
        beat.start()
        self._busy.set()
        try:
            if _PASS_EXECUTION:
                self.perform_job(job, queue, execution)
            else:
                self.perform_job(job, queue)  # type: ignore[call-arg]
        finally:
            self._busy.clear()
            done.set()
            beat.join()
            self._started_early = None
        if self._next is None:
            self.set_state(WorkerStatus.IDLE)

    def prepare_job_execution(
        self, job: Job, remove_from_intermediate_queue: bool = False
    ) -> None:
        """rq's preparation, unless the helper already did it for this job."""
        if job is not self._started_early:
            super().prepare_job_execution(job, remove_from_intermediate_queue)

    def handle_job_success(self, *args: t.Any, **kwargs: t.Any) -> None:
        """Record the success in the helper thread, while the next job runs."""
        if self._helper is None:
            super().handle_job_success(*args, **kwargs)
        else:
            self._busy.clear()
            self._run_in_helper(self._when_busy, super().handle_job_success,
                                *args, **kwargs)  # fmt: skip

    def request_force_stop(self, signum: int, frame: t.Any) -> None:
        """Cold shutdown: a prefetched job is left for rq's abandoned-job check."""
        self._cold = True
        super().request_force_stop(signum, frame)

    def teardown(self) -> None:
        """Run the job the helper already started, finish the helper, then rq's."""
        pending, self._next = self._next, None
        prefetched = (
            pending.result() if pending is not None and not self._cold else None
        )
        if prefetched is not None:
            try:
                self.execute_job(prefetched[0], prefetched[1])  # started already
            except Exception:  # rq's abandoned-job check takes it from here
                self.log.exception("Running prefetched job %s failed", prefetched[0].id)
        if self._helper is not None:
            self._helper.shutdown(wait=not self._cold)
            self._helper = None
        super().teardown()  # type: ignore[no-untyped-call]

    def _may_prefetch(self) -> bool:
        return (
            self.prefetch
            and _PASS_EXECUTION
            and not self._stop_requested
            and not self._cold
            and (self._jobs_left is None or self._jobs_left > 0)
        )

    def _run_in_helper(
        self, fn: t.Callable[..., t.Any], *args: t.Any, **kwargs: t.Any
    ) -> Future[t.Any]:
        if self._helper is None:
            self._helper = ThreadPoolExecutor(1, thread_name_prefix="poststack-rq")
        return self._helper.submit(self._logged, fn, *args, **kwargs)

    def _logged(
        self, fn: t.Callable[..., t.Any], *args: t.Any, **kwargs: t.Any
    ) -> t.Any:
        try:
            return fn(*args, **kwargs)
        except Exception:
            # The job stays in the started registry; rq's abandoned-job check
            # retries it, and its idempotency key makes that a replay.
            self.log.exception("PostStackWorker helper: %s failed", fn.__name__)
            return None

    def _when_busy(
        self, fn: t.Callable[..., t.Any], *args: t.Any, **kwargs: t.Any
    ) -> None:
        # Wait (briefly: the queue may be empty) for the next job to start.
        self._busy.wait(0.05)
        fn(*args, **kwargs)

    def _prefetch_next(self) -> _Prefetched | None:
        """Take the next job off the queue (without waiting) and start it."""
        result = self.queue_class.dequeue_any(
            self._ordered_queues,
            None,
            connection=self.connection,
            job_class=self.job_class,
            serializer=self.serializer,
            death_penalty_class=self.death_penalty_class,
        )
        if result is None:
            return None
        job, queue = result
        what = job.description if self.log_job_description else job.id
        self.log.info("Worker %s: %s: %s (%s)", self.name, queue.name, what, job.id)
        execution = self.prepare_execution(job)
        super().prepare_job_execution(job, len(self.queues) == 1)
        self._prefetched = (job, queue, execution)
        return self._prefetched

    def _beat(self, job: Job, execution: t.Any, done: threading.Event) -> None:
        while not done.wait(self.heartbeat_interval):
            # A prefetched job waits for this one: keep it alive as well.
            held = [(job, execution)]
            if self._prefetched is not None:
                held.append((self._prefetched[0], self._prefetched[2]))
            for one_job, one_execution in held:
                try:
                    if _PASS_EXECUTION:
                        self.maintain_heartbeats(one_job, one_execution)
                    else:
                        self.maintain_heartbeats(one_job)  # type: ignore[call-arg]
                except Exception:  # a missed beat must never kill the job
                    self.log.warning("Heartbeat for job %s failed", one_job.id,
                                     exc_info=True)  # fmt: skip
