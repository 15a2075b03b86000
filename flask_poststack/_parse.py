"""The parsers of configuration values: ``parse(key, value)``.

``value`` is never ``None`` (unset keys keep the field's default). Values
from the environment are strings; a value that does not parse is a
:exc:`ConfigurationError` naming the key.
"""

from __future__ import annotations

import typing as t
from urllib.parse import urlsplit

from .errors import ConfigurationError
from .errors import redact_url

Parse = t.Callable[[str, t.Any], t.Any]


_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


def _str(key: str, value: t.Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ConfigurationError(key, "must be a non-empty string.")
    return value.strip()


def _opt_str(key: str, value: t.Any) -> str | None:
    if isinstance(value, str) and not value.strip():
        return None
    if not isinstance(value, str):
        raise ConfigurationError(key, f"must be a string, not {type(value).__name__}.")
    return value.strip()


def _url(*schemes: str) -> Parse:
    def parse(key: str, value: t.Any) -> str:
        url = _str(key, value)
        parts = urlsplit(url)
        if parts.scheme not in schemes or not (parts.netloc or parts.scheme == "unix"):
            starts = " or ".join(s + "://" for s in schemes)
            raise ConfigurationError(
                key, f"must be a URL starting with {starts}, not {redact_url(url)!r}."
            )
        return url

    return parse


def _path(key: str, value: t.Any) -> str:
    path = _str(key, value)
    if not path.startswith("/"):
        raise ConfigurationError(
            key, f"must be a path starting with '/', not {path!r}."
        )
    return path


def _number(kind: type[int] | type[float], minimum: float = 0) -> Parse:
    def parse(key: str, value: t.Any) -> int | float:
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

    return parse


def parse_bool(key: str, value: t.Any) -> bool:
    """Parse a boolean setting: a bool, or a string such as ``"1"``/``"off"``."""
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
        return value.strip().lower() in _TRUE
    raise ConfigurationError(key, f"must be true or false, not {value!r}.")


def _tracking(key: str, value: t.Any) -> dict[str, bool]:
    # True/False (or "on"/"off") for both; a mapping, or "opens=on,clicks=off"
    # from the environment, for each.
    if isinstance(value, bool) or (
        isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE
    ):
        return dict.fromkeys(("opens", "clicks"), parse_bool(key, value))
    if isinstance(value, str):
        pairs = [item.partition("=") for item in value.split(",") if item.strip()]
        if not all(sep for _, sep, _ in pairs):
            raise ConfigurationError(
                key, f"must be true, false or 'opens=on,clicks=off', not {value!r}."
            )
        value = {name.strip(): flag for name, _, flag in pairs}
    if not isinstance(value, t.Mapping):
        raise ConfigurationError(
            key, f'must be {{"opens": bool, "clicks": bool}}, not {value!r}.'
        )
    for name in value:
        if name not in ("opens", "clicks"):
            raise ConfigurationError(
                key, f"unknown key {name!r}: the keys are 'opens' and 'clicks'."
            )
    return {name: parse_bool(key, flag) for name, flag in value.items()}


def _str_list(key: str, value: t.Any) -> tuple[str, ...]:
    if isinstance(value, str):
        value = value.split(",")
    if not isinstance(value, (list, tuple)) or not all(
        isinstance(item, str) for item in value
    ):
        raise ConfigurationError(
            key, "must be a list of strings or a comma-separated string."
        )
    return tuple(item.strip() for item in value if item.strip())


def _int_list(key: str, value: t.Any) -> tuple[int, ...]:
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


def _choice(*choices: str) -> Parse:
    def parse(key: str, value: t.Any) -> str:
        text = _str(key, value).lower()
        if text not in choices:
            options = " or ".join(repr(c) for c in choices)
            raise ConfigurationError(key, f"must be {options}, not {value!r}.")
        return text

    return parse
