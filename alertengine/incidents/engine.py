"""The incident state machine: the only place incident state changes.

Every change goes through ``apply_transition``, which checks the transition table below
(from stage, to stage, the actor kinds allowed) and writes the incident row and its ledger entry in
the same transaction. A refused transition is ledgered and raises ``IllegalTransitionError``.
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass
from typing import Any, Callable

from ..errors import AlertEngineError, NotFoundError
from ..ledger.entry import LedgerEvent, utc_timestamp
from ..store import Database, WriteTx
from . import timers
from .replay import IncidentState, ReplayReport, comparator, reducer

DETECTED, DIAGNOSED, PROPOSED, AUTHORIZED = "DETECTED", "DIAGNOSED", "PROPOSED", "AUTHORIZED"
EXECUTING, EXECUTED, RECOVERED = "EXECUTING", "EXECUTED", "RECOVERED"
EXPIRED, REJECTED, FAILED, RESOLVED = "EXPIRED", "REJECTED", "FAILED", "RESOLVED"
STAGES = (DETECTED, DIAGNOSED, PROPOSED, AUTHORIZED, EXECUTING, EXECUTED, RECOVERED, EXPIRED, REJECTED, FAILED,
          RESOLVED)
CLOSED = frozenset({RECOVERED, RESOLVED})
OPEN = frozenset(STAGES) - CLOSED

# (from, to) -> actor kinds allowed. None as "from" opens an incident. This table is the whole rule.
TRANSITIONS: dict[tuple[str | None, str], frozenset[str]] = {
    (None, DETECTED): frozenset({"policy"}),
    **{(s, DIAGNOSED): frozenset({"ai", "system"}) for s in (DETECTED, DIAGNOSED)},
    **{(s, PROPOSED): frozenset({"policy"}) for s in (DETECTED, DIAGNOSED, EXPIRED, REJECTED, FAILED)},
    (PROPOSED, AUTHORIZED): frozenset({"engineer"}),
    (PROPOSED, REJECTED): frozenset({"engineer"}),
    (PROPOSED, EXPIRED): frozenset({"system"}),
    (AUTHORIZED, EXECUTING): frozenset({"orchestrator"}),
    (EXECUTING, EXECUTED): frozenset({"orchestrator"}),
    (EXECUTING, FAILED): frozenset({"orchestrator"}),
    # the recovery ran but the service did not recover within the verification window
    (EXECUTED, FAILED): frozenset({"policy"}),
    **{(s, RECOVERED): frozenset({"policy"}) for s in OPEN - {AUTHORIZED, EXECUTING}},
    **{(s, RESOLVED): frozenset({"engineer", "policy", "ingest"}) for s in OPEN},
}
# Changes that are not stage moves, with the actor kinds allowed.
ACTIONS: dict[str, frozenset[str]] = {
    "escalate": frozenset({"policy"}),
    # an engineer, or their alerting tool relaying an engineer's acknowledgement (PagerDuty)
    "acknowledge": frozenset({"engineer", "ingest"}),
}
PRIORITIES = ("P0", "P1", "P2", "P3")


class IllegalTransitionError(AlertEngineError):
    def __init__(self, incident: str, src: str | None, dst: str, actor: str) -> None:
        super().__init__(f"{incident}: {src} -> {dst} is not allowed for actor {actor!r}")
        self.incident, self.src, self.dst, self.actor = incident, src, dst, actor


# Actor kinds that name someone or something: engineer:<identity>, ai:<model>, ingest:<source>.
_NAMED_KINDS = frozenset({"engineer", "ai", "ingest"})


def actor_kind(actor: str) -> str:
    """The kind of ``actor`` that the tables above name, or "" when it is none: a named kind needs a
    non-empty name after its colon (``engineer:`` authorizes nothing), a bare kind has no colon."""
    kind, colon, name = actor.partition(":")
    if kind in _NAMED_KINDS:
        return kind if colon and name.strip() else ""
    return "" if colon else kind


@dataclass(frozen=True)
class Incident:
    tenant: str
    id: str
    service_id: str | None
    service_name: str | None
    fingerprint: str
    source: str
    title: str
    stage: str
    priority: str
    action: str | None
    is_open: bool
    acknowledged_by: str | None
    opened_at: str
    updated_at: str
    closed_at: str | None

    def public(self) -> dict[str, Any]:
        return dict(self.__dict__)


_COLUMNS = ("tenant, id, service_id, service_name, fingerprint, source, title, stage, priority, action, is_open, "
            "acknowledged_by, opened_at, updated_at, closed_at")


def _row(r: tuple) -> Incident:
    return Incident(r[0], r[1], r[2], r[3], r[4], r[5], r[6], r[7], r[8], r[9], bool(r[10]), r[11], r[12], r[13], r[14])


def get_incident(conn: sqlite3.Connection, tenant: str, incident_id: str) -> Incident:
    r = conn.execute(f"SELECT {_COLUMNS} FROM incidents WHERE tenant = ? AND id = ?", (tenant, incident_id)).fetchone()
    if r is None:
        raise NotFoundError("incident")
    return _row(r)


def open_incident_for(conn: sqlite3.Connection, tenant: str, fingerprint: str) -> Incident | None:
    r = conn.execute(f"SELECT {_COLUMNS} FROM incidents WHERE tenant = ? AND fingerprint = ? AND is_open = 1",
                     (tenant, fingerprint)).fetchone()
    return _row(r) if r else None


def open_incidents_for(conn: sqlite3.Connection, tenant: str, fingerprints: list[str]) -> list[Incident]:
    marks = ", ".join("?" * len(fingerprints))
    return [_row(r) for r in conn.execute(f"SELECT {_COLUMNS} FROM incidents WHERE tenant = ? AND is_open = 1 "
                                          f"AND fingerprint IN ({marks})", (tenant, *fingerprints))]


def incidents_with_labels(conn: sqlite3.Connection, tenant: str, ids: list[str]) -> list[tuple[Incident, str]]:
    """The tenant's incidents of those ids (any found), each with its labels as stored (JSON)."""
    marks = ", ".join("?" * len(ids))
    return [(_row(r), r[15]) for r in conn.execute(f"SELECT {_COLUMNS}, labels FROM incidents WHERE tenant = ? "
                                                     f"AND id IN ({marks})", (tenant, *ids))]


def list_incidents(conn: sqlite3.Connection, tenant: str, *, open_only: bool = False, limit: int = 100,
                   before: tuple[str, str] | None = None) -> list[Incident]:
    """Newest first; ``before`` = (opened_at, id) of the last incident of the previous page. Read
    along the index (tenant, opened_at, id): the cost is the page's, not the tenant's history."""
    sql = f"SELECT {_COLUMNS} FROM incidents WHERE tenant = ?" + (" AND is_open = 1" if open_only else "")
    params: tuple[Any, ...] = (tenant,)
    if before is not None:
        sql += " AND (opened_at < ? OR (opened_at = ? AND id < ?))"
        params += (before[0], before[0], before[1])
    return [_row(r) for r in conn.execute(sql + " ORDER BY opened_at DESC, id DESC LIMIT ?", (*params, limit))]


@dataclass(frozen=True)
class Opening:
    """What policy decided to open."""

    tenant: str
    fingerprint: str
    source: str
    title: str
    priority: str
    service_id: str | None
    service_name: str | None
    action: str | None
    policy_version: str
    reason: str
    data: dict[str, Any]


def _refuse(tx: WriteTx, tenant: str, incident: str, src: str | None, dst: str, actor: str,
            policy_version: str | None) -> IllegalTransitionError:
    tx.append(LedgerEvent(kind="incident.transition_refused", tenant=tenant, incident=incident, stage=src,
                          actor=actor, decision="refused", policy_version=policy_version,
                          reason=f"{src} -> {dst} is not allowed for {actor_kind(actor)!r}",
                          data={"from": src, "to": dst}))
    return IllegalTransitionError(incident, src, dst, actor)


def apply_transition(tx: WriteTx, inc: Incident, dst: str, actor: str, *, reason: str, kind: str | None = None,
                     decision: str | None = None, confidence: int | None = None, policy_version: str | None = None,
                     data: dict[str, Any] | None = None) -> Incident | IllegalTransitionError:
    """Move ``inc`` to ``dst`` if the table allows ``actor``; otherwise ledger the refusal and return
    the error (the caller raises it after the refusal entry is committed)."""
    allowed = TRANSITIONS.get((inc.stage, dst))
    if allowed is None or actor_kind(actor) not in allowed:
        return _refuse(tx, inc.tenant, inc.id, inc.stage, dst, actor, policy_version)
    now = utc_timestamp()
    is_open = dst not in CLOSED
    tx.execute("UPDATE incidents SET stage = ?, is_open = ?, updated_at = ?, closed_at = ? WHERE tenant = ? AND id = ?",
               (dst, int(is_open), now, None if is_open else now, inc.tenant, inc.id))
    if not is_open:
        timers.cancel(tx, inc.tenant, inc.id)
    tx.append(LedgerEvent(kind=kind or f"incident.{dst.lower()}", tenant=inc.tenant, incident=inc.id, stage=dst,
                          actor=actor, reason=reason, decision=decision, confidence=confidence,
                          policy_version=policy_version, data=data or {}))
    return Incident(**{**inc.__dict__, "stage": dst, "is_open": is_open, "updated_at": now,
                       "closed_at": None if is_open else now})


def open_incident(opening: Opening) -> Callable[[WriteTx], tuple[Incident, bool]]:
    """Open an incident (DETECTED) unless one is already open for the fingerprint. Returns
    (incident, opened_now). Diagnosis and the proposal follow (detection.py)."""

    def write(tx: WriteTx) -> tuple[Incident, bool]:
        existing = open_incident_for(tx.conn, opening.tenant, opening.fingerprint)
        if existing is not None:
            return existing, False
        row = tx.execute("INSERT INTO incident_counters (tenant, last) VALUES (?, 1) ON CONFLICT (tenant) "
                         "DO UPDATE SET last = incident_counters.last + 1 RETURNING last", (opening.tenant,)).fetchone()
        now = utc_timestamp()
        inc = Incident(opening.tenant, f"INC-{row[0]}", opening.service_id, opening.service_name, opening.fingerprint,
                       opening.source, opening.title, DETECTED, opening.priority, opening.action, True, None, now, now,
                       None)
        tx.execute(f"INSERT INTO incidents ({_COLUMNS}) VALUES ({', '.join('?' * 15)})",
                   (inc.tenant, inc.id, inc.service_id, inc.service_name, inc.fingerprint, inc.source, inc.title,
                    inc.stage, inc.priority, inc.action, 1, None, now, now, None))
        labels = opening.data.get("labels")
        if isinstance(labels, dict) and labels:   # what routing, silences and inhibition match on (notify/)
            tx.execute("UPDATE incidents SET labels = ? WHERE tenant = ? AND id = ?",
                       (json.dumps({str(k): str(v) for k, v in labels.items()}, sort_keys=True), inc.tenant, inc.id))
        tx.append(LedgerEvent(kind="incident.detected", tenant=inc.tenant, incident=inc.id, stage=DETECTED,
                              actor="policy", decision=inc.priority, policy_version=opening.policy_version,
                              reason=opening.reason,
                              data={"service": inc.service_id, "service_name": inc.service_name, "title": inc.title,
                                    "fingerprint": inc.fingerprint, "source": inc.source, "priority": inc.priority,
                                    **opening.data}))
        return inc, True
    return write


def transition(tenant: str, incident_id: str, dst: str, actor: str, **kw: Any) -> Callable[[WriteTx], Any]:
    def write(tx: WriteTx) -> Incident | IllegalTransitionError:
        return apply_transition(tx, get_incident(tx.conn, tenant, incident_id), dst, actor, **kw)
    return write


def merge_labels(tenant: str, incident_id: str, labels: dict[str, str]) -> Callable[[WriteTx], bool]:
    """Another alert joined an open incident: its labels become those every one of its alerts shares
    (Alertmanager's common labels), so a silence or a route that matches one alert's instance does
    not decide for the others. Returns whether they changed (derivable from the ledgered alerts)."""

    def write(tx: WriteTx) -> bool:
        row = tx.execute("SELECT labels, is_open FROM incidents WHERE tenant = ? AND id = ?",
                         (tenant, incident_id)).fetchone()
        if row is None or not row[1]:
            return False
        old = json.loads(row[0])
        common = {k: v for k, v in old.items() if labels.get(k) == v}
        if common == old:
            return False
        tx.execute("UPDATE incidents SET labels = ? WHERE tenant = ? AND id = ?",
                   (json.dumps(common, sort_keys=True), tenant, incident_id))
        return True
    return write


def escalate(tenant: str, incident_id: str, priority: str, *, reason: str, policy_version: str,
             data: dict[str, Any]) -> Callable[[WriteTx], Incident | None]:
    """Raise an open incident's priority (policy only). Returns None when nothing changed."""

    def write(tx: WriteTx) -> Incident | None:
        inc = get_incident(tx.conn, tenant, incident_id)
        if not inc.is_open or PRIORITIES.index(priority) >= PRIORITIES.index(inc.priority):
            return None
        tx.execute("UPDATE incidents SET priority = ?, updated_at = ? WHERE tenant = ? AND id = ?",
                   (priority, utc_timestamp(), tenant, incident_id))
        tx.append(LedgerEvent(kind="incident.escalated", tenant=tenant, incident=incident_id, stage=inc.stage,
                              actor="policy", decision=priority, reason=reason, policy_version=policy_version,
                              data={"from": inc.priority, "to": priority, **data}))
        return Incident(**{**inc.__dict__, "priority": priority})
    return write


def acknowledge(tenant: str, incident_id: str, actor: str) -> Callable[[WriteTx], Incident | IllegalTransitionError]:
    def write(tx: WriteTx) -> Incident | IllegalTransitionError:
        inc = get_incident(tx.conn, tenant, incident_id)
        if actor_kind(actor) not in ACTIONS["acknowledge"] or not inc.is_open:
            return _refuse(tx, tenant, incident_id, inc.stage, "ACKNOWLEDGED", actor, None)
        tx.execute("UPDATE incidents SET acknowledged_by = ?, updated_at = ? WHERE tenant = ? AND id = ?",
                   (actor, utc_timestamp(), tenant, incident_id))
        tx.append(LedgerEvent(kind="incident.acknowledged", tenant=tenant, incident=incident_id, stage=inc.stage,
                              actor=actor, reason=f"acknowledged by {actor}"))
        return Incident(**{**inc.__dict__, "acknowledged_by": actor})
    return write


async def run(db: Database, fn: Callable[[WriteTx], Any]) -> Any:
    """Run an engine write; raise a refused transition once its refusal entry is committed."""
    result = await db.write(fn)
    if isinstance(result, IllegalTransitionError):
        raise result
    return result


def run_sync(db: Database, fn: Callable[[WriteTx], Any]) -> Any:
    result = db.write_sync(fn)
    if isinstance(result, IllegalTransitionError):
        raise result
    return result


# --- replay: state from the ledger alone --------------------------------------------------------

@reducer("incident.detected")
def _detected(state: IncidentState, entry: dict) -> None:
    state.facts.update(priority=entry["data"].get("priority"), is_open=True,
                       fingerprint=entry["data"].get("fingerprint"))


@reducer(*(f"incident.{s.lower()}" for s in STAGES if s != DETECTED))
def _moved(state: IncidentState, entry: dict) -> None:
    state.facts["is_open"] = entry["stage"] not in CLOSED


@reducer("incident.escalated")
def _escalated(state: IncidentState, entry: dict) -> None:
    state.facts["priority"] = entry["data"]["to"]


@reducer("incident.acknowledged")
def _acknowledged(state: IncidentState, entry: dict) -> None:
    state.facts["acknowledged_by"] = entry["actor"]


@reducer("incident.transition_refused")
def _refused(state: IncidentState, entry: dict) -> None:
    state.facts["refusals"] = state.facts.get("refusals", 0) + 1


@comparator
def _compare_incidents(conn: sqlite3.Connection, report: ReplayReport) -> list[str]:
    diffs = []
    tenants = {t for t, _ in report.incidents}
    scoped = report.scope_tenant, report.scope_incident
    rows = conn.execute("SELECT tenant, id, stage, priority, is_open, acknowledged_by FROM incidents").fetchall()
    for tenant, inc_id, stage, priority, is_open, acked in rows:
        if scoped[0] is not None and tenant != scoped[0] or scoped[1] is not None and inc_id != scoped[1]:
            continue
        state = report.incidents.get((tenant, inc_id))
        if state is None:
            diffs.append(f"{tenant}/{inc_id}: in the incidents table but not in the ledger")
            continue
        want = {"stage": state.stage, "priority": state.facts.get("priority"), "is_open": state.facts.get("is_open"),
                "acknowledged_by": state.facts.get("acknowledged_by")}
        have = {"stage": stage, "priority": priority, "is_open": bool(is_open), "acknowledged_by": acked}
        for key in want:
            if want[key] != have[key]:
                diffs.append(f"{tenant}/{inc_id}: {key} is {have[key]!r} in the table, {want[key]!r} in the ledger")
    known = {(r[0], r[1]) for r in rows}
    for key, state in report.incidents.items():
        if key not in known and "incident.detected" in state.kinds and key[0] in tenants:
            diffs.append(f"{key[0]}/{key[1]}: in the ledger but not in the incidents table")
    return diffs


def timeline(conn: sqlite3.Connection, tenant: str, incident_id: str) -> list[dict[str, Any]]:
    """The incident's ledger entries, oldest first."""
    get_incident(conn, tenant, incident_id)
    return [json.loads(r[0]) for r in conn.execute(
        "SELECT body FROM ledger WHERE incident = ? AND tenant = ? ORDER BY seq", (incident_id, tenant))]
