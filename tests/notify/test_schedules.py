"""On-call schedules: who is on call at T, checked against hand-worked tables — weekly and daily
rotations with a local hand-off time across daylight saving changes, layers with restrictions,
overrides; the iCalendar feed; a schedule as a receiver; the API."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest

from alertengine.errors import FieldError
from alertengine.notify import schedules
from alertengine.notify.gateway import Message
from alertengine.notify.people import normalise_person, put_person
from tests.notify.rig import OK, Rig, Scripted
from tests.web.conftest import World, world  # noqa: F401  (fixture)


def utc(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(timezone.utc)


WEEKLY_BERLIN = {"name": "Checkout primary", "time_zone": "Europe/Berlin",
                 "layers": [{"name": "weekly", "start": "2027-03-01T09:00", "length": "weekly",
                             "members": ["ada", "bob", "cy"]}]}


@pytest.mark.parametrize("at,person", [
    ("2027-03-01T07:59:00Z", None),     # 08:59 CET: before the first hand-off
    ("2027-03-01T08:00:00Z", "ada"),    # 09:00 CET, Monday: Ada's week begins
    ("2027-03-08T07:59:00Z", "ada"),    # the next Monday 08:59 CET
    ("2027-03-08T08:00:00Z", "bob"),    # 09:00 CET: Bob
    ("2027-03-22T07:59:00Z", "cy"),     # Cy's week, before the hand-off
    # Europe/Berlin springs forward on 2027-03-28: the hand-off stays at 09:00 local, now 07:00 UTC
    ("2027-03-29T06:59:00Z", "ada"),    # Monday 08:59 CEST: still Ada (her week began 2027-03-22 09:00 CET)
    ("2027-03-29T07:00:00Z", "bob"),    # Monday 09:00 CEST
    ("2027-04-05T07:00:00Z", "cy"),
    ("2027-04-12T07:00:00Z", "ada"),    # round and round
])
def test_a_weekly_rotation_hands_off_at_nine_local_across_dst(at: str, person: str | None) -> None:
    s = schedules.build("t", "primary", WEEKLY_BERLIN)
    assert s.on_call(utc(at))[0] == person


@pytest.mark.parametrize("at,person", [
    # America/New_York falls back on 2027-11-07: the 18:00 hand-off stays at 18:00 local
    # shifts from 2027-11-01 18:00: ben, ann, ben, ann, ben (Nov 5), ann (Nov 6 18:00 EDT to Nov 7 18:00 EST)
    ("2027-11-06T21:59:00Z", "ben"),    # 17:59 EDT
    ("2027-11-06T22:00:00Z", "ann"),    # 18:00 EDT
    ("2027-11-07T22:59:00Z", "ann"),    # 17:59 EST: Ann's shift ran 25 hours
    ("2027-11-07T23:00:00Z", "ben"),    # 18:00 EST
])
def test_a_daily_rotation_across_the_fall_back(at: str, person: str) -> None:
    s = schedules.build("t", "nights", {"name": "N", "time_zone": "America/New_York",
                                        "layers": [{"start": "2027-11-01T18:00", "length": "daily",
                                                    "members": ["ben", "ann"]}]})
    assert s.on_call(utc(at))[0] == person


def test_layers_restrictions_and_overrides() -> None:
    doc = {"name": "Follow the sun", "time_zone": "UTC", "layers": [
        {"name": "base", "start": "2027-01-04T00:00", "length": 12, "members": ["ada", "bob"]},
        {"name": "weekend", "start": "2027-01-02T00:00", "length": "weekly", "members": ["cy"],
         "restrict": [{"weekdays": ["saturday", "sunday"]}]}]}
    s = schedules.build("t", "fts", doc)
    assert s.on_call(utc("2027-01-04T11:59:00Z")) == ("ada", "layer base")
    assert s.on_call(utc("2027-01-04T12:00:00Z")) == ("bob", "layer base")       # 12-hour shifts
    assert s.on_call(utc("2027-01-09T10:00:00Z")) == ("cy", "layer weekend")     # Saturday: the higher layer
    assert s.on_call(utc("2027-01-11T10:00:00Z")) == ("ada", "layer base")       # Monday again
    override = schedules.Override("ovr_1", "dee", utc("2027-01-09T08:00:00Z"), utc("2027-01-09T20:00:00Z"), "x")
    s2 = schedules.Schedule(s.tenant, s.id, s.name, s.time_zone, s.layers, s.doc, (override,))
    assert s2.on_call(utc("2027-01-09T10:00:00Z")) == ("dee", "override ovr_1")
    assert s2.on_call(utc("2027-01-09T20:00:00Z")) == ("cy", "layer weekend")
    spans = s2.shifts(utc("2027-01-08T00:00:00Z"), utc("2027-01-10T00:00:00Z"))
    assert [(a.strftime("%d %H"), b.strftime("%d %H"), p) for a, b, p in spans] == [
        ("08 00", "08 12", "ada"), ("08 12", "09 00", "bob"), ("09 00", "09 08", "cy"),
        ("09 08", "09 20", "dee"), ("09 20", "10 00", "cy")]


@pytest.mark.parametrize("doc,field", [
    ({"name": "x", "time_zone": "Mars/Base", "layers": [{"start": "2027-01-01T09:00", "length": "daily",
                                                          "members": ["a"]}]}, "time_zone"),
    ({"name": "x", "time_zone": "UTC", "layers": [{"start": "2027-01-01T09:00+01:00", "length": "daily",
                                                    "members": ["a"]}]}, "layers[0].start"),
    ({"name": "x", "time_zone": "UTC", "layers": [{"start": "soon", "length": "daily", "members": ["a"]}]},
     "layers[0].start"),
    ({"name": "x", "time_zone": "UTC", "layers": [{"start": "2027-01-01T09:00", "length": "monthly",
                                                    "members": ["a"]}]}, "layers[0].length"),
    ({"name": "x", "time_zone": "UTC", "layers": [{"start": "2027-01-01T09:00", "length": 0.5,
                                                    "members": ["a"]}]}, "layers[0].length"),
    ({"name": "x", "time_zone": "UTC", "layers": [{"start": "2027-01-01T09:00", "length": "daily",
                                                    "members": []}]}, "layers[0].members"),
    ({"name": "x", "time_zone": "UTC", "layers": []}, "layers"),
    ({"name": "x", "time_zone": "UTC", "layers": [{"start": "9999-12-31T09:00", "length": "daily",
                                                    "members": ["a"]}]}, "layers[0].start"),
    ({"name": "x", "time_zone": "UTC", "layers": [{"start": "0001-01-01T09:00", "length": "daily",
                                                    "members": ["a"]}]}, "layers[0].start"),
])
def test_bad_schedules_are_refused_naming_the_field(doc: dict, field: str) -> None:
    with pytest.raises(FieldError) as caught:
        schedules.build("t", "x", doc)
    assert caught.value.field == field


def test_the_icalendar_feed() -> None:
    s = schedules.build("t", "primary", WEEKLY_BERLIN)
    text = schedules.ical(s, {"ada": "Ada Lovelace", "bob": "Bob, the builder; on call"}, utc("2027-03-01T00:00:00Z"),
                          14)
    assert text.startswith("BEGIN:VCALENDAR\r\nVERSION:2.0\r\n") and text.endswith("END:VCALENDAR\r\n")
    events = text.split("BEGIN:VEVENT\r\n")[1:]
    assert len(events) == 2        # Ada's week and Bob's; Cy's begins after the 14 days (Mar 15 08:00 UTC)
    assert "DTSTART:20270301T080000Z\r\nDTEND:20270308T080000Z\r\n" in events[0]
    assert "SUMMARY:On call (Checkout primary): Ada Lovelace\r\n" in events[0]
    assert "SUMMARY:On call (Checkout primary): Bob\\, the builder\\; on call\r\n" in events[1]
    assert all(len(line.encode()) <= 75 for line in text.split("\r\n"))


async def test_a_schedule_is_a_receiver_whoever_is_on_call(rig: Rig) -> None:
    for pid, chat in (("ada", "1"), ("bob", "2")):
        rig.db.write_sync(put_person(normalise_person(rig.tenant, pid, {"name": pid.title(),
                                                                        "addresses": {"telegram": chat}}), "test"))
    rig.db.write_sync(schedules.put_schedule(schedules.build(rig.tenant, "primary", {
        "name": "P", "time_zone": "UTC", "layers": [{"start": "2027-01-11T00:00", "length": "daily",
                                                      "members": ["ada", "bob"]}]}), "test"))
    rig.routing('[[route]]\nname = "oncall"\nreceivers = ["schedule:primary"]\n')
    chat = Scripted("telegram", [OK])
    rig.channels = {"telegram": chat}
    rig.build()
    rig.clock.now = utc("2027-01-15T10:00:00Z").timestamp()      # day 4: bob (0 ada, 1 bob, 2 ada, 3 bob, 4 ada)
    await rig.gateway.notify(Message(rig.tenant, "INC-1", "detected", "P1", "down"))
    rig.clock.now = utc("2027-01-16T10:00:00Z").timestamp()
    await rig.gateway.notify(Message(rig.tenant, "INC-2", "detected", "P1", "down"))
    assert [m.recipient for m in chat.got] == ["person:ada", "person:bob"]


async def test_the_schedule_api(world: World) -> None:  # noqa: F811
    t, auth = world.tenants["a"], world.auth(world.keys[("a", "admin")])
    for pid in ("ada", "bob"):
        await world.client.put(f"/api/tenants/{t}/people/{pid}", headers=auth, json={"name": pid.title()})
    made = await world.client.put(f"/api/tenants/{t}/schedules/primary", headers=auth, json={
        "name": "Primary", "time_zone": "Europe/Berlin",
        "layers": [{"start": "2027-03-01T09:00", "length": "weekly", "members": ["ada", "bob"]}]})
    assert made.status_code == 200, made.text
    unknown = await world.client.put(f"/api/tenants/{t}/schedules/other", headers=auth, json={
        "name": "x", "time_zone": "UTC", "layers": [{"start": "2027-03-01T09:00", "length": "daily",
                                                      "members": ["nobody"]}]})
    assert unknown.status_code == 422 and unknown.json()["error"]["field"] == "layers[0].members[0]"
    who = await world.client.get(f"/api/tenants/{t}/schedules/primary/oncall", headers=auth,
                                 params={"at": "2027-03-09T12:00:00Z"})
    assert who.json() == {"schedule": "primary", "at": "2027-03-09T12:00:00Z", "person": "bob", "why": "layer 1"}
    override = await world.client.post(f"/api/tenants/{t}/schedules/primary/overrides", headers=auth, json={
        "person": "ada", "starts_at": "2027-03-09T00:00:00Z", "ends_at": "2027-03-10T00:00:00Z"})
    assert override.status_code == 201
    who = await world.client.get(f"/api/tenants/{t}/schedules/primary/oncall", headers=auth,
                                 params={"at": "2027-03-09T12:00:00Z"})
    assert who.json()["person"] == "ada" and who.json()["why"] == f"override {override.json()['id']}"
    bad = await world.client.post(f"/api/tenants/{t}/schedules/primary/overrides", headers=auth, json={
        "person": "ada", "starts_at": "2027-03-10T00:00:00Z", "ends_at": "2027-03-09T00:00:00Z"})
    assert bad.status_code == 422 and bad.json()["error"]["field"] == "ends_at"
    for when in ("9999-12-31T23:00:00Z", "0001-01-01T00:00:00Z"):
        far = await world.client.get(f"/api/tenants/{t}/schedules/primary/oncall", headers=auth, params={"at": when})
        assert far.status_code == 422 and far.json()["error"]["field"] == "at", far.text
    feed = await world.client.get(f"/api/tenants/{t}/schedules/primary/calendar.ics", headers=auth,
                                  params={"days": 7})
    assert feed.status_code == 200 and feed.headers["content-type"].startswith("text/calendar")
    assert feed.text.startswith("BEGIN:VCALENDAR")
    kinds = [k for (k,) in world.db.read_conn().execute("SELECT kind FROM ledger WHERE kind LIKE 'schedule.%'")]
    assert kinds == ["schedule.created", "schedule.override_added"]
    gone = await world.client.delete(f"/api/tenants/{t}/schedules/primary/overrides/{override.json()['id']}",
                                     headers=auth)
    assert gone.status_code == 200
    viewer = world.auth(world.keys[("a", "viewer")])
    assert (await world.client.put(f"/api/tenants/{t}/schedules/x", headers=viewer, json={})).status_code == 403
