"""Configuration keys, their defaults and how their values are parsed.

The app reads each ``POSTSTACK_*`` key from ``app.config`` and, when the key is
missing there, from ``os.environ``; the worker reads ``os.environ`` only. Both
go through :func:`load_settings`, so a value means the same in both places.
Values from the environment are strings: numbers, booleans and lists are
parsed, and a value that does not parse is a :exc:`ConfigurationError` naming
the key.
"""

from __future__ import annotations

import dataclasses
import math
import os
import typing as t
from urllib.parse import urlsplit

from .errors import ConfigurationError
from .errors import redact_url

__all__ = ["DEFAULTS", "Settings", "check_api_key", "load_settings"]

API_KEY_PREFIXES = ("sk_live_", "sk_test_")

#: Every key and its default. ``None`` means "not set".
DEFAULTS: dict[str, t.Any] = {
    "POSTSTACK_API_KEY": None,
    "POSTSTACK_BASE_URL": "https://api.poststack.dev",
    "POSTSTACK_TIMEOUT": 30.0,
    "POSTSTACK_MAX_RETRIES": 3,
    "POSTSTACK_DEFAULT_FROM": None,
    "POSTSTACK_DEFAULT_REPLY_TO": None,
    "POSTSTACK_DEFAULT_TAGS": [],
    "POSTSTACK_REDIS_URL": "redis://localhost:6379/0",
    "POSTSTACK_QUEUE": "poststack",
    "POSTSTACK_SUPPRESS_SEND": None,
    "POSTSTACK_EAGER": False,
    "POSTSTACK_WEBHOOK_SECRET": [],
    "POSTSTACK_WEBHOOK_URL": "/poststack/webhooks",
    "POSTSTACK_WEBHOOK_REGISTER": None,
    "POSTSTACK_WEBHOOK_DEDUPE_SECONDS": 86_400,
    "POSTSTACK_WEBHOOK_DEDUPE_STORE": None,
    "POSTSTACK_REDIRECT_TO": None,
    "POSTSTACK_ALLOWED_RECIPIENTS": [],
    "POSTSTACK_RETRY_INTERVALS": [10, 30, 60, 120, 300],
    "POSTSTACK_JOB_TIMEOUT": None,
    "POSTSTACK_RESULT_TTL": 86_400,
    "POSTSTACK_FAILURE_TTL": 30 * 86_400,
    "POSTSTACK_HEARTBEAT_INTERVAL": 10,
}


@dataclasses.dataclass(frozen=True)
class Settings:
    """The parsed ``POSTSTACK_*`` configuration of one app or worker.

    The API key is kept out of ``repr()``; only its mode is shown.
    """

    api_key: str | None = dataclasses.field(default=None, repr=False)
    base_url: str = DEFAULTS["POSTSTACK_BASE_URL"]
    timeout: float = DEFAULTS["POSTSTACK_TIMEOUT"]
    max_retries: int = DEFAULTS["POSTSTACK_MAX_RETRIES"]
    default_from: str | None = None
    default_reply_to: str | None = None
    default_tags: tuple[str, ...] = ()
    redis_url: str = DEFAULTS["POSTSTACK_REDIS_URL"]
    queue: str = DEFAULTS["POSTSTACK_QUEUE"]
    #: ``None`` means "follow ``app.testing``" (and "send" in a worker).
    suppress_send: bool | None = None
    #: Run queued jobs inline, in ``enqueue_email`` (for tests).
    eager: bool = False
    webhook_secrets: tuple[str, ...] = dataclasses.field(default=(), repr=False)
    webhook_url: str = DEFAULTS["POSTSTACK_WEBHOOK_URL"]
    #: ``None`` means "register the webhook blueprint if a secret is set".
    webhook_register: bool | None = None
    webhook_dedupe_seconds: int = DEFAULTS["POSTSTACK_WEBHOOK_DEDUPE_SECONDS"]
    #: ``"redis"`` or ``"memory"``; resolved by :func:`load_settings`.
    webhook_dedupe_store: str = "memory"
    redirect_to: str | None = None
    allowed_recipients: tuple[str, ...] = ()
    retry_intervals: tuple[int, ...] = tuple(DEFAULTS["POSTSTACK_RETRY_INTERVALS"])
    #: Derived from the SDK's worst case when not set (see ``job_timeout_for``).
    job_timeout: int = 310
    result_ttl: int = DEFAULTS["POSTSTACK_RESULT_TTL"]
    failure_ttl: int = DEFAULTS["POSTSTACK_FAILURE_TTL"]
    heartbeat_interval: int = DEFAULTS["POSTSTACK_HEARTBEAT_INTERVAL"]

    def as_config(self) -> dict[str, t.Any]:
        """Every setting under its ``POSTSTACK_*`` key, as ``app.config`` holds it."""
        return {
            config_key(f.name): _plain(getattr(self, f.name))
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


def config_key(field: str) -> str:
    """The ``POSTSTACK_*`` key of a :class:`Settings` field."""
    return _KEY_OF.get(field, f"POSTSTACK_{field.upper()}")


_KEY_OF = {"webhook_secrets": "POSTSTACK_WEBHOOK_SECRET"}


def _plain(value: t.Any) -> t.Any:
    return list(value) if isinstance(value, tuple) else value


def check_api_key(api_key: str | None) -> str:
    """Return ``api_key`` if it looks like a PostStack key, else raise.

    Only the prefix is checked; the rest is opaque. The error never repeats
    the value.
    """
    if not api_key:
        raise ConfigurationError(
            "POSTSTACK_API_KEY",
            "no API key is configured. Set it in app.config or in the"
            " environment (an 'sk_test_...' key for development).",
        )
    if not api_key.startswith(API_KEY_PREFIXES) or len(api_key) <= 8:
        raise ConfigurationError(
            "POSTSTACK_API_KEY",
            "the value is not a PostStack API key: it must start with"
            " 'sk_live_' or 'sk_test_'.",
        )
    return api_key


def load_settings(*sources: t.Mapping[str, t.Any]) -> Settings:
    """Build :class:`Settings` from the first source that sets each key.

    ``load_settings(app.config, os.environ)`` is what the app uses;
    ``load_settings(os.environ)`` is what the worker uses. A key set to
    ``None`` counts as not set.
    """

    def get(key: str) -> t.Any:
        for source in sources:
            value = source.get(key)
            if value is not None:
                return value
        return DEFAULTS[key]

    return Settings(
        api_key=_opt_str(get, "POSTSTACK_API_KEY"),
        base_url=_url(get, "POSTSTACK_BASE_URL", ("http", "https")),
        timeout=_number(get, "POSTSTACK_TIMEOUT", float),
        max_retries=_number(get, "POSTSTACK_MAX_RETRIES", int, minimum=0),
        default_from=_opt_str(get, "POSTSTACK_DEFAULT_FROM"),
        default_reply_to=_opt_str(get, "POSTSTACK_DEFAULT_REPLY_TO"),
        default_tags=_str_list(get, "POSTSTACK_DEFAULT_TAGS"),
        redis_url=_url(get, "POSTSTACK_REDIS_URL", ("redis", "rediss", "unix")),
        queue=_str(get, "POSTSTACK_QUEUE"),
        suppress_send=_opt_bool(get, "POSTSTACK_SUPPRESS_SEND"),
        eager=bool(_opt_bool(get, "POSTSTACK_EAGER")),
        webhook_secrets=_str_list(get, "POSTSTACK_WEBHOOK_SECRET"),
        webhook_url=_url_path(get, "POSTSTACK_WEBHOOK_URL"),
        webhook_register=_opt_bool(get, "POSTSTACK_WEBHOOK_REGISTER"),
        webhook_dedupe_seconds=_number(
            get, "POSTSTACK_WEBHOOK_DEDUPE_SECONDS", int, minimum=0
        ),
        webhook_dedupe_store=_dedupe_store(get, sources),
        redirect_to=_opt_str(get, "POSTSTACK_REDIRECT_TO"),
        allowed_recipients=_str_list(get, "POSTSTACK_ALLOWED_RECIPIENTS"),
        retry_intervals=_int_list(get, "POSTSTACK_RETRY_INTERVALS"),
        job_timeout=(
            _number(get, "POSTSTACK_JOB_TIMEOUT", int, minimum=1)
            if get("POSTSTACK_JOB_TIMEOUT") is not None
            else job_timeout_for(
                _number(get, "POSTSTACK_TIMEOUT", float),
                _number(get, "POSTSTACK_MAX_RETRIES", int, minimum=0),
            )
        ),
        result_ttl=_number(get, "POSTSTACK_RESULT_TTL", int, minimum=0),
        failure_ttl=_number(get, "POSTSTACK_FAILURE_TTL", int, minimum=0),
        heartbeat_interval=_number(get, "POSTSTACK_HEARTBEAT_INTERVAL", int, minimum=1),
    )


def job_timeout_for(timeout: float, max_retries: int) -> int:
    """A job timeout that outlasts the SDK's own worst case for one send.

    Every attempt may take ``timeout`` seconds and the SDK waits up to 60 s
    (a ``Retry-After``) before each retry; 10 s more for the rest.
    """
    return math.ceil(timeout * (max_retries + 1) + 60 * max_retries + 10)


def environ_settings() -> Settings:
    """Settings from ``os.environ`` alone, as the worker sees them."""
    return load_settings(os.environ)


_Get = t.Callable[[str], t.Any]
_N = t.TypeVar("_N", int, float)

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


def _str(get: _Get, key: str) -> str:
    value = get(key)
    if not isinstance(value, str) or not value.strip():
        raise ConfigurationError(key, "must be a non-empty string.")
    return value.strip()


def _url(get: _Get, key: str, schemes: tuple[str, ...]) -> str:
    value = _str(get, key)
    parts = urlsplit(value)
    if parts.scheme not in schemes or not (parts.netloc or parts.scheme == "unix"):
        raise ConfigurationError(
            key,
            f"must be a URL starting with {' or '.join(s + '://' for s in schemes)},"
            f" not {redact_url(value)!r}.",
        )
    return value


def _opt_str(get: _Get, key: str) -> str | None:
    value = get(key)
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if not isinstance(value, str):
        raise ConfigurationError(key, f"must be a string, not {type(value).__name__}.")
    return value.strip()


def _number(get: _Get, key: str, kind: type[_N], minimum: float = 0) -> _N:
    value = get(key)
    if isinstance(value, bool):
        raise ConfigurationError(key, f"must be a number, not {value!r}.")
    try:
        number = kind(value.strip() if isinstance(value, str) else value)
    except (TypeError, ValueError):
        noun = "a whole number" if kind is int else "a number"
        raise ConfigurationError(key, f"must be {noun}, not {value!r}.") from None
    if number < minimum or (kind is float and number <= 0):
        raise ConfigurationError(key, f"must be positive, not {value!r}.")
    return number


def _url_path(get: _Get, key: str) -> str:
    value = _str(get, key)
    if not value.startswith("/"):
        raise ConfigurationError(
            key, f"must be a path starting with '/', not {value!r}."
        )
    return value


def _dedupe_store(get: _Get, sources: tuple[t.Mapping[str, t.Any], ...]) -> str:
    # Unset means Redis when the app names one for its queue (in app.config or
    # the environment), memory otherwise: the default Redis URL may not exist.
    key = "POSTSTACK_WEBHOOK_DEDUPE_STORE"
    value = _opt_str(get, key)
    if value is None:
        named = any(s.get("POSTSTACK_REDIS_URL") is not None for s in sources)
        return "redis" if named else "memory"
    if value.lower() not in ("redis", "memory"):
        raise ConfigurationError(key, f"must be 'redis' or 'memory', not {value!r}.")
    return value.lower()


def _opt_bool(get: _Get, key: str) -> bool | None:
    return parse_bool(key, get(key))


def parse_bool(key: str, value: t.Any) -> bool | None:
    """Parse a boolean setting; ``None`` stays ``None`` (not set)."""
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
        return value.strip().lower() in _TRUE
    raise ConfigurationError(key, f"must be true or false, not {value!r}.")


def _str_list(get: _Get, key: str) -> tuple[str, ...]:
    value = get(key)
    if isinstance(value, str):
        value = value.split(",")
    if not isinstance(value, (list, tuple)) or not all(
        isinstance(item, str) for item in value
    ):
        raise ConfigurationError(
            key, "must be a list of strings or a comma-separated string."
        )
    return tuple(item.strip() for item in value if item.strip())


def _int_list(get: _Get, key: str) -> tuple[int, ...]:
    value = get(key)
    items = value.split(",") if isinstance(value, str) else value
    try:
        numbers = tuple(int(str(item).strip()) for item in items if str(item).strip())
    except (TypeError, ValueError):
        raise ConfigurationError(
            key, f"must be a list of whole seconds, not {value!r}."
        ) from None
    if any(n < 0 for n in numbers):
        raise ConfigurationError(key, "intervals cannot be negative.")
    return numbers
