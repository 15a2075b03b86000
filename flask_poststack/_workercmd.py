"""The documented ``rq worker`` command line and its environment.

Re-exported by :mod:`flask_poststack.cli`, where the docs name them.
"""

from __future__ import annotations

import os
import shlex
import shutil
import sys
import typing as t

from .config import OUTSIDE_KEYS
from .config import Settings
from .errors import redact_url

__all__ = ["printed_command", "worker_command", "worker_environ"]

#: What ``worker --print`` shows of the environment the real run passes.
SHOWN_KEYS = ("POSTSTACK_API_KEY", "POSTSTACK_BASE_URL", "POSTSTACK_RETRY_INTERVALS")


def worker_command(
    settings: Settings,
    *,
    queues: t.Sequence[str] = (),
    burst: bool = False,
    maintenance_interval: int = 30,
    url_in_argv: bool = True,
) -> list[str]:
    """The documented ``rq worker`` command line for ``settings``.

    The API key is not in it: the worker reads ``POSTSTACK_*`` from its
    environment (see :func:`worker_environ`). With ``url_in_argv=False`` the
    Redis URL is left out too, for rq to read from ``RQ_REDIS_URL``: a
    password in the command line shows in ``ps``.
    """
    here = os.path.dirname(sys.executable)
    rq = shutil.which("rq", path=here) or shutil.which("rq") or "rq"
    argv = [rq, "worker"]
    if url_in_argv:
        argv += ["--url", settings.redis_url]
    argv += [
        "--serializer", "rq.serializers.JSONSerializer",
        "--worker-class", "flask_poststack.worker.PostStackWorker",
        "--with-scheduler",
        "--maintenance-interval", str(maintenance_interval),
    ]  # fmt: skip
    if burst:
        argv.append("--burst")
    argv.extend(queues or [settings.queue])
    return argv


def worker_environ(config: t.Mapping[str, t.Any]) -> dict[str, str]:
    """``os.environ`` plus every ``POSTSTACK_*`` key set in ``config``.

    For a testing app (``TESTING``), the keys that reach outside (API key and
    URL, Redis URL, suppression) come from ``config`` only, as for the app.
    """
    env = dict(os.environ)
    if config.get("TESTING"):
        for key in OUTSIDE_KEYS:
            env.pop(key, None)
    for key, value in config.items():
        if not key.startswith("POSTSTACK_") or value is None:
            continue
        if isinstance(value, (list, tuple)):
            value = ",".join(str(item) for item in value)
        env[key] = str(value)
    return env


def printed_command(
    env: t.Mapping[str, str],
    argv: t.Sequence[str],
    url: tuple[str, str],
    extra: t.Mapping[str, str] | None = None,
) -> str:
    """``worker --print``'s line: the variables the worker needs (``url`` is
    the Redis URL's name and value), then ``argv``.

    The API key is shown as ``...`` and the URL's password as ``***``, with
    a comment line saying so; neither is ever printed.
    """
    name, value = url
    shown = {name: redact_url(value), **(extra or {})}
    shown.update({key: env[key] for key in SHOWN_KEYS if env.get(key)})
    if "POSTSTACK_API_KEY" in shown:
        shown["POSTSTACK_API_KEY"] = "..."
    line = " ".join(f"{key}={shlex.quote(v)}" for key, v in shown.items())
    line += " " + shlex.join(argv)
    if "POSTSTACK_API_KEY" in shown:
        line += "\n# POSTSTACK_API_KEY=...: put the app's key there"
    if redact_url(value) != value:
        line += f"\n# the password in {name} is masked (***): put the real one there"
    return line
