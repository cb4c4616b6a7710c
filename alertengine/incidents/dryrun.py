"""Policy dry-run: replay the signals recorded in the ledger through a candidate policy and report
which incidents it would have opened, next to those the policy in force did open."""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass
from typing import Any

from ..signals import AlertSignal, HealthReading
from ..store import Where
from .detection import alert_fingerprint, health_fingerprint
from .policy import Policy, alert_opens, evaluate_reading, worst_priority


@dataclass
class _Sim:
    breaches: int = 0
    healthy: int = 0
    open: bool = False


def dry_run(conn: sqlite3.Connection, tenant: str, candidate: Policy, *, since: str | None = None,
            until: str | None = None) -> dict[str, Any]:
    """Which incidents ``candidate`` would have opened from the recorded signals in [since, until).

    Recorded signals are the health readings the appliance ledgered (every breaching poll before an
    incident opens, the per-minute evidence summaries after, and the healthy polls of open
    incidents) and every ingested alert."""
    where = Where().eq("tenant", tenant).add("ts >= ?", since).add("ts < ?", until)
    kinds = ("signal.breach", "signal.healthy", "signal.evidence", "alert.received", "incident.detected")
    sql = "SELECT body FROM ledger" + where.sql() + f" AND kind IN ({', '.join('?' * len(kinds))}) ORDER BY seq"
    if not where.terms:
        sql = sql.replace(" AND kind", " WHERE kind", 1)
    sims: dict[str, _Sim] = {}
    would: list[dict[str, Any]] = []
    actual: list[dict[str, Any]] = []
    signals = 0
    for (body,) in conn.execute(sql, (*where.params, *kinds)):
        entry = json.loads(body)
        data = entry["data"]
        if entry["kind"] == "incident.detected":
            actual.append({"incident": entry["incident"], "at": entry["ts"], "fingerprint": data.get("fingerprint"),
                           "priority": data.get("priority"), "title": data.get("title")})
            continue
        signals += 1
        if entry["kind"] == "alert.received":
            alert = AlertSignal(data["source"], data["alert_fingerprint"], data["status"], data["severity"],
                                data["title"], data.get("service_name"), data.get("labels", {}))
            fp = alert_fingerprint(alert)
            sim = sims.setdefault(fp, _Sim())
            if alert.status == "firing" and not sim.open and alert_opens(alert, candidate.rules(alert.service)):
                sim.open = True
                would.append({"at": entry["ts"], "fingerprint": fp, "title": alert.title,
                              "priority": candidate.severity_priority(alert.severity), "because": [alert.severity]})
            elif alert.status == "resolved":
                sim.open = False
            continue
        fp = health_fingerprint(data["service"])
        rules = candidate.rules(data.get("service_name"))
        sim = sims.setdefault(fp, _Sim())
        if entry["kind"] == "signal.evidence":
            # A minute of breaching polls of an open incident, summarised: replayed as that many
            # polls, breaching under the candidate if the worst reading of any kind does.
            readings = [HealthReading(**w["reading"]) for w in data["worst"].values()]
            if any(evaluate_reading(r, rules) for r in readings):
                sim.breaches, sim.healthy = sim.breaches + data["count"], 0
            else:
                sim.breaches = 0
                if sim.open:
                    sim.healthy += data["count"]
                    if sim.healthy >= rules.healthy_to_recover:
                        sim.open, sim.healthy = False, 0
            continue
        reading = HealthReading(**data["reading"])
        breaches = evaluate_reading(reading, rules)
        if breaches:
            sim.breaches, sim.healthy = sim.breaches + 1, 0
            if not sim.open and sim.breaches >= rules.breaches_to_open:
                sim.open = True
                would.append({"at": entry["ts"], "fingerprint": fp, "title": data.get("service_name"),
                              "priority": worst_priority(candidate, breaches), "because": [b.kind for b in breaches]})
        else:
            sim.breaches = 0
            if sim.open:
                sim.healthy += 1
                if sim.healthy >= rules.healthy_to_recover:
                    sim.open, sim.healthy = False, 0
    return {"candidate_version": candidate.version, "signals_replayed": signals, "since": since, "until": until,
            "would_open": would, "actually_opened": actual,
            "note": "healthy polls are recorded only while an incident is open, so a stricter candidate is judged "
                    "on the breaching polls the policy in force recorded"}
