"""The recommended RQ worker class for Flask-PostStack jobs.

:class:`PostStackWorker` is rq's :class:`~rq.SimpleWorker` (jobs run in the
worker process, so the SDK client and its connections are reused from job to
job) with these changes, for the "never lost, not late" promise:

- While a job runs, a thread renews the job's heartbeat every
  ``POSTSTACK_HEARTBEAT_INTERVAL`` seconds (10) with a short TTL. A
  worker killed mid-send is then noticed within ``3 * heartbeat_interval``
  seconds, not after the job timeout plus 60 s as with ``SimpleWorker``.
  The thread is one per :meth:`~rq.worker.BaseWorker.work` call.
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
- A retry is written in one transaction (:class:`PostStackJob`).
- Jobs are always read and written as JSON
  (:class:`rq.serializers.JSONSerializer`), as ``enqueue_email`` writes
  them, whatever ``-S`` says: another serializer is replaced, with one
  warning. A job that is not JSON fails with a message saying so.
- Its ``--with-scheduler`` process stops (releasing the scheduler lock)
  within about a second of the worker's death (:mod:`._scheduler`).
- At start, one warning if ``POSTSTACK_API_KEY`` is missing from the
  worker's environment and sending is not suppressed
  (``POSTSTACK_SUPPRESS_SEND``): every send would fail.
- ``POSTSTACK_WORKER_CONCURRENCY`` above 1 runs that many jobs at once, in
  sender threads (:mod:`flask_poststack._workerthreads`).

Everything else (rq's heartbeats, state writes, suspension check and
success bookkeeping) is rq's own, per job; with sender threads the jobs'
successes are written together (:mod:`flask_poststack._finishing`).

Start it with::

    POSTSTACK_WORKER_CONCURRENCY=64 \\
    rq worker -w flask_poststack.worker.PostStackWorker \\
        -S rq.serializers.JSONSerializer --with-scheduler \\
        --maintenance-interval 30 --url "$POSTSTACK_REDIS_URL" poststack
"""

from __future__ import annotations

import copy
import inspect
import threading
import time
import typing as t
from datetime import timedelta

from rq import SimpleWorker
from rq.defaults import DEFAULT_LOGGING_DATE_FORMAT
from rq.defaults import DEFAULT_LOGGING_FORMAT
from rq.exceptions import DeserializationError
from rq.job import Job as RQJob
from rq.queue import Queue as RQQueue
from rq.registry import clean_registries
from rq.serializers import JSONSerializer
from rq.serializers import resolve_serializer
from rq.utils import now
from rq.worker import WorkerStatus
from rq.worker_registration import clean_worker_registry

from ._scheduler import start_scheduler
from ._taking import PUT_BACK
from ._workerthreads import SenderThreadsWorker
from .client import missing_key_warning
from .client import worker_slot

if t.TYPE_CHECKING:
    from rq.job import Job
    from rq.queue import Queue

__all__ = ["PostStackJob", "PostStackWorker"]

# rq 3 passes the job's Execution to perform_job and maintain_heartbeats;
# rq 2.x keeps it on the worker (self.execution) and takes no argument.
_PASS_EXECUTION = "execution" in inspect.signature(SimpleWorker.perform_job).parameters

SERIALIZER_PATH = "rq.serializers.JSONSerializer"

#: What a job that is not JSON fails with (after the job's id).
NOT_JSON = (
    "its data cannot be read as JSON. Flask-PostStack's jobs are JSON"
    " (enqueue_email and enqueue_batch write them with"
    f" {SERIALIZER_PATH}): run them with"
    " 'rq worker -w flask_poststack.worker.PostStackWorker', which always"
    f" reads JSON, or pass '-S {SERIALIZER_PATH}' to the rq worker; a job"
    f" enqueued by hand must be enqueued with serializer={SERIALIZER_PATH}."
)


class PostStackJob(RQJob):
    """rq's :class:`~rq.job.Job`, with a retry that cannot be half-done.

    rq's ``Job.retry()`` writes the ``scheduled`` status at once, outside the
    transaction that then puts the job in the scheduled registry and takes it
    out of the started one. A worker killed between the two leaves a job that
    is in no queue and no registry and is never run again: an email lost.
    Here the status goes into that same transaction.

    A job whose data its serializer cannot read fails with a
    :class:`~rq.exceptions.DeserializationError` that names the fix
    (``-S rq.serializers.JSONSerializer``, or :class:`PostStackWorker`).
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

    @property
    def func_name(self) -> str | None:
        """rq's; reading it first reads the job's data (rq does so before it
        runs the job), so a job whose data cannot be read fails naming the fix."""
        try:
            return t.cast("str | None", _RQ_FUNC_NAME.__get__(self))
        except DeserializationError as exc:
            raise DeserializationError(f"Job {self.id}: {NOT_JSON}") from exc

    @func_name.setter
    def func_name(self, value: str | None) -> None:
        _RQ_FUNC_NAME.__set__(self, value)


_RQ_FUNC_NAME: t.Any = vars(RQJob)["func_name"]


def _is_json(serializer: t.Any) -> bool:
    resolved = resolve_serializer(serializer)
    return isinstance(resolved, type) and issubclass(resolved, JSONSerializer)


class PostStackWorker(SenderThreadsWorker):
    """A :class:`~rq.SimpleWorker` that heartbeats while a job runs.

    Its jobs are :class:`PostStackJob`, unless ``--job-class`` names another
    class than rq's own. Its serializer is always
    :class:`rq.serializers.JSONSerializer` (or a subclass given as
    ``serializer=``); any other is replaced, with a warning.
    """

    #: How long a worker may hold a queue's cleaning lock if it dies while
    #: cleaning (rq's own: 899 s). Cleaning takes seconds at most.
    cleaning_lock_seconds = 60

    #: rq logs how long each result is kept, a second line per job.
    log_result_lifespan = False

    def __init__(
        self,
        queues: t.Any,
        *args: t.Any,
        serializer: t.Any = None,
        **kwargs: t.Any,
    ) -> None:
        given = serializer
        if given is None or not _is_json(given):
            serializer = JSONSerializer
        # rq's CLI builds the queues with -S's serializer before the worker.
        queues = [_json_queue(queue) for queue in _listed(queues)]
        kwargs["serializer"] = serializer
        super().__init__(queues, *args, **kwargs)
        if self.job_class is RQJob:  # rq's CLI passes its default explicitly
            self.job_class = PostStackJob
        if given is not None and serializer is not given:
            self.log.warning(
                "PostStackWorker reads and writes jobs as JSON: using %s instead"
                " of the serializer given (%s). Flask-PostStack's jobs are JSON;"
                " pass '-S %s' to say so.",
                SERIALIZER_PATH,
                given if isinstance(given, str) else getattr(given, "__name__", given),
                SERIALIZER_PATH,
            )
        self._warn_if_no_api_key()
        # The running job for the heartbeat thread: (job, execution, when
        # its next beat is due). The thread beats with the lock held, so
        # clearing it waits for a beat in progress: none comes after a job.
        self._beat_lock = threading.Condition()
        self._beating: tuple[Job, t.Any, float] | None = None
        self._beat_thread: threading.Thread | None = None
        self._beat_stop = False
        self.start_senders()  # POSTSTACK_WORKER_CONCURRENCY

    def _warn_if_no_api_key(self) -> None:
        # rq's log format has no level name: the line says it.
        if warning := missing_key_warning():
            self.log.warning(warning)

    def _start_scheduler(
        self,
        burst: bool = False,
        logging_level: t.Any = "INFO",
        date_format: str = DEFAULT_LOGGING_DATE_FORMAT,
        log_format: str = DEFAULT_LOGGING_FORMAT,
    ) -> None:
        """rq's, with a scheduler process that stops when this worker dies."""
        if burst:  # no scheduler process: rq's one pass, in this process
            super()._start_scheduler(burst, logging_level, date_format, log_format)
        else:
            start_scheduler(self, logging_level, date_format, log_format)

    @property
    def heartbeat_interval(self) -> int:
        """Seconds between heartbeats: ``POSTSTACK_HEARTBEAT_INTERVAL`` (10)."""
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
            if not self.connection.eval(PUT_BACK, len(keys), *keys, job_id):
                continue  # another worker got there first
            self.connection.delete(stranded.get_first_seen_key(job_id))
            self.log.warning("Job %s was dequeued by a worker that died before it"
                             " ran; putting it back", job_id)  # fmt: skip

    def execute_job(self, job: Job, queue: Queue) -> None:
        """Run ``job`` in this process, heartbeating from a thread meanwhile;
        with sender threads, hand it to a free one and return."""
        if self._pool is not None:
            super().execute_job(job, queue)
            return
        execution = self.prepare_execution(job)
        self._beat_for(job, execution)
        try:
            if _PASS_EXECUTION:
                self.perform_job(job, queue, execution)
            else:
                self.perform_job(job, queue)  # type: ignore[call-arg]
        finally:
            self._beat_for(None)
        self.set_state(WorkerStatus.IDLE)

    def cleanup_execution(self, job: Job, *args: t.Any, **kwargs: t.Any) -> None:
        """rq's. On rq 2.x, which forgets the worker's execution here, the
        job's heartbeat stops first: a beat after this would fail."""
        beating = self._beating
        if not _PASS_EXECUTION and beating is not None and beating[0].id == job.id:
            self._beat_for(None)
        super().cleanup_execution(job, *args, **kwargs)

    def teardown(self) -> None:
        """Stop the heartbeat thread, then the sender threads' and rq's teardown."""
        with self._beat_lock:
            self._beat_stop = True
            self._beat_lock.notify()
        thread, self._beat_thread = self._beat_thread, None
        if thread is not None:
            thread.join()
        self._beat_stop = False  # ready for another work() on this instance
        super().teardown()

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


def _listed(queues: t.Any) -> list[t.Any]:
    """rq's ``queues`` argument (a name, a Queue or a sequence) as a list."""
    if isinstance(queues, (str, RQQueue)):
        return [queues]
    return list(queues)


def _json_queue(queue: t.Any) -> t.Any:
    """``queue``, or a copy of it that reads and writes JSON (the caller's
    own Queue object is left as it was)."""
    if isinstance(queue, str) or _is_json(queue.serializer):
        return queue
    queue = copy.copy(queue)
    queue.serializer = JSONSerializer
    return queue
