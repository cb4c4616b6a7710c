"""The shadow-mode governance report: what would have happened, derived from the ledger alone.

The report is a fold over the tenant's ledger entries in ledger order (:class:`Fold`). Folding a
whole ledger on every request grows with the ledger (71 s at a million entries), so the appliance
keeps the fold as a projection (``shadow_tenant`` and ``shadow_incident``, migration m019):
:func:`fold_step` folds the entries appended since the last step, a bounded chunk at a time, and
:func:`projected_report` reads the result, one page of incidents at a time. The projection is not
evidence: it holds nothing the ledger does not, and :func:`shadow_report` — the same fold over the
tenant's whole ledger — is the reference it must always equal (the tests hold them to that).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import logging
import sqlite3
import time
from dataclasses import dataclass, field
from typing import Any, Callable

from ..store.database import Database, WriteTx
from ..tenancy.tenants import get_tenant

SUPPRESSED = ("notification.suppressed", "token.suppressed", "webhook.suppressed", "call.suppressed")
# Entry kinds the fold reads whatever their incident; every other entry matters only when it names
# an incident the report lists (its stage moves the incident on).
KINDS = ("tenant.created", "tenant.shadow_enabled", "tenant.shadow_disabled", "signal.breach",
         "incident.detected", "escalation.step", *SUPPRESSED)
CHUNK = 2_000   # ledger entries examined per fold step: one short read, one short write
log = logging.getLogger("alertengine.notify.shadow")


def _t(ts: str) -> dt.datetime:
    return dt.datetime.fromisoformat(ts.replace("Z", "+00:00"))


def _told(decisions: list[dict[str, Any]]) -> list[str]:
    """Who routing would have told, and on which channels."""
    return [f"{d['recipient']} ({', '.join(d['channels']) or 'fallback'})"
            + ("" if d["outcome"] == "send" else f" — {d['outcome']}") for d in decisions]


def new_tenant_state() -> dict[str, Any]:
    return {"counts": {k.split(".")[0]: 0 for k in SUPPRESSED}, "periods": [],
            "first_breach": {}}   # fingerprint -> ts of the first breach of the current streak


class Fold:
    """The report's state, moved on by ledger entries in ledger order, for any number of tenants.

    State not yet in memory is asked of ``load_tenant`` / ``load_incident`` (the projection's
    tables, or nothing for a fold from the start); what changed is named in ``dirty``."""

    def __init__(self, load_tenant: Callable[[str], dict[str, Any]] = lambda t: new_tenant_state(),
                 load_incident: Callable[[str, str], dict[str, Any] | None] = lambda t, i: None) -> None:
        self._load_tenant, self._load_incident = load_tenant, load_incident
        self.tenants: dict[str, dict[str, Any]] = {}
        self.incidents: dict[tuple[str, str], dict[str, Any] | None] = {}
        self.dirty: set[tuple[str, str]] = set()

    def tenant(self, tenant: str) -> dict[str, Any]:
        if tenant not in self.tenants:
            self.tenants[tenant] = self._load_tenant(tenant)
        return self.tenants[tenant]

    def incident(self, tenant: str, incident: str | None) -> dict[str, Any] | None:
        if incident is None:
            return None
        key = (tenant, incident)
        if key not in self.incidents:
            self.incidents[key] = self._load_incident(tenant, incident)
        return self.incidents[key]

    def apply(self, seq: int, e: dict[str, Any]) -> None:
        tenant, kind, data = e["tenant"], e["kind"], e["data"]
        st = self.tenant(tenant)
        if kind in ("tenant.created", "tenant.shadow_enabled"):
            st["periods"].append({"from": e["ts"], "to": None, "by": e["actor"]})
        elif kind == "tenant.shadow_disabled" and st["periods"]:
            st["periods"][-1].update(to=e["ts"], live_by=e["actor"])
        elif kind == "signal.breach" and e["incident"] is None:
            fp = f"health:{data['service']}"
            if data.get("consecutive") == 1 or fp not in st["first_breach"]:
                st["first_breach"][fp] = e["ts"]
        elif kind == "incident.detected":
            started = st["first_breach"].pop(data.get("fingerprint"), None) or data.get("starts_at") or e["ts"]
            latency = max(0.0, (_t(e["ts"]) - _t(started)).total_seconds())
            self.incidents[(tenant, e["incident"])] = {
                "incident": e["incident"], "title": data.get("title"), "priority": data.get("priority"),
                "service": data.get("service_name"), "detected_at": e["ts"], "first_signal_at": started,
                "detection_latency_s": round(latency, 3), "stage": e["stage"], "closed_at": None,
                "would_have": [], "_seq": seq}
            self.dirty.add((tenant, e["incident"]))
        elif kind in SUPPRESSED:
            what = kind.split(".")[0]
            st["counts"][what] += 1
            inc = self.incident(tenant, e["incident"])
            if inc is not None:
                would = {k: v for k, v in data["would_have"].items() if k != "recipient"}
                told = _told(would.get("decisions", []))
                inc["would_have"].append({"at": e["ts"], "what": what, **would, **({"told": told} if told else {})})
                self.dirty.add((tenant, e["incident"]))
        elif kind == "escalation.step" and data.get("shadow") and self.incident(tenant, e["incident"]) is not None:
            st["counts"]["escalation"] = st["counts"].get("escalation", 0) + 1
            self.incidents[(tenant, e["incident"])]["would_have"].append({  # type: ignore[index]
                "at": e["ts"], "what": "escalation", "step": data["step"], "chain": data["chain"],
                "told": _told(data["told"])})
            self.dirty.add((tenant, e["incident"]))
        elif e["stage"] and (inc := self.incident(tenant, e["incident"])) is not None:
            inc["stage"] = e["stage"]
            if e["stage"] in ("RECOVERED", "RESOLVED"):
                inc["closed_at"] = e["ts"]
            self.dirty.add((tenant, e["incident"]))


def _public(row: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in row.items() if not k.startswith("_")}


def _summary(conn: sqlite3.Connection, tenant_id: str, state: dict[str, Any], observed: int,
             p50: float | None, worst: float | None) -> dict[str, Any]:
    tenant = get_tenant(conn, tenant_id)
    row = conn.execute("SELECT max(tseq) FROM ledger WHERE tenant = ?", (tenant_id,)).fetchone()
    entries = 0 if row[0] is None else row[0] + 1
    return {
        "tenant": {"id": tenant.id, "name": tenant.name, "shadow": tenant.shadow},
        "generated_from": f"{entries} ledger entries of this tenant",
        "shadow_periods": state["periods"],
        "incidents_observed": observed,
        "suppressed": state["counts"],
        "detection_latency_s": {"p50": p50, "max": worst},
    }


def shadow_report(conn: sqlite3.Connection, tenant_id: str) -> dict[str, Any]:
    """The report folded from the tenant's whole ledger: the reference the projection equals.
    Its cost grows with the ledger — the API serves :func:`projected_report` instead."""
    get_tenant(conn, tenant_id)
    fold = Fold()
    for seq, body in conn.execute("SELECT seq, body FROM ledger WHERE tenant = ? ORDER BY tseq", (tenant_id,)):
        fold.apply(seq, json.loads(body))
    incidents = sorted((row for row in fold.incidents.values() if row is not None), key=lambda r: r["_seq"])
    latencies = sorted(i["detection_latency_s"] for i in incidents)
    report = _summary(conn, tenant_id, fold.tenant(tenant_id), len(incidents),
                      latencies[len(latencies) // 2] if latencies else None, latencies[-1] if latencies else None)
    return {**report, "incidents": [_public(i) for i in incidents]}


# --- the projection ---------------------------------------------------------------------------

@dataclass(frozen=True)
class FoldDelta:
    """One fold step's result: apply it only if the projection is still at ``start``."""
    start: int
    end: int
    tenants: dict[str, dict[str, Any]] = field(default_factory=dict)
    incidents: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)


def folded_upto(conn: sqlite3.Connection) -> int:
    return conn.execute("SELECT upto FROM shadow_fold WHERE id = 1").fetchone()[0]


def fold_step(conn: sqlite3.Connection, chunk: int = CHUNK) -> FoldDelta | None:
    """Fold the next ``chunk`` ledger entries (read-only: ``conn`` may be any reader, outside a
    transaction). None when the projection is up to date. Entries are parsed only when the fold
    reads them."""
    conn.execute("BEGIN")   # one snapshot: the projection's state and the entries after it
    try:
        return _fold_step(conn, chunk)
    finally:
        conn.execute("COMMIT")


def _fold_step(conn: sqlite3.Connection, chunk: int) -> FoldDelta | None:
    start = folded_upto(conn)
    size_row = conn.execute("SELECT max(seq) FROM ledger").fetchone()
    size = 0 if size_row[0] is None else size_row[0] + 1
    if start >= size:
        return None
    end = min(size, start + chunk)

    def load_tenant(tenant: str) -> dict[str, Any]:
        row = conn.execute("SELECT state FROM shadow_tenant WHERE tenant = ?", (tenant,)).fetchone()
        return json.loads(row[0]) if row else new_tenant_state()

    def load_incident(tenant: str, incident: str) -> dict[str, Any] | None:
        row = conn.execute("SELECT row FROM shadow_incident WHERE tenant = ? AND incident = ?",
                           (tenant, incident)).fetchone()
        return json.loads(row[0]) if row else None

    fold = Fold(load_tenant, load_incident)
    kinds = set(KINDS)
    for seq, tenant, incident, kind, body in conn.execute(
            "SELECT seq, tenant, incident, kind, body FROM ledger WHERE seq >= ? AND seq < ? ORDER BY seq",
            (start, end)):
        # the cheap test first: most entries (alerts received, repeats) name no stage and are never loaded
        if kind in kinds or (_has_stage(body) and fold.incident(tenant, incident) is not None):
            fold.apply(seq, json.loads(body))
    incidents = {key: fold.incidents[key] for key in fold.dirty if fold.incidents.get(key) is not None}
    return FoldDelta(start, end, fold.tenants, incidents)  # type: ignore[arg-type]


def _has_stage(body: bytes) -> bool:
    """Whether an entry names a stage, without parsing it. Bodies are canonical JSON with sorted
    keys, so the top-level ``"stage":`` is the last one (``data`` comes before it, and a quote
    inside a string is escaped, so the pattern never matches inside one)."""
    at = body.rfind(b'"stage":')
    return at >= 0 and body[at + 8:at + 12] != b"null"


def apply_delta(delta: FoldDelta) -> Callable[[WriteTx], bool]:
    """A write applying one fold step; False (nothing written) if another step got there first."""
    def write(tx: WriteTx) -> bool:
        if folded_upto(tx.conn) != delta.start:
            return False
        for tenant, state in delta.tenants.items():
            tx.execute("INSERT INTO shadow_tenant (tenant, state) VALUES (?, ?) "
                       "ON CONFLICT (tenant) DO UPDATE SET state = excluded.state", (tenant, json.dumps(state)))
        for (tenant, incident), row in delta.incidents.items():
            tx.execute("INSERT INTO shadow_incident (tenant, incident, seq, latency, row) VALUES (?, ?, ?, ?, ?) "
                       "ON CONFLICT (tenant, incident) DO UPDATE SET seq = excluded.seq, latency = excluded.latency, "
                       "row = excluded.row",
                       (tenant, incident, row["_seq"], row["detection_latency_s"], json.dumps(row)))
        tx.execute("UPDATE shadow_fold SET upto = ? WHERE id = 1", (delta.end,))
        return True
    return write


def projected_report(conn: sqlite3.Connection, tenant_id: str, *, limit: int = 100,
                     after: int | None = None) -> dict[str, Any]:
    """The report from the projection: the summary, and one page of incidents in order of
    detection (``after`` = the previous page's ``next_cursor``). Indexed reads only: its cost
    does not grow with the ledger."""
    get_tenant(conn, tenant_id)
    row = conn.execute("SELECT state FROM shadow_tenant WHERE tenant = ?", (tenant_id,)).fetchone()
    state = json.loads(row[0]) if row else new_tenant_state()
    observed = conn.execute("SELECT count(*) FROM shadow_incident WHERE tenant = ?", (tenant_id,)).fetchone()[0]
    p50 = worst = None
    if observed:
        p50 = conn.execute("SELECT latency FROM shadow_incident WHERE tenant = ? ORDER BY latency LIMIT 1 OFFSET ?",
                           (tenant_id, observed // 2)).fetchone()[0]
        worst = conn.execute("SELECT max(latency) FROM shadow_incident WHERE tenant = ?", (tenant_id,)).fetchone()[0]
    rows = conn.execute("SELECT seq, row FROM shadow_incident WHERE tenant = ? AND seq > ? ORDER BY seq LIMIT ?",
                        (tenant_id, -1 if after is None else after, limit + 1)).fetchall()
    page = [_public(json.loads(r)) for _s, r in rows[:limit]]
    report = _summary(conn, tenant_id, state, observed, p50, worst)
    size_row = conn.execute("SELECT max(seq) FROM ledger").fetchone()
    behind = (0 if size_row[0] is None else size_row[0] + 1) - folded_upto(conn)
    return {**report, "incidents": page, "next_cursor": rows[limit - 1][0] if len(rows) > limit else None,
            "as_of": {"ledger_entries_folded": folded_upto(conn), "behind": max(0, behind)}}


async def catch_up(db: Database, budget: float = 0.15) -> bool:
    """Fold what the ledger gained, off the event loop, for at most about ``budget`` seconds.
    True when the projection is up to date."""
    deadline = time.monotonic() + budget
    while True:
        delta = await asyncio.to_thread(lambda: fold_step(db.read_conn()))
        if delta is None:
            return True
        await db.write(apply_delta(delta))
        if time.monotonic() >= deadline:
            return False


async def keep_folded(db: Database, interval: float = 2.0) -> None:
    """Keep the projection near the ledger's head, so a report never has much left to fold (runs
    for the appliance's life; cancelled at shutdown)."""
    while True:
        try:
            done = await catch_up(db, budget=1.0)
        except asyncio.CancelledError:
            raise
        except Exception:  # noqa: BLE001 - the projection is rebuilt from the ledger on the next try
            log.exception("folding the ledger into the shadow report failed; retrying")
            done = True
        if done:
            await asyncio.sleep(interval)
