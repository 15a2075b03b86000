"""Every setting of the sandbox, with the choices it makes where the real
API's behaviour is not documented (see ``docs/sandbox.md``)."""

from __future__ import annotations

import dataclasses
import typing as t

#: Settings restricted to a fixed set of values.
CHOICES: dict[str, tuple[t.Any, ...]] = {
    "idempotency_precedence": ("either", "header", "body"),
    "idempotency_scope": ("team", "key"),
    "idempotency_concurrent": ("wait", "conflict"),
    "invalid_from_status": (400, 422),
    "not_scheduled_status": (409, 422),
    "empty_batch_status": (400, 422),
    "webhook_signature": ("auto", "single", "wrong_secret", "tampered", "sha512"),
}

_INTS = {"throttle_burst", "daily_quota", "monthly_quota"}
_OPTIONAL = {
    "throttle_rate",
    "throttle_burst",
    "daily_quota",
    "monthly_quota",
    "webhook_envelope",
}


@dataclasses.dataclass
class SandboxConfig:
    """The sandbox's settings. Change them with :meth:`Sandbox.configure`
    or ``POST /_sandbox/config``; :meth:`Sandbox.reset` restores the values
    the sandbox was created with. Times are in seconds."""

    #: The API's response time: every API answer leaves this long after its
    #: request came in, the sandbox's own work included (not the admin API
    #: or the inbox).
    latency: float = 0.0
    #: Up to this much more, uniformly at random (from the seeded RNG).
    latency_jitter: float = 0.0
    #: Time between lifecycle steps: queued, then sent, then the outcome.
    lifecycle_delay: float = 0.2
    #: The status an email has after its ``sent`` event. The SDK's status
    #: enum has ``sending`` but no ``sent``.
    sent_status: str = "sending"
    #: The status a cancelled scheduled email gets (no ``cancelled`` status
    #: exists in the SDK's enum).
    cancelled_status: str = "failed"
    #: Status for cancelling or rescheduling an email that is not (or no
    #: longer) scheduled.
    not_scheduled_status: int = 422
    #: Recipients allowed in each of ``to``, ``cc`` and ``bcc``.
    recipient_cap: int = 50
    #: Accept ``"to": "a@example.com"`` as a one-element list.
    accept_bare_to: bool = True
    #: Status for a body without ``from`` (including one with only ``from_``).
    invalid_from_status: int = 400
    #: Status for ``{"emails": []}``.
    empty_batch_status: int = 422
    batch_limit: int = 100
    #: Sender domains (globs) refused with 422 "Domain not verified".
    unverified_domains: list[str] = dataclasses.field(default_factory=list)
    #: Recipient addresses (globs) refused with 422 as suppressed.
    suppressed_recipients: list[str] = dataclasses.field(default_factory=list)
    #: API keys (globs, e.g. ``sk_test_send_*``) with ``sending_access`` only:
    #: they may send and read emails; every other route answers 403.
    sending_access_keys: list[str] = dataclasses.field(default_factory=list)
    attachment_max_bytes: int = 10 * 1024 * 1024
    attachments_total_max_bytes: int = 25 * 1024 * 1024
    #: Largest request body read at all; larger ones get 413.
    max_body_bytes: int = 40 * 1024 * 1024
    #: Token bucket per API key: refill per second; ``None`` turns it off.
    throttle_rate: float | None = None
    #: Bucket size; defaults to ``throttle_rate`` (at least 1).
    throttle_burst: int | None = None
    #: Live emails per team per UTC day / month; ``None`` turns it off.
    daily_quota: int | None = None
    monthly_quota: int | None = None
    #: Quota 429s with ``code: rate_limit_exceeded`` as before API 0.14.
    quota_legacy_code: bool = False
    #: ``either``: a match on the header or the body key replays;
    #: ``header`` / ``body``: only that key is looked at when present.
    idempotency_precedence: str = "either"
    #: ``team``: every key shares one namespace (the sandbox is one team);
    #: ``key``: each API key is its own team.
    idempotency_scope: str = "team"
    #: A duplicate arriving while the first is in flight: ``wait`` for it and
    #: replay, or ``conflict`` (409).
    idempotency_concurrent: str = "wait"
    #: How long header keys are remembered (expired ones are evicted, so a
    #: long-running sandbox stays bounded); a change applies to keys stored
    #: afterwards. Body keys live as long as the sandbox.
    idempotency_header_ttl: float = 24 * 3600.0
    #: At most this many header keys are kept (about 1 kB each); past it, the
    #: ones closest to expiring go first. The SDK only needs a key for its
    #: own retries, a few minutes at most.
    idempotency_header_max_keys: int = 100_000
    #: At most this many keys are kept in the ``attempts_by_idempotency_key``
    #: stat; past it, the least recently attempted go first (a change
    #: applies from the next attempt). ``idempotency_key_attempts`` counts
    #: every attempt, evicted or not.
    idempotency_attempts_max_keys: int = 100_000
    #: Seconds a send spends between taking its idempotency keys and
    #: storing the email: a slow database, which widens the window in which
    #: concurrent duplicates meet.
    processing_delay: float = 0.0
    #: Honour ``Idempotency-Key`` on every POST, not only the send routes.
    idempotency_all_posts: bool = False
    #: ``code`` of the 422 for a key reused with a different payload.
    idempotency_conflict_code: str = "unprocessable_entity"
    #: ``auto`` signs with both secrets during a rotation's grace window;
    #: ``single`` with the newest only; ``wrong_secret``, ``tampered`` (the
    #: body is changed after signing) and ``sha512`` (an unknown scheme only)
    #: are faults.
    webhook_signature: str = "auto"
    #: ``None`` for the default envelope, or a callable
    #: ``(event_type, event_id, timestamp, data) -> dict`` (Python API only).
    webhook_envelope: t.Callable[[str, str, str, dict[str, t.Any]], t.Any] | None = None
    #: Each delivery is POSTed this many extra times (at-least-once fault).
    webhook_duplicates: int = 0
    #: Attempts per delivery before it is given up, and the first retry
    #: delay (doubled per attempt: a compressed version of the API's 24 h).
    webhook_max_attempts: int = 5
    webhook_retry_base: float = 0.1
    webhook_timeout: float = 5.0
    #: Consecutive failed attempts after which a webhook is disabled.
    webhook_disable_after: int = 50
    #: Allow webhook URLs that are not on a loopback address.
    webhook_allow_remote: bool = False
    #: Request-log entries kept (oldest dropped first).
    request_log_size: int = 10_000

    def update(self, **changes: t.Any) -> None:
        """Change settings by name, checking names and types.

        :raises ValueError: for an unknown name or a bad value.
        """
        defaults = SandboxConfig()
        checked: dict[str, t.Any] = {}
        for name, value in changes.items():
            if not hasattr(defaults, name):
                raise ValueError(f"unknown sandbox setting {name!r}")
            checked[name] = _check(name, value, getattr(defaults, name))
        for name, value in checked.items():
            setattr(self, name, value)

    def as_dict(self) -> dict[str, t.Any]:
        """The settings as JSON-able values."""
        out = dataclasses.asdict(self)
        if out["webhook_envelope"] is not None:
            out["webhook_envelope"] = "custom"
        return out

    def copy(self) -> SandboxConfig:
        return dataclasses.replace(self)


def _check(name: str, value: t.Any, default: t.Any) -> t.Any:
    if name in CHOICES:
        if value not in CHOICES[name]:
            raise ValueError(f"{name} must be one of {CHOICES[name]}, not {value!r}")
        return value
    if value is None and name in _OPTIONAL:
        return None
    if name == "webhook_envelope":
        if not callable(value):
            raise ValueError("webhook_envelope must be a callable or None")
        return value
    if isinstance(default, list):
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ValueError(f"{name} must be a list of strings")
        return list(value)
    if isinstance(default, bool) or isinstance(value, bool):
        if not isinstance(value, bool) or not isinstance(default, bool):
            raise ValueError(f"{name} must be a boolean")
        return value
    if isinstance(default, str):
        if not isinstance(value, str):
            raise ValueError(f"{name} must be a string")
        return value
    if not isinstance(value, (int, float)) or value < 0:
        raise ValueError(f"{name} must be a number >= 0, not {value!r}")
    if isinstance(default, int) or name in _INTS:
        return int(value)
    return float(value)
