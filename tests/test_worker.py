"""PostStackWorker and PostStackJob, on the parts rq itself does not cover."""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
import typing as t
from pathlib import Path

import pytest
import redis
from rq import get_current_job
from rq import Queue
from rq import Retry
from rq.job import Job
from rq.job import JobStatus
from rq.serializers import JSONSerializer
from rq.suspension import resume
from rq.suspension import suspend

from flask_poststack.cli import worker_command
from flask_poststack.config import load_settings
from flask_poststack.config import Settings
from flask_poststack.worker import PostStackJob
from flask_poststack.worker import PostStackWorker


@pytest.fixture
def queue(redis_url: str) -> t.Iterator[Queue]:
    conn = redis.Redis.from_url(redis_url)
    yield Queue("poststack", connection=conn, serializer=JSONSerializer)
    conn.close()


def retry_then_die(job_class: type[Job], queue: Queue) -> JobStatus | None:
    """Start a retry with an interval in a transaction that never commits,
    as when the worker is SIGKILLed before rq executes its pipeline."""
    job = queue.enqueue("json.dumps", args=([1],), kwargs={}, retry=Retry(2, [5]))
    fetched = job_class.fetch(job.id, connection=queue.connection,
                              serializer=JSONSerializer)  # fmt: skip
    with queue.connection.pipeline() as pipeline:
        fetched.retry(queue, pipeline)
        pipeline.reset()  # killed: nothing in the transaction happens
    return Job.fetch(job.id, connection=queue.connection,
                     serializer=JSONSerializer).get_status()  # fmt: skip


def test_rq_job_marks_a_retry_scheduled_outside_the_transaction(queue: Queue) -> None:
    # The race PostStackJob closes: the status says "scheduled" although
    # the job was never put in the scheduled registry.
    assert retry_then_die(Job, queue) == JobStatus.SCHEDULED


def test_postStack_job_writes_nothing_if_the_retry_never_commits(queue: Queue) -> None:
    assert retry_then_die(PostStackJob, queue) == JobStatus.QUEUED


def test_postStack_job_retries_normally(queue: Queue) -> None:
    job = queue.enqueue("json.dumps", args=([1],), kwargs={}, retry=Retry(2, [5]))
    fetched = PostStackJob.fetch(job.id, connection=queue.connection,
                                 serializer=JSONSerializer)  # fmt: skip
    with queue.connection.pipeline() as pipeline:
        fetched.retry(queue, pipeline)
        pipeline.execute()
    fetched.refresh()
    assert fetched.get_status() == JobStatus.SCHEDULED
    assert job.id in queue.scheduled_job_registry.get_job_ids()
    assert fetched.retries_left == 1


def test_the_worker_uses_postStack_jobs_even_when_the_cli_names_rqs(
    queue: Queue,
) -> None:
    worker = PostStackWorker([queue], connection=queue.connection, job_class=Job)
    assert worker.job_class is PostStackJob
    assert (
        PostStackWorker([queue], connection=queue.connection).job_class is PostStackJob
    )

    class Custom(Job):
        pass

    custom = PostStackWorker([queue], connection=queue.connection, job_class=Custom)
    assert custom.job_class is Custom


# -- a worker's stop -----------------------------------------------------------


def stop_worker() -> None:
    """A job: ask its own worker for a warm shutdown, as SIGTERM does."""
    os.kill(os.getpid(), signal.SIGTERM)


def make_worker(queue: Queue, **kwargs: t.Any) -> PostStackWorker:
    kwargs.setdefault("serializer", JSONSerializer)
    return PostStackWorker([queue], connection=queue.connection, **kwargs)


def nothing_left_running(queue: Queue) -> None:
    assert queue.started_job_registry.get_job_ids() == []
    assert queue.connection.llen(queue.intermediate_queue_key) == 0


def test_a_warm_shutdown_records_the_success_and_takes_nothing_more(
    queue: Queue,
) -> None:
    first = queue.enqueue("tests.test_worker.stop_worker", kwargs={})
    later = [queue.enqueue("json.dumps", args=([n],), kwargs={}) for n in range(2)]
    make_worker(queue).work(burst=False)  # returns on the stop request
    statuses = [job.get_status(refresh=True) for job in [first, *later]]
    assert statuses == ["finished", "queued", "queued"]
    nothing_left_running(queue)


# -- heartbeats while a job runs; rq suspend between jobs -----------------------


_twice_beaten: dict[str, threading.Event] = {}


def until_beaten_twice() -> str:
    """A job that runs until its worker has heartbeaten it twice (or 10 s)."""
    job = get_current_job()
    assert job is not None
    _twice_beaten.setdefault(job.id, threading.Event()).wait(10)
    return "done"


class BeatRecorder(PostStackWorker):
    def __init__(self, *args: t.Any, **kwargs: t.Any) -> None:
        super().__init__(*args, **kwargs)
        self.beats: list[tuple[str, float, threading.Thread]] = []
        self.spans: dict[str, tuple[float, float]] = {}

    @property
    def heartbeat_interval(self) -> int:
        return 1

    def maintain_heartbeats(self, job: Job, *args: t.Any) -> None:
        super().maintain_heartbeats(job, *args)
        self.beats.append((job.id, time.monotonic(), threading.current_thread()))
        if sum(1 for beat in self.beats if beat[0] == job.id) >= 2:
            _twice_beaten.setdefault(job.id, threading.Event()).set()

    def execute_job(self, job: Job, queue: Queue) -> None:
        started = time.monotonic()
        super().execute_job(job, queue)
        self.spans[job.id] = (started, time.monotonic())


def test_one_thread_heartbeats_each_job_only_while_it_runs(queue: Queue) -> None:
    jobs = [queue.enqueue("tests.test_worker.until_beaten_twice", kwargs={})
            for _ in range(2)]  # fmt: skip
    worker = BeatRecorder([queue], connection=queue.connection,
                          serializer=JSONSerializer)  # fmt: skip
    worker.work(burst=True)
    for job in jobs:
        beats = [at for job_id, at, _ in worker.beats if job_id == job.id]
        started, ended = worker.spans[job.id]
        assert len(beats) >= 2, worker.beats
        assert all(started < at < ended for at in beats)
    assert len({thread for *_, thread in worker.beats}) == 1
    nothing_left_running(queue)


def test_a_worker_that_works_again_heartbeats_again(queue: Queue) -> None:
    worker = BeatRecorder([queue], connection=queue.connection,
                          serializer=JSONSerializer)  # fmt: skip
    for _ in range(2):
        job = queue.enqueue("tests.test_worker.until_beaten_twice", kwargs={})
        worker.work(burst=True)
        assert len([b for b in worker.beats if b[0] == job.id]) >= 2, worker.beats
    nothing_left_running(queue)


class LateBeatWorker(BeatRecorder):
    def cleanup_execution(self, job: Job, *args: t.Any, **kwargs: t.Any) -> None:
        super().cleanup_execution(job, *args, **kwargs)
        time.sleep(1.5)  # a beat is due meanwhile, if one is still planned


def test_no_beat_lands_after_rq_cleans_up_the_execution(
    queue: Queue, caplog: pytest.LogCaptureFixture
) -> None:
    # rq 2.x forgets the worker's execution in its cleanup, before the
    # job's end; a beat after that failed with a logged traceback.
    job = queue.enqueue("json.dumps", args=([1],), kwargs={})
    worker = LateBeatWorker([queue], connection=queue.connection,
                            serializer=JSONSerializer)  # fmt: skip
    worker.work(burst=True)
    assert job.get_status(refresh=True) == "finished"
    assert "Heartbeat for job" not in caplog.text
    nothing_left_running(queue)


def suspend_rq() -> None:
    """A job: ``rq suspend`` while it runs."""
    job = get_current_job()
    assert job is not None
    suspend(job.connection)


def test_a_suspension_during_a_job_stops_the_next_one(queue: Queue) -> None:
    first = queue.enqueue("tests.test_worker.suspend_rq", kwargs={})
    second = queue.enqueue("json.dumps", args=([1],), kwargs={})
    try:
        make_worker(queue).work(burst=True)  # burst: quits when suspended
        assert first.get_status(refresh=True) == "finished"
        assert second.get_status(refresh=True) == "queued"
    finally:
        resume(queue.connection)
    make_worker(queue).work(burst=True)
    assert second.get_status(refresh=True) == "finished"


def test_a_worker_that_works_again_checks_for_a_suspension_first(
    queue: Queue,
) -> None:
    worker = make_worker(queue)
    queue.enqueue("json.dumps", args=([1],), kwargs={})
    worker.work(burst=True, max_jobs=1)
    later = queue.enqueue("json.dumps", args=([2],), kwargs={})
    suspend(queue.connection)
    try:
        worker.work(burst=True)
        assert later.get_status(refresh=True) == "queued"
    finally:
        resume(queue.connection)


# -- the registry cleaning lock -------------------------------------------------


def test_the_cleaning_lock_is_short_and_always_released(
    queue: Queue, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from flask_poststack import worker as worker_module

    key = queue.registry_cleaning_key
    seen: list[int] = []

    def failing_clean(q: Queue, handlers: t.Any = None) -> None:
        seen.append(queue.connection.ttl(key))
        raise redis.ConnectionError("Redis went away mid-clean")

    monkeypatch.setattr(worker_module, "clean_registries", failing_clean)
    make_worker(queue).clean_registries()
    # Held for at most a minute (rq: 899 s), and released despite the error,
    # so the next maintenance pass of any worker cleans again.
    assert seen and 0 < seen[0] <= PostStackWorker.cleaning_lock_seconds <= 60
    assert not queue.connection.exists(key)
    assert "Cleaning the registries of poststack failed" in caplog.text


def test_a_queue_another_worker_is_cleaning_is_left_alone(
    queue: Queue, monkeypatch: pytest.MonkeyPatch
) -> None:
    from flask_poststack import worker as worker_module

    calls: list[Queue] = []
    monkeypatch.setattr(worker_module, "clean_registries",
                        lambda q, handlers=None: calls.append(q))  # fmt: skip
    queue.connection.set(queue.registry_cleaning_key, 1, ex=30)
    make_worker(queue).clean_registries()
    assert calls == []
    assert queue.connection.exists(queue.registry_cleaning_key)
    queue.connection.delete(queue.registry_cleaning_key)
    make_worker(queue).clean_registries()
    assert calls == [queue] or [c.name for c in calls] == ["poststack"]


# -- jobs stranded between dequeue and start -----------------------------------


def test_a_job_that_never_started_goes_back_without_using_a_retry(
    queue: Queue,
) -> None:
    # No retries at all: failing it, as rq's own clean-up does, would lose it.
    job = queue.enqueue("json.dumps", args=([1],), kwargs={})
    other = queue.enqueue("json.dumps", args=([2],), kwargs={})
    conn = queue.connection
    stranded = queue.intermediate_queue
    # A worker took the job (BLMOVE) and died before starting it.
    assert conn.lmove(queue.key, stranded.key) == job.id.encode()
    worker = make_worker(queue)
    worker.clean_registries()  # first seen now: left alone
    assert stranded.get_job_ids() == [job.id]
    conn.set(stranded.get_first_seen_key(job.id), time.time() - 3600)
    worker.clean_registries()
    worker.clean_registries()  # twice: still put back once
    assert stranded.get_job_ids() == []
    assert queue.job_ids == [job.id, other.id]  # at the front, as it was
    assert job.get_status(refresh=True) == "queued"
    assert not conn.exists(stranded.get_first_seen_key(job.id))
    make_worker(queue).work(burst=True)
    assert job.get_status(refresh=True) == other.get_status(refresh=True) == "finished"
    assert len(job.results()) == 1


# -- JSON only, whatever -S says; the API key in the worker's environment -------


def test_another_serializer_is_replaced_by_json_with_one_warning(
    queue: Queue, caplog: pytest.LogCaptureFixture
) -> None:
    pickled = Queue("poststack", connection=queue.connection)  # rq's default
    job = queue.enqueue("json.dumps", args=([1],), kwargs={})
    caplog.set_level("WARNING")
    worker = PostStackWorker([pickled], connection=queue.connection,
                             serializer="rq.serializers.DefaultSerializer")  # fmt: skip
    warnings = [r for r in caplog.records if "reads and writes jobs as JSON" in
                r.getMessage()]  # fmt: skip
    assert len(warnings) == 1
    assert warnings[0].levelname == "WARNING"
    assert "-S rq.serializers.JSONSerializer" in warnings[0].getMessage()
    assert worker.serializer is JSONSerializer
    assert all(q.serializer is JSONSerializer for q in worker.queues)
    assert pickled.serializer is not JSONSerializer  # the caller's, untouched
    worker.work(burst=True)
    assert job.get_status(refresh=True) == "finished"
    assert job.return_value() == "[1]"


@pytest.mark.parametrize(
    "serializer", [None, JSONSerializer, "rq.serializers.JSONSerializer"]
)
def test_json_or_nothing_given_warns_about_nothing(
    queue: Queue, caplog: pytest.LogCaptureFixture, serializer: t.Any
) -> None:
    caplog.set_level("WARNING")
    worker = PostStackWorker([queue], connection=queue.connection,
                             serializer=serializer)  # fmt: skip
    assert "reads and writes jobs as JSON" not in caplog.text
    assert worker.serializer is JSONSerializer


def test_a_job_that_is_not_json_fails_naming_the_fix(queue: Queue) -> None:
    # Enqueued with rq's default (pickle), as a hand-written enqueue would be.
    job = Queue("poststack", connection=queue.connection).enqueue(
        "json.dumps", args=([1],), kwargs={}
    )
    make_worker(queue).work(burst=True)
    failed = Job.fetch(job.id, connection=queue.connection, serializer=JSONSerializer)
    assert failed.get_status() == "failed"
    result = failed.latest_result()
    assert result is not None and result.exc_string is not None
    assert "-S rq.serializers.JSONSerializer" in result.exc_string
    assert "flask_poststack.worker.PostStackWorker" in result.exc_string
    nothing_left_running(queue)


def run_worker_process(
    redis_url: str, tmp_path: Path, serializer: str | None, env: dict[str, str]
) -> str:
    """``rq worker --burst`` of PostStackWorker in a subprocess; its log."""
    argv = worker_command(environ_settings_for(redis_url), burst=True,
                          maintenance_interval=1)  # fmt: skip
    at = argv.index("--serializer")
    if serializer is None:
        del argv[at : at + 2]
    else:
        argv[at + 1] = serializer
    environ = {k: os.environ[k] for k in ("PATH", "HOME", "LANG") if k in os.environ}
    environ.update(env)
    log = tmp_path / "worker.log"
    with open(log, "wb") as out:
        proc = subprocess.run(argv, env=environ, stdout=out,
                              stderr=subprocess.STDOUT, timeout=60)  # fmt: skip
    text = log.read_text(errors="replace")
    assert proc.returncode == 0, text
    return text


def environ_settings_for(redis_url: str) -> Settings:
    return load_settings({"POSTSTACK_REDIS_URL": redis_url})


def warning_lines(log: str, needle: str) -> list[str]:
    return [line for line in log.splitlines() if needle in line]


@pytest.mark.parametrize(("env", "warned"), [
    ({}, True),
    ({"POSTSTACK_SUPPRESS_SEND": "1"}, False),
    ({"POSTSTACK_API_KEY": "sk_test_0123456789abcdef"}, False),
], ids=["no key", "suppressed", "key set"])  # fmt: skip
def test_a_worker_process_warns_once_without_the_api_key(
    queue: Queue,
    redis_url: str,
    tmp_path: Path,
    env: dict[str, str],
    warned: bool,
) -> None:
    job = queue.enqueue("json.dumps", args=([1],), kwargs={})
    log = run_worker_process(redis_url, tmp_path, "rq.serializers.JSONSerializer", env)
    lines = warning_lines(log, "POSTSTACK_API_KEY")
    if warned:
        assert len(lines) == 1, log
        assert "WARNING" in lines[0] and "worker's environment" in lines[0]
    else:
        assert lines == [], log
    assert job.get_status(refresh=True) == "finished"


def test_a_worker_process_without_s_reads_json_and_says_so_once(
    queue: Queue, redis_url: str, tmp_path: Path
) -> None:
    # No -S: rq's CLI passes its pickle default, which would fail every job.
    job = queue.enqueue("json.dumps", args=([1],), kwargs={})
    log = run_worker_process(redis_url, tmp_path, None,
                             {"POSTSTACK_SUPPRESS_SEND": "1"})  # fmt: skip
    lines = warning_lines(log, "reads and writes jobs as JSON")
    assert len(lines) == 1, log
    assert "rq.serializers.DefaultSerializer" in lines[0]
    assert job.get_status(refresh=True) == "finished"
    assert job.return_value() == "[1]"
