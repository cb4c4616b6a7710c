"""Escalation chains, driven by the fake clock: nobody answers → the right people are told, in
order, at the right seconds, across a restart; an acknowledgement (at any step), an approval or a
resolve stops the chain; repeats and reminders; shadow mode runs the chain and sends nothing."""

from __future__ import annotations

import json
from typing import Any

import pytest

from alertengine.appliance import DataDir
from alertengine.config import Config
from alertengine.incidents import engine
from alertengine.notify import escalation, outbox
from alertengine.notify.gateway import Message
from alertengine.tenancy.services import create_service, normalise
from alertengine.tenancy.tenants import set_shadow
from tests.notify.rig import OK, START, Rig, Scripted

PRIMARY, SECONDARY = "5550001", "5550002"


def _service(rig: Rig, config: Config) -> str:
    spec = normalise({"name": "checkout", "health_url": "http://127.0.0.1:9/health",
                      "contacts": {"primary": {"name": "Ada", "telegram_chat_id": PRIMARY},
                                   "secondary": {"name": "Grace", "telegram_chat_id": SECONDARY}}},
                     config.url_policy)
    svc, _ = rig.db.write_sync(create_service(rig.tenant, "checkout", spec, rig.vault, "test"))
    return svc.id


def _open(rig: Rig, service_id: str, n: int = 1) -> str:
    opening = engine.Opening(rig.tenant, f"health:{n}", "poller", "checkout: latency", "P1", service_id, "checkout",
                             None, "sha256:000000000000", "test", {})
    inc, _ = rig.db.write_sync(engine.open_incident(opening))
    return inc.id


@pytest.fixture
def chat(rig: Rig, config: Config) -> Scripted:
    rig.routing('[[route]]\nname = "all"\nreceivers = ["responders"]\n')
    rig.service_id = _service(rig, config)  # type: ignore[attr-defined]
    telegram = Scripted("telegram", [OK])
    rig.channels = {"telegram": telegram}
    rig.build()
    return telegram


def _told(chat: Scripted) -> list[tuple[str, str]]:
    return [(m.recipient, m.event) for m in chat.got]


async def _advance(rig: Rig, to: float) -> None:
    """Run everything due up to ``to`` seconds after START, in order, then stop the clock there."""
    while True:
        upcoming = outbox.next_due(rig.db.read_conn())
        if upcoming is None or upcoming > START + to:
            break
        rig.clock.now = max(rig.clock.now, upcoming)
        await rig.sender.run_due()
    rig.clock.now = START + to


def _steps(rig: Rig) -> list[dict[str, Any]]:
    return [d for k, d in rig.ledger("escalation.step")]


async def test_nobody_answers_the_primary_then_the_secondary_are_told_at_180_and_300_seconds(
        rig: Rig, chat: Scripted) -> None:
    inc = _open(rig, rig.service_id)  # type: ignore[attr-defined]
    await rig.gateway.notify(Message(rig.tenant, inc, "detected", "P1", "checkout: latency"))
    assert _told(chat) == [("primary:Ada", "detected")]
    await _advance(rig, 179.9)
    assert len(chat.got) == 1
    await _advance(rig, 180)
    assert _told(chat)[1:] == [("primary:Ada", "escalation")]
    assert "Escalation step 1 of 2: call the primary" in chat.got[1].text
    assert [b[1] for b in chat.got[1].buttons[0]] == [f"ak:{inc}", f"rs:{inc}", f"sl:{inc}"]
    await _advance(rig, 299.9)
    assert len(chat.got) == 2
    await _advance(rig, 300)
    assert _told(chat)[2:] == [("secondary:Grace", "escalation")]
    await _advance(rig, 10_000)
    assert len(chat.got) == 3                                        # no repeat by default
    steps = _steps(rig)
    assert [(s["step"], s["prefer"], [t["recipient"] for t in s["told"]]) for s in steps] == [
        (1, "voice", ["primary:Ada"]), (2, None, ["secondary:Grace"])]
    assert steps[0]["told"][0]["channels"] == ["telegram"]          # voice is not deliverable yet: telegram
    assert [k for k, _ in rig.ledger("escalation.")] == ["escalation.started", "escalation.step",
                                                         "escalation.step", "escalation.finished"]
    sent_at = [r.created for r in rig.rows() if r.event == "escalation"]
    assert len(sent_at) == 2


@pytest.mark.parametrize("ack_at,expected", [
    (10.0, []),                                        # before the first step: nobody is chased
    (200.0, ["primary:Ada"]),                          # after the call, before the secondary
    (400.0, ["primary:Ada", "secondary:Grace"]),       # after the last step: nothing left to stop
])
async def test_an_acknowledgement_at_any_step_stops_the_chain(rig: Rig, chat: Scripted, ack_at: float,
                                                              expected: list[str]) -> None:
    inc = _open(rig, rig.service_id)  # type: ignore[attr-defined]
    await rig.gateway.notify(Message(rig.tenant, inc, "detected", "P1", "checkout: latency"))
    await _advance(rig, ack_at)
    rig.db.write_sync(engine.acknowledge(rig.tenant, inc, "engineer:telegram:5550001"))
    await _advance(rig, 10_000)
    assert [r for r, e in _told(chat) if e == "escalation"] == expected
    if len(expected) < 2:
        [(kind, data)] = [(k, d) for k, d in rig.ledger("escalation.stopped")]
        assert data["remind_at"] is None
        assert escalation.status(rig.db.read_conn(), rig.tenant, inc)["state"] == "stopped"


@pytest.mark.parametrize("stage,actor", [("AUTHORIZED", "engineer:link:primary:Ada"), ("RESOLVED", "policy"),
                                         ("REJECTED", "engineer:link:primary:Ada")])
async def test_an_approval_a_rejection_or_a_resolve_stops_the_chain(rig: Rig, chat: Scripted, stage: str,
                                                                     actor: str) -> None:
    inc = _open(rig, rig.service_id)  # type: ignore[attr-defined]
    await rig.gateway.notify(Message(rig.tenant, inc, "detected", "P1", "checkout: latency"))
    if stage in ("AUTHORIZED", "REJECTED"):
        rig.db.write_sync(engine.transition(rig.tenant, inc, "PROPOSED", "policy", reason="test"))
    rig.db.write_sync(engine.transition(rig.tenant, inc, stage, actor, reason="test"))
    await _advance(rig, 10_000)
    assert [e for _, e in _told(chat)] == ["detected"]
    [(_, stopped)] = rig.ledger("escalation.stopped")
    assert escalation.status(rig.db.read_conn(), rig.tenant, inc)["state"] == "stopped"


async def test_a_restart_mid_chain_loses_no_step_and_fires_none_twice(
        rig: Rig, chat: Scripted, data_dir: DataDir, config: Config) -> None:
    inc = _open(rig, rig.service_id)  # type: ignore[attr-defined]
    await rig.gateway.notify(Message(rig.tenant, inc, "detected", "P1", "checkout: latency"))
    await _advance(rig, 200)                                         # the call went out
    rig.db.close()                                                   # the process stops
    rig.db = data_dir.open_database(config)
    rig.build()
    assert await rig.sender.recover() == 0
    await _advance(rig, 10_000)
    assert [r for r, e in _told(chat) if e == "escalation"] == ["primary:Ada", "secondary:Grace"]
    assert [d["step"] for d in _steps(rig)] == [1, 2]


async def test_repeat_and_reminders(rig: Rig, chat: Scripted) -> None:
    rig.routing('''
[[route]]
name = "all"
receivers = ["responders"]
escalation = "loud"

[escalation.loud]
steps = [{ after = 60.0, receivers = ["responders"] }, { after = 120.0, receivers = ["responders:secondary"] }]
repeat = 1
remind_after = 900.0
''')
    inc = _open(rig, rig.service_id)  # type: ignore[attr-defined]
    await rig.gateway.notify(Message(rig.tenant, inc, "detected", "P1", "checkout: latency"))
    await _advance(rig, 300)
    # round 1 at 60 and 120; round 2 at 180 and 240
    assert [(d["round"], d["step"]) for d in _steps(rig)] == [(1, 1), (1, 2), (2, 1), (2, 2)]
    rig.db.write_sync(engine.acknowledge(rig.tenant, inc, "engineer:telegram:5550001"))
    inc2 = _open(rig, rig.service_id, 2)       # a second incident, acknowledged early: reminders
    rig.clock.now = START + 1000
    await rig.gateway.notify(Message(rig.tenant, inc2, "detected", "P1", "checkout: errors"))
    rig.db.write_sync(engine.acknowledge(rig.tenant, inc2, "engineer:telegram:5550002"))
    await _advance(rig, 1000 + 60)                                   # its first step finds it acknowledged
    await _advance(rig, 1000 + 60 + 900)
    reminders = [m for m in chat.got if m.incident == inc2 and m.event == "escalation"]
    assert len(reminders) == 1 and reminders[0].text.startswith(f"Reminder: {inc2}")
    assert reminders[0].recipient == "primary:Ada"                   # the first step's receivers
    rig.db.write_sync(engine.transition(rig.tenant, inc2, "RESOLVED", "policy", reason="test"))
    await _advance(rig, 1000 + 60 + 900 * 5)
    assert len([m for m in chat.got if m.incident == inc2 and m.event == "escalation"]) == 1


async def test_shadow_mode_runs_the_chain_and_sends_nothing(rig: Rig, chat: Scripted) -> None:
    rig.db.write_sync(set_shadow(rig.tenant, True, "test"))
    inc = _open(rig, rig.service_id)  # type: ignore[attr-defined]
    await rig.gateway.notify(Message(rig.tenant, inc, "detected", "P1", "checkout: latency"))
    await _advance(rig, 10_000)
    assert chat.got == []
    steps = _steps(rig)
    assert [(d["step"], d["shadow"]) for d in steps] == [(1, True), (2, True)]
    assert {r.state for r in rig.rows()} == {"suppressed"}
    from alertengine.notify.shadow_report import shadow_report
    report = shadow_report(rig.db.read_conn(), rig.tenant)
    would = [w for i in report["incidents"] for w in i["would_have"] if w["what"] == "escalation"]
    assert [(w["step"], w["told"]) for w in would] == [(1, ["primary:Ada (telegram)"]),
                                                      (2, ["secondary:Grace (telegram)"])]


async def test_a_recovery_that_did_not_work_starts_the_chain_again(rig: Rig, chat: Scripted) -> None:
    inc = _open(rig, rig.service_id)  # type: ignore[attr-defined]
    await rig.gateway.notify(Message(rig.tenant, inc, "detected", "P1", "checkout: latency"))
    await _advance(rig, 10_000)
    assert len(_steps(rig)) == 2
    await rig.gateway.notify(Message(rig.tenant, inc, "not_recovered", "P1", "still failing"))
    await _advance(rig, 10_000 + 180)
    assert [d["step"] for d in _steps(rig)] == [1, 2, 1]
    started = [d for k, d in rig.ledger("escalation.started")]
    assert len(started) == 2


def test_chains_in_the_routing_document_are_checked() -> None:
    from alertengine.errors import FieldError
    from alertengine.notify.routes import parse_routing
    for text, field in [
        ('[escalation.x]\nsteps = [{ after = 60.0, receivers = ["nobody"] }]\n', "escalation.x.steps[0].receivers[0]"),
        ('[escalation.x]\nsteps = [{ after = 60.0, receivers = ["responders"] }, '
         '{ after = 30.0, receivers = ["responders"] }]\n', "escalation.x.steps[1].after"),
        ('[escalation.x]\nsteps = []\n', "escalation.x.steps"),
        ('[[route]]\nname = "r"\nreceivers = ["responders"]\nescalation = "missing"\n', "route[0].escalation"),
        ('[defaults]\nescalation = "missing"\n', "defaults.escalation"),
        ('[escalation.none]\nsteps = [{ after = 1.0, receivers = ["responders"] }]\n', "escalation.none"),
    ]:
        with pytest.raises(FieldError) as caught:
            parse_routing(text)
        assert caught.value.field == field, (text, caught.value)
    ok = parse_routing('[defaults]\nescalation = "none"\n')
    assert ok.chain_for(None) is None
    assert json.dumps(parse_routing("").chain_for(None).steps[0].receivers) == '["responders"]'


async def test_a_service_may_name_its_own_chain(rig: Rig, config: Config) -> None:
    rig.routing('[[route]]\nname = "all"\nreceivers = ["responders"]\n'
                '[escalation.fast]\nsteps = [{ after = 30.0, receivers = ["responders:secondary"] }]\n')
    spec = normalise({"name": "checkout", "health_url": "http://127.0.0.1:9/health", "escalation": "fast",
                      "contacts": {"primary": {"name": "Ada", "telegram_chat_id": PRIMARY},
                                   "secondary": {"name": "Grace", "telegram_chat_id": SECONDARY}}},
                     config.url_policy)
    svc, _ = rig.db.write_sync(create_service(rig.tenant, "checkout", spec, rig.vault, "test"))
    chat = Scripted("telegram", [OK])
    rig.channels = {"telegram": chat}
    rig.build()
    inc = _open(rig, svc.id)
    await rig.gateway.notify(Message(rig.tenant, inc, "detected", "P1", "checkout: latency"))
    await _advance(rig, 1000)
    assert [(d["chain"], d["step"]) for d in _steps(rig)] == [("fast", 1)]
    assert [r for r, e in _told(chat) if e == "escalation"] == ["secondary:Grace"]
