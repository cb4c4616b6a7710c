"""One ingest request's alerts, judged one after another but written together.

An Alertmanager group carries up to hundreds of alerts; judged one by one, each awaited its own
durable commits (its ``alert.received`` entry, a count of the repeat, the incident it joined), so a
50-alert request waited for a hundred commits. Detection now gathers, per request, what does not
change an incident's stage — the alerts' own records, repeats counted per incident, alerts joining
an open incident (priority and common labels) — and :meth:`Detector.settle` writes all of it in
one transaction, then tells people once per incident rather than once per alert.

What changes an incident (opening one, a resolve, an acknowledge) is still done at once, in order:
and before a resolve or an acknowledge the batch so far is settled, since whether an incident
still has alerts firing is read from the ledger.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

from ..signals import AlertSignal
from ..store import WriteTx
from .alertkeys import incident_fingerprint
from .engine import PRIORITIES, Incident
from .policy import Policy


@dataclass
class Join:
    """Alerts of one request joining one open incident."""

    incident: Incident
    policy_version: str
    priority: str                       # the highest any of them asks for
    reason: str                         # of the alert that asked for it
    data: dict[str, Any]
    labels: list[dict[str, str]] = field(default_factory=list)
    titles: list[str] = field(default_factory=list)

    def add(self, priority: str, reason: str, data: dict[str, Any], labels: dict[str, str], title: str) -> None:
        if PRIORITIES.index(priority) < PRIORITIES.index(self.priority):
            self.priority, self.reason, self.data = priority, reason, data
        self.labels.append(labels)
        self.titles.append(title)


@dataclass
class AlertBatch:
    """What one request's alerts will write together (see :meth:`Detector.settle`)."""

    records: list[Callable[[WriteTx], None]] = field(default_factory=list)
    repeats: dict[tuple[str, str], tuple[Incident, int]] = field(default_factory=dict)
    joins: dict[tuple[str, str], Join] = field(default_factory=dict)
    event_ids: set[str] = field(default_factory=set)   # judged in this request, not yet in the ledger
    # (tenant, fingerprint) -> (its open incident, its episode), read once per request; dropped
    # whenever an alert may open, resolve or acknowledge that incident, and at every settle
    incidents: dict[tuple[str, str], tuple[Incident | None, int]] = field(default_factory=dict)
    policies: dict[str, Policy] = field(default_factory=dict)   # each tenant's, read once per request
    checked: set[str] = field(default_factory=set)      # event ids looked up in the ledger by prefetch
    ledgered: set[str] = field(default_factory=set)     # ... and those found there
    # id(signal) -> (the signal, its incident fingerprint): computed once per alert, by prefetch
    keys: dict[int, tuple[AlertSignal, str]] = field(default_factory=dict)

    # (tenant, source, alert fingerprint) of each record's alert: the writer looks up their alerts at once
    alert_keys: list[tuple[str, str, str]] = field(default_factory=list)
    # (tenant, service name, id of its ServiceRef) -> the policy's rules for it, once per request
    service_rules: dict[tuple[str, str | None, int], tuple[Any, Any]] = field(default_factory=dict)

    def rules(self, tenant: str, policy: Policy, service: Any, name: str | None) -> Any:
        """``policy.rules`` for the alert's service (its ServiceRef, or None and the name it gave)."""
        key = (tenant, service.name if service else name, id(service))
        held = self.service_rules.get(key)
        if held is None or held[0] is not policy:
            held = self.service_rules[key] = (policy, policy.rules(service.name if service else name,
                                                                   service.overrides if service else None))
        return held[1]

    def fingerprint(self, signal: AlertSignal) -> str:
        """``incident_fingerprint(signal)``, computed once per request."""
        held = self.keys.get(id(signal))
        if held is not None and held[0] is signal:
            return held[1]
        fp = incident_fingerprint(signal)
        self.keys[id(signal)] = (signal, fp)
        return fp

    def policy(self, tenant: str, load: Callable[[str], Policy]) -> Policy:
        if tenant not in self.policies:
            self.policies[tenant] = load(tenant)
        return self.policies[tenant]

    def repeat(self, incident: Incident) -> None:
        key = (incident.tenant, incident.id)
        held = self.repeats.get(key)
        self.repeats[key] = (incident, (held[1] if held else 0) + 1)

    def join(self, incident: Incident, policy_version: str, priority: str, reason: str, data: dict[str, Any],
             labels: dict[str, str], title: str) -> None:
        key = (incident.tenant, incident.id)
        if key not in self.joins:
            self.joins[key] = Join(incident, policy_version, priority, reason, data)
            self.joins[key].labels.append(labels)
            self.joins[key].titles.append(title)
        else:
            self.joins[key].add(priority, reason, data, labels, title)

    def __bool__(self) -> bool:
        return bool(self.records or self.repeats or self.joins)

    def take(self) -> "AlertBatch":
        """Hand over what is gathered so far and start afresh."""
        taken = AlertBatch(self.records, self.repeats, self.joins, set(), {}, self.policies, self.checked, self.ledgered,
                           alert_keys=self.alert_keys)
        self.records, self.repeats, self.joins, self.alert_keys = [], {}, {}, []
        self.incidents.clear()
        return taken
