"""Detection: health readings and ingested alerts, judged by the tenant's policy, become incidents.

Policy alone opens, escalates and recovers incidents (actor ``policy``); ingested "resolved"
alerts resolve them (actor ``ingest:<source>``). Nothing here waits on a human or on AI.

Owns the judging: the Detector (health readings, ingested alerts one by one, timers, diagnosis and
proposals). An alert's keys (incident fingerprint, event id, redaction) are in ``alertkeys``; what
a request's alerts read and write together is in ``alertbatch`` (gathered) and ``alertsettle``
(read at once, written in one transaction)."""

from __future__ import annotations

import asyncio
import json
import logging
import sqlite3
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any, Awaitable, Callable

from ..alerts import store as alert_store
from ..diagnosis import deploys
from ..diagnosis.council import Council
from ..ledger.entry import LedgerEvent, redact, utc_timestamp
from ..notify.gateway import Gateway, Message
from ..signals import AlertSignal, HealthReading
from ..store import Database, WriteTx
from ..store.modes import ModeTracker
from ..telemetry import Telemetry
from . import engine, timers
from .alertbatch import AlertBatch
from .alertkeys import chunks as _chunks
from .alertkeys import (
    alert_event_id,
    alert_fingerprint,
    episode,
    health_fingerprint,
    incident_fingerprint,
    redact_map,
    redact_text,
    source_actor,
)
from .alertsettle import joined_text, prefetch, settle_write
from .engine import Incident, Opening
from .evidence import WINDOW, Evidence
from .policy import Policy, alert_opens, evaluate_reading, load_policy, worst_priority
from .policy import raised as raised_by_repeats

log = logging.getLogger("alertengine.detection")
# what other modules import from here (the alert keys live in alertkeys.py)
__all__ = ["Detector", "ServiceRef", "Streak", "alert_event_id", "alert_fingerprint", "diagnosis_context",
           "health_fingerprint", "incident_fingerprint", "service_ref", "service_refs", "source_actor"]


@dataclass(frozen=True)
class ServiceRef:
    """What detection needs to know of a service."""

    tenant: str
    id: str
    name: str
    overrides: dict[str, Any] = field(default_factory=dict)


@dataclass
class Streak:
    breaches: int = 0
    healthy: int = 0
    since: float = 0.0   # when the first breaching poll of this streak was judged (monotonic)


class Detector:
    def __init__(self, db: Database, gateway: Gateway,
                 on_proposed: Callable[[Incident], Awaitable[None]] | None = None,
                 council: Council | None = None, modes: ModeTracker | None = None, secrets: Callable[[str], list[str]] | None = None,
                 ai_budget: float = 60.0, on_alerts: Callable[[str, list[dict[str, Any]]], None] | None = None,
                 clock: Callable[[], float] = time.time, telemetry: Telemetry | None = None,
                 alerts_watched: Callable[[str], bool] | None = None) -> None:
        self.db = db
        self.telemetry = telemetry
        self.clock = clock
        # breaching polls of open incidents, summarised per service and minute (see evidence.py)
        self.evidence = Evidence()
        # per (tenant, service): its open incident and the kinds of breach seen since it opened
        self._seen: dict[tuple[str, str], tuple[str, set[str]]] = {}
        self._swept = 0.0
        # told (on the store's writer thread, once committed) of alerts that changed: the live stream
        self.on_alerts = on_alerts
        # whether anyone watches a tenant's stream (None: assume so); alerts are described only then
        self.alerts_watched = alerts_watched
        self.gateway = gateway
        self.streaks: dict[tuple[str, str], Streak] = {}
        # Who asks humans once policy has proposed (the orchestrator); without it, a plain notice.
        self.on_proposed = on_proposed
        self.council = council
        self.modes = modes
        self.secrets = secrets or (lambda tenant: [])
        self.ai_budget = ai_budget   # detection never waits on the AI longer than this
        self.background: set[asyncio.Task[None]] = set()
        self._contexts: dict[tuple[str, str], dict[str, Any]] = {}  # what each open incident was diagnosed on

    async def policy(self, tenant: str) -> Policy:
        return await self.db.read(load_policy, tenant)

    async def _batch_policy(self, batch: AlertBatch, tenant: str) -> Policy:
        """The tenant's policy, read once per request (prefetch reads it)."""
        if tenant not in batch.policies:
            batch.policies[tenant] = await self.policy(tenant)
        return batch.policies[tenant]

    # --- health polls ---------------------------------------------------------------------------
    async def on_reading(self, service: ServiceRef, reading: HealthReading) -> Incident | None:
        now = self.clock()
        if now - self._swept >= WINDOW / 4:    # summaries of windows that are over
            self._swept = now
            if closed := self.evidence.due(now):
                await self.db.append(*closed)
        policy = await self.policy(service.tenant)
        rules = policy.rules(service.name, service.overrides)
        breaches = evaluate_reading(reading, rules)
        streak = self.streaks.setdefault((service.tenant, service.id), Streak())
        fingerprint = health_fingerprint(service.id)
        current = await self.db.read(engine.open_incident_for, service.tenant, fingerprint)
        data = {"service": service.id, "service_name": service.name, "reading": reading.as_data(),
                "breaches": [b.as_data() for b in breaches]}
        if breaches:
            streak.breaches += 1
            streak.healthy = 0
            if self.telemetry is not None:
                self.telemetry.breaches.inc()
            if streak.breaches == 1:
                streak.since = time.monotonic()
            priority = worst_priority(policy, breaches)
            kinds = {b.kind for b in breaches}
            if current is not None and not self._changes(service.id, current, priority, kinds):
                # more of the same for an open incident: evidence, summarised per minute
                closed = self.evidence.add(now, service.tenant, current.id, service.id, service.name, policy.version,
                                           reading, breaches)
                if closed is not None:
                    await self.db.append(closed)
                return current
            held = self.evidence.take(service.tenant, service.id)
            if current is not None:
                seen = self._seen.get((service.tenant, service.id))
                self._seen[(service.tenant, service.id)] = (current.id, kinds | (
                    seen[1] if seen is not None and seen[0] == current.id else set()))
            await self.db.append(*([held] if held else []), LedgerEvent(
                kind="signal.breach", tenant=service.tenant, incident=current.id if current else None,
                actor="policy", policy_version=policy.version, decision="breach",
                reason=", ".join(f"{b.kind} {b.value} (threshold {b.threshold})" for b in breaches),
                data={**data, "consecutive": streak.breaches}))
            if current is None and streak.breaches >= rules.breaches_to_open:
                opened = await self._open(streak.since, Opening(
                    service.tenant, fingerprint, "poller", f"{service.name}: {', '.join(b.kind for b in breaches)}",
                    priority, service.id, service.name, rules.action, policy.version,
                    f"{streak.breaches} consecutive breaching polls: {', '.join(b.kind for b in breaches)}", data))
                self._seen[(service.tenant, service.id)] = (opened.id, set(kinds))
                return opened
            if current is not None:
                raised = None
                if engine.PRIORITIES.index(priority) < engine.PRIORITIES.index(current.priority):
                    raised = await self.db.write(engine.escalate(
                        service.tenant, current.id, priority, reason=f"worse signal: {breaches[0].kind}",
                        policy_version=policy.version, data=data))
                if raised is not None:
                    await self._tell(raised, "escalated", f"priority raised to {priority}", policy)
                    self._material_change(raised, f"priority raised to {priority}", policy)
                else:
                    self._material_change(current, "a new kind of signal", policy, [b.kind for b in breaches])
                if current.stage == engine.EXPIRED and current.action:
                    return await self._repropose(current, policy, "the service is still failing")
            return current
        streak.breaches = 0
        if current is None:
            streak.healthy = 0
            return None
        streak.healthy += 1
        held = self.evidence.take(service.tenant, service.id)
        await self.db.append(*([held] if held else []), LedgerEvent(
            kind="signal.healthy", tenant=service.tenant, incident=current.id, actor="policy",
            policy_version=policy.version, decision="healthy",
            reason=f"healthy poll {streak.healthy} of {rules.healthy_to_recover} needed for recovery",
            data={**data, "consecutive": streak.healthy}))
        if streak.healthy >= rules.healthy_to_recover:
            recovered = await engine.run(self.db, engine.transition(
                service.tenant, current.id, engine.RECOVERED, "policy", policy_version=policy.version,
                reason=f"{streak.healthy} consecutive healthy polls", decision="recovered", data=data))
            streak.healthy = 0
            await self._tell(recovered, "recovered", f"{service.name} is healthy again", policy)
            return recovered
        return current

    def _changes(self, service: str, current: Incident, priority: str, kinds: set[str]) -> bool:
        """Is a breaching poll of an open incident a change of state (its own ledger entry), or
        more of the same (evidence for the minute's summary)? A change: the priority would rise, a
        kind of breach not seen since the incident opened (or since this process started), or an
        expired incident whose proposal detection makes again."""
        if engine.PRIORITIES.index(priority) < engine.PRIORITIES.index(current.priority):
            return True
        if current.stage == engine.EXPIRED and current.action:
            return True
        seen = self._seen.get((current.tenant, service))
        return seen is None or seen[0] != current.id or not kinds <= seen[1]

    async def flush_evidence(self) -> None:
        """Ledger every summary still being gathered (at shutdown)."""
        if held := self.evidence.drain():
            await self.db.append(*held)

    # --- ingested alerts ------------------------------------------------------------------------
    async def on_alert(self, tenant: str, signal: AlertSignal, service: ServiceRef | None, *,
                       actor: str | None = None, fresh: list[AlertSignal] | None = None,
                       batch: AlertBatch | None = None) -> Incident | None:
        """Judge one alert. A repeat of an alert in the same state changes nothing (idempotent).
        ``actor``: who hands it over when not its source (policy, for an alert escalated by hand);
        ``fresh`` collects the signal when it was news (its ``alert.received`` entry is new);
        ``batch`` gathers what does not change a stage, for :meth:`settle` to write together."""
        if batch is not None and signal.status != "firing" and batch:
            await self.settle(batch)   # whether an incident still has alerts firing is read from the ledger
        judged_from = time.monotonic()
        fingerprint = batch.fingerprint(signal) if batch is not None else incident_fingerprint(signal)
        known = batch.incidents.get((tenant, fingerprint)) if batch is not None else None
        if known is None:
            known = await self.db.read(lambda conn: (engine.open_incident_for(conn, tenant, fingerprint),
                                                     episode(conn, tenant, fingerprint)))
            if batch is not None:
                batch.incidents[(tenant, fingerprint)] = known
        current = known[0]
        event_id = alert_event_id(tenant, signal, *known)
        if signal.status == "firing" and current is not None:   # repeats count, even those already ledgered
            if batch is not None:
                batch.repeat(current)
            else:
                current = await self._occurred(tenant, current)
        if batch is not None and (event_id in batch.event_ids or event_id in batch.ledgered):
            return current
        if (batch is None or event_id not in batch.checked) and await self.db.read(
                lambda conn: conn.execute("SELECT 1 FROM ledger WHERE event_id = ?", (event_id,)).fetchone()):
            return current
        if batch is not None:
            batch.event_ids.add(event_id)
            if signal.status != "firing" or current is None:   # it may open, resolve or acknowledge one
                batch.incidents.pop((tenant, fingerprint), None)
        signal = AlertSignal(signal.source, signal.fingerprint, signal.status, signal.severity,
                             redact_text(signal.title), signal.service, redact_map(signal.labels),
                             redact_map(signal.annotations), signal.starts_at, signal.ends_at,
                             redact_text(signal.url) if signal.url else None,
                             redact(dict(signal.origin)) if signal.origin else {})
        policy = await self._batch_policy(batch, tenant) if batch is not None else await self.policy(tenant)
        rules = batch.rules(tenant, policy, service, signal.service) if batch is not None else \
            policy.rules(service.name if service else signal.service, service.overrides if service else None)
        data = {"source": signal.source, "alert_fingerprint": signal.fingerprint, "status": signal.status,
                "severity": signal.severity, "title": signal.title, "service_name": signal.service,
                "labels": dict(signal.labels), "annotations": dict(signal.annotations), "url": signal.url,
                "starts_at": signal.starts_at, "ends_at": signal.ends_at}
        if signal.origin:   # a smart rule's reasons: its rule, message and the values it judged
            data["smart_rule"] = {k: signal.origin[k] for k in ("rule_id", "rule_name", "message", "metrics_snapshot")
                                  if k in signal.origin}
        result = current
        actor = actor or source_actor(signal.source)
        if signal.status != "firing" and current is not None:
            # The alert that resolves or acknowledges an incident is in the ledger (and in the alerts)
            # before the change it causes: whoever sees the incident changed sees why.
            await self.db.write(self._record(tenant, signal, event_id, current, actor, policy, data, rules, fresh))
            recorded = True
        else:
            recorded = False
        if signal.status == "resolved":
            if current is not None and not await self._still_firing(tenant, current.id, signal):
                result = await engine.run(self.db, engine.transition(
                    tenant, current.id, engine.RESOLVED, source_actor(signal.source), policy_version=policy.version,
                    decision="resolved", reason=f"{signal.source} reports {signal.title!r} resolved", data=data))
                await self._tell(result, "resolved", f"{signal.title} resolved at the source", policy)
        elif signal.status == "acknowledged":
            if current is not None:   # a human acknowledged it in the sending tool (PagerDuty)
                acked = await engine.run(self.db, engine.acknowledge(tenant, current.id, f"ingest:{signal.source}"))
                if isinstance(acked, Incident):
                    result = acked
        elif signal.status == "firing" and alert_opens(signal, rules):
            priority = policy.severity_priority(signal.severity)
            if current is None:
                triage = await self._triage_count(tenant, fingerprint)
                higher, why = raised_by_repeats(policy, priority, 0, triage + 1)
                if why is not None:
                    data = {**data, "escalated_from": priority, "escalated_because": why}
                    priority = higher
                result = await self._open(judged_from, Opening(
                    tenant, fingerprint, signal.source, signal.title, priority, service.id if service else None,
                    service.name if service else signal.service, rules.action if service else None, policy.version,
                    f"{signal.severity} alert from {signal.source}: {signal.title}", data))
            elif batch is not None:
                batch.join(current, policy.version, priority, f"{signal.severity} alert {signal.title!r}", data,
                           dict(signal.labels), signal.title)
            else:
                raised = await self.db.write(engine.escalate(
                    tenant, current.id, priority, policy_version=policy.version,
                    reason=f"{signal.severity} alert {signal.title!r}", data=data))
                widened = await self.db.write(engine.merge_labels(tenant, current.id, dict(signal.labels)))
                if raised is not None:
                    await self._tell(raised, "escalated", f"priority raised to {priority}", policy)
                elif widened:   # a different alert joined: routing and silences judge the incident anew
                    await self._tell(current, "updated", f"another alert joined: {signal.title}", policy)
        if not recorded:
            record = self._record(tenant, signal, event_id, result, actor, policy, data, rules, fresh)
            if batch is not None:
                batch.records.append(record)
                batch.alert_keys.append((tenant, signal.source, signal.fingerprint))
            else:
                await self.db.write(record)
        return result

    def _record(self, tenant: str, signal: AlertSignal, event_id: str, result: Incident | None, actor: str,
                policy: Policy, data: dict[str, Any], rules: Any,
                fresh: list[AlertSignal] | None) -> Callable[[WriteTx], None]:
        """The write that ledgers an alert (``alert.received``), updates the alerts and sets its timers."""
        received = LedgerEvent(
            kind="alert.received", tenant=tenant, incident=result.id if result else None, actor=actor,
            policy_version=policy.version, decision=signal.status, event_id=event_id,
            reason=f"{signal.source}: {signal.title} is {signal.status}", data=data)
        auto_resolve = result is not None and result.is_open and signal.status == "firing" and rules.auto_resolve_after > 0
        candidate_after = float(policy.doc["auto_resolve"]["candidate_after"]) \
            if result is not None and result.is_open and signal.status == "firing" else 0.0

        def record(tx: WriteTx) -> None:
            entry = tx.append(received)
            if not entry.duplicate and fresh is not None:
                fresh.append(signal)
            if not entry.duplicate:
                changed = alert_store.record_signal(tx, tenant, signal, result.id if result else None, actor, time.time())
                if changed and self.on_alerts is not None:
                    tx.after_commit(lambda: self._tell_alerts(tenant, changed))
            if auto_resolve and not entry.duplicate:
                timers.schedule(tx, tenant, result.id, "auto_resolve", timers.due_in(rules.auto_resolve_after),
                                {"after": rules.auto_resolve_after, "policy_version": policy.version})
            if candidate_after and not entry.duplicate:
                timers.schedule(tx, tenant, result.id, "auto_resolve_candidate", timers.due_in(candidate_after),
                                {"after": candidate_after, "policy_version": policy.version})
        return record

    def _tell_alerts(self, tenant: str, changed: list[Callable[[], dict[str, Any]]]) -> None:
        """Once committed (on the writer thread): the live stream hears of the alerts that changed,
        described only when someone watches the tenant (checked after the commit, so whoever
        subscribes later reads them in the tenant's current state instead)."""
        if self.alerts_watched is None or self.alerts_watched(tenant):
            self.on_alerts(tenant, [describe() for describe in changed])  # type: ignore[misc]

    def prefetch(self, tenant: str, signals: list[AlertSignal], batch: AlertBatch) -> None:
        """Read, for a whole request at once (on a worker thread: it is blocking), what judging its
        alerts one by one would read per alert (see alertsettle.prefetch)."""
        prefetch(self.db.read_conn(), tenant, signals, batch)

    async def settle(self, batch: AlertBatch) -> None:
        """Write what ``batch`` gathered in one transaction: the alerts' records, repeats counted
        per incident, alerts joining open incidents; then tell people once per incident."""
        work = batch.take()
        if not work:
            return
        for tenant in {inc.tenant for inc, _n in work.repeats.values()} | {key[0] for key in work.joins}:
            await self._batch_policy(work, tenant)
        counts, joined = await self.db.write(settle_write(work, lambda t: work.policies[t]))
        for key, (raised, widened) in joined.items():
            j = work.joins[key]
            policy = work.policies[j.incident.tenant]
            if raised is not None:
                await self._tell(raised, "escalated", f"priority raised to {j.priority}", policy)
            elif widened:   # other alerts joined: routing and silences judge the incident anew
                await self._tell(j.incident, "updated", joined_text(j.titles), policy)
        for key, occurrences in counts.items():
            inc = work.repeats[key][0]
            policy = work.policies[inc.tenant]
            await self._repeats_raise(inc, occurrences, float(policy.doc["escalation"]["occurrence_window"]), policy)

    async def on_timer(self, timer: timers.Timer) -> None:
        """A stored deadline came due."""
        if timer.kind not in ("auto_resolve", "auto_resolve_candidate") or timer.incident is None:
            return
        inc = await self.db.read(engine.get_incident, timer.tenant, timer.incident)
        if not inc.is_open:
            return
        policy = await self.policy(timer.tenant)
        rules = policy.doc["auto_resolve"]
        quiet = f"no firing alert for {timer.data.get('after')} s"
        if inc.priority not in rules["allowed"]:   # a P1 or P0 is closed by people, never by silence
            await self.db.append(LedgerEvent(
                kind="incident.auto_resolve_skipped", tenant=inc.tenant, incident=inc.id, stage=inc.stage,
                actor="policy", decision="kept_open", policy_version=policy.version,
                reason=f"{quiet}, but {inc.priority} is not one auto-resolve may close "
                       f"(allowed: {', '.join(rules['allowed']) or 'none'})"))
            return
        if timer.kind == "auto_resolve_candidate" and not rules["auto_close"]:
            await self.db.append(LedgerEvent(
                kind="incident.auto_resolve_candidate", tenant=inc.tenant, incident=inc.id, stage=inc.stage,
                actor="policy", decision="candidate", policy_version=policy.version,
                reason=f"{quiet}: a candidate for resolving (auto_close is off: a person decides)"))
            await self._tell(inc, "resolve_candidate", f"{quiet}: it may be over. Resolve it if so.", policy)
            return
        resolved = await engine.run(self.db, engine.transition(
            timer.tenant, inc.id, engine.RESOLVED, "policy", decision="auto_resolved",
            policy_version=timer.data.get("policy_version"), reason=f"{quiet}: auto-resolved by policy"))
        await self._tell(resolved, "resolved", "auto-resolved: the alert stopped firing", policy)

    async def _triage_count(self, tenant: str, fingerprint: str) -> int:
        """Incidents of this alert opened in the last 24 h (seed 004's triage count)."""
        since = utc_timestamp(datetime.now(timezone.utc) - timedelta(hours=24))
        row = await self.db.read(lambda conn: conn.execute(
            "SELECT count(*) FROM incidents WHERE tenant = ? AND fingerprint = ? AND opened_at >= ?",
            (tenant, fingerprint, since)).fetchone())
        return int(row[0])

    async def _occurred(self, tenant: str, current: Incident) -> Incident:
        """A firing alert for an open incident: count it, and raise the priority when policy says so."""
        policy = await self.policy(tenant)
        window = float(policy.doc["escalation"]["occurrence_window"])
        now = time.time()

        def record(tx: WriteTx) -> int:
            tx.execute("INSERT INTO alert_occurrences (tenant, incident, at) VALUES (?, ?, ?)", (tenant, current.id, now))
            tx.execute("DELETE FROM alert_occurrences WHERE tenant = ? AND incident = ? AND at < ?",
                       (tenant, current.id, now - window))
            return int(tx.execute("SELECT count(*) FROM alert_occurrences WHERE tenant = ? AND incident = ?",
                                  (tenant, current.id)).fetchone()[0])
        occurrences = await self.db.write(record)
        return await self._repeats_raise(current, occurrences, window, policy)

    async def _repeats_raise(self, current: Incident, occurrences: int, window: float, policy: Policy) -> Incident:
        """Raise the priority when policy says this many repeats in the window call for it."""
        tenant = current.tenant
        higher, why = raised_by_repeats(policy, current.priority, occurrences, 0)
        if why is None:
            return current
        current = await self.db.read(engine.get_incident, tenant, current.id)   # as it is now
        higher, why = raised_by_repeats(policy, current.priority, occurrences, 0)
        if why is None or not current.is_open:
            return current
        up = await self.db.write(engine.escalate(tenant, current.id, higher, reason=f"repeats: {why}",
                                                 policy_version=policy.version,
                                                 data={"occurrences": occurrences, "window": window}))
        if up is None:
            return current
        await self._tell(up, "escalated", f"priority raised to {higher}: {why}", policy)
        return up

    async def _still_firing(self, tenant: str, incident: str, resolved: AlertSignal) -> list[str]:
        """Alert fingerprints of the incident still firing once ``resolved`` is counted (from the ledger)."""
        state: dict[str, str] = {}
        rows = await self.db.read(lambda conn: conn.execute(
            "SELECT body FROM ledger WHERE tenant = ? AND incident = ? AND kind = 'alert.received' ORDER BY seq",
            (tenant, incident)).fetchall())
        for (body,) in rows:
            data = json.loads(body)["data"]
            state[data["alert_fingerprint"]] = data["status"]
        state[resolved.fingerprint] = "resolved"
        return [fp for fp, status in state.items() if status == "firing"]

    # --- shared -------------------------------------------------------------------------------
    async def _open(self, since: float, opening: Opening) -> Incident:
        """Open an incident (``since``: when its first signal was judged, monotonic)."""
        inc, new = await self.db.write(engine.open_incident(opening))
        if not new:
            return inc
        if self.telemetry is not None:
            self.telemetry.detection.labels(opening.source).observe(time.monotonic() - since)
        policy = await self.policy(opening.tenant)
        await self._tell(inc, "detected", f"{inc.title} ({inc.priority})", policy)  # never waits on the AI
        if self.council is not None and self.council.available:
            task = asyncio.get_running_loop().create_task(self._diagnose_and_propose(inc, opening, policy))
            self.background.add(task)
            task.add_done_callback(self.background.discard)
            return inc
        return await self._diagnose_and_propose(inc, opening, policy)

    async def _run_council(self, inc: Incident, context: dict[str, Any], policy: Policy) -> tuple[Any, dict[str, Any]]:
        """The verdict and its ledger data; never longer than ``ai_budget``."""
        near = await self.db.read(deploys.deploys_near, inc.tenant, inc.opened_at, inc.service_name)
        best = deploys.most_relevant(near, inc.service_name, inc.opened_at)
        if best is not None:
            context["deploy"] = {"sha": best.sha, "service": best.service, "message": best.message[:500],
                                 "files": list(best.files[:30]), "risky": best.risky, "deployed_at": best.deployed_at,
                                 "additions": best.additions, "deletions": best.deletions}
            context["other_deploys"] = [{"sha": d.sha, "deployed_at": d.deployed_at, "risky": d.risky}
                                        for d in near if d is not best][:5]
        dissent_at = int(policy.doc["diagnosis"]["dissent_confidence"])
        council = self.council or Council(self.db, None)
        secrets = await asyncio.to_thread(self.secrets, inc.tenant)   # it may read the store: off the loop
        try:
            verdict = await asyncio.wait_for(
                council.diagnose(inc.tenant, inc.id, context, context["allowed_actions"],
                                 secrets, dissent_at), self.ai_budget)
        except asyncio.TimeoutError:
            verdict = council._heuristic(context, f"the AI took longer than {self.ai_budget:g} s")
        if self.modes is not None:
            # No AI key is a configuration, not a fault: only a configured AI that fails degrades.
            failed = verdict.decision == "heuristic" and council.available
            await self.modes.set("ai_unavailable", failed, "; ".join(verdict.notes))
        theories = [t.as_data(label) for t, label in zip(verdict.theories, "AB")] if verdict.decision == "dissent" \
            else [t.as_data() for t in verdict.theories]
        data = {"category": verdict.lead.category, "root_cause": verdict.lead.root_cause,
                "suggested_action": verdict.lead.suggested_action, "evidence": list(verdict.lead.evidence),
                "logs_to_check": list(verdict.lead.logs_to_check), "theories": theories,
                "models": list(verdict.models), "notes": list(verdict.notes),
                "deploy": _deploy_summary(context.get("deploy"))}
        return verdict, data

    async def _diagnose_and_propose(self, inc: Incident, opening: Opening, policy: Policy) -> Incident:
        """DIAGNOSED (AI council, or the heuristic), then policy PROPOSES the service's action."""
        self._contexts[(inc.tenant, inc.id)] = diagnosis_context(inc, opening)
        verdict, data = await self._run_council(inc, self._contexts[(inc.tenant, inc.id)], policy)
        diagnosed = await engine.run(self.db, engine.transition(
            inc.tenant, inc.id, engine.DIAGNOSED, verdict.actor, decision=verdict.decision,
            confidence=verdict.confidence, policy_version=policy.version, reason=verdict.reason[:1000], data=data))
        if not inc.action:
            return diagnosed
        proposed = await engine.run(self.db, engine.transition(
            inc.tenant, inc.id, engine.PROPOSED, "policy", decision="propose", policy_version=policy.version,
            reason=f"policy proposes: {inc.action}", data={"action": inc.action, "service": inc.service_id}))
        await self._proposed(proposed, policy)
        return proposed

    async def _proposed(self, inc: Incident, policy: Policy) -> None:
        if self.on_proposed is not None:
            await self.on_proposed(inc)
        else:
            await self._tell(inc, "proposed", f"recommended action: {inc.action}", policy)

    def _material_change(self, inc: Incident, why: str, policy: Policy, breaches: list[str] | None = None) -> None:
        """Diagnose again, as an annotation (no stage change), on a material change only: the
        priority went up, or a kind of signal not seen before for this incident appeared."""
        context = self._contexts.get((inc.tenant, inc.id))
        if context is None:
            return
        if breaches is not None:
            seen = {b["kind"] for b in context.get("breaches", [])}
            if set(breaches) <= seen:
                return
            context["breaches"] = context.get("breaches", []) + [{"kind": k} for k in breaches if k not in seen]
        context["incident"] = {**context["incident"], "priority": inc.priority}

        async def again() -> None:
            verdict, data = await self._run_council(inc, context, policy)
            await self.db.append(LedgerEvent(
                kind="diagnosis.updated", tenant=inc.tenant, incident=inc.id, stage=inc.stage, actor=verdict.actor,
                decision=verdict.decision, confidence=verdict.confidence, policy_version=policy.version,
                reason=f"re-diagnosed ({why}): {verdict.reason}"[:1000], data=data))
        task = asyncio.get_running_loop().create_task(again())
        self.background.add(task)
        task.add_done_callback(self.background.discard)

    async def on_new_deploy(self, tenant: str, service: str | None) -> int:
        """A deploy was recorded: open incidents of that service (or all, for a service-less deploy)
        are diagnosed again. Returns how many."""
        return self._rediagnose(service, *(await self.db.read(_deploy_reads, tenant)))

    def _rediagnose(self, service: str | None, policy: Policy, open_incidents: list[Incident]) -> int:
        count = 0
        for inc in open_incidents:
            if service is None or inc.service_name == service:
                if (inc.tenant, inc.id) in self._contexts:
                    self._material_change(inc, "a new deploy", policy)
                    count += 1
        return count

    async def _repropose(self, inc: Incident, policy: Policy, why: str) -> Incident:
        """The outage goes on after the approval window closed: policy proposes again (new approvals)."""
        again = await engine.run(self.db, engine.transition(
            inc.tenant, inc.id, engine.PROPOSED, "policy", decision="propose", policy_version=policy.version,
            reason=f"policy proposes again: {why}", data={"action": inc.action, "service": inc.service_id}))
        await self._proposed(again, policy)
        return again

    async def _tell(self, inc: Incident, event: str, text: str, policy: Policy) -> None:
        await self.gateway.notify(Message(inc.tenant, inc.id, event, inc.priority, text,
                                          data={"stage": inc.stage, "service": inc.service_name}),
                                  policy_version=policy.version)


def _deploy_reads(conn: sqlite3.Connection, tenant: str) -> tuple[Policy, list[Incident]]:
    """What a new deploy's re-diagnosis reads: the tenant's policy and its open incidents."""
    return load_policy(conn, tenant), engine.list_incidents(conn, tenant, open_only=True, limit=1000)


def service_ref(conn: sqlite3.Connection, tenant: str, name: str | None) -> ServiceRef | None:
    """The tenant's service of that name (what ingested alerts name), if it is registered."""
    if not name:
        return None
    row = conn.execute("SELECT id, name, spec FROM services WHERE tenant = ? AND name = ?", (tenant, name)).fetchone()
    return ServiceRef(tenant, row[0], row[1], json.loads(row[2]).get("policy", {})) if row else None


def service_refs(conn: sqlite3.Connection, tenant: str, names: set[str | None]) -> dict[str | None, ServiceRef | None]:
    """:func:`service_ref` of each of ``names``, with one statement per 500 names."""
    found: dict[str | None, ServiceRef | None] = dict.fromkeys(names)
    for part in _chunks(sorted(n for n in names if n)):
        for row in conn.execute(f"SELECT id, name, spec FROM services WHERE tenant = ? AND name IN "
                                f"({', '.join('?' * len(part))})", (tenant, *part)):
            found[row[1]] = ServiceRef(tenant, row[0], row[1], json.loads(row[2]).get("policy", {}))
    return found


def diagnosis_context(inc: Incident, opening: Opening) -> dict[str, Any]:
    """What the council (or the heuristic) is told: structured facts, never free instructions."""
    data = opening.data
    alert = None
    if "alert_fingerprint" in data:
        alert = {k: data.get(k) for k in ("title", "severity", "labels", "annotations", "source", "starts_at")}
    return {"incident": {"id": inc.id, "title": inc.title, "priority": inc.priority, "opened_at": inc.opened_at,
                         "service": inc.service_name, "source": inc.source},
            "breaches": data.get("breaches", []), "reading": data.get("reading"), "alert": alert,
            "action": inc.action, "allowed_actions": [inc.action] if inc.action else [], "deploy": None}


def _deploy_summary(deploy: dict[str, Any] | None) -> dict[str, Any] | None:
    """What the ledger keeps of the most relevant deploy (no author; the message redacted and cut)."""
    if not deploy:
        return None
    return {"sha": deploy["sha"], "service": deploy.get("service"), "deployed_at": deploy.get("deployed_at"),
            "risky": deploy.get("risky", [])[:10], "message": redact(deploy.get("message", ""))[:200]}
