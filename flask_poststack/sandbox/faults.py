"""Fault injection: rules that make matching API requests misbehave.

A rule matches requests by method and path (a glob such as ``/emails*``) and
holds one fault, or a sequence of faults played in order. Rules are tried in
the order they were added; the first one that fires decides the request.

:class:`Holds` keeps the requests a ``hold_after_store`` fault is holding.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import math
import random
import threading
import time
import typing as t

#: Every fault kind, see :class:`Fault`.
KINDS = (
    "pass",
    "latency",
    "error",
    "throttle",
    "quota",
    "bare_429",
    "drop_before",
    "drop_after",
    "empty_2xx",
    "hold_after_store",
)
#: The longest a ``hold_after_store`` fault may hold an answer, in seconds.
MAX_HOLD_SECONDS = 600.0
#: How long a ``hold_after_store`` fault holds by default, in seconds.
DEFAULT_HOLD_SECONDS = 10.0
DROP_MODES = ("reset", "close", "headers")
BODIES = ("json", "html", "text", "empty")
QUOTA_CODES = (
    "monthly_limit_exceeded",
    "daily_limit_exceeded",
    "send_limit_exceeded",
    "quota_exceeded",
    "daily_cap_exceeded",
    "rate_limit_exceeded",
)


@dataclasses.dataclass
class Fault:
    """One misbehaviour.

    ``kind`` is one of:

    ``pass``
        nothing (a gap in a sequence).
    ``latency``
        wait ``delay`` (+ up to ``jitter``) seconds before processing the
        request (on top of the global latency), then answer normally.
    ``error``
        answer ``status`` (default 500; any 4xx or 5xx, e.g. 408, 502, 521)
        with a ``json``, ``html``, ``text`` or ``empty`` ``body``, an optional
        ``code`` and an optional ``retry_after``.
    ``throttle``
        429 ``rate_limit_exceeded`` with ``Retry-After`` (default 1).
    ``quota``
        429 with a quota ``code`` (default ``monthly_limit_exceeded``) and no
        ``Retry-After``.
    ``bare_429``
        429 with an HTML body, no code and no ``Retry-After`` (a proxy).
    ``drop_before``
        reset the connection before the request is processed: no effects.
    ``drop_after``
        process the request (the email is stored), then ``mode`` ``reset``
        the connection, ``close`` it without answering, or send the
        ``headers`` and half the body, then close.
    ``empty_2xx``
        process the request, then answer its 2xx with an empty body that
        claims to be JSON.
    ``hold_after_store``
        process the request (the email is stored), then hold the answer until
        it is released (:meth:`Sandbox.release
        <flask_poststack.sandbox.Sandbox.release>`, ``reset()``, ``stop()``)
        or ``seconds`` pass (default 10, at most 600), then send it. The
        request is listed by :attr:`Sandbox.held
        <flask_poststack.sandbox.Sandbox.held>` while it is held.

    Every kind also waits ``delay`` (+ ``jitter``) seconds first.

    ``retry_after`` is seconds: an ``int`` is sent as the API does
    (``Retry-After: 2``), a ``float`` as written (``Retry-After: 1.5``), which
    the API never sends but SDKs parse differently (PY09 waits 1.5 s, TS014
    reads 0).
    """

    kind: str
    status: int | None = None
    retry_after: float | None = None
    code: str | None = None
    message: str | None = None
    body: str = "json"
    delay: float = 0.0
    jitter: float = 0.0
    mode: str = "reset"
    seconds: float | None = None

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"unknown fault kind {self.kind!r}; one of {KINDS}")
        if self.body not in BODIES:
            raise ValueError(f"body must be one of {BODIES}")
        if self.mode not in DROP_MODES:
            raise ValueError(f"mode must be one of {DROP_MODES}")
        if self.delay < 0 or self.jitter < 0:
            raise ValueError("delay and jitter must be >= 0")
        if self.retry_after is not None and (
            isinstance(self.retry_after, bool)
            or not isinstance(self.retry_after, (int, float))
            or not 0 <= self.retry_after < float("inf")
        ):
            raise ValueError("retry_after must be a number of seconds >= 0")
        if self.kind == "error":
            self.status = 500 if self.status is None else self.status
            if not 400 <= self.status <= 599:
                raise ValueError("an error fault's status must be 4xx or 5xx")
        elif self.kind == "throttle":
            self.status = 429
            self.code = self.code or "rate_limit_exceeded"
            self.retry_after = 1 if self.retry_after is None else self.retry_after
        elif self.kind == "quota":
            self.status = 429
            self.code = self.code or "monthly_limit_exceeded"
            if self.code not in QUOTA_CODES:
                raise ValueError(f"a quota fault's code must be one of {QUOTA_CODES}")
        elif self.kind == "bare_429":
            self.status, self.code, self.body = 429, None, "html"
        if self.kind == "hold_after_store":
            if self.seconds is None:
                self.seconds = DEFAULT_HOLD_SECONDS
            if (
                isinstance(self.seconds, bool)
                or not isinstance(self.seconds, (int, float))
                or not 0 <= self.seconds <= MAX_HOLD_SECONDS
            ):
                raise ValueError(
                    f"seconds must be a number between 0 and {MAX_HOLD_SECONDS:g}"
                )
        elif self.seconds is not None:
            raise ValueError("seconds is only for a hold_after_store fault")

    @property
    def responds(self) -> bool:
        """Whether this fault answers in place of the API."""
        return self.status is not None

    def to_dict(self) -> dict[str, t.Any]:
        return {k: v for k, v in dataclasses.asdict(self).items() if v is not None}

    @classmethod
    def coerce(cls, spec: Fault | str | int | t.Mapping[str, t.Any] | None) -> Fault:
        """Build a fault from shorthand: ``None``/``"pass"``/``"ok"``, a kind
        name, an HTTP status (an ``error`` fault) or a mapping of fields."""
        if isinstance(spec, Fault):
            return spec
        if spec is None or spec == "ok":
            return cls("pass")
        if isinstance(spec, bool):
            raise ValueError("a fault cannot be a boolean")
        if isinstance(spec, int):
            return cls("error", status=spec)
        if isinstance(spec, str):
            return cls(spec)
        fields = {f.name for f in dataclasses.fields(cls)}
        unknown = set(spec) - fields
        if unknown:
            raise ValueError(f"unknown fault fields: {sorted(unknown)}")
        return cls(**spec)


@dataclasses.dataclass
class FaultRule:
    """Where and how often faults fire.

    :param steps: the faults, played in order, one per matching request.
    :param times: how many times the whole sequence is played; ``None``
        means forever.
    :param probability: chance that a matching request fires the rule.
    :param after: let this many matching requests through first.
    :param idempotency_key: a glob; when set, only requests whose
        ``Idempotency-Key`` header or body ``idempotency_key`` matches it
        match the rule.
    """

    id: int
    steps: list[Fault]
    method: str = "*"
    path: str = "*"
    times: int | None = None
    probability: float = 1.0
    after: int = 0
    idempotency_key: str | None = None
    seen: int = 0
    fired: int = 0

    @property
    def exhausted(self) -> bool:
        return self.times is not None and self.fired >= self.times * len(self.steps)

    def matches(
        self,
        method: str,
        path: str,
        keys: t.Callable[[], t.Sequence[str]] | None = None,
    ) -> bool:
        """Whether a request matches; ``keys`` gives its idempotency keys
        (called only when the rule filters on them)."""
        if self.method != "*" and self.method.upper() != method:
            return False
        if not fnmatch.fnmatchcase(path, self.path):
            return False
        if self.idempotency_key is None:
            return True
        pattern = self.idempotency_key
        return any(fnmatch.fnmatchcase(k, pattern) for k in (keys() if keys else ()))

    def to_dict(self) -> dict[str, t.Any]:
        return {
            "id": self.id,
            "method": self.method,
            "path": self.path,
            "times": self.times,
            "probability": self.probability,
            "after": self.after,
            "idempotency_key": self.idempotency_key,
            "fired": self.fired,
            "exhausted": self.exhausted,
            "steps": [step.to_dict() for step in self.steps],
        }


class Faults:
    """The fault rules of one sandbox (``sandbox.faults``).

    :param seed: seeds the RNG behind probabilities and jitter, so a run
        can be repeated.
    """

    def __init__(self, seed: int | None = None) -> None:
        self._lock = threading.Lock()
        self._rules: list[FaultRule] = []
        self._next_id = 1
        self.rng = random.Random(seed)

    def add(
        self,
        kind: str,
        *,
        method: str = "*",
        path: str = "*",
        times: int | None = None,
        probability: float = 1.0,
        after: int = 0,
        idempotency_key: str | None = None,
        **fields: t.Any,
    ) -> FaultRule:
        """Add a rule firing one fault of ``kind`` (see :class:`Fault` for
        the ``fields``), e.g. ``add("error", status=503, path="/emails",
        times=2)``."""
        return self._add(
            [Fault(kind, **fields)],
            method,
            path,
            times,
            probability,
            after,
            idempotency_key,
        )

    def sequence(
        self,
        steps: t.Iterable[Fault | str | int | t.Mapping[str, t.Any] | None],
        *,
        method: str = "*",
        path: str = "*",
        times: int | None = 1,
        probability: float = 1.0,
        after: int = 0,
        idempotency_key: str | None = None,
    ) -> FaultRule:
        """Add a rule that plays ``steps`` in order, one per matching
        request, e.g. ``sequence([503, 503, "pass"], path="/emails")``. A step
        is a :class:`Fault`, a kind, a status or a mapping of fields."""
        faults = [Fault.coerce(step) for step in steps]
        if not faults:
            raise ValueError("a sequence needs at least one step")
        return self._add(
            faults, method, path, times, probability, after, idempotency_key
        )

    def add_spec(self, spec: t.Mapping[str, t.Any]) -> FaultRule:
        """Add a rule from its JSON form (the admin API's ``POST
        /_sandbox/faults`` body): rule fields plus either ``steps`` or the
        fields of one fault."""
        spec = dict(spec)
        rule_args = {
            name: spec.pop(name)
            for name in (
                "method",
                "path",
                "times",
                "probability",
                "after",
                "idempotency_key",
            )
            if name in spec
        }
        if "steps" in spec:
            steps = spec.pop("steps")
            if spec or not isinstance(steps, list):
                raise ValueError("'steps' must be a list and come alone")
            rule_args.setdefault("times", 1)
            return self.sequence(steps, **rule_args)
        return self._add([Fault.coerce(spec)], **rule_args)

    def _add(
        self,
        steps: list[Fault],
        method: str = "*",
        path: str = "*",
        times: int | None = None,
        probability: float = 1.0,
        after: int = 0,
        idempotency_key: str | None = None,
    ) -> FaultRule:
        if times is not None and times < 1:
            raise ValueError("times must be >= 1 or None")
        if not 0.0 <= probability <= 1.0:
            raise ValueError("probability must be between 0 and 1")
        if idempotency_key is not None and (
            not isinstance(idempotency_key, str) or not idempotency_key
        ):
            raise ValueError("idempotency_key must be a non-empty glob")
        with self._lock:
            rule = FaultRule(
                self._next_id,
                steps,
                method,
                path,
                times,
                probability,
                after,
                idempotency_key,
            )
            self._next_id += 1
            self._rules.append(rule)
        return rule

    def remove(self, rule_id: int) -> bool:
        """Remove one rule; ``False`` if there was none with that id."""
        with self._lock:
            before = len(self._rules)
            self._rules = [r for r in self._rules if r.id != rule_id]
            return len(self._rules) != before

    def clear(self) -> None:
        """Remove every rule."""
        with self._lock:
            self._rules.clear()

    def seed(self, seed: int | None) -> None:
        """Re-seed the RNG behind probabilities and jitter."""
        with self._lock:
            self.rng.seed(seed)

    @property
    def rules(self) -> list[FaultRule]:
        with self._lock:
            return list(self._rules)

    def pick(
        self,
        method: str,
        path: str,
        keys: t.Callable[[], t.Sequence[str]] | None = None,
    ) -> Fault | None:
        """The fault for a request, consuming one step of the rule that
        fires, or ``None``. ``keys`` gives the request's idempotency keys,
        for rules that filter on them."""
        with self._lock:
            for rule in self._rules:
                if rule.exhausted or not rule.matches(method, path, keys):
                    continue
                rule.seen += 1
                if rule.seen <= rule.after:
                    continue
                if rule.probability < 1.0 and self.rng.random() >= rule.probability:
                    continue
                step = rule.steps[rule.fired % len(rule.steps)]
                rule.fired += 1
                return step
        return None

    def jitter(self, upper: float) -> float:
        with self._lock:
            return self.rng.uniform(0.0, upper) if upper > 0 else 0.0


@dataclasses.dataclass
class Held:
    """A request whose answer a ``hold_after_store`` fault is holding."""

    id: int
    method: str
    path: str
    request_id: str
    #: The ``Idempotency-Key`` header, if any.
    idempotency_key: str | None
    #: The status of the answer being held.
    status: int
    #: The ``em_`` id in the answer (a single send), if any.
    email_id: str | None
    #: The longest it is held, in seconds.
    seconds: float
    since: float = dataclasses.field(default_factory=time.monotonic)
    released: threading.Event = dataclasses.field(
        default_factory=threading.Event, repr=False, compare=False
    )

    def to_dict(self) -> dict[str, t.Any]:
        return {
            "id": self.id,
            "method": self.method,
            "path": self.path,
            "request_id": self.request_id,
            "idempotency_key": self.idempotency_key,
            "status": self.status,
            "email_id": self.email_id,
            "seconds": self.seconds,
            "held_for": round(time.monotonic() - self.since, 3),
        }


class Holds:
    """The requests held by ``hold_after_store`` faults. Every hold is
    bounded by its ``seconds``; :meth:`release` ends holds early and
    :meth:`close` ends them all and refuses new ones until :meth:`open`.

    :param on_hold: called each time a request starts being held, once it is
        listed in :attr:`held`.
    """

    def __init__(self, on_hold: t.Callable[[], None] | None = None) -> None:
        self._on_hold = on_hold
        self._cond = threading.Condition()
        self._held: dict[int, Held] = {}
        self._next_id = 1
        self._closed = False

    def hold(
        self,
        seconds: float,
        *,
        method: str,
        path: str,
        request_id: str,
        idempotency_key: str | None,
        status: int,
        email_id: str | None,
    ) -> bool:
        """Block until released or ``seconds`` pass; ``True`` if released
        early (or closed)."""
        if not math.isfinite(seconds) or seconds < 0:
            raise ValueError("a hold needs a finite number of seconds")
        with self._cond:
            if self._closed:
                return True
            held = Held(
                self._next_id,
                method,
                path,
                request_id,
                idempotency_key,
                status,
                email_id,
                seconds,
            )
            self._next_id += 1
            self._held[held.id] = held
            if self._on_hold is not None:
                self._on_hold()  # under the lock: counted once listed
            self._cond.notify_all()
        try:
            return held.released.wait(seconds)
        finally:
            with self._cond:
                self._held.pop(held.id, None)
                self._cond.notify_all()

    @property
    def held(self) -> list[Held]:
        """The requests held now, oldest first."""
        with self._cond:
            return list(self._held.values())

    def release(self, hold_id: int | None = None) -> int:
        """Send the answer of one held request (``hold_id``), or of every
        one; returns how many were released."""
        with self._cond:
            if hold_id is None:
                chosen = list(self._held.values())
            else:
                chosen = [self._held[hold_id]] if hold_id in self._held else []
            for held in chosen:
                held.released.set()
                del self._held[held.id]
            self._cond.notify_all()
        return len(chosen)

    def wait(self, count: int = 1, timeout: float = 5.0) -> list[Held]:
        """Wait until at least ``count`` requests are held and return them.

        :raises TimeoutError: if fewer are held after ``timeout`` seconds.
        """
        if count < 1:
            raise ValueError("count must be >= 1")
        with self._cond:
            if not self._cond.wait_for(lambda: len(self._held) >= count, timeout):
                raise TimeoutError(
                    f"{len(self._held)} requests held after {timeout}s, not {count}"
                )
            return list(self._held.values())

    def close(self) -> int:
        """Release every held request and hold no new ones."""
        with self._cond:
            self._closed = True
        return self.release()

    def open(self) -> None:
        """Hold requests again (after :meth:`close`)."""
        with self._cond:
            self._closed = False
