"""One ingest request's alerts are written together: a 50-alert group costs one transaction for
its alerts, not a hundred; duplicates within a request count once; a resolve in the same request
sees the alerts before it."""

from __future__ import annotations

import asyncio
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


async def test_a_requests_alerts_change_the_alerts_as_they_would_one_request_each(world: World) -> None:
    """The writer looks up a request's unresolved alerts at once: the alerts table ends the same as
    when every alert comes in a request of its own (where each is looked up alone)."""
    one_by_one, batched = world.tenants["a"], world.tenants["b"]
    _i, key_single = await world.db.write(create_integration(one_by_one, "prometheus", "single"))
    _i, key_batch = await world.db.write(create_integration(batched, "prometheus", "batch"))
    groups = [
        [("firing", "x1", "f-1"), ("firing", "x2", "f-2"), ("firing", "x3", "f-3")],
        [("resolved", "x2", "f-2"), ("firing", "x4", "f-4"), ("firing", "x1", "f-1")],
        [("firing", "x2", "f-2"), ("resolved", "x1", "f-1"), ("firing", "x5", "f-5"), ("firing", "x1", "f-1")],
        [("resolved", "x3", "f-3"), ("firing", "x3", "f-3"), ("firing", "x3", "f-3"), ("resolved", "x4", "f-4")],
        [("resolved", i, f) for i, f in (("x1", "f-1"), ("x2", "f-2"), ("x3", "f-3"), ("x5", "f-5"))],
        [("firing", "x1", "f-1"), ("firing", "x2", "f-2"), ("firing", "x1", "f-1")],   # a new incident
    ]
    for alerts in groups:
        await post(world, key_batch, group(*alerts))
        for one in alerts:
            await post(world, key_single, group(one))
    # an operator resolves INC-2 while f-1 and f-2 still fire at the source; when they fire again
    # (a new incident), their alerts are the unresolved ones already there, not new alerts
    for tenant, label in ((one_by_one, "a"), (batched, "b")):
        done = await world.client.post(f"/api/tenants/{tenant}/incidents/INC-2/resolve", json={"reason": "by hand"},
                                       headers=world.auth(world.keys[(label, "operator")]))
        assert done.status_code == 200, done.text
    again = [("firing", "x1", "f-1"), ("firing", "x2", "f-2"), ("firing", "x6", "f-6")]
    await post(world, key_batch, group(*again))
    for one in again:
        await post(world, key_single, group(one))

    def table(tenant: str) -> list[tuple]:
        return world.db.read_conn().execute(
            "SELECT fingerprint, status, incident, severity, rule_name FROM alerts WHERE tenant = ? "
            "ORDER BY triggered, fingerprint, status", (tenant,)).fetchall()
    expected = table(one_by_one)
    # stated independently too: while INC-1 is open, an alert firing again after its resolve is the
    # same alert (ledgered once): one alert each, all resolved; INC-1 resolves with the last of them,
    # and f-1 and f-2 firing again open INC-2, as new alerts; after INC-2 is resolved by hand they
    # open INC-3 and their alerts (still unresolved) move to it; f-6 is new there
    assert [(f, s, i) for f, s, i, *_ in expected] == [
        ("f-1", "resolved", "INC-1"), ("f-2", "resolved", "INC-1"), ("f-3", "resolved", "INC-1"),
        ("f-4", "resolved", "INC-1"), ("f-5", "resolved", "INC-1"), ("f-1", "active", "INC-3"),
        ("f-2", "active", "INC-3"), ("f-6", "active", "INC-3")]
    assert table(batched) == expected
    with world.db.reader() as conn:
        assert replay_database(conn).differences == []


async def test_new_alerts_are_described_for_the_live_stream_only_when_someone_watches(
        world: World, ingest: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Describing an inserted alert as the API shows it costs the writer as much as inserting it:
    it is done only when the tenant's stream has a subscriber, and then it says what was written."""
    from alertengine.alerts import store as alert_store
    described: list[str] = []
    real = alert_store.public

    def counting(row):  # type: ignore[no-untyped-def]
        described.append(row[0])
        return real(row)
    monkeypatch.setattr(alert_store, "public", counting)
    hub = world.app.state.runtime.hub
    await post(world, ingest, group(("firing", "a:1", "f-a"), ("firing", "b:1", "f-b")))
    assert described == []                                  # nobody watches: nothing described
    sub = hub.subscribe(world.tenants["a"])
    try:
        await post(world, ingest, group(("firing", "c:1", "f-c"), ("firing", "d:1", "f-d")))
        got = []
        while len(got) < 2:
            message = await asyncio.wait_for(sub.next(), 30)
            assert message is not None and message["type"] == "alerts"
            got += message["data"]
        assert [(a["source"], a["status"], a["incident"], a["metrics_snapshot"]["instance"]) for a in got] == [
            ("alertmanager", "active", "INC-1", "c:1"), ("alertmanager", "active", "INC-1", "d:1")]
        stored = {r[0] for r in world.db.read_conn().execute(
            "SELECT id FROM alerts WHERE tenant = ? AND fingerprint IN ('f-c', 'f-d')", (world.tenants["a"],))}
        assert {a["id"] for a in got} == stored and sorted(described) == sorted(stored)
    finally:
        hub.unsubscribe(sub)
