"""Stored deadlines: a timer is a row with a due time, so a restart loses none. The runtime's timer
loop claims due timers and hands them to whoever acts on their kind, then settles them.

A timer claimed but not settled — the process died while acting on it, or the leader changed — is
claimed again when the timer loop starts (:func:`requeue_unsettled`): timers fire at least once.
Every handler is guarded by the state it changes (an incident still open, a proposal still
pending, a recovery still EXECUTED), so a second firing finds nothing left to do."""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass
from typing import Any, Callable

from ..ledger.entry import utc_timestamp
from ..store import WriteTx


@dataclass(frozen=True)
class Timer:
    id: int
    tenant: str
    incident: str | None
    kind: str
    due: str
    data: dict[str, Any]


def due_in(seconds: float) -> str:
    return utc_timestamp(dt.datetime.now(dt.timezone.utc) + dt.timedelta(seconds=seconds))


def schedule(tx: WriteTx, tenant: str, incident: str | None, kind: str, due: str, data: dict[str, Any] | None = None) -> None:
    """Set (or move) the pending timer of this kind for this incident."""
    tx.execute("UPDATE timers SET done = ? WHERE tenant = ? AND incident IS ? AND kind = ? AND done IS NULL",
               ("superseded", tenant, incident, kind))
    tx.execute("INSERT INTO timers (tenant, incident, kind, due, data) VALUES (?, ?, ?, ?, ?)",
               (tenant, incident, kind, due, json.dumps(data or {})))


def cancel(tx: WriteTx, tenant: str, incident: str, kind: str | None = None) -> None:
    sql = "UPDATE timers SET done = 'cancelled' WHERE tenant = ? AND incident = ? AND done IS NULL"
    tx.execute(sql + (" AND kind = ?" if kind else ""), (tenant, incident, kind) if kind else (tenant, incident))


def claim_due(now: str, limit: int = 500) -> Callable[[WriteTx], list[Timer]]:
    """Mark due timers done and return them: each fires once, even across restarts."""

    def write(tx: WriteTx) -> list[Timer]:
        rows = tx.execute("SELECT id, tenant, incident, kind, due, data FROM timers WHERE done IS NULL AND due <= ? "
                          "ORDER BY due LIMIT ?", (now, limit)).fetchall()
        for row in rows:
            tx.execute("UPDATE timers SET done = ?, settled = 0 WHERE id = ?", (now, row[0]))
        return [Timer(r[0], r[1], r[2], r[3], r[4], json.loads(r[5])) for r in rows]
    return write


def settle(ids: list[int]) -> Callable[[WriteTx], None]:
    """The claimed timers ``ids`` have been acted on."""

    def write(tx: WriteTx) -> None:
        tx.conn.executemany("UPDATE timers SET settled = 1 WHERE id = ?", [(i,) for i in ids])
    return write


def requeue_unsettled(tx: WriteTx) -> int:
    """Claimed timers nobody finished acting on are due again (at start, before any is claimed)."""
    return tx.execute("UPDATE timers SET done = NULL, settled = 1 WHERE settled = 0").rowcount
