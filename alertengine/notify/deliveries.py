"""What happened to a message after the provider took it: delivery reports of WhatsApp messages
and voice calls (Twilio status callbacks), and what a reply to one of them is about.

When a provider accepts a message or call, the sender records it here (its SID, outbox row,
incident, recipient, channel and address). Each status Twilio reports later is ledgered once
(``notification.status``: queued, sent, delivered, read, failed or undelivered with Twilio's error
code; a call's ringing, in-progress, completed, busy, no-answer or failed); reports that arrive
out of order never move a delivery backwards.

A message that finally failed, or a call nobody answered, did not reach the person: the outbox
row is queued again on the person's next channel (when they have another, the row's deadline has
not passed and the news still matters: the incident open, and not yet acknowledged unless it is a
proposal still waiting), and for a call the incident's escalation chain is handed the turn: its
next step is brought forward to now. In shadow mode reports are ledgered and nothing is resent."""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass
from typing import Any, Callable

from ..ledger.entry import LedgerEvent, identity_fingerprint, utc_timestamp
from ..store import WriteTx
from .outbox import Outgoing

TRACKED = ("whatsapp", "voice")
# How far along each status is; a report never moves a delivery to a lower rank. Final failures
# outrank everything but "read" cannot follow them.
RANK = {"accepted": 0, "scheduled": 0, "queued": 1, "initiated": 2, "sending": 2, "ringing": 3, "sent": 3,
        "in-progress": 4, "delivered": 4, "read": 5, "completed": 6, "partially_delivered": 4,
        "undelivered": 7, "failed": 7, "canceled": 7, "busy": 7, "no-answer": 7}
NOT_REACHED = {"whatsapp": frozenset({"undelivered", "failed", "canceled"}),
               "voice": frozenset({"busy", "no-answer", "failed", "canceled"})}


@dataclass(frozen=True)
class Report:
    outcome: str                 # recorded | stale | unknown
    incident: str | None = None
    channel: str | None = None
    requeued: bool = False       # the person's next channel gets the message
    hastened: bool = False       # the escalation chain's next step was brought forward


def record(tx: WriteTx, item: Outgoing, channel: str, address: str, provider_id: str, now: float) -> None:
    tx.execute("INSERT OR IGNORE INTO deliveries (tenant, provider_id, outbox, incident, recipient, channel, address, "
               "status, created, updated) VALUES (?, ?, ?, ?, ?, ?, ?, 'queued', ?, ?)",
               (item.tenant, provider_id, item.id, item.incident, item.recipient, channel, address, now, now))


def find(conn: sqlite3.Connection, tenant: str, provider_id: str) -> dict[str, Any] | None:
    r = conn.execute("SELECT outbox, incident, recipient, channel, address, status FROM deliveries "
                     "WHERE tenant = ? AND provider_id = ?", (tenant, provider_id)).fetchone()
    return None if r is None else dict(zip(("outbox", "incident", "recipient", "channel", "address", "status"), r))


def report(tenant: str, provider_id: str, status: str, error_code: str | None, now: float,
           shadow: bool = False) -> Callable[[WriteTx], Report]:
    """Apply one status report of a message or call (one transaction). For a tenant in shadow mode
    the report is ledgered and nothing is sent again."""

    def write(tx: WriteTx) -> Report:
        known = find(tx.conn, tenant, provider_id)
        if known is None:
            return Report("unknown")
        channel, incident = known["channel"], known["incident"]
        if RANK.get(status, -1) <= RANK.get(known["status"], -1):
            return Report("stale", incident, channel)
        tx.execute("UPDATE deliveries SET status = ?, error_code = ?, updated = ? WHERE tenant = ? AND provider_id = ?",
                   (status, error_code, now, tenant, provider_id))
        failed = status in NOT_REACHED.get(channel, ())
        what = "call" if channel == "voice" else "message"
        tx.append(LedgerEvent(
            kind="notification.status", tenant=tenant, incident=incident, actor=f"provider:{_provider(channel)}",
            decision=status, reason=f"{channel} {what} {status}" + (f" (error {error_code})" if error_code else ""),
            data={"outbox": known["outbox"], "channel": channel, "provider_id": provider_id, "status": status,
                  "error_code": error_code, "recipient": identity_fingerprint(known["recipient"])}))
        if not failed or shadow:
            return Report("recorded", incident, channel)
        requeued = _next_channel(tx, tenant, known, f"{channel} {what} {status}", now)
        hastened = channel == "voice" and incident is not None and \
            _still_news(tx, tenant, incident, "escalation") and _hasten(tx, tenant, incident, now, status)
        return Report("recorded", incident, channel, requeued, hastened)
    return write


def _provider(channel: str) -> str:
    return "twilio" if channel in ("whatsapp", "voice") else channel


def _next_channel(tx: WriteTx, tenant: str, known: dict[str, Any], why: str, now: float) -> bool:
    """Queue the delivered row again on the recipient's next working channel, if there is one."""
    r = tx.execute("SELECT state, body, channel_index, deadline, event FROM outbox WHERE tenant = ? AND id = ?",
                   (tenant, known["outbox"])).fetchone()
    if r is None or r[0] != "delivered" or r[3] < now:
        return False
    if known["incident"] is not None and not _still_news(tx, tenant, known["incident"], r[4]):
        return False
    body = json.loads(r[1])
    broken = [*body.get("broken", []), f"{known['channel']}:{known['address']}"]
    left = [c for c in body["chain"] if f"{c[0]}:{c[1]}" not in broken]
    if not left:
        return False
    body["broken"] = broken
    # the sender picks chain[index % len(working chain)]: index 0 is the first channel still working
    tx.execute("UPDATE outbox SET state = 'queued', reason = ?, channel_index = 0, channel_failures = 0, next_at = ?, "
               "body = ?, updated = ? WHERE tenant = ? AND id = ?",
               (f"{why}: trying the next channel", now, json.dumps(body), utc_timestamp(), tenant, known["outbox"]))
    return True


def _still_news(tx: WriteTx, tenant: str, incident: str, event: str) -> bool:
    """Whether a message about the incident still matters: not once it is closed, and news that
    asks for an answer not once someone acknowledged it (a proposal waits for its approval)."""
    r = tx.execute("SELECT is_open, acknowledged_by, stage FROM incidents WHERE tenant = ? AND id = ?",
                   (tenant, incident)).fetchone()
    if r is None or not r[0]:
        return False
    if event in ("proposed", "dissent"):
        return r[2] == "PROPOSED"
    return r[1] is None


def _hasten(tx: WriteTx, tenant: str, incident: str, now: float, status: str) -> bool:
    """The call went unanswered: the chain's next step is due now rather than at its set time."""
    return hasten(tx, tenant, incident, now, f"the call was not answered ({status}): the next step of the chain "
                                             "is due now", {"status": status})


def hasten(tx: WriteTx, tenant: str, incident: str, now: float, reason: str, data: dict[str, Any]) -> bool:
    """The incident's escalation chain moves on now: its next step is due at once (ledgered
    ``escalation.hastened``). False when it has no step left to hasten."""
    moved = tx.execute("UPDATE escalations SET due = ?, updated = ? WHERE tenant = ? AND incident = ? AND "
                       "state = 'active' AND due IS NOT NULL AND due > ?",
                       (now, utc_timestamp(), tenant, incident, now)).rowcount
    if moved:
        tx.append(LedgerEvent(kind="escalation.hastened", tenant=tenant, incident=incident, actor="policy",
                              decision="hastened", reason=reason, data=data))
    return bool(moved)


def note_inbound(tenant: str, channel: str, address: str, now: float) -> Callable[[WriteTx], None]:
    """A person wrote to us on ``channel``: their session (WhatsApp's 24 hours) starts again."""
    def write(tx: WriteTx) -> None:
        tx.execute("INSERT INTO chat_sessions (tenant, channel, address, last_inbound) VALUES (?, ?, ?, ?) "
                   "ON CONFLICT (tenant, channel, address) DO UPDATE SET last_inbound = excluded.last_inbound",
                   (tenant, channel, address, now))
    return write


def session_open(conn: sqlite3.Connection, tenant: str, channel: str, address: str, now: float,
                 length: float) -> bool:
    r = conn.execute("SELECT last_inbound FROM chat_sessions WHERE tenant = ? AND channel = ? AND address = ?",
                     (tenant, channel, address)).fetchone()
    return r is not None and now - float(r[0]) < length
