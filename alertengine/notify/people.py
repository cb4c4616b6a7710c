"""People and teams of a tenant: who can be told, on which addresses, in which order.

A person has a time zone, one address per channel (Telegram chat id, WhatsApp number, phone,
Slack user, e-mail) and the order in which to try those channels. A team is an ordered list of
people. Routing rules and services name them as receivers (``person:<id>``, ``team:<id>``).

Addresses are personal data: the ledger records them only as identity fingerprints."""

from __future__ import annotations

import json
import re
import sqlite3
from dataclasses import dataclass
from typing import Any, Callable

from ..errors import ConflictError, FieldError, NotFoundError
from ..ledger.entry import LedgerEvent, identity_fingerprint, utc_timestamp
from ..schema import validate
from ..store import WriteTx
from ..tenancy.tenants import get_tenant
from .timeintervals import parse_location, quiet_window

ID_PATTERN = r"^[a-z0-9][a-z0-9_.-]{0,63}$"
_ID_RE = re.compile(ID_PATTERN)
E164 = {"type": "string", "pattern": r"^\+[1-9][0-9]{6,14}$", "description": "E.164 phone number"}
# The channels a person can be reached on, in the default order of trying them.
PERSON_CHANNELS = ("telegram", "slack", "whatsapp", "voice", "email")
ADDRESSES = {
    "type": "object", "additionalProperties": False,
    "properties": {
        "telegram": {"type": "string", "pattern": r"^-?[0-9]{1,20}$", "description": "Telegram chat id"},
        "whatsapp": E164,
        "voice": E164,
        "slack": {"type": "string", "pattern": r"^[A-Z0-9]{2,32}$", "description": "Slack user or channel id"},
        "email": {"type": "string", "maxLength": 254, "pattern": r"^[^@\s]{1,64}@[^@\s]{1,190}$"},
    },
}
PERSON_INPUT = {
    "type": "object", "additionalProperties": False, "required": ["name"],
    "properties": {
        "name": {"type": "string", "minLength": 1, "maxLength": 128},
        "time_zone": {"type": "string", "maxLength": 64, "description": "IANA zone, e.g. Europe/Berlin (default UTC)"},
        "addresses": ADDRESSES,
        "quiet_hours": {"type": "object", "additionalProperties": False,
                        "properties": {"start": {"type": "string", "maxLength": 5},
                                       "end": {"type": "string", "maxLength": 5},
                                       "suppress_below": {"type": "string",
                                                          "enum": ["critical", "high", "medium", "low"]},
                                       "then": {"type": "string", "enum": ["deliver", "summary", "drop"]}},
                        "required": ["start", "end"],
                        "description": "this person's own quiet hours, in their time zone: only suppress_below "
                                       "(default critical) or worse reaches them; the rest waits, then goes as "
                                       "'then' says (default deliver)"},
        "channels": {"type": "array", "maxItems": len(PERSON_CHANNELS), "uniqueItems": True,
                     "items": {"type": "string", "enum": list(PERSON_CHANNELS)},
                     "description": "the order to try this person's channels in (default: every address, "
                                    "in the order " + ", ".join(PERSON_CHANNELS) + ")"},
    },
}
TEAM_INPUT = {
    "type": "object", "additionalProperties": False, "required": ["name", "members"],
    "properties": {
        "name": {"type": "string", "minLength": 1, "maxLength": 128},
        "members": {"type": "array", "minItems": 1, "maxItems": 200, "uniqueItems": True,
                    "items": {"type": "string", "pattern": ID_PATTERN}, "description": "person ids, in order"},
    },
}
PERSON_OUTPUT = {"type": "object", "required": ["id", "name", "time_zone", "addresses", "channels"],
                 "properties": {"id": {"type": "string"}, "name": {"type": "string"},
                                "time_zone": {"type": "string"}, "addresses": {"type": "object"},
                                "channels": {"type": "array", "items": {"type": "string"}},
                                "created": {"type": "string"}, "updated": {"type": "string"}}}
TEAM_OUTPUT = {"type": "object", "required": ["id", "name", "members"],
               "properties": {"id": {"type": "string"}, "name": {"type": "string"},
                              "members": {"type": "array", "items": {"type": "string"}},
                              "created": {"type": "string"}, "updated": {"type": "string"}}}


@dataclass(frozen=True)
class Person:
    tenant: str
    id: str
    name: str
    time_zone: str
    addresses: dict[str, str]
    channels: tuple[str, ...]   # the order to try; only channels with an address
    created: str = ""
    updated: str = ""
    quiet_hours: dict[str, str] | None = None

    def public(self) -> dict[str, Any]:
        return {"id": self.id, "name": self.name, "time_zone": self.time_zone, "addresses": dict(self.addresses),
                "channels": list(self.channels), "quiet_hours": self.quiet_hours, "created": self.created,
                "updated": self.updated}


@dataclass(frozen=True)
class Team:
    tenant: str
    id: str
    name: str
    members: tuple[str, ...]
    created: str = ""
    updated: str = ""

    def public(self) -> dict[str, Any]:
        return {"id": self.id, "name": self.name, "members": list(self.members), "created": self.created,
                "updated": self.updated}


def check_id(value: Any, field: str = "id") -> str:
    if not isinstance(value, str) or not _ID_RE.match(value):
        raise FieldError(field, "must be 1-64 characters of a-z, 0-9, '_', '.' or '-', starting with a letter or digit")
    return value


def check_zone(value: str, field: str = "time_zone") -> str:
    """An IANA zone this machine knows; host-dependent names (``localtime``) are refused."""
    return parse_location(value, field)


def normalise_person(tenant: str, person_id: str, body: Any) -> Person:
    validate(PERSON_INPUT, body)
    check_id(person_id)
    addresses = dict(body.get("addresses", {}))
    zone = check_zone(body.get("time_zone", "UTC"))
    order = body.get("channels") or [c for c in PERSON_CHANNELS if c in addresses]
    missing = [c for c in order if c not in addresses]
    if missing:
        raise FieldError("channels", f"no address given for {', '.join(missing)}")
    quiet = body.get("quiet_hours")
    if quiet is not None:
        quiet_window(quiet["start"], quiet["end"], zone, "quiet_hours")   # refuses bad times
    return Person(tenant, person_id, body["name"], zone, addresses, tuple(order), quiet_hours=quiet)


def _person_ledger(person: Person) -> dict[str, Any]:
    return {"person": person.id, "name": identity_fingerprint(person.name), "time_zone": person.time_zone,
            "addresses": {ch: identity_fingerprint(a) for ch, a in sorted(person.addresses.items())},
            "channels": list(person.channels), "quiet_hours": person.quiet_hours}


def put_person(person: Person, actor: str) -> Callable[[WriteTx], tuple[Person, bool]]:
    """Create or replace a person; returns it and whether it is new."""

    def write(tx: WriteTx) -> tuple[Person, bool]:
        get_tenant(tx.conn, person.tenant)
        row = tx.execute("SELECT created FROM people WHERE tenant = ? AND id = ?", (person.tenant, person.id)).fetchone()
        now = utc_timestamp()
        spec = {"name": person.name, "time_zone": person.time_zone, "addresses": person.addresses,
                "channels": list(person.channels), "quiet_hours": person.quiet_hours}
        tx.execute("INSERT INTO people (tenant, id, spec, created, updated) VALUES (?, ?, ?, ?, ?) "
                   "ON CONFLICT (tenant, id) DO UPDATE SET spec = excluded.spec, updated = excluded.updated",
                   (person.tenant, person.id, json.dumps(spec), now, now))
        tx.append(LedgerEvent(kind="person.created" if row is None else "person.updated", tenant=person.tenant,
                              actor=actor, reason=f"person {person.id!r} {'added' if row is None else 'changed'}",
                              data=_person_ledger(person)))
        return Person(person.tenant, person.id, person.name, person.time_zone, person.addresses, person.channels,
                      row[0] if row else now, now, person.quiet_hours), row is None
    return write


def _person(tenant: str, row: tuple) -> Person:
    spec = json.loads(row[1])
    return Person(tenant, row[0], spec["name"], spec["time_zone"], spec["addresses"], tuple(spec["channels"]),
                  row[2], row[3], spec.get("quiet_hours"))


def get_person(conn: sqlite3.Connection, tenant: str, person_id: str) -> Person:
    row = conn.execute("SELECT id, spec, created, updated FROM people WHERE tenant = ? AND id = ?",
                       (tenant, person_id)).fetchone()
    if row is None:
        raise NotFoundError("person")
    return _person(tenant, row)


def list_people(conn: sqlite3.Connection, tenant: str) -> list[Person]:
    return [_person(tenant, r) for r in conn.execute(
        "SELECT id, spec, created, updated FROM people WHERE tenant = ? ORDER BY id", (tenant,))]


def remove_person(tenant: str, person_id: str, actor: str) -> Callable[[WriteTx], Person]:
    """Remove a person who is in no team (take them out of their teams first)."""

    def write(tx: WriteTx) -> Person:
        old = get_person(tx.conn, tenant, person_id)
        teams = [t.id for t in list_teams(tx.conn, tenant) if person_id in t.members]
        if teams:
            raise ConflictError("id", f"{person_id!r} is a member of {', '.join(teams)}: remove them there first")
        tx.execute("DELETE FROM people WHERE tenant = ? AND id = ?", (tenant, person_id))
        tx.append(LedgerEvent(kind="person.removed", tenant=tenant, actor=actor, reason=f"person {person_id!r} removed",
                              data={"person": person_id}))
        return old
    return write


def normalise_team(tenant: str, team_id: str, body: Any) -> Team:
    validate(TEAM_INPUT, body)
    check_id(team_id)
    return Team(tenant, team_id, body["name"], tuple(body["members"]))


def put_team(team: Team, actor: str) -> Callable[[WriteTx], tuple[Team, bool]]:
    def write(tx: WriteTx) -> tuple[Team, bool]:
        get_tenant(tx.conn, team.tenant)
        known = {p.id for p in list_people(tx.conn, team.tenant)}
        for i, member in enumerate(team.members):
            if member not in known:
                raise FieldError(f"members[{i}]", f"no person {member!r} in this tenant")
        row = tx.execute("SELECT created FROM teams WHERE tenant = ? AND id = ?", (team.tenant, team.id)).fetchone()
        now = utc_timestamp()
        tx.execute("INSERT INTO teams (tenant, id, spec, created, updated) VALUES (?, ?, ?, ?, ?) "
                   "ON CONFLICT (tenant, id) DO UPDATE SET spec = excluded.spec, updated = excluded.updated",
                   (team.tenant, team.id, json.dumps({"name": team.name, "members": list(team.members)}), now, now))
        tx.append(LedgerEvent(kind="team.created" if row is None else "team.updated", tenant=team.tenant, actor=actor,
                              reason=f"team {team.id!r} {'added' if row is None else 'changed'}",
                              data={"team": team.id, "name": team.name, "members": list(team.members)}))
        return Team(team.tenant, team.id, team.name, team.members, row[0] if row else now, now), row is None
    return write


def _team(tenant: str, row: tuple) -> Team:
    spec = json.loads(row[1])
    return Team(tenant, row[0], spec["name"], tuple(spec["members"]), row[2], row[3])


def get_team(conn: sqlite3.Connection, tenant: str, team_id: str) -> Team:
    row = conn.execute("SELECT id, spec, created, updated FROM teams WHERE tenant = ? AND id = ?",
                       (tenant, team_id)).fetchone()
    if row is None:
        raise NotFoundError("team")
    return _team(tenant, row)


def list_teams(conn: sqlite3.Connection, tenant: str) -> list[Team]:
    return [_team(tenant, r) for r in conn.execute(
        "SELECT id, spec, created, updated FROM teams WHERE tenant = ? ORDER BY id", (tenant,))]


def remove_team(tenant: str, team_id: str, actor: str) -> Callable[[WriteTx], Team]:
    def write(tx: WriteTx) -> Team:
        old = get_team(tx.conn, tenant, team_id)
        tx.execute("DELETE FROM teams WHERE tenant = ? AND id = ?", (tenant, team_id))
        tx.append(LedgerEvent(kind="team.removed", tenant=tenant, actor=actor, reason=f"team {team_id!r} removed",
                              data={"team": team_id}))
        return old
    return write


def expand(conn: sqlite3.Connection, tenant: str, receivers: list[str]) -> list[Person]:
    """The people that ``person:<id>`` and ``team:<id>`` receivers name, in order, each once.
    Receivers that name nobody (a removed person, an empty team) are skipped: routing reports them."""
    people: dict[str, Person] = {}
    for receiver in receivers:
        kind, _, ident = receiver.partition(":")
        try:
            if kind == "person":
                found = [get_person(conn, tenant, ident)]
            elif kind == "team":
                found = [get_person(conn, tenant, m) for m in get_team(conn, tenant, ident).members]
            else:
                continue
        except NotFoundError:
            continue
        for person in found:
            people.setdefault(person.id, person)
    return list(people.values())
