"""What responders do from a chat about an incident: acknowledge it, resolve it, or silence it for
an hour. Only people the tenant knows on that channel (a person's address, a service contact's
chat, the service's approvers) may; the person's identity is ledgered as ``engineer:<channel>:<id>``
and a refusal is ledgered too. Acknowledging stops the escalation chain (its steps check it)."""

from __future__ import annotations

import json
import secrets
import sqlite3
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

from ..errors import NotFoundError
from ..incidents import engine
from ..ledger.entry import LedgerEvent, identity_fingerprint
from ..notify.matchers import Matcher
from ..notify.people import expand, list_people
from ..notify.silences import Silence, create_silence
from ..store import Database

ACTIONS = {"ak": "acknowledge", "rs": "resolve", "sl": "silence"}
SILENCE_FOR = timedelta(hours=1)
@dataclass(frozen=True)
class ChatOutcome:
    outcome: str            # acknowledged | resolved | silenced | not_allowed | closed | already | unknown
    incident: engine.Incident | None
    detail: str = ""


def allowed(conn: sqlite3.Connection, tenant: str, inc: engine.Incident, channel: str, user: str) -> str | None:
    """The person (id or role) a chat user is to this tenant, or None if nobody it knows."""
    for person in list_people(conn, tenant):
        if person.addresses.get(channel) == user:
            return f"person:{person.id}"
    row = conn.execute("SELECT spec FROM services WHERE tenant = ? AND id = ?", (tenant, inc.service_id)).fetchone() \
        if inc.service_id else None
    if row is None:
        return None
    spec = json.loads(row[0])
    field = {"telegram": "telegram_chat_id", "whatsapp": "whatsapp", "slack": "slack", "voice": "phone"}.get(channel)
    for role, contact in spec.get("contacts", {}).items():
        if field and contact.get(field) == user:
            return f"{role}:{contact.get('name') or role}"
    approvers = spec.get("approvers", {})
    if user in [str(i) for i in approvers.get(channel, [])]:
        return f"approver:{channel}"
    if any(p.addresses.get(channel) == user for p in expand(conn, tenant, approvers.get("people", []))):
        return f"approver:{channel}"
    return None


def _silence_matchers(conn: sqlite3.Connection, inc: engine.Incident) -> tuple[Matcher, ...]:
    row = conn.execute("SELECT labels FROM incidents WHERE tenant = ? AND id = ?", (inc.tenant, inc.id)).fetchone()
    labels = json.loads(row[0]) if row else {}
    out = [Matcher(k, "=", labels[k]) for k in ("alertname", "service") if labels.get(k)]
    if not any(m.name == "service" for m in out) and inc.service_name:
        out.append(Matcher("service", "=", inc.service_name))
    return tuple(out)


async def act(db: Database, tenant: str, incident: str, channel: str, user: str, code: str,
              now: datetime | None = None) -> ChatOutcome:
    """Do what a chat button asks (``code`` one of ACTIONS), if the user may."""
    def facts(conn: sqlite3.Connection) -> tuple[engine.Incident, str | None, tuple[Matcher, ...]]:
        inc = engine.get_incident(conn, tenant, incident)
        return inc, allowed(conn, tenant, inc, channel, user), _silence_matchers(conn, inc)
    try:
        inc, who, matchers = await db.read(facts)
    except NotFoundError:
        return ChatOutcome("unknown", None)
    actor = f"engineer:{channel}:{user}"
    action = ACTIONS[code]
    if who is None:
        await db.append(LedgerEvent(kind="incident.action_refused", tenant=tenant, incident=inc.id, stage=inc.stage,
                                    actor=actor, decision="not_allowed",
                                    reason=f"{channel} user may not {action} incidents of this tenant",
                                    data={"user": identity_fingerprint(f"{channel}:{user}"), "action": action}))
        return ChatOutcome("not_allowed", inc)
    if not inc.is_open:
        return ChatOutcome("closed", inc)
    if action == "acknowledge":
        if inc.acknowledged_by is not None:
            return ChatOutcome("already", inc, inc.acknowledged_by)
        done = await engine.run(db, engine.acknowledge(tenant, inc.id, actor))
        return ChatOutcome("acknowledged", done, who)
    if action == "resolve":
        done = await engine.run(db, engine.transition(tenant, inc.id, engine.RESOLVED, actor, decision="resolved",
                                                      reason=f"resolved from {channel} by {who}"))
        return ChatOutcome("resolved", done, who)
    at = now or datetime.now(timezone.utc)
    if not matchers:
        return ChatOutcome("cannot_silence", inc, "the incident has no service or alert name to silence")
    silence = Silence(tenant, "sil_" + secrets.token_hex(6), matchers, at, at + SILENCE_FOR, actor,
                      f"silenced from {channel} for 1 h on {inc.id} by {who}", (), ())
    await db.write(create_silence(silence))
    return ChatOutcome("silenced", inc, silence.id)
