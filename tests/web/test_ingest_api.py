"""Ingest over HTTP from real captures: authenticated per tenant, idempotent, resolved alerts
resolve, bad payloads get a 400 with the reason and change nothing."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import pytest

from alertengine.incidents import engine
from alertengine.incidents.replay import replay_database
from alertengine.signals.heartbeats import claim_missed, heartbeat_signal
from alertengine.tenancy.tenants import create_integration
from tests.conftest import FIXTURES as ALL_FIXTURES
from tests.web.conftest import World

FIXTURES = ALL_FIXTURES / "alertmanager"


@pytest.fixture
async def ingest(world: World) -> str:
    _item, key = await world.db.write(create_integration(world.tenants["a"], "prometheus", "test"))
    return key


def fixture(name: str) -> dict:
    return json.loads((FIXTURES / name).read_text())


def count(world: World, kind: str) -> int:
    return world.db.read_conn().execute("SELECT count(*) FROM ledger WHERE kind = ?", (kind,)).fetchone()[0]


def replay_clean(world: World) -> None:
    with world.db.reader() as conn:
        assert replay_database(conn).differences == []


async def test_alertmanager_group_opens_then_resolves_alert_by_alert(world: World, ingest: str) -> None:
    t = world.tenants["a"]
    await world.client.post(f"/api/tenants/{t}/services", headers=world.auth(world.keys[("a", "admin")]),
                            json={"name": "checkout", "health_url": "http://127.0.0.1:9/h"})
    firing = await world.client.post("/ingest/alertmanager", json=fixture("firing-group.json"),
                                     headers={"Authorization": f"Bearer {ingest}"})
    assert firing.status_code == 200, firing.text
    assert firing.json() == {"accepted": 2, "incidents": ["INC-1"]}
    inc = engine.get_incident(world.db.read_conn(), t, "INC-1")
    assert inc.is_open and inc.priority == "P0" and inc.stage == engine.PROPOSED and inc.service_name == "checkout"
    repeat = await world.client.post(f"/ingest/alertmanager/{ingest}", json=fixture("firing-group.json"))
    assert repeat.status_code == 200 and count(world, "alert.received") == 2  # idempotent
    partly = await world.client.post(f"/ingest/alertmanager/{ingest}", json=fixture("partly-resolved-group.json"))
    assert partly.status_code == 200
    assert engine.get_incident(world.db.read_conn(), t, "INC-1").is_open  # one alert still firing
    body = fixture("partly-resolved-group.json")
    for alert in body["alerts"]:
        alert["status"] = "resolved"
    done = await world.client.post(f"/ingest/alertmanager/{ingest}", json=body)
    assert done.status_code == 200
    inc = engine.get_incident(world.db.read_conn(), t, "INC-1")
    assert inc.stage == engine.RESOLVED and not inc.is_open
    replay_clean(world)


@pytest.mark.parametrize("body,field", [
    ({"version": "3", "alerts": []}, "version"),
    ({"version": "4", "alerts": [{"status": "firing", "labels": {"x": 1}}]}, "alerts[0]"),
    ([], "$"),
])
async def test_bad_payloads_get_400_with_the_reason_and_change_nothing(world: World, ingest: str, body: object,
                                                                       field: str) -> None:
    before = world.db.ledger_size
    reply = await world.client.post(f"/ingest/alertmanager/{ingest}", json=body)
    assert reply.status_code == 400
    assert reply.json()["error"]["code"] == "bad_payload" and reply.json()["error"]["field"].startswith(field)
    assert world.db.ledger_size == before
    not_json = await world.client.post(f"/ingest/alertmanager/{ingest}", content=b"{oops",
                                       headers={"content-type": "application/json"})
    assert not_json.status_code == 400


async def test_pagerduty_trigger_and_resolve(world: World, ingest: str) -> None:
    event = {"routing_key": ingest, "event_action": "trigger", "dedup_key": "disk-db1",
             "payload": {"summary": "Disk full on db1", "source": "db1.prod", "severity": "critical"}}
    reply = await world.client.post("/v2/enqueue", json=event)
    assert reply.status_code == 202
    assert reply.json() == {"status": "success", "message": "Event processed", "dedup_key": "disk-db1"}
    [inc] = engine.list_incidents(world.db.read_conn(), world.tenants["a"])
    assert inc.is_open and inc.source == "pagerduty"
    resolve = await world.client.post("/v2/enqueue", json={"routing_key": ingest, "event_action": "resolve",
                                                           "dedup_key": "disk-db1"})
    assert resolve.status_code == 202
    # PagerDuty follow-ups carry no payload: they resolve the incident their dedup_key opened
    assert not engine.get_incident(world.db.read_conn(), world.tenants["a"], inc.id).is_open
    wrong = await world.client.post("/v2/enqueue", json={**event, "routing_key": "z" * 32})
    assert wrong.status_code == 401


def _states(world: World) -> list[tuple[str, bool]]:
    return [(i.id, i.is_open) for i in sorted(engine.list_incidents(world.db.read_conn(), world.tenants["a"]),
                                              key=lambda i: int(i.id.split("-")[1]))]


async def test_a_pagerduty_trigger_after_a_resolve_opens_a_new_incident_and_its_resolve_closes_it(
        world: World, ingest: str) -> None:
    trigger = {"routing_key": ingest, "event_action": "trigger", "dedup_key": "disk-db1",
               "payload": {"summary": "Disk full on db1", "source": "db1.prod", "severity": "critical"}}
    resolve = {"routing_key": ingest, "event_action": "resolve", "dedup_key": "disk-db1"}
    # (what is sent, the incidents expected afterwards: an independent script of PagerDuty's behaviour)
    script = [
        (trigger, [("INC-1", True)]),
        (trigger, [("INC-1", True)]),                       # a repeat while open: the same incident
        (resolve, [("INC-1", False)]),
        (resolve, [("INC-1", False)]),                      # a repeated resolve changes nothing
        (trigger, [("INC-1", False), ("INC-2", True)]),     # the same key again: a new incident
        (trigger, [("INC-1", False), ("INC-2", True)]),
        (resolve, [("INC-1", False), ("INC-2", False)]),    # and its resolve is not dropped
        ({**trigger, "payload": {**trigger["payload"], "timestamp": "2026-11-30T10:00:00Z"}},
         [("INC-1", False), ("INC-2", False), ("INC-3", True)]),
        (resolve, [("INC-1", False), ("INC-2", False), ("INC-3", False)]),
    ]
    for n, (event, expected) in enumerate(script):
        reply = await world.client.post("/v2/enqueue", json=event)
        assert reply.status_code == 202, (n, reply.text)
        assert _states(world) == expected, n
    replay_clean(world)


async def test_a_generic_event_firing_again_after_resolved_opens_a_new_incident(world: World, ingest: str) -> None:
    auth = {"Authorization": f"Bearer {ingest}"}
    firing = {"service": "checkout", "title": "Queue backlog", "severity": "high", "fingerprint": "q1"}
    for event, expected in [(firing, [("INC-1", True)]), ({**firing, "status": "resolved"}, [("INC-1", False)]),
                            (firing, [("INC-1", False), ("INC-2", True)]),
                            ({**firing, "status": "resolved"}, [("INC-1", False), ("INC-2", False)])]:
        reply = await world.client.post("/ingest/events", json=event, headers=auth)
        assert reply.status_code == 200, reply.text
        assert _states(world) == expected


async def test_generic_event_and_grafana(world: World, ingest: str) -> None:
    auth = {"Authorization": f"Bearer {ingest}"}
    event = await world.client.post("/ingest/events", headers=auth,
                                    json={"service": "billing", "title": "queue backlog", "severity": "high"})
    assert event.status_code == 200 and event.json()["incidents"] == ["INC-1"]
    grafana = {"receiver": "ae", "status": "firing", "orgId": 1, "version": "1", "groupKey": "g", "truncatedAlerts": 0,
               "groupLabels": {}, "commonLabels": {}, "commonAnnotations": {}, "externalURL": "http://grafana",
               "alerts": [{"status": "firing", "labels": {"alertname": "HighCPU", "service": "api", "severity": "warning"},
                           "annotations": {"summary": "CPU 95%"}, "startsAt": "2026-11-22T13:50:00Z",
                           "endsAt": "0001-01-01T00:00:00Z", "generatorURL": "", "fingerprint": "abc123",
                           "values": {"A": 95}, "valueString": "[ var='A' value=95 ]"}]}
    reply = await world.client.post("/ingest/grafana", headers=auth, json=grafana)
    assert reply.status_code == 200 and reply.json()["incidents"] == ["INC-2"]
    assert engine.get_incident(world.db.read_conn(), world.tenants["a"], "INC-2").priority == "P2"


async def test_missed_heartbeat_opens_and_the_next_beat_resolves(world: World, ingest: str) -> None:
    t = world.tenants["a"]
    beat = await world.client.post(f"/ingest/heartbeat/nightly-backup/{ingest}", params={"interval": 60})
    assert beat.status_code == 200 and beat.json()["name"] == "nightly-backup"
    assert await world.db.write(claim_missed("2000-01-01T00:00:00.000000Z")) == []  # not due yet
    missed = await world.db.write(claim_missed("2999-01-01T00:00:00.000000Z"))
    assert [b.name for b in missed] == ["nightly-backup"]
    await world.app.state.detector.on_alert(t, heartbeat_signal(missed[0], "firing"), None)  # type: ignore[attr-defined]
    [inc] = engine.list_incidents(world.db.read_conn(), t)
    assert inc.is_open and inc.source == "heartbeat"
    again = await world.client.post(f"/ingest/heartbeat/nightly-backup/{ingest}")
    assert again.json()["incidents"] == [inc.id]
    assert not engine.get_incident(world.db.read_conn(), t, inc.id).is_open
    replay_clean(world)


@pytest.mark.parametrize("interval, due_in", [(None, 90), (5, 7.5), (300, 450), (86_400, 129_600)])
async def test_a_heartbeat_interval_sets_when_the_next_beat_is_due(world: World, ingest: str,
                                                                 interval: int | None, due_in: float) -> None:
    params = {} if interval is None else {"interval": interval}
    before = datetime.now(timezone.utc)
    beat = await world.client.post(f"/ingest/heartbeat/job-{interval}/{ingest}", params=params)
    after = datetime.now(timezone.utc)
    assert beat.status_code == 200, beat.text
    assert beat.json()["interval"] == (interval or 60)
    due = datetime.fromisoformat(beat.json()["next_due"].replace("Z", "+00:00"))
    assert before + timedelta(seconds=due_in) <= due <= after + timedelta(seconds=due_in)  # 1.5 intervals


@pytest.mark.parametrize("interval", ["4", "86401", "-60", "sixty", "1e3", "99999999999999999999"])
async def test_a_heartbeat_interval_out_of_range_is_refused_and_records_nothing(world: World, ingest: str,
                                                                               interval: str) -> None:
    beat = await world.client.post(f"/ingest/heartbeat/odd/{ingest}", params={"interval": interval})
    assert beat.status_code in (400, 422) and beat.json()["error"]["field"] == "interval"
    rows = world.db.read_conn().execute("SELECT count(*) FROM heartbeats WHERE name = 'odd'").fetchone()[0]
    assert rows == 0


async def test_integration_keys_are_managed_and_shown_once(world: World) -> None:
    t, auth = world.tenants["a"], world.auth(world.keys[("a", "admin")])
    made = await world.client.post(f"/api/tenants/{t}/integrations", json={"name": "alertmanager"}, headers=auth)
    assert made.status_code == 201 and len(made.json()["key"]) == 32
    key = made.json()["key"]
    listed = await world.client.get(f"/api/tenants/{t}/integrations", headers=auth)
    assert key not in listed.text
    ok = await world.client.post(f"/ingest/events/{key}", json={"service": "x", "title": "y"})
    assert ok.status_code == 200
    await world.client.delete(f"/api/tenants/{t}/integrations/{made.json()['integration']['id']}", headers=auth)
    refused = await world.client.post(f"/ingest/events/{key}", json={"service": "x", "title": "y"})
    assert refused.status_code == 401
    db_bytes = b"".join(p.read_bytes() for p in world.data.path.glob("alertengine.db*"))
    assert key.encode() not in db_bytes


async def test_credentials_inside_alerts_are_redacted_not_refused(world: World, ingest: str) -> None:
    token = "xoxb-1234567890-abcdefghijklmn"
    body = fixture("firing-group.json")
    body["alerts"][0]["annotations"]["description"] = f"slack token {token} leaked into logs"
    body["alerts"][0]["labels"]["api_key"] = "plain-key-value"
    reply = await world.client.post(f"/ingest/alertmanager/{ingest}", json=body)
    assert reply.status_code == 200, reply.text
    ledger_bytes = b"".join(r[0] for r in world.db.read_conn().execute("SELECT body FROM ledger"))
    assert token.encode() not in ledger_bytes and b"plain-key-value" not in ledger_bytes
    assert b"[redacted sha256:" in ledger_bytes


async def test_a_pagerduty_change_event_is_recorded_as_commit_context_not_an_alert(world: World, ingest: str) -> None:
    change = {"routing_key": ingest, "payload": {"summary": "Deployed checkout v2.3.1", "source": "checkout",
                                                 "timestamp": "2026-11-30T10:00:00Z",
                                                 "custom_details": {"build": 4711, "by": "ci"}},
              "links": [{"href": "https://ci.example/4711", "text": "build"}]}
    reply = await world.client.post("/v2/change/enqueue", json=change)
    assert reply.status_code == 202 and reply.json() == {"status": "success", "message": "Change event processed"}
    again = await world.client.post("/v2/change/enqueue", json=change)
    assert again.status_code == 202
    assert engine.list_incidents(world.db.read_conn(), world.tenants["a"]) == []   # never an alert
    deploys = await world.client.get(f"/api/tenants/{world.tenants['a']}/deploys",
                                     headers=world.auth(world.keys[("a", "admin")]))
    [recorded] = deploys.json()["deploys"]
    assert recorded["service"] == "checkout" and recorded["source"] == "pagerduty"
    assert recorded["message"].startswith("Deployed checkout v2.3.1") and "build: 4711" in recorded["message"]
    assert recorded["time"] == "2026-11-30T10:00:00.000000Z"   # in the ledger's own form
    assert count(world, "deploy.recorded") == 1                       # the same event twice: recorded once


@pytest.mark.parametrize("body, field", [
    ({"payload": {"summary": "x"}}, "routing_key"),
    ({"routing_key": "KEY"}, "payload"),
    ({"routing_key": "KEY", "payload": {}}, "payload.summary"),
    ({"routing_key": "KEY", "payload": {"summary": "x", "timestamp": "yesterday"}}, "payload.timestamp"),
])
async def test_a_malformed_change_event_names_the_field(world: World, ingest: str, body: dict, field: str) -> None:
    body = json.loads(json.dumps(body).replace("KEY", ingest))
    reply = await world.client.post("/v2/change/enqueue", json=body, headers={"Authorization": f"Bearer {ingest}"})
    assert reply.status_code == 400 and reply.json()["error"]["field"] == field


async def test_a_pagerduty_acknowledge_acknowledges_the_incident(world: World, ingest: str) -> None:
    trigger = {"routing_key": ingest, "event_action": "trigger", "dedup_key": "disk-db1",
               "payload": {"summary": "Disk full on db1", "source": "db1.prod", "severity": "critical"}}
    ack = {"routing_key": ingest, "event_action": "acknowledge", "dedup_key": "disk-db1"}
    assert (await world.client.post("/v2/enqueue", json=ack)).status_code == 202   # nothing to acknowledge yet
    assert engine.list_incidents(world.db.read_conn(), world.tenants["a"]) == []
    await world.client.post("/v2/enqueue", json=trigger)
    reply = await world.client.post("/v2/enqueue", json=ack)
    assert reply.status_code == 202
    inc = engine.get_incident(world.db.read_conn(), world.tenants["a"], "INC-1")
    assert inc.is_open and inc.acknowledged_by == "ingest:pagerduty"
    assert count(world, "incident.acknowledged") == 1
    again = await world.client.post("/v2/enqueue", json=ack)                          # a repeat changes nothing
    assert again.status_code == 202 and count(world, "incident.acknowledged") == 1
    replay_clean(world)
