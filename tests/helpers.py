"""Small helpers the unit tests share (fixtures are in ``conftest.py``)."""

from __future__ import annotations

import time
import typing as t
from pathlib import Path

import redis
from rq import Queue
from rq import SimpleWorker
from rq.serializers import JSONSerializer

from flask_poststack.sandbox import Sandbox


def messages(count: int, **extra: t.Any) -> list[t.Any]:
    """``count`` distinct emails, for the batch functions."""
    return [
        {"to": f"user{n}@example.com", "subject": f"Hi {n}", "text": "t", **extra}
        for n in range(count)
    ]


def work(
    conn: redis.Redis | str, worker_class: type[SimpleWorker] = SimpleWorker
) -> None:
    """Run every job queued on ``poststack`` in this process (burst, no scheduler)."""
    if isinstance(conn, str):
        with redis.Redis.from_url(conn) as client:
            return work(client, worker_class)
    queue = Queue("poststack", connection=conn, serializer=JSONSerializer)
    worker = worker_class([queue], connection=conn, serializer=JSONSerializer)
    worker.work(burst=True, with_scheduler=False)
    return None


def batch_requests(sandbox: Sandbox) -> list[dict[str, t.Any]]:
    """The ``POST /emails/batch`` requests the sandbox received."""
    return [r for r in sandbox.requests if r["path"] == "/emails/batch"]


def wait_until(
    condition: t.Callable[[], t.Any], timeout: float, what: str = "the condition"
) -> float:
    """Poll ``condition`` until it is true; the seconds it took. Fails with
    ``what`` once ``timeout`` seconds have passed."""
    start = time.monotonic()
    while not condition():
        waited = time.monotonic() - start
        assert waited < timeout, f"{what}: not true after {timeout:g} s"
        time.sleep(0.05)
    return time.monotonic() - start


def _proc_stat(pid: int) -> list[str]:
    # "pid (comm) state ppid ...": comm may hold spaces and parentheses.
    return (Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()


def descendants(pid: int) -> set[int]:
    """Every process below ``pid`` (zombies included), from ``/proc``."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                parents[int(entry.name)] = int(_proc_stat(int(entry.name))[1])
            except (OSError, IndexError, ValueError):
                continue
    found: set[int] = set()
    todo = [pid]
    while todo:
        parent = todo.pop()
        children = {p for p, pp in parents.items() if pp == parent} - found
        found |= children
        todo.extend(children)
    return found


def alive(pid: int) -> bool:
    """``pid`` exists and is not a zombie (it has exited once it is one)."""
    try:
        return _proc_stat(pid)[0] != "Z"
    except (OSError, IndexError):
        return False


def german_templates(folder: Path, text: str, **messages: str) -> Path:
    """A German catalog (``messages``: English -> German) under
    ``folder/translations`` and an ``emails/hi`` template whose subject is
    ``_('Welcome')`` and whose text part is ``text``; returns the catalog
    folder, for ``BABEL_TRANSLATION_DIRECTORIES``."""
    from babel.messages import Catalog
    from babel.messages.mofile import write_mo

    catalog = Catalog(locale="de")
    for english, german in messages.items():
        catalog.add(english, german)
    mo_folder = folder / "translations" / "de" / "LC_MESSAGES"
    mo_folder.mkdir(parents=True)
    with open(mo_folder / "messages.mo", "wb") as mo:
        write_mo(mo, catalog)
    (folder / "emails").mkdir()
    (folder / "emails" / "hi.subject.txt").write_text("{{ _('Welcome') }}")
    (folder / "emails" / "hi.txt").write_text(text)
    return folder / "translations"
