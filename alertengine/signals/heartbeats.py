"""Heartbeats: a job that stops beating is a signal. Each beat pushes a stored deadline; a missed
deadline fires a "heartbeat missed" alert through policy, and the next beat resolves it."""

from __future__ import annotations

import datetime as dt
import sqlite3
from dataclasses import dataclass
from typing import Callable

from ..ledger.entry import utc_timestamp
from ..store import WriteTx
from .model import AlertSignal

GRACE = 1.5  # a beat is missed once 1.5 intervals pass without one


@dataclass(frozen=True)
class Beat:
    tenant: str
    name: str
    interval: float
    last_seen: str
    due: str
    was_missed: bool


def _at(seconds_from_now: float) -> str:
    return utc_timestamp(dt.datetime.now(dt.timezone.utc) + dt.timedelta(seconds=seconds_from_now))


def record_beat(tenant: str, name: str, interval: float) -> Callable[[WriteTx], Beat]:
    def write(tx: WriteTx) -> Beat:
        row = tx.execute("SELECT missed FROM heartbeats WHERE tenant = ? AND name = ?", (tenant, name)).fetchone()
        now, due = utc_timestamp(), _at(interval * GRACE)
        tx.execute("INSERT INTO heartbeats (tenant, name, interval, last_seen, due, missed) VALUES (?, ?, ?, ?, ?, 0) "
                   "ON CONFLICT (tenant, name) DO UPDATE SET interval = excluded.interval, "
                   "last_seen = excluded.last_seen, due = excluded.due, missed = 0", (tenant, name, interval, now, due))
        return Beat(tenant, name, interval, now, due, bool(row and row[0]))
    return write


def claim_missed(now: str) -> Callable[[WriteTx], list[Beat]]:
    """Mark every overdue heartbeat missed (once) and return them."""

    def write(tx: WriteTx) -> list[Beat]:
        rows = tx.execute("SELECT tenant, name, interval, last_seen, due FROM heartbeats WHERE missed = 0 AND due < ?",
                          (now,)).fetchall()
        for tenant, name, *_ in rows:
            tx.execute("UPDATE heartbeats SET missed = 1 WHERE tenant = ? AND name = ?", (tenant, name))
        return [Beat(r[0], r[1], r[2], r[3], r[4], False) for r in rows]
    return write


def heartbeat_signal(beat: Beat, status: str) -> AlertSignal:
    title = f"heartbeat {beat.name!r} missed" if status == "firing" else f"heartbeat {beat.name!r} is back"
    return AlertSignal("heartbeat", f"heartbeat:{beat.name}", status, "high", title, beat.name,
                       {"alertname": f"heartbeat:{beat.name}"}, {"last_seen": beat.last_seen, "due": beat.due},
                       starts_at=beat.due if status == "firing" else beat.last_seen)


def list_heartbeats(conn: sqlite3.Connection, tenant: str) -> list[dict[str, object]]:
    return [{"name": r[0], "interval": r[1], "last_seen": r[2], "due": r[3], "missed": bool(r[4])}
            for r in conn.execute("SELECT name, interval, last_seen, due, missed FROM heartbeats WHERE tenant = ? "
                                  "ORDER BY name", (tenant,))]
