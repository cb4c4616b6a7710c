"""On-call schedules: rotations in layers, with hand-offs in the schedule's time zone, overrides for a
period, "who is on call at T", and each schedule as an iCalendar feed.

A layer rotates its members, one shift each, from ``start`` (a local date and time in the
schedule's zone: the first hand-off) every ``length``: ``daily``, ``weekly`` or a number of hours.
Shifts are counted in local wall-clock time, so a 09:00 hand-off stays at 09:00 across daylight
saving changes (that shift is an hour shorter or longer). A layer with ``restrict`` windows covers
only those times. Later layers take precedence where they cover; an override (a person, a start and
an end) takes precedence over every layer. Routing and escalation chains name a schedule as the
receiver ``schedule:<id>``: whoever is on call when the notification is routed."""

from __future__ import annotations

import json
import secrets
import sqlite3
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any, Callable
from zoneinfo import ZoneInfo

from ..errors import FieldError, NotFoundError
from ..ledger.entry import LedgerEvent, utc_timestamp
from ..schema import validate
from ..store import WriteTx
from ..tenancy.tenants import get_tenant
from .people import ID_PATTERN, check_id, get_person, list_people
from .silences import parse_time
from .timeintervals import TimeInterval, parse_location, parse_time_interval

LENGTHS = {"daily": timedelta(days=1), "weekly": timedelta(days=7)}
LAYER = {
    "type": "object", "additionalProperties": False, "required": ["start", "length", "members"],
    "properties": {
        "name": {"type": "string", "maxLength": 64},
        "start": {"type": "string", "maxLength": 32, "description": "the first hand-off, local: 2026-12-07T09:00"},
        "length": {"description": "daily, weekly, or hours (a number, at least 1)"},
        "members": {"type": "array", "minItems": 1, "maxItems": 100,
                    "items": {"type": "string", "pattern": ID_PATTERN}, "description": "person ids, in turn"},
        "restrict": {"type": "array", "maxItems": 16, "items": {"type": "object"},
                     "description": "windows this layer covers (times, weekdays, ...), in the schedule's zone"},
    },
}
SCHEDULE_INPUT = {
    "type": "object", "additionalProperties": False, "required": ["name", "time_zone", "layers"],
    "properties": {"name": {"type": "string", "minLength": 1, "maxLength": 128},
                   "time_zone": {"type": "string", "maxLength": 64},
                   "layers": {"type": "array", "minItems": 1, "maxItems": 10, "items": LAYER}},
}
OVERRIDE_INPUT = {
    "type": "object", "additionalProperties": False, "required": ["person", "starts_at", "ends_at"],
    "properties": {"person": {"type": "string", "pattern": ID_PATTERN},
                   "starts_at": {"type": "string", "maxLength": 40}, "ends_at": {"type": "string", "maxLength": 40}},
}
MAX_OVERRIDE = timedelta(days=366)


@dataclass(frozen=True)
class Layer:
    name: str
    start: datetime          # naive: local wall-clock time of the first hand-off
    length: timedelta
    members: tuple[str, ...]
    restrict: tuple[TimeInterval, ...]

    def member_at(self, local: datetime, at: datetime) -> str | None:
        """Who this layer has on call at local (naive) time ``local`` (``at``: the same instant, aware)."""
        if local < self.start:
            return None
        if self.restrict and not any(w.contains(at) for w in self.restrict):
            return None
        shift = int((local - self.start) / self.length)
        return self.members[shift % len(self.members)]


@dataclass(frozen=True)
class Override:
    id: str
    person: str
    starts_at: datetime
    ends_at: datetime
    created_by: str

    def public(self) -> dict[str, Any]:
        return {"id": self.id, "person": self.person, "starts_at": _iso(self.starts_at), "ends_at": _iso(self.ends_at),
                "created_by": self.created_by}


@dataclass(frozen=True)
class Schedule:
    tenant: str
    id: str
    name: str
    time_zone: str
    layers: tuple[Layer, ...]
    doc: dict[str, Any]
    overrides: tuple[Override, ...] = ()

    def on_call(self, at: datetime) -> tuple[str | None, str]:
        """(person id or None, why) at the aware instant ``at``."""
        for o in sorted(self.overrides, key=lambda o: o.starts_at, reverse=True):
            if o.starts_at <= at < o.ends_at:
                return o.person, f"override {o.id}"
        local = at.astimezone(ZoneInfo(self.time_zone)).replace(tzinfo=None)
        for i in range(len(self.layers) - 1, -1, -1):
            person = self.layers[i].member_at(local, at)
            if person is not None:
                return person, f"layer {self.layers[i].name or i + 1}"
        return None, "nobody: no layer covers this time"

    def shifts(self, start: datetime, end: datetime) -> list[tuple[datetime, datetime, str]]:
        """Who is on call from ``start`` to ``end`` (aware), as (from, to, person) spans."""
        zone = ZoneInfo(self.time_zone)
        edges = {start, end}
        for layer in self.layers:
            local = max(layer.start, start.astimezone(zone).replace(tzinfo=None) - layer.length)
            n = max(0, int((local - layer.start) / layer.length))
            while True:
                edge = (layer.start + n * layer.length).replace(tzinfo=zone).astimezone(timezone.utc)
                if edge >= end:
                    break
                if edge > start:
                    edges.add(edge)
                n += 1
            for window in layer.restrict:
                at = start
                while (nxt := window.next_change(at)) is not None and nxt < end:
                    edges.add(nxt)
                    at = nxt
        for o in self.overrides:
            edges.update(t for t in (o.starts_at, o.ends_at) if start < t < end)
        ordered = sorted(edges)
        out: list[tuple[datetime, datetime, str]] = []
        for a, b in zip(ordered, ordered[1:]):
            person, _ = self.on_call(a)
            if person is None:
                continue
            if out and out[-1][2] == person and out[-1][1] == a:
                out[-1] = (out[-1][0], b, person)
            else:
                out.append((a, b, person))
        return out

    def public(self) -> dict[str, Any]:
        return {"id": self.id, "name": self.name, "time_zone": self.time_zone, "layers": self.doc["layers"],
                "overrides": [o.public() for o in self.overrides]}


def check_when(at: datetime, field: str) -> datetime:
    """A moment to ask a schedule about: far from the calendar's ends, where zone arithmetic overflows."""
    if not 1971 <= at.year <= 9998:
        raise FieldError(field, "must be a time between the years 1971 and 9998")
    return at


def _iso(at: datetime) -> str:
    return at.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _length(value: Any, field: str) -> timedelta:
    if isinstance(value, str) and value in LENGTHS:
        return LENGTHS[value]
    if isinstance(value, (int, float)) and not isinstance(value, bool) and 1 <= value <= 24 * 366:
        return timedelta(hours=float(value))
    raise FieldError(field, "must be daily, weekly, or a number of hours from 1")


def build(tenant: str, schedule_id: str, doc: Any, known: set[str] | None = None) -> Schedule:
    """Validate a schedule; ``known`` (person ids) checks the members when given."""
    validate(SCHEDULE_INPUT, doc)
    check_id(schedule_id, "schedule")
    zone = parse_location(doc["time_zone"], "time_zone")
    layers = []
    for i, layer in enumerate(doc["layers"]):
        where = f"layers[{i}]"
        try:
            start = datetime.fromisoformat(layer["start"])
        except ValueError:
            raise FieldError(f"{where}.start", "must be a local date and time, e.g. 2026-12-07T09:00") from None
        if start.tzinfo is not None:
            raise FieldError(f"{where}.start", "is a local time in the schedule's zone: leave out the offset")
        if not 2000 <= start.year <= 2999:   # shifts are counted from it: keep the arithmetic far from year 9999
            raise FieldError(f"{where}.start", "must be a time between the years 2000 and 2999")
        for j, member in enumerate(layer["members"]):
            if known is not None and member not in known:
                raise FieldError(f"{where}.members[{j}]", f"no person {member!r} in this tenant")
        restrict = tuple(parse_time_interval({**w, "location": w.get("location", zone)}, f"{where}.restrict[{k}]")
                         if isinstance(w, dict) else parse_time_interval(w, f"{where}.restrict[{k}]")
                         for k, w in enumerate(layer.get("restrict", [])))
        layers.append(Layer(layer.get("name", ""), start, _length(layer["length"], f"{where}.length"),
                            tuple(layer["members"]), restrict))
    return Schedule(tenant, schedule_id, doc["name"], zone, tuple(layers), doc)


def put_schedule(schedule: Schedule, actor: str) -> Callable[[WriteTx], Schedule]:
    def write(tx: WriteTx) -> Schedule:
        get_tenant(tx.conn, schedule.tenant)
        build(schedule.tenant, schedule.id, schedule.doc, {p.id for p in list_people(tx.conn, schedule.tenant)})
        row = tx.execute("SELECT created FROM schedules WHERE tenant = ? AND id = ?",
                         (schedule.tenant, schedule.id)).fetchone()
        now = utc_timestamp()
        tx.execute("INSERT INTO schedules (tenant, id, spec, created, updated) VALUES (?, ?, ?, ?, ?) ON CONFLICT "
                   "(tenant, id) DO UPDATE SET spec = excluded.spec, updated = excluded.updated",
                   (schedule.tenant, schedule.id, json.dumps(schedule.doc), now, now))
        tx.append(LedgerEvent(kind="schedule.created" if row is None else "schedule.updated", tenant=schedule.tenant,
                              actor=actor, reason=f"schedule {schedule.id!r} {'added' if row is None else 'changed'}",
                              data={"schedule": schedule.id, **schedule.doc}))
        return get_schedule(tx.conn, schedule.tenant, schedule.id)
    return write


def get_schedule(conn: sqlite3.Connection, tenant: str, schedule_id: str) -> Schedule:
    row = conn.execute("SELECT spec FROM schedules WHERE tenant = ? AND id = ?", (tenant, schedule_id)).fetchone()
    if row is None:
        raise NotFoundError("schedule")
    overrides = tuple(Override(r[0], r[1], parse_time(r[2], "starts_at"), parse_time(r[3], "ends_at"), r[4])
                      for r in conn.execute("SELECT id, person, starts_at, ends_at, created_by FROM schedule_overrides "
                                            "WHERE tenant = ? AND schedule = ? ORDER BY starts_at", (tenant, schedule_id)))
    base = build(tenant, schedule_id, json.loads(row[0]))
    return Schedule(base.tenant, base.id, base.name, base.time_zone, base.layers, base.doc, overrides)


def list_schedules(conn: sqlite3.Connection, tenant: str) -> list[Schedule]:
    return [get_schedule(conn, tenant, sid) for (sid,) in conn.execute(
        "SELECT id FROM schedules WHERE tenant = ? ORDER BY id", (tenant,))]


def remove_schedule(tenant: str, schedule_id: str, actor: str) -> Callable[[WriteTx], Schedule]:
    def write(tx: WriteTx) -> Schedule:
        old = get_schedule(tx.conn, tenant, schedule_id)
        tx.execute("DELETE FROM schedule_overrides WHERE tenant = ? AND schedule = ?", (tenant, schedule_id))
        tx.execute("DELETE FROM schedules WHERE tenant = ? AND id = ?", (tenant, schedule_id))
        tx.append(LedgerEvent(kind="schedule.removed", tenant=tenant, actor=actor,
                              reason=f"schedule {schedule_id!r} removed", data={"schedule": schedule_id}))
        return old
    return write


def add_override(tenant: str, schedule_id: str, body: Any, actor: str) -> Callable[[WriteTx], Override]:
    validate(OVERRIDE_INPUT, body)
    starts = check_when(parse_time(body["starts_at"], "starts_at"), "starts_at")
    ends = check_when(parse_time(body["ends_at"], "ends_at"), "ends_at")
    if ends <= starts:
        raise FieldError("ends_at", "must be after starts_at")
    if ends - starts > MAX_OVERRIDE:
        raise FieldError("ends_at", "an override lasts at most 366 days")

    def write(tx: WriteTx) -> Override:
        get_schedule(tx.conn, tenant, schedule_id)
        try:
            get_person(tx.conn, tenant, body["person"])
        except NotFoundError:
            raise FieldError("person", f"no person {body['person']!r} in this tenant") from None
        override = Override("ovr_" + secrets.token_hex(6), body["person"], starts, ends, actor)
        tx.execute("INSERT INTO schedule_overrides (tenant, schedule, id, person, starts_at, ends_at, created_by, "
                   "created) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                   (tenant, schedule_id, override.id, override.person, _iso(starts), _iso(ends), actor, utc_timestamp()))
        tx.append(LedgerEvent(kind="schedule.override_added", tenant=tenant, actor=actor,
                              reason=f"{override.person} on call for {schedule_id!r} from {_iso(starts)} to {_iso(ends)}",
                              data={"schedule": schedule_id, **override.public()}))
        return override
    return write


def remove_override(tenant: str, schedule_id: str, override_id: str, actor: str) -> Callable[[WriteTx], None]:
    def write(tx: WriteTx) -> None:
        gone = tx.execute("DELETE FROM schedule_overrides WHERE tenant = ? AND schedule = ? AND id = ?",
                          (tenant, schedule_id, override_id)).rowcount
        if not gone:
            raise NotFoundError("override")
        tx.append(LedgerEvent(kind="schedule.override_removed", tenant=tenant, actor=actor,
                              reason=f"override {override_id} of {schedule_id!r} removed",
                              data={"schedule": schedule_id, "override": override_id}))
    return write


# --- iCalendar (RFC 5545) -------------------------------------------------------------------------

def _ical_text(value: str) -> str:
    return value.replace("\\", "\\\\").replace(";", "\\;").replace(",", "\\,").replace("\r\n", "\\n") \
        .replace("\n", "\\n")


def _fold(line: str) -> str:
    """Lines longer than 75 octets continue on the next line after a CRLF and a space."""
    data, out, size = line.encode("utf-8"), [], 75
    while len(data) > size:
        cut = size
        while cut > 0 and (data[cut] & 0xC0) == 0x80:   # never split a UTF-8 sequence
            cut -= 1
        out.append(data[:cut])
        data, size = data[cut:], 74
    out.append(data)
    return "\r\n ".join(part.decode("utf-8") for part in out)


def ical(schedule: Schedule, names: dict[str, str], start: datetime, days: int, host: str = "alertengine") -> str:
    """The schedule's shifts from ``start`` for ``days`` days as an iCalendar feed (UTC times)."""
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    lines = ["BEGIN:VCALENDAR", "VERSION:2.0", "PRODID:-//AlertEngine//On-call schedules//EN", "CALSCALE:GREGORIAN",
             f"X-WR-CALNAME:{_ical_text('On call: ' + schedule.name)}"]
    for a, b, person in schedule.shifts(start, start + timedelta(days=days)):
        uid = f"{schedule.tenant}-{schedule.id}-{int(a.timestamp())}-{person}@{host}"
        lines += ["BEGIN:VEVENT", f"UID:{_ical_text(uid)}", f"DTSTAMP:{stamp}",
                  f"DTSTART:{a.strftime('%Y%m%dT%H%M%SZ')}", f"DTEND:{b.strftime('%Y%m%dT%H%M%SZ')}",
                  f"SUMMARY:{_ical_text(f'On call ({schedule.name}): ' + names.get(person, person))}", "END:VEVENT"]
    lines.append("END:VCALENDAR")
    return "".join(_fold(line) + "\r\n" for line in lines)
