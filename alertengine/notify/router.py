"""Who hears about one notification, on which channels, and what stops it: the routing decision.

``plan`` reads the tenant's routing document, people, teams, services, silences and open incidents
and returns a frozen :class:`Plan`: the rules that matched, the severity after any escalation, and
one :class:`Decision` per recipient (send, silenced, inhibited, rate limited, held by quiet hours).
It writes nothing itself; ``count`` says whether to record the rule hits that rate limits and
escalation count (live routing does, inside the same transaction as the outbox rows; a dry run
does not)."""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from ..errors import NotFoundError
from ..schema import validate
from ..tenancy.services import service_spec
from .matchers import matches_all
from .people import Person, expand
from .routes import (
    LOCAL_CHANNELS,
    SEVERITIES,
    Quiet,
    RouteEvent,
    Routing,
    Rule,
    person_quiet,
)
from .schedules import get_schedule
from .silences import active_silences
from .vocabulary import CATEGORIES, EVENTS, PRIORITY_SEVERITY, SEVERITY_PRIORITY

# The channels this appliance can deliver on today, and what each needs from the tenant's settings.
DELIVERABLE = ("telegram", "webhook", "slack", "whatsapp", "voice", *LOCAL_CHANNELS)
CONTACT_ADDRESSES = {"telegram_chat_id": "telegram", "whatsapp": "whatsapp", "phone": "voice", "slack": "slack"}
SEND, SILENCED, INHIBITED, RATE_LIMITED, HELD = "send", "silenced", "inhibited", "rate_limited", "held"


@dataclass(frozen=True)
class Recipient:
    key: str                                   # person:<id>, <role>:<contact name>, channel:<kind>, fallback
    name: str
    chain: tuple[tuple[str, str], ...]         # (channel, address) in the order to try
    unreachable: tuple[str, ...] = ()          # channels of theirs skipped, and why
    quiet: Quiet | None = None                 # a person's own quiet hours, in their time zone


@dataclass(frozen=True)
class Decision:
    rule: str | None
    recipient: Recipient
    outcome: str                               # send | silenced | inhibited | rate_limited | held
    why: str
    release_at: float | None = None            # held: when the quiet window ends (epoch seconds)
    then: str | None = None                    # held: deliver | summary | drop


@dataclass(frozen=True)
class Plan:
    event: RouteEvent
    version: str
    matched: tuple[str, ...]
    severity: str
    escalated_by: str | None
    silenced_by: tuple[str, ...]
    inhibited_by: tuple[str, ...]
    decisions: tuple[Decision, ...]
    fallback: Recipient | None = None          # whose channels are tried after a recipient's own, in order

    @property
    def fallback_chain(self) -> tuple[tuple[str, str], ...]:
        return self.fallback.chain if self.fallback is not None else ()

    def as_data(self) -> dict[str, Any]:
        """What the ledger and the dry run show: names and outcomes; addresses only by channel."""
        return {"event": self.event.event, "matched": list(self.matched), "severity": self.severity,
                "escalated_by": self.escalated_by, "silenced_by": list(self.silenced_by),
                "inhibited_by": list(self.inhibited_by), "fallback_channels": [c for c, _ in self.fallback_chain],
                "decisions": [{"rule": d.rule, "recipient": d.recipient.key, "outcome": d.outcome, "why": d.why,
                               "channels": [c for c, _ in d.recipient.chain],
                               "unreachable": list(d.recipient.unreachable),
                               **({"release_at": d.release_at, "then": d.then,
                                   "release_at_utc": _iso(d.release_at)} if d.outcome == HELD else {})}
                              for d in self.decisions]}


def available_channels(conn: sqlite3.Connection, tenant: str) -> dict[str, str | None]:
    """The tenant's deliverable channels -> their default address (Telegram's default chat, Slack's
    channel; WhatsApp and voice through the tenant's Twilio account, which has none)."""
    out: dict[str, str | None] = {c: None for c in LOCAL_CHANNELS}
    for kind, raw, secrets in conn.execute("SELECT kind, config, secrets FROM channels WHERE tenant = ?", (tenant,)):
        if secrets is None:
            continue
        config = json.loads(raw)
        if kind == "telegram":
            out[kind] = config.get("default_chat_id")
        elif kind == "slack":
            out[kind] = config.get("channel") or ""
        elif kind == "webhook":
            out[kind] = ""
        elif kind == "twilio":
            if config.get("whatsapp_from"):
                out["whatsapp"] = None
            if config.get("from_number"):
                out["voice"] = None
    return out


def _chain(wanted: list[tuple[str, str]], channels: dict[str, str | None]) -> tuple[tuple[tuple[str, str], ...], tuple[str, ...]]:
    chain, skipped = [], []
    for channel, address in wanted:
        if channel not in channels:
            skipped.append(f"{channel}: not set up for this tenant" if channel in DELIVERABLE
                           else f"{channel}: not available on this appliance yet")
        elif (channel, address) not in chain:
            chain.append((channel, address))
    return tuple(chain), tuple(skipped)


def _person_recipient(person: Person, channels: dict[str, str | None], key: str | None = None) -> Recipient:
    chain, skipped = _chain([(c, person.addresses[c]) for c in person.channels], channels)
    return Recipient(key or f"person:{person.id}", person.name, chain, skipped, person_quiet(person))


def _channel_recipient(kind: str, channels: dict[str, str | None]) -> Recipient:
    address = channels.get(kind)
    if kind == "telegram" and not address:
        return Recipient(f"channel:{kind}", kind, (), ("telegram: no default chat set for this tenant",))
    if kind in ("whatsapp", "voice"):    # numbers belong to people: there is no tenant-wide one
        return Recipient(f"channel:{kind}", kind, (), (f"{kind}: name a person, team or schedule, not the channel",))
    chain, skipped = _chain([(kind, address or "")], channels)
    return Recipient(f"channel:{kind}", kind, chain, skipped)


def people_of(conn: sqlite3.Connection, tenant: str, refs: list[str], at: datetime) -> list[Person]:
    """The people ``person:``, ``team:`` and ``schedule:`` references name at ``at`` (a schedule: whoever
    is on call then), in order, each once; references that name nobody are skipped."""
    out: dict[str, Person] = {}
    for ref in refs:
        kind, _, ident = ref.partition(":")
        found: list[Person] = []
        if kind == "schedule":
            try:
                person, _why = get_schedule(conn, tenant, ident).on_call(at)
                found = expand(conn, tenant, [f"person:{person}"]) if person else []
            except NotFoundError:
                found = []
        else:
            found = expand(conn, tenant, [ref])
        for p in found:
            out.setdefault(p.id, p)
    return list(out.values())


def responders(conn: sqlite3.Connection, tenant: str, spec: dict[str, Any] | None, role: str,
               channels: dict[str, str | None], at: datetime | None = None) -> list[Recipient]:
    """A service's responders in ``role``: its contact (with the contact's own addresses) and the
    people and teams it names."""
    if not spec:
        return []
    out = []
    contact = spec.get("contacts", {}).get(role)
    if contact:
        wanted = [(ch, contact[field]) for field, ch in CONTACT_ADDRESSES.items() if contact.get(field)]
        chain, skipped = _chain(wanted, channels)
        # keyed as approval tokens name a service's contact: "<role>:<name>"
        out.append(Recipient(f"{role}:{contact.get('name') or role}", contact.get("name") or f"{role} contact",
                             chain, skipped))
    for person in people_of(conn, tenant, list(spec.get("responders", {}).get(role, [])),
                            at or datetime.now(timezone.utc)):
        out.append(_person_recipient(person, channels))
    return out


def resolve(conn: sqlite3.Connection, tenant: str, receivers: tuple[str, ...], spec: dict[str, Any] | None,
            channels: dict[str, str | None], at: datetime | None = None) -> list[Recipient]:
    out: dict[str, Recipient] = {}
    when = at or datetime.now(timezone.utc)
    for receiver in receivers:
        if receiver in ("responders", "responders:secondary"):
            found = responders(conn, tenant, spec, "secondary" if receiver.endswith("secondary") else "primary",
                               channels, when)
        elif receiver.startswith("channel:"):
            found = [_channel_recipient(receiver.partition(":")[2], channels)]
        else:
            found = [_person_recipient(p, channels) for p in people_of(conn, tenant, [receiver], when)]
        for recipient in found:
            out.setdefault(recipient.key, recipient)
    return list(out.values())


def fallback(conn: sqlite3.Connection, tenant: str, routing: Routing, channels: dict[str, str | None]) -> Recipient:
    """One recipient whose chain is every fallback receiver's channels, in order."""
    chain: list[tuple[str, str]] = []
    for recipient in resolve(conn, tenant, routing.fallback, None, channels):
        chain.extend(c for c in recipient.chain if c not in chain)
    return Recipient("fallback", "fallback channels", tuple(chain),
                     () if chain else ("no fallback channel is set up for this tenant",))


def _hits(conn: sqlite3.Connection, tenant: str, rule: Rule, now: float, window: float, *, sent_only: bool) -> int:
    """How often ``rule`` matched in the window (escalate_after counts these), or how often it sent
    something (rate_limit counts these: what a silence or quiet hours stopped uses up no limit)."""
    row = conn.execute("SELECT count(*) FROM route_hits WHERE tenant = ? AND rule = ? AND at > ?"
                       + (" AND sent = 1" if sent_only else ""), (tenant, rule.name, now - window)).fetchone()
    return int(row[0])


def _inhibitors(conn: sqlite3.Connection, routing: Routing, event: RouteEvent) -> list[str]:
    """Open incidents that mute this one: each matches an inhibition rule's source, this event its
    target, and both have the same values of the rule's ``equal`` labels."""
    rules = [r for r in routing.inhibitions if matches_all(r.target, event.labels)]
    if not rules:
        return []
    out = []
    service_labels: dict[str | None, dict[str, str]] = {}
    for inc_id, priority, service, source, raw, service_id in conn.execute(
            "SELECT id, priority, service_name, source, labels, service_id FROM incidents WHERE tenant = ? "
            "AND is_open = 1 AND id != ? ORDER BY opened_at DESC LIMIT 5000", (event.tenant, event.incident or "")):
        if service_id not in service_labels:
            service_labels[service_id] = (service_spec(conn, event.tenant, service_id) or {}).get("labels", {})
        labels = incident_labels(json.loads(raw), priority, service, source, service_labels[service_id])
        for rule in rules:
            # As in Alertmanager, incidents that match both sides of a rule do not mute each other.
            both = matches_all(rule.source, event.labels) and matches_all(rule.target, labels)
            if matches_all(rule.source, labels) and not both \
                    and all(labels.get(k, "") == event.labels.get(k, "") for k in rule.equal):
                out.append(f"{inc_id} ({rule.name})")
                break
    return out


def incident_labels(labels: dict[str, str], priority: str, service: str | None, source: str,
                    service_labels: dict[str, str] | None = None) -> dict[str, str]:
    """The label set routing matches: the service's labels, the alert's, and the incident's facts."""
    out = {**(service_labels or {}), **labels}
    out.setdefault("severity", PRIORITY_SEVERITY.get(priority, "low"))
    out["priority"] = priority
    if service:
        out.setdefault("service", service)
    out.setdefault("source", source)
    return out


def plan(conn: sqlite3.Connection, routing: Routing, event: RouteEvent, now: float,
         receivers: tuple[str, ...] | None = None, by: str | None = None) -> Plan:
    """Route one notification (live routing and the dry run alike). This notification counts as one
    trigger of each rule it matches for ``escalate_after``; the caller records the hits of
    ``Plan.matched`` (live routing does, a dry run does not).

    With ``receivers`` the rules are not consulted: those receivers are told, under the name ``by``
    (an escalation step). Silences, inhibition and people's quiet hours hold for them all the same."""
    at = datetime.fromtimestamp(now, timezone.utc)
    matched: list[Rule] = []
    for rule in routing.rules if receivers is None else ():
        if rule.matches(event):
            matched.append(rule)
            if not rule.cont:
                break
    severity, escalated_by = event.severity, None
    for rule in matched:
        if rule.escalate_after and rule.escalate_to and \
                _hits(conn, event.tenant, rule, now, rule.rate_window, sent_only=False) + 1 >= rule.escalate_after \
                and SEVERITIES.index(rule.escalate_to) < SEVERITIES.index(severity):
            severity, escalated_by = rule.escalate_to, rule.name
    # A notice about a silence is never muted by it (nor by any other): people must hear that it began.
    silenced_by = () if event.event == "silence" else \
        tuple(s.id for s in active_silences(conn, event.tenant, at) if s.matches(event.labels))
    inhibited_by = tuple(_inhibitors(conn, routing, event)) if event.incident else ()
    channels = available_channels(conn, event.tenant)
    spec = event_service(conn, event)
    decisions: dict[str, Decision] = {}
    told = [(r.name, r.receivers, r) for r in matched] if receivers is None else [(by or "direct", receivers, None)]
    for name, names, rule in told:
        limited = rule is not None and rule.rate_limit and \
            _hits(conn, event.tenant, rule, now, rule.rate_window, sent_only=True) >= rule.rate_limit
        for recipient in resolve(conn, event.tenant, names, spec, channels, at):
            if silenced_by:
                decision = Decision(name, recipient, SILENCED, f"silenced by {', '.join(silenced_by)}")
            elif inhibited_by:
                decision = Decision(name, recipient, INHIBITED, f"inhibited by {', '.join(inhibited_by)}")
            elif limited:
                assert rule is not None
                decision = Decision(name, recipient, RATE_LIMITED,
                                    f"rule {name} already sent {rule.rate_limit} in {rule.rate_window:g} s")
            else:
                decision = _quiet_or_send(name, recipient, rule.quiet if rule else None, severity, at)
            kept = decisions.get(recipient.key)
            if kept is None or (kept.outcome != SEND and decision.outcome == SEND):
                decisions[recipient.key] = decision
    last_resort = fallback(conn, event.tenant, routing, channels)
    if not decisions:   # nothing is dropped for want of a rule or a person: the fallback hears it
        why = "nobody named is reachable" if receivers is not None else \
            "no rule matched" if not matched else "the matching rules name nobody reachable"
        decisions["fallback"] = Decision(by if receivers is not None else None, last_resort,
                                         SILENCED if silenced_by else INHIBITED if inhibited_by else SEND,
                                         f"fallback: {why}")
    return Plan(event, routing.version, tuple(r.name for r in matched), severity, escalated_by, silenced_by,
                inhibited_by, tuple(decisions.values()), last_resort)


def _quiet_or_send(name: str, recipient: Recipient, quiet: Quiet | None, severity: str, at: datetime) -> Decision:
    """Held by the rule's quiet hours, or by the person's own, or sent."""
    for whose, q in ((f"rule {name}", quiet), (recipient.name, recipient.quiet)):
        if q is not None and q.holds(severity) and q.window.contains(at):
            end = q.window.next_change(at)
            return Decision(name, recipient, HELD, f"quiet hours of {whose}: below {q.suppress_below}",
                            end.timestamp() if end else None, q.then)
    return Decision(name, recipient, SEND, f"rule {name}")


def _iso(at: float | None) -> str | None:
    return None if at is None else datetime.fromtimestamp(at, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def event_service(conn: sqlite3.Connection, event: RouteEvent) -> dict[str, Any] | None:
    if not event.service:
        return None
    row = conn.execute("SELECT id FROM services WHERE tenant = ? AND name = ?", (event.tenant, event.service)).fetchone()
    return service_spec(conn, event.tenant, row[0]) if row else None


SAMPLE_EVENT = {
    "type": "object", "additionalProperties": False,
    "properties": {
        "event": {"type": "string", "enum": list(EVENTS)},
        "severity": {"type": "string", "enum": list(SEVERITIES)},
        "priority": {"type": "string", "enum": list(PRIORITY_SEVERITY)},
        "category": {"type": "string", "enum": list(CATEGORIES)},
        "source": {"type": "string", "maxLength": 128}, "service": {"type": "string", "maxLength": 128},
        "labels": {"type": "object", "maxProperties": 64, "additionalProperties": {"type": "string", "maxLength": 1024}},
        "title": {"type": "string", "maxLength": 1000}, "text": {"type": "string", "maxLength": 4000},
        "message": {"type": "string", "maxLength": 4000, "description": "same as text (the alert router's word)"},
    },
}


def sample_event(tenant: str, body: Any) -> RouteEvent:
    """A made-up notification for a dry run: ``{"severity": "critical", "service": "checkout", "labels": {...}}``.
    Severity and priority fill each other in (default medium / P2)."""
    validate(SAMPLE_EVENT, body)
    priority = body.get("priority") or SEVERITY_PRIORITY[body.get("severity", "medium")]
    severity = body.get("severity") or PRIORITY_SEVERITY[priority]
    labels = {**body.get("labels", {})}
    labels.setdefault("severity", severity)
    labels["priority"] = priority
    if body.get("service"):
        labels.setdefault("service", body["service"])
    source = body.get("source", "test")
    labels.setdefault("source", source)
    text = body.get("text", body.get("message", ""))
    return RouteEvent(tenant, None, body.get("event", "detected"), priority, severity, body.get("category", "alert"),
                      source, body.get("service"), labels, body.get("title", text[:200]), text)
