"""The one egress gateway: every notification, token, webhook call and voice call leaves through
here. For a tenant in shadow mode nothing leaves; each suppressed action is ledgered with actor
``shadow_mode`` and exactly what would have been sent."""

from __future__ import annotations

import asyncio
import json
import logging
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Awaitable, Callable, Protocol

from ..ledger.entry import LedgerEvent, identity_fingerprint, utc_timestamp
from ..store import Database
from ..store.modes import ModeTracker
from .channels.base import Delivery, RetryPolicy, deliver_with_retries

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
    links: dict[str, str] = field(default_factory=dict)  # recipient -> approval link (tokens: never ledgered or logged)
    buttons: list[list[tuple[str, str]]] = field(default_factory=list)  # chat buttons: (label, callback data)


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


class ConsoleChannel:
    """Prints notifications on the appliance's standard output (never an approval link)."""

    name = "console"

    def __init__(self, stream: Any = None) -> None:
        self.stream = stream

    def deliver(self, message: Message) -> str:
        stream = self.stream or sys.stdout
        links = f"\n    approval links sent to: {_link_note(message)}" if message.links else ""
        stream.write(f"[{message.priority}] {message.tenant} {message.incident} {message.event}: {message.text}{links}\n")
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


class Gateway:
    """``channels`` are the appliance's local channels (console, JSON lines): every live
    notification goes to each. ``remote(tenant)`` gives the tenant's remote channels (Telegram,
    webhook) in order: the first that delivers wins, the next is the fallback. Each attempt is
    retried per ``retry`` (honouring the provider's retry-after) and every outcome is ledgered."""

    def __init__(self, db: Database, channels: list[Channel], modes: ModeTracker | None = None,
                 remote: Callable[[str], list[Any]] | None = None, retry: RetryPolicy | None = None,
                 sleep: Callable[[float], Awaitable[None]] = asyncio.sleep) -> None:
        self.db = db
        self.channels = channels
        self.modes = modes
        self.remote = remote
        self.retry = retry or RetryPolicy()
        self.sleep = sleep

    def is_shadow(self, tenant: str) -> bool:
        row = self.db.read_conn().execute("SELECT shadow FROM tenants WHERE id = ?", (tenant,)).fetchone()
        return True if row is None else bool(row[0])  # unknown tenants never get egress

    async def notify(self, message: Message, *, policy_version: str | None = None) -> None:
        """Deliver ``message``. Never raises: whatever a channel does (a bad setting, a provider
        error, a bug) becomes a ledgered failed attempt, so the signal path that called this goes on."""
        try:
            remote = self.remote(message.tenant) if self.remote else []
        except Exception as exc:  # noqa: BLE001 - unusable settings are a failed delivery, not a failed signal
            log.warning("remote channels of %s unusable: %s", message.tenant, type(exc).__name__)
            remote = []
            if not self.is_shadow(message.tenant):
                await self._ledger(message, "remote", Delivery(False, False, f"channel settings unusable: "
                                                                            f"{type(exc).__name__}"), 1, policy_version)
        if self.is_shadow(message.tenant):
            await self.suppress(message.tenant, "notification", message.incident, policy_version,
                                {"event": message.event, "priority": message.priority, "text": message.text,
                                 "recipient": identity_fingerprint(message.recipient),
                                 "channels": [c.name for c in [*remote, *self.channels]]})
            return
        for channel in self.channels:
            try:
                delivery = Delivery(True, False, "written", provider_id=channel.deliver(message))
            except Exception as exc:  # noqa: BLE001 - a failed channel is ledgered, never fatal
                log.warning("channel %s failed: %s", channel.name, exc)
                delivery = Delivery(False, False, str(exc)[:500])
            await self._ledger(message, channel.name, delivery, 1, policy_version)
        failures = []
        for channel in remote:
            attempt = 0

            async def send_once(c: Any = channel) -> Delivery:
                nonlocal attempt
                attempt += 1
                try:
                    result = await c.send(message)
                except Exception as exc:  # noqa: BLE001 - a channel that breaks is a failed attempt, never fatal
                    log.warning("channel %s raised %s", c.name, type(exc).__name__)
                    result = Delivery(False, False, f"the channel failed: {type(exc).__name__}")
                await self._ledger(message, c.name, result, attempt, policy_version)  # every attempt
                return result
            delivery, _attempts = await deliver_with_retries(send_once, self.retry, self.sleep)
            if delivery.delivered:
                break
            failures.append(f"{channel.name}: {delivery.detail}")
        if self.modes is not None and remote:
            await self.modes.set("notifications_failing", len(failures) == len(remote), "; ".join(failures))

    async def _ledger(self, message: Message, channel: str, delivery: Delivery, attempts: int,
                      policy_version: str | None) -> None:
        ok = delivery.delivered
        await self.db.append(LedgerEvent(
            kind="notification.sent" if ok else "notification.failed", tenant=message.tenant,
            incident=message.incident, actor="system", decision="sent" if ok else "failed",
            policy_version=policy_version,
            reason=f"{message.event} {'sent' if ok else 'not delivered'} on {channel}",
            data={"channel": channel, "event": message.event, "provider_id": delivery.provider_id,
                  "attempt": attempts, "retryable": delivery.retryable, "detail": delivery.detail[:500],
                  "text": message.text,
                  "recipient": identity_fingerprint(message.recipient)}))

    async def suppress(self, tenant: str, what: str, incident: str | None, policy_version: str | None,
                       would_have: dict[str, Any]) -> None:
        """Ledger an egress that shadow mode stopped (``what`` is one of EGRESS_KINDS)."""
        assert what in EGRESS_KINDS
        await self.db.append(LedgerEvent(
            kind=f"{what}.suppressed", tenant=tenant, incident=incident, actor="shadow_mode", decision="suppressed",
            policy_version=policy_version, reason=f"shadow mode: {what} not sent", data={"would_have": would_have}))
