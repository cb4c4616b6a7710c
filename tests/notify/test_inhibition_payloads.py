"""Inhibition end to end from captured Alertmanager payloads: while a critical "SiteDown" incident of
a site is open, the warnings of that site are stored as inhibited (their incidents still open); the
warnings of another site go out; once the site is back, new warnings go out again."""

from __future__ import annotations

import copy
import json

from alertengine.incidents import engine
from alertengine.incidents.detection import Detector
from alertengine.signals.ingest.alertmanager import parse_alertmanager
from tests.conftest import FIXTURES
from tests.notify.rig import OK, Rig, Scripted

ROUTING = """
[defaults]
escalation = "none"        # this test is about inhibition, not about chasing

[[route]]
name = "team-chat"
receivers = ["channel:telegram"]

[[inhibit]]
name = "site-down-mutes-warnings"
source = ['alertname="SiteDown"']
target = ['severity="warning"']
equal = ["site"]
"""


def _payload(name: str, severity: str, site: str, fingerprint: str) -> dict:
    """The captured group with one alert relabelled (each its own incident: service and rule differ)."""
    body = copy.deepcopy(json.loads((FIXTURES / "alertmanager" / "firing-group.json").read_text()))
    alert = body["alerts"][0]
    alert["labels"] = {**alert["labels"], "alertname": name, "severity": severity, "site": site,
                       "service": f"{name.lower()}-{site}"}
    alert["annotations"] = {"summary": f"{name} at {site}"}
    alert["fingerprint"] = fingerprint
    body["alerts"] = [alert]
    return body


async def test_a_site_down_inhibits_the_warnings_of_its_site_only(rig: Rig) -> None:
    rig.routing(ROUTING)
    chat = Scripted("telegram", [OK])
    rig.channels = {"telegram": chat}
    rig.build()
    detector = Detector(rig.db, rig.gateway)

    async def ingest(body: dict) -> engine.Incident:
        [signal] = parse_alertmanager(body)
        inc = await detector.on_alert(rig.tenant, signal, None)
        assert inc is not None
        return inc
    down = await ingest(_payload("SiteDown", "critical", "eu", "a1"))
    eu = await ingest(_payload("DiskSlow", "warning", "eu", "a2"))
    us = await ingest(_payload("DiskSlow", "warning", "us", "a3"))
    await rig.run_until_settled()
    detected = {r.incident: r for r in rig.rows() if r.event == "detected"}
    assert detected[down.id].state == "delivered"
    assert detected[eu.id].state == "suppressed"
    assert detected[eu.id].reason == f"inhibited: inhibited by {down.id} (site-down-mutes-warnings)"
    assert detected[us.id].state == "delivered"
    assert engine.get_incident(rig.db.read_conn(), rig.tenant, eu.id).is_open   # policy is never stopped
    assert sorted(m.text for m in chat.got) == ["DiskSlow at us (P2)", "SiteDown at eu (P0)"]
    routed = [d["routing"] for k, d in rig.ledger("notification.routed")]
    assert [r["inhibited_by"] for r in routed] == [[], [f"{down.id} (site-down-mutes-warnings)"], []]

    rig.db.write_sync(engine.transition(rig.tenant, down.id, engine.RESOLVED, "policy", reason="site back"))
    later = await ingest(_payload("CertExpiring", "warning", "eu", "a4"))
    await rig.run_until_settled()
    assert [r.state for r in rig.rows() if r.incident == later.id] == ["delivered"]
