"""Incidents, policy and dry-run through the API: tenant-scoped, ledgered, human actions named."""

from __future__ import annotations

import json

from alertengine.incidents import engine
from alertengine.incidents.detection import ServiceRef
from alertengine.signals import HealthReading
from tests.web.conftest import World

SLOW = HealthReading("answered", "sdk", 200, 10.0, "warning", p95_ms=2500.0, error_rate=0.0, health_score=90.0,
                     sample_size=100)
FINE = HealthReading("answered", "sdk", 200, 10.0, "ok", p95_ms=100.0, error_rate=0.0, health_score=99.0,
                     sample_size=100)


async def outage(world: World, label: str = "a", polls: int = 3) -> None:
    ref = ServiceRef(world.tenants[label], "svc_00000000000000aa", "checkout")
    for _ in range(polls):
        await world.app.state.detector.on_reading(ref, SLOW)  # type: ignore[attr-defined]


async def test_operator_lists_acknowledges_and_resolves(world: World) -> None:
    await outage(world)
    t, op = world.tenants["a"], world.auth(world.keys[("a", "operator")])
    listed = (await world.client.get(f"/api/tenants/{t}/incidents", params={"open": "true"}, headers=op)).json()
    assert [i["id"] for i in listed["incidents"]] == ["INC-1"]
    acked = await world.client.post(f"/api/tenants/{t}/incidents/INC-1/acknowledge", headers=op)
    key_id = world.keys[("a", "operator")].split("_")[1]
    assert acked.status_code == 200 and acked.json()["acknowledged_by"] == f"engineer:key:{key_id}"
    resolved = await world.client.post(f"/api/tenants/{t}/incidents/INC-1/resolve", json={"reason": "fixed by hand"},
                                       headers=op)
    assert resolved.status_code == 200 and resolved.json()["stage"] == "RESOLVED"
    again = await world.client.post(f"/api/tenants/{t}/incidents/INC-1/resolve", json={"reason": "twice"}, headers=op)
    assert again.status_code == 409 and again.json()["error"]["code"] == "illegal_transition"
    timeline = (await world.client.get(f"/api/tenants/{t}/incidents/INC-1/timeline", headers=op)).json()["entries"]
    kinds = [e["kind"] for e in timeline]
    assert kinds[:2] == ["signal.breach", "signal.breach"] or "incident.detected" in kinds
    assert kinds[-2:] == ["incident.resolved", "incident.transition_refused"]
    assert timeline[-2]["actor"] == f"engineer:key:{key_id}" and timeline[-2]["reason"] == "fixed by hand"
    viewer = await world.client.post(f"/api/tenants/{t}/incidents/INC-1/acknowledge",
                                     headers=world.auth(world.keys[("a", "viewer")]))
    assert viewer.status_code == 403


async def test_other_tenants_incident_is_not_found(world: World) -> None:
    await outage(world, "a")
    b = world.tenants["b"]
    reply = await world.client.get(f"/api/tenants/{b}/incidents/INC-1", headers=world.auth(world.keys[("b", "admin")]))
    assert reply.status_code == 404
    assert (await world.client.get(f"/api/tenants/{b}/incidents",
                                   headers=world.auth(world.keys[("b", "admin")]))).json()["incidents"] == []


async def test_policy_put_is_versioned_and_ledgered_with_a_diff(world: World) -> None:
    t, admin = world.tenants["a"], world.auth(world.keys[("a", "admin")])
    default = (await world.client.get(f"/api/tenants/{t}/policy", headers=admin)).json()
    assert default["policy"]["thresholds"]["p95_ms"] == 2000.0
    put = await world.client.put(f"/api/tenants/{t}/policy", headers=admin,
                                 json={"toml": "[thresholds]\np95_ms = 3000.0\n[services.checkout]\naction = \"restart pool\"\n"})
    assert put.status_code == 200 and put.json()["version"] != default["version"]
    bad = await world.client.put(f"/api/tenants/{t}/policy", headers=admin, json={"toml": "[thresholds]\np95 = 1\n"})
    assert bad.status_code == 422 and bad.json()["error"]["field"] == "thresholds.p95"
    entries = (await world.client.get(f"/api/tenants/{t}/ledger", params={"kind": "policy.changed"}, headers=admin)).json()
    [change] = entries["entries"]
    assert change["data"]["diff"]["thresholds.p95_ms"] == {"from": 2000.0, "to": 3000.0}
    assert change["data"]["diff"]["services.checkout.action"] == {"from": None, "to": "restart pool"}
    await outage(world)  # 2500 ms is no longer a breach under the new policy
    assert engine.list_incidents(world.db.read_conn(), t) == []
    assert (await world.client.put(f"/api/tenants/{t}/policy", headers=world.auth(world.keys[("a", "operator")]),
                                   json={"toml": ""})).status_code == 403


async def test_dry_run_reports_what_a_candidate_would_have_opened(world: World) -> None:
    t, admin = world.tenants["a"], world.auth(world.keys[("a", "admin")])
    await outage(world, polls=4)
    ref = ServiceRef(t, "svc_00000000000000aa", "checkout")
    for _ in range(3):
        await world.app.state.detector.on_reading(ref, FINE)  # type: ignore[attr-defined]
    lenient = await world.client.post(f"/api/tenants/{t}/policy/dry-run", headers=admin,
                                      json={"toml": "[thresholds]\np95_ms = 5000.0\n"})
    assert lenient.status_code == 200
    assert lenient.json()["would_open"] == [] and len(lenient.json()["actually_opened"]) == 1
    eager = (await world.client.post(f"/api/tenants/{t}/policy/dry-run", headers=admin,
                                     json={"toml": "[detection]\nbreaches_to_open = 1\n"})).json()
    assert len(eager["would_open"]) == 1 and eager["would_open"][0]["because"] == ["latency"]
    same = (await world.client.post(f"/api/tenants/{t}/policy/dry-run", headers=admin, json={"toml": ""})).json()
    assert [w["at"] for w in same["would_open"]] == [same["actually_opened"][0]["at"]] or len(same["would_open"]) == 1
    future = (await world.client.post(f"/api/tenants/{t}/policy/dry-run", headers=admin,
                                      json={"toml": "", "since": "2999-01-01T00:00:00Z"})).json()
    assert future["signals_replayed"] == 0
    assert json.dumps(eager)  # plain JSON throughout


async def test_incidents_are_listed_a_page_at_a_time_newest_first(world: World) -> None:
    from alertengine.incidents import engine as eng
    t = world.tenants["a"]
    for n in range(7):
        await world.db.write(eng.open_incident(eng.Opening(t, f"fp-{n}", "events", f"incident {n}", "P3", None, None,
                                                           None, "sha256:x", "test", {})))
    headers = world.auth(world.keys[("a", "viewer")])
    seen, cursor = [], None
    while True:
        reply = await world.client.get(f"/api/tenants/{t}/incidents", headers=headers,
                                       params={"limit": 3, **({"cursor": cursor} if cursor else {})})
        assert reply.status_code == 200, reply.text
        page = reply.json()
        assert len(page["incidents"]) <= 3
        seen += [i["title"] for i in page["incidents"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == [f"incident {n}" for n in range(6, -1, -1)]   # every one once, newest first
    for bad in ("not-a-cursor", "W10", "WyJhIl0"):                  # garbage, [], ["a"]
        reply = await world.client.get(f"/api/tenants/{t}/incidents", headers=headers, params={"cursor": bad})
        assert reply.status_code == 400 and reply.json()["error"]["field"] == "cursor", reply.text
