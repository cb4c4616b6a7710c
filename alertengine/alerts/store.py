"""Smart rules and alerts as stored: rules' create / update / delete (ledgered with a diff), and
every alert's lifecycle (active → acknowledged → resolved; escalated raises its severity).

An alert row is written in the same transaction as the ledger entry that records it
(``alert.received``, by detection), so the API, the stream and the ledger never disagree.

Decisions written here:

* An alert's id is ``alert_<rule id>_<unix seconds>`` as seed 003 shows it; ingested alerts use
  their source for the rule part (``alert_alertmanager_1764590000``). More in the same second get
  a random suffix (``alert_alertmanager_1764590000_3fa9c1``).
* ``/api/alerts/42/...`` (a bare number, as the seed's examples write it) names rule 42's newest
  alert that is not resolved.
* "Active" alerts are the unresolved ones: ``active`` and ``acknowledged``.
* Test alerts (``test = 1``) never count as active, never count for cooldowns or caps, and never
  reach detection: they exist to show what a rule would say.
"""

from __future__ import annotations

import functools
import json
import re
import secrets
import sqlite3
from datetime import datetime, timezone
from typing import Any, Callable, Mapping

from ..errors import ConflictError, NotFoundError
from ..ledger.entry import LedgerEvent, utc_timestamp
from ..signals import SEVERITIES, AlertSignal
from ..store import WriteTx
from .rules import SmartRule, check_definition

STATUSES = ("active", "acknowledged", "resolved", "test")
Versions = Callable[[sqlite3.Connection, str], str]   # a tenant's policy version, smart rules included
_COLUMNS = ("id, rule_id, rule_name, source, fingerprint, service, severity, message, triggered, status, "
            "metrics_snapshot, test, incident, acknowledged_by, acknowledged, resolved_by, resolved, escalated_by, "
            "escalated")


def iso(epoch: float | None) -> str | None:
    return None if epoch is None else utc_timestamp(datetime.fromtimestamp(epoch, timezone.utc))


# --- rules --------------------------------------------------------------------------------------

def _rule(row: tuple[Any, ...], tenant: str) -> SmartRule:
    return SmartRule(int(row[0]), tenant, row[1], bool(row[2]), json.loads(row[3]))


def list_rules(conn: sqlite3.Connection, tenant: str, *, active_only: bool = False) -> list[SmartRule]:
    sql = "SELECT id, name, is_active, definition FROM smart_rules WHERE tenant = ? AND deleted IS NULL"
    sql += " AND is_active = 1" if active_only else ""
    return [_rule(r, tenant) for r in conn.execute(sql + " ORDER BY id", (tenant,))]


def get_rule(conn: sqlite3.Connection, tenant: str, rule_id: int) -> SmartRule:
    row = conn.execute("SELECT id, name, is_active, definition FROM smart_rules WHERE tenant = ? AND id = ? "
                       "AND deleted IS NULL", (tenant, rule_id)).fetchone()
    if row is None:
        raise NotFoundError("smart rule")
    return _rule(row, tenant)


def _diff(old: Mapping[str, Any], new: Mapping[str, Any], prefix: str = "") -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key), new.get(key)
        path = f"{prefix}{key}"
        if isinstance(a, Mapping) and isinstance(b, Mapping):
            out.update(_diff(a, b, path + "."))
        elif a != b:
            out[path] = {"from": a, "to": b}
    return out


def _ledger_change(tx: WriteTx, tenant: str, actor: str, what: str, rule_id: int, before: dict[str, Any],
                   after: dict[str, Any], from_version: str, versions: Versions) -> None:
    to_version = versions(tx.conn, tenant)
    diff = _diff(before, after)
    tx.append(LedgerEvent(kind=f"smart_rule.{what}", tenant=tenant, actor=actor, policy_version=to_version,
                          decision=what, reason=f"smart rule {rule_id} {what}: {len(diff)} setting(s); "
                                                f"policy {from_version} -> {to_version}",
                          data={"rule_id": rule_id, "diff": diff, "from_version": from_version,
                                "to_version": to_version}))


def create_rule(tenant: str, body: Mapping[str, Any], actor: str, versions: Versions) -> Callable[[WriteTx], SmartRule]:
    definition = check_definition(body["rule_definition"])

    def write(tx: WriteTx) -> SmartRule:
        before = versions(tx.conn, tenant)
        now = utc_timestamp()
        cur = tx.execute("INSERT INTO smart_rules (tenant, name, is_active, definition, created, created_by, updated) "
                         "VALUES (?, ?, ?, ?, ?, ?, ?) RETURNING id",
                         (tenant, body["name"], int(body.get("is_active", True)), json.dumps(definition, sort_keys=True),
                          now, actor, now))
        rule = get_rule(tx.conn, tenant, int(cur.fetchone()[0]))
        _ledger_change(tx, tenant, actor, "created", rule.id, {}, rule.public(), before, versions)
        return rule
    return write


def update_rule(tenant: str, rule_id: int, body: Mapping[str, Any], actor: str,
                versions: Versions) -> Callable[[WriteTx], SmartRule]:
    """Change what ``body`` names (a PUT gives all of it, a PATCH some)."""
    definition = check_definition(body["rule_definition"]) if "rule_definition" in body else None

    def write(tx: WriteTx) -> SmartRule:
        old = get_rule(tx.conn, tenant, rule_id)
        before = versions(tx.conn, tenant)
        tx.execute("UPDATE smart_rules SET name = ?, is_active = ?, definition = ?, updated = ? WHERE tenant = ? "
                   "AND id = ?", (body.get("name", old.name), int(body.get("is_active", old.is_active)),
                                  json.dumps(definition if definition is not None else dict(old.definition),
                                             sort_keys=True), utc_timestamp(), tenant, rule_id))
        new = get_rule(tx.conn, tenant, rule_id)
        _ledger_change(tx, tenant, actor, "updated", rule_id, old.public(), new.public(), before, versions)
        return new
    return write


def delete_rule(tenant: str, rule_id: int, actor: str, versions: Versions) -> Callable[[WriteTx], SmartRule]:
    """A deleted rule stops firing; its alerts stay (and keep its name), and its row stays for the record."""
    def write(tx: WriteTx) -> SmartRule:
        old = get_rule(tx.conn, tenant, rule_id)
        before = versions(tx.conn, tenant)
        tx.execute("UPDATE smart_rules SET deleted = ? WHERE tenant = ? AND id = ?", (utc_timestamp(), tenant, rule_id))
        _ledger_change(tx, tenant, actor, "deleted", rule_id, old.public(), {}, before, versions)
        return old
    return write


# --- alerts -------------------------------------------------------------------------------------

def public(row: tuple[Any, ...]) -> dict[str, Any]:
    """An alert as the API and the stream show it (seed 003's fields first)."""
    (aid, rule_id, rule_name, source, _fp, service, severity, message, triggered, status, snapshot, test, incident,
     ack_by, ack, res_by, res, esc_by, esc) = row
    return {"id": aid, "rule_id": rule_id, "rule_name": rule_name, "severity": severity, "message": message,
            "triggered_at": iso(triggered), "status": status, "metrics_snapshot": json.loads(snapshot),
            "source": source, "service": service, "incident": incident, "test": bool(test),
            "acknowledged_by": ack_by, "acknowledged_at": iso(ack), "resolved_by": res_by, "resolved_at": iso(res),
            "escalated_by": esc_by, "escalated_at": iso(esc)}


def _fetch(conn: sqlite3.Connection, tenant: str, alert_id: str) -> tuple[Any, ...] | None:
    return conn.execute(f"SELECT {_COLUMNS} FROM alerts WHERE tenant = ? AND id = ?", (tenant, alert_id)).fetchone()


def find_alert(conn: sqlite3.Connection, tenant: str, ref: str) -> dict[str, Any]:
    """An alert by id, or by a bare rule number (that rule's newest unresolved alert)."""
    row = _fetch(conn, tenant, ref)
    if row is None and re.fullmatch(r"[0-9]{1,18}", ref):
        row = conn.execute(f"SELECT {_COLUMNS} FROM alerts WHERE tenant = ? AND rule_id = ? AND test = 0 AND "
                           "status IN ('active', 'acknowledged') ORDER BY triggered DESC, id DESC LIMIT 1",
                           (tenant, int(ref))).fetchone()
    if row is None:
        raise NotFoundError("alert")
    return public(row)


def active_alerts(conn: sqlite3.Connection, tenant: str, limit: int = 1000) -> list[dict[str, Any]]:
    return [public(r) for r in conn.execute(
        f"SELECT {_COLUMNS} FROM alerts WHERE tenant = ? AND status IN ('active', 'acknowledged') AND test = 0 "
        "ORDER BY triggered DESC, id DESC LIMIT ?", (tenant, limit))]


def statistics(conn: sqlite3.Connection, tenant: str) -> dict[str, Any]:
    by = {s: 0 for s in SEVERITIES}
    for severity, count in conn.execute("SELECT severity, count(*) FROM alerts WHERE tenant = ? AND test = 0 AND "
                                        "status IN ('active', 'acknowledged') GROUP BY severity", (tenant,)):
        by[severity] = count
    return {"total_active": sum(by.values()), "by_severity": by}


def history(conn: sqlite3.Connection, tenant: str, since: float, until: float,
            limit: int) -> tuple[list[dict[str, Any]], int]:
    rows = conn.execute(f"SELECT {_COLUMNS} FROM alerts WHERE tenant = ? AND triggered >= ? AND triggered <= ? "
                        "ORDER BY triggered DESC, id DESC LIMIT ?", (tenant, since, until, limit)).fetchall()
    total = conn.execute("SELECT count(*) FROM alerts WHERE tenant = ? AND triggered >= ? AND triggered <= ?",
                         (tenant, since, until)).fetchone()[0]
    return [public(r) for r in rows], int(total)


def last_triggered(conn: sqlite3.Connection, tenant: str, rule_id: int, service: str | None) -> float | None:
    """When the rule last alerted (for this service, if it watches services; tests aside): what its
    cooldown counts from."""
    row = conn.execute("SELECT triggered FROM alerts WHERE tenant = ? AND rule_id = ? AND service IS ? AND test = 0 "
                       "ORDER BY triggered DESC LIMIT 1", (tenant, rule_id, service)).fetchone()
    return row[0] if row else None


def count_since(conn: sqlite3.Connection, tenant: str, rule_id: int, since: float) -> int:
    """The rule's alerts (tests aside) since ``since``: what its hourly cap counts."""
    return int(conn.execute("SELECT count(*) FROM alerts WHERE tenant = ? AND rule_id = ? AND triggered > ? "
                            "AND test = 0", (tenant, rule_id, since)).fetchone()[0])


_UNRESOLVED_SQL = (f"SELECT {_COLUMNS} FROM alerts INDEXED BY alerts_unresolved WHERE tenant = ? AND source = ? "
                   "AND status != 'resolved' AND status != 'test' AND test = 0")


def unresolved(conn: sqlite3.Connection, tenant: str, source: str, fingerprint: str) -> dict[str, Any] | None:
    # "status != 'resolved'" as the partial index alerts_unresolved states it: its lookup, whatever the
    # table holds (without it, the planner may walk the tenant's whole history)
    row = conn.execute(f"{_UNRESOLVED_SQL} AND fingerprint = ? ORDER BY triggered DESC LIMIT 1",
                       (tenant, source, fingerprint)).fetchone()
    return public(row) if row else None


_UNRESOLVED = "unresolved alerts"   # WriteTx.memo key: (tenant, source, fingerprint) -> unresolved(...) then


def prefetch_unresolved(tx: WriteTx, keys: list[tuple[str, str, str]]) -> None:
    """:func:`unresolved` of every key, with a statement per (tenant, source) and 500 fingerprints,
    kept in the write's memo for :func:`record_signal` (which drops a key whenever it changes that
    alert, so a later lookup reads the table again)."""
    memo: dict[tuple[str, str, str], dict[str, Any] | None] = tx.memo.setdefault(_UNRESOLVED, {})
    groups: dict[tuple[str, str], set[str]] = {}
    for tenant, source, fp in keys:
        groups.setdefault((tenant, source), set()).add(fp)
    for (tenant, source), fps in groups.items():
        wanted = sorted(fps)
        for start in range(0, len(wanted), 500):
            part = wanted[start:start + 500]
            newest: dict[str, tuple[Any, ...]] = {}
            for row in tx.conn.execute(f"{_UNRESOLVED_SQL} AND fingerprint IN ({', '.join('?' * len(part))})",
                                       (tenant, source, *part)):
                held = newest.get(row[4])
                if held is None or row[8] > held[8]:   # the newest per fingerprint, as unresolved() orders
                    newest[row[4]] = row
            for fp in part:
                row = newest.get(fp)
                memo[(tenant, source, fp)] = public(row) if row is not None else None


def insert_alert(tx: WriteTx, tenant: str, **fields: Any) -> dict[str, Any]:
    """Store a new alert (the fields of :func:`_insert_row`) and return it as the API shows it."""
    return public(_insert_row(tx, tenant, **fields))


def _insert_row(tx: WriteTx, tenant: str, *, prefix: str, rule_id: int | None, rule_name: str, source: str,
                fingerprint: str, service: str | None, severity: str, message: str, snapshot: Mapping[str, Any],
                incident: str | None, now: float, test: bool = False) -> tuple[Any, ...]:
    """Store a new alert; its row as ``public`` takes it. Its id is ``alert_<prefix>_<unix seconds>``;
    when that second already has one (a burst), a random suffix: one statement, however many
    alerts share the second."""
    second, key = int(now), ("alert id second", tenant, prefix)
    # Within one write (an ingest request's alerts), a burst's plain id is taken after its first
    # alert: this hint skips trying it again (never trusted: the INSERT decides).
    plain = tx.memo.get(key) != second
    tx.memo[key] = second
    values = [tenant, f"alert_{prefix}_{second}" if plain else f"alert_{prefix}_{second}_{secrets.token_hex(3)}",
              rule_id, rule_name[:200], source, fingerprint, service, severity,
              message[:2000], now, "test" if test else "active", json.dumps(dict(snapshot), sort_keys=True), int(test),
              incident, now]
    while not tx.execute("INSERT OR IGNORE INTO alerts (tenant, id, rule_id, rule_name, source, fingerprint, service, "
                         "severity, message, triggered, status, metrics_snapshot, test, incident, updated) VALUES "
                         "(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", values).rowcount:
        values[1] = f"alert_{prefix}_{int(now)}_{secrets.token_hex(3)}"
    return (values[1], rule_id, values[3], source, fingerprint, service, severity, values[8], now, values[10],
            values[11], int(test), incident, None, None, None, None, None, None)


Described = Callable[[], dict[str, Any]]


def _as_given(alert: dict[str, Any]) -> Described:
    return lambda: alert


def record_signal(tx: WriteTx, tenant: str, signal: AlertSignal, incident: str | None, actor: str,
                  now: float) -> list[Described]:
    """What an alert signal does to the alerts (called by detection in the transaction that ledgers
    it): a firing alert is a new alert unless it is still unresolved; a resolve or an acknowledge
    at the source moves the unresolved one. Returns the alerts that changed, each as a call that
    describes it as the API shows it (as it was written): a new alert is described only if asked,
    which the live stream does only when someone watches the tenant."""
    memo = tx.memo.get(_UNRESOLVED)
    key = (tenant, signal.source, signal.fingerprint)
    if memo is not None and key in memo:
        current = memo.pop(key)   # this call may change it: whoever asks next reads the table
    else:
        current = unresolved(tx.conn, tenant, signal.source, signal.fingerprint)
    if signal.status == "firing":
        if current is not None:
            if incident and current["incident"] != incident:
                tx.execute("UPDATE alerts SET incident = ?, updated = ? WHERE tenant = ? AND id = ?",
                           (incident, now, tenant, current["id"]))
                return [_as_given(public(_fetch(tx.conn, tenant, current["id"]) or ()))]
            return []
        origin = signal.origin
        now = float(origin.get("triggered", now))
        snapshot = origin.get("metrics_snapshot") or {**dict(signal.labels), **dict(signal.annotations)}
        rule_id = origin.get("rule_id")
        row = _insert_row(
            tx, tenant, prefix=str(rule_id) if rule_id is not None else signal.source, rule_id=rule_id,
            rule_name=origin.get("rule_name") or signal.labels.get("alertname") or signal.title, source=signal.source,
            fingerprint=signal.fingerprint, service=signal.service, severity=signal.severity,
            message=origin.get("message") or _message(signal), snapshot=snapshot, incident=incident, now=now)
        return [functools.partial(public, row)]
    if current is None:
        return []
    if signal.status == "resolved":
        return [_as_given(_move(tx, tenant, current["id"], "resolved", actor, now))]
    if signal.status == "acknowledged" and current["status"] == "active":
        return [_as_given(_move(tx, tenant, current["id"], "acknowledged", actor, now))]
    return []


def _message(signal: AlertSignal) -> str:
    summary = signal.annotations.get("summary") or signal.annotations.get("description") or ""
    return f"{signal.title}: {summary}" if summary and summary != signal.title else signal.title


def _move(tx: WriteTx, tenant: str, alert_id: str, status: str, actor: str, now: float) -> dict[str, Any]:
    column = {"acknowledged": "acknowledged", "resolved": "resolved"}[status]
    tx.execute(f"UPDATE alerts SET status = ?, {column}_by = ?, {column} = ?, updated = ? WHERE tenant = ? AND id = ?",
               (status, actor, now, now, tenant, alert_id))
    row = _fetch(tx.conn, tenant, alert_id)
    assert row is not None
    return public(row)


def act(tenant: str, ref: str, what: str, actor: str, now: float,
        reason: str = "") -> Callable[[WriteTx], tuple[dict[str, Any], dict[str, Any]]]:
    """A person acknowledges, resolves or escalates an alert: the change and the ledger entry in
    one transaction. Returns (before, after). Escalating raises the severity one step (critical
    stays critical) and is what policy then hears. A resolved alert takes no action; a test alert
    none at all."""
    assert what in ("acknowledge", "resolve", "escalate")

    def write(tx: WriteTx) -> tuple[dict[str, Any], dict[str, Any]]:
        before = find_alert(tx.conn, tenant, ref)
        if before["test"]:
            raise ConflictError("alert_id", "a test alert is never acted on")
        if before["status"] == "resolved":
            raise ConflictError("alert_id", f"alert {before['id']} is already resolved")
        if what == "acknowledge":
            if before["status"] == "acknowledged":
                return before, before       # idempotent: the first acknowledgement stands
            after = _move(tx, tenant, before["id"], "acknowledged", actor, now)
        elif what == "resolve":
            after = _move(tx, tenant, before["id"], "resolved", actor, now)
        else:
            severity = SEVERITIES[max(0, SEVERITIES.index(before["severity"]) - 1)]
            tx.execute("UPDATE alerts SET severity = ?, escalated_by = ?, escalated = ?, updated = ? WHERE tenant = ? "
                       "AND id = ?", (severity, actor, now, now, tenant, before["id"]))
            after = public(_fetch(tx.conn, tenant, before["id"]) or ())
        tx.append(LedgerEvent(
            kind=f"alert.{what}d", tenant=tenant,
            incident=before["incident"], actor=actor, decision=after["status"],
            reason=reason or f"alert {before['id']} ({before['rule_name']}) {what}d by {actor}",
            data={"alert": before["id"], "rule_id": before["rule_id"], "source": before["source"],
                  "from": {"status": before["status"], "severity": before["severity"]},
                  "to": {"status": after["status"], "severity": after["severity"]}}))
        return before, after
    return write
