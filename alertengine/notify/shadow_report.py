"""The shadow-mode governance report: what would have happened, derived from the ledger alone."""

from __future__ import annotations

import datetime as dt
import json
import sqlite3
from typing import Any

from ..tenancy.tenants import get_tenant

SUPPRESSED = ("notification.suppressed", "token.suppressed", "webhook.suppressed", "call.suppressed")


def _t(ts: str) -> dt.datetime:
    return dt.datetime.fromisoformat(ts.replace("Z", "+00:00"))


def shadow_report(conn: sqlite3.Connection, tenant_id: str) -> dict[str, Any]:
    tenant = get_tenant(conn, tenant_id)
    incidents: dict[str, dict[str, Any]] = {}
    counts = {k.split(".")[0]: 0 for k in SUPPRESSED}
    first_breach: dict[str, str] = {}  # fingerprint -> ts of the first breach of the current streak
    shadow_periods: list[dict[str, Any]] = []
    entries = 0
    for (body,) in conn.execute("SELECT body FROM ledger WHERE tenant = ? ORDER BY tseq", (tenant_id,)):
        e = json.loads(body)
        entries += 1
        kind, data = e["kind"], e["data"]
        if kind in ("tenant.created", "tenant.shadow_enabled"):
            shadow_periods.append({"from": e["ts"], "to": None, "by": e["actor"]})
        elif kind == "tenant.shadow_disabled" and shadow_periods:
            shadow_periods[-1].update(to=e["ts"], live_by=e["actor"])
        elif kind == "signal.breach" and e["incident"] is None:
            fp = f"health:{data['service']}"
            if data.get("consecutive") == 1 or fp not in first_breach:
                first_breach[fp] = e["ts"]
        elif kind == "incident.detected":
            started = first_breach.pop(data.get("fingerprint"), None) or data.get("starts_at") or e["ts"]
            latency = max(0.0, (_t(e["ts"]) - _t(started)).total_seconds())
            incidents[e["incident"]] = {
                "incident": e["incident"], "title": data.get("title"), "priority": data.get("priority"),
                "service": data.get("service_name"), "detected_at": e["ts"], "first_signal_at": started,
                "detection_latency_s": round(latency, 3), "stage": e["stage"], "closed_at": None,
                "would_have": []}
        elif kind in SUPPRESSED:
            what = kind.split(".")[0]
            counts[what] += 1
            if e["incident"] in incidents:
                would = {k: v for k, v in data["would_have"].items() if k != "recipient"}
                # who routing would have told, and on which channels (notifications routed in shadow mode)
                told = [f"{d['recipient']} ({', '.join(d['channels']) or 'fallback'})"
                        + ("" if d["outcome"] == "send" else f" — {d['outcome']}")
                        for d in would.get("decisions", [])]
                incidents[e["incident"]]["would_have"].append({"at": e["ts"], "what": what, **would,
                                                               **({"told": told} if told else {})})
        elif kind == "escalation.step" and data.get("shadow") and e["incident"] in incidents:
            counts["escalation"] = counts.get("escalation", 0) + 1
            incidents[e["incident"]]["would_have"].append({
                "at": e["ts"], "what": "escalation", "step": data["step"], "chain": data["chain"],
                "told": [f"{t['recipient']} ({', '.join(t['channels']) or 'fallback'})"
                         + ("" if t["outcome"] == "send" else f" — {t['outcome']}") for t in data["told"]]})
        elif e["incident"] in incidents and e["stage"]:
            inc = incidents[e["incident"]]
            inc["stage"] = e["stage"]
            if e["stage"] in ("RECOVERED", "RESOLVED"):
                inc["closed_at"] = e["ts"]
    latencies = sorted(i["detection_latency_s"] for i in incidents.values())
    return {
        "tenant": {"id": tenant.id, "name": tenant.name, "shadow": tenant.shadow},
        "generated_from": f"{entries} ledger entries of this tenant",
        "shadow_periods": shadow_periods,
        "incidents_observed": len(incidents),
        "suppressed": counts,
        "detection_latency_s": {"p50": latencies[len(latencies) // 2] if latencies else None,
                                "max": latencies[-1] if latencies else None},
        "incidents": list(incidents.values()),
    }
