"""The tenant's routing document: ordered routing rules, inhibition rules and the defaults for
grouping, retrying and falling back, in TOML (or the same structure in JSON through the API).

Its version is derived from its content, like the detection policy's; every routing decision is
ledgered with the names of the rules that matched and this version. A tenant that never set one
routes by ``DEFAULT_ROUTING_TOML``.

Decisions:

* Routing is its own document, beside the detection policy, because it is owned by whoever runs
  on-call (people and channels) rather than whoever tunes thresholds, and changes on its own
  rhythm. Both are per-tenant, content-versioned and ledgered on change.
* A route's ``match`` keys are ANDed; the values of one key are ORed (``severity = ["critical",
  "high"]``). ``labels`` are matchers with Alertmanager's syntax; ``keywords`` match, without case,
  anywhere in the title or the text.
* Rules are tried in order; the first that matches wins unless it says ``continue = true``.
  When none matches, the fallback receivers are told: nothing is dropped for want of a rule.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import logging
import sqlite3
import tomllib
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Callable

from ..errors import FieldError
from ..ledger.entry import LedgerEvent, utc_timestamp
from ..schema import validate
from ..store import WriteTx
from ..tenancy.tenants import get_tenant
from .chains import BUILT_IN, Chain, parse_chains
from .matchers import Matcher, matches_all, parse_matchers
from .people import check_zone
from .routes_schema import ROUTING_SCHEMA
from .timeintervals import TimeInterval, Window, parse_time_interval, quiet_window
from .vocabulary import (  # noqa: F401  (re-exported: routing's words)
    CATEGORIES,
    EVENTS,
    LOCAL_CHANNELS,
    PRIORITY_SEVERITY,
    RECEIVER_PATTERN,
    REMOTE_CHANNELS,
    SEVERITIES,
    SEVERITY_PRIORITY,
)

log = logging.getLogger("alertengine.routing")
DEFAULT_ROUTING_TOML = """\
# AlertEngine routing. Rules are tried in order; the first match wins unless it says continue = true.
# Receivers: "responders" (the service's primary responders), "responders:secondary", "person:<id>",
# "team:<id>", "schedule:<id>" (whoever is on call), "channel:telegram" (the tenant's default chat),
# "channel:webhook", "channel:file", "channel:jsonl".

[defaults]
receivers = ["channel:telegram", "channel:webhook"]  # the fallback: no rule matched, nobody named, or every channel failed
retry_for = 1800.0        # seconds to keep trying a delivery before it becomes a dead letter
failover_after = 3        # failed attempts on one channel before the next channel of that person is tried
# Grouping is off unless a route (or these defaults) sets group_by. With it, detected, escalated,
# recovered and resolved notifications of the incidents of one group become one message with counts
# (decisions needed, such as proposals, are never grouped):
# group_by = ["service"]  # labels that make a group
# group_wait = 30.0       # seconds to wait for more alerts of a new group before its first message
# group_interval = 300.0  # seconds between messages about a group that changed
# repeat_interval = 0.0   # seconds before a group with open incidents is told again (0: never)

[[route]]
name = "actions"          # a decision is needed or was taken: primary and secondary responders
match = { event = ["proposed", "dissent", "rejected", "executed", "failed", "not_recovered", "expired"] }
receivers = ["responders", "responders:secondary"]
continue = true           # and, when critical, the team's chat too

# Severities answer as seed 003 says: critical escalates at once, high within 5 minutes (the default
# chain: a call at 3 minutes, the secondary at 5), medium within 15, low is only logged.
[[route]]
name = "critical-all"     # every critical incident: its responders and the team's chat, and a call now
match = { severity = ["critical"] }
receivers = ["responders", "channel:telegram"]
escalation = "immediate"

[[route]]
name = "alert-low"        # a low alert: logged (the JSON-lines file and the ledger), nobody paged
match = { category = ["alert"], severity = ["low"] }
receivers = ["channel:jsonl"]
escalation = "none"

[[route]]
name = "alert-medium"     # a medium alert: the responders, and a call if nobody answers in 15 minutes
match = { category = ["alert"], severity = ["medium"] }
receivers = ["responders"]
escalation = "fifteen-minutes"

[[route]]
name = "default"          # everything else: the responders
receivers = ["responders"]

[escalation.immediate]
steps = [
  { after = 0.0, receivers = ["responders"], prefer = "voice", note = "call the primary now" },
  { after = 180.0, receivers = ["responders:secondary"], prefer = "voice", note = "call the secondary" },
]

[escalation.fifteen-minutes]
steps = [
  { after = 900.0, receivers = ["responders"], prefer = "voice", note = "call the primary" },
  { after = 1200.0, receivers = ["responders:secondary"], note = "tell the secondary" },
]
"""

@dataclass(frozen=True)
class Quiet:
    """Quiet hours: inside ``window`` only ``suppress_below`` or worse gets through; the rest is held."""

    window: Window
    suppress_below: str
    then: str            # deliver | summary | drop

    def holds(self, severity: str) -> bool:
        return SEVERITIES.index(severity) > SEVERITIES.index(self.suppress_below)


@dataclass(frozen=True)
class Grouping:
    by: tuple[str, ...]
    wait: float
    interval: float
    repeat: float
    enabled: bool = False       # a route or the defaults set group_by


@dataclass(frozen=True)
class Rule:
    name: str
    severity: frozenset[str]
    priority: frozenset[str]
    category: frozenset[str]
    event: frozenset[str]
    source: frozenset[str]
    service: frozenset[str]
    keywords: tuple[str, ...]
    labels: tuple[Matcher, ...]
    receivers: tuple[str, ...]
    cont: bool
    rate_limit: int
    rate_window: float
    escalate_after: int
    escalate_to: str | None
    quiet: Quiet | None
    grouping: Grouping
    escalation: str | None = None        # the chain its incidents follow (None: the default one)

    def matches(self, event: "RouteEvent") -> bool:
        if self.severity and event.severity not in self.severity:
            return False
        if self.priority and event.priority not in self.priority:
            return False
        if self.category and event.category not in self.category:
            return False
        if self.event and event.event not in self.event:
            return False
        if self.source and event.source not in self.source:
            return False
        if self.service and (event.service or "") not in self.service:
            return False
        if self.keywords:
            haystack = f"{event.title}\n{event.text}".casefold()
            if not any(k.casefold() in haystack for k in self.keywords):
                return False
        return matches_all(self.labels, event.labels)

    def describe(self) -> dict[str, Any]:
        match: dict[str, Any] = {k: sorted(getattr(self, k)) for k in
                                 ("severity", "priority", "category", "event", "source", "service") if getattr(self, k)}
        if self.keywords:
            match["keywords"] = list(self.keywords)
        if self.labels:
            match["labels"] = [str(m) for m in self.labels]
        return {"name": self.name, "match": match, "receivers": list(self.receivers), "continue": self.cont,
                "rate_limit": self.rate_limit, "rate_window": self.rate_window,
                "escalate_after": self.escalate_after, "escalate_to": self.escalate_to,
                "quiet_hours": None if self.quiet is None else
                {"suppress_below": self.quiet.suppress_below, "then": self.quiet.then},
                "grouping": None if not self.grouping.enabled else {
                    "group_by": list(self.grouping.by), "group_wait": self.grouping.wait,
                    "group_interval": self.grouping.interval, "repeat_interval": self.grouping.repeat}}


@dataclass(frozen=True)
class Inhibition:
    name: str
    source: tuple[Matcher, ...]
    target: tuple[Matcher, ...]
    equal: tuple[str, ...]


@dataclass(frozen=True)
class RouteEvent:
    """What routing looks at: one notification about one incident, with the incident's facts."""

    tenant: str
    incident: str | None
    event: str
    priority: str
    severity: str
    category: str
    source: str
    service: str | None
    labels: dict[str, str]
    title: str
    text: str


@dataclass(frozen=True)
class Routing:
    """A validated routing document and its content-derived version."""

    source_text: str
    doc: dict[str, Any]
    rules: tuple[Rule, ...]
    inhibitions: tuple[Inhibition, ...]
    fallback: tuple[str, ...]
    retry_for: float
    failover_after: int
    grouping: Grouping
    chains: dict[str, Chain] = field(default_factory=lambda: {"default": BUILT_IN})
    escalation: str = "default"          # the chain of routes that name none

    def chain_for(self, rule: str | None, service: str | None = None) -> Chain | None:
        """The chain an incident follows: its service's (``escalation`` in the service's settings), else
        that of the rule that first routed it, else the default; None for ``none``. A service naming a
        chain this document does not have gets the default."""
        found = next((r for r in self.rules if r.name == rule), None)
        name = service if service == "none" or service in self.chains else None
        name = name or (found.escalation if found is not None and found.escalation else None) or self.escalation
        return None if name == "none" else self.chains[name]

    @functools.cached_property
    def version(self) -> str:
        canonical = json.dumps(self.doc, sort_keys=True, separators=(",", ":")).encode()
        return "sha256:" + hashlib.sha256(canonical).hexdigest()[:12]


def _quiet(doc: dict[str, Any], field: str) -> Quiet:
    """Quiet hours: ``start``/``end`` (HH:MM, may cross midnight) and/or recurring ``windows``, read in
    ``time_zone`` (default UTC; a window with its own ``location`` keeps it). A window that never
    ends is refused: what it held would never be released."""
    intervals: list[TimeInterval] = []
    zone = check_zone(doc.get("time_zone", "UTC"), f"{field}.time_zone")
    if "start" in doc or "end" in doc:
        if "start" not in doc or "end" not in doc:
            raise FieldError(field, "give both start and end (HH:MM), or windows")
        intervals.append(quiet_window(doc["start"], doc["end"], zone, field))
    for i, item in enumerate(doc.get("windows", [])):
        if isinstance(item, dict) and "location" not in item and "time_zone" not in item:
            item = {**item, "location": zone}
        intervals.append(parse_time_interval(item, f"{field}.windows[{i}]"))
    if not intervals:
        raise FieldError(field, "quiet hours need start and end, or windows")
    window = Window(tuple(intervals))
    now = datetime.now(timezone.utc)
    if window.contains(now) and window.next_change(now) is None:
        raise FieldError(field, "these quiet hours never end: nothing they hold would ever be delivered")
    return Quiet(window, doc.get("suppress_below", "critical"), doc.get("then", "deliver"))


def _grouping(doc: dict[str, Any], base: Grouping | None) -> Grouping:
    b = base or Grouping(("service",), 30.0, 300.0, 0.0)
    return Grouping(tuple(doc.get("group_by", b.by)), float(doc.get("group_wait", b.wait)),
                    float(doc.get("group_interval", b.interval)), float(doc.get("repeat_interval", b.repeat)),
                    b.enabled or "group_by" in doc)


def _rule(doc: dict[str, Any], field: str, grouping: Grouping) -> Rule:
    match = doc.get("match", {})
    if ("escalate_after" in doc) != ("escalate_to" in doc):
        raise FieldError(f"{field}.escalate_to", "escalate_after and escalate_to go together")
    return Rule(doc["name"], *(frozenset(match.get(k, ())) for k in
                               ("severity", "priority", "category", "event", "source", "service")),
                tuple(match.get("keywords", ())),
                parse_matchers(match["labels"], f"{field}.match.labels") if "labels" in match else (),
                tuple(doc["receivers"]), bool(doc.get("continue", False)), int(doc.get("rate_limit", 0)),
                float(doc.get("rate_window", 60.0)), int(doc.get("escalate_after", 0)), doc.get("escalate_to"),
                _quiet(doc["quiet_hours"], f"{field}.quiet_hours") if "quiet_hours" in doc else None,
                _grouping(doc, grouping), doc.get("escalation"))


def build(raw: Any, text: str) -> Routing:
    validate(ROUTING_SCHEMA, raw)
    defaults = raw.get("defaults", {})
    grouping = _grouping(defaults, None)
    names: set[str] = set()
    rules = []
    for i, doc in enumerate(raw.get("route", [])):
        if doc["name"] in names:
            raise FieldError(f"route[{i}].name", f"two routes are named {doc['name']!r}")
        names.add(doc["name"])
        rules.append(_rule(doc, f"route[{i}]", grouping))
    inhibitions = tuple(
        Inhibition(doc.get("name", f"inhibit-{i + 1}"), parse_matchers(doc["source"], f"inhibit[{i}].source"),
                   parse_matchers(doc["target"], f"inhibit[{i}].target"), tuple(doc.get("equal", ())))
        for i, doc in enumerate(raw.get("inhibit", [])))
    chains = parse_chains(raw.get("escalation", {}), RECEIVER_PATTERN)
    escalation = defaults.get("escalation", "default")
    for where, name in [("defaults.escalation", escalation)] + \
            [(f"route[{i}].escalation", r.escalation) for i, r in enumerate(rules) if r.escalation]:
        if name != "none" and name not in chains:
            raise FieldError(where, f"no escalation chain named {name!r} (define [escalation.{name}], or say none)")
    return Routing(text, raw, tuple(rules), inhibitions,
                   tuple(defaults.get("receivers", ("channel:telegram", "channel:webhook"))),
                   float(defaults.get("retry_for", 1800.0)), int(defaults.get("failover_after", 3)), grouping,
                   chains, escalation)


@functools.lru_cache(maxsize=256)
def parse_routing(text: str) -> Routing:
    """Parse and validate a routing document in TOML; raise FieldError naming the bad key."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise FieldError("", "not valid TOML: the text holds a lone surrogate (not UTF-8)") from None
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise FieldError("", f"not valid TOML: {exc}") from None
    except RecursionError:
        raise FieldError("", "not valid TOML: nested too deeply") from None
    return build(raw, text)


def routing_from_json(doc: Any) -> Routing:
    """The same document given as JSON (the API): stored as its canonical JSON text."""
    routing = build(doc, "")
    text = json.dumps(doc, sort_keys=True, indent=1, ensure_ascii=False)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise FieldError("routing", "holds a lone surrogate (not UTF-8)") from None
    return dataclasses.replace(routing, source_text=text)


def parse_any(text: str) -> Routing:
    """A stored document: JSON when it starts with ``{``, TOML otherwise."""
    if text.lstrip().startswith("{"):
        try:
            doc = json.loads(text)
        except (ValueError, RecursionError):
            raise FieldError("", "not valid JSON") from None
        return routing_from_json(doc)
    return parse_routing(text)


DEFAULT_ROUTING = parse_routing(DEFAULT_ROUTING_TOML)


def load_routing(conn: sqlite3.Connection, tenant: str) -> Routing:
    """The tenant's routing. A stored document that no longer validates (it was saved before a rule
    tightened) never stops notifications: the default routing is used, its version is what the
    routing decisions ledger, and the problem is logged."""
    row = conn.execute("SELECT source FROM routing WHERE tenant = ?", (tenant,)).fetchone()
    if row is None:
        return DEFAULT_ROUTING
    try:
        return parse_any(row[0])
    except FieldError as exc:
        log.error("the stored routing of %s is not valid any more (%s): the default routing is used; "
                  "set it again", tenant, exc)
        return DEFAULT_ROUTING


def put_routing(tenant: str, new: Routing, actor: str) -> Callable[[WriteTx], Routing]:
    """Store a tenant's routing document; the change is ledgered with both versions and the rule names."""

    def write(tx: WriteTx) -> Routing:
        get_tenant(tx.conn, tenant)
        old = load_routing(tx.conn, tenant)
        tx.execute("INSERT INTO routing (tenant, source, version, updated) VALUES (?, ?, ?, ?) "
                   "ON CONFLICT (tenant) DO UPDATE SET source = excluded.source, version = excluded.version, "
                   "updated = excluded.updated", (tenant, new.source_text, new.version, utc_timestamp()))
        tx.append(LedgerEvent(kind="routing.changed", tenant=tenant, actor=actor, policy_version=new.version,
                              reason=f"routing {old.version} -> {new.version}: {len(new.rules)} rule(s)",
                              data={"from_version": old.version, "to_version": new.version,
                                    "rules": [r.name for r in new.rules],
                                    "inhibitions": [i.name for i in new.inhibitions]}))
        return new
    return write


def person_quiet(person: Any) -> Quiet | None:
    """A person's own quiet hours (``people.Person.quiet_hours``), read in their time zone."""
    doc = getattr(person, "quiet_hours", None)
    if not doc:
        return None
    return _person_quiet(json.dumps(doc, sort_keys=True), person.time_zone)


@functools.lru_cache(maxsize=1024)
def _person_quiet(doc: str, zone: str) -> Quiet:
    return _quiet({**json.loads(doc), "time_zone": zone}, "quiet_hours")
