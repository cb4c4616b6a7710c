"""Seed 003's smart-rule and alert API on the in-process appliance: rules, what fires, cooldowns
and caps on an injected clock, the alert lifecycle and what it does to incidents, history, tests,
subscriptions, and tenant isolation."""

from __future__ import annotations

import json
from typing import Any

import pytest

from alertengine.incidents.replay import replay_database
from alertengine.tenancy.tenants import create_integration
from alertengine.signals import HealthReading

from .conftest import World


class Clock:
    def __init__(self, now: float = 1_764_590_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(world: World) -> Clock:
    c = Clock()
    world.app.state.runtime.smart.clock = c
    world.app.state.clock = c
    return c


@pytest.fixture
async def key(world: World) -> str:
    _item, k = await world.db.write(create_integration(world.tenants["a"], "apps", "test"))
    return k


def admin(world: World, label: str = "a") -> dict[str, str]:
    return world.auth(world.keys[(label, "admin")])


async def make_rule(world: World, definition: dict[str, Any], name: str = "R", label: str = "a") -> dict[str, Any]:
    r = await world.client.post("/api/smart-rules", headers=admin(world, label),
                                json={"name": name, "is_active": True, "rule_definition": definition})
    assert r.status_code == 201, r.text
    return r.json()


async def observe(world: World, key: str, *items: dict[str, Any]) -> list[str]:
    r = await world.client.post(f"/ingest/observations/{key}", json={"observations": list(items)})
    assert r.status_code == 200, r.text
    return r.json()["alerts"]


def entries(world: World, kind: str) -> list[dict[str, Any]]:
    conn = world.db.read_conn()
    return [json.loads(b) for (b,) in conn.execute("SELECT body FROM ledger WHERE kind = ? ORDER BY seq", (kind,))]


RISK = {"condition_type": "threshold", "metric": "risk_score", "operator": ">=", "threshold": 80,
        "severity": "high", "cooldown_minutes": 0, "max_alerts_per_hour": 100}


async def test_the_seed_rule_fires_on_an_observation_and_shows_as_the_seed_shows_it(world: World, key: str,
                                                                                   clock: Clock) -> None:
    rule = await make_rule(world, RISK, "High Risk Action Alert")
    assert await observe(world, key, {"event": "action", "metrics": {"risk_score": 79}}) == []
    ids = await observe(world, key, {"event": "action.executed", "metrics": {"risk_score": 85},
                                     "labels": {"action_type": "data_export", "agent_id": "export-agent"}})
    assert ids == [f"alert_{rule['id']}_{int(clock.now)}"]
    active = (await world.client.get("/api/alerts/active", headers=admin(world))).json()
    alert = active["alerts"][0]
    assert {k: alert[k] for k in ("id", "rule_id", "rule_name", "severity", "message", "triggered_at", "status")} == {
        "id": ids[0], "rule_id": rule["id"], "rule_name": "High Risk Action Alert", "severity": "high",
        "message": "High Risk Action Alert: risk_score is 85 (threshold: >= 80)",
        "triggered_at": "2025-12-01T11:53:20.000000Z", "status": "active"}
    assert alert["metrics_snapshot"] == {"risk_score": 85.0, "action_type": "data_export", "agent_id": "export-agent",
                                         "event": "action.executed"}
    assert active["statistics"] == {"total_active": 1, "by_severity": {"critical": 0, "high": 1, "medium": 0, "low": 0}}
    # policy judged the signal: high is P1 by default, so an incident opened and links to the alert
    assert alert["incident"] and alert["source"] == "smart"
    received = entries(world, "alert.received")[-1]
    assert received["actor"] == "policy" and received["data"]["smart_rule"]["rule_id"] == rule["id"]


async def test_a_rule_change_is_a_new_policy_version_ledgered_with_its_diff(world: World) -> None:
    before = (await world.client.get(f"/api/tenants/{world.tenants['a']}/policy", headers=admin(world))).json()
    rule = await make_rule(world, RISK)
    r = await world.client.patch(f"/api/smart-rules/{rule['id']}", headers=admin(world),
                                 json={"rule_definition": {**RISK, "threshold": 90}})
    assert r.status_code == 200 and r.json()["rule_definition"]["threshold"] == 90
    created, updated = entries(world, "smart_rule.created")[-1], entries(world, "smart_rule.updated")[-1]
    assert created["data"]["from_version"] != created["data"]["to_version"]
    assert updated["data"]["diff"] == {"rule_definition.threshold": {"from": 80, "to": 90}}
    assert updated["data"]["from_version"] == created["data"]["to_version"]
    assert updated["policy_version"] == updated["data"]["to_version"]
    after = (await world.client.get(f"/api/tenants/{world.tenants['a']}/policy", headers=admin(world))).json()
    assert after != before
    off = await world.client.patch(f"/api/smart-rules/{rule['id']}", headers=admin(world), json={"is_active": False})
    assert off.json()["is_active"] is False
    gone = await world.client.delete(f"/api/smart-rules/{rule['id']}", headers=admin(world))
    assert gone.status_code == 200
    assert (await world.client.get(f"/api/smart-rules/{rule['id']}", headers=admin(world))).status_code == 404
    assert entries(world, "smart_rule.deleted")[-1]["data"]["rule_id"] == rule["id"]


async def test_cooldown_and_hourly_cap_on_the_injected_clock(world: World, key: str, clock: Clock) -> None:
    rule = await make_rule(world, {**RISK, "cooldown_minutes": 5, "max_alerts_per_hour": 3})
    hot = {"event": "a", "metrics": {"risk_score": 99}}
    fired = []
    # (seconds later, fires?) : 5 minutes of cooldown, at most 3 in any hour
    for step, fires in [(0, True), (60, False), (239, False), (1, True), (299, False), (1, True), (300, False),
                        (1200, False), (1501, True)]:
        clock.now += step
        got = await observe(world, key, hot)
        assert bool(got) is fires, (step, clock.now)
        fired += got
    assert len(fired) == 4
    shown = (await world.client.get(f"/api/smart-rules/{rule['id']}", headers=admin(world))).json()
    assert shown["stats"]["suppressed"] == 5


async def test_a_count_pattern_spends_its_events(world: World, key: str, clock: Clock) -> None:
    await make_rule(world, {"condition_type": "pattern", "severity": "critical", "cooldown_minutes": 0,
                            "pattern": {"event": "action.denied", "count": 5, "window_minutes": 10}})
    denied = {"event": "action.denied"}
    for _ in range(4):
        assert await observe(world, key, denied, {"event": "other"}) == []
        clock.now += 60
    assert len(await observe(world, key, denied)) == 1          # the fifth within 10 minutes
    assert await observe(world, key, denied) == []               # spent: a new alert needs five more
    for _ in range(3):
        await observe(world, key, denied)
    assert len(await observe(world, key, denied)) == 1


async def test_a_sequence_pattern_counts_ingested_alerts_by_name(world: World, key: str, clock: Clock) -> None:
    await make_rule(world, {"condition_type": "pattern", "severity": "low", "cooldown_minutes": 0,
                            "pattern": {"sequence": ["login_failed", "login_failed", "login_failed"],
                                        "window_minutes": 5}})
    assert await observe(world, key, {"event": "login_failed"}, {"event": "login_failed"}) == []
    clock.now += 299
    assert len(await observe(world, key, {"event": "login_failed"})) == 1
    clock.now += 1000
    body = {"service": "auth", "title": "login_failed", "severity": "low"}
    for _ in range(3):
        r = await world.client.post(f"/ingest/events/{key}", json=body)
        assert r.status_code == 200
        body = {**body, "fingerprint": f"f{_}"}
    active = (await world.client.get("/api/alerts/active", headers=admin(world))).json()["alerts"]
    assert sum(1 for a in active if a["source"] == "smart") == 2


async def test_anomaly_on_a_learned_baseline(world: World, key: str, clock: Clock) -> None:
    await make_rule(world, {"condition_type": "anomaly", "metric": "latency", "sensitivity": 0.75,
                            "cooldown_minutes": 0})
    for v in [10, 12] * 5:
        assert await observe(world, key, {"event": "req", "metrics": {"latency": v}}) == []
    assert len(await observe(world, key, {"event": "req", "metrics": {"latency": 30}})) == 1


async def test_a_service_metric_alerts_once_per_episode_and_resolves_when_it_clears(world: World, clock: Clock) -> None:
    smart = world.app.state.runtime.smart
    tenant = world.tenants["a"]
    rule = await make_rule(world, {"condition_type": "threshold", "metric": "service.p95_ms", "operator": ">",
                                   "threshold": 500, "severity": "medium", "cooldown_minutes": 1})
    slow = HealthReading(outcome="answered", format="sdk", p95_ms=900.0)
    fine = HealthReading(outcome="answered", format="sdk", p95_ms=100.0)
    first = await smart.on_reading(tenant, "checkout", slow)
    assert len(first) == 1
    assert await smart.on_reading(tenant, "checkout", slow) == []       # the same episode
    assert len(await smart.on_reading(tenant, "payments", slow)) == 1   # another service: its own
    clock.now += 30
    await smart.on_reading(tenant, "checkout", fine)
    alert = (await world.client.get(f"/api/alerts/{first[0]}", headers=admin(world))).json()
    assert alert["status"] == "resolved" and alert["resolved_by"] == "policy"
    assert await smart.on_reading(tenant, "checkout", slow) == []       # within its cooldown
    clock.now += 31
    assert len(await smart.on_reading(tenant, "checkout", slow)) == 1
    assert (await world.client.get(f"/api/alerts/{rule['id']}", headers=admin(world))).json()["service"] in (
        "checkout", "payments")


class FakeHost:
    def __init__(self) -> None:
        self.values = {"system.cpu_percent": 10.0, "system.memory_percent": 50.0, "system.disk_percent": 20.0}

    def read(self) -> dict[str, float]:
        return dict(self.values)


async def test_system_metrics_are_judged_every_round(world: World, clock: Clock) -> None:
    smart = world.app.state.runtime.smart
    smart.host = host = FakeHost()
    await make_rule(world, {"condition_type": "threshold", "metric": "system.cpu_percent", "operator": ">",
                            "threshold": 90, "severity": "high"}, "System CPU Alert")
    assert await smart.tick() == []
    host.values["system.cpu_percent"] = 95.5
    fired = await smart.tick()
    assert len(fired) == 1
    alert = (await world.client.get(f"/api/alerts/{fired[0]}", headers=admin(world))).json()
    assert alert["message"] == "System CPU Alert: system.cpu_percent is 95.5 (threshold: > 90)"
    host.values["system.cpu_percent"] = 20
    await smart.tick()
    assert (await world.client.get(f"/api/alerts/{fired[0]}", headers=admin(world))).json()["status"] == "resolved"


async def test_acknowledge_resolve_escalate_with_the_actor_ledgered(world: World, key: str, clock: Clock) -> None:
    await make_rule(world, {**RISK, "severity": "medium"})
    [aid] = await observe(world, key, {"event": "a", "metrics": {"risk_score": 90}})
    alert = (await world.client.get(f"/api/alerts/{aid}", headers=admin(world))).json()
    incident = alert["incident"]
    assert incident
    op = world.auth(world.keys[("a", "operator")])
    viewer = world.auth(world.keys[("a", "viewer")])
    assert (await world.client.post(f"/api/alerts/{aid}/acknowledge", headers=viewer)).status_code == 403
    clock.now += 120
    esc = await world.client.post(f"/api/alerts/{aid}/escalate", headers=op)
    assert esc.status_code == 200, esc.text
    assert esc.json()["alert"]["severity"] == "high"
    assert esc.json()["incident"]["priority"] == "P1"        # policy heard it fire at high: P2 -> P1
    ack = await world.client.post(f"/api/alerts/{aid}/acknowledge", headers=op)
    assert ack.json()["alert"]["status"] == "acknowledged"
    assert ack.json()["incident"]["acknowledged_by"].startswith("engineer:key:")
    res = await world.client.post(f"/api/alerts/{aid}/resolve", headers=op)
    assert res.json()["alert"]["status"] == "resolved"
    assert res.json()["incident"]["stage"] == "RESOLVED"
    again = await world.client.post(f"/api/alerts/{aid}/resolve", headers=op)
    assert again.status_code == 409 and again.json()["error"]["code"] == "conflict"
    actors = {e["kind"]: e["actor"] for e in entries(world, "alert.acknowledged") + entries(world, "alert.resolved")
              + entries(world, "alert.escalated")}
    assert set(actors.values()) == {op_actor(world)}
    with world.db.reader() as conn:
        assert replay_database(conn).differences == []


def op_actor(world: World) -> str:
    conn = world.db.read_conn()
    (key_id,) = conn.execute("SELECT id FROM api_keys WHERE name = 'a-operator'").fetchone()
    return f"engineer:key:{key_id}"


async def test_a_bare_number_names_the_rules_newest_unresolved_alert(world: World, key: str, clock: Clock) -> None:
    rule = await make_rule(world, RISK)
    [aid] = await observe(world, key, {"event": "a", "metrics": {"risk_score": 90}})
    r = await world.client.post(f"/api/alerts/{rule['id']}/acknowledge", headers=admin(world))
    assert r.status_code == 200 and r.json()["alert"]["id"] == aid
    assert (await world.client.post("/api/alerts/999999/acknowledge", headers=admin(world))).status_code == 404


async def test_history_counts_and_dates(world: World, key: str, clock: Clock) -> None:
    await make_rule(world, RISK)
    await observe(world, key, {"event": "a", "metrics": {"risk_score": 90}})
    clock.now += 2 * 86_400
    await observe(world, key, {"event": "a", "metrics": {"risk_score": 95}})
    one = (await world.client.get("/api/alerts/history?days=1", headers=admin(world))).json()
    three = (await world.client.get("/api/alerts/history?days=30", headers=admin(world))).json()
    assert one["total_count"] == 1 and three["total_count"] == 2
    assert three["date_range"] == {"start": "2025-11-03T11:53:20.000000Z", "end": "2025-12-03T11:53:20.000000Z"}
    bad = await world.client.get("/api/alerts/history?days=0", headers=admin(world))
    assert bad.status_code == 422 and bad.json()["error"]["field"] == "days"


async def test_a_test_alert_is_delivered_as_a_test_and_opens_nothing(world: World, clock: Clock) -> None:
    rule = await make_rule(world, RISK)
    r = await world.client.post("/api/alerts/test", headers=admin(world),
                                json={"rule_id": rule["id"], "test_metrics": {"risk_score": 90}})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["fired"] is True and body["alert"]["test"] is True and body["alert"]["status"] == "test"
    assert body["alert"]["message"].startswith("TEST: ")
    assert body["deliveries"]            # routed like any notification
    conn = world.db.read_conn()
    assert conn.execute("SELECT count(*) FROM incidents").fetchone()[0] == 0
    assert (await world.client.get("/api/alerts/active", headers=admin(world))).json()["statistics"]["total_active"] == 0
    routed = entries(world, "notification.suppressed")[-1]    # tenants start in shadow mode
    assert routed["data"]["would_have"]["event"] == "test"
    assert routed["data"]["would_have"]["text"].startswith("[TEST] ")
    assert entries(world, "alert.test")[-1]["data"]["rule_id"] == rule["id"]
    live = await world.client.delete(f"/tenant/{world.tenants['a']}/shadow", headers=admin(world))
    assert live.status_code == 200
    again = await world.client.post("/api/alerts/test", headers=admin(world),
                                    json={"rule_id": rule["id"], "test_metrics": {"risk_score": 95}})
    assert again.json()["fired"] is True                  # tests never count for the cooldown
    [logged] = [json.loads(line) for line in (world.data.path / "notifications.jsonl").read_text().splitlines()]
    assert (logged["event"], logged["incident"]) == ("test", None) and logged["text"].startswith("[TEST] ")
    cold = await world.client.post("/api/alerts/test", headers=admin(world),
                                   json={"rule_id": rule["id"], "test_metrics": {"risk_score": 10}})
    assert cold.json()["fired"] is False and cold.json()["alert"] is None
    missing = await world.client.post("/api/alerts/test", headers=admin(world),
                                      json={"rule_id": rule["id"], "test_metrics": {"other": 10}})
    assert missing.status_code == 422 and missing.json()["error"]["field"] == "test_metrics.risk_score"


async def test_tenants_never_see_each_others_rules_or_alerts(world: World, key: str, clock: Clock) -> None:
    rule = await make_rule(world, RISK)
    [aid] = await observe(world, key, {"event": "a", "metrics": {"risk_score": 90}})
    b = admin(world, "b")
    assert (await world.client.get(f"/api/smart-rules/{rule['id']}", headers=b)).status_code == 404
    assert (await world.client.get(f"/api/alerts/{aid}", headers=b)).status_code == 404
    assert (await world.client.post(f"/api/alerts/{aid}/resolve", headers=b)).status_code == 404
    assert (await world.client.get("/api/alerts/active", headers=b)).json()["alerts"] == []
    assert (await world.client.get("/api/smart-rules", headers=b)).json()["rules"] == []
    other = await world.client.get(f"/api/tenants/{world.tenants['a']}/alerts/active", headers=b)
    assert other.status_code == 403
    root = world.auth(world.admin)
    assert (await world.client.get("/api/alerts/active", headers=root)).json()["error"]["code"] == "tenant_required"
    mine = await world.client.get(f"/api/tenants/{world.tenants['a']}/alerts/active", headers=root)
    assert [a["id"] for a in mine.json()["alerts"]] == [aid]


async def test_a_channel_subscription_becomes_a_routing_rule(world: World) -> None:
    r = await world.client.post("/api/notifications/channels", headers=admin(world), json={
        "name": "Critical Alerts - PagerDuty", "channel_type": "slack",
        "webhook_url": "https://hooks.slack.com/services/T000/B000/XXXX",
        "subscribed_events": ["alert.critical", "alert.high"], "min_risk_score": 80})
    assert r.status_code == 201, r.text
    body = r.json()
    assert body["route"] == {"name": "subscription-critical-alerts-pagerduty",
                             "match": {"severity": ["critical", "high"]}, "receivers": ["channel:slack"],
                             "continue": True}
    assert body["channel"]["kind"] == "slack" and "webhook_url" in body["channel"]["secrets"]
    assert "hooks.slack.com" not in json.dumps(body["channel"])
    routes = (await world.client.get(f"/api/tenants/{world.tenants['a']}/routes", headers=admin(world))).json()
    assert "subscription-critical-alerts-pagerduty" in json.dumps(routes)
    floor = await world.client.post("/api/notifications/channels", headers=admin(world), json={
        "name": "x", "channel_type": "telegram", "subscribed_events": ["alert.low"], "min_risk_score": 95})
    assert floor.status_code == 422 and floor.json()["error"]["field"] == "min_risk_score"
    bad = await world.client.post("/api/notifications/channels", headers=admin(world), json={
        "name": "x", "channel_type": "telegram", "subscribed_events": ["alert.urgent"]})
    assert bad.status_code == 422 and bad.json()["error"]["field"] == "subscribed_events[0]"
    hook = await world.client.post("/api/notifications/channels", headers=admin(world), json={
        "name": "x", "channel_type": "telegram", "webhook_url": "https://example.com", "subscribed_events": ["alert.*"]})
    assert hook.status_code == 422 and hook.json()["error"]["field"] == "webhook_url"


@pytest.mark.parametrize("body,field", [
    ({"event": "a", "metrics": {"risk_score": "high"}}, "metrics.risk_score"),
    ({"event": "a", "metrics": {"risk_score": 10 ** 400}}, "metrics.risk_score"),
    ({"event": "a", "metrics": {"system.cpu_percent": 1}}, 'metrics["system.cpu_percent"]'),
    ({"event": "", "metrics": {}}, "event"),
    (b'{"event": "a\\ud800"}', "event"),
    ({"metrics": {}}, "event"),
    ({"event": "a", "extra": 1}, "extra"),
    ({"observations": [{"event": "a"}] * 1001}, "observations"),
    ([1, 2], "$"),
])
async def test_bad_observations_are_refused_whole(world: World, key: str, body: Any, field: str) -> None:
    await make_rule(world, {"condition_type": "pattern", "pattern": {"event": "a", "count": 1, "window_minutes": 1}})
    r = await world.client.post(f"/ingest/observations/{key}", json=body) if not isinstance(body, bytes) else \
        await world.client.post(f"/ingest/observations/{key}", content=body, headers={"content-type": "application/json"})
    assert r.status_code == 400, r.text
    assert r.json()["error"]["field"] == field
    assert (await world.client.get("/api/alerts/active", headers=admin(world))).json()["alerts"] == []


@pytest.mark.parametrize("definition,field", [
    ({"condition_type": "threshold", "metric": "risk_score", "operator": "=>", "threshold": 1}, "rule_definition.operator"),
    ({"condition_type": "pattern", "pattern": {"event": "a"}}, "rule_definition.pattern.window_minutes"),
    ({"condition_type": "anomaly", "metric": "m", "sensitivity": 2}, "rule_definition.sensitivity"),
])
async def test_bad_rules_get_422_naming_the_field_and_store_nothing(world: World, definition: dict, field: str) -> None:
    r = await world.client.post("/api/smart-rules", headers=admin(world), json={"name": "x", "rule_definition": definition})
    assert r.status_code == 422 and r.json()["error"]["field"] == field
    assert (await world.client.get("/api/smart-rules", headers=admin(world))).json()["rules"] == []
    assert entries(world, "smart_rule.created") == []


async def test_ingested_alerts_share_the_same_lifecycle(world: World, key: str) -> None:
    from tests.conftest import FIXTURES
    firing = json.loads((FIXTURES / "alertmanager" / "firing-group.json").read_text())
    assert (await world.client.post(f"/ingest/alertmanager/{key}", json=firing)).status_code == 200
    active = (await world.client.get("/api/alerts/active", headers=admin(world))).json()
    ours = [a for a in active["alerts"] if a["source"] == "alertmanager"]
    assert len(ours) == len(firing["alerts"]) and all(a["rule_id"] is None and a["incident"] for a in ours)
    assert {a["rule_name"] for a in ours} == {a["labels"]["alertname"] for a in firing["alerts"]}
    assert (await world.client.post(f"/ingest/alertmanager/{key}", json=firing)).status_code == 200   # a repeat
    again = (await world.client.get("/api/alerts/active", headers=admin(world))).json()
    assert again["statistics"]["total_active"] == active["statistics"]["total_active"]
    resolved = {**firing, "status": "resolved", "alerts": [{**a, "status": "resolved"} for a in firing["alerts"]]}
    assert (await world.client.post(f"/ingest/alertmanager/{key}", json=resolved)).status_code == 200
    history = (await world.client.get("/api/alerts/history", headers=admin(world))).json()["history"]
    assert {a["status"] for a in history} == {"resolved"}
    assert {a["resolved_by"] for a in history} == {"ingest:alertmanager"}
    pd = {"routing_key": key, "event_action": "trigger", "dedup_key": "db-1",
          "payload": {"summary": "DB down", "source": "db", "severity": "critical"}}
    assert (await world.client.post("/v2/enqueue", json=pd)).status_code == 202
    assert (await world.client.post("/v2/enqueue", json={**pd, "event_action": "acknowledge"})).status_code == 202
    [paged] = (await world.client.get("/api/alerts/active", headers=admin(world))).json()["alerts"]
    assert (paged["source"], paged["status"], paged["acknowledged_by"]) == ("pagerduty", "acknowledged",
                                                                            "ingest:pagerduty")


# --- regressions found by attacking the feature ---------------------------------------------------

P95 = {"condition_type": "threshold", "metric": "service.p95_ms", "operator": ">", "threshold": 500,
       "severity": "high", "cooldown_minutes": 0}
SLOW = HealthReading(outcome="answered", format="sdk", p95_ms=900.0)
FINE = HealthReading(outcome="answered", format="sdk", p95_ms=100.0)


async def test_saving_the_policy_keeps_the_version_in_effect_with_its_smart_rules(world: World) -> None:
    tenant = world.tenants["a"]
    await make_rule(world, RISK)
    before = (await world.client.get(f"/api/tenants/{tenant}/policy", headers=admin(world))).json()
    put = await world.client.put(f"/api/tenants/{tenant}/policy", headers=admin(world), json={"toml": ""})
    assert put.status_code == 200, put.text
    after = (await world.client.get(f"/api/tenants/{tenant}/policy", headers=admin(world))).json()
    assert put.json()["version"] == after["version"] == before["version"]
    changed = entries(world, "policy.changed")[-1]
    assert changed["data"]["to_version"] == after["version"]
    assert not any(k.startswith("smart_rules") for k in changed["data"]["diff"])


@pytest.mark.parametrize("change", [{"name": "Renamed"}, {"is_active": False}, "delete",
                                    {"rule_definition": {**RISK, "cooldown_minutes": 0}}])
async def test_a_rule_renamed_stopped_deleted_or_redefined_leaves_no_state_alert_or_incident_behind(
        world: World, clock: Clock, change: Any) -> None:
    smart = world.app.state.runtime.smart
    tenant = world.tenants["a"]
    rule = await make_rule(world, P95)
    [aid] = await smart.on_reading(tenant, "checkout", SLOW)
    incident = (await world.client.get(f"/api/alerts/{aid}", headers=admin(world))).json()["incident"]
    if change == "delete":
        assert (await world.client.delete(f"/api/smart-rules/{rule['id']}", headers=admin(world))).status_code == 200
    else:
        r = await world.client.patch(f"/api/smart-rules/{rule['id']}", headers=admin(world), json=change)
        assert r.status_code == 200, r.text
    await smart.on_reading(tenant, "checkout", FINE)     # a renamed rule resolves on its own judgement
    alert = (await world.client.get(f"/api/alerts/{aid}", headers=admin(world))).json()
    assert (alert["status"], alert["resolved_by"]) == ("resolved", "policy")
    inc = (await world.client.get(f"/api/tenants/{tenant}/incidents/{incident}", headers=admin(world))).json()
    assert inc["is_open"] is False and inc["stage"] == "RESOLVED"
    with world.db.reader() as conn:
        assert replay_database(conn).differences == []


async def test_unwatched_events_never_crowd_out_a_long_patterns_events(world: World, key: str, clock: Clock) -> None:
    await make_rule(world, {"condition_type": "pattern", "cooldown_minutes": 0,
                            "pattern": {"event": "login_failed", "count": 2, "window_minutes": 1440}})
    assert await observe(world, key, {"event": "login_failed"}) == []
    noise = [{"event": "page_view"}] * 1000
    for _ in range(3):
        clock.now += 600
        await observe(world, key, *noise)
    clock.now += 3600
    assert len(await observe(world, key, {"event": "login_failed"})) == 1


async def test_an_anomaly_rule_moved_to_another_metric_learns_afresh(world: World, key: str, clock: Clock) -> None:
    rule = await make_rule(world, {"condition_type": "anomaly", "metric": "latency_ms", "sensitivity": 0.5,
                                   "cooldown_minutes": 0})
    for v in [10, 12] * 5:
        await observe(world, key, {"event": "req", "metrics": {"latency_ms": v}})
    moved = {"condition_type": "anomaly", "metric": "bytes_sent", "sensitivity": 0.5, "cooldown_minutes": 0}
    assert (await world.client.patch(f"/api/smart-rules/{rule['id']}", headers=admin(world),
                                     json={"rule_definition": moved})).status_code == 200
    assert await observe(world, key, {"event": "req", "metrics": {"bytes_sent": 1_000_000}}) == []   # learning


async def test_a_senders_repeat_is_not_a_new_event_for_patterns(world: World, key: str, clock: Clock) -> None:
    await make_rule(world, {"condition_type": "pattern", "cooldown_minutes": 0,
                            "pattern": {"event": "DiskFull", "count": 3, "window_minutes": 10}})
    body = {"service": "db", "title": "DiskFull", "severity": "low"}
    for _ in range(3):
        assert (await world.client.post(f"/ingest/events/{key}", json=body)).status_code == 200
    active = (await world.client.get("/api/alerts/active", headers=admin(world))).json()["alerts"]
    assert [a for a in active if a["source"] == "smart"] == []


async def test_a_bad_observation_anywhere_in_a_batch_changes_nothing(world: World, key: str, clock: Clock) -> None:
    await make_rule(world, RISK)
    await make_rule(world, {"condition_type": "pattern", "cooldown_minutes": 0,
                            "pattern": {"event": "b", "count": 1, "window_minutes": 5}}, "B")
    r = await world.client.post(f"/ingest/observations/{key}", json={"observations": [
        {"event": "a", "metrics": {"risk_score": 90}}, {"event": "b", "labels": {"ключ": "v"}}]})
    assert r.status_code == 400 and r.json()["error"]["field"] == 'observations[1].labels'
    assert (await world.client.get("/api/alerts/active", headers=admin(world))).json()["alerts"] == []
    assert len(await observe(world, key, {"event": "b"})) == 1     # the refused b was never counted


async def test_errors_name_the_requests_own_fields(world: World) -> None:
    r = await world.client.post("/api/smart-rules", headers=admin(world),
                                json={"name": "xoxb-1234567890-abcdefghij", "rule_definition": RISK})
    assert r.status_code == 422 and r.json()["error"]["field"] == "name"
    rule = await make_rule(world, RISK)
    odd = await world.client.post("/api/alerts/test", headers=admin(world),
                                  json={"rule_id": rule["id"], "test_metrics": {"risk_score": 90, "ключ": 1}})
    assert odd.status_code == 422 and odd.json()["error"]["field"].startswith("test_metrics")
    secret = await world.client.post("/api/alerts/test", headers=admin(world),
                                     json={"rule_id": rule["id"], "test_metrics": {"risk_score": 90, "password": "x"}})
    assert secret.status_code == 200 and secret.json()["alert"]["metrics_snapshot"]["password"] != "x"
    bad_url = await world.client.post("/api/notifications/channels", headers=admin(world), json={
        "name": "x", "channel_type": "webhook", "webhook_url": "ftp://example.com", "subscribed_events": ["alert.*"]})
    assert bad_url.status_code == 422 and bad_url.json()["error"]["field"] == "webhook_url"


async def test_a_subscription_never_replaces_a_rule_of_the_same_name(world: World) -> None:
    first = {"name": "Ops Team", "channel_type": "telegram", "subscribed_events": ["alert.critical"]}
    assert (await world.client.post("/api/notifications/channels", headers=admin(world), json=first)).status_code == 201
    clash = await world.client.post("/api/notifications/channels", headers=admin(world),
                                    json={**first, "name": "ops  team!", "channel_type": "slack"})
    assert clash.status_code == 409 and clash.json()["error"]["field"] == "name"
