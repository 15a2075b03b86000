"""The recommended RQ worker class for Flask-PostStack jobs.

:class:`PostStackWorker` is rq's :class:`~rq.SimpleWorker` (jobs run in the
worker process, so the SDK client and its connections are reused from job to
job) with these changes, for the "never lost, not late" promise and for speed:

- While a job runs, a thread renews the job's heartbeat every
  ``POSTSTACK_HEARTBEAT_INTERVAL`` seconds (10) with a short TTL. A
  worker killed mid-send is then noticed within ``3 * heartbeat_interval``
  seconds, not after the job timeout plus 60 s as with ``SimpleWorker``.
- An idle worker wakes up at least every ``--maintenance-interval`` seconds,
  so abandoned jobs are put back promptly even when no new job arrives.
- A job that a worker took off the queue but died before starting (it is
  left in rq's intermediate queue, outside the started registry) goes back
  to the front of its queue once it has been stranded for
  ``3 * heartbeat_interval`` seconds, without using up a retry; rq fails
  it after a minute plus two maintenance passes.
- A queue's registry-cleaning lock is held for at most
  :attr:`~PostStackWorker.cleaning_lock_seconds` and always released (rq:
  899 s, released only when cleaning succeeds).
- Fewer Redis round trips per job: rq calls the worker's heartbeat several
  times per job, three commands each; here one is one round trip, and one
  that would change nothing (a few seconds after the last) is skipped. The
  idle state, the heartbeat and rq's suspension check after a job share one
  round trip. The heartbeat thread is one per :meth:`work` call, not one
  started and joined per job.
- On rq 3, a job's success is recorded in Redis by a helper thread while
  the next email is with the API (:attr:`~PostStackWorker.background_success`)
  instead of between the two sends. Still one email in flight per worker.

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
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

from rq import SimpleWorker
from rq.job import Job as RQJob
from rq.job import JobStatus
from rq.registry import clean_registries
from rq.suspension import WORKERS_SUSPENDED
from rq.utils import now
from rq.worker import WorkerStatus
from rq.worker_registration import clean_worker_registry

if t.TYPE_CHECKING:
    from rq.job import Job
    from rq.queue import Queue

__all__ = ["PostStackJob", "PostStackWorker"]

# rq 3 passes the job's Execution to perform_job and maintain_heartbeats;
# rq 2.x keeps it on the worker (self.execution) and takes no argument.
_PASS_EXECUTION = "execution" in inspect.signature(SimpleWorker.perform_job).parameters


# Move a job id from the intermediate list back to the front of its queue,
# only if it is still there: two workers cannot both put it back.
_PUT_BACK = """
if redis.call('LREM', KEYS[1], 1, ARGV[1]) == 1 then
    redis.call('LPUSH', KEYS[2], ARGV[1])
    return 1
end
return 0
"""


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

    #: How long a worker may hold a queue's cleaning lock if it dies while
    #: cleaning (rq's own: 899 s). Cleaning takes seconds at most.
    cleaning_lock_seconds = 60

    #: A plain heartbeat this many seconds after one that set the same TTL
    #: is skipped: the worker key's expiry moves by less than that.
    heartbeat_slack = 5.0

    #: Record each job's success from a helper thread, during the next
    #: job's send (rq 3 only). ``False`` in a subclass records it at once,
    #: as :class:`~rq.SimpleWorker` does.
    background_success = True

    #: Seconds a success waits for the next send to start before it is
    #: recorded anyway (the queue may be empty, the worker stopping).
    background_wait = 0.05

    #: rq logs how long each result is kept, a second line per job.
    log_result_lifespan = False

    def __init__(self, *args: t.Any, **kwargs: t.Any) -> None:
        super().__init__(*args, **kwargs)
        if self.job_class is RQJob:  # rq's CLI passes its default explicitly
            self.job_class = PostStackJob
        # time.monotonic() until which the worker key surely lives: only
        # heartbeats this class executed itself count.
        self._alive_until = 0.0
        self._helper: ThreadPoolExecutor | None = None
        # Set while the main thread runs a job: the helper's Redis round trips
        # then overlap the API's wait instead of delaying the next job.
        self._sending = threading.Event()
        # The running job for the heartbeat thread: (job, execution, when
        # its next beat is due). The thread beats with the lock held, so
        # clearing it waits for a beat in progress: none comes after a job.
        self._beat_lock = threading.Condition()
        self._beating: tuple[Job, t.Any, float] | None = None
        self._beat_thread: threading.Thread | None = None
        self._beat_stop = False
        # The end-of-job round trip also read rq's suspension flag.
        self._known_not_suspended = False

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
        from .client import worker_slot

        return worker_slot().settings.heartbeat_interval

    def get_heartbeat_ttl(self, job: Job, working_time: float = 0.0) -> int:
        """Three heartbeats: a dead worker's job is abandoned after that."""
        return 3 * self.heartbeat_interval

    @property
    def dequeue_timeout(self) -> int:
        """Wake an idle worker every ``--maintenance-interval`` seconds."""
        return max(1, min(self.worker_ttl - 15, int(self.maintenance_interval)))

    def clean_registries(self) -> None:
        """rq's clean-up, plus jobs stranded by a worker killed mid-dequeue.

        rq takes its per-queue cleaning lock for 899 s and releases it only
        when cleaning succeeds, so an error, or a worker killed while it
        cleans, would stop abandoned jobs from coming back for 15 minutes.
        Here the lock lasts :attr:`cleaning_lock_seconds` and is always
        released.
        """
        for queue in self.queues:
            key = queue.registry_cleaning_key
            if not self.connection.set(key, 1, nx=True, ex=self.cleaning_lock_seconds):
                continue  # another worker is cleaning this queue
            try:
                self.log.info("Worker %s: cleaning registries for queue: %s",
                              self.name, queue.name)  # fmt: skip
                clean_registries(queue, self._exc_handlers)
                clean_worker_registry(queue)
                # Ours first: rq's own pass would fail such a job (using up
                # a retry) once it has been stranded for a minute.
                self._put_back_stranded(queue)
                queue.intermediate_queue.cleanup(self, queue)
            except Exception:  # maintenance must never stop the worker
                self.log.warning("Cleaning the registries of %s failed", queue.name,
                                 exc_info=True)  # fmt: skip
            finally:
                self.connection.delete(key)
        self.last_cleaned_at = now()  # type: ignore[assignment]

    def _put_back_stranded(self, queue: Queue) -> None:
        """Put back jobs dequeued by a worker that died before it started them.

        Such a job never ran (rq takes it out of the intermediate queue in
        the transaction that starts it), so it goes back to the front of its
        queue as it was: no retry is used up and none is needed.
        """
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
            keys = [stranded.key, queue.key]
            if not self.connection.eval(_PUT_BACK, len(keys), *keys, job_id):
                continue  # another worker got there first
            self.connection.delete(stranded.get_first_seen_key(job_id))
            self.log.warning("Job %s was dequeued by a worker that died before it"
                             " ran; putting it back", job_id)  # fmt: skip

    def execute_job(self, job: Job, queue: Queue) -> None:
        """Run ``job`` in this process, heartbeating from a thread meanwhile."""
        execution = self.prepare_execution(job)
        self._beat_for(job, execution)
        try:
            if _PASS_EXECUTION:
                self.perform_job(job, queue, execution)
            else:
                self.perform_job(job, queue)  # type: ignore[call-arg]
        finally:
            self._sending.clear()
            self._beat_for(None)
        # Idle again, and alive, and is rq suspended: one round trip; rq's
        # own heartbeat and suspension check right after this are skipped.
        with self.connection.pipeline(transaction=False) as pipe:
            self.set_state(WorkerStatus.IDLE, pipeline=pipe)
            super().heartbeat(pipeline=pipe)
            pipe.exists(WORKERS_SUSPENDED)
            suspended = pipe.execute()[-1]
        self._alive_until = time.monotonic() + self.worker_ttl + 60
        self._known_not_suspended = not suspended

    def prepare_job_execution(self, job: Job, *args: t.Any, **kwargs: t.Any) -> None:
        """rq's: the job is started. Its send comes next, so a success
        waiting to be recorded (in the helper) may go now."""
        super().prepare_job_execution(job, *args, **kwargs)
        self._sending.set()

    def cleanup_execution(self, job: Job, *args: t.Any, **kwargs: t.Any) -> None:
        """rq's. On rq 2.x, which forgets the worker's execution here, the
        job's heartbeat stops first: a beat after this would fail."""
        beating = self._beating
        if not _PASS_EXECUTION and beating is not None and beating[0].id == job.id:
            self._beat_for(None)
        super().cleanup_execution(job, *args, **kwargs)

    def check_for_suspension(self, burst: bool) -> None:
        """rq's check, unless the end of the last job just read the flag."""
        if self._known_not_suspended:
            self._known_not_suspended = False
            return
        super().check_for_suspension(burst)

    def handle_execution_ended(
        self, job: Job, queue: Queue, heartbeat_ttl: int
    ) -> None:
        """Note the end time; after a success, the job's heartbeat goes with
        the success record (in the background), not in a round trip of its own."""
        if self._in_background() and job.get_status(refresh=False) != JobStatus.FAILED:
            job.ended_at = now()
        else:
            super().handle_execution_ended(job, queue, heartbeat_ttl)

    def handle_job_success(self, *args: t.Any, **kwargs: t.Any) -> None:
        """Record the success; on rq 3, from the helper, during the next send.

        The email is sent already: if the worker dies before this is written,
        the job runs again and the API answers with a replay.
        """
        if not self._in_background():
            super().handle_job_success(*args, **kwargs)
            return
        self._sending.clear()
        if self._helper is None:
            self._helper = ThreadPoolExecutor(1, thread_name_prefix="poststack-rq")
        self._helper.submit(self._record_success, *args, **kwargs)

    def _record_success(self, *args: t.Any, **kwargs: t.Any) -> None:
        self._sending.wait(self.background_wait)
        job: Job = kwargs["job"] if "job" in kwargs else args[0]
        try:
            job.heartbeat(now(), job.success_callback_timeout)
            super().handle_job_success(*args, **kwargs)
        except Exception:
            # The job stays started; rq's abandoned-job check runs it again
            # and the API replays it (same idempotency key).
            self.log.exception("Recording a job's success failed")

    def _in_background(self) -> bool:
        return self.background_success and _PASS_EXECUTION

    def teardown(self) -> None:
        """Wait for the last successes to be recorded, then rq's teardown."""
        if self._helper is not None:
            self._sending.set()  # no next send to wait for: record them now
            self._helper.shutdown(wait=True)
            self._helper = None
        with self._beat_lock:
            self._beat_stop = True
            self._beat_lock.notify()
        thread, self._beat_thread = self._beat_thread, None
        if thread is not None:
            thread.join()
        # Ready for another work() on this instance: a new thread, and rq's
        # suspension check at its start.
        self._beat_stop = False
        self._known_not_suspended = False
        super().teardown()  # type: ignore[no-untyped-call]

    def _beat_for(self, job: Job | None, execution: t.Any = None) -> None:
        """Heartbeat ``job`` from the heartbeat thread; ``None`` stops, and
        returns only once no beat for the last job is in progress."""
        with self._beat_lock:
            if job is None:
                self._beating = None
                return
            interval = self.heartbeat_interval
            self._beating = (job, execution, time.monotonic() + interval)
            if self._beat_thread is None:  # one thread until teardown
                self._beat_thread = threading.Thread(
                    target=self._beat_loop,
                    args=(interval,),
                    name="poststack-heartbeat",
                    daemon=True,
                )
                self._beat_thread.start()

    def _beat_loop(self, interval: float) -> None:
        with self._beat_lock:
            while not self._beat_stop:
                if self._beating is None:
                    # No notify on a new job: this wait ends before its
                    # first beat is due anyway.
                    self._beat_lock.wait(interval)
                    continue
                job, execution, due = self._beating
                left = due - time.monotonic()
                if left > 0:
                    self._beat_lock.wait(left)
                    continue
                self._beating = (job, execution, time.monotonic() + interval)
                try:
                    if _PASS_EXECUTION:
                        self.maintain_heartbeats(job, execution)
                    else:
                        self.maintain_heartbeats(job)  # type: ignore[call-arg]
                except Exception:  # a missed beat must never kill the job
                    self.log.warning("Heartbeat for job %s failed", job.id,
                                     exc_info=True)  # fmt: skip
