"""Detection and the incident engine: policy opens, proposes, escalates and recovers; nothing
reaches AUTHORIZED without a human; shadow mode sends nothing; replay equals the tables."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from alertengine.incidents import engine
from alertengine.incidents.detection import Detector, ServiceRef
from alertengine.incidents.policy import put_policy
from alertengine.incidents.replay import replay_database
from alertengine.notify.gateway import Gateway, JsonLinesChannel
from alertengine.signals import AlertSignal, HealthReading
from alertengine.store import Database
from alertengine.tenancy.tenants import create_tenant, set_shadow

HEALTHY = HealthReading("answered", "sdk", 200, 12.0, "ok", p95_ms=180.0, error_rate=0.001, health_score=97.0,
                        sample_size=500)
LONG_TAIL = HealthReading("answered", "sdk", 200, 12.0, "ok", p95_ms=1500.0, error_rate=0.01, health_score=80.0,
                          anomaly_score=0.5, sample_size=500)
SLOW = HealthReading("answered", "sdk", 200, 12.0, "warning", p95_ms=9000.0, error_rate=0.0, health_score=70.0,
                     sample_size=500)
ERRORS = HealthReading("answered", "hosted", 200, 12.0, "critical", p95_ms=300.0, error_rate=0.19, health_score=60.0,
                       sample_size=200)
UNREACHABLE = HealthReading("unreachable", "plain", detail="connection refused")
TIMEOUT = HealthReading("timeout", "plain", detail="no answer in 3 s")
NO_DATA = HealthReading("answered", "hosted", 200, 5.0, "no_data", p95_ms=0.0, error_rate=0.0, health_score=100.0,
                        sample_size=0)
NOT_FOUND = HealthReading("http_error", "plain", 404, 3.0, detail="HTTP 404")


class Harness:
    def __init__(self, db: Database, tmp: Path) -> None:
        self.db = db
        self.outbox = tmp / "notifications.jsonl"
        self.detector = Detector(db, Gateway(db, [JsonLinesChannel(self.outbox)]))
        self.tenant = db.write_sync(create_tenant("acme", "test")).id
        self.service = ServiceRef(self.tenant, "svc_0000000000000001", "checkout")

    async def feed(self, *readings: HealthReading) -> engine.Incident | None:
        result = None
        for r in readings:
            result = await self.detector.on_reading(self.service, r)
        return result

    def incidents(self) -> list[engine.Incident]:
        return engine.list_incidents(self.db.read_conn(), self.tenant)

    def kinds(self) -> list[str]:
        return [r[0] for r in self.db.read_conn().execute("SELECT kind FROM ledger WHERE tenant = ? ORDER BY seq",
                                                          (self.tenant,))]

    def assert_replay_clean(self) -> None:
        with self.db.reader() as conn:
            report = replay_database(conn)
        assert report.differences == []


@pytest.fixture
def h(db: Database, tmp_path: Path) -> Harness:
    return Harness(db, tmp_path)


@pytest.mark.parametrize("reading,priority", [(SLOW, "P2"), (ERRORS, "P1"), (UNREACHABLE, "P1"), (TIMEOUT, "P1")])
async def test_each_signal_opens_an_incident_on_its_own(h: Harness, reading: HealthReading, priority: str) -> None:
    assert await h.feed(reading, reading) is None
    inc = await h.feed(reading)
    assert inc is not None and inc.id == "INC-1" and inc.priority == priority
    assert inc.stage == engine.PROPOSED and inc.action == "restart service"
    detected = json.loads(h.db.read_conn().execute("SELECT body FROM ledger WHERE kind = 'incident.detected'").fetchone()[0])
    assert detected["actor"] == "policy" and detected["policy_version"].startswith("sha256:")
    h.assert_replay_clean()


@pytest.mark.parametrize("reading", [HEALTHY, LONG_TAIL, NO_DATA, NOT_FOUND])
async def test_healthy_long_tail_no_data_and_plain_4xx_open_nothing(h: Harness, reading: HealthReading) -> None:
    await h.feed(*[reading] * 10)
    assert h.incidents() == []


async def test_4xx_storm_opens_when_policy_counts_4xx(h: Harness) -> None:
    h.db.write_sync(put_policy(h.tenant, "[thresholds]\nhttp_4xx_is_error = true\n", "test"))
    inc = await h.feed(*[NOT_FOUND] * 3)
    assert inc is not None and inc.priority == "P1"
    [changed] = [k for k in h.kinds() if k == "policy.changed"]
    assert changed


async def test_flapping_opens_no_incident_storm(h: Harness) -> None:
    await h.feed(*[SLOW, SLOW, HEALTHY] * 10)
    assert h.incidents() == []


async def test_full_outage_without_a_human_never_passes_proposed_then_recovers_and_reopens(h: Harness) -> None:
    first = await h.feed(*[SLOW] * 20)
    assert first is not None and first.stage == engine.PROPOSED
    assert not any(k in h.kinds() for k in ("incident.authorized", "incident.executing", "incident.executed"))
    recovered = await h.feed(*[HEALTHY] * 3)
    assert recovered is not None and recovered.stage == engine.RECOVERED and not recovered.is_open
    second = await h.feed(*[ERRORS] * 3)
    assert second is not None and second.id == "INC-2" and second.is_open
    assert [i.id for i in h.incidents()] == ["INC-2", "INC-1"]
    h.assert_replay_clean()


async def test_worse_signal_escalates_priority(h: Harness) -> None:
    await h.feed(*[SLOW] * 3)
    inc = await h.feed(UNREACHABLE)
    assert inc is not None
    assert engine.get_incident(h.db.read_conn(), h.tenant, "INC-1").priority == "P1"
    assert "incident.escalated" in h.kinds()
    h.assert_replay_clean()


@pytest.mark.parametrize("dst,actor", [(engine.AUTHORIZED, "policy"), (engine.AUTHORIZED, "ai:model"),
                                       (engine.EXECUTING, "orchestrator"), (engine.RECOVERED, "engineer:x"),
                                       (engine.DETECTED, "policy")])
async def test_illegal_transitions_are_refused_ledgered_and_raise(h: Harness, dst: str, actor: str) -> None:
    await h.feed(*[SLOW] * 3)
    with pytest.raises(engine.IllegalTransitionError):
        await engine.run(h.db, engine.transition(h.tenant, "INC-1", dst, actor, reason="try"))
    assert engine.get_incident(h.db.read_conn(), h.tenant, "INC-1").stage == engine.PROPOSED
    assert h.kinds()[-1] == "incident.transition_refused"
    h.assert_replay_clean()


async def test_an_engineer_may_authorize_and_reject(h: Harness) -> None:
    await h.feed(*[SLOW] * 3)
    inc = await engine.run(h.db, engine.transition(h.tenant, "INC-1", engine.AUTHORIZED, "engineer:telegram:42",
                                                   reason="approved"))
    assert inc.stage == engine.AUTHORIZED
    h.assert_replay_clean()


async def test_fifty_concurrent_identical_alerts_open_one_incident(h: Harness) -> None:
    alert = AlertSignal("alertmanager", "3fbf8b0e6f12a856", "firing", "critical", "P95 latency 2.8s", "checkout",
                        {"alertname": "CheckoutHighLatency"}, {}, "2026-11-22T13:49:44Z")
    results = await asyncio.gather(*(h.detector.on_alert(h.tenant, alert, h.service) for _ in range(50)))
    assert {r.id for r in results if r is not None} == {"INC-1"}
    assert len(h.incidents()) == 1
    assert h.kinds().count("alert.received") == 1  # repeats are idempotent
    h.assert_replay_clean()


async def test_fifty_concurrent_openings_race_to_one(h: Harness) -> None:
    opening = engine.Opening(h.tenant, "health:x", "poller", "x down", "P1", "x", "x", None, "sha256:0", "race", {})
    results = await asyncio.gather(*(h.db.write(engine.open_incident(opening)) for _ in range(50)))
    assert sum(new for _, new in results) == 1 and len({inc.id for inc, _ in results}) == 1


async def test_alert_group_resolves_only_when_every_alert_resolved(h: Harness) -> None:
    def alert(fp: str, status: str) -> AlertSignal:
        return AlertSignal("alertmanager", fp, status, "critical", "P95 latency", "checkout",
                           {"alertname": "CheckoutHighLatency"}, {}, "2026-11-22T13:49:44Z")
    await h.detector.on_alert(h.tenant, alert("a1", "firing"), None)
    await h.detector.on_alert(h.tenant, alert("a2", "firing"), None)
    still = await h.detector.on_alert(h.tenant, alert("a1", "resolved"), None)
    assert still is not None and still.is_open
    done = await h.detector.on_alert(h.tenant, alert("a2", "resolved"), None)
    assert done is not None and done.stage == engine.RESOLVED
    resolved = [json.loads(r[0]) for r in h.db.read_conn().execute("SELECT body FROM ledger WHERE kind = 'incident.resolved'")]
    assert resolved[0]["actor"] == "ingest:alertmanager"
    h.assert_replay_clean()


async def test_shadow_mode_sends_nothing_and_ledgers_what_would_have_gone(h: Harness) -> None:
    await h.feed(*[SLOW] * 3)
    assert not h.outbox.exists()
    suppressed = [json.loads(r[0]) for r in h.db.read_conn().execute(
        "SELECT body FROM ledger WHERE kind = 'notification.suppressed' ORDER BY seq")]
    assert [s["data"]["would_have"]["event"] for s in suppressed] == ["detected", "proposed"]
    assert all(s["actor"] == "shadow_mode" for s in suppressed)
    h.db.write_sync(set_shadow(h.tenant, False, "test"))
    await h.feed(*[HEALTHY] * 3)
    lines = [json.loads(line) for line in h.outbox.read_text().splitlines()]
    assert [line["event"] for line in lines] == ["recovered"]
    assert "notification.routed" in h.kinds()   # live again: routed and stored for delivery


async def test_auto_resolve_is_a_stored_deadline_that_survives_a_restart(data_dir, config, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from alertengine.runtime import Runtime
    db = data_dir.open_database(config)
    h = Harness(db, tmp_path)
    db.write_sync(put_policy(h.tenant, "[detection]\nauto_resolve_after = 60.0\n", "test"))
    alert = AlertSignal("events", "f1", "firing", "medium", "queue backlog", "billing", {}, {}, "2026-11-22T13:00:00Z")
    inc = await h.detector.on_alert(h.tenant, alert, None)
    assert inc is not None and inc.is_open
    pending = db.read_conn().execute("SELECT kind, due FROM timers WHERE done IS NULL").fetchall()
    assert [k for k, _ in pending] == ["auto_resolve"]
    db.close()  # a restart: the deadline is in the database, not in memory
    db = data_dir.open_database(config)
    try:
        runtime = Runtime(config, db, data_dir)
        await runtime.timer_round("2000-01-01T00:00:00.000000Z")
        assert engine.get_incident(db.read_conn(), h.tenant, inc.id).is_open  # not due yet
        await runtime.timer_round("2999-01-01T00:00:00.000000Z")
        done = engine.get_incident(db.read_conn(), h.tenant, inc.id)
        assert done.stage == engine.RESOLVED
        last = json.loads(db.read_conn().execute(
            "SELECT body FROM ledger WHERE kind = 'incident.resolved'").fetchone()[0])
        assert last["actor"] == "policy" and last["decision"] == "auto_resolved"
        await runtime.timer_round("2999-01-01T00:00:01.000000Z")  # fires once
        assert db.read_conn().execute("SELECT count(*) FROM ledger WHERE kind = 'incident.resolved'").fetchone()[0] == 1
        with db.reader() as conn:
            assert replay_database(conn).differences == []
    finally:
        db.close()


def test_an_incident_keeps_the_labels_all_its_alerts_share(db: Database) -> None:
    tenant = db.write_sync(create_tenant("acme", "test")).id
    opening = engine.Opening(tenant, "alertmanager:checkout:Down", "alertmanager", "checkout down", "P1", None,
                             "checkout", None, "sha256:000000000000", "test",
                             {"labels": {"alertname": "Down", "instance": "10.0.0.5", "service": "checkout"}})
    inc, _ = db.write_sync(engine.open_incident(opening))

    def labels() -> dict:
        return json.loads(db.read_conn().execute("SELECT labels FROM incidents WHERE id = ?", (inc.id,)).fetchone()[0])
    assert labels() == {"alertname": "Down", "instance": "10.0.0.5", "service": "checkout"}
    assert db.write_sync(engine.merge_labels(tenant, inc.id, {"alertname": "Down", "instance": "10.0.0.5",
                                                              "service": "checkout", "extra": "x"})) is False
    assert db.write_sync(engine.merge_labels(tenant, inc.id, {"alertname": "Down", "instance": "10.0.0.6",
                                                              "service": "checkout"})) is True
    assert labels() == {"alertname": "Down", "service": "checkout"}
    assert db.write_sync(engine.merge_labels(tenant, inc.id, {"alertname": "Down", "service": "checkout"})) is False
    assert db.write_sync(engine.merge_labels(tenant, "INC-404", {})) is False
    db.write_sync(engine.transition(tenant, inc.id, engine.RESOLVED, "policy", reason="test"))
    assert db.write_sync(engine.merge_labels(tenant, inc.id, {})) is False
    assert labels() == {"alertname": "Down", "service": "checkout"}      # a closed incident keeps its labels


async def test_auto_resolve_closes_only_the_allowed_priorities_and_candidates_are_noted(
        data_dir, config, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from alertengine.runtime import Runtime
    db = data_dir.open_database(config)
    try:
        h = Harness(db, tmp_path)
        db.write_sync(put_policy(h.tenant, "[detection]\nauto_resolve_after = 60.0\n"
                                           "[auto_resolve]\ncandidate_after = 30.0\n", "test"))
        runtime = Runtime(config, db, data_dir)

        def alert(fp: str, severity: str) -> AlertSignal:
            return AlertSignal("events", fp, "firing", severity, f"queue {fp}", "billing", {}, {},
                               "2026-11-22T13:00:00Z")
        high = await h.detector.on_alert(h.tenant, alert("f1", "high"), None)         # P1
        medium = await h.detector.on_alert(h.tenant, alert("f2", "medium"), None)     # P2
        assert (high.priority, medium.priority) == ("P1", "P2")
        await runtime.timer_round("2999-01-01T00:00:00.000000Z")
        assert engine.get_incident(db.read_conn(), h.tenant, high.id).is_open         # a P1 stays open
        assert engine.get_incident(db.read_conn(), h.tenant, medium.id).stage == engine.RESOLVED
        notes = {(json.loads(b)["incident"], k) for k, b in db.read_conn().execute(
            "SELECT kind, body FROM ledger WHERE kind LIKE 'incident.auto_resolve%'")}
        assert notes == {(high.id, "incident.auto_resolve_skipped"), (medium.id, "incident.auto_resolve_candidate")}
        skipped = json.loads(db.read_conn().execute(
            "SELECT body FROM ledger WHERE kind = 'incident.auto_resolve_skipped'").fetchone()[0])
        assert skipped["actor"] == "policy" and "P1 is not one auto-resolve may close" in skipped["reason"]
        await runtime.http.aclose()
    finally:
        db.close()


async def test_repeats_raise_the_priority_p2_p1_p0_and_stop_at_the_cap(h: Harness) -> None:
    h.db.write_sync(put_policy(h.tenant, "[escalation]\np2_to_p1_occurrences = 3\np1_to_p0_occurrences = 5\n",
                               "test"))
    alert = AlertSignal("pagerduty", "dedup-1", "firing", "medium", "disk filling", "billing", {}, {}, None)
    priorities = []
    for _ in range(12):                                            # the same alert, triggered twelve times
        inc = await h.detector.on_alert(h.tenant, alert, None)
        assert inc is not None
        priorities.append(engine.get_incident(h.db.read_conn(), h.tenant, inc.id).priority)
    # the first opens the incident; repeats 2.. are occurrences: 3 → P1, 5 → P0
    assert priorities == ["P2", "P2", "P2", "P1", "P1", "P0", "P0", "P0", "P0", "P0", "P0", "P0"]
    escalated = [json.loads(b) for (b,) in h.db.read_conn().execute(
        "SELECT body FROM ledger WHERE kind = 'incident.escalated' ORDER BY seq")]
    assert [(e["data"]["from"], e["data"]["to"]) for e in escalated] == [("P2", "P1"), ("P1", "P0")]
    assert all(e["actor"] == "policy" and e["reason"].startswith("repeats: ") for e in escalated)
    h.assert_replay_clean()


async def test_the_cap_holds(h: Harness) -> None:
    h.db.write_sync(put_policy(h.tenant, "[escalation]\np2_to_p1_occurrences = 2\np1_to_p0_occurrences = 3\n"
                                         'cap = "P1"\n', "test"))
    alert = AlertSignal("pagerduty", "dedup-2", "firing", "medium", "disk filling", "billing", {}, {}, None)
    for _ in range(10):
        inc = await h.detector.on_alert(h.tenant, alert, None)
    assert engine.get_incident(h.db.read_conn(), h.tenant, inc.id).priority == "P1"


async def test_an_alert_that_keeps_coming_back_opens_higher(h: Harness) -> None:
    h.db.write_sync(put_policy(h.tenant, "[escalation]\np2_to_p1_triage_24h = 3\n", "test"))
    opened = []
    for n in range(4):
        firing = AlertSignal("alertmanager", "fp", "firing", "medium", "flapping", "billing",
                             {"alertname": "Flap"}, {}, f"2026-11-22T13:0{n}:00Z")
        inc = await h.detector.on_alert(h.tenant, firing, None)
        opened.append(inc.priority)
        resolved = AlertSignal("alertmanager", "fp", "resolved", "medium", "flapping", "billing",
                               {"alertname": "Flap"}, {}, f"2026-11-22T13:0{n}:00Z")
        await h.detector.on_alert(h.tenant, resolved, None)
    assert opened == ["P2", "P2", "P1", "P1"]      # the third incident of this alert in 24 h opens as P1
