"""Smart rules at work: each poll of a service, each observation and ingested alert, and every
round of the appliance's own figures is judged by the tenant's active rules; a rule that fires
becomes an alert signal that policy (detection) judges like any other.

How a rule alerts depends on what it watches:

* **States** (``service.*`` on each poll, per service; ``system.*``, ``deliveries.*``,
  ``approvals.*`` and ``events_per_minute`` every round): one alert per episode. While the
  condition holds, the alert stays as it is; the first judgement that it no longer holds resolves
  it (actor ``policy``). The next episode is a new alert.
* **Occurrences** (a threshold or an anomaly on a number an observation carries, such as
  ``risk_score``; a pattern of events): every firing is a new alert. A pattern's matched events
  are spent: the next alert needs a new match.

Either way a rule alerts at most once per ``cooldown_minutes`` (per service for service metrics)
and at most ``max_alerts_per_hour`` times an hour. Firings held back by either are counted
(``suppressed`` on the rule), never ledgered one by one. Time comes from the injected clock.
Learned baselines live in memory: after a restart a rule relearns (``MIN_SAMPLES`` values).
"""

from __future__ import annotations

import asyncio
import collections
import json
import logging
import time
from typing import Any, Awaitable, Callable, Iterable

from ..notify.gateway import Gateway, Message
from ..notify.vocabulary import SEVERITY_PRIORITY
from ..ledger.entry import LedgerEvent, redact
from ..signals import AlertSignal, HealthReading
from ..store import Database, WriteTx
from . import store
from .metrics import EventWindow, HostMetrics, Observation, appliance_metrics, reading_metrics, snapshot
from .rules import (
    RATE_ALIASES,
    Baseline,
    PatternState,
    SmartRule,
    Verdict,
    family,
    judge_events,
    judge_pattern_fired,
    judge_value,
)
from .stream import Hub

log = logging.getLogger("alertengine.smart")
SOURCE = "smart"
Emit = Callable[[str, AlertSignal], Awaitable[Any]]   # hands a signal to detection (policy decides)


class TestInputError(ValueError):
    """test_metrics that cannot test this rule; ``field`` names what is missing."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field
        self.message = message


class SmartAlerts:
    def __init__(self, db: Database, emit: Emit, gateway: Gateway | None, hub: Hub, host: HostMetrics | None = None,
                 clock: Callable[[], float] = time.time, interval: float = 15.0) -> None:
        self.db = db
        self.emit = emit
        self.gateway = gateway
        self.hub = hub
        self.host = host
        self.clock = clock
        self.interval = interval
        self.windows: dict[str, EventWindow] = {}               # each tenant's last minute, for rates
        self.patterns: dict[tuple[str, int], tuple[str, PatternState]] = {}   # by rule: (its definition, state)
        self.baselines: dict[tuple[str, int, str, str], Baseline] = {}  # (tenant, rule, subject, metric)
        self.suppressed: collections.Counter[tuple[str, int]] = collections.Counter()
        self._locks: dict[str, asyncio.Lock] = {}

    async def rules(self, tenant: str) -> list[SmartRule]:
        return await self.db.read(store.list_rules, tenant, active_only=True)

    def _lock(self, tenant: str) -> asyncio.Lock:
        return self._locks.setdefault(tenant, asyncio.Lock())

    # --- inputs -----------------------------------------------------------------------------------
    async def on_reading(self, tenant: str, service: str, reading: HealthReading) -> list[str]:
        """A poll of ``service``: its service.* rules, as states of that service."""
        values = reading_metrics(reading)
        fired = []
        for rule in await self.rules(tenant):
            if rule.metric in values and family(rule.metric) == "service" \
                    and rule.definition.get("service", service) == service:
                shown = {**values, "service": service, "outcome": reading.outcome}
                fired += await self._state(rule, service, service, values[rule.metric], shown)
        return fired

    async def on_observations(self, tenant: str, observations: Iterable[Observation]) -> list[str]:
        """Events a tenant sent: counted for patterns and rates; their numbers judged as occurrences."""
        rules = await self.rules(tenant)
        window = self.windows.setdefault(tenant, EventWindow())
        fired = []
        for obs in observations:
            now = self.clock()
            window.add(now, obs.name)
            shown = {**obs.metrics, **obs.labels, "event": obs.name}
            for rule in rules:
                if rule.condition == "pattern":
                    if obs.name in rule.events:
                        fired += await self._pattern(rule, now, obs.name, shown)
                elif rule.metric in obs.metrics and family(rule.metric) == "observation":
                    value = float(obs.metrics[rule.metric])
                    verdict = judge_value(rule, value, self._learn(rule, "-", value))
                    if verdict.fired:
                        fired += await self._fire(rule, None, verdict, shown, f"{now:.6f}")
        window.prune(self.clock())
        return fired

    async def on_alert_names(self, tenant: str, names: Iterable[str]) -> list[str]:
        """Ingested alerts that fired count as events by their name (alertname, or title)."""
        return await self.on_observations(tenant, [Observation(name[:128]) for name in names])

    async def tick(self) -> list[str]:
        """One round of the appliance's own figures, for every tenant with a rule on them."""
        tenants = await self.db.read(lambda conn: [r[0] for r in conn.execute(
            "SELECT DISTINCT tenant FROM smart_rules WHERE deleted IS NULL AND is_active = 1")])
        host = self.host.read() if self.host is not None else {}
        fired = []
        for tenant in tenants:
            try:
                fired += await self._round(tenant, host)
            except Exception:  # noqa: BLE001 - one tenant's failure never stops the others' rules
                log.exception("a smart-rule round of %s failed", tenant)
        return fired

    async def _round(self, tenant: str, host: dict[str, float]) -> list[str]:
        rules = [r for r in await self.rules(tenant) if r.metric and family(r.metric) == "tick"]
        if not rules:
            return []
        now = self.clock()
        window = self.windows.setdefault(tenant, EventWindow())
        window.prune(now)
        values = {**host, **await asyncio.to_thread(self._figures, tenant, now), **window.rates(now)}
        fired = []
        for rule in rules:
            value = values.get(rule.metric, 0.0 if rule.metric.startswith("events_per_minute") else None)
            if value is not None:
                fired += await self._state(rule, "-", None, value, {rule.metric: value})
        return fired

    def _figures(self, tenant: str, now: float) -> dict[str, float]:
        return appliance_metrics(self.db.read_conn(), tenant, now)   # on a worker thread (see _round)

    async def run(self) -> None:
        """The rounds, forever (a task of the runtime)."""
        while True:
            try:
                await self.tick()
            except Exception:  # noqa: BLE001 - the rounds must survive; the next one retries
                log.exception("a smart-rule round failed")
            await asyncio.sleep(self.interval)

    # --- judging ----------------------------------------------------------------------------------
    def _learn(self, rule: SmartRule, subject: str, value: float) -> Baseline | None:
        """The baseline as it was before ``value`` (a copy), then ``value`` learned. A baseline
        belongs to one metric: a rule moved to another metric learns afresh."""
        if rule.condition != "anomaly":
            return None
        baseline = self.baselines.setdefault((rule.tenant, rule.id, subject, str(rule.metric)), Baseline())
        before = Baseline(baseline.n, baseline.mean, baseline.m2)
        baseline.add(value)
        return before

    async def _pattern(self, rule: SmartRule, now: float, name: str, shown: dict[str, Any]) -> list[str]:
        key = (rule.tenant, rule.id)
        definition = json.dumps(rule.definition, sort_keys=True)
        found = self.patterns.get(key)
        if found is None or found[0] != definition:    # new, or its definition changed: start afresh
            found = self.patterns[key] = (definition, PatternState(rule))
        if not found[1].add(now, name):
            return []
        verdict = judge_pattern_fired(rule)
        return await self._fire(rule, None, verdict, {**shown, "matched": verdict.value}, f"{now:.6f}")

    def forget(self, tenant: str, rule_id: int) -> None:
        """A rule changed or went: what was learned or matched for it no longer counts."""
        self.patterns.pop((tenant, rule_id), None)
        for key in [k for k in self.baselines if k[:2] == (tenant, rule_id)]:
            del self.baselines[key]

    async def retire(self, tenant: str, rule_id: int, why: str) -> list[str]:
        """A rule was deactivated, deleted or redefined: the alerts of its states (which nothing
        will judge again) are resolved by policy; its occurrences stay for people to close."""
        self.forget(tenant, rule_id)
        rows = await self.db.read(lambda conn: conn.execute(
            "SELECT fingerprint, severity, rule_name, service, triggered FROM alerts WHERE tenant = ? AND rule_id = ? "
            "AND source = ? AND fingerprint LIKE ? AND status IN ('active', 'acknowledged') AND test = 0",
            (tenant, rule_id, SOURCE, f"state:{rule_id}:%")).fetchall())
        for fingerprint, severity, name, service, triggered in rows:
            await self.emit(tenant, _resolved(rule_id, name, fingerprint, severity, service, store.iso(triggered), why))
        return [r[0] for r in rows]

    async def _state(self, rule: SmartRule, subject: str, service: str | None, value: float,
                     shown: dict[str, Any]) -> list[str]:
        verdict = judge_value(rule, value, self._learn(rule, subject, value))
        fingerprint = f"state:{rule.id}:{subject}"
        current = await self.db.read(store.unresolved, rule.tenant, SOURCE, fingerprint)
        if verdict.fired and current is None:
            return await self._fire(rule, service, verdict, shown, None, fingerprint)
        if not verdict.fired and current is not None and current["rule_id"] == rule.id:
            await self.emit(rule.tenant, _resolved(rule.id, rule.name, fingerprint, current["severity"], service,
                                                   current["triggered_at"], verdict.message))
        return []

    async def _fire(self, rule: SmartRule, service: str | None, verdict: Verdict, shown: dict[str, Any],
                    occurrence: str | None, fingerprint: str | None = None) -> list[str]:
        async with self._lock(rule.tenant):
            now = self.clock()
            last, count = await self.db.read(lambda conn: (
                store.last_triggered(conn, rule.tenant, rule.id, service),
                store.count_since(conn, rule.tenant, rule.id, now - 3600.0)))
            if last is not None and now - last < rule.cooldown:
                self.suppressed[(rule.tenant, rule.id)] += 1
                return []
            if count >= rule.hourly_cap:
                self.suppressed[(rule.tenant, rule.id)] += 1
                return []
            signal = self.signal(rule, service, verdict, shown, now,
                                 fingerprint or f"occurrence:{rule.id}:{service or '-'}:{occurrence}")
            await self.emit(rule.tenant, signal)
            found = await self.db.read(store.unresolved, rule.tenant, SOURCE, signal.fingerprint)
            return [found["id"]] if found else []

    @staticmethod
    def signal(rule: SmartRule, service: str | None, verdict: Verdict, shown: dict[str, Any], now: float,
               fingerprint: str) -> AlertSignal:
        return AlertSignal(
            source=SOURCE, fingerprint=fingerprint, status="firing", severity=rule.severity, title=rule.name,
            service=service, labels={"alertname": rule.name, "rule_id": str(rule.id)},
            annotations={"summary": verdict.message[:1000]}, starts_at=store.iso(now),
            origin={"rule_id": rule.id, "rule_name": rule.name, "message": verdict.message,
                    "metrics_snapshot": snapshot(shown), "triggered": now})

    # --- tests ------------------------------------------------------------------------------------
    def judge_test(self, rule: SmartRule, metrics: dict[str, Any]) -> Verdict:
        """The rule on ``test_metrics`` as if they arrived now; nothing is learned or spent."""
        now = self.clock()
        if rule.condition == "pattern":
            names = metrics.get("events")
            if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
                raise TestInputError("test_metrics.events", "a pattern rule is tested with events: a list of names")
            return judge_events(rule, [(now, n) for n in names], now)
        value = metrics.get(rule.definition["metric"], metrics.get(RATE_ALIASES.get(str(rule.metric), "")))
        if value is None:
            value = metrics.get(str(rule.metric))
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise TestInputError(f"test_metrics.{rule.definition['metric']}", "a number is needed to test this rule")
        key = (rule.tenant, rule.id, str(metrics.get("service", "-")), str(rule.metric))
        return judge_value(rule, float(value), self.baselines.get(key))

    async def test(self, rule: SmartRule, metrics: dict[str, Any], actor: str) -> dict[str, Any]:
        """``POST /api/alerts/test``: judged, and when it fires delivered as a test (ledgered
        ``alert.test``, marked test on the stream and in every message); never an incident."""
        verdict = self.judge_test(rule, metrics)
        if not verdict.fired:
            return {"fired": False, "message": verdict.message, "alert": None, "deliveries": []}
        now = self.clock()
        service = metrics.get("service") if isinstance(metrics.get("service"), str) else None

        shown = redact(snapshot(metrics))    # credential-looking values as fingerprints, as for any alert

        def write(tx: WriteTx) -> dict[str, Any]:
            alert = store.insert_alert(
                tx, rule.tenant, prefix=str(rule.id), rule_id=rule.id, rule_name=rule.name, source=SOURCE,
                fingerprint=f"test:{rule.id}:{now:.6f}", service=service, severity=rule.severity,
                message=f"TEST: {verdict.message}", snapshot=shown, incident=None, now=now, test=True)
            tx.append(LedgerEvent(kind="alert.test", tenant=rule.tenant, actor=actor, decision="test",
                                  reason=f"test of smart rule {rule.id}: {verdict.message}"[:1000],
                                  data={"alert": alert["id"], "rule_id": rule.id, "test_metrics": shown}))
            tx.after_commit(lambda: self.hub.publish(rule.tenant, [alert]))
            return alert
        alert = await self.db.write(write)
        deliveries: list[dict[str, str]] = []
        if self.gateway is not None:
            plan = await self.gateway.notify(Message(
                rule.tenant, None, "test", SEVERITY_PRIORITY[rule.severity], f"[TEST] {verdict.message}",
                data={"source": SOURCE, "service": service, "test": True, "alert": alert["id"]}))
            if plan is not None:
                deliveries = [{"recipient": d.recipient.key, "outcome": d.outcome, "why": d.why}
                              for d in plan.decisions]
        return {"fired": True, "message": verdict.message, "alert": alert, "deliveries": deliveries}

    def stats(self, tenant: str, rule_id: int) -> dict[str, Any]:
        base = next((b for k, b in self.baselines.items() if k[:3] == (tenant, rule_id, "-")), None)
        return {"suppressed": self.suppressed[(tenant, rule_id)],
                "baseline": None if base is None else {"samples": base.n, "mean": round(base.mean, 6),
                                                       "std": round(base.std, 6)}}


def _resolved(rule_id: int, name: str, fingerprint: str, severity: str, service: str | None, started: str | None,
              why: str) -> AlertSignal:
    """Policy's word that a smart rule's state alert is over."""
    return AlertSignal(source=SOURCE, fingerprint=fingerprint, status="resolved", severity=severity, title=name,
                       service=service, labels={"alertname": name, "rule_id": str(rule_id)}, starts_at=started,
                       origin={"rule_id": rule_id, "message": why})
