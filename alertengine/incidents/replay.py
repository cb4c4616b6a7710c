"""Replay: rebuild every incident's state as a deterministic fold over its ledger entries (§6).

Each later pipeline stage registers a reducer for the entry kinds it writes
(``@reducer("incident.detected")``); entries of kinds nobody folds are counted, not lost.
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

Reducer = Callable[["IncidentState", dict], None]
_REDUCERS: dict[str, Reducer] = {}


def reducer(*kinds: str) -> Callable[[Reducer], Reducer]:
    def register(fn: Reducer) -> Reducer:
        for kind in kinds:
            _REDUCERS[kind] = fn
        return fn
    return register


@dataclass
class IncidentState:
    tenant: str
    incident: str
    stage: str | None = None
    first_seq: int = -1
    last_seq: int = -1
    entries: int = 0
    kinds: dict[str, int] = field(default_factory=dict)
    actors: list[str] = field(default_factory=list)
    facts: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {"tenant": self.tenant, "incident": self.incident, "stage": self.stage,
                "first_seq": self.first_seq, "last_seq": self.last_seq, "entries": self.entries,
                "kinds": dict(sorted(self.kinds.items())), "actors": self.actors, "facts": self.facts}


@dataclass
class ReplayReport:
    entries: int = 0
    incidents: dict[tuple[str, str], IncidentState] = field(default_factory=dict)
    unfolded_kinds: dict[str, int] = field(default_factory=dict)
    differences: list[str] = field(default_factory=list)
    scope_tenant: str | None = None
    scope_incident: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {"entries_folded": self.entries, "incidents": [s.as_dict() for s in self.incidents.values()],
                "kinds_without_reducer": dict(sorted(self.unfolded_kinds.items())),
                "differences": self.differences}


def fold(bodies: Iterable[bytes]) -> ReplayReport:
    """Fold entries (in seq order) into per-incident state."""
    report = ReplayReport()
    for body in bodies:
        obj = json.loads(body)
        report.entries += 1
        incident = obj.get("incident")
        if incident is None:
            continue
        key = (obj["tenant"], incident)
        state = report.incidents.get(key)
        if state is None:
            state = report.incidents[key] = IncidentState(obj["tenant"], incident, first_seq=obj["seq"])
        state.last_seq = obj["seq"]
        state.entries += 1
        state.kinds[obj["kind"]] = state.kinds.get(obj["kind"], 0) + 1
        if obj["actor"] not in state.actors:
            state.actors.append(obj["actor"])
        if obj.get("stage") is not None:
            state.stage = obj["stage"]
        fn = _REDUCERS.get(obj["kind"])
        if fn is not None:
            fn(state, obj)
        else:
            report.unfolded_kinds[obj["kind"]] = report.unfolded_kinds.get(obj["kind"], 0) + 1
    return report


def replay_database(conn: sqlite3.Connection, *, tenant: str | None = None, incident: str | None = None) -> ReplayReport:
    from ..store import Where
    from . import engine  # noqa: F401  (registers the incident reducers and the table comparator)

    where = Where().eq("tenant", tenant).eq("incident", incident)
    report = fold(bytes(r[0]) for r in conn.execute("SELECT body FROM ledger" + where.sql() + " ORDER BY seq",
                                                   where.params))
    report.scope_tenant, report.scope_incident = tenant, incident
    report.differences.extend(compare_with_working_tables(conn, report))
    return report


Comparator = Callable[[sqlite3.Connection, ReplayReport], list[str]]
_COMPARATORS: list[Comparator] = []


def comparator(fn: Comparator) -> Comparator:
    """Register a check of replayed state against a working table (the incident engine adds one)."""
    _COMPARATORS.append(fn)
    return fn


def compare_with_working_tables(conn: sqlite3.Connection, report: ReplayReport) -> list[str]:
    """Differences between the replayed state and the working tables, from every registered comparator."""
    return [diff for check in _COMPARATORS for diff in check(conn, report)]
