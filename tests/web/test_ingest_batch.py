"""One ingest request's alerts are written together: a 50-alert group costs one transaction for
its alerts, not a hundred; duplicates within a request count once; a resolve in the same request
sees the alerts before it."""

from __future__ import annotations

import json

import pytest

from alertengine.incidents import engine
from alertengine.incidents.replay import replay_database
from alertengine.tenancy.tenants import create_integration
from tests.web.conftest import World


@pytest.fixture
async def ingest(world: World) -> str:
    _item, key = await world.db.write(create_integration(world.tenants["a"], "prometheus", "test"))
    return key


def group(*alerts: tuple[str, str, str]) -> dict:
    """Alerts as (status, instance, fingerprint), all of one rule on one service."""
    return {"version": "4", "status": "firing", "receiver": "ae", "groupKey": "{}", "truncatedAlerts": 0,
            "groupLabels": {}, "commonLabels": {}, "commonAnnotations": {}, "externalURL": "http://am",
            "alerts": [{"status": status, "labels": {"alertname": "HighLatency", "service": "checkout",
                                                     "instance": instance, "severity": "critical"},
                        "annotations": {"summary": f"slow on {instance}"}, "startsAt": "2026-11-22T13:49:44Z",
                        "endsAt": "0001-01-01T00:00:00Z", "generatorURL": "", "fingerprint": fp}
                       for status, instance, fp in alerts]}


def kinds(world: World, tenant: str) -> list[str]:
    return [r[0] for r in world.db.read_conn().execute("SELECT kind FROM ledger WHERE tenant = ? ORDER BY seq",
                                                       (tenant,))]


async def post(world: World, key: str, body: dict) -> dict:
    reply = await world.client.post(f"/ingest/alertmanager/{key}", json=body)
    assert reply.status_code == 200, reply.text
    return reply.json()


async def test_fifty_alerts_joining_an_incident_are_one_transaction(world: World, ingest: str) -> None:
    t = world.tenants["a"]
    await post(world, ingest, group(("firing", "10.0.0.1:80", "f-000")))           # opens INC-1
    writes = world.db._stats["writes"]
    joined = await post(world, ingest, group(*[("firing", f"10.0.1.{n}:80", f"f-{n + 1:03d}") for n in range(50)]))
    assert joined == {"accepted": 50, "incidents": ["INC-1"]}
    # one write for the fifty alerts (records, the repeat count, the labels they share), one to
    # route the single "alerts joined" notice; before batching it was over a hundred
    assert world.db._stats["writes"] - writes <= 3
    assert kinds(world, t).count("alert.received") == 51
    (labels,) = world.db.read_conn().execute("SELECT labels FROM incidents WHERE tenant = ? AND id = 'INC-1'",
                                             (t,)).fetchone()
    assert json.loads(labels) == {"alertname": "HighLatency", "service": "checkout", "severity": "critical"}
    occurrences = world.db.read_conn().execute("SELECT count(*) FROM alert_occurrences WHERE incident = 'INC-1'")
    assert occurrences.fetchone()[0] == 50                                          # every joining alert counted
    updated = [json.loads(r[0])["data"] for r in world.db.read_conn().execute(
        "SELECT body FROM ledger WHERE tenant = ? AND kind LIKE 'notification.%' ORDER BY seq", (t,))]
    said = [d for d in updated if "50 more alerts joined" in json.dumps(d)]
    assert len(said) == 1                                                           # told once, not fifty times
    with world.db.reader() as conn:
        assert replay_database(conn).differences == []


async def test_the_same_alert_twice_in_one_request_counts_once(world: World, ingest: str) -> None:
    t = world.tenants["a"]
    await post(world, ingest, group(("firing", "a:1", "f-a"), ("firing", "a:1", "f-a"), ("firing", "b:1", "f-b"),
                                    ("firing", "b:1", "f-b")))
    assert kinds(world, t).count("alert.received") == 2
    again = await post(world, ingest, group(("firing", "a:1", "f-a"), ("firing", "b:1", "f-b")))
    assert again["incidents"] == ["INC-1"] and kinds(world, t).count("alert.received") == 2


async def test_a_resolve_sees_the_alerts_before_it_in_the_same_request(world: World, ingest: str) -> None:
    t = world.tenants["a"]
    await post(world, ingest, group(("firing", "a:1", "f-a")))
    # b joins, then a resolves in the same request: b still fires, so the incident stays open
    await post(world, ingest, group(("firing", "b:1", "f-b"), ("resolved", "a:1", "f-a")))
    assert engine.get_incident(world.db.read_conn(), t, "INC-1").is_open
    # now b resolves, after a third alert joined in the same request: still open for c
    await post(world, ingest, group(("firing", "c:1", "f-c"), ("resolved", "b:1", "f-b")))
    assert engine.get_incident(world.db.read_conn(), t, "INC-1").is_open
    await post(world, ingest, group(("resolved", "c:1", "f-c")))
    inc = engine.get_incident(world.db.read_conn(), t, "INC-1")
    assert inc.stage == engine.RESOLVED and not inc.is_open
    received = [k for k in kinds(world, t) if k in ("alert.received", "incident.resolved")]
    # the alert that resolves the incident is ledgered before the change it causes
    assert received == ["alert.received"] * 6 + ["incident.resolved"]


async def test_ingest_and_detection_are_measured(world: World, ingest: str) -> None:
    registry = world.app.state.telemetry.registry

    def value(name: str, **labels: str) -> float:
        return registry.get_sample_value(name, labels) or 0.0
    await post(world, ingest, group(("firing", "a:1", "f-a"), ("firing", "b:1", "f-b")))
    await post(world, ingest, group(("firing", "a:1", "f-a"), ("firing", "b:1", "f-b"), ("firing", "c:1", "f-c")))
    assert value("alertengine_ingest_alerts_total", source="alertmanager", result="new") == 3
    assert value("alertengine_ingest_alerts_total", source="alertmanager", result="repeat") == 2
    assert value("alertengine_ingest_request_seconds_count", source="alertmanager") == 2
    assert value("alertengine_ingest_request_alerts_sum", source="alertmanager") == 5
    assert value("alertengine_detection_latency_seconds_count", source="alertmanager") == 1   # one incident opened
