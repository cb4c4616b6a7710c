"""The notify API as a user drives it: people, teams, routes (with the dry run and stats), silences
and the outbox. Bad input is a 4xx naming the field and stores nothing; other tenants see nothing."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any

import pytest

from tests.web.conftest import World


def _auth(world: World, tenant: str = "a", role: str = "admin") -> tuple[str, dict[str, str]]:
    return world.tenants[tenant], world.auth(world.keys[(tenant, role)])


def _in(hours: float) -> str:
    return (datetime.now(timezone.utc) + timedelta(hours=hours)).strftime("%Y-%m-%dT%H:%M:%SZ")


def _ledger(world: World, tenant: str, kind: str) -> int:
    return world.db.read_conn().execute("SELECT count(*) FROM ledger WHERE tenant = ? AND kind = ?",
                                        (tenant, kind)).fetchone()[0]


async def test_people_and_teams_round_trip_and_are_ledgered_without_addresses(world: World) -> None:
    t, auth = _auth(world)
    ada = await world.client.put(f"/api/tenants/{t}/people/ada", headers=auth, json={
        "name": "Ada", "time_zone": "Europe/Berlin", "addresses": {"telegram": "5550001", "voice": "+4915112345678"},
        "quiet_hours": {"start": "22:00", "end": "07:00", "suppress_below": "high"}})
    assert ada.status_code == 200, ada.text
    assert ada.json()["channels"] == ["telegram", "voice"]       # every address, in the default order
    team = await world.client.put(f"/api/tenants/{t}/teams/oncall", headers=auth,
                                  json={"name": "On-call", "members": ["ada"]})
    assert team.status_code == 200 and team.json()["members"] == ["ada"]
    listed = (await world.client.get(f"/api/tenants/{t}/people", headers=auth)).json()["people"]
    assert [p["id"] for p in listed] == ["ada"]
    body = bytes(world.db.read_conn().execute("SELECT body FROM ledger WHERE kind = 'person.created'").fetchone()[0]
                 ).decode()
    assert "5550001" not in body and "+4915112345678" not in body and "hmac-sha256:" in body
    in_team = await world.client.delete(f"/api/tenants/{t}/people/ada", headers=auth)
    assert in_team.status_code == 409 and "oncall" in in_team.json()["error"]["message"]
    # another tenant's admin sees none of it
    other_t, other_auth = _auth(world, "b")
    assert (await world.client.get(f"/api/tenants/{other_t}/people/ada", headers=other_auth)).status_code == 404
    assert (await world.client.get(f"/api/tenants/{t}/people", headers=other_auth)).status_code == 403


@pytest.mark.parametrize("path,body,field", [
    ("people/ada", {"name": "Ada", "time_zone": "Mars/Olympus"}, "time_zone"),
    ("people/ada", {"name": "Ada", "time_zone": "localtime"}, "time_zone"),
    ("people/ada", {"name": "Ada", "addresses": {"telegram": "not-a-chat"}}, "addresses.telegram"),
    ("people/ada", {"name": "Ada", "addresses": {"telegram": "1"}, "channels": ["voice"]}, "channels"),
    ("people/ada", {"name": "Ada", "quiet_hours": {"start": "22:00", "end": "22:00"}}, "quiet_hours.end"),
    ("people/Ada!", {"name": "Ada"}, "person"),
    ("teams/oncall", {"name": "On-call", "members": []}, "members"),
    ("teams/oncall", {"name": "On-call", "members": ["nobody"]}, "members[0]"),
    ("teams/oncall", {"name": "On-call", "members": ["x", "x"]}, "members[1]"),
])
async def test_bad_people_and_teams_are_refused_naming_the_field(world: World, path: str, body: Any,
                                                                 field: str) -> None:
    t, auth = _auth(world)
    before = world.db.ledger_size
    reply = await world.client.put(f"/api/tenants/{t}/{path}", headers=auth, json=body)
    assert reply.status_code == 422, reply.text
    assert reply.json()["error"]["field"] == field
    assert world.db.ledger_size == before


async def test_routes_put_get_dry_run_and_bad_documents(world: World) -> None:
    t, auth = _auth(world)
    default = (await world.client.get(f"/api/tenants/{t}/routes", headers=auth)).json()
    assert [r["name"] for r in default["rules"]] == ["actions", "critical-all", "alert-low", "alert-medium", "default"]
    toml = ('[[route]]\nname = "pager"\nmatch = { severity = ["critical"] }\nreceivers = ["channel:file"]\n'
            '[defaults]\nreceivers = ["channel:jsonl"]\n')
    stored = await world.client.put(f"/api/tenants/{t}/routes", headers=auth, json={"toml": toml})
    assert stored.status_code == 200 and stored.json()["source"] == toml
    version = stored.json()["version"]
    assert version != default["version"] and _ledger(world, t, "routing.changed") == 1
    hit = (await world.client.post(f"/api/tenants/{t}/route/test", headers=auth,
                                   json={"severity": "critical", "message": "disk full"})).json()
    assert hit["matched"] == ["pager"] and hit["version"] == version
    assert [(d["recipient"], d["outcome"], d["channels"]) for d in hit["decisions"]] == [
        ("channel:file", "send", ["file"])]
    miss = (await world.client.post(f"/api/tenants/{t}/route/test", headers=auth, json={"severity": "low"})).json()
    assert [(d["recipient"], d["why"]) for d in miss["decisions"]] == [("fallback", "fallback: no rule matched")]
    assert world.db.read_conn().execute("SELECT count(*) FROM outbox").fetchone()[0] == 0   # a dry run stores nothing
    for body, field in [({"toml": "[[route]]\nname = 'x'\n"}, "route[0].receivers"),
                        ({"toml": "[[route]\n"}, ""),
                        ({"toml": '[[route]]\nname = "x"\nreceivers = ["pager:duty"]\n'}, "route[0].receivers[0]"),
                        ({"routing": {"route": [{"name": "x", "receivers": ["channel:file"],
                                                 "match": {"labels": ['a=~"("']}}]}}, "route[0].match.labels[0]"),
                        ({"toml": "", "routing": {}}, "")]:
        reply = await world.client.put(f"/api/tenants/{t}/routes", headers=auth, json=body)
        assert reply.status_code == 422, reply.text
        assert reply.json()["error"].get("field", "") == field, reply.text
    assert (await world.client.get(f"/api/tenants/{t}/routes", headers=auth)).json()["version"] == version
    viewer_t, viewer = _auth(world, "a", "viewer")
    assert (await world.client.put(f"/api/tenants/{t}/routes", headers=viewer, json={"toml": toml})).status_code == 403
    assert (await world.client.post(f"/api/tenants/{t}/route/test", headers=viewer, json={})).status_code == 200


async def test_silences_create_list_expire(world: World) -> None:
    t, auth = _auth(world, "a", "operator")               # on-call operators may silence
    made = await world.client.post(f"/api/tenants/{t}/silences", headers=auth, json={
        "matchers": ['service="batch"'], "ends_at": _in(2), "comment": "nightly batch window"})
    assert made.status_code == 201, made.text
    silence = made.json()
    assert silence["state"] == "active" and silence["matchers"] == ['service="batch"']
    assert silence["created_by"].startswith("apikey:")
    listed = (await world.client.get(f"/api/tenants/{t}/silences", headers=auth, params={"state": "active"})).json()
    assert [s["id"] for s in listed["silences"]] == [silence["id"]]
    gone = await world.client.delete(f"/api/tenants/{t}/silences/{silence['id']}", headers=auth)
    assert gone.status_code == 200 and gone.json()["state"] == "expired"
    again = await world.client.delete(f"/api/tenants/{t}/silences/{silence['id']}", headers=auth)
    assert again.status_code == 409
    assert _ledger(world, t, "silence.created") == 1 and _ledger(world, t, "silence.expired") == 1
    for body, field in [({"matchers": ['service=~".*"'], "ends_at": _in(1), "comment": "x"}, "matchers"),
                        ({"matchers": ['service="a"'], "ends_at": _in(-1), "comment": "x"}, "ends_at"),
                        ({"matchers": ['service="a"'], "ends_at": _in(24 * 400), "comment": "x"}, "ends_at"),
                        ({"matchers": ['service="a"'], "ends_at": "tomorrow", "comment": "x"}, "ends_at"),
                        ({"matchers": ['service="a"'], "comment": "x"}, "ends_at"),
                        ({"matchers": ["1abc=x"], "ends_at": _in(1), "comment": "x"}, "matchers[0]")]:
        reply = await world.client.post(f"/api/tenants/{t}/silences", headers=auth, json=body)
        assert reply.status_code == 422, (body, reply.text)
        assert reply.json()["error"]["field"] == field
    forced = await world.client.post(f"/api/tenants/{t}/silences", headers=auth, json={
        "matchers": ['service=~".*"'], "ends_at": _in(1), "comment": "everything, on purpose", "force": True})
    assert forced.status_code == 201
    viewer_t, viewer = _auth(world, "a", "viewer")
    refused = await world.client.post(f"/api/tenants/{t}/silences", headers=viewer, json={
        "matchers": ['service="a"'], "ends_at": _in(1), "comment": "x"})
    assert refused.status_code == 403


async def test_the_outbox_lists_and_a_dead_letter_is_sent_again(world: World) -> None:
    t, auth = _auth(world)

    def dead(tx):  # type: ignore[no-untyped-def]
        return tx.execute("INSERT INTO outbox (tenant, recipient, event, body, state, reason, next_at, deadline, "
                          "created, updated) VALUES (?, 'person:ada', 'detected', ?, 'dead', 'telegram: HTTP 502', "
                          "0, 0, 'x', 'x') RETURNING id", (t, '{"message": {"text": "checkout down"}, "chain": '
                                                             '[["telegram", "1"]]}')).fetchone()[0]
    row = await world.db.write(dead)
    letters = (await world.client.get(f"/api/tenants/{t}/notifications/dead", headers=auth)).json()["dead_letters"]
    assert [(d["id"], d["reason"], d["text"]) for d in letters] == [(row, "telegram: HTTP 502", "checkout down")]
    sent = await world.client.post(f"/api/tenants/{t}/notifications/{row}/retry", headers=auth)
    assert sent.status_code == 200 and sent.json()["state"] in ("queued", "sending", "dead", "delivered")
    assert _ledger(world, t, "notification.retried") == 1
    assert (await world.client.post(f"/api/tenants/{t}/notifications/{row}/retry", headers=auth)).status_code in (409,)
    assert (await world.client.post(f"/api/tenants/{t}/notifications/99999/retry", headers=auth)).status_code == 404
    assert (await world.client.post(f"/api/tenants/{t}/notifications/x1/retry", headers=auth)).status_code == 422
    other_t, other = _auth(world, "b")
    assert (await world.client.post(f"/api/tenants/{other_t}/notifications/{row}/retry",
                                    headers=other)).status_code == 404


async def test_the_alert_loop_dashboard_for_operators_and_admins_only(world: World) -> None:
    t, admin = _auth(world)
    _t, operator = _auth(world, "a", "operator")
    _t, viewer = _auth(world, "a", "viewer")
    from alertengine.incidents import engine
    opening = engine.Opening(t, "health:slo", "poller", "checkout down", "P1", None, "checkout", None,
                             "sha256:000000000000", "test", {})
    inc, _ = await world.db.write(engine.open_incident(opening))
    await world.db.write(engine.acknowledge(t, inc.id, "engineer:key:x"))

    def rows(tx):  # type: ignore[no-untyped-def]
        for state, created in (("delivered", "2999-01-01T00:00:00Z"), ("dead", "2999-01-01T00:00:00Z"),
                               ("queued", "2000-01-01T00:00:00Z")):
            tx.execute("INSERT INTO outbox (tenant, recipient, event, body, state, next_at, deadline, created, "
                       "updated) VALUES (?, 'person:x', 'detected', '{}', ?, 0, 0, ?, ?)", (t, state, created, created))
    await world.db.write(rows)
    reply = await world.client.get("/v1/alerts/dashboard", headers=operator, params={"window_minutes": 30})
    assert reply.status_code == 200, reply.text
    board = reply.json()
    assert board["tenant"] == t and board["window_minutes"] == 30 and board["incidents_opened"] == 1
    assert board["acknowledged"] == 1 and 0 <= board["ack_latency_p95_seconds"] < 60
    assert board["deliveries"] == {"delivered": 1, "dead": 1, "failed_rate": 0.5, "stuck": 1}
    assert [v["slo"] for v in board["violations"]] == ["failed_delivery_rate", "stuck_deliveries"]
    assert board["ok"] is False
    assert (await world.client.get("/v1/alerts/dashboard", headers=viewer)).status_code == 403
    assert (await world.client.get("/v1/alerts/dashboard", headers=admin)).status_code == 200
    root = world.auth(world.admin)
    assert (await world.client.get("/v1/alerts/dashboard", headers=root)).status_code == 400
    assert (await world.client.get("/v1/alerts/dashboard", headers=root, params={"tenant": t})).json()["tenant"] == t
    other = world.tenants["b"]
    assert (await world.client.get("/v1/alerts/dashboard", headers=operator,
                                   params={"tenant": other})).status_code == 400
    bad = await world.client.get("/v1/alerts/dashboard", headers=operator, params={"window_minutes": 0})
    assert bad.status_code == 422 and bad.json()["error"]["field"] == "window_minutes"
