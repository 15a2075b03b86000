"""The Celery tasks that send queued email, and the Celery app they run on.

The Celery twin of :mod:`flask_poststack.tasks`: no Flask app, no app
context. The SDK client is built from the ``POSTSTACK_*`` environment once
per worker process (shared by the threads of ``--pool threads``, rebuilt in
a forked child: :mod:`flask_poststack.client`), and every send goes through
the one pipeline (:mod:`flask_poststack.pipeline`): the same signals, log
lines and retry policy (:mod:`flask_poststack.retry`) as the RQ jobs.

Start a worker with the documented command::

    celery -A flask_poststack.celery_tasks worker --pool threads -c 16 -Q poststack

The tasks set their own reliability options (``acks_late``,
``reject_on_worker_lost``, JSON), so they keep them on your own Celery app
too; :func:`make_celery` also sets the broker's visibility timeout.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
import typing as t

from celery import Celery
from celery import shared_task
from celery import signals
from celery.backends.redis import RedisBackend
from celery.exceptions import Ignore

from . import _celery_ledger
from . import pipeline
from ._keyprint import META_KEY
from .client import missing_key_warning
from .client import worker_slot
from .config import environ_settings
from .config import Settings
from .errors import ConfigurationError
from .retry import answer_error
from .retry import error_fields
from .retry import is_retryable

__all__ = [
    "BATCH_TASK",
    "TASK",
    "EmailFailed",
    "ResultBackend",
    "check_retry_intervals",
    "longest_wait",
    "make_celery",
    "send_batch_payloads",
    "send_payload",
    "visibility_timeout",
]

log = logging.getLogger("flask_poststack.celery")

#: The tasks' names, as the producer sends them.
TASK = "flask_poststack.send_payload"
BATCH_TASK = "flask_poststack.send_batch_payloads"

#: The options every task of ours runs with, whatever the app's defaults:
#: acknowledged only once done, so a killed worker's task comes back.
TASK_OPTIONS: dict[str, t.Any] = {
    "bind": True,
    "acks_late": True,
    "reject_on_worker_lost": True,
    "serializer": "json",
    "track_started": True,
    "ignore_result": False,
    "max_retries": None,  # the count comes from POSTSTACK_RETRY_INTERVALS
}


class EmailFailed(Exception):
    """A queued email's send failed: the task's recorded exception.

    Its one argument, :attr:`fields`, holds ``status``, ``code``,
    ``request_id``, ``error``, ``retry_after`` and ``retryable`` (never the
    key), so it survives Celery's JSON result backend.
    """

    def __init__(self, fields: dict[str, t.Any]) -> None:
        super().__init__(fields)
        self.fields = fields

    def __str__(self) -> str:
        f = self.fields
        return f"status={f.get('status')} code={f.get('code')}: {f.get('error')}"


@dataclasses.dataclass(frozen=True)
class TaskJob:
    """What the signals and log lines get as ``job`` in a Celery worker."""

    #: The Celery task id.
    id: str
    #: Retries left after this try.
    retries_left: int
    #: The queuing app's key fingerprint (``poststack_key``), as an RQ
    #: job's meta holds it: the pipeline refuses another key's email.
    meta: t.Mapping[str, t.Any] = dataclasses.field(default_factory=dict)
    #: The queue it came from.
    origin: str | None = None


def visibility_timeout(settings: Settings) -> int:
    """Seconds before an unacknowledged task goes back on the queue."""
    if settings.celery_visibility_timeout is not None:
        return settings.celery_visibility_timeout
    return settings.job_timeout + max(settings.retry_intervals, default=0) + 60


def longest_wait(visibility: float, job_timeout: int) -> int:
    """The longest a task may wait (a ``delay``, a retry's countdown) on a
    broker with this visibility timeout: it is unacknowledged while it waits
    and then runs, and past the timeout the broker hands it out again."""
    return max(0, int(visibility) - job_timeout - 60)


def check_retry_intervals(settings: Settings) -> None:
    """Refuse, at ``init_app``, a retry interval the broker would not wait.

    :raises ConfigurationError: naming both settings.
    """
    limit = longest_wait(visibility_timeout(settings), settings.job_timeout)
    if max(settings.retry_intervals, default=0) > limit:
        raise ConfigurationError(
            "POSTSTACK_RETRY_INTERVALS",
            f"each must be at most {limit} s with Celery: the"
            " POSTSTACK_CELERY_VISIBILITY_TIMEOUT less POSTSTACK_JOB_TIMEOUT"
            " and 60 s (a longer wait is handed out again, and run twice).",
        )


def make_celery(settings: Settings | None = None, app: Celery | None = None) -> Celery:
    """A Celery app configured for the email tasks.

    :param settings: where the broker is (``redis_url``) and how long a
        task may stay unacknowledged; default: the ``POSTSTACK_*``
        environment.
    :param app: configure your own Celery app instead of a new one: only
        the broker's visibility timeout, orphan sweep, socket and producer
        pool timeouts are set (where it has none); its other settings stay.
    """
    settings = settings or environ_settings()
    if app is None:
        app = Celery("flask_poststack", set_as_current=False)
        app.loader.override_backends = {
            scheme: "flask_poststack.celery_tasks:ResultBackend"
            for scheme in ("redis", "rediss")
        }
        app.conf.update(
            broker_url=settings.redis_url,
            result_backend=settings.redis_url,
            broker_connection_retry_on_startup=True,
            task_default_queue=settings.queue,
            result_expires=settings.result_ttl,
            result_accept_content=["json"],
            accept_content=["json"],
            # One task reserved per thread: a killed worker strands no backlog.
            worker_prefetch_multiplier=1,
            redis_socket_timeout=settings.redis_timeout,
            redis_socket_connect_timeout=min(5, settings.redis_timeout),
        )
    transport = dict(app.conf.broker_transport_options or {})
    # POSTSTACK_REDIS_TIMEOUT, as for RQ: a hung broker fails an enqueue in
    # seconds instead of hanging the request (kombu's default: no timeout).
    transport.setdefault("socket_timeout", settings.redis_timeout)
    transport.setdefault("socket_connect_timeout", min(5, settings.redis_timeout))
    transport.setdefault("visibility_timeout", visibility_timeout(settings))
    if app.conf.broker_pool_acquire_timeout is None:  # a free producer: forever
        app.conf.broker_pool_acquire_timeout = settings.redis_timeout
    # Sweep for orphaned tasks every 10 s at most (kombu's default is about
    # 100 s), so one comes back soon after its visibility timeout.
    sweep = sweep_interval(transport["visibility_timeout"])
    transport.setdefault("unacked_restore_interval", sweep)
    transport.setdefault("unacked_restore_throttle", 1)
    # A worker killed mid-sweep keeps the sweep's lock until it expires (five
    # minutes by kombu's default): no orphaned task comes back until then.
    transport.setdefault("unacked_mutex_expire", max(2, min(30, sweep * 3)))
    app.conf.update(
        broker_transport_options=transport,
        result_backend_transport_options=transport,
    )
    app.finalize()  # binds the shared tasks below to this app
    return app


def sweep_interval(timeout: float) -> int:
    """Seconds between sweeps for orphaned and lost tasks: at most 10."""
    return int(max(1, min(10, timeout // 10)))


class ResultBackend(RedisBackend):  # type: ignore[misc]  # celery is untyped
    """Celery's Redis result backend, minus its subscription at each send.

    Celery's producer subscribes to every task's result channel as it sends
    it, one more round trip per email, and keeps the subscription until
    someone waits for that result, which a web app never does.
    ``AsyncResult.get()`` still works: it subscribes when it waits. And it
    keeps a failure for good as Celery keeps a success: never overwritten.
    """

    def on_task_call(self, producer: t.Any, task_id: str) -> None:
        return None

    def _store_result(
        self, task_id: str, result: t.Any, state: str, *args: t.Any, **kwargs: t.Any
    ) -> t.Any:
        # Celery keeps a SUCCESS from being overwritten; a failure for good
        # is as final: a second copy of the task must not record STARTED
        # over it (``requeue-failed`` forgets the result first). Uncached:
        # a worker's cache would outlive that.
        if self._get_task_meta_for(task_id)["status"] == "FAILURE":
            return result
        return super()._store_result(task_id, result, state, *args, **kwargs)


_app: Celery | None = None


def __getattr__(name: str) -> t.Any:
    # ``celery -A flask_poststack.celery_tasks`` reads ``app``: built on
    # first use, so importing this module reads no environment.
    global _app
    if name == "app":
        if _app is None:
            _app = make_celery()
        return _app
    raise AttributeError(name)


def _send_payload(
    self: t.Any,
    payload: dict[str, t.Any],
    key: str | None = None,
    ledger: bool = False,
) -> str:
    """Send one queued email payload; return the PostStack email id.

    ``key`` is the queuing app's key fingerprint (never the key);
    ``ledger``: the task is in :mod:`flask_poststack._celery_ledger`.
    """
    context = _context(self, key, ledger)
    try:
        return pipeline.send_one(context, payload).id
    except Exception as exc:
        raise _failure(self, context, exc, args=(payload,), key=key) from exc


def _send_batch_payloads(
    self: t.Any,
    payloads: list[dict[str, t.Any]],
    known: list[dict[str, t.Any] | None] | None = None,
    key: str | None = None,
    ledger: bool = False,
) -> list[dict[str, t.Any]]:
    """Send one chunk of queued emails with ``POST /emails/batch``.

    Returns one answer per email, in order. A retry carries the answers so
    far (``known``) and sends only the emails without a final one.
    """
    context = _context(self, key, ledger)
    results: list[dict[str, t.Any] | None] = list(known or [None] * len(payloads))
    pending = [i for i, r in enumerate(results) if r is None or _retry_answer(r)]
    try:
        answers = pipeline.send_many(context, [payloads[i] for i in pending])
    except Exception as exc:
        raise _failure(self, context, exc, args=(payloads, results), key=key) from exc
    for index, answer in zip(pending, answers, strict=True):
        results[index] = answer
    final = [r for r in results if r is not None]
    retry = [r for r in final if _retry_answer(r)]
    if retry:
        error = answer_error(retry[0])
        raise _failure(self, context, error, args=(payloads, final), key=key)
    return final


def _after_return(
    self: t.Any,
    status: str,
    retval: t.Any,
    task_id: str,
    args: t.Any,
    kwargs: t.Any,
    einfo: t.Any,
) -> None:
    # After the result is stored, before the ack: a kill in between runs
    # the task again (a replay at the API), never loses its result.
    if status in ("SUCCESS", "FAILURE") and (kwargs or {}).get("ledger"):
        _celery_ledger.ended(self, task_id, failed=status == "FAILURE")


TASK_OPTIONS["after_return"] = _after_return

#: The task of ``enqueue_email`` and ``enqueue_many``, on every Celery app.
send_payload: t.Any = shared_task(name=TASK, **TASK_OPTIONS)(_send_payload)
#: The task of ``enqueue_batch``.
send_batch_payloads: t.Any = shared_task(name=BATCH_TASK, **TASK_OPTIONS)(
    _send_batch_payloads
)


def _start_reconciler(sender: t.Any = None, **_: t.Any) -> None:
    app = getattr(sender, "app", None)
    if app is None or TASK not in app.tasks or app.conf.task_always_eager:
        return
    timeout = (app.conf.broker_transport_options or {}).get("visibility_timeout")
    timeout = 3600 if timeout is None else timeout  # kombu's default
    sweeper = _celery_ledger.Reconciler(app, timeout, sweep_interval(timeout))
    app.poststack_reconciler = sweeper
    sweeper.start()


def _warn_if_no_api_key(sender: t.Any = None, **_: t.Any) -> None:
    app = getattr(sender, "app", None)
    if app is not None and TASK in app.tasks and (warning := missing_key_warning()):
        # Celery's log format names the level already.
        log.warning(warning.removeprefix("WARNING: "))


def _stop_reconciler(sender: t.Any = None, **_: t.Any) -> None:
    sweeper = getattr(getattr(sender, "app", None), "poststack_reconciler", None)
    if sweeper is not None:
        sweeper.stop()


signals.worker_ready.connect(_start_reconciler)
signals.worker_ready.connect(_warn_if_no_api_key)
signals.worker_shutdown.connect(_stop_reconciler)


def _retry_answer(answer: t.Mapping[str, t.Any]) -> bool:
    return "id" not in answer and is_retryable(answer_error(answer))


def _intervals() -> tuple[int, ...]:
    return worker_slot().settings.retry_intervals


def _context(task: t.Any, key: str | None, in_ledger: bool) -> pipeline.Context:
    if in_ledger and _celery_ledger.ended_before(task):
        # A copy of a task that already ended for good, or a cancelled one.
        with _celery_ledger.best_effort("its state stays STARTED"):
            _celery_ledger.revoked_again(task)
        raise Ignore()
    retries_left = max(len(_intervals()) - task.request.retries, 0)
    delivery = task.request.delivery_info or {}
    job: t.Any = TaskJob(
        id=task.request.id or "",
        retries_left=retries_left,
        meta={META_KEY: key} if key else {},
        origin=delivery.get("routing_key"),
    )
    inline = pipeline.active_context()
    if inline is not None:
        # Eager mode: the app's client and outbox, no retries.
        return dataclasses.replace(inline, sender=None, job=job)
    return pipeline.Context(sender=None, slot=worker_slot(), suppressed=None, job=job)


def _failure(
    task: t.Any,
    context: pipeline.Context,
    exc: Exception,
    *,
    args: tuple[t.Any, ...],
    key: str | None,
) -> Exception:
    """The exception to raise: a retry as the policy says, else the failure."""
    fields = error_fields(exc)
    retry = context.will_retry(exc)
    failed = EmailFailed({**fields, "retryable": is_retryable(exc)})
    if not retry:
        return failed
    wait = _intervals()[task.request.retries]
    if fields["retry_after"]:
        wait = max(wait, math.ceil(fields["retry_after"]))
    transport = task.app.conf.broker_transport_options or {}
    limit = longest_wait(transport.get("visibility_timeout", 3600),
                         worker_slot().settings.job_timeout)  # fmt: skip
    if wait > limit:
        said = "poststack: task %s retries in %d s, not %d (the visibility timeout)"
        log.warning(said, task.request.id, limit, wait)
        wait = limit
    kwargs: dict[str, t.Any] = {"key": key} if key else {}
    if (task.request.kwargs or {}).get("ledger") and not task.request.is_eager:
        kwargs["ledger"] = True
        _celery_ledger.retried(task, args, kwargs, due=time.time() + wait)
    # retry() raises celery's Retry (or, eagerly, runs the task again).
    retry_error: Exception = task.retry(
        args=args, kwargs=kwargs, exc=failed, countdown=wait
    )
    return retry_error
