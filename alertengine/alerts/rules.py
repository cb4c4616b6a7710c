"""Smart rules: their definition, its validation, and the pure judgement of one rule against
metrics or a run of events.

A rule is ``{name, is_active, rule_definition}``; the definition's ``condition_type`` is one of

* ``threshold``: ``metric``, ``operator`` (``>``, ``<``, ``>=``, ``<=``, ``==``), ``threshold``;
* ``pattern``: ``{"pattern": {"event": name, "count": n, "window_minutes": m}}`` (n such events
  within m minutes) or ``{"pattern": {"sequence": [names...], "window_minutes": m}}`` (those
  events in that order, others may come between, within m minutes);
* ``anomaly``: ``metric``, ``sensitivity`` (0-1) and an optional ``historical_average``; without
  one, the appliance learns the metric's mean and spread (``Baseline``) and judges once it has
  seen ``MIN_SAMPLES`` values.

and every definition may say ``severity`` (default ``medium``), ``cooldown_minutes`` (default 5),
``max_alerts_per_hour`` (default 20) and ``service`` (only that service's readings).

Decisions written here:

* Anomaly with ``historical_average`` H: a value is anomalous when it is off H by at least
  ``1 - sensitivity`` of H (sensitivity 0.8: 20 % above or below); with H = 0, any non-zero value.
  With a learned baseline: when it is at least ``z = 1 + 4 * (1 - sensitivity)`` standard
  deviations from the mean (sensitivity 1: one deviation; 0: five). A constant history (no spread)
  makes any different value anomalous.
* ``==`` on numbers compares exactly: 80 == 80.0 holds, 80.0000001 does not.
"""

from __future__ import annotations

import collections
import math
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

from ..errors import FieldError
from ..schema import validate
from ..signals import SEVERITIES

CONDITIONS = ("threshold", "pattern", "anomaly")
OPERATORS = (">", "<", ">=", "<=", "==")
MIN_SAMPLES = 10            # values a learned baseline needs before it judges
MAX_WINDOW_MINUTES = 1440   # patterns look back at most a day
MAX_SEQUENCE = 20
METRIC_PATTERN = r"^[A-Za-z][A-Za-z0-9_.:-]{0,127}$"
EVENT_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.:/ -]{0,127}$"

# Metrics the appliance measures itself, by family; any other name is read from the observations
# a tenant sends (POST /ingest/observations), such as the seed's risk_score.
SERVICE_METRICS = ("service.health_score", "service.p95_ms", "service.error_rate", "service.anomaly_score",
                   "service.availability", "service.latency_ms")
SYSTEM_METRICS = ("system.cpu_percent", "system.memory_percent", "system.disk_percent")
APPLIANCE_METRICS = ("deliveries.pending", "deliveries.failed_last_hour", "deliveries.failed_rate",
                     "approvals.pending", "approvals.expired_last_hour")
RATE_METRIC = "events_per_minute"        # every observation and ingested alert of the last minute
RATE_ALIASES = {"actions_per_minute": RATE_METRIC}   # the seed's name for it
RESERVED_PREFIXES = ("service.", "system.", "deliveries.", "approvals.")

_NAME = {"type": "string", "minLength": 1, "maxLength": 200}
DEFINITION_SCHEMA = {
    "type": "object", "additionalProperties": False, "required": ["condition_type"],
    "properties": {
        "condition_type": {"type": "string", "enum": list(CONDITIONS)},
        "metric": {"type": "string", "pattern": METRIC_PATTERN},
        "operator": {"type": "string", "enum": list(OPERATORS)},
        "threshold": {"type": "number", "minimum": -1e15, "maximum": 1e15},
        "pattern": {"type": "object", "additionalProperties": False, "properties": {
            "event": {"type": "string", "pattern": EVENT_PATTERN},
            "count": {"type": "integer", "minimum": 1, "maximum": 100_000},
            "sequence": {"type": "array", "minItems": 2, "maxItems": MAX_SEQUENCE,
                         "items": {"type": "string", "pattern": EVENT_PATTERN}},
            "window_minutes": {"type": "number", "minimum": 0.1, "maximum": MAX_WINDOW_MINUTES}}},
        "sensitivity": {"type": "number", "minimum": 0, "maximum": 1},
        "historical_average": {"type": "number", "minimum": 0, "maximum": 1e15},
        "severity": {"type": "string", "enum": list(SEVERITIES)},
        "cooldown_minutes": {"type": "number", "minimum": 0, "maximum": 7 * 1440},
        "max_alerts_per_hour": {"type": "integer", "minimum": 1, "maximum": 100_000},
        "service": {"type": "string", "minLength": 1, "maxLength": 128},
    },
}
RULE_INPUT = {
    "type": "object", "additionalProperties": False, "required": ["name", "rule_definition"],
    "properties": {"name": _NAME, "is_active": {"type": "boolean"}, "rule_definition": DEFINITION_SCHEMA},
}
RULE_PATCH = {
    "type": "object", "additionalProperties": False, "minProperties": 1,
    "properties": {"name": _NAME, "is_active": {"type": "boolean"}, "rule_definition": DEFINITION_SCHEMA},
}
DEFAULTS = {"severity": "medium", "cooldown_minutes": 5.0, "max_alerts_per_hour": 20}


@dataclass(frozen=True)
class SmartRule:
    id: int
    tenant: str
    name: str
    is_active: bool
    definition: Mapping[str, Any]      # as given, with the defaults filled in

    @property
    def condition(self) -> str:
        return str(self.definition["condition_type"])

    @property
    def metric(self) -> str | None:
        metric = self.definition.get("metric")
        return RATE_ALIASES.get(metric, metric) if metric else None

    @property
    def severity(self) -> str:
        return str(self.definition["severity"])

    @property
    def cooldown(self) -> float:
        """Seconds after an alert before the same rule (and subject) may alert again."""
        return float(self.definition["cooldown_minutes"]) * 60.0

    @property
    def hourly_cap(self) -> int:
        return int(self.definition["max_alerts_per_hour"])

    @property
    def window(self) -> float:
        return float(self.definition["pattern"]["window_minutes"]) * 60.0 if self.condition == "pattern" else 0.0

    @property
    def events(self) -> frozenset[str]:
        """The event names a pattern rule watches."""
        if self.condition != "pattern":
            return frozenset()
        pattern = self.definition["pattern"]
        return frozenset(pattern.get("sequence") or [pattern["event"]])

    def public(self) -> dict[str, Any]:
        return {"id": self.id, "name": self.name, "is_active": self.is_active, "rule_definition": dict(self.definition)}


def check_definition(definition: Any) -> dict[str, Any]:
    """A definition checked, with its defaults filled in; FieldError names what is wrong."""
    validate(DEFINITION_SCHEMA, definition, "rule_definition")
    out = {**DEFAULTS, **definition}
    kind = out["condition_type"]
    where = "rule_definition"

    def need(*names: str) -> None:
        for name in names:
            if name not in out:
                raise FieldError(f"{where}.{name}", f"a {kind} rule needs {name}")

    def refuse(*names: str) -> None:
        for name in names:
            if name in out:
                raise FieldError(f"{where}.{name}", f"a {kind} rule has no {name}")
    if kind == "threshold":
        need("metric", "operator", "threshold")
        refuse("pattern", "sensitivity", "historical_average")
    elif kind == "anomaly":
        need("metric", "sensitivity")
        refuse("pattern", "operator", "threshold")
    else:
        need("pattern")
        refuse("metric", "operator", "threshold", "sensitivity", "historical_average")
        pattern = out["pattern"]
        if "window_minutes" not in pattern:
            raise FieldError(f"{where}.pattern.window_minutes", "a pattern needs window_minutes")
        if ("event" in pattern) == ("sequence" in pattern):
            raise FieldError(f"{where}.pattern", "give either event (with count) or sequence")
        if "event" in pattern and "count" not in pattern:
            raise FieldError(f"{where}.pattern.count", "an event pattern needs count")
        if "sequence" in pattern and "count" in pattern:
            raise FieldError(f"{where}.pattern.count", "a sequence has no count")
    if "metric" in out:
        check_metric(out["metric"], f"{where}.metric")
    if "service" in out and not str(out.get("metric", "")).startswith("service."):
        raise FieldError(f"{where}.service", "only service.* metrics are per service")
    return out


def check_metric(metric: str, field: str) -> None:
    if metric.startswith(RESERVED_PREFIXES) and metric not in SERVICE_METRICS + SYSTEM_METRICS + APPLIANCE_METRICS:
        known = [m for m in SERVICE_METRICS + SYSTEM_METRICS + APPLIANCE_METRICS if m.split(".")[0] == metric.split(".")[0]]
        raise FieldError(field, f"no such metric; the {metric.split('.')[0]} metrics are {', '.join(known)}")


def family(metric: str) -> str:
    """Where a metric comes from: service (each poll), tick (the appliance's own, measured every
    round) or observation (what the tenant sends)."""
    if metric.startswith("service."):
        return "service"
    if metric in SYSTEM_METRICS or metric in APPLIANCE_METRICS or metric == RATE_METRIC \
            or metric.startswith(RATE_METRIC + "."):
        return "tick"
    return "observation"


# --- judgement ----------------------------------------------------------------------------------

def compare(value: float, operator: str, threshold: float) -> bool:
    if operator == ">":
        return value > threshold
    if operator == "<":
        return value < threshold
    if operator == ">=":
        return value >= threshold
    if operator == "<=":
        return value <= threshold
    if operator == "==":
        return value == threshold
    raise ValueError(f"unknown operator {operator!r}")


@dataclass
class Baseline:
    """A metric's running mean and spread (Welford), learned from every value seen."""

    n: int = 0
    mean: float = 0.0
    m2: float = 0.0

    def add(self, value: float) -> None:
        self.n += 1
        delta = value - self.mean
        self.mean += delta / self.n
        self.m2 += delta * (value - self.mean)

    @property
    def std(self) -> float:
        return math.sqrt(self.m2 / (self.n - 1)) if self.n > 1 else 0.0


@dataclass(frozen=True)
class Verdict:
    fired: bool
    value: float | None
    message: str              # the alert's message when fired; otherwise why not


def judge_value(rule: SmartRule, value: float, baseline: Baseline | None = None) -> Verdict:
    """A threshold or anomaly rule against one value. The baseline is what was learned before this
    value (the caller adds the value afterwards)."""
    d = rule.definition
    metric = d["metric"]
    if rule.condition == "threshold":
        fired = compare(value, d["operator"], float(d["threshold"]))
        return Verdict(fired, value, f"{rule.name}: {metric} is {_num(value)} (threshold: {d['operator']} "
                                     f"{_num(d['threshold'])})")
    sensitivity = float(d["sensitivity"])
    if "historical_average" in d:
        average = float(d["historical_average"])
        allowed = (1.0 - sensitivity) * average
        off = abs(value - average)
        fired = off > 0 and off >= allowed
        return Verdict(fired, value, f"{rule.name}: {metric} is {_num(value)}, {_pct(off, average)} off its "
                                     f"historical average {_num(average)} (sensitivity {sensitivity:g})")
    if baseline is None or baseline.n < MIN_SAMPLES:
        seen = baseline.n if baseline else 0
        return Verdict(False, value, f"still learning {metric}: {seen} of {MIN_SAMPLES} values seen")
    z = 1.0 + 4.0 * (1.0 - sensitivity)
    std = baseline.std
    off = abs(value - baseline.mean)
    fired = off > 0 and (std == 0 or off >= z * std)
    sigmas = "a constant history" if std == 0 else f"{off / std:.1f} standard deviations"
    return Verdict(fired, value, f"{rule.name}: {metric} is {_num(value)}, {sigmas} from its learned mean "
                                 f"{_num(baseline.mean)} (needs {z:g}; sensitivity {sensitivity:g})")


def judge_events(rule: SmartRule, events: Sequence[tuple[float, str]], now: float) -> Verdict:
    """A pattern rule against the events seen (time, name), oldest first, ending with the newest."""
    pattern = rule.definition["pattern"]
    window = rule.window
    recent = [name for at, name in events if now - window <= at <= now]
    if "event" in pattern:
        count = sum(1 for name in recent if name == pattern["event"])
        return Verdict(count >= int(pattern["count"]), float(count), _pattern_message(rule, count))
    sequence = list(pattern["sequence"])
    fired = bool(recent) and recent[-1] == sequence[-1] and _in_order(sequence, recent)
    return Verdict(fired, None, _pattern_message(rule, None))


def judge_pattern_fired(rule: SmartRule) -> Verdict:
    """The verdict of a pattern ``PatternState`` found complete."""
    pattern = rule.definition["pattern"]
    count = int(pattern["count"]) if "event" in pattern else None
    return Verdict(True, None if count is None else float(count), _pattern_message(rule, count))


def _pattern_message(rule: SmartRule, count: int | None) -> str:
    pattern = rule.definition["pattern"]
    m = pattern["window_minutes"]
    minutes = f"{m:g} minute{'s' if m != 1 else ''}"
    if "event" in pattern:
        return f"{rule.name}: {pattern['event']} seen {count} times within {minutes} (threshold: {pattern['count']})"
    return f"{rule.name}: {' -> '.join(pattern['sequence'])} within {minutes}"


class PatternState:
    """A pattern rule's progress, kept as events arrive, in constant work per event whatever the
    window holds: the times of its event (a count pattern), or for each prefix of its sequence
    the latest time a match of that prefix can start. ``add`` says whether this event completes
    the pattern within the window; when it does, the events that made it are spent (the next
    alert needs a new match). Equivalent to ``judge_events`` over the events since the last match."""

    def __init__(self, rule: SmartRule) -> None:
        pattern = rule.definition["pattern"]
        self.window = rule.window
        self.event: str | None = pattern.get("event")
        self.count = int(pattern.get("count", 0))
        self.sequence: list[str] = list(pattern.get("sequence") or [])
        self.times: collections.deque[float] = collections.deque(maxlen=max(self.count, 1))
        self.starts: list[float] = [-math.inf] * (len(self.sequence) + 1)

    def add(self, at: float, name: str) -> bool:
        if self.event is not None:
            if name != self.event:
                return False
            self.times.append(at)
            while self.times and self.times[0] < at - self.window:
                self.times.popleft()
            if len(self.times) >= self.count:
                self.times.clear()
                return True
            return False
        completed = -math.inf
        for k in range(len(self.sequence) - 1, -1, -1):     # longest prefix first: one event, one step
            if self.sequence[k] != name:
                continue
            start = at if k == 0 else self.starts[k]
            if start > self.starts[k + 1]:
                self.starts[k + 1] = start
                if k + 1 == len(self.sequence):
                    completed = start
        if completed >= at - self.window:
            self.starts = [-math.inf] * (len(self.sequence) + 1)
            return True
        return False


def _in_order(sequence: list[str], names: list[str]) -> bool:
    """Whether ``sequence`` occurs in ``names`` in order (other names may come between)."""
    i = 0
    for name in names:
        if name == sequence[i]:
            i += 1
            if i == len(sequence):
                return True
    return False


def _num(value: Any) -> str:
    number = float(value)
    return str(int(number)) if number.is_integer() and abs(number) < 1e15 else f"{number:g}"


def _pct(off: float, base: float) -> str:
    return "infinitely" if base == 0 else f"{off / base * 100:.0f} %"
