"""Policy as code: a tenant's detection policy in TOML, its content-derived version, and the
deterministic evaluation of health readings and alerts against it. Policy alone decides."""

from __future__ import annotations

import functools
import hashlib
import json
import sqlite3
import tomllib
from dataclasses import dataclass
from typing import Any, Callable, Mapping

from ..errors import FieldError
from ..ledger.entry import LedgerEvent, utc_timestamp
from ..schema import validate
from ..signals import SEVERITIES, AlertSignal, HealthReading
from ..store import WriteTx

PRIORITIES = ("P0", "P1", "P2", "P3")
# Every kind of breach a health reading can show. Each can open an incident on its own.
BREACH_KINDS = ("unreachable", "timeout", "http_error", "bad_payload", "latency", "errors", "health_score",
                "anomaly", "no_data")

DEFAULT_POLICY_TOML = """\
# AlertEngine detection policy. Every key is optional; these are the defaults.

[thresholds]
p95_ms = 2000.0          # P95 latency above this is a breach (a latency-only outage counts)
error_rate = 0.05        # share of requests failing, 0..1
health_score = 50.0      # a health score below this is a breach
anomaly_score = 3.0      # an anomaly score above this is a breach
availability = true      # unreachable, timeout, HTTP error and unreadable answers are breaches
no_data = false          # a service with no traffic in its window: recorded, opens nothing unless true
http_4xx_is_error = false  # for plain-HTTP health URLs: does a 4xx answer count as an HTTP error?

[detection]
breaches_to_open = 3     # consecutive breaching polls before an incident opens
healthy_to_recover = 3   # consecutive healthy polls before policy declares recovery
min_alert_severity = "low"  # ingested alerts below this severity are recorded, open nothing
auto_resolve_after = 0.0  # seconds without a firing alert after which policy resolves an alert's incident (0: never)
verification_window = 60.0  # seconds after a recovery ran for the service to recover; else FAILED (not_recovered)

[priority.signal]        # priority of a health-poll incident, by its worst breach
unreachable = "P1"
timeout = "P1"
http_error = "P1"
bad_payload = "P2"
errors = "P1"
latency = "P2"
health_score = "P2"
anomaly = "P3"
no_data = "P3"

[priority.severity]      # priority of an ingested alert, by its severity
critical = "P0"
high = "P1"
medium = "P2"
low = "P3"

[escalation]             # priority rises with repeats: deterministic, never above the cap
occurrence_window = 3600.0   # seconds in which firing alerts of one incident are counted
p2_to_p1_occurrences = 5     # P2 (or P3) becomes P1 at this many firing alerts in the window (0: never)
p1_to_p0_occurrences = 10    # P1 becomes P0 likewise (0: never)
p2_to_p1_triage_24h = 3      # a new incident opens one step higher when its alert opened this many in 24 h (0: never)
p1_to_p0_triage_24h = 6
cap = "P0"                   # the highest priority this escalation may reach

[auto_resolve]           # what may close, or be marked for closing, when its alert goes quiet
allowed = ["P2", "P3"]       # priorities auto-resolve may close; candidates are only these
candidate_after = 0.0        # seconds without a firing alert after which an incident is a candidate (0: off)
auto_close = false           # true: close candidates; false: only note them (incident.auto_resolve_candidate)

[slo]                    # the alert loop's objectives (GET /v1/alerts/dashboard reports against them)
ack_p95_seconds = 300.0      # 95 % of incidents acknowledged within this
failed_delivery_rate = 0.05  # at most this share of finished deliveries dead
stuck_after = 600.0          # a delivery still pending after this is stuck
stuck_max = 0                # how many stuck deliveries are tolerated

[actions]
default = "restart service"  # the recovery action policy proposes when a service names none

[diagnosis]
dissent_confidence = 60  # both models at least this sure of different causes: a dissent goes to the engineer

[approvals]
required = 1             # distinct people who must approve a recovery (2: the two-person rule)
ttl_seconds = 300.0      # how long an approval link or button stays valid; then the proposal EXPIRES

# Per-service overrides, by service name: any [thresholds] / [detection] key, and `action`.
# [services.checkout]
# p95_ms = 1200.0
# action = "restart checkout worker pool"
"""

_NUM = {"type": "number", "minimum": 0}
_PRIO = {"type": "string", "enum": list(PRIORITIES)}
THRESHOLDS = {"p95_ms": _NUM, "error_rate": {"type": "number", "minimum": 0, "maximum": 1},
              "health_score": {"type": "number", "minimum": 0, "maximum": 100}, "anomaly_score": _NUM,
              "availability": {"type": "boolean"}, "no_data": {"type": "boolean"},
              "http_4xx_is_error": {"type": "boolean"}}
DETECTION = {"breaches_to_open": {"type": "integer", "minimum": 1, "maximum": 1000},
             "healthy_to_recover": {"type": "integer", "minimum": 1, "maximum": 1000},
             "min_alert_severity": {"type": "string", "enum": list(SEVERITIES)},
             "auto_resolve_after": {"type": "number", "minimum": 0, "maximum": 30 * 86_400},
             "verification_window": {"type": "number", "minimum": 5, "maximum": 86_400}}
ACTION = {"type": "string", "minLength": 1, "maxLength": 200}
APPROVALS = {"required": {"type": "integer", "minimum": 1, "maximum": 5},
             "ttl_seconds": {"type": "number", "minimum": 30, "maximum": 86_400}}
POLICY_SCHEMA = {
    "type": "object", "additionalProperties": False,
    "properties": {
        "thresholds": {"type": "object", "additionalProperties": False, "properties": THRESHOLDS},
        "detection": {"type": "object", "additionalProperties": False, "properties": DETECTION},
        "priority": {"type": "object", "additionalProperties": False, "properties": {
            "signal": {"type": "object", "additionalProperties": False,
                       "properties": {k: _PRIO for k in BREACH_KINDS}},
            "severity": {"type": "object", "additionalProperties": False,
                         "properties": {k: _PRIO for k in SEVERITIES}}}},
        "actions": {"type": "object", "additionalProperties": False, "properties": {"default": ACTION}},
        "escalation": {"type": "object", "additionalProperties": False, "properties": {
            "occurrence_window": {"type": "number", "minimum": 60, "maximum": 7 * 86_400},
            **{k: {"type": "integer", "minimum": 0, "maximum": 100_000} for k in (
                "p2_to_p1_occurrences", "p1_to_p0_occurrences", "p2_to_p1_triage_24h", "p1_to_p0_triage_24h")},
            "cap": _PRIO}},
        "slo": {"type": "object", "additionalProperties": False, "properties": {
            "ack_p95_seconds": {"type": "number", "minimum": 1, "maximum": 86_400},
            "failed_delivery_rate": {"type": "number", "minimum": 0, "maximum": 1},
            "stuck_after": {"type": "number", "minimum": 10, "maximum": 86_400},
            "stuck_max": {"type": "integer", "minimum": 0, "maximum": 1_000_000}}},
        "auto_resolve": {"type": "object", "additionalProperties": False, "properties": {
            "allowed": {"type": "array", "uniqueItems": True, "items": _PRIO},
            "candidate_after": {"type": "number", "minimum": 0, "maximum": 30 * 86_400},
            "auto_close": {"type": "boolean"}}},
        "approvals": {"type": "object", "additionalProperties": False, "properties": APPROVALS},
        "diagnosis": {"type": "object", "additionalProperties": False,
                      "properties": {"dissent_confidence": {"type": "integer", "minimum": 0, "maximum": 100}}},
        "services": {"type": "object", "maxProperties": 10_000, "additionalProperties": {
            "type": "object", "additionalProperties": False,
            "properties": {**THRESHOLDS, **DETECTION, **APPROVALS, "action": ACTION}}},
    },
}


class PolicyError(FieldError):
    """A policy file or document that is not valid; ``field`` is the dotted key."""


def _merge(base: dict[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in over.items():
        out[key] = _merge(out[key], value) if isinstance(value, Mapping) and isinstance(out.get(key), dict) else value
    return out


_DEFAULTS: dict[str, Any] = tomllib.loads(DEFAULT_POLICY_TOML)


@dataclass(frozen=True)
class ServiceRules:
    """The effective rules for one service: tenant policy, its [services.<name>] section, and the
    service's own overrides, in that order."""

    p95_ms: float
    error_rate: float
    health_score: float
    anomaly_score: float
    availability: bool
    no_data: bool
    http_4xx_is_error: bool
    breaches_to_open: int
    healthy_to_recover: int
    min_alert_severity: str
    auto_resolve_after: float
    verification_window: float  # seconds for the service to recover after a recovery ran
    required: int          # approvals needed (two-person rule: 2)
    ttl_seconds: float     # approval validity
    action: str


@dataclass(frozen=True)
class Policy:
    """A validated policy document (defaults filled in) and its content-derived version."""

    doc: dict[str, Any]
    source: str  # the TOML text it came from

    @functools.cached_property
    def version(self) -> str:
        canonical = json.dumps(self.doc, sort_keys=True, separators=(",", ":")).encode()
        return "sha256:" + hashlib.sha256(canonical).hexdigest()[:12]

    def rules(self, service_name: str | None = None, overrides: Mapping[str, Any] | None = None) -> ServiceRules:
        flat: dict[str, Any] = {**self.doc["thresholds"], **self.doc["detection"], **self.doc["approvals"],
                                "action": self.doc["actions"]["default"]}
        if service_name is not None:
            flat.update(self.doc.get("services", {}).get(service_name, {}))
        for key, value in (overrides or {}).items():
            if key in flat:
                flat[key] = value
        return ServiceRules(**{k: flat[k] for k in ServiceRules.__dataclass_fields__})

    def signal_priority(self, kind: str) -> str:
        return self.doc["priority"]["signal"][kind]

    def severity_priority(self, severity: str) -> str:
        return self.doc["priority"]["severity"][severity]


@functools.lru_cache(maxsize=512)
def parse_policy(text: str) -> Policy:
    """Parse and validate a TOML policy; raise PolicyError naming the bad key. Cached by text: the
    poller asks for a tenant's policy on every reading, and it changes rarely."""
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise PolicyError("", f"not valid TOML: {exc}") from None
    except RecursionError:   # arrays or inline tables nested thousands deep
        raise PolicyError("", "not valid TOML: nested too deeply") from None
    try:
        validate(POLICY_SCHEMA, raw)
    except FieldError as exc:
        raise PolicyError(exc.field, exc.message) from None
    return Policy(_merge(_DEFAULTS, raw), text)


DEFAULT_POLICY = parse_policy(DEFAULT_POLICY_TOML)


# --- evaluation ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class Breach:
    kind: str                 # one of BREACH_KINDS
    value: float | str | None
    threshold: float | str | None

    def as_data(self) -> dict[str, Any]:
        return {"kind": self.kind, "value": self.value, "threshold": self.threshold}


def evaluate_reading(reading: HealthReading, rules: ServiceRules) -> list[Breach]:
    """The breaches a reading shows under ``rules``; an empty list means healthy."""
    if reading.outcome != "answered":
        if reading.outcome == "http_error" and reading.http_status is not None and 400 <= reading.http_status < 500 \
                and reading.format == "plain" and not rules.http_4xx_is_error:
            return []
        return [Breach(reading.outcome, reading.http_status or reading.detail or None, None)] if rules.availability else []
    if reading.status == "no_data":
        return [Breach("no_data", reading.sample_size, None)] if rules.no_data else []
    out = []
    if reading.p95_ms is not None and reading.p95_ms > rules.p95_ms:
        out.append(Breach("latency", reading.p95_ms, rules.p95_ms))
    if reading.error_rate is not None and reading.error_rate > rules.error_rate:
        out.append(Breach("errors", reading.error_rate, rules.error_rate))
    if reading.health_score is not None and reading.health_score < rules.health_score:
        out.append(Breach("health_score", reading.health_score, rules.health_score))
    if reading.anomaly_score is not None and reading.anomaly_score > rules.anomaly_score:
        out.append(Breach("anomaly", reading.anomaly_score, rules.anomaly_score))
    return out


def worst_priority(policy: Policy, breaches: list[Breach]) -> str:
    return min((policy.signal_priority(b.kind) for b in breaches), default="P3")


def alert_opens(signal: AlertSignal, rules: ServiceRules) -> bool:
    return SEVERITIES.index(signal.severity) <= SEVERITIES.index(rules.min_alert_severity)


# --- storage ------------------------------------------------------------------------------------

def load_policy(conn: sqlite3.Connection, tenant: str) -> Policy:
    """The tenant's policy: its document, and its smart rules (alerts/rules.py), which are part of
    what the policy version covers: a rule changed is a new policy version."""
    row = conn.execute("SELECT source FROM policies WHERE tenant = ?", (tenant,)).fetchone()
    policy = parse_policy(row[0]) if row else DEFAULT_POLICY
    rules = conn.execute("SELECT id, name, is_active, definition FROM smart_rules WHERE tenant = ? AND deleted IS NULL "
                         "ORDER BY id", (tenant,)).fetchall()
    return _with_rules(policy.source, json.dumps(rules)) if rules else policy


@functools.lru_cache(maxsize=512)
def _with_rules(source: str, rules: str) -> Policy:
    policy = parse_policy(source)
    doc = {**policy.doc, "smart_rules": {str(rid): {"name": name, "is_active": bool(active),
                                                    "rule_definition": json.loads(definition)}
                                         for rid, name, active, definition in json.loads(rules)}}
    return Policy(doc, policy.source)


def _flatten(doc: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in doc.items():
        path = f"{prefix}.{key}" if prefix else key
        if isinstance(value, Mapping):
            out.update(_flatten(value, path))
        else:
            out[path] = value
    return out


def policy_diff(old: Policy, new: Policy) -> dict[str, dict[str, Any]]:
    a, b = _flatten(old.doc), _flatten(new.doc)
    return {k: {"from": a.get(k), "to": b.get(k)} for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)}


def put_policy(tenant: str, text: str, actor: str) -> Callable[[WriteTx], Policy]:
    """Store a tenant's policy; the change is ledgered with its diff and both versions (the
    versions in effect: the document with the tenant's smart rules)."""
    parsed = parse_policy(text)

    def write(tx: WriteTx) -> Policy:
        old = load_policy(tx.conn, tenant)
        tx.execute("INSERT INTO policies (tenant, source, version, updated) VALUES (?, ?, ?, ?) "
                   "ON CONFLICT (tenant) DO UPDATE SET source = excluded.source, version = excluded.version, "
                   "updated = excluded.updated", (tenant, text, parsed.version, utc_timestamp()))
        new = load_policy(tx.conn, tenant)   # with the tenant's smart rules: the version in effect
        if new.version != parsed.version:
            tx.execute("UPDATE policies SET version = ? WHERE tenant = ?", (new.version, tenant))
        diff = policy_diff(old, new)
        tx.append(LedgerEvent(kind="policy.changed", tenant=tenant, actor=actor, policy_version=new.version,
                              reason=f"policy {old.version} -> {new.version}: {len(diff)} setting(s) changed",
                              data={"from_version": old.version, "to_version": new.version, "diff": diff}))
        return new
    return write


def raised(policy: Policy, priority: str, occurrences: int, triage: int) -> tuple[str, str | None]:
    """The priority repeats call for (seed 004's escalation engine): P3/P2 → P1 and P1 → P0 when the
    occurrences in the window or the incidents of the same alert in 24 h reach their thresholds,
    never above the cap; and why, or None when it stays."""
    doc = policy.doc["escalation"]
    cap = PRIORITIES.index(doc["cap"])
    now, why = priority, None
    for src, dst, occ, tri in (("P2", "P1", "p2_to_p1_occurrences", "p2_to_p1_triage_24h"),
                               ("P1", "P0", "p1_to_p0_occurrences", "p1_to_p0_triage_24h")):
        if PRIORITIES.index(now) >= PRIORITIES.index(src) and PRIORITIES.index(dst) >= cap:
            if doc[occ] and occurrences >= doc[occ]:
                now, why = dst, f"{occurrences} firing alerts within {doc['occurrence_window']:g} s (>= {doc[occ]})"
            elif doc[tri] and triage >= doc[tri]:
                now, why = dst, f"{triage} incidents of this alert within 24 h (>= {doc[tri]})"
    return now, why
