"""Soak: thousands of emails through faults and SIGKILLed workers, exactly once.

A real ``redis-server`` (``appendonly yes``, ``appendfsync everysec``), two
``PostStackWorker`` processes started with the documented ``rq worker``
command, and the sandbox (in this process) as the API, answering
``POST /emails`` with 20% 5xx, 10% throttling 429s (``Retry-After`` 0 or 1)
and 5% connection resets after the email is stored; 2% of the addresses are
suppressed, which the API refuses with a permanent 422. The emails are queued
with ``enqueue_many`` and ``enqueue_email`` from a Flask app context while
the workers drain, and every few seconds the harness SIGKILLs a worker and
starts a new one.

At the end it checks, from the sandbox and from rq's own records in Redis,
that every email that should be delivered was stored exactly once (by its
idempotency key), that every 422 failed at once (one 422 answer, no retry),
that nothing is left and nothing was lost or duplicated, and that the API key
appears in no Redis key or value, no job, no exception text and no worker log
line. It prints the figures and writes ``benchmarks/results/soak.json``.

The run is bounded: if the queue is not drained within ``--seconds`` it stops,
reports what is left and exits with status 1 (as it does when any check fails).

    python benchmarks/soak.py [--seconds 120] [--emails 5000] [--kill-every 3]

Time is compressed so that a kill's consequences play out within the run:
``POSTSTACK_HEARTBEAT_INTERVAL=1`` and ``--maintenance-interval 2`` (production:
10 and 30, which bring an abandoned job back within a minute), ten RQ
retries 1 to 8 s apart (production: five, 10 s to 5 min apart), and no SDK
retries (``POSTSTACK_MAX_RETRIES=0``; production: 3), so that every fault
goes through rq's retries and the scheduler instead of blocking a worker in
the SDK's backoff: the harder path for "never twice", since the retry is a
new run of the job, often on another worker.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import datetime
import os
import sys
import tempfile
import threading
import time
import typing as t
from pathlib import Path

import _harness
from _harness import API_KEY
from _harness import current_jobs_of
from _harness import dump_redis
from _harness import failure_lines
from _harness import make_app
from _harness import registry_counts
from _harness import rq_queue
from _harness import settings_of
from _harness import Workers
from flask import Flask
from rq.job import Job
from rq.job import JobStatus
from rq.serializers import JSONSerializer

from flask_poststack import enqueue_email
from flask_poststack import enqueue_many
from flask_poststack import get_state
from flask_poststack.redis_server import RedisServer
from flask_poststack.sandbox import Sandbox

#: Ten RQ retries, a few seconds in all: with no SDK retries a 35% fault rate
#: would exhaust five retries for about 1 email in 500 (0.35 ** 6).
RETRY_INTERVALS = "1,1,1,2,2,2,4,4,4,8"
RETRIES = len(RETRY_INTERVALS.split(","))
SUPPRESSED_DOMAIN = "suppressed.test"


def env_default(name: str, default: float) -> float:
    value = os.environ.get(name)
    return float(value) if value else default


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add = parser.add_argument
    add(
        "--seconds",
        type=float,
        default=env_default("SOAK_SECONDS", 120),
        help="bound on the whole run (default 120, or $SOAK_SECONDS)",
    )
    add(
        "--emails",
        type=int,
        default=int(env_default("SOAK_EMAILS", 5000)),
        help="emails to queue (default 5000, or $SOAK_EMAILS)",
    )
    add("--workers", type=int, default=2)
    add(
        "--kill-every",
        type=float,
        default=3.0,
        help="seconds between SIGKILLs of a worker (0: none)",
    )
    add("--max-kills", type=int, default=1000)
    add(
        "--kill-group",
        action="store_true",
        help="kill the worker's scheduler process too (a container OOM kill)",
    )
    add("--error-rate", type=float, default=0.20)
    add("--throttle-rate", type=float, default=0.10)
    add("--drop-rate", type=float, default=0.05)
    add("--suppressed-rate", type=float, default=0.02)
    add("--sdk-retries", type=int, default=0)
    add("--heartbeat", type=int, default=1)
    add(
        "--concurrency",
        type=int,
        default=int(env_default("SOAK_CONCURRENCY", 1)),
        help="emails in flight per worker, POSTSTACK_WORKER_CONCURRENCY"
        " (default 1, or $SOAK_CONCURRENCY)",
    )
    add("--maintenance-interval", type=int, default=2)
    add("--seed", type=int, default=9)
    add("--out", type=Path, default=_harness.RESULTS / "soak.json")
    add("--keep-logs", type=Path, help="copy the worker logs into this directory")
    return parser.parse_args(argv)  # fmt: skip


def messages(count: int, suppressed_rate: float) -> list[dict[str, t.Any]]:
    every = round(1 / suppressed_rate) if suppressed_rate > 0 else 0
    out = []
    for i in range(count):
        domain = SUPPRESSED_DOMAIN if every and i % every == every // 2 else (
            "example.com")  # fmt: skip
        out.append(
            {
                "to": f"user{i}@{domain}",
                "subject": f"Soak {i}",
                "text": f"Message number {i}.",
                "tags": ["soak"],
            }
        )
    return out


class Enqueuer(threading.Thread):
    """Queues the emails in chunks of 100, alternating the two entry points."""

    def __init__(self, app: Flask, batch: list[dict[str, t.Any]]) -> None:
        super().__init__(name="enqueuer", daemon=True)
        self.app, self.batch = app, batch
        self.jobs: list[Job] = []
        self.error: BaseException | None = None
        self.seconds = 0.0

    def run(self) -> None:
        started = time.monotonic()
        try:
            with self.app.app_context():
                for n, start in enumerate(range(0, len(self.batch), 100)):
                    chunk = self.batch[start : start + 100]
                    if n % 2 == 0:
                        self.jobs += enqueue_many(chunk)
                    else:
                        self.jobs += [enqueue_email(**m) for m in chunk]
                    time.sleep(0.01)  # let the workers in
        except BaseException as exc:  # reported by the main thread
            self.error = exc
        self.seconds = time.monotonic() - started


def utcnow() -> datetime.datetime:
    return datetime.datetime.now(datetime.timezone.utc)


def aware(value: datetime.datetime | None) -> datetime.datetime | None:
    if value is not None and value.tzinfo is None:
        return value.replace(tzinfo=datetime.timezone.utc)
    return value


def run(args: argparse.Namespace, log_dir: Path) -> dict[str, t.Any]:
    bound = args.seconds
    batch = messages(args.emails, args.suppressed_rate)
    report: dict[str, t.Any] = {"machine": _harness.machine()}
    with contextlib.ExitStack() as stack:
        server = RedisServer(appendonly="everysec").start()
        stack.callback(server.stop)
        sandbox = Sandbox(
            port=0, lifecycle_delay=0.05, request_log_size=20 * args.emails + 1000
        ).start()
        stack.callback(sandbox.stop)
        # A SIGKILLed worker's keep-alive connection is reset under the
        # server, which http.server reports with a traceback on stderr; count
        # those instead (they are expected here).
        resets: list[object] = []
        sandbox._server.handle_error = lambda *a: resets.append(a)  # type: ignore[union-attr,method-assign]
        sandbox.configure(suppressed_recipients=[f"*@{SUPPRESSED_DOMAIN}"])
        _harness.add_faults(
            sandbox,
            error=args.error_rate,
            throttle=args.throttle_rate,
            drop_after=args.drop_rate,
            seed=args.seed,
        )
        app = make_app(server.url, sandbox, retry_intervals=RETRY_INTERVALS)
        settings = settings_of(app)
        conn = get_state(app).redis
        workers = Workers(log_dir)
        stack.callback(workers.close)
        env = {
            "POSTSTACK_HEARTBEAT_INTERVAL": str(args.heartbeat),
            "POSTSTACK_MAX_RETRIES": str(args.sdk_retries),
            "POSTSTACK_WORKER_CONCURRENCY": str(args.concurrency),
        }

        def start_worker() -> t.Any:
            return workers.start(settings, sandbox,
                                 maintenance_interval=args.maintenance_interval,
                                 **env)  # fmt: skip

        live = [start_worker() for _ in range(args.workers)]
        started = time.monotonic()
        enqueuer = Enqueuer(app, batch)
        enqueuer.start()

        kills: list[dict[str, t.Any]] = []
        restarts_after_exit = 0
        # job id -> (when its worker was killed, that worker's name)
        waiting_back: dict[str, tuple[float, str | None]] = {}
        back_within: list[float] = []
        next_kill = started + args.kill_every if args.kill_every > 0 else float("inf")
        drained_at: float | None = None
        deadline = started + bound
        while time.monotonic() < deadline:
            if enqueuer.error is not None:
                raise enqueuer.error
            counts = registry_counts(app)
            if (
                not enqueuer.is_alive()
                and counts["finished"] + counts["failed"] >= args.emails
                and counts["queued"] == counts["started"] == counts["scheduled"] == 0
            ):
                drained_at = time.monotonic()
                break
            for i, proc in enumerate(live):  # a process manager's Restart=always
                if proc.poll() is not None:
                    restarts_after_exit += 1
                    live[i] = start_worker()
            for job_id, (killed_at, dead) in list(waiting_back.items()):
                job = Job.fetch(job_id, connection=conn, serializer=JSONSerializer)
                if job.get_status() != JobStatus.STARTED or job.worker_name != dead:
                    back_within.append(time.monotonic() - killed_at)
                    del waiting_back[job_id]
            if time.monotonic() >= next_kill and len(kills) < args.max_kills:
                i = len(kills) % len(live)
                job_ids = current_jobs_of(conn, live[i].pid)
                workers.kill(live[i], group=args.kill_group)
                kills.append(
                    {
                        "at": round(time.monotonic() - started, 2),
                        "when": utcnow(),
                        "job": job_ids[0] if job_ids else None,
                        "jobs": job_ids,  # all in flight
                    }
                )
                for job_id in job_ids:
                    job = Job.fetch(job_id, connection=conn, serializer=JSONSerializer)
                    waiting_back[job_id] = (time.monotonic(), job.worker_name)
                live[i] = start_worker()
                next_kill = time.monotonic() + args.kill_every
            time.sleep(0.05)
        enqueuer.join(timeout=10)
        drain = (drained_at or time.monotonic()) - started

        # Everything below reads what happened; nothing more is sent.
        for proc in live:
            workers.kill(proc, group=True)
        counts = registry_counts(app)
        jobs = [
            job
            for start in range(0, len(enqueuer.jobs), 500)
            for job in Job.fetch_many(
                [j.id for j in enqueuer.jobs[start : start + 500]],
                connection=conn,
                serializer=JSONSerializer,
            )
            if job is not None
        ]
        logs = workers.logs()
        failures = failure_lines(logs)
        emails = sandbox.emails
        requests = [r for r in sandbox.requests if r["path"] == "/emails"]
        stats = sandbox.stats
        per_key = collections.Counter(e.input.idempotency_key for e in emails)

        suppressed = {
            j.id for j in jobs if SUPPRESSED_DOMAIN in str(j.args[0]["to"])
        }  # fmt: skip
        should = [j for j in jobs if j.id not in suppressed]
        refused = [j for j in jobs if j.id in suppressed]
        delivered_once = [j for j in should if per_key[j.meta["idempotency_key"]] == 1]
        finished_ok = [
            j
            for j in should
            if j.get_status() == JobStatus.FINISHED
            and j.meta.get("poststack_id") == j.return_value()
            and j.return_value() is not None
        ]
        lost = [j for j in should if per_key[j.meta["idempotency_key"]] == 0]
        duplicated = {k: n for k, n in per_key.items() if n > 1}
        refused_stored = [j for j in refused if per_key[j.meta["idempotency_key"]]]
        missing_jobs = len(enqueuer.jobs) - len(jobs)

        interrupted = {job_id for k in kills for job_id in k["jobs"]}
        # A 422 whose connection a drop_after fault then reset was never seen
        # by the worker (it sees a network error, and retries): not counted.
        answers_422 = {
            r["request_id"]
            for r in requests
            if r["status"] == 422 and r["fault"] != "drop_after"
        }
        unseen_422 = sum(
            r["status"] == 422 and r["fault"] == "drop_after" for r in requests
        )
        lines_by_job: dict[str, list[dict[str, str]]] = collections.defaultdict(list)
        for line in failures:
            lines_by_job[line["job"]].append(line)
        refused_ok: list[str] = []
        refused_bad: list[dict[str, t.Any]] = []
        retried_before_422 = 0
        for job in refused:
            error = job.meta.get("poststack_error") or {}
            lines_422 = [x for x in lines_by_job[job.id] if x["status"] == "422"]
            retried_before_422 += sum(x["retry"] == "yes" for x in lines_by_job[job.id])
            ok = (
                job.get_status() == JobStatus.FAILED
                and error.get("status") == 422
                and error.get("retryable") is False
                and error.get("request_id") in answers_422
                # One 422, never retried; two only if a kill hit the job
                # between the 422 and its record (it then runs again, once).
                and len(lines_422) in ((1, 2) if job.id in interrupted else (1,))
                and all(line["retry"] == "no" for line in lines_422)
            )
            if ok:
                refused_ok.append(job.id)
            else:
                refused_bad.append(
                    {"job": job.id, "status": job.get_status(), "error": error,
                     "lines": lines_422, "interrupted": job.id in interrupted}
                )  # fmt: skip
        # One 422 answer per refused email: none was retried after its 422.
        # An extra one can come only from a worker SIGKILLed between reading
        # the 422 and recording it: the job then runs again (once) like any
        # interrupted job, so at most one extra per refused job a kill hit.
        extra_422 = len(answers_422) - len(refused)

        rq_retries = sum(
            RETRIES - (j.retries_left if j.retries_left is not None else RETRIES)
            for j in should
        )
        recovery = []  # kill to the interrupted job's end (incl. later faults)
        for kill in kills:
            for job_id in kill["jobs"]:
                job = next((j for j in jobs if j.id == job_id), None)
                ended = aware(job.ended_at) if job is not None else None
                if ended is not None:
                    recovery.append((ended - kill["when"]).total_seconds())
        interrupted_422 = len(interrupted & suppressed)
        faults = collections.Counter(
            f"{r['fault']}" + (f" {r['status']}" if r["fault"] == "error" else "")
            for r in requests
            if r["fault"]
        )

        blobs = dump_redis(conn)
        scan = _harness.secret_scan(
            secret=API_KEY.removeprefix("sk_test_"),
            redis_blobs=blobs,
            jobs=jobs,
            logs=logs,
            other_text=repr(sandbox.requests[-2000:]),
        )
        if args.keep_logs:
            args.keep_logs.mkdir(parents=True, exist_ok=True)
            for path in log_dir.iterdir():
                (args.keep_logs / path.name).write_bytes(path.read_bytes())

        left = {k: v for k, v in counts.items() if k not in ("finished", "failed")}
        q = rq_queue(app)
        in_queue = set(q.get_job_ids())
        stranded = set(q.intermediate_queue.get_job_ids())
        unfinished = [
            {
                "job": j.id,
                "status": j.get_status(),
                "in_queue": j.id in in_queue,
                "in_intermediate_queue": j.id in stranded,
                "in_started_registry": j.id in q.started_job_registry,
                "in_scheduled_registry": j.id in q.scheduled_job_registry,
                "retries_left": j.retries_left,
                "worker": j.worker_name,
                "started_at": j.started_at,
                "ended_at": j.ended_at,
                "stored": per_key[j.meta["idempotency_key"]],
                "interrupted_by_kill": j.id in interrupted,
                "meta": j.meta,
            }
            for j in jobs
            if j.get_status() not in (JobStatus.FINISHED, JobStatus.FAILED)
        ]
        left["unfinished_jobs"] = len(unfinished)
        report.update(
            {
                "config": {
                    "emails": args.emails,
                    "bound_s": bound,
                    "workers": args.workers,
                    "kill_every_s": args.kill_every,
                    "kill_group": args.kill_group,
                    "faults": {
                        "error_5xx": args.error_rate,
                        "throttle_429": args.throttle_rate,
                        "drop_after": args.drop_rate,
                        "suppressed_422": args.suppressed_rate,
                    },
                    "sdk_retries": args.sdk_retries,
                    "rq_retry_intervals": RETRY_INTERVALS,
                    "heartbeat_s": args.heartbeat,
                    "maintenance_interval_s": args.maintenance_interval,
                    "redis": "appendonly yes, appendfsync everysec",
                    "seed": args.seed,
                },
                "drained": drained_at is not None,
                "drain_s": round(drain, 2),
                "enqueue_s": round(enqueuer.seconds, 2),
                "emails_enqueued": len(enqueuer.jobs),
                "should_deliver": len(should),
                "delivered_exactly_once": len(delivered_once),
                "finished_with_email_id": len(finished_ok),
                "sandbox_distinct_keys": len(per_key),
                "sandbox_emails_stored": len(emails),
                "lost": len(lost) + missing_jobs,
                "duplicated": sum(n - 1 for n in duplicated.values()),
                "refused_422": len(refused),
                "refused_422_failed_at_once": len(refused_ok),
                "refused_422_problems": refused_bad[:20],
                "refused_422_answers": len(answers_422),
                "refused_422_extra_answers": extra_422,
                "refused_422_answers_dropped_unseen": unseen_422,
                "refused_422_stored": len(refused_stored),
                "refused_422_rq_retries_before_the_422": retried_before_422,
                "left_in_redis": left,
                "unfinished_jobs": unfinished[:20],
                "registries": counts,
                "kills": len(kills),
                "kills_mid_job": sum(1 for k in kills if k["jobs"]),
                "jobs_interrupted": len(interrupted),
                "kills_log": [
                    {k: v for k, v in x.items() if k != "when"} for x in kills
                ],
                "worker_restarts_after_exit": restarts_after_exit,
                "client_connections_reset": len(resets),
                "interrupted_job_back_within_s": round(max(back_within), 2)
                if back_within
                else None,
                "interrupted_jobs_not_back": len(waiting_back),
                "interrupted_job_done_within_s": round(max(recovery), 2)
                if recovery
                else None,
                "refused_422_interrupted_by_kill": interrupted_422,
                "rq_retries": rq_retries,
                "rq_retry_log_lines": sum(
                    x["retry"] == "yes" for x in failures if x["job"] not in suppressed
                ),
                "api_requests": len(requests),
                "api_replays": stats["replays"],
                "faults_fired": dict(sorted(faults.items())),
                "responses_by_status": stats["responses_by_status"],
                "secrets": scan,
            }
        )
        ok = (
            report["drained"]
            and report["lost"] == 0
            and report["duplicated"] == 0
            and report["delivered_exactly_once"] == len(should)
            and report["finished_with_email_id"] == len(should)
            and report["sandbox_distinct_keys"] == len(should)
            and report["sandbox_emails_stored"] == len(should)
            and not refused_bad
            and 0 <= extra_422 <= interrupted_422
            and not refused_stored
            and scan["clean"]
        )
        report["ok"] = bool(ok)
        if lost and not report["drained"]:
            report["lost_sample"] = [j.id for j in lost[:20]]
    return report


def show(r: dict[str, t.Any]) -> str:
    c, s = r["config"], r["secrets"]
    f = c["faults"]
    lines = [
        f"Soak: {c['emails']} emails, {c['workers']} PostStackWorkers, a worker"
        f" SIGKILLed every {c['kill_every_s']} s, bound {c['bound_s']:.0f} s",
        f"  faults on POST /emails: {f['error_5xx']:.0%} 5xx,"
        f" {f['throttle_429']:.0%} 429 (Retry-After 0-1),"
        f" {f['drop_after']:.0%} dropped after storing,"
        f" {f['suppressed_422']:.0%} of addresses suppressed (422)",
        f"  redis: {c['redis']}; rq retry intervals {c['rq_retry_intervals']} s;"
        f" SDK retries {c['sdk_retries']}; heartbeat {c['heartbeat_s']} s;"
        f" maintenance {c['maintenance_interval_s']} s",
        "",
        f"emails enqueued                {r['emails_enqueued']}"
        f" (in {r['enqueue_s']} s, while the workers drained)",
        f"should deliver                 {r['should_deliver']}",
        f"delivered exactly once         {r['delivered_exactly_once']}"
        f"  (sandbox: {r['sandbox_distinct_keys']} distinct keys,"
        f" {r['sandbox_emails_stored']} emails stored;"
        f" {r['finished_with_email_id']} jobs finished with the email id)",
        f"422s failed at once            {r['refused_422_failed_at_once']}"
        f" of {r['refused_422']} (one 422 answer each:"
        f" {r['refused_422_answers']} answers seen by a worker"
        f" [{r['refused_422_interrupted_by_kill']} of these jobs hit by a kill],"
        f" {r['refused_422_answers_dropped_unseen']} more lost to a dropped"
        " connection; none stored:"
        f" {r['refused_422_stored'] == 0})",
        f"lost                           {r['lost']}",
        f"duplicated                     {r['duplicated']}",
        f"left in Redis                  {r['left_in_redis']}",
        f"kills                          {r['kills']}"
        f" ({r['kills_mid_job']} mid-job; worker exits restarted:"
        f" {r['worker_restarts_after_exit']})",
        f"interrupted jobs back within   {r['interrupted_job_back_within_s']} s"
        f" (given back to the queue; done within"
        f" {r['interrupted_job_done_within_s']} s, later faults included)",
        f"time to drain                  {r['drain_s']} s"
        + ("" if r["drained"] else "  (NOT DRAINED within the bound)"),
        f"RQ retries used                {r['rq_retries']}"
        f" ({r['rq_retry_log_lines']} failed sends logged retry=yes,"
        f" {r['jobs_interrupted']} jobs interrupted by a kill)",
        f"API requests                   {r['api_requests']}"
        f" ({r['api_replays']} idempotent replays)",
        f"faults fired                   {r['faults_fired']}",
        f"secret hygiene                 {'clean' if s['clean'] else 'LEAKED'}:"
        f" API key in {s['redis_hits']} of {s['redis_blobs_scanned']} Redis"
        f" keys/values, {s['job_hits']} of {s['jobs_scanned']} jobs"
        f" ({s['exception_texts_scanned']} exception texts),"
        f" {s['log_hits']} of {s['log_lines_scanned']} worker log lines"
        f" ({s['traceback_lines_scanned']} tracebacks)",
        "",
        "PASS" if r["ok"] else "FAIL",
    ]
    if r["unfinished_jobs"]:
        lines.insert(-1, f"unfinished jobs: {r['unfinished_jobs']}")
    if r["refused_422_problems"]:
        lines.insert(-1, f"422 problems: {r['refused_422_problems']}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="poststack-soak-") as tmp:
        report = run(args, Path(tmp))
    print(show(report), flush=True)
    _harness.write_json(args.out, report)
    print(f"wrote {args.out}")
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
