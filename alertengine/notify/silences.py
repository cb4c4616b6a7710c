"""Silences and maintenance windows: matchers, a start, a required end, who made it and why.

A silence stops notifications about the incidents it matches; it never stops policy from opening
them, and what it stops is still routed, ledgered and visible as silenced. With ``windows`` it is a
recurring maintenance window: active only inside those windows, between its start and end.
A silence whose matchers would match every incident is refused unless ``force`` is given."""

from __future__ import annotations

import json
import secrets
import sqlite3
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Callable, Mapping

from ..errors import ConflictError, FieldError, NotFoundError
from ..ledger.entry import LedgerEvent, utc_timestamp
from ..schema import validate
from ..store import WriteTx
from ..tenancy.tenants import get_tenant
from .matchers import Matcher, matches_all, matches_empty, parse_matchers
from .timeintervals import TimeInterval, parse_time_interval

MAX_LENGTH = 366 * 86_400   # a silence lasts at most a year: "forever" is what deleting a rule is for
SILENCE_INPUT = {
    "type": "object", "additionalProperties": False, "required": ["matchers", "ends_at", "comment"],
    "properties": {
        "matchers": {"description": "['service=\"checkout\"', 'alertname=~\"Disk.*\"'] or {service = \"checkout\"}"},
        "starts_at": {"type": "string", "maxLength": 40, "description": "RFC 3339; default now"},
        "ends_at": {"type": "string", "maxLength": 40, "description": "RFC 3339; required"},
        "comment": {"type": "string", "minLength": 1, "maxLength": 1000},
        "windows": {"type": "array", "maxItems": 16, "items": {"type": "object"},
                    "description": "recurring maintenance windows (times, weekdays, days_of_month, months, location)"},
        "force": {"type": "boolean", "description": "allow matchers that match every incident"},
    },
}
SILENCE_OUTPUT = {"type": "object", "required": ["id", "matchers", "starts_at", "ends_at", "created_by", "comment",
                                                 "state"],
                  "properties": {"id": {"type": "string"}, "matchers": {"type": "array"},
                                 "starts_at": {"type": "string"}, "ends_at": {"type": "string"},
                                 "created_by": {"type": "string"}, "comment": {"type": "string"},
                                 "windows": {"type": "array"}, "state": {"type": "string",
                                                                         "enum": ["pending", "active", "expired"]},
                                 "expired_at": {"type": ["string", "null"]}}}


@dataclass(frozen=True)
class Silence:
    tenant: str
    id: str
    matchers: tuple[Matcher, ...]
    starts_at: datetime
    ends_at: datetime
    created_by: str
    comment: str
    windows: tuple[TimeInterval, ...]
    window_docs: tuple[dict[str, Any], ...]
    expired_at: str | None = None

    def state(self, at: datetime) -> str:
        """``active`` while it mutes; ``pending`` before its start or between its windows; ``expired``."""
        if self.expired_at is not None or at >= self.ends_at:
            return "expired"
        if at < self.starts_at or (self.windows and not any(w.contains(at) for w in self.windows)):
            return "pending"
        return "active"

    def active(self, at: datetime) -> bool:
        """Stops notifications at ``at``: between start and end, and inside a window if it has any."""
        return self.state(at) == "active"

    def matches(self, labels: Mapping[str, str]) -> bool:
        return matches_all(self.matchers, labels)

    def public(self, at: datetime) -> dict[str, Any]:
        return {"id": self.id, "matchers": [str(m) for m in self.matchers], "starts_at": _iso(self.starts_at),
                "ends_at": _iso(self.ends_at), "created_by": self.created_by, "comment": self.comment,
                "windows": list(self.window_docs), "state": self.state(at), "expired_at": self.expired_at}


def _iso(at: datetime) -> str:
    return at.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_time(value: Any, field: str) -> datetime:
    if not isinstance(value, str):
        raise FieldError(field, "must be an RFC 3339 time, e.g. 2026-12-01T22:00:00Z")
    try:
        at = datetime.fromisoformat(value.replace("Z", "+00:00").replace("z", "+00:00"))
        if at.tzinfo is None:
            raise FieldError(field, "needs a time zone offset (Z or +01:00)")
        return at.astimezone(timezone.utc)
    except (ValueError, OverflowError):
        raise FieldError(field, "must be an RFC 3339 time between the years 1 and 9999, e.g. 2026-12-01T22:00:00Z") \
            from None


def normalise(tenant: str, body: Any, actor: str, now: datetime) -> Silence:
    """Validate a new silence; raise FieldError naming what is wrong."""
    validate(SILENCE_INPUT, body)
    try:
        body["comment"].encode("utf-8")
    except UnicodeEncodeError:
        raise FieldError("comment", "is not valid Unicode text (it contains a lone surrogate)") from None
    matchers = parse_matchers(body["matchers"], "matchers")
    if not matchers:
        raise FieldError("matchers", "give at least one matcher")
    if matches_empty(matchers) and not body.get("force"):
        raise FieldError("matchers", "these matchers match every incident; narrow them, or set force to true")
    starts = parse_time(body["starts_at"], "starts_at") if "starts_at" in body else now
    ends = parse_time(body["ends_at"], "ends_at")
    if ends <= max(starts, now):
        raise FieldError("ends_at", "must be after the start and in the future")
    if (ends - starts).total_seconds() > MAX_LENGTH:
        raise FieldError("ends_at", "a silence lasts at most 366 days")
    docs = tuple(body.get("windows", ()))
    windows = tuple(parse_time_interval(d, f"windows[{i}]") for i, d in enumerate(docs))
    return Silence(tenant, "sil_" + secrets.token_hex(6), matchers, starts, ends, actor, body["comment"], windows, docs)


def _ledger_data(s: Silence) -> dict[str, Any]:
    return {"silence": s.id, "matchers": [m.as_data() for m in s.matchers], "starts_at": _iso(s.starts_at),
            "ends_at": _iso(s.ends_at), "comment": s.comment, "windows": list(s.window_docs)}


def create_silence(silence: Silence) -> Callable[[WriteTx], Silence]:
    def write(tx: WriteTx) -> Silence:
        get_tenant(tx.conn, silence.tenant)
        spec = {"matchers": [m.as_data() for m in silence.matchers], "comment": silence.comment,
                "windows": list(silence.window_docs)}
        tx.execute("INSERT INTO silences (tenant, id, spec, starts_at, ends_at, created_by, created) "
                   "VALUES (?, ?, ?, ?, ?, ?, ?)",
                   (silence.tenant, silence.id, json.dumps(spec), _iso(silence.starts_at), _iso(silence.ends_at),
                    silence.created_by, utc_timestamp()))
        tx.append(LedgerEvent(kind="silence.created", tenant=silence.tenant, actor=silence.created_by,
                              reason=f"silence {silence.id}: {silence.comment}"[:1000], data=_ledger_data(silence)))
        return silence
    return write


def _silence(tenant: str, row: tuple) -> Silence:
    spec = json.loads(row[1])
    matchers = tuple(Matcher(m["name"], m["op"], m["value"]) for m in spec["matchers"])
    docs = tuple(spec.get("windows", ()))
    windows = tuple(parse_time_interval(d, "windows") for d in docs)
    return Silence(tenant, row[0], matchers, parse_time(row[2], "starts_at"), parse_time(row[3], "ends_at"), row[4],
                   spec["comment"], windows, docs, row[5])


_COLUMNS = "id, spec, starts_at, ends_at, created_by, expired_at"


def get_silence(conn: sqlite3.Connection, tenant: str, silence_id: str) -> Silence:
    row = conn.execute(f"SELECT {_COLUMNS} FROM silences WHERE tenant = ? AND id = ?", (tenant, silence_id)).fetchone()
    if row is None:
        raise NotFoundError("silence")
    return _silence(tenant, row)


def list_silences(conn: sqlite3.Connection, tenant: str, *, include_expired: bool = True,
                  at: datetime | None = None) -> list[Silence]:
    """The tenant's silences, newest start first; without expired ones unless asked."""
    now = at or datetime.now(timezone.utc)
    out = [_silence(tenant, r) for r in conn.execute(
        f"SELECT {_COLUMNS} FROM silences WHERE tenant = ? ORDER BY starts_at DESC, id", (tenant,))]
    return out if include_expired else [s for s in out if s.state(now) != "expired"]


def active_silences(conn: sqlite3.Connection, tenant: str, at: datetime) -> list[Silence]:
    stamp = _iso(at)
    rows = conn.execute(f"SELECT {_COLUMNS} FROM silences WHERE tenant = ? AND expired_at IS NULL "
                        "AND starts_at <= ? AND ends_at > ?", (tenant, stamp, stamp))
    return [s for s in (_silence(tenant, r) for r in rows) if s.active(at)]


def expire_silence(tenant: str, silence_id: str, actor: str) -> Callable[[WriteTx], Silence]:
    """End a silence now. Expiring one that already ended is a conflict, not a second ledger entry."""

    def write(tx: WriteTx) -> Silence:
        silence = get_silence(tx.conn, tenant, silence_id)
        now = datetime.now(timezone.utc)
        if silence.state(now) == "expired":
            raise ConflictError("id", f"silence {silence_id} has already expired")
        stamp = utc_timestamp()
        tx.execute("UPDATE silences SET expired_at = ? WHERE tenant = ? AND id = ?", (stamp, tenant, silence_id))
        tx.append(LedgerEvent(kind="silence.expired", tenant=tenant, actor=actor,
                              reason=f"silence {silence_id} expired by hand", data=_ledger_data(silence)))
        return Silence(**{**silence.__dict__, "expired_at": stamp})
    return write


def ended_untold(conn: sqlite3.Connection, at: datetime) -> list[Silence]:
    """Silences (of any tenant) that ended on their own and whose responders were not told yet."""
    stamp = _iso(at)
    out = []
    for row in conn.execute(f"SELECT tenant, {_COLUMNS} FROM silences WHERE told NOT LIKE '%ended%' "
                            "AND (expired_at IS NOT NULL OR ends_at <= ?) LIMIT 100", (stamp,)):
        out.append(_silence(row[0], row[1:]))
    return out


def mark_told(tenant: str, silence_id: str, what: str) -> Callable[[WriteTx], None]:
    def write(tx: WriteTx) -> None:
        tx.execute("UPDATE silences SET told = told || ? WHERE tenant = ? AND id = ?", (f"{what},", tenant, silence_id))
        if what == "ended":
            tx.append(LedgerEvent(kind="silence.ended", tenant=tenant, actor="system",
                                  reason=f"silence {silence_id} is over: notifications it stopped flow again",
                                  data={"silence": silence_id}))
    return write


def untold_created(conn: sqlite3.Connection) -> list[Silence]:
    """Silences (of any tenant) whose responders were not told yet that they were made."""
    return [_silence(r[0], r[1:]) for r in conn.execute(
        f"SELECT tenant, {_COLUMNS} FROM silences WHERE told NOT LIKE '%created%' LIMIT 100")]


def silence_message(silence: Silence, notice: str) -> Any:
    """What the responders are told: the silence made (with its matchers, end and comment) or ended.
    Routed like any notification, as event ``silence``; a ``service="x"`` matcher names the service."""
    from .gateway import Message
    service = next((m.value for m in silence.matchers if m.name == "service" and m.op == "="), None)
    matchers = ", ".join(str(m) for m in silence.matchers)
    if notice == "created":
        text = (f"Silence {silence.id} by {silence.created_by} until {_iso(silence.ends_at)}: {silence.comment}\n"
                f"Muted: {matchers}")
    else:
        text = f"Silence {silence.id} is over; notifications for {matchers} flow again"
    return Message(silence.tenant, None, "silence", "P3", text, data={"service": service, "source": "silence"})
