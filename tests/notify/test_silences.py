"""Silences and maintenance windows: what may be created, listing, expiring, their state by time,
recurring windows, and end to end with captured Alertmanager payloads: policy still opens the
incidents while the matching notifications are stored as suppressed, and every silence change is
ledgered in a chain that still verifies.

Every expectation is written here. Time is given explicitly (or a fake clock); nothing sleeps."""

from __future__ import annotations

import copy
import json
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from alertengine.appliance import DataDir
from alertengine.config import Config
from alertengine.errors import ConflictError, FieldError, NotFoundError
from alertengine.incidents import engine
from alertengine.incidents.detection import Detector, service_ref
from alertengine.store import verify_store
from alertengine.notify import router
from alertengine.notify.channels.base import Delivery
from alertengine.notify.channels.settings import put_channel
from alertengine.notify.gateway import Gateway, Message
from alertengine.notify.routes import RouteEvent, parse_routing
from alertengine.notify.sender import OutboxSender
from alertengine.notify.silences import (
    MAX_LENGTH,
    Silence,
    active_silences,
    create_silence,
    expire_silence,
    get_silence,
    list_silences,
    normalise,
)
from alertengine.signals.ingest.alertmanager import parse_alertmanager
from alertengine.store import Database
from alertengine.tenancy.tenants import create_tenant, set_shadow
from alertengine.tenancy.vault import SecretVault

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "alertmanager"
NOW = datetime(2027, 1, 15, 8, 0, tzinfo=timezone.utc)          # a Friday
BOT = "123456:" + "A" * 35


def iso(at: datetime) -> str:
    return at.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def body(**kw: Any) -> dict[str, Any]:
    out: dict[str, Any] = {"matchers": ['service="checkout"'], "ends_at": iso(NOW + timedelta(hours=2)),
                           "comment": "deploying checkout"}
    out.update(kw)
    return {k: v for k, v in out.items() if v is not None}


@pytest.fixture
def tenant(db: Database) -> str:
    return db.write_sync(create_tenant("acme", "test")).id


def kinds(db: Database, tenant: str, prefix: str = "silence.") -> list[tuple[str, dict[str, Any], str]]:
    return [(k, json.loads(b)["data"], json.loads(b)["actor"]) for k, b in db.read_conn().execute(
        "SELECT kind, body FROM ledger WHERE tenant = ? AND kind LIKE ? ORDER BY seq", (tenant, prefix + "%"))]


def assert_ledger_verifies(db: Database) -> dict[str, Any]:
    db.checkpoint_sync("test")
    result = verify_store(db.path, db.signer.verifier).as_dict()
    assert result["status"] == "ok", result
    return result


# =========================================================================================
# 1. creating: what is refused, naming the field
# =========================================================================================

H = timedelta(hours=1)
D = timedelta(days=1)


@pytest.mark.parametrize("given,field", [
    (dict(ends_at=None), "ends_at"),                                              # the end is required
    (dict(matchers=None), "matchers"),
    (dict(comment=None), "comment"),
    (dict(comment=""), "comment"),
    (dict(comment="x" * 1001), "comment"),
    (dict(colour="red"), "colour"),
    (dict(ends_at=iso(NOW - H)), "ends_at"),                                      # in the past
    (dict(ends_at=iso(NOW)), "ends_at"),                                          # not after now
    (dict(starts_at=iso(NOW + 3 * H), ends_at=iso(NOW + 2 * H)), "ends_at"),      # before its start
    (dict(starts_at=iso(NOW + 2 * H), ends_at=iso(NOW + 2 * H)), "ends_at"),      # equal to its start
    (dict(starts_at=iso(NOW - 2 * H), ends_at=iso(NOW - H)), "ends_at"),          # all in the past
    (dict(ends_at=iso(NOW + 366 * D + timedelta(seconds=1))), "ends_at"),         # over 366 days
    (dict(starts_at=iso(NOW + 10 * D), ends_at=iso(NOW + 377 * D)), "ends_at"),
    (dict(starts_at=iso(NOW - 10 * D), ends_at=iso(NOW + 357 * D)), "ends_at"),   # counted from the start
    (dict(ends_at="2027-01-15T10:00:00"), "ends_at"),                             # no offset
    (dict(ends_at="tomorrow"), "ends_at"),
    (dict(ends_at="2027-02-30T10:00:00Z"), "ends_at"),
    (dict(ends_at="2027-01-15T10:00:00Z\n"), "ends_at"),
    (dict(ends_at=1800007200), "ends_at"),
    (dict(ends_at="x" * 41), "ends_at"),
    (dict(starts_at="soon"), "starts_at"),
    (dict(starts_at="2027-01-15T10:00:00"), "starts_at"),
    (dict(matchers=[]), "matchers"),
    (dict(matchers=""), "matchers"),
    (dict(matchers={}), "matchers"),
    (dict(matchers=["service=\"checkout\"", "team==\"db\""]), "matchers[1]"),
    (dict(matchers=['env=~"("']), "matchers[0]"),
    (dict(matchers=42), "matchers"),
    (dict(matchers={"service": 1}), "matchers.service"),
    # matchers that match every incident are refused unless forced
    (dict(matchers=['service=~".*"']), "matchers"),
    (dict(matchers=['service!="checkout"']), "matchers"),
    (dict(matchers=['service=""']), "matchers"),
    (dict(matchers=['service=~"checkout|"']), "matchers"),
    (dict(matchers=['service!~"checkout"']), "matchers"),
    (dict(matchers=['service=~".*"', 'team!="db"']), "matchers"),
    (dict(matchers='{service=~".*"}'), "matchers"),
    (dict(matchers=['service=~".*"'], force=False), "matchers"),
    (dict(force="yes"), "force"),
    (dict(windows={"weekdays": ["saturday"]}), "windows"),
    (dict(windows=[{"weekdays": ["funday"]}]), "windows[0].weekdays[0]"),
    (dict(windows=[{"times": [{"start_time": "04:00", "end_time": "02:00"}]}]), "windows[0].times[0].end_time"),
    (dict(windows=[{"location": "Mars/Olympus"}]), "windows[0].location"),
    (dict(windows=[{}, {"colour": "x"}]), "windows[1].colour"),
])
def test_a_bad_silence_is_refused_naming_the_field(given: dict[str, Any], field: str) -> None:
    tenant = "t_acme"                                  # normalise reads no database
    with pytest.raises(FieldError) as err:
        normalise(tenant, body(**given), "apikey:ops", NOW)
    assert err.value.field == field, err.value


@pytest.mark.parametrize("given,starts,ends", [
    (dict(), NOW, NOW + 2 * H),                                                   # starts now by default
    (dict(starts_at=iso(NOW + H)), NOW + H, NOW + 2 * H),
    (dict(starts_at=iso(NOW - D)), NOW - D, NOW + 2 * H),                         # begun already: fine
    (dict(ends_at=iso(NOW + 366 * D)), NOW, NOW + 366 * D),                       # exactly 366 days
    (dict(starts_at=iso(NOW + 5 * D), ends_at=iso(NOW + 371 * D)), NOW + 5 * D, NOW + 371 * D),
    (dict(ends_at="2027-01-15T10:00:00+01:00"), NOW, NOW + H),                    # offsets are read
    (dict(ends_at="2027-01-15T04:00:00-05:00"), NOW, NOW + H),
    (dict(ends_at="2027-01-15T09:00:00z"), NOW, NOW + H),
    (dict(matchers=['service=~".*"'], force=True), NOW, NOW + 2 * H),             # forced
    (dict(matchers=['service=~".*"', 'team="db"']), NOW, NOW + 2 * H),            # one selective matcher
    (dict(matchers={"service": "checkout"}), NOW, NOW + 2 * H),
    (dict(matchers='{service="checkout", instance=~"10\\\\.0\\\\..*"}'), NOW, NOW + 2 * H),
])
def test_a_good_silence(given: dict[str, Any], starts: datetime, ends: datetime) -> None:
    tenant = "t_acme"
    s = normalise(tenant, body(**given), "apikey:ops", NOW)
    assert (s.starts_at, s.ends_at, s.created_by, s.tenant) == (starts, ends, "apikey:ops", tenant)
    assert s.id.startswith("sil_") and len(s.id) == 16
    assert MAX_LENGTH == 366 * 86_400


def test_silence_ids_differ() -> None:
    tenant = "t_acme"
    assert len({normalise(tenant, body(), "x", NOW).id for _ in range(50)}) == 50


@pytest.mark.parametrize("ends_at", [
    "9999-12-31T23:59:59-01:00",            # past the largest datetime once in UTC
    "0001-01-01T00:00:00+01:00",            # before the smallest one
])
def test_a_time_out_of_range_in_utc_is_a_field_error(ends_at: str) -> None:
    tenant = "t_acme"
    with pytest.raises(FieldError) as err:
        normalise(tenant, body(ends_at=ends_at), "apikey:ops", NOW)
    assert err.value.field == "ends_at"


def test_a_comment_with_a_lone_surrogate_is_a_field_error_or_stored(db: Database, tenant: str) -> None:
    now = datetime.now(timezone.utc)
    try:
        s = normalise(tenant, body(comment="maintenance \ud800", ends_at=iso(now + H)), "apikey:ops", now)
    except FieldError as exc:
        assert exc.field == "comment"
        return
    db.write_sync(create_silence(s))
    assert get_silence(db.read_conn(), tenant, s.id).comment == "maintenance \ud800"


# =========================================================================================
# 2. storing, listing, state by time, expiring
# =========================================================================================

def make(db: Database, tenant: str, now: datetime = NOW, **given: Any) -> Silence:
    return db.write_sync(create_silence(normalise(tenant, body(**given), "apikey:ops", now)))


def test_a_created_silence_is_stored_and_ledgered(db: Database, tenant: str) -> None:
    s = make(db, tenant, matchers=['service="checkout"', 'instance=~"10\\\\.0\\\\.0\\\\.5:.*"'],
             starts_at=iso(NOW + H), ends_at=iso(NOW + 3 * H),
             windows=[{"weekdays": ["saturday"], "location": "Europe/Berlin"}])
    stored = get_silence(db.read_conn(), tenant, s.id)
    assert stored.public(NOW) == {
        "id": s.id, "matchers": ['service="checkout"', 'instance=~"10\\\\.0\\\\.0\\\\.5:.*"'],
        "starts_at": "2027-01-15T09:00:00Z", "ends_at": "2027-01-15T11:00:00Z", "created_by": "apikey:ops",
        "comment": "deploying checkout", "windows": [{"weekdays": ["saturday"], "location": "Europe/Berlin"}],
        "state": "pending", "expired_at": None}
    [(kind, data, actor)] = kinds(db, tenant)
    assert (kind, actor) == ("silence.created", "apikey:ops")
    assert data == {"silence": s.id, "matchers": [{"name": "service", "op": "=", "value": "checkout"},
                                                  {"name": "instance", "op": "=~", "value": "10\\.0\\.0\\.5:.*"}],
                    "starts_at": "2027-01-15T09:00:00Z", "ends_at": "2027-01-15T11:00:00Z",
                    "comment": "deploying checkout",
                    "windows": [{"weekdays": ["saturday"], "location": "Europe/Berlin"}]}


def test_a_silence_for_an_unknown_tenant_is_not_stored(db: Database) -> None:
    with pytest.raises(NotFoundError):
        db.write_sync(create_silence(normalise("nobody", body(), "x", NOW)))


@pytest.mark.parametrize("offset,state,active", [
    (timedelta(0), "pending", False),
    (H - timedelta(seconds=1), "pending", False),
    (H, "active", True),                                   # the start is inside
    (2 * H, "active", True),
    (3 * H - timedelta(seconds=1), "active", True),
    (3 * H, "expired", False),                             # the end is not
    (30 * D, "expired", False),
])
def test_state_by_time(db: Database, tenant: str, offset: timedelta, state: str, active: bool) -> None:
    s = make(db, tenant, starts_at=iso(NOW + H), ends_at=iso(NOW + 3 * H))
    at = NOW + offset
    stored = get_silence(db.read_conn(), tenant, s.id)
    assert stored.state(at) == state and s.state(at) == state
    assert stored.public(at)["state"] == state
    assert [x.id for x in active_silences(db.read_conn(), tenant, at)] == ([s.id] if active else [])


def test_listing_newest_start_first_and_without_expired_ones(db: Database, tenant: str) -> None:
    a = make(db, tenant, starts_at=iso(NOW - 2 * H), ends_at=iso(NOW + H), comment="a")
    b = make(db, tenant, starts_at=iso(NOW + 2 * H), ends_at=iso(NOW + 4 * H), comment="b")
    c = make(db, tenant, starts_at=iso(NOW - H), ends_at=iso(NOW + 2 * H), comment="c")
    other = db.write_sync(create_tenant("other", "test")).id
    make(db, other, comment="not acme's")
    conn = db.read_conn()
    assert [s.comment for s in list_silences(conn, tenant, at=NOW)] == ["b", "c", "a"]
    at = NOW + H + timedelta(minutes=1)                     # a has ended by then
    assert [s.comment for s in list_silences(conn, tenant, include_expired=False, at=at)] == ["b", "c"]
    assert [(s.comment, s.state(at)) for s in list_silences(conn, tenant, at=at)] == \
        [("b", "pending"), ("c", "active"), ("a", "expired")]
    assert {s.id for s in active_silences(conn, tenant, at)} == {c.id}
    assert {s.id for s in active_silences(conn, tenant, NOW)} == {a.id, c.id}
    assert b.id not in {s.id for s in active_silences(conn, other, NOW + 3 * H)}


def test_expiring_ends_it_at_once_and_twice_is_a_conflict(db: Database, tenant: str) -> None:
    now = datetime.now(timezone.utc)
    s = make(db, tenant, now=now, ends_at=iso(now + 2 * H))
    keep = make(db, tenant, now=now, ends_at=iso(now + 2 * H), comment="keep")
    assert {x.id for x in active_silences(db.read_conn(), tenant, now + timedelta(seconds=1))} == {s.id, keep.id}
    expired = db.write_sync(expire_silence(tenant, s.id, "apikey:ops"))
    assert expired.expired_at is not None and expired.state(now) == "expired"
    stored = get_silence(db.read_conn(), tenant, s.id)
    assert stored.expired_at == expired.expired_at
    assert stored.public(now)["state"] == "expired" and stored.public(now)["expired_at"] == expired.expired_at
    assert [x.id for x in active_silences(db.read_conn(), tenant, now + timedelta(seconds=1))] == [keep.id]
    with pytest.raises(ConflictError) as err:
        db.write_sync(expire_silence(tenant, s.id, "apikey:ops"))
    assert err.value.field == "id"
    assert [(k, d["silence"], a) for k, d, a in kinds(db, tenant)] == [
        ("silence.created", s.id, "apikey:ops"), ("silence.created", keep.id, "apikey:ops"),
        ("silence.expired", s.id, "apikey:ops")]                 # the refused second expiry left nothing
    assert_ledger_verifies(db)


def test_expiring_a_pending_silence_ends_it_before_it_began(db: Database, tenant: str) -> None:
    now = datetime.now(timezone.utc)
    s = make(db, tenant, now=now, starts_at=iso(now + H), ends_at=iso(now + 2 * H))
    db.write_sync(expire_silence(tenant, s.id, "apikey:ops"))
    assert active_silences(db.read_conn(), tenant, now + 90 * timedelta(minutes=1)) == []
    assert get_silence(db.read_conn(), tenant, s.id).state(now + 90 * timedelta(minutes=1)) == "expired"


def test_expiring_one_that_ended_by_itself_is_a_conflict(db: Database, tenant: str) -> None:
    now = datetime.now(timezone.utc)
    s = make(db, tenant, now=now - 2 * H, starts_at=iso(now - 2 * H), ends_at=iso(now - H))
    with pytest.raises(ConflictError):
        db.write_sync(expire_silence(tenant, s.id, "apikey:ops"))
    assert [k for k, _, _ in kinds(db, tenant)] == ["silence.created"]


def test_expiring_an_unknown_or_another_tenants_silence_is_not_found(db: Database, tenant: str) -> None:
    now = datetime.now(timezone.utc)
    other = db.write_sync(create_tenant("other", "test")).id
    theirs = make(db, other, now=now, ends_at=iso(now + H))
    for sid in ("sil_000000000000", theirs.id):
        with pytest.raises(NotFoundError):
            db.write_sync(expire_silence(tenant, sid, "apikey:ops"))
    assert get_silence(db.read_conn(), other, theirs.id).expired_at is None


# =========================================================================================
# 3. recurring maintenance windows
# =========================================================================================

SATURDAY_NIGHTS = [{"weekdays": ["saturday"], "times": [{"start_time": "02:00", "end_time": "04:00"}],
                    "location": "Europe/Berlin"}]


@pytest.mark.parametrize("at,silenced", [
    ("2027-01-16T01:00:00Z", True),         # Saturday 02:00 in Berlin: the window's first minute
    ("2027-01-16T02:59:59Z", True),         # Saturday 03:59:59
    ("2027-01-16T03:00:00Z", False),        # Saturday 04:00: over
    ("2027-01-16T00:59:00Z", False),        # Saturday 01:59
    ("2027-01-22T01:30:00Z", False),        # Friday 02:30
    ("2027-01-17T01:30:00Z", False),        # Sunday 02:30
    ("2027-01-23T01:30:00Z", True),         # the next Saturday
    ("2027-07-17T00:30:00Z", True),         # a summer Saturday: 02:30 CEST
    ("2027-07-17T01:30:00Z", True),         # 03:30 CEST
    ("2027-07-17T02:00:00Z", False),        # 04:00 CEST: over
])
def test_a_maintenance_window_silences_only_inside_its_windows(db: Database, tenant: str, at: str,
                                                               silenced: bool) -> None:
    when = datetime.fromisoformat(at.replace("Z", "+00:00"))
    s = make(db, tenant, ends_at=iso(NOW + 300 * D), windows=SATURDAY_NIGHTS)
    conn = db.read_conn()
    assert [x.id for x in active_silences(conn, tenant, when)] == ([s.id] if silenced else [])
    assert s.state(when) == ("active" if silenced else "pending")   # between its windows it waits
    event = RouteEvent(tenant, None, "detected", "P2", "medium", "alert", "alertmanager", "checkout",
                       {"service": "checkout"}, "slow", "slow")
    plan = router.plan(conn, parse_routing('[[route]]\nname = "r"\nreceivers = ["channel:file"]\n'), event,
                       when.timestamp())
    assert plan.silenced_by == ((s.id,) if silenced else ())
    assert [d.outcome for d in plan.decisions] == [router.SILENCED if silenced else router.SEND]


def test_a_maintenance_window_outside_the_silences_span_silences_nothing(db: Database, tenant: str) -> None:
    s = make(db, tenant, starts_at=iso(NOW + 2 * D), ends_at=iso(NOW + 10 * D), windows=SATURDAY_NIGHTS)
    conn = db.read_conn()
    first_saturday = datetime(2027, 1, 16, 1, 30, tzinfo=timezone.utc)        # before the start
    second_saturday = datetime(2027, 1, 23, 1, 30, tzinfo=timezone.utc)       # inside the span
    third_saturday = datetime(2027, 1, 30, 1, 30, tzinfo=timezone.utc)        # after the end
    assert active_silences(conn, tenant, first_saturday) == []
    assert [x.id for x in active_silences(conn, tenant, second_saturday)] == [s.id]
    assert active_silences(conn, tenant, third_saturday) == []


def test_only_matching_labels_are_silenced(db: Database, tenant: str) -> None:
    s = make(db, tenant, matchers=['service="checkout"', 'env=~"prod|staging"'])
    [found] = active_silences(db.read_conn(), tenant, NOW)
    assert found.id == s.id
    assert found.matches({"service": "checkout", "env": "prod"})
    assert found.matches({"service": "checkout", "env": "staging", "team": "x"})
    assert not found.matches({"service": "checkout", "env": "production"})
    assert not found.matches({"service": "payments", "env": "prod"})
    assert not found.matches({"env": "prod"})


# =========================================================================================
# 4. end to end: captured Alertmanager payloads, the detector, the gateway and the outbox
# =========================================================================================

class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@dataclass
class FakeChannel:
    name: str
    got: list[Message] = field(default_factory=list)

    async def send(self, message: Message) -> Delivery:
        self.got.append(message)
        return Delivery(True, False, "ok", provider_id=f"m{len(self.got)}")


@dataclass
class Live:
    db: Database
    tenant: str
    clock: Clock
    detector: Detector
    telegram: FakeChannel

    async def feed(self, payload: dict[str, Any]) -> list[engine.Incident | None]:
        out = []
        for signal in parse_alertmanager(payload):
            ref = service_ref(self.db.read_conn(), self.tenant, signal.service)
            out.append(await self.detector.on_alert(self.tenant, signal, ref))
            self.clock.now += 1
        return out

    def silence(self, matchers: list[str]) -> Silence:
        now = datetime.fromtimestamp(self.clock.now, timezone.utc)
        return self.db.write_sync(create_silence(normalise(
            self.tenant, {"matchers": matchers, "ends_at": iso(now + 2 * H), "comment": "maintenance"},
            "apikey:ops", now)))

    def rows(self) -> list[dict[str, Any]]:
        return [{"incident": i, "recipient": r, "event": e, "state": s, "reason": why} for i, r, e, s, why in
                self.db.read_conn().execute("SELECT incident, recipient, event, state, reason FROM outbox "
                                            "WHERE tenant = ? ORDER BY id", (self.tenant,))]


@pytest.fixture
def live(db: Database, data_dir: DataDir, config: Config) -> Live:
    tenant = db.write_sync(create_tenant("acme", "test")).id
    db.write_sync(set_shadow(tenant, False, "test"))
    vault = SecretVault(data_dir.secret("vault.key"))
    db.write_sync(put_channel(tenant, "telegram", {"config": {"default_chat_id": "-100"}, "secrets": {"bot_token": BOT}},
                              config.url_policy, vault, "test"))
    telegram = FakeChannel("telegram")
    clock = Clock(float(int(time.time())))     # real "now": expire_silence reads the wall clock
    sender = OutboxSender(db, vault, lambda t, c, a: telegram if c == "telegram" else None, clock=clock)
    gateway = Gateway(db, [], vault=vault, sender=sender, clock=clock)
    return Live(db, tenant, clock, Detector(db, gateway), telegram)


def firing_group() -> dict[str, Any]:
    return json.loads((FIXTURES / "firing-group.json").read_text())


def with_service(payload: dict[str, Any], service: str) -> dict[str, Any]:
    """The same captured group, as if another service had fired it."""
    out = copy.deepcopy(payload)
    for alert in out["alerts"]:
        alert["labels"]["service"] = service
        alert["fingerprint"] = alert["fingerprint"][::-1]
    out["commonLabels"]["service"] = out["groupLabels"]["service"] = service
    return out


def resolved(payload: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(payload)
    for alert in out["alerts"]:
        alert["status"] = "resolved"
        alert["endsAt"] = "2026-11-22T14:10:00Z"
    return out


async def test_a_silence_stops_notifications_never_the_incidents(live: Live) -> None:
    sil = live.silence(['service="checkout"', 'alertname="CheckoutHighLatency"'])
    checkout = await live.feed(firing_group())
    payments = await live.feed(with_service(firing_group(), "payments"))

    # policy opened both incidents, one per service and rule, whatever was silenced
    conn = live.db.read_conn()
    incidents = {i.service_name: i for i in engine.list_incidents(conn, live.tenant)}
    assert set(incidents) == {"checkout", "payments"}
    assert all(i.is_open and i.priority == "P0" for i in incidents.values())
    assert checkout[0].id == checkout[1].id == incidents["checkout"].id
    assert payments[0].id == payments[1].id == incidents["payments"].id
    labels = json.loads(conn.execute("SELECT labels FROM incidents WHERE tenant = ? AND id = ?",
                                     (live.tenant, incidents["checkout"].id)).fetchone()[0])
    # what both alerts of the group share (the payload's own commonLabels): instance is not one of them
    assert labels == {"alertname": "CheckoutHighLatency", "service": "checkout", "severity": "critical"}

    # every checkout notification is stored, suppressed by the silence; payments' were delivered
    rows = live.rows()
    mine = [r for r in rows if r["incident"] == incidents["checkout"].id]
    theirs = [r for r in rows if r["incident"] == incidents["payments"].id]
    assert len(mine) + len(theirs) == len(rows)
    assert mine and mine[0]["event"] == "detected" and mine[0]["recipient"] == "channel:telegram"
    assert theirs and theirs[0]["event"] == "detected" and theirs[0]["recipient"] == "channel:telegram"
    for row in mine:
        assert row["state"] == "suppressed"
        assert row["reason"].startswith("silenced:") and sil.id in row["reason"]
    assert [r["state"] for r in theirs] == ["delivered"] * len(theirs)
    assert {m.incident for m in live.telegram.got} == {incidents["payments"].id}
    assert len(live.telegram.got) == len(theirs)

    # the routing decisions are ledgered, naming the silence
    routed = [(json.loads(b)["incident"], json.loads(b)["data"]["routing"]) for (b,) in conn.execute(
        "SELECT body FROM ledger WHERE tenant = ? AND kind = 'notification.routed' ORDER BY seq", (live.tenant,))]
    # a critical incident's chain starts at once (a call now): the payments incident's first step is
    # sent (ledgered escalation.step); the silenced checkout incident has none
    steps = [r for r in rows if r["event"] == "escalation"]
    assert [(r["incident"], r["state"]) for r in steps] == [(incidents["payments"].id, "delivered")]
    assert len(routed) == len(rows) - len(steps)
    for inc, routing in routed:
        if inc == incidents["checkout"].id:
            assert routing["silenced_by"] == [sil.id]
            assert {d["outcome"] for d in routing["decisions"]} == {"silenced"}
        else:
            assert routing["silenced_by"] == [] and {d["outcome"] for d in routing["decisions"]} == {"send"}

    # expired by hand: the next checkout notification (its resolution) is delivered
    live.db.write_sync(expire_silence(live.tenant, sil.id, "apikey:ops"))
    live.clock.now += 60
    await live.feed(resolved(firing_group()))
    closed = engine.get_incident(live.db.read_conn(), live.tenant, incidents["checkout"].id)
    assert not closed.is_open and closed.stage == engine.RESOLVED
    assert [(r["incident"], r["event"], r["state"]) for r in live.rows()[len(rows):]] == [
        (incidents["checkout"].id, "resolved", "delivered")]
    assert incidents["payments"].id in {i.id for i in engine.list_incidents(live.db.read_conn(), live.tenant)
                                        if i.is_open}

    # every silence change is in the ledger, in order, and the chain verifies
    assert [(k, d["silence"], a) for k, d, a in kinds(live.db, live.tenant)] == [
        ("silence.created", sil.id, "apikey:ops"), ("silence.expired", sil.id, "apikey:ops")]
    order = [k for (k,) in conn.execute("SELECT kind FROM ledger WHERE tenant = ? AND (kind LIKE 'silence.%' OR "
                                        "kind IN ('incident.detected', 'notification.routed')) ORDER BY seq",
                                        (live.tenant,))]
    assert order[0] == "silence.created" and order.count("incident.detected") == 2
    assert order[-2:] == ["silence.expired", "notification.routed"]
    assert order.count("notification.routed") == len(rows) - len(steps) + 1
    assert_ledger_verifies(live.db)


async def test_a_silence_that_matches_no_alert_of_the_group_changes_nothing(live: Live) -> None:
    live.silence(['service="payments"'])
    await live.feed(firing_group())
    rows = live.rows()
    assert rows and rows[0]["event"] == "detected"
    assert [r["state"] for r in rows] == ["delivered"] * len(rows)
    assert len(live.telegram.got) == len(rows)


async def test_an_expired_silence_stops_nothing(live: Live) -> None:
    sil = live.silence(['service="checkout"'])
    live.db.write_sync(expire_silence(live.tenant, sil.id, "apikey:ops"))
    await live.feed(firing_group())
    rows = live.rows()
    assert rows and rows[0]["event"] == "detected"
    assert [r["state"] for r in rows] == ["delivered"] * len(rows)
    assert_ledger_verifies(live.db)


async def test_a_silenced_notification_is_suppressed_in_shadow_mode_too(live: Live) -> None:
    live.db.write_sync(set_shadow(live.tenant, True, "test"))
    live.silence(['service="checkout"'])
    await live.feed(firing_group())
    rows = live.rows()
    assert rows and {r["state"] for r in rows} == {"suppressed"} and live.telegram.got == []
    found = live.db.read_conn().execute("SELECT body FROM ledger WHERE tenant = ? AND kind = "
                                        "'notification.suppressed'", (live.tenant,)).fetchall()
    assert len(found) == len(rows)
    for (b,) in found:
        assert [d["outcome"] for d in json.loads(b)["data"]["would_have"]["decisions"]] == ["silenced"]


async def test_a_silence_for_one_instance_does_not_hide_the_other_instance(live: Live) -> None:
    sil = live.silence(['instance="10.0.0.5:8000"'])        # maintenance on one host only
    await live.feed(firing_group())                         # 10.0.0.5 and 10.0.0.6 both firing
    rows = live.rows()
    assert rows[0]["event"] == "detected" and rows[0]["state"] == "suppressed" and sil.id in rows[0]["reason"]
    told = [r for r in rows if r["state"] == "delivered"]
    assert told, rows                                       # the unsilenced instance is told about
    assert len(live.telegram.got) == len(told)
