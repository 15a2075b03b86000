"""What ``flask poststack check`` looks at, and the CLI's short-lived client."""

from __future__ import annotations

import dataclasses
import re
import typing as t

import httpx
import poststack
from poststack import PostStackError

from ._state import get_state
from .client import make_client
from .config import Settings
from .errors import redact_url
from .status import _worker_error

if t.TYPE_CHECKING:
    import redis

__all__ = [
    "check_api",
    "check_outbox_rows",
    "check_queue",
    "check_render_options",
    "quick_client",
    "redis_unreachable",
]

#: How long ``flask poststack worker`` waits for Redis before saying so.
PING_SECONDS = 3.0


def redis_unreachable(url: str, local: str = "run `flask poststack dev`") -> str | None:
    """Why the Redis at ``url`` does not answer a ping, with the fix
    (``local``: how to start a local one); or ``None``. The URL is printed
    without its password."""
    import redis

    conn = redis.Redis.from_url(
        url, socket_connect_timeout=PING_SECONDS, socket_timeout=PING_SECONDS
    )
    try:
        conn.ping()
    except redis.RedisError as exc:
        return (
            f"cannot reach Redis at {redact_url(url)} ({type(exc).__name__}):"
            f" set POSTSTACK_REDIS_URL to your Redis, or {local} for a local one."
        )
    finally:
        conn.close()
    return None


def quick_client() -> poststack.PostStack:
    """A client for interactive commands: short timeout, no SDK retries."""
    settings = get_state().settings
    return make_client(dataclasses.replace(settings, timeout=5.0, max_retries=0))


def check_api(settings: Settings) -> tuple[str, str, str]:
    what = f"API at {settings.base_url}"
    client = quick_client()
    try:
        client.emails.list({"per_page": 1})
    except PostStackError as exc:
        if exc.status_code == 401:
            return "FAIL", what, "reachable, but it refused the API key"
        return "warn", what, f"reachable, answered {exc.status_code} {exc.code}"
    except httpx.TransportError as exc:
        return "FAIL", what, f"unreachable ({type(exc).__name__})"
    finally:
        client.close()
    return "ok", what, "reachable, key accepted"


def check_queue(settings: Settings) -> t.Iterator[tuple[str, str, str]]:
    import redis
    from rq import Queue
    from rq import Worker
    from rq.registry import FailedJobRegistry
    from rq.registry import ScheduledJobRegistry
    from rq.scheduler import RQScheduler

    what = f"Redis at {redact_url(settings.redis_url)}"
    conn = get_state().redis
    try:
        conn.ping()
    except redis.RedisError as exc:
        yield (
            "FAIL",
            what,
            f"unreachable ({type(exc).__name__}): set POSTSTACK_REDIS_URL to"
            " your Redis, or run `flask poststack dev` for a local one",
        )
        return
    yield "ok", what, "reachable"
    queue = Queue(settings.queue, connection=conn)
    failed = FailedJobRegistry(queue=queue).count
    scheduled = ScheduledJobRegistry(queue=queue).count  # type: ignore[no-untyped-call]
    yield (
        "ok",
        f"queue {settings.queue!r}",
        (f"{queue.count} waiting, {scheduled} scheduled or retrying"),
    )
    if failed:
        yield (
            "warn",
            "failed jobs",
            f"{failed}; the latest: {_latest_failure(conn, queue)}. Once that is"
            " fixed, send them again: flask poststack requeue-failed",
        )
    else:
        yield "ok", "failed jobs", "0"
    workers = Worker.all(queue=queue)
    start = "flask poststack worker (or the rq worker command in the docs)"
    if workers:
        yield "ok", "workers", f"{len(workers)} listening on {settings.queue!r}"
    else:
        yield (
            "warn",
            "workers",
            f"none listening on {settings.queue!r}: queued emails wait until"
            f" one runs. Start one: {start}",
        )
    # The scheduler (rq worker --with-scheduler) holds this lock while it runs:
    # without one, retries with a delay and emails sent later never run.
    locked = conn.exists(RQScheduler.get_locking_key(settings.queue))
    if locked:
        yield "ok", "scheduler", f"running for {settings.queue!r}"
    elif scheduled or workers:
        waiting = (
            f"{scheduled} job(s) scheduled or retrying never run"
            if scheduled
            else "retries and delayed emails will not run"
        )
        yield (
            "warn",
            "scheduler",
            f"none holds the lock for {settings.queue!r}, so {waiting}. Run a"
            f" worker with --with-scheduler: {start}",
        )


#: Anything a failure's text could hold that must not be printed: an API key,
#: a password in a URL.
_SECRETS = re.compile(r"(sk_(?:live|test)_)[^\s'\"]+|(://[^:/@\s]*:)[^@\s]+(@)")


def _masked(text: str) -> str:
    return _SECRETS.sub(lambda m: f"{m[1]}***" if m[1] else f"{m[2]}***{m[3]}", text)


def _latest_failure(conn: redis.Redis, queue: t.Any) -> str:
    """The cause of the most recently failed job, in one line."""
    from rq.job import Job
    from rq.registry import FailedJobRegistry
    from rq.serializers import JSONSerializer

    # The score is when the entry expires: the same TTL for each, so the
    # highest is the latest failure.
    ids = t.cast(
        "list[bytes]", conn.zrevrange(FailedJobRegistry(queue=queue).key, 0, 0)
    )
    try:
        job = Job.fetch(ids[0].decode(), connection=conn, serializer=JSONSerializer)
        error = (job.meta or {}).get("poststack_error") or _worker_error(job)
    except Exception:  # expired or unreadable: the count still stands
        error = None
    if not error:
        return "its cause is not recorded"
    code, text = error.get("code") or error.get("status"), str(error.get("error"))
    cause = text if text.startswith(f"{code}:") else f"{code}: {text}"
    if error.get("hint"):
        cause += f" ({error['hint']})"
    return _masked(cause)


def check_render_options(settings: Settings) -> list[tuple[str, str, str]]:
    """A row for each render option that is on: is its library installed?"""
    import importlib.util

    rows = []
    for on, key, module, extra in (
        (settings.text_from_html, "POSTSTACK_TEXT_FROM_HTML", "inscriptis", "text"),
        (settings.inline_css, "POSTSTACK_INLINE_CSS", "css_inline", "css"),
    ):
        if not on:
            continue
        if importlib.util.find_spec(module) is None:
            hint = (
                f"on, but {module} is missing: pip install 'flask-poststack[{extra}]'"
            )
            rows.append(("FAIL", key, hint))
        else:
            rows.append(("ok", key, f"on ({module})"))
    return rows


def check_outbox_rows(settings: Settings) -> list[tuple[str, str, str]]:
    """With ``POSTSTACK_OUTBOX`` on: does the table exist, do rows wait past
    the relay's grace period, are rows parked?"""
    if not settings.outbox:
        return []
    from sqlalchemy.exc import SQLAlchemyError

    from .errors import ConfigurationError
    from .outbox import store
    from .outbox.relay import engine_of
    from .outbox.relay import GRACE

    what = f"outbox {settings.outbox_table!r}"
    try:
        engine = engine_of(get_state().app)
        outbox = store.table(settings.outbox_table)
        store.require_table(engine, outbox)
        waiting, _pushed = store.counts(engine, outbox)
        left = store.held_back(engine, outbox, GRACE)
    except ConfigurationError as exc:
        return [("FAIL", what, str(exc))]
    except SQLAlchemyError as exc:
        return [("FAIL", what, f"cannot read it: {getattr(exc, 'orig', None) or exc}")]
    late = waiting - sum(left.values())
    rows = [("ok", what, f"exists, {waiting} row(s) not pushed yet")]
    if late:
        rows.append(
            (
                "warn",
                "outbox relay",
                f"{late} row(s) older than {GRACE:g} s wait for a relay: run"
                " `flask poststack relay` (or `relay --once` from cron)",
            )
        )
    if left.get("parked"):
        rows.append(
            (
                "FAIL",
                "parked outbox rows",
                f"{left['parked']}: their job could not be read or pushed (see"
                " the relay's log); once fixed, set claimed_by and"
                " claimed_until to NULL and the relay pushes them",
            )
        )
    return rows
