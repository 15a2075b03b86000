"""Fault injection: rules that make matching API requests misbehave.

A rule matches requests by method and path (a glob such as ``/emails*``) and
holds one fault, or a sequence of faults played in order. Rules are tried in
the order they were added; the first one that fires decides the request.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import random
import threading
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
)
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
        wait ``delay`` (+ up to ``jitter``) seconds, then answer normally.
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
    """

    id: int
    steps: list[Fault]
    method: str = "*"
    path: str = "*"
    times: int | None = None
    probability: float = 1.0
    after: int = 0
    seen: int = 0
    fired: int = 0

    @property
    def exhausted(self) -> bool:
        return self.times is not None and self.fired >= self.times * len(self.steps)

    def matches(self, method: str, path: str) -> bool:
        if self.method != "*" and self.method.upper() != method:
            return False
        return fnmatch.fnmatchcase(path, self.path)

    def to_dict(self) -> dict[str, t.Any]:
        return {
            "id": self.id,
            "method": self.method,
            "path": self.path,
            "times": self.times,
            "probability": self.probability,
            "after": self.after,
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
        **fields: t.Any,
    ) -> FaultRule:
        """Add a rule firing one fault of ``kind`` (see :class:`Fault` for
        the ``fields``), e.g. ``add("error", status=503, path="/emails",
        times=2)``."""
        return self._add(
            [Fault(kind, **fields)], method, path, times, probability, after
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
    ) -> FaultRule:
        """Add a rule that plays ``steps`` in order, one per matching
        request, e.g. ``sequence([503, 503, "pass"], path="/emails")``. A step
        is a :class:`Fault`, a kind, a status or a mapping of fields."""
        faults = [Fault.coerce(step) for step in steps]
        if not faults:
            raise ValueError("a sequence needs at least one step")
        return self._add(faults, method, path, times, probability, after)

    def add_spec(self, spec: t.Mapping[str, t.Any]) -> FaultRule:
        """Add a rule from its JSON form (the admin API's ``POST
        /_sandbox/faults`` body): rule fields plus either ``steps`` or the
        fields of one fault."""
        spec = dict(spec)
        rule_args = {
            name: spec.pop(name)
            for name in ("method", "path", "times", "probability", "after")
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
    ) -> FaultRule:
        if times is not None and times < 1:
            raise ValueError("times must be >= 1 or None")
        if not 0.0 <= probability <= 1.0:
            raise ValueError("probability must be between 0 and 1")
        with self._lock:
            rule = FaultRule(
                self._next_id, steps, method, path, times, probability, after
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

    def pick(self, method: str, path: str) -> Fault | None:
        """The fault for a request, consuming one step of the rule that
        fires, or ``None``."""
        with self._lock:
            for rule in self._rules:
                if rule.exhausted or not rule.matches(method, path):
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
