"""The one egress gateway: every notification, token, webhook call and voice call leaves through
here. For a tenant in shadow mode nothing leaves; each suppressed action is ledgered with actor
``shadow_mode`` and exactly what would have been sent."""

from __future__ import annotations

import json
import logging
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from .ledger.entry import LedgerEvent, fingerprint, utc_timestamp
from .modes import ModeTracker
from .store import Database

log = logging.getLogger("alertengine.gateway")
EGRESS_KINDS = ("notification", "token", "webhook", "call")


@dataclass(frozen=True)
class Message:
    """A notification about an incident, in plain words."""

    tenant: str
    incident: str
    event: str              # detected | proposed | recovered | resolved | escalated | ...
    priority: str
    text: str
    recipient: str = "on-call"
    data: dict[str, Any] = field(default_factory=dict)
    link: str | None = None        # an approval link (carries a token: never ledgered, never logged)
    buttons: list[list[tuple[str, str]]] = field(default_factory=list)  # chat buttons: (label, callback data)


class Channel(Protocol):
    name: str

    def deliver(self, message: Message) -> str:
        """Deliver; return a provider message id. Raise on failure."""


class ConsoleChannel:
    """Prints notifications on the appliance's standard output."""

    name = "console"

    def __init__(self, stream: Any = None) -> None:
        self.stream = stream

    def deliver(self, message: Message) -> str:
        stream = self.stream or sys.stdout
        link = f"\n    approve or reject: {message.link}" if message.link else ""
        stream.write(f"[{message.priority}] {message.tenant} {message.incident} {message.event}: {message.text}{link}\n")
        stream.flush()
        return f"console:{message.incident}:{message.event}"


class JsonLinesChannel:
    """Appends each notification as one JSON line to a file in the data directory."""

    name = "jsonl"

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()

    def deliver(self, message: Message) -> str:
        line = json.dumps({"ts": utc_timestamp(), "tenant": message.tenant, "incident": message.incident,
                           "event": message.event, "priority": message.priority, "text": message.text,
                           "recipient": message.recipient, "data": message.data, "link": message.link},
                          sort_keys=True)
        with self._lock, open(self.path, "a", encoding="utf-8") as f:
            f.write(line + "\n")
        return f"jsonl:{message.incident}:{message.event}"


class Gateway:
    def __init__(self, db: Database, channels: list[Channel], modes: ModeTracker | None = None) -> None:
        self.db = db
        self.channels = channels
        self.modes = modes

    def is_shadow(self, tenant: str) -> bool:
        row = self.db.read_conn().execute("SELECT shadow FROM tenants WHERE id = ?", (tenant,)).fetchone()
        return True if row is None else bool(row[0])  # unknown tenants never get egress

    async def notify(self, message: Message, *, policy_version: str | None = None) -> None:
        if self.is_shadow(message.tenant):
            await self.suppress(message.tenant, "notification", message.incident, policy_version,
                                {"event": message.event, "priority": message.priority, "text": message.text,
                                 "recipient": fingerprint(message.recipient),
                                 "channels": [c.name for c in self.channels]})
            return
        failures = []
        for channel in self.channels:
            try:
                provider_id = channel.deliver(message)
            except Exception as exc:  # noqa: BLE001 - a failed channel is ledgered, never fatal
                log.warning("channel %s failed: %s", channel.name, exc)
                failures.append(f"{channel.name}: {exc}")
                await self.db.append(LedgerEvent(
                    kind="notification.failed", tenant=message.tenant, incident=message.incident, actor="system",
                    decision="failed", policy_version=policy_version, reason=f"{channel.name} delivery failed",
                    data={"channel": channel.name, "event": message.event, "error": str(exc)[:500],
                          "recipient": fingerprint(message.recipient)}))
                continue
            await self.db.append(LedgerEvent(
                kind="notification.sent", tenant=message.tenant, incident=message.incident, actor="system",
                decision="sent", policy_version=policy_version, reason=f"{message.event} sent on {channel.name}",
                data={"channel": channel.name, "event": message.event, "provider_id": provider_id,
                      "recipient": fingerprint(message.recipient), "text": message.text}))
        if self.modes is not None and self.channels:
            await self.modes.set("notifications_failing", len(failures) == len(self.channels), "; ".join(failures))

    async def suppress(self, tenant: str, what: str, incident: str | None, policy_version: str | None,
                       would_have: dict[str, Any]) -> None:
        """Ledger an egress that shadow mode stopped (``what`` is one of EGRESS_KINDS)."""
        assert what in EGRESS_KINDS
        await self.db.append(LedgerEvent(
            kind=f"{what}.suppressed", tenant=tenant, incident=incident, actor="shadow_mode", decision="suppressed",
            policy_version=policy_version, reason=f"shadow mode: {what} not sent", data={"would_have": would_have}))
