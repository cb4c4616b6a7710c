"""Escalation: until someone answers, the incident's chain tells more people, at stored deadlines.

A chain starts when an incident's first notification (``detected``) is routed and not silenced or
inhibited: the chain of the first rule that matched (``chains.py``). Its steps are rows' deadlines
in ``escalations``, run by the outbox sender with its injectable clock, so a restart loses none and,
each step being taken in one transaction with its outbox rows and ledger entry, fires none twice.

A step does nothing, and the chain ends (``escalation.stopped``), once the incident is acknowledged,
approved (AUTHORIZED onwards), rejected or closed. With ``remind_after`` an acknowledged incident
that stays open is brought back to the first step's receivers that often. A recovery that did not
work (``not_recovered``) starts the chain again. In shadow mode the steps run and nothing leaves:
each is ledgered with what it would have done."""

from __future__ import annotations

import dataclasses
import json
import sqlite3
from typing import Any, Callable

from ..ledger.entry import LedgerEvent, identity_fingerprint, utc_timestamp
from ..store import WriteTx
from ..tenancy.vault import SecretVault
from . import outbox, router
from .chains import BUILT_IN, Chain
from .message import Message
from .routes import PRIORITY_SEVERITY, RouteEvent, load_routing

# Stages in which nobody needs chasing any more: a human approved or rejected, or it is over.
STOP_STAGES = frozenset({"AUTHORIZED", "EXECUTING", "EXECUTED", "REJECTED", "RECOVERED", "RESOLVED"})
ACTIVE, ACKNOWLEDGED, STOPPED, DONE = "active", "acknowledged", "stopped", "done"


def start(tx: WriteTx, tenant: str, incident: str, chain: Chain, routing_version: str, now: float,
          why: str = "the incident opened") -> None:
    """(Re)start the incident's chain at its first step (inside the caller's transaction)."""
    tx.execute("INSERT INTO escalations (tenant, incident, chain, routing_version, step, round, round_start, due, "
               "state, updated) VALUES (?, ?, ?, ?, 0, 0, ?, ?, 'active', ?) ON CONFLICT (tenant, incident) DO UPDATE "
               "SET chain = excluded.chain, routing_version = excluded.routing_version, step = 0, round = 0, "
               "round_start = excluded.round_start, due = excluded.due, state = 'active', updated = excluded.updated",
               (tenant, incident, chain.name, routing_version, now, now + chain.steps[0].after, utc_timestamp()))
    tx.append(LedgerEvent(kind="escalation.started", tenant=tenant, incident=incident, actor="policy",
                          policy_version=routing_version, reason=f"chain {chain.name}: {why}",
                          data={"chain": chain.name, "repeat": chain.repeat, "remind_after": chain.remind_after,
                                "steps": [{"after": s.after, "receivers": list(s.receivers), "prefer": s.prefer}
                                          for s in chain.steps]}))


def due(conn: sqlite3.Connection, now: float) -> list[tuple[str, str]]:
    return [(t, i) for t, i in conn.execute(
        "SELECT tenant, incident FROM escalations WHERE due IS NOT NULL AND due <= ? ORDER BY due LIMIT 200", (now,))]


def next_due(conn: sqlite3.Connection) -> float | None:
    r = conn.execute("SELECT min(due) FROM escalations WHERE due IS NOT NULL").fetchone()
    return None if r is None or r[0] is None else float(r[0])


def status(conn: sqlite3.Connection, tenant: str, incident: str) -> dict[str, Any] | None:
    r = conn.execute("SELECT chain, step, round, due, state FROM escalations WHERE tenant = ? AND incident = ?",
                     (tenant, incident)).fetchone()
    return None if r is None else {"chain": r[0], "next_step": r[1] + 1, "round": r[2] + 1, "due": r[3],
                                   "state": r[4]}


def _stop(tx: WriteTx, tenant: str, incident: str, state: str, why: str, due_at: float | None = None) -> None:
    tx.execute("UPDATE escalations SET state = ?, due = ?, updated = ? WHERE tenant = ? AND incident = ?",
               (state, due_at, utc_timestamp(), tenant, incident))
    tx.append(LedgerEvent(kind="escalation.stopped", tenant=tenant, incident=incident, actor="policy",
                          decision=state, reason=why, data={"remind_at": due_at}))


def _prefer(plan: router.Plan, channel: str | None) -> router.Plan:
    """Each recipient's preferred channel first (a step that calls: voice), when they have it."""
    if channel is None:
        return plan
    out = []
    for d in plan.decisions:
        chain = d.recipient.chain
        first = tuple(c for c in chain if c[0] == channel)
        recipient = router.Recipient(d.recipient.key, d.recipient.name, first + tuple(c for c in chain if c not in first),
                                     d.recipient.unreachable, d.recipient.quiet)
        out.append(router.Decision(d.rule, recipient, d.outcome, d.why, d.release_at, d.then))
    return router.Plan(plan.event, plan.version, plan.matched, plan.severity, plan.escalated_by, plan.silenced_by,
                       plan.inhibited_by, tuple(out), plan.fallback)


def fire(tenant: str, incident: str, now: float, vault: SecretVault, shadow: bool) -> Callable[[WriteTx], list[int]]:
    """Take the incident's due step (one transaction): check whether anyone still needs telling,
    tell the step's receivers through the outbox, ledger it, and set the next deadline. Returns the
    outbox rows queued."""

    def write(tx: WriteTx) -> list[int]:
        row = tx.execute("SELECT chain, step, round, round_start, due, state FROM escalations WHERE tenant = ? AND "
                         "incident = ? AND due IS NOT NULL AND due <= ?", (tenant, incident, now)).fetchone()
        if row is None:
            return []
        name, step_no, round_no, round_start, _due, state = row
        routing = load_routing(tx.conn, tenant)
        chain = routing.chains.get(name, BUILT_IN)
        inc = tx.execute("SELECT stage, is_open, acknowledged_by, priority, title, service_name, source, labels, "
                         "service_id FROM incidents WHERE tenant = ? AND id = ?", (tenant, incident)).fetchone()
        if inc is None or not inc[1] or inc[0] in STOP_STAGES:
            _stop(tx, tenant, incident, STOPPED, "nobody needs chasing: the incident is "
                  + ("gone" if inc is None else inc[0].lower()))
            return []
        stage, _open, acked_by, priority, title, service, source, raw, service_id = inc
        if acked_by is not None and state == ACTIVE:
            if chain.remind_after > 0:
                _stop(tx, tenant, incident, ACKNOWLEDGED, f"acknowledged by {acked_by}: reminders every "
                      f"{chain.remind_after:g} s while it stays open", now + chain.remind_after)
            else:
                _stop(tx, tenant, incident, STOPPED, f"acknowledged by {acked_by}")
            return []
        reminder = state == ACKNOWLEDGED
        step = chain.steps[0] if reminder else chain.steps[min(step_no, len(chain.steps) - 1)]
        spec = router.service_spec(tx.conn, tenant, service_id) if service_id else None
        labels = router.incident_labels(json.loads(raw), priority, service, source, (spec or {}).get("labels"))
        text = (f"Reminder: {incident} ({title}) was acknowledged by {acked_by} and is still open." if reminder else
                f"No answer yet on {incident}: {title} ({priority}, {stage.lower()}). Escalation step "
                f"{step_no + 1} of {len(chain.steps)}" + (f", round {round_no + 1}" if chain.repeat else "")
                + (f": {step.note}." if step.note else "."))
        event = RouteEvent(tenant, incident, "escalation", priority, PRIORITY_SEVERITY.get(priority, "low"),
                           "health" if source == "poller" else "alert", source, service, labels, title, text)
        plan = _prefer(router.plan(tx.conn, routing, event, now, receivers=step.receivers,
                                   by=f"escalation:{chain.name}"), step.prefer)
        message = Message(tenant, incident, "escalation", priority, text,
                          data={"service": service, "chain": chain.name, "step": step_no + 1},
                          buttons=[[("Acknowledge", f"ak:{incident}"), ("Resolve", f"rs:{incident}"),
                                    ("Silence 1 h", f"sl:{incident}")]])
        # In a storm every incident's chain comes due together: where the incident's route groups, its
        # escalation pages are grouped the same way (one message per group and step, with counts).
        route = next((r for r in routing.rules if r.matches(dataclasses.replace(event, event="detected"))), None)
        by = f"escalation:{chain.name}"
        rules = {by: dataclasses.replace(route, name=by)} if route is not None and route.grouping.enabled else None
        stored = outbox.enqueue(tx, plan, message, now=now, retry_for=routing.retry_for, vault=vault, shadow=shadow,
                                rules=rules)
        tx.append(LedgerEvent(
            kind="escalation.step", tenant=tenant, incident=incident, actor="shadow_mode" if shadow else "policy",
            decision="suppressed" if shadow else ("reminded" if reminder else "escalated"),
            policy_version=routing.version,
            reason=("shadow mode: " if shadow else "") + ("reminder after acknowledgement" if reminder else
                                                           f"chain {chain.name}, step {step_no + 1}: no answer"),
            data={"chain": chain.name, "step": step_no + 1, "round": round_no + 1, "prefer": step.prefer,
                  "shadow": shadow, "receivers": list(step.receivers),
                  "told": [{"recipient": d.recipient.key, "outcome": d.outcome,
                            "channels": [c for c, _ in d.recipient.chain]} for d in plan.decisions],
                  "acknowledged_by": identity_fingerprint(acked_by) if acked_by else None}))
        _advance(tx, tenant, incident, chain, step_no, round_no, round_start, now, reminder)
        return [row_id for row_id, _ in stored]
    return write


def _advance(tx: WriteTx, tenant: str, incident: str, chain: Chain, step_no: int, round_no: int, round_start: float,
             now: float, reminder: bool) -> None:
    stamp = utc_timestamp()
    if reminder:
        tx.execute("UPDATE escalations SET due = ?, updated = ? WHERE tenant = ? AND incident = ?",
                   (now + chain.remind_after, stamp, tenant, incident))
        return
    nxt = step_no + 1
    if nxt < len(chain.steps):
        tx.execute("UPDATE escalations SET step = ?, due = ?, updated = ? WHERE tenant = ? AND incident = ?",
                   (nxt, round_start + chain.steps[nxt].after, stamp, tenant, incident))
    elif round_no < chain.repeat:
        start = round_start + chain.round_length
        tx.execute("UPDATE escalations SET step = 0, round = ?, round_start = ?, due = ?, updated = ? "
                   "WHERE tenant = ? AND incident = ?",
                   (round_no + 1, start, start + chain.steps[0].after, stamp, tenant, incident))
    else:
        tx.execute("UPDATE escalations SET state = ?, due = NULL, updated = ? WHERE tenant = ? AND incident = ?",
                   (DONE, stamp, tenant, incident))
        tx.append(LedgerEvent(kind="escalation.finished", tenant=tenant, incident=incident, actor="policy",
                              reason=f"chain {chain.name}: every step taken", data={"chain": chain.name}))
