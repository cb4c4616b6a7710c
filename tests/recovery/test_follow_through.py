"""Following a recovery through: after EXECUTED, policy gives the service a verification window (a
stored deadline). Still failing at its end: FAILED with decision ``not_recovered``, the responders are
told, and policy proposes again, which needs a new approval. Recovered in time: nothing more."""

from __future__ import annotations

import json

from alertengine.incidents import engine
from alertengine.incidents.policy import put_policy
from alertengine.signals import HealthReading
from tests.fakes.receiver import Receiver
from tests.recovery.test_approvals import Flow, flow  # noqa: F401  (fixture)

HEALTHY = HealthReading("answered", "sdk", 200, 10.0, "ok", p95_ms=100.0, error_rate=0.0, health_score=99.0,
                        sample_size=100)


async def _executed(flow: Flow, receiver: Receiver) -> engine.Incident:  # noqa: F811
    receiver.secret = flow.add_service(f"{receiver.url}/recover")
    flow.db.write_sync(put_policy(flow.tenant, "[detection]\nverification_window = 90.0\n", "test"))
    await flow.outage()
    assert (await flow.confirm(flow.token())).status_code == 200
    await flow.settle()
    inc = flow.incident()
    assert inc.stage == engine.EXECUTED and len(receiver.requests) == 1
    return inc


def _pending(flow: Flow) -> list[tuple[str, str]]:  # noqa: F811
    return [(k, d) for k, d in flow.db.read_conn().execute(
        "SELECT kind, due FROM timers WHERE done IS NULL AND kind = 'verify_recovery'")]


async def test_a_recovery_that_does_not_recover_fails_tells_the_humans_and_asks_again(flow: Flow) -> None:  # noqa: F811
    runtime = flow.app.state.runtime  # type: ignore[attr-defined]
    with Receiver() as receiver:
        inc = await _executed(flow, receiver)
        [(kind, due)] = _pending(flow)
        executed = [json.loads(b) for (b,) in flow.db.read_conn().execute(
            "SELECT body FROM ledger WHERE kind = 'incident.executed'")]
        assert executed[0]["data"]["verification_window"] == 90.0
        links_before = len(flow.links())
        await runtime.timer_round("2000-01-01T00:00:00.000000Z")       # not due yet
        assert flow.incident().stage == engine.EXECUTED
        await runtime.timer_round("2999-01-01T00:00:00.000000Z")
        await flow.settle()
        again = flow.incident()
        assert again.stage == engine.PROPOSED                             # policy asks again
        entries = [json.loads(b) for (b,) in flow.db.read_conn().execute(
            "SELECT body FROM ledger WHERE incident = ? ORDER BY seq", (inc.id,))]
        failed = [e for e in entries if e["kind"] == "incident.failed"]
        assert [(e["actor"], e["decision"]) for e in failed] == [("policy", "not_recovered")]
        assert "still failing after 90.0 s" in failed[0]["reason"]
        told = [m for m in flow.person.received if m.event == "not_recovered"]
        assert len(told) == 1 and "A new approval is needed" in told[0].text
        assert len(flow.links()) > links_before                            # a fresh link: a new approval
        await runtime.timer_round("2999-01-01T00:00:01.000000Z")        # fires once
        kinds = [k for (k,) in flow.db.read_conn().execute("SELECT kind FROM ledger WHERE incident = ?", (inc.id,))]
        assert kinds.count("incident.failed") == 1
        assert _pending(flow) == []
        assert len(receiver.requests) == 1                                 # nothing ran without a new approval
        flow.replay_clean()


async def test_a_service_that_recovers_in_time_is_left_alone(flow: Flow) -> None:  # noqa: F811
    runtime = flow.app.state.runtime  # type: ignore[attr-defined]
    with Receiver() as receiver:
        inc = await _executed(flow, receiver)
        for _ in range(3):
            await flow.app.state.detector.on_reading(flow.service, HEALTHY)  # type: ignore[attr-defined]
        assert flow.incident().stage == engine.RECOVERED
        await runtime.timer_round("2999-01-01T00:00:00.000000Z")
        assert flow.incident().stage == engine.RECOVERED
        kinds = [k for (k,) in flow.db.read_conn().execute(
            "SELECT kind FROM ledger WHERE incident = ? ORDER BY seq", (inc.id,))]
        assert "incident.failed" not in kinds and kinds[-1] != "incident.proposed"
