"""One parser for ISO-8601 date-times, shared by messages and webhooks.

Not :meth:`datetime.fromisoformat`: what it accepts differs between Python
3.10 and 3.11+, so the same string could be valid on one and not the other.
"""

from __future__ import annotations

import datetime as dt
import re

__all__ = ["parse_iso_datetime"]

# RFC 3339 date-times, plus a space for "T" and "+HHMM" offsets. The offset
# is optional so that a naive time gets its own error from the caller.
_ISO_DATETIME = re.compile(
    r"""
    (?P<year>[0-9]{4})-(?P<month>[0-9]{2})-(?P<day>[0-9]{2})
    [Tt\x20]
    (?P<hour>[0-9]{2}):(?P<minute>[0-9]{2})
    (?::(?P<second>[0-9]{2})(?:[.,](?P<fraction>[0-9]+))?)?
    (?:(?P<utc>[Zz])
      |(?P<sign>[+-])(?P<offset_hour>[0-9]{2}):?(?P<offset_minute>[0-9]{2}))?
    """,
    re.VERBOSE,
)


def parse_iso_datetime(value: str) -> dt.datetime:
    """Parse ``value``; the result is naive when it has no offset.

    :raises ValueError: saying what is wrong, with ``value`` quoted.
    """
    match = _ISO_DATETIME.fullmatch(value.strip())
    if match is None:
        raise ValueError(
            f"{value!r} is not an ISO-8601 date and time such as"
            " '2026-03-25T09:00:00Z'."
        )
    tz: dt.tzinfo | None = None
    if match["utc"]:
        tz = dt.timezone.utc
    elif match["sign"]:
        hours, minutes = int(match["offset_hour"]), int(match["offset_minute"])
        if hours > 23 or minutes > 59:
            raise ValueError(f"{value!r} is out of range.")
        offset = dt.timedelta(hours=hours, minutes=minutes)
        tz = dt.timezone(-offset if match["sign"] == "-" else offset)
    # Digits beyond microseconds are dropped, not rounded: the wire keeps
    # milliseconds by truncation too, and rounding could carry into the next day.
    microsecond = int((match["fraction"] or "")[:6].ljust(6, "0"))
    try:
        return dt.datetime(
            int(match["year"]),
            int(match["month"]),
            int(match["day"]),
            int(match["hour"]),
            int(match["minute"]),
            int(match["second"] or 0),
            microsecond,
            tzinfo=tz,
        )
    except ValueError:
        raise ValueError(f"{value!r} is out of range.") from None
