"""The Celery producer side of the enqueue functions
(``POSTSTACK_QUEUE_BACKEND = "celery"``).

:mod:`flask_poststack.queueing` validates, renders and fires ``before_send``
as for RQ, then hands the JSON payloads here; they go out as tasks of
:mod:`flask_poststack.celery_tasks` with the same idempotency keys.
"""

from __future__ import annotations

import collections
import dataclasses
import json
import time
import typing as t
import uuid
from collections.abc import Sequence
from datetime import datetime
from datetime import timezone

from . import _celery_ledger as ledger
from . import _redis_errors
from . import pipeline
from ._keyprint import fingerprint
from ._state import AppState
from ._state import get_state
from ._state import in_plugin_test
from .errors import ConfigurationError
from .errors import InvalidEmailError
from .errors import QueueUnavailableError
from .retry import error_fields
from .sending import chunks

if t.TYPE_CHECKING:
    from celery import Celery
    from celery.result import AsyncResult

__all__ = ["celery_app", "check_options", "is_celery", "send_tasks", "task_facts"]

#: Where the app's Celery instance is kept; set it to use your own.
EXTENSION = "poststack_celery"
#: Where the results of eager tasks are kept for ``email_status(task_id)``
#: (eager results are in no result backend); the newest :data:`EAGER_KEPT`.
EAGER_RESULTS = "poststack_celery_eager"
EAGER_KEPT = 10_000
#: Marks the Celery instance that :func:`celery_app` made itself.
_OWN = "poststack_own"


def celery_app(state: AppState) -> Celery:
    """The app's Celery instance: ``app.extensions["poststack_celery"]``,
    made from the app's settings on first use."""
    from .celery_tasks import make_celery

    found = state.app.extensions.get(EXTENSION)
    if found is None:
        found = state.app.extensions[EXTENSION] = make_celery(state.settings)
        setattr(found, _OWN, True)
    return t.cast("Celery", found)


def no_broker(state: AppState) -> bool:
    """Whether the app has no broker: ``TESTING`` on, no
    ``POSTSTACK_REDIS_URL`` in ``app.config`` and no Celery app of your own.

    Its tasks then run inline (under the pytest plugin), as the RQ path
    queues into an in-memory Redis: it never falls back to localhost.

    :raises ConfigurationError: outside a test run by the pytest plugin.
    """
    if not state.app.testing or state.mode.redis_url_in_config:
        return False
    own = state.app.extensions.get(EXTENSION)
    if own is not None and not getattr(own, _OWN, False):
        return False
    if not in_plugin_test():
        raise no_broker_error()
    return True


def no_broker_error() -> ConfigurationError:
    """Why a testing app without ``POSTSTACK_REDIS_URL`` has no broker, and
    what to do under Celery (``use_redis`` is RQ's: Celery has its own)."""
    return ConfigurationError(
        "POSTSTACK_REDIS_URL",
        "this app has TESTING on and sets no Redis URL in app.config, so it has"
        " no Celery broker (it never falls back to a Redis on localhost). Run"
        " it under pytest, whose Flask-PostStack plugin runs each task inline;"
        " set POSTSTACK_REDIS_URL in app.config (with POSTSTACK_EAGER = True"
        " the task runs inside enqueue_email and no broker is used); or give"
        " it a Celery app of your own, app.extensions['poststack_celery'] ="
        " make_celery(app=...).",
    )


def _eager_results(state: AppState) -> collections.OrderedDict[str, AsyncResult]:
    found = state.app.extensions.setdefault(EAGER_RESULTS, collections.OrderedDict())
    return t.cast("collections.OrderedDict[str, AsyncResult]", found)


def check_options(
    state: AppState, when: datetime | None = None, **rq_options: object
) -> None:
    """Refuse what Celery cannot do as asked, before anything is queued:
    the RQ-only options, and a delay longer than the broker would wait
    (:func:`~flask_poststack.celery_tasks.longest_wait`)."""
    from .celery_tasks import longest_wait
    from .celery_tasks import visibility_timeout

    for name, value in rq_options.items():
        if value is not None:
            raise InvalidEmailError(
                name,
                "is an RQ option; it cannot be used with"
                " POSTSTACK_QUEUE_BACKEND = 'celery'.",
            )
    limit = longest_wait(visibility_timeout(state.settings), state.settings.job_timeout)
    if when is not None and (when - datetime.now(timezone.utc)).total_seconds() > limit:
        raise InvalidEmailError(
            "delay",
            f"must be at most {limit} s with Celery (the visibility timeout,"
            " POSTSTACK_CELERY_VISIBILITY_TIMEOUT, less POSTSTACK_JOB_TIMEOUT"
            " and 60 s).",
        )


def send_tasks(
    state: AppState,
    batch: bool,
    payloads: Sequence[dict[str, t.Any]],
    *,
    queue: str | None = None,
    when: datetime | None = None,
    task_id: str | None = None,
) -> list[AsyncResult]:
    """Queue one task per payload (or per chunk of 100, for ``batch``) and
    fire ``email_enqueued``; eagerly, run them here instead."""
    from .celery_tasks import BATCH_TASK
    from .celery_tasks import TASK

    app = celery_app(state)
    task = app.tasks[BATCH_TASK if batch else TASK]
    groups: list[t.Any] = (
        [list(c) for c in chunks(payloads)] if batch else list(payloads)
    )
    options: dict[str, t.Any] = {"queue": queue or state.settings.queue, "eta": when}
    print_ = fingerprint(state.settings.api_key)
    kwargs: dict[str, t.Any] = {"key": print_} if print_ else {}
    if state.eager or app.conf.task_always_eager or no_broker(state):
        # Through JSON, as a worker would read the task.
        context = dataclasses.replace(state.send_context(), retries=False)
        with pipeline.running_in(context):
            results = [
                task.apply(
                    args=(json.loads(json.dumps(g)),), kwargs=kwargs, task_id=task_id
                )
                for g in groups
            ]
        kept = _eager_results(state)
        for result in results:
            kept[str(result.id)] = result
            kept.move_to_end(str(result.id))
        while len(kept) > EAGER_KEPT:
            kept.popitem(last=False)
    else:
        # Ids chosen before the publish, so that a failure can name them.
        ids = [task_id or uuid.uuid4().hex for _ in groups]
        keys = [p["idempotency_key"] for p in payloads]
        tasks = list(zip(groups, ids, strict=True))
        unique = task_id is not None
        results, new = _publish(state, app, task, tasks, keys, kwargs, options, unique)
        if not new:
            return results  # the first task's, announced when it was queued
    for group, result in zip(groups, results, strict=True):
        members = group if batch else [group]
        jobs: list[tuple[dict[str, t.Any], t.Any]] = [(p, result) for p in members]
        pipeline.enqueued(state.app, jobs)
    return results


#: kombu's publish retry, bounded: one more try for a connection lost
#: since its last use, not kombu's default of three.
_PUBLISH_RETRY = {"max_retries": 1, "interval_start": 0, "interval_step": 0.2,
                  "interval_max": 0.2}  # fmt: skip


def _publish(
    state: AppState,
    app: Celery,
    task: t.Any,
    tasks: Sequence[tuple[t.Any, str]],
    keys: Sequence[str],
    kwargs: dict[str, t.Any],
    options: dict[str, t.Any],
    unique: bool,
) -> tuple[list[AsyncResult], bool]:
    """Write the ledger, then publish each ``(args, task id)``; return the
    results and whether they are new.

    ``unique`` (one task, a caller's ``job_id``): a task already queued
    under that id (the ledger entry while it is not done, its result once it
    is) is returned instead, and nothing is published.

    :raises QueueUnavailableError: the broker failed, saying whether the
        emails may be queued (the rule of :mod:`._redis_errors`).
    """
    from kombu.exceptions import OperationalError
    from redis.exceptions import RedisError

    written = False  # a ledger entry brings a task back: "may be queued"
    with _redis_errors.watch() as seen:
        try:
            with app.producer_or_acquire() as producer:
                found = ledger.for_app(app)
                if found is not None:  # a Redis broker: see _celery_ledger
                    kwargs = {**kwargs, "ledger": True}
                    queue = options["queue"]
                    entries = [
                        ledger.Entry(i, task.name, [g], kwargs, queue) for g, i in tasks
                    ]
                    due = options["eta"].timestamp() if options["eta"] else time.time()
                    if unique and not found.record_new(entries[0], due):
                        return [app.AsyncResult(entries[0].task_id)], False
                    if not unique:
                        found.record(entries, due)
                    written = True
                if unique and (first := _finished(app, found, tasks[0][1])):
                    return [first], False
                # kombu calls errback(exc, interval) at each failed try.
                retry = {**_PUBLISH_RETRY, "errback": _record_try}
                results = [
                    task.apply_async(args=(g,), kwargs=kwargs, task_id=i,
                                     producer=producer, retry_policy=retry, **options)
                    for g, i in tasks
                ]  # fmt: skip
                return results, True
        except (OperationalError, RedisError) as exc:
            raise QueueUnavailableError(
                state.settings.redis_url,
                str(exc) or type(exc).__name__,
                may_have_been_queued=(
                    written or _redis_errors.may_have_reached([*seen, exc])
                ),
                idempotency_keys=keys,
                job_ids=[i for _, i in tasks],
            ) from exc


def _record_try(exc: BaseException, interval: float) -> None:
    _redis_errors.record(exc)


def _finished(
    app: Celery, found: ledger.Broker | None, task_id: str
) -> AsyncResult | None:
    """The task that ran under ``task_id`` and has a result (Celery says
    ``PENDING`` of an id it has not seen); our new ledger entry is dropped."""
    existing = app.AsyncResult(task_id)
    if existing.state == "PENDING":
        return None
    if found is not None:
        ledger.forget(found, task_id)
    return existing


def is_celery(job: object, connection: object = None) -> bool:
    """Whether ``email_status`` was given a Celery task (or the id of one)."""
    if isinstance(job, str):
        return connection is None and get_state().settings.queue_backend == "celery"
    return type(job).__module__.startswith("celery.")


#: Celery's task states as :class:`~flask_poststack.EmailStatus` states.
#: PENDING is also what Celery says of an id it has never seen.
_STATES = {
    "PENDING": "queued",
    "RECEIVED": "queued",
    "STARTED": "started",
    "RETRY": "retrying",
    "SUCCESS": "sent",
    "FAILURE": "failed",
    "REVOKED": "canceled",
}


def task_facts(
    job: AsyncResult | str,
) -> tuple[str, str, str | None, dict[str, t.Any] | None]:
    """``(state, task id, email id, error)`` from the result backend."""
    from kombu.exceptions import OperationalError
    from redis.exceptions import RedisError

    from .celery_tasks import EmailFailed

    if isinstance(job, str):
        app_state = get_state()
        eager = _eager_results(app_state).get(job)
        if eager is not None:
            job = eager
        elif no_broker(app_state):
            return "unknown", job, None, None
        else:
            job = celery_app(app_state).AsyncResult(job)
    elif type(job).__name__ != "EagerResult":
        # An AsyncResult keeps the first final state it read: a requeued
        # task's would stay "failed".
        job = job.app.AsyncResult(job.id)
    try:
        state = _STATES.get(job.state, "unknown")
        info = job.info
    except (OperationalError, RedisError) as exc:
        raise QueueUnavailableError(
            str(job.backend.url or ""),
            str(exc) or type(exc).__name__,
            job_ids=[str(job.id)],
            reading=True,
        ) from exc
    email_id = info if state == "sent" and isinstance(info, str) else None
    error: dict[str, t.Any] | None = None
    if state in ("retrying", "failed"):
        if isinstance(info, EmailFailed):
            error = dict(info.fields)
        elif isinstance(info, BaseException):
            error = {**error_fields(info), "retryable": None}
    return state, str(job.id), email_id, error
