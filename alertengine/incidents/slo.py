"""The alert loop's service level: how fast people acknowledge, how many deliveries fail, how many
are stuck, against the policy's ``[slo]`` thresholds; and the incidents policy marked as candidates
for resolving. Computed from the ledger and the outbox for one tenant over a window."""

from __future__ import annotations

import math
import sqlite3
import time
from datetime import datetime, timedelta, timezone
from typing import Any

from .policy import load_policy


def _ts(value: str) -> float:
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


def percentile(values: list[float], q: float) -> float | None:
    """Nearest-rank percentile (``q`` in 0..100) of ``values``; None when there are none."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q / 100 * len(ordered)) - 1)]


def dashboard(conn: sqlite3.Connection, tenant: str, window_minutes: int, now: float | None = None) -> dict[str, Any]:
    at = time.time() if now is None else now
    since = at - window_minutes * 60
    since_iso = datetime.fromtimestamp(since, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    policy = load_policy(conn, tenant)
    slo = policy.doc["slo"]
    opened: dict[str, float] = {}
    acked: dict[str, float] = {}
    candidates: list[str] = []
    for kind, incident, ts in conn.execute(
            "SELECT kind, incident, ts FROM ledger WHERE tenant = ? AND ts >= ? AND kind IN ('incident.detected', "
            "'incident.acknowledged', 'incident.auto_resolve_candidate') ORDER BY seq", (tenant, since_iso)):
        if kind == "incident.detected":
            opened[incident] = _ts(ts)
        elif kind == "incident.acknowledged" and incident in opened:
            acked.setdefault(incident, _ts(ts))
        elif kind == "incident.auto_resolve_candidate":
            candidates.append(incident)
    latencies = [acked[i] - opened[i] for i in acked]
    ack_p95 = percentile(latencies, 95)
    finished = dict(conn.execute(
        "SELECT state, count(*) FROM outbox WHERE tenant = ? AND created >= ? AND state IN ('delivered', 'dead') "
        "GROUP BY state", (tenant, since_iso)).fetchall())
    done = finished.get("delivered", 0) + finished.get("dead", 0)
    failed_rate = finished.get("dead", 0) / done if done else 0.0
    stuck = conn.execute("SELECT count(*) FROM outbox WHERE tenant = ? AND state IN ('queued', 'sending') "
                         "AND created <= ?", (tenant, (datetime.fromtimestamp(at, timezone.utc)
                                                       - timedelta(seconds=slo["stuck_after"]))
                                              .strftime("%Y-%m-%dT%H:%M:%S.%fZ"))).fetchone()[0]
    violations = []
    if ack_p95 is not None and ack_p95 > slo["ack_p95_seconds"]:
        violations.append({"slo": "ack_p95_seconds", "value": round(ack_p95, 3), "threshold": slo["ack_p95_seconds"]})
    if failed_rate > slo["failed_delivery_rate"]:
        violations.append({"slo": "failed_delivery_rate", "value": round(failed_rate, 4),
                           "threshold": slo["failed_delivery_rate"]})
    if stuck > slo["stuck_max"]:
        violations.append({"slo": "stuck_deliveries", "value": stuck, "threshold": slo["stuck_max"]})
    open_candidates = [i for i in dict.fromkeys(candidates) if conn.execute(
        "SELECT 1 FROM incidents WHERE tenant = ? AND id = ? AND is_open = 1", (tenant, i)).fetchone()]
    return {"tenant": tenant, "window_minutes": window_minutes, "policy_version": policy.version,
            "incidents_opened": len(opened), "acknowledged": len(acked),
            "ack_latency_p95_seconds": None if ack_p95 is None else round(ack_p95, 3),
            "deliveries": {"delivered": finished.get("delivered", 0), "dead": finished.get("dead", 0),
                           "failed_rate": round(failed_rate, 4), "stuck": stuck},
            "thresholds": dict(slo), "violations": violations, "ok": not violations,
            "auto_resolve_candidates": open_candidates}
