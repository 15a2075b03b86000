"""Configuration keys, their defaults and how their values are parsed.

Every key is declared once, as a field of :class:`Settings`: its default,
its parser, and whether it is read live (at each use, from ``app.config``)
rather than once at ``init_app``. The app reads ``app.config`` and, for keys
it lacks, ``os.environ``; while ``TESTING`` is on, the app reads the keys
that reach outside (API key and URL, Redis URL, suppression, eager mode)
from ``app.config`` only, so the shell cannot point tests at a real API or
Redis.
The worker reads ``os.environ`` only. Values from the environment are
strings: numbers, booleans and lists are parsed, and a value that does not
parse is a :exc:`ConfigurationError` naming the key.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
import typing as t

from ._parse import _choice
from ._parse import _int_list
from ._parse import _number
from ._parse import _opt_str
from ._parse import _path
from ._parse import _str
from ._parse import _str_list
from ._parse import _tracking
from ._parse import _url
from ._parse import Parse
from ._parse import parse_bool
from .errors import ConfigurationError

__all__ = [
    "Settings",
    "app_settings",
    "check_api_key",
    "environ_settings",
    "live_setting",
    "load_settings",
]

API_KEY_PREFIXES = ("sk_live_", "sk_test_")
# A key goes into an HTTP header: anything else would be quoted back in the
# HTTP library's error message.
_PRINTABLE = re.compile(r"[!-~]+")


def _key(
    parse: Parse,
    default: t.Any = None,
    *,
    name: str | None = None,
    live: bool = False,
    secret: bool = False,
    outside: bool = False,
) -> t.Any:
    """Declare one setting: a :class:`Settings` field with its key's facts.

    ``outside`` marks a key that reaches outside the process (a real API or
    Redis, whether to send at all, or how queued jobs run): a testing app
    reads it from ``app.config`` only.
    """
    meta = {"parse": parse, "name": name, "live": live, "outside": outside}
    return dataclasses.field(default=default, repr=not secret, metadata=meta)


@dataclasses.dataclass(frozen=True)
class Settings:
    """The parsed ``POSTSTACK_*`` configuration of one app or worker.

    Each field is the key ``POSTSTACK_<FIELD>`` (``webhook_secrets`` is
    ``POSTSTACK_WEBHOOK_SECRET``). The API key and webhook secrets are kept
    out of ``repr()``; only the key's mode is shown.
    """

    api_key: str | None = _key(_opt_str, secret=True, outside=True)
    base_url: str = _key(
        _url("http", "https"), "https://api.poststack.dev", outside=True
    )
    timeout: float = _key(_number(float), 30.0)
    max_retries: int = _key(_number(int), 3)
    default_from: str | None = _key(_opt_str)
    default_reply_to: str | None = _key(_opt_str)
    default_tags: tuple[str, ...] = _key(_str_list, ())
    #: ``{"opens": bool, "clicks": bool}``; unset keys follow the domain's
    #: settings at the API.
    tracking: t.Mapping[str, bool] | None = _key(_tracking)
    #: Ask for a one-click ``List-Unsubscribe`` header; unset: the API's
    #: default (none).
    unsubscribe: bool | None = _key(parse_bool)
    #: Make a template's text part from its HTML when it has no ``.txt``.
    text_from_html: bool = _key(parse_bool, False)
    #: Inline the CSS of a template's HTML into ``style`` attributes.
    inline_css: bool = _key(parse_bool, False)
    redis_url: str = _key(
        _url("redis", "rediss", "unix"), "redis://localhost:6379/0", outside=True
    )
    #: Seconds a Redis command may take before an enqueue gives up.
    redis_timeout: float = _key(_number(float), 10.0)
    queue: str = _key(_str, "poststack")
    #: ``None`` follows ``app.testing`` (and means "send" in a worker).
    suppress_send: bool | None = _key(parse_bool, live=True, outside=True)
    #: Run queued jobs inline, in ``enqueue_email`` (for tests).
    eager: bool = _key(parse_bool, False, live=True, outside=True)
    webhook_secrets: tuple[str, ...] = _key(
        _str_list, (), name="POSTSTACK_WEBHOOK_SECRET", secret=True
    )
    webhook_url: str = _key(_path, "/poststack/webhooks")
    #: ``None`` registers the webhook blueprint when a secret is set.
    webhook_register: bool | None = _key(parse_bool)
    webhook_dedupe_seconds: int = _key(_number(int), 86_400)
    #: ``"redis"`` or ``"memory"``; unset means Redis when a Redis URL is
    #: configured, memory otherwise.
    webhook_dedupe_store: str = _key(_choice("redis", "memory"), "memory")
    #: ``None`` registers the preview pages when ``app.debug`` is on.
    previews: bool | None = _key(parse_bool)
    redirect_to: str | None = _key(_opt_str)
    allowed_recipients: tuple[str, ...] = _key(_str_list, ())
    retry_intervals: tuple[int, ...] = _key(_int_list, (10, 30, 60, 120, 300))
    #: Unset: the SDK's worst case for one send (see :func:`job_timeout_for`).
    job_timeout: int = _key(_number(int, minimum=1), 310)
    result_ttl: int = _key(_number(int), 86_400)
    failure_ttl: int = _key(_number(int), 30 * 86_400)
    #: ``Mail.send`` of :mod:`flask_poststack.flask_mail` queues instead.
    flask_mail_queue: bool = _key(parse_bool, False)
    heartbeat_interval: int = _key(_number(int, minimum=1), 10)
    #: Emails a PostStackWorker process sends at once (sender threads).
    worker_concurrency: int = _key(_number(int, minimum=1), 1)
    #: Sender threads' emails waiting for a request go in one batch request.
    worker_batch_sends: bool = _key(parse_bool, True)

    #: ``"rq"`` or ``"celery"``: the engine the enqueue functions queue on.
    queue_backend: str = _key(_choice("rq", "celery"), "rq")
    #: Unset: ``job_timeout`` + the longest retry interval + 60 s.
    celery_visibility_timeout: int | None = _key(_number(int, minimum=1))

    #: Queue emails when the app's SQLAlchemy transaction commits.
    after_commit: bool = _key(parse_bool, False)
    #: ``"package.module:session"``; unset: Flask-SQLAlchemy's ``db.session``.
    sqlalchemy_session: str | None = _key(_opt_str)
    #: ``"sqlalchemy"``: write each queued email to an outbox table first.
    outbox: str | None = _key(_choice("sqlalchemy"))
    outbox_table: str = _key(_str, "poststack_outbox")
    #: Seconds to keep pushed outbox rows before the relay deletes them.
    outbox_keep: int = _key(_number(int), 7 * 86_400)

    def as_config(self) -> dict[str, t.Any]:
        """Every setting under its ``POSTSTACK_*`` key, as ``app.config`` holds it."""
        return {
            key_of(f): list(v) if isinstance(v := getattr(self, f.name), tuple) else v
            for f in dataclasses.fields(self)
        }

    @property
    def mode(self) -> str | None:
        """``"live"`` or ``"test"`` from the key's prefix, ``None`` without one."""
        if self.api_key is None:
            return None
        return "test" if self.api_key.startswith("sk_test_") else "live"

    def __repr__(self) -> str:
        fields = ", ".join(
            f"{f.name}={getattr(self, f.name)!r}"
            for f in dataclasses.fields(self)
            if f.repr
        )
        return f"Settings(mode={self.mode!r}, {fields})"


def key_of(field: dataclasses.Field[t.Any]) -> str:
    """The ``POSTSTACK_*`` key of a :class:`Settings` field."""
    return field.metadata["name"] or f"POSTSTACK_{field.name.upper()}"


#: The keys a testing app reads from ``app.config`` only.
OUTSIDE_KEYS = frozenset(
    key_of(f) for f in dataclasses.fields(Settings) if f.metadata["outside"]
)


def written_back(settings: Settings, config: t.Mapping[str, t.Any]) -> dict[str, t.Any]:
    """The keys ``init_app`` writes into ``app.config``, with their values.

    A key that reaches outside (:data:`OUTSIDE_KEYS`) is left out when its
    value came from the environment, so that a ``TESTING`` turned on later
    does not find it there; and the API key, base URL and Redis URL are left
    out when nothing set them, so that a copy of the config does not point
    another app at the default API or at a Redis on localhost.
    """
    values = {}
    for field in dataclasses.fields(Settings):
        key = key_of(field)
        value = getattr(settings, field.name)
        from_elsewhere = os.environ.get(key) is not None or not field.metadata["live"]
        if field.metadata["outside"] and config.get(key) is None and from_elsewhere:
            continue
        values[key] = list(value) if isinstance(value, tuple) else value
    return values


#: Where a testing app's client points when ``app.config`` names no API: a
#: closed port on this machine (the discard port), so nothing leaves it.
TESTING_BASE_URL = "http://127.0.0.1:9"

#: Every key and its default (``None``: not set), for docs and checks.
DEFAULTS: dict[str, t.Any] = Settings().as_config()


def load_settings(*sources: t.Mapping[str, t.Any], isolated: bool = False) -> Settings:
    """Build :class:`Settings` from the first source that sets each key.

    A key set to ``None`` counts as not set.

    :param isolated: read the keys that reach outside the process (API key,
        base URL, Redis URL, suppression) from the first source only.
    """
    values: dict[str, t.Any] = {}
    given: set[str] = set()
    for field in dataclasses.fields(Settings):
        key = key_of(field)
        where = sources[:1] if isolated and field.metadata["outside"] else sources
        value = next((s[key] for s in where if s.get(key) is not None), None)
        if value is not None:
            values[field.name] = field.metadata["parse"](key, value)
            given.add(field.name)
    if "job_timeout" not in given:
        values["job_timeout"] = job_timeout_for(
            values.get("timeout", Settings.timeout),
            values.get("max_retries", Settings.max_retries),
        )
    if "webhook_dedupe_store" not in given and "redis_url" in given:
        values["webhook_dedupe_store"] = "redis"
    return Settings(**values)


def app_settings(config: t.Mapping[str, t.Any], *, testing: bool) -> Settings:
    """The settings of an app with ``config``: ``app.config`` first, then
    ``os.environ``.

    With ``testing``, the keys that reach outside the process (see
    :data:`OUTSIDE_KEYS`) come from ``app.config`` only, so that the shell
    cannot make a test send real email or use a real Redis; without a base
    URL there, the client points at :data:`TESTING_BASE_URL`.
    """
    settings = load_settings(config, os.environ, isolated=testing)
    if testing and config.get("POSTSTACK_BASE_URL") is None:
        # A direct SDK call in a test fails at once instead of reaching the API.
        settings = dataclasses.replace(settings, base_url=TESTING_BASE_URL)
    return settings


def environ_settings() -> Settings:
    """Settings from ``os.environ`` alone, as the worker sees them."""
    return load_settings(os.environ)


def live_setting(config: t.Mapping[str, t.Any], name: str) -> t.Any:
    """The value of the live setting ``name`` (a field) in ``config`` now,
    or ``None`` when ``config`` does not set it."""
    field = _FIELDS[name]
    assert field.metadata["live"], f"{name} is not read live"
    key = key_of(field)
    value = config.get(key)
    return None if value is None else field.metadata["parse"](key, value)


_FIELDS = {f.name: f for f in dataclasses.fields(Settings)}


def job_timeout_for(timeout: float, max_retries: int) -> int:
    """A job timeout that outlasts the SDK's own worst case for one send.

    Every attempt may take ``timeout`` seconds and the SDK waits up to 60 s
    (a ``Retry-After``) before each retry; 10 s more for the rest.
    """
    return math.ceil(timeout * (max_retries + 1) + 60 * max_retries + 10)


def is_api_key(api_key: str | None) -> bool:
    """Whether ``api_key`` looks like a PostStack key (see :func:`check_api_key`)."""
    try:
        check_api_key(api_key)
    except ConfigurationError:
        return False
    return True


def check_api_key(api_key: str | None, where: str = "app.config") -> str:
    """Return ``api_key`` if it looks like a PostStack key, else raise.

    Only the prefix is checked; the rest is opaque. The error never repeats
    the value.

    :param where: where the key should be set, for the error message:
        ``"app.config"`` or ``"the worker's environment"``.
    """
    if not api_key:
        raise ConfigurationError(
            "POSTSTACK_API_KEY",
            f"no API key is configured. Set it in {where}"
            " (an 'sk_test_...' key for development).",
        )
    if (
        not api_key.startswith(API_KEY_PREFIXES)
        or len(api_key) <= 8
        or not _PRINTABLE.fullmatch(api_key)
    ):
        raise ConfigurationError(
            "POSTSTACK_API_KEY",
            "the value is not a PostStack API key: it must start with"
            " 'sk_live_' or 'sk_test_' and hold only printable ASCII, no spaces.",
        )
    return api_key
