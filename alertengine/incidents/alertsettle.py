"""What one ingest request's alerts read at once before they are judged, and write at once after.

:func:`prefetch` (blocking: run it off the event loop) reads, for all of a request's alerts with a
few statements, what judging them one by one would read per alert: their incidents' state, which
of them are already ledgered, the tenant's policy and the services they name.

:func:`settle_write` is the one transaction :meth:`Detector.settle` commits for a batch: repeats
counted per incident, alerts joining open incidents (priority, common labels) and the alerts' own
records — with statements per request rather than per alert or per incident, to the same effect
as :func:`engine.escalate` and :func:`engine.merge_labels` applied alert by alert.
"""

from __future__ import annotations

import json
import sqlite3
import time
from typing import Callable

from ..alerts import store as alert_store
from ..signals import AlertSignal
from ..store import WriteTx
from . import engine
from .alertbatch import AlertBatch
from .alertkeys import alert_event_id, chunks
from .engine import Incident
from .policy import Policy, load_policy

Counts = dict[tuple[str, str], int]
Joined = dict[tuple[str, str], tuple[Incident | None, bool]]


def prefetch(conn: sqlite3.Connection, tenant: str, signals: list[AlertSignal], batch: AlertBatch) -> None:
    """Read their incidents' state (open incident, episode) and which alerts are already ledgered,
    for all of ``signals`` at once; and the tenant's policy, once."""
    fingerprints = sorted({batch.fingerprint(s) for s in signals})
    opened: dict[str, Incident] = {}
    closed: dict[str, int] = {}
    for part in chunks(fingerprints):
        marks = ", ".join("?" * len(part))
        for inc in engine.open_incidents_for(conn, tenant, part):
            opened[inc.fingerprint] = inc
        closed.update(conn.execute(f"SELECT fingerprint, count(*) FROM incidents WHERE tenant = ? AND is_open = 0 "
                                   f"AND fingerprint IN ({marks}) GROUP BY fingerprint", (tenant, *part)).fetchall())
    for fp in fingerprints:
        batch.incidents[(tenant, fp)] = (opened.get(fp), closed.get(fp, 0))
    ids = sorted({alert_event_id(tenant, s, *batch.incidents[(tenant, batch.fingerprint(s))]) for s in signals})
    for part in chunks(ids):
        batch.ledgered.update(r[0] for r in conn.execute(
            f"SELECT event_id FROM ledger WHERE event_id IN ({', '.join('?' * len(part))})", part))
    batch.checked.update(ids)
    if signals:
        batch.policy(tenant, lambda t: load_policy(conn, t))


def settle_write(work: AlertBatch, policy: Callable[[str], Policy]) -> Callable[[WriteTx], tuple[Counts, Joined]]:
    """The transaction that writes ``work``: returns each repeated incident's occurrences in its
    window, and for each joined incident (the incident if its priority was raised, else None;
    whether its common labels narrowed)."""
    now = time.time()
    windows = {inc.tenant: float(policy(inc.tenant).doc["escalation"]["occurrence_window"])
               for inc, _n in work.repeats.values()}

    def write(tx: WriteTx) -> tuple[Counts, Joined]:
        conn = tx.conn
        counts: Counts = {}
        if work.repeats:
            conn.executemany("INSERT INTO alert_occurrences (tenant, incident, at) VALUES (?, ?, ?)",
                             [(inc.tenant, inc.id, now) for inc, n in work.repeats.values() for _ in range(n)])
            for tenant, window in windows.items():
                ids = sorted({inc.id for inc, _n in work.repeats.values() if inc.tenant == tenant})
                held: dict[str, int] = {}
                for part in chunks(ids):
                    marks = ", ".join("?" * len(part))
                    conn.execute(f"DELETE FROM alert_occurrences WHERE tenant = ? AND incident IN ({marks}) AND at < ?",
                                 (tenant, *part, now - window))
                    held.update(conn.execute(f"SELECT incident, count(*) FROM alert_occurrences WHERE tenant = ? "
                                             f"AND incident IN ({marks}) GROUP BY incident", (tenant, *part)))
                for key, (inc, _n) in work.repeats.items():
                    if inc.tenant == tenant:
                        counts[key] = int(held.get(inc.id, 0))
        joined: Joined = {}
        if work.joins:
            rows: dict[tuple[str, str], tuple[Incident, str]] = {}
            for tenant in {key[0] for key in work.joins}:
                for part in chunks(sorted({key[1] for key in work.joins if key[0] == tenant})):
                    for inc, labels in engine.incidents_with_labels(conn, tenant, part):
                        rows[(tenant, inc.id)] = (inc, labels)
            narrowed: list[tuple[str, str, str]] = []
            for key, j in work.joins.items():
                row = rows.get(key)
                raised = None
                if row is None or (row[0].is_open and
                                   engine.PRIORITIES.index(j.priority) < engine.PRIORITIES.index(row[0].priority)):
                    # the priority rises (or the incident is gone: escalate says so as it always has)
                    raised = engine.escalate(j.incident.tenant, j.incident.id, j.priority,
                                             policy_version=j.policy_version, reason=j.reason, data=j.data)(tx)
                widened = False
                if row is not None and row[0].is_open:   # each alert's labels narrow them in turn
                    common = old = json.loads(row[1])
                    for labels in j.labels:
                        common = {k: v for k, v in common.items() if labels.get(k) == v}
                    if common != old:
                        widened = True
                        narrowed.append((json.dumps(common, sort_keys=True), key[0], key[1]))
                joined[key] = (raised, widened)
            if narrowed:
                conn.executemany("UPDATE incidents SET labels = ? WHERE tenant = ? AND id = ?", narrowed)
        if len(work.alert_keys) > 1:
            alert_store.prefetch_unresolved(tx, work.alert_keys)
        for record in work.records:
            record(tx)
        return counts, joined
    return write


def joined_text(titles: list[str]) -> str:
    """The notice for alerts that joined an incident and narrowed its labels."""
    if len(titles) == 1:
        return f"another alert joined: {titles[0]}"
    return f"{len(titles)} more alerts joined: {', '.join(titles[:5])}" + \
        (f" and {len(titles) - 5} more" if len(titles) > 5 else "")
