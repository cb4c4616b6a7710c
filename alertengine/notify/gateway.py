"""The one egress gateway: every notification, token, webhook call and voice call leaves through
here. For a tenant in shadow mode nothing leaves; each suppressed action is ledgered with actor
``shadow_mode`` and exactly what would have been sent."""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import sqlite3
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable, Protocol

from ..ledger.entry import LedgerEvent, utc_timestamp
from ..store import Database, WriteTx
from ..store.modes import ModeTracker
from ..tenancy.vault import SecretVault
from . import escalation, outbox, router, routes
from .message import Message

log = logging.getLogger("alertengine.gateway")
EGRESS_KINDS = ("notification", "token", "webhook", "call")
# News of an open incident carries buttons to acknowledge, resolve or silence it for an hour.
ACTIONABLE = frozenset({"detected", "updated", "escalated", "not_recovered", "escalation"})
INCIDENT_BUTTONS = (("Acknowledge", "ak"), ("Resolve", "rs"), ("Silence 1 h", "sl"))
# Notifications that start (or restart) the incident's escalation chain, and why.
CHAIN_STARTS = {"detected": "the incident opened", "not_recovered": "the recovery ran but did not work"}


class Channel(Protocol):
    name: str

    def deliver(self, message: Message) -> str:
        """Deliver; return a provider message id. Raise on failure."""


# The local channels are logs: whoever reads the appliance's output or its data directory could use a
# live approval link to authorize a production action. They name who was sent a link, never the link;
# links reach only their recipients' own channels. An operator at the appliance's shell can mint a
# link for a recipient with `alertengine approval link` (ledgered).
def _link_note(message: Message) -> str:
    return ", ".join(message.links)


# ANSI colours by priority, for a console that is a terminal (https://no-color.org/ turns them off).
COLOURS = {"P0": "\033[1;31m", "P1": "\033[31m", "P2": "\033[33m", "P3": "\033[36m"}
RESET = "\033[0m"


class ConsoleChannel:
    """Prints notifications on the appliance's standard output, the priority coloured when it is a
    terminal (never an approval link)."""

    name = "console"

    def __init__(self, stream: Any = None, colour: bool | None = None) -> None:
        self.stream = stream
        self.colour = colour

    def _coloured(self, stream: Any) -> bool:
        if self.colour is not None:
            return self.colour
        return not os.environ.get("NO_COLOR") and bool(getattr(stream, "isatty", lambda: False)())

    def deliver(self, message: Message) -> str:
        stream = self.stream or sys.stdout
        links = f"\n    approval links sent to: {_link_note(message)}" if message.links else ""
        tag = f"[{message.priority}]"
        if self._coloured(stream):
            tag = f"{COLOURS.get(message.priority, '')}{tag}{RESET}"
        stream.write(f"{tag} {message.tenant} {message.incident} {message.event}: {message.text}{links}\n")
        stream.flush()
        return f"console:{message.incident}:{message.event}"


class JsonLinesChannel:
    """Appends each notification as one JSON line to a file in the data directory (never an approval link)."""

    name = "jsonl"

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()

    def deliver(self, message: Message) -> str:
        line = json.dumps({"ts": utc_timestamp(), "tenant": message.tenant, "incident": message.incident,
                           "event": message.event, "priority": message.priority, "text": message.text,
                           "recipient": message.recipient, "data": message.data,
                           "approval_links_for": list(message.links)},
                          sort_keys=True)
        with self._lock, open(self.path, "a", encoding="utf-8") as f:
            f.write(line + "\n")
        return f"jsonl:{message.incident}:{message.event}"


def in_shadow(conn: sqlite3.Connection, tenant: str) -> bool:
    """Is ``tenant`` in shadow mode? Unknown tenants never get egress."""
    row = conn.execute("SELECT shadow FROM tenants WHERE id = ?", (tenant,)).fetchone()
    return True if row is None else bool(row[0])


class Gateway:
    """``channels`` are the appliance's local log channels (console, JSON lines): a copy of every live
    notification goes to each, without approval links. Everything else is routed (``router.py``)
    and stored in the durable outbox (``outbox.py``), one row per recipient, in the same
    transaction as the ledgered routing decision; the outbox sender delivers it."""

    def __init__(self, db: Database, channels: list[Channel], modes: ModeTracker | None = None, *,
                 vault: SecretVault | None = None, sender: Any = None, clock: Callable[[], float] = time.time) -> None:
        self.db = db
        self.channels = channels
        self.modes = modes
        self.vault = vault
        self.sender = sender          # the OutboxSender, woken when something is queued
        self.clock = clock

    async def is_shadow(self, tenant: str) -> bool:
        return await self.db.read(in_shadow, tenant)

    async def recipients(self, message: Message) -> list[str]:
        """The people routing would tell about ``message`` now (recipient keys): whom to mint approval
        links for. A shared channel (a team chat, a webhook) is not a person: it gets the chat buttons,
        which only allowed approvers can use, never a link anyone in it could follow. When only the
        fallback channels would be told, the fallback counts as the one recipient."""
        now = self.clock()
        plan = await self.db.read(lambda conn: router.plan(conn, routes.load_routing(conn, message.tenant),
                                                           route_event(conn, message), now))
        return [d.recipient.key for d in plan.decisions if d.outcome in (router.SEND, router.HELD)
                and not d.recipient.key.startswith("channel:")]

    async def notify(self, message: Message, *, policy_version: str | None = None) -> router.Plan | None:
        """Route ``message`` and store one delivery per recipient. Never raises: the signal path that
        called this goes on. A channel's failure is a ledgered attempt; a routing write the store
        refuses is logged (a store that cannot write is the appliance's EMERGENCY, shown at /healthz)."""
        if message.incident and not message.buttons and message.event in ACTIONABLE:
            # chat buttons on news of an open incident: acknowledge, resolve, silence (web/bots.py)
            message = dataclasses.replace(message, buttons=[[(label, f"{code}:{message.incident}")
                                                             for label, code in INCIDENT_BUTTONS]])
        shadow = await self.is_shadow(message.tenant)
        if not shadow:
            for channel in self.channels:
                try:
                    channel.deliver(message)
                except Exception as exc:  # noqa: BLE001 - a broken log channel is logged, never fatal
                    log.warning("log channel %s failed: %s", channel.name, type(exc).__name__)
        if message.links and self.vault is None:
            log.warning("no vault: approval links of %s are not stored", message.incident)
        now = self.clock()

        def write(tx: WriteTx) -> tuple[router.Plan, bool]:
            routing = routes.load_routing(tx.conn, message.tenant)
            event = route_event(tx.conn, message)
            plan = router.plan(tx.conn, routing, event, now)
            sent = {d.rule for d in plan.decisions if d.outcome == router.SEND}
            for rule in plan.matched:
                tx.execute("INSERT INTO route_hits (tenant, rule, at, sent) VALUES (?, ?, ?, ?)",
                           (message.tenant, rule, now, int(rule in sent)))
            tx.execute("DELETE FROM route_hits WHERE tenant = ? AND at < ?", (message.tenant, now - 7 * 86_400))
            record_stats(tx, message.tenant, plan)
            links = message.links if self.vault is not None else {}
            stored = outbox.enqueue(tx, plan, dataclasses.replace(message, links=links), now=now,
                                    retry_for=routing.retry_for, vault=self.vault or _NO_VAULT, shadow=shadow,
                                    rules={r.name: r for r in routing.rules})
            if message.incident and message.event in CHAIN_STARTS and \
                    any(d.outcome in (router.SEND, router.HELD) for d in plan.decisions) and \
                    tx.execute("SELECT 1 FROM incidents WHERE tenant = ? AND id = ? AND is_open = 1",
                               (message.tenant, message.incident)).fetchone():
                spec = router.event_service(tx.conn, event)
                chain = routing.chain_for(plan.matched[0] if plan.matched else None, (spec or {}).get("escalation"))
                if chain is not None:
                    escalation.start(tx, message.tenant, message.incident, chain, routing.version, now,
                                     CHAIN_STARTS[message.event])
            tx.append(LedgerEvent(
                kind="notification.suppressed" if shadow else "notification.routed", tenant=message.tenant,
                incident=message.incident, actor="shadow_mode" if shadow else "system",
                decision="suppressed" if shadow else "routed", policy_version=routing.version,
                reason=(f"shadow mode: {message.event} not sent" if shadow else
                        f"{message.event}: " + (", ".join(plan.matched) or "no rule matched")),
                data={"would_have" if shadow else "routing": {
                    "event": message.event, "priority": message.priority, "text": message.text,
                    "incident_policy_version": policy_version, **plan.as_data(),
                    "channels": sorted({c for d in plan.decisions for c, _ in d.recipient.chain})}}))
            return plan, any(state == "queued" for _, state in stored)
        try:
            plan, queued = await self.db.write(write)
        except Exception as exc:  # noqa: BLE001 - routing must never break the signal path
            log.error("routing %s of %s failed: %s", message.event, message.incident, exc)
            return None
        if self.sender is not None and not shadow:
            if queued:
                await self.sender.run_due()   # the first attempt now; retries are the sender's background work
            self.sender.wake()
        return plan

    async def suppress(self, tenant: str, what: str, incident: str | None, policy_version: str | None,
                       would_have: dict[str, Any]) -> None:
        """Ledger an egress that shadow mode stopped (``what`` is one of EGRESS_KINDS)."""
        assert what in EGRESS_KINDS
        await self.db.append(LedgerEvent(
            kind=f"{what}.suppressed", tenant=tenant, incident=incident, actor="shadow_mode", decision="suppressed",
            policy_version=policy_version, reason=f"shadow mode: {what} not sent", data={"would_have": would_have}))


class _NoVault:
    def encrypt(self, value: str, *, context: str) -> bytes:   # pragma: no cover - never called without links
        raise RuntimeError("no vault")


_NO_VAULT: Any = _NoVault()
CATEGORY_OF_SOURCE = {"poller": "health", "heartbeat": "heartbeat", "deploy": "deploy"}


def route_event(conn: Any, message: Message) -> routes.RouteEvent:
    """The routing view of a notification: the message and its incident's facts and labels."""
    row = conn.execute("SELECT source, service_name, title, labels, service_id FROM incidents WHERE tenant = ? AND id = ?",
                       (message.tenant, message.incident)).fetchone() if message.incident else None
    source, service, title, raw, service_id = row if row else (
        message.data.get("source", "appliance"), message.data.get("service"), message.text, "{}", None)
    spec = router.service_spec(conn, message.tenant, service_id) if service_id else None
    labels = router.incident_labels(json.loads(raw), message.priority, service, source,
                                    (spec or {}).get("labels"))
    return routes.RouteEvent(message.tenant, message.incident, message.event, message.priority,
                             routes.PRIORITY_SEVERITY.get(message.priority, "low"),
                             CATEGORY_OF_SOURCE.get(source, "alert"), source, service, labels, title, message.text)


def record_stats(tx: WriteTx, tenant: str, plan: router.Plan) -> None:
    """Per-rule counters for ``alertengine route stats``: matched, sent, suppressed, escalated."""
    counts: dict[tuple[str, str], int] = {}
    for name in plan.matched:
        counts[(name, "matched")] = 1
    if plan.escalated_by:
        counts[(plan.escalated_by, "escalated")] = 1
    for d in plan.decisions:
        what = "sent" if d.outcome == router.SEND else "held" if d.outcome == router.HELD else "suppressed"
        key = (d.rule or "(fallback)", what)
        counts[key] = counts.get(key, 0) + 1
    for (rule, what), n in counts.items():
        tx.execute("INSERT INTO route_stats (tenant, rule, what, count) VALUES (?, ?, ?, ?) ON CONFLICT "
                   "(tenant, rule, what) DO UPDATE SET count = route_stats.count + excluded.count", (tenant, rule, what, n))


def route_stats(conn: Any, tenant: str) -> list[dict[str, Any]]:
    stats: dict[str, dict[str, int]] = {}
    for rule in routes.load_routing(conn, tenant).rules:
        stats[rule.name] = {}
    for rule, what, count in conn.execute("SELECT rule, what, count FROM route_stats WHERE tenant = ?", (tenant,)):
        stats.setdefault(rule, {})[what] = count
    keys = ("matched", "sent", "held", "suppressed", "escalated")
    return [{"rule": name, **{k: counts.get(k, 0) for k in keys}} for name, counts in stats.items()]
