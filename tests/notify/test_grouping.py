"""Grouping with Alertmanager's meaning, driven by a fake clock: a storm of incidents in a few
groups becomes one message per group with counts; group_wait, group_interval and repeat_interval;
decisions (proposals) are never grouped."""

from __future__ import annotations

from alertengine.incidents.engine import Opening, open_incident, transition
from alertengine.notify.gateway import Message
from tests.notify.rig import OK, START, Rig, Scripted

GROUPED = """
[defaults]
receivers = []
[[route]]
name = "team-chat"
receivers = ["channel:telegram"]
group_by = ["site"]
group_wait = 30.0
group_interval = 300.0
"""


async def drain(rig: Rig) -> None:
    """Run the sender until it has nothing more to do at this moment of the fake clock."""
    while await rig.sender.run_due():
        pass


def _incident(rig: Rig, n: int, site: str) -> str:
    opening = Opening(rig.tenant, f"alert:{n}", "alertmanager", f"disk full {n}", "P2", None, None, None,
                      "sha256:000000000000", "test", {"labels": {"site": site, "alertname": "DiskFull"}})
    inc, _ = rig.db.write_sync(open_incident(opening))
    return inc.id


async def test_a_storm_in_five_groups_becomes_five_messages_with_counts(rig: Rig) -> None:
    rig.routing(GROUPED)
    telegram = Scripted("telegram", [OK])
    rig.channels = {"telegram": telegram}
    rig.build()
    sites = ["a", "b", "c", "d", "e"]
    for n in range(200):                                       # 200 alerts in 20 s, 40 per site
        inc = _incident(rig, n, sites[n % 5])
        rig.clock.now = START + n * 0.1
        await rig.gateway.notify(Message(rig.tenant, inc, "detected", "P2", f"disk full {n}"))
    assert telegram.got == []                                  # group_wait: nothing yet
    rig.clock.now = START + 30.0                               # site a's group began at START
    await drain(rig)
    assert [m.data["group"] for m in telegram.got] == [{"site": "a"}]
    rig.clock.now = START + 30.4                               # e's began at START + 0.4
    await drain(rig)
    assert len(telegram.got) == 5
    firsts = sorted(m.text.splitlines()[0] for m in telegram.got)
    assert firsts == [f"40 notification(s) in group site={s}: 40 detected" for s in sites]
    assert all(m.event == "grouped" and m.priority == "P2" for m in telegram.got)
    states = [r.state for r in rig.rows()]
    assert states.count("delivered") == 5 and states.count("merged") == 195
    grouped = [d for k, d in rig.ledger("notification.grouped")]
    assert len(grouped) == 5 and sorted(len(d["merged"]) for d in grouped) == [39] * 5


async def test_later_changes_wait_for_group_interval_then_go_together(rig: Rig) -> None:
    rig.routing(GROUPED)
    telegram = Scripted("telegram", [OK])
    rig.channels = {"telegram": telegram}
    rig.build()
    first = _incident(rig, 1, "a")
    await rig.gateway.notify(Message(rig.tenant, first, "detected", "P2", "disk full 1"))
    rig.clock.now = START + 30
    await drain(rig)
    assert len(telegram.got) == 1
    rig.clock.now = START + 100                                  # changes within the interval
    rig.db.write_sync(transition(rig.tenant, first, "RESOLVED", "policy", reason="test"))
    await rig.gateway.notify(Message(rig.tenant, first, "resolved", "P2", "disk ok 1"))
    second = _incident(rig, 2, "a")
    await rig.gateway.notify(Message(rig.tenant, second, "detected", "P1", "disk full 2"))
    rig.clock.now = START + 329.9
    await drain(rig)
    assert len(telegram.got) == 1                                # not before last message + 300 s
    rig.clock.now = START + 330
    await drain(rig)
    assert len(telegram.got) == 2
    assert telegram.got[1].text.splitlines()[0] == "2 notification(s) in group site=a: 1 detected, 1 resolved"
    assert telegram.got[1].priority == "P1"                      # the worst in the group


async def test_repeat_interval_tells_again_while_incidents_are_open(rig: Rig) -> None:
    rig.routing(GROUPED.replace("group_interval = 300.0", "group_interval = 300.0\nrepeat_interval = 3600.0"))
    telegram = Scripted("telegram", [OK])
    rig.channels = {"telegram": telegram}
    rig.build()
    inc = _incident(rig, 1, "a")
    await rig.gateway.notify(Message(rig.tenant, inc, "detected", "P2", "disk full 1"))
    rig.clock.now = START + 30
    await drain(rig)
    rig.clock.now = START + 30 + 3600
    await drain(rig)
    assert [m.text for m in telegram.got][1] == "Still open in group site=a: 1 incident(s)"
    rig.db.write_sync(transition(rig.tenant, inc, "RESOLVED", "policy", reason="test"))
    rig.clock.now = START + 30 + 7200
    await drain(rig)
    assert len(telegram.got) == 2                                # closed: no more repeats, the group is gone
    assert rig.db.read_conn().execute("SELECT count(*) FROM notify_groups").fetchone()[0] == 0


async def test_proposals_are_never_grouped(rig: Rig) -> None:
    rig.routing(GROUPED)
    telegram = Scripted("telegram", [OK])
    rig.channels = {"telegram": telegram}
    rig.build()
    inc = _incident(rig, 1, "a")
    await rig.gateway.notify(Message(rig.tenant, inc, "proposed", "P2", "restart?", buttons=[[("Approve", "ap:x:y")]]))
    assert [m.event for m in telegram.got] == ["proposed"]       # at once, with its buttons
    assert telegram.got[0].buttons == [[("Approve", "ap:x:y")]]


async def test_without_group_by_nothing_waits(rig: Rig) -> None:
    rig.routing(GROUPED.replace('group_by = ["site"]\n', "").replace("group_wait = 30.0\n", "")
                .replace("group_interval = 300.0\n", ""))
    telegram = Scripted("telegram", [OK])
    rig.channels = {"telegram": telegram}
    rig.build()
    for n in range(3):
        await rig.gateway.notify(Message(rig.tenant, _incident(rig, n, "a"), "detected", "P2", f"d{n}"))
    assert [m.text for m in telegram.got] == ["d0", "d1", "d2"]
    assert rig.db.read_conn().execute("SELECT count(*) FROM notify_groups").fetchone()[0] == 0


async def test_a_storms_escalation_pages_are_grouped_too(rig: Rig) -> None:
    rig.routing(GROUPED + '\n[escalation.default]\nsteps = [{ after = 120.0, receivers = ["channel:telegram"] }]\n')
    telegram = Scripted("telegram", [OK])
    rig.channels = {"telegram": telegram}
    rig.build()
    for n in range(60):                                       # 60 incidents in 3 sites, nobody answers
        await rig.gateway.notify(Message(rig.tenant, _incident(rig, n, "abc"[n % 3]), "detected", "P2", f"d{n}"))
    rig.clock.now = START + 30
    await drain(rig)
    assert len(telegram.got) == 3                             # one message per site
    rig.clock.now = START + 120                               # every chain's step comes due
    await drain(rig)
    rig.clock.now = START + 330                               # the groups' next message (group_interval)
    await drain(rig)
    pages = [m for m in telegram.got[3:]]
    assert len(pages) == 3 and all(m.event == "grouped" for m in pages)
    assert sorted(m.text.splitlines()[0] for m in pages) == [
        f"20 notification(s) in group site={s}: 20 escalation" for s in "abc"]
    assert len([d for k, d in rig.ledger("escalation.step")]) == 60   # every step still ledgered
