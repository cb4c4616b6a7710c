"""Grouping, with Prometheus Alertmanager's meaning: the notifications that one rule sends one
recipient about incidents with the same values of the rule's ``group_by`` labels form a group.

* A new group waits ``group_wait`` for more, then one message tells them all, with counts.
* Later notifications of that group wait until ``group_interval`` has passed since its last
  message, then go out together.
* With ``repeat_interval``, a group whose incidents are still open is told again that often.

Only what informs is grouped (detected, updated, escalated, recovered, resolved, and the pages of
escalation chains, so a storm's chains do not become a storm of pages); anything that asks for a
decision (a proposal with approval buttons and links) always goes out on its own, at once. Grouped
rows wait in the outbox in state ``grouped``; at a flush the first becomes the group's message and
the others are marked ``merged`` into it, so every notification stays accounted for."""

from __future__ import annotations

import hashlib
import json
import sqlite3
from collections import Counter
from typing import Any

from ..ledger.entry import LedgerEvent, identity_fingerprint, utc_timestamp
from ..store import WriteTx
from .routes import Rule

GROUPABLE = frozenset({"detected", "updated", "escalated", "escalation", "recovered", "resolved"})
MAX_LINES = 20


def applies(rule: Rule | None, event: str) -> bool:
    return rule is not None and rule.grouping.enabled and event in GROUPABLE


def group_of(rule: Rule, recipient: str, labels: dict[str, str]) -> tuple[str, dict[str, str]]:
    """The group's key and the label values that define it."""
    values = {k: labels.get(k, "") for k in rule.grouping.by}
    raw = json.dumps([rule.name, recipient, sorted(values.items())], separators=(",", ":"))
    return "g_" + hashlib.sha256(raw.encode()).hexdigest()[:20], values


def join(tx: WriteTx, tenant: str, rule: Rule, recipient: str, labels: dict[str, str], incident: str | None,
         now: float) -> str:
    """Put one notification into its group (inside the caller's transaction); returns the group key.
    Schedules the group's next message if none is scheduled."""
    key, values = group_of(rule, recipient, labels)
    g = rule.grouping
    row = tx.execute("SELECT next_flush, last_sent, members FROM notify_groups WHERE tenant = ? AND key = ?",
                     (tenant, key)).fetchone()
    if row is None:
        tx.execute("INSERT INTO notify_groups (tenant, key, rule, recipient, labels, next_flush, last_sent, wait, "
                   "interval, repeat, members) VALUES (?, ?, ?, ?, ?, ?, NULL, ?, ?, ?, ?)",
                   (tenant, key, rule.name, recipient, json.dumps(values, sort_keys=True), now + g.wait, g.wait,
                    g.interval, g.repeat, json.dumps([incident] if incident else [])))
        return key
    next_flush, last_sent, members = row
    if next_flush is None:
        next_flush = now + g.wait if last_sent is None else max(now, last_sent + g.interval)
    found = json.loads(members)
    if incident and incident not in found:
        found = (found + [incident])[-1000:]
    tx.execute("UPDATE notify_groups SET next_flush = ?, members = ? WHERE tenant = ? AND key = ?",
               (next_flush, json.dumps(found), tenant, key))
    return key


def due(conn: sqlite3.Connection, now: float) -> list[tuple[str, str]]:
    return [(t, k) for t, k in conn.execute(
        "SELECT tenant, key FROM notify_groups WHERE next_flush IS NOT NULL AND next_flush <= ? LIMIT 500", (now,))]


def next_due(conn: sqlite3.Connection) -> float | None:
    r = conn.execute("SELECT min(next_flush) FROM notify_groups WHERE next_flush IS NOT NULL").fetchone()
    return None if r is None or r[0] is None else float(r[0])


def summary_text(labels: dict[str, str], messages: list[dict[str, Any]], still_open: int | None = None) -> str:
    where = ", ".join(f"{k}={v}" for k, v in sorted(labels.items()) if v) or "all"
    if still_open is not None:
        return f"Still open in group {where}: {still_open} incident(s)"
    counts = Counter(m["event"] for m in messages)
    head = f"{len(messages)} notification(s) in group {where}: " + ", ".join(
        f"{n} {event}" for event, n in sorted(counts.items()))
    lines = [head] + [f"• {m['incident'] or '-'} {m['priority']} {m['event']}: {m['text'][:160]}"
                      for m in messages[:MAX_LINES]]
    if len(messages) > MAX_LINES:
        lines.append(f"… and {len(messages) - MAX_LINES} more")
    return "\n".join(lines)


def flush(tenant: str, key: str, now: float) -> Any:
    """The write that sends a due group: its waiting rows become one message (the first row, now
    queued) and the rest are marked merged into it; or, with nothing new, a repeat for a group whose
    incidents are still open. Ledgered as ``notification.grouped``."""

    def write(tx: WriteTx) -> int | None:
        group = tx.execute("SELECT rule, recipient, labels, next_flush, repeat, members FROM notify_groups "
                           "WHERE tenant = ? AND key = ?", (tenant, key)).fetchone()
        if group is None or group[3] is None or group[3] > now:
            return None
        rule, recipient, labels, _next, repeat, members = group
        labels = json.loads(labels)
        # each row with its retry span (deadline - next_at): the group's message keeps the first row's
        rows = tx.execute("SELECT id, body, deadline - next_at FROM outbox WHERE tenant = ? AND group_key = ? "
                          "AND state = 'grouped' ORDER BY id", (tenant, key)).fetchall()
        stamp = utc_timestamp()
        if rows:
            messages = [json.loads(b)["message"] for _, b, _ in rows]
            first_id, first_body, span = rows[0][0], json.loads(rows[0][1]), float(rows[0][2])
            text = summary_text(labels, messages)
        else:
            still = _open(tx.conn, tenant, json.loads(members))
            last = tx.execute("SELECT body, deadline - next_at FROM outbox WHERE tenant = ? AND group_key = ? "
                              "ORDER BY id DESC LIMIT 1", (tenant, key)).fetchone() if still else None
            if last is None:
                tx.execute("DELETE FROM notify_groups WHERE tenant = ? AND key = ?", (tenant, key))
                return None
            first_id, first_body, span = None, json.loads(last[0]), float(last[1])
            messages, text = [], summary_text(labels, [], len(still))
        priority = min((m["priority"] for m in messages), default=first_body["message"]["priority"])
        body = json.dumps({**first_body, "message": {**first_body["message"], "event": "grouped", "incident": None,
                                                     "priority": priority, "text": text, "buttons": [],
                                                     "data": {"group": labels, "count": len(messages)}}})
        if first_id is None:   # a repeat: a new row
            first_id = int(tx.execute(
                "INSERT INTO outbox (tenant, incident, recipient, event, body, route, state, reason, next_at, deadline, "
                "created, updated, group_key) VALUES (?, NULL, ?, 'grouped', ?, ?, 'queued', 'repeat of the group', "
                "?, ?, ?, ?, ?) RETURNING id", (tenant, recipient, body, rule, now, now + span, stamp, stamp, key)).fetchone()[0])
        else:
            tx.execute("UPDATE outbox SET state = 'queued', event = 'grouped', body = ?, reason = ?, next_at = ?, "
                       "deadline = ?, updated = ? WHERE id = ?",
                       (body, f"group of {len(messages)} notification(s)", now, now + span, stamp, first_id))
        for row_id, _, _ in rows[1:]:
            tx.execute("UPDATE outbox SET state = 'merged', reason = ?, updated = ? WHERE id = ?",
                       (f"in group message {first_id}", stamp, row_id))
        tx.execute("UPDATE notify_groups SET last_sent = ?, next_flush = ? WHERE tenant = ? AND key = ?",
                   (now, now + repeat if repeat > 0 else None, tenant, key))
        tx.append(LedgerEvent(kind="notification.grouped", tenant=tenant, actor="system", decision="grouped",
                              reason=f"rule {rule}: {len(messages)} notification(s) in one message"
                                     if rows else f"rule {rule}: repeat for a group still open",
                              data={"outbox": first_id, "merged": [r for r, _, _ in rows[1:]], "group": labels,
                                    "rule": rule, "recipient": identity_fingerprint(recipient)}))
        return first_id
    return write


def _open(conn: sqlite3.Connection, tenant: str, incidents: list[str]) -> list[str]:
    out = []
    for i in range(0, len(incidents), 500):
        chunk = incidents[i:i + 500]
        out += [r[0] for r in conn.execute(
            f"SELECT id FROM incidents WHERE tenant = ? AND is_open = 1 AND id IN ({','.join('?' * len(chunk))})",
            (tenant, *chunk))]
    return out
