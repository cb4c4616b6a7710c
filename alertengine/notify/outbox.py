"""The durable outbox: every notification becomes one stored delivery per recipient, with its state.

States: ``queued`` (waiting for its turn or its next attempt), ``sending`` (an attempt is in
flight), ``delivered``, ``held`` (quiet hours; released when the window ends), ``grouped``
(waiting for its group's next message; ``merged`` once it went out inside one), ``suppressed``
(silenced, inhibited, rate limited or shadow mode: kept, never sent), ``dropped`` (held, and the
rule said to drop what quiet hours held), ``summarised`` (held, and delivered inside one summary)
and ``dead`` (every channel kept failing until the deadline: a notification dead letter).

A row is written in the same transaction as the ledger entry of its routing decision, so a
notification is never routed without being stored, nor stored without being ledgered. The sender
(``sender.py``) moves rows on. An approval link is stored sealed by the vault, bound to its one
recipient, and wiped once the row is final."""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass
from typing import Any, Callable

from ..errors import ConflictError, NotFoundError
from ..ledger.entry import LedgerEvent, identity_fingerprint, utc_timestamp
from ..store import WriteTx
from ..tenancy.vault import SecretVault
from . import grouping, replies
from .router import HELD, SEND, Plan
from .routes import Rule

PENDING = ("queued", "sending", "held", "grouped")
FINAL = ("delivered", "suppressed", "dropped", "summarised", "merged", "dead")
STATES = (*PENDING, *FINAL)
_COLUMNS = ("id, tenant, incident, recipient, event, body, sealed, route, state, reason, channel_index, "
            "channel_failures, attempts, next_at, deadline, created, updated, channel")
OUTBOX_OUTPUT = {
    "type": "object", "required": ["id", "recipient", "event", "state", "reason", "attempts", "channel"],
    "properties": {"id": {"type": "integer"}, "incident": {"type": ["string", "null"]},
                   "recipient": {"type": "string"}, "event": {"type": "string"}, "rule": {"type": ["string", "null"]},
                   "state": {"type": "string", "enum": list(STATES)}, "reason": {"type": "string"},
                   "attempts": {"type": "integer"}, "channel": {"type": ["string", "null"]},
                   "channels": {"type": "array", "items": {"type": "string"}},
                   "created": {"type": "string"}, "updated": {"type": "string"}, "text": {"type": "string"}},
}


@dataclass(frozen=True)
class Outgoing:
    """One stored delivery."""

    id: int
    tenant: str
    incident: str | None
    recipient: str
    event: str
    body: dict[str, Any]          # message, chain, name, severity, broken channels
    sealed: bytes | None          # the recipient's own approval links ({label: link}, JSON), sealed
    route: str | None
    state: str
    reason: str
    channel_index: int
    channel_failures: int
    attempts: int
    next_at: float
    deadline: float
    created: str
    updated: str
    channel: str | None

    @property
    def chain(self) -> list[tuple[str, str]]:
        return [(c, a) for c, a in self.body["chain"]]

    def public(self) -> dict[str, Any]:
        return {"id": self.id, "incident": self.incident, "recipient": self.recipient, "event": self.event,
                "rule": self.route, "state": self.state, "reason": self.reason, "attempts": self.attempts,
                "channel": self.channel, "channels": [c for c, _ in self.chain], "created": self.created,
                "updated": self.updated, "text": self.body["message"]["text"]}


def row(r: tuple) -> Outgoing:
    return Outgoing(r[0], r[1], r[2], r[3], r[4], json.loads(r[5]), bytes(r[6]) if r[6] is not None else None, r[7],
                    r[8], r[9], r[10], r[11], r[12], r[13], r[14], r[15], r[16], r[17])


def link_context(tenant: str, recipient: str) -> str:
    return f"tenant:{tenant}/outbox/{recipient}/approval_link"


def message_body(message: Any) -> dict[str, Any]:
    return {"tenant": message.tenant, "incident": message.incident, "event": message.event,
            "priority": message.priority, "text": message.text, "data": message.data,
            "buttons": [[list(b) for b in row_] for row_ in message.buttons]}


def enqueue(tx: WriteTx, plan: Plan, message: Any, *, now: float, retry_for: float, vault: SecretVault, shadow: bool,
            rules: dict[str, Rule] | None = None) -> list[tuple[int, str]]:
    """Store one row per recipient of ``plan`` (inside the caller's transaction); return each row's
    id and state. Each recipient's own channels come first, then the plan's fallback channels.
    ``message.links`` maps recipient keys to their approval links, ``message.refs`` to their approval
    references (``"*"``: anyone else's); a recipient gets only its own. Each row also carries the
    incident's reply code (notify/replies.py)."""
    stamp = utc_timestamp()
    stored = []
    code = replies.reply_code(tx, plan.event.tenant, plan.event.incident) if plan.event.incident and not shadow else ""
    for d in plan.decisions:
        chain = list(d.recipient.chain) + [c for c in plan.fallback_chain if c not in d.recipient.chain]
        body = {"message": message_body(message), "chain": chain, "name": d.recipient.name,
                "severity": plan.severity, "then": d.then, "broken": [], "code": code,
                "refs": message.refs.get(d.recipient.key) or message.refs.get("*") or {}}
        if shadow:
            state, reason = "suppressed", "shadow mode: nothing leaves"
        elif d.outcome == SEND:
            state, reason = ("queued", d.why) if chain else ("dead", f"{d.why}; no channel reaches this recipient")
        elif d.outcome == HELD:
            state, reason = "held", d.why
        else:
            state, reason = "suppressed", f"{d.outcome}: {d.why}"
        key = d.recipient.key
        own = {k: v for k, v in message.links.items() if k == key or k.startswith(f"{key} (")}
        sealed = vault.encrypt(json.dumps(own), context=link_context(plan.event.tenant, key)) \
            if own and state in PENDING else None
        next_at = d.release_at if state == "held" and d.release_at is not None else now
        group = None
        rule = (rules or {}).get(d.rule or "")
        if state == "queued" and not own and grouping.applies(rule, plan.event.event):
            assert rule is not None
            group = grouping.join(tx, plan.event.tenant, rule, key, plan.event.labels, plan.event.incident, now)
            state, reason = "grouped", f"{d.why}; waits for its group's next message"
        cur = tx.execute(
            "INSERT INTO outbox (tenant, incident, recipient, event, body, sealed, route, state, reason, next_at, "
            "deadline, created, updated, group_key) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING id",
            (plan.event.tenant, plan.event.incident, key, plan.event.event, json.dumps(body), sealed,
             d.rule, state, reason, next_at, max(next_at, now) + retry_for, stamp, stamp, group))
        outbox_id = int(cur.fetchone()[0])
        stored.append((outbox_id, state))
        if state == "dead":
            tx.append(dead_event(plan.event.tenant, plan.event.incident, outbox_id, d.recipient.key,
                                 plan.event.event, reason))
    return stored


def suppress(item: Outgoing, why: str) -> Callable[[WriteTx], None]:
    """Keep a pending row from leaving (shadow mode began after it was queued), and say so in the ledger."""
    def write(tx: WriteTx) -> None:
        tx.execute("UPDATE outbox SET state = 'suppressed', reason = ?, sealed = NULL, updated = ? WHERE id = ?",
                   (why, utc_timestamp(), item.id))
        tx.append(LedgerEvent(kind="notification.suppressed", tenant=item.tenant, incident=item.incident,
                              actor="shadow_mode", decision="suppressed", reason=f"{why}: {item.event} not sent",
                              data={"outbox": item.id, "recipient": identity_fingerprint(item.recipient),
                                    "would_have": {"event": item.event, "text": item.body["message"]["text"],
                                                   "channels": [c for c, _ in item.chain]}}))
    return write


def dead_event(tenant: str, incident: str | None, row_id: int, recipient: str, event: str, reason: str) -> LedgerEvent:
    return LedgerEvent(kind="notification.dead", tenant=tenant, incident=incident, actor="system", decision="dead",
                       reason=f"{event} notification to {recipient} undeliverable: {reason}"[:1000],
                       data={"outbox": row_id, "recipient": identity_fingerprint(recipient), "event": event})


def get(conn: sqlite3.Connection, tenant: str, row_id: int) -> Outgoing:
    r = conn.execute(f"SELECT {_COLUMNS} FROM outbox WHERE tenant = ? AND id = ?", (tenant, row_id)).fetchone()
    if r is None:
        raise NotFoundError("notification")
    return row(r)


def listing(conn: sqlite3.Connection, tenant: str, *, state: str | None = None, incident: str | None = None,
            limit: int = 100) -> list[Outgoing]:
    sql, args = f"SELECT {_COLUMNS} FROM outbox WHERE tenant = ?", [tenant]
    if state:
        sql += " AND state = ?"
        args.append(state)
    if incident:
        sql += " AND incident = ?"
        args.append(incident)
    sql += " ORDER BY id DESC LIMIT ?"
    args.append(limit)
    return [row(r) for r in conn.execute(sql, args)]


def due(conn: sqlite3.Connection, now: float, busy: set[str], limit: int = 64) -> list[Outgoing]:
    """Rows whose turn it is: queued and due, and the oldest pending row of their recipient (a
    recipient's messages go out in order; held rows do not block the ones behind them), plus held
    rows whose quiet window is over."""
    out = []
    for r in conn.execute(
            f"SELECT {_COLUMNS} FROM outbox o WHERE state IN ('queued', 'held') AND next_at <= ? AND NOT EXISTS "
            "(SELECT 1 FROM outbox p WHERE p.tenant = o.tenant AND p.recipient = o.recipient AND p.id < o.id "
            "AND p.state IN ('queued', 'sending')) ORDER BY next_at, id LIMIT ?", (now, limit * 4)):
        item = row(r)
        key = f"{item.tenant}/{item.recipient}"
        if key in busy:
            continue
        busy.add(key)
        out.append(item)
        if len(out) >= limit:
            break
    return out


def next_due(conn: sqlite3.Connection) -> float | None:
    """When the sender has something to do next: a row's turn, a group's next message, an escalation step."""
    from . import escalation  # escalation builds on the outbox: imported when asked
    times = [t for t in (_next_row(conn), grouping.next_due(conn), escalation.next_due(conn)) if t is not None]
    return min(times) if times else None


def _next_row(conn: sqlite3.Connection) -> float | None:
    r = conn.execute("SELECT min(next_at) FROM outbox o WHERE state IN ('queued', 'held') AND NOT EXISTS "
                     "(SELECT 1 FROM outbox p WHERE p.tenant = o.tenant AND p.recipient = o.recipient AND p.id < o.id "
                     "AND p.state IN ('queued', 'sending'))").fetchone()
    return None if r is None or r[0] is None else float(r[0])


def counts(conn: sqlite3.Connection) -> dict[tuple[str, str], int]:
    return {(t, s): n for t, s, n in conn.execute("SELECT tenant, state, count(*) FROM outbox GROUP BY tenant, state")}


def recover(tx: WriteTx) -> int:
    """After a restart: attempts that were in flight are queued again (delivery is at least once)."""
    return tx.execute("UPDATE outbox SET state = 'queued' WHERE state = 'sending'").rowcount


def retry_dead(tenant: str, row_id: int, actor: str, now: float, retry_for: float) -> Callable[[WriteTx], Outgoing]:
    """Send a dead letter again, from its first channel, with a fresh deadline."""

    def write(tx: WriteTx) -> Outgoing:
        item = get(tx.conn, tenant, row_id)
        if item.state != "dead":
            raise ConflictError("id", f"notification {row_id} is {item.state}, not a dead letter")
        body = {**item.body, "broken": []}
        tx.execute("UPDATE outbox SET state = 'queued', reason = ?, channel_index = 0, channel_failures = 0, "
                   "next_at = ?, deadline = ?, body = ?, updated = ? WHERE id = ?",
                   (f"retried by {actor}", now, now + retry_for, json.dumps(body), utc_timestamp(), row_id))
        tx.append(LedgerEvent(kind="notification.retried", tenant=tenant, incident=item.incident, actor=actor,
                              reason=f"dead letter {row_id} sent again",
                              data={"outbox": row_id, "recipient": identity_fingerprint(item.recipient),
                                    "event": item.event}))
        return get(tx.conn, tenant, row_id)
    return write
