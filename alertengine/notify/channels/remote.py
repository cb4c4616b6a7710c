"""The senders of the outbox: Telegram (with approval buttons), the signed generic webhook, and a
tenant's local file and JSON-lines channels, built from the tenant's channel settings."""

from __future__ import annotations

import asyncio
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import httpx

from ...ledger.entry import utc_timestamp
from ...net.webhooks import post_signed
from ...tenancy.vault import SecretVault
from ..gateway import Message
from .base import Delivery
from .settings import channel_secrets
from .telegram import TelegramClient

# Messages as people read them on a phone: plain text (no markup, so `_`, `*` or `<` in service
# names or alert text can never break formatting), the facts first.
_HEADLINES = {
    "detected": "🔴 Incident detected", "proposed": "🛠 Action recommended", "escalated": "⬆️ Priority raised",
    "executed": "✅ Recovery action ran", "failed": "❌ Recovery action failed", "expired": "⌛ Approval expired",
    "recovered": "💚 Recovered", "resolved": "✔️ Resolved", "rejected": "✋ Action rejected",
    "dissent": "⚖️ Diagnoses disagree: your call", "grouped": "🗂 Group update", "summary": "🌙 Held during quiet hours",
    "silence": "🔕 Silence", "not_recovered": "❌ Recovery did not work", "updated": "🔴 Incident widened",
}


def phone_text(message: Message) -> str:
    head = _HEADLINES.get(message.event, message.event.capitalize())
    service = message.data.get("service")
    lines = [f"{head} · {message.priority} · {message.incident}"]
    if service:
        lines.append(f"Service: {service}")
    lines.append(message.text)
    if message.event in ("proposed", "dissent") and message.buttons:
        lines.append("Approve or reject below. Only allowed approvers count; every tap is recorded.")
    return "\n".join(lines)


class RemoteChannel(Protocol):
    name: str

    async def send(self, message: Message) -> Delivery: ...


@dataclass
class TelegramChannel:
    client: TelegramClient
    chat_id: str
    name: str = "telegram"

    async def send(self, message: Message) -> Delivery:
        return await self.client.send_message(self.chat_id, phone_text(message), message.buttons or None)


@dataclass
class WebhookChannel:
    http: httpx.AsyncClient
    url: str
    secret: str
    name: str = "webhook"

    async def send(self, message: Message) -> Delivery:
        payload = {"tenant": message.tenant, "incident": message.incident, "event": message.event,
                   "priority": message.priority, "text": message.text, "data": message.data,
                   "approval_links": message.links}
        key = hashlib.sha256(f"{message.tenant}|{message.incident}|{message.event}|{message.text}".encode()).hexdigest()[:32]
        result = await post_signed(self.http, self.url, self.secret, payload, idempotency_key=key)
        # post_signed has already retried what deserved a retry
        return Delivery(result.delivered, False, result.detail,
                        provider_id=f"http:{result.final_status}" if result.final_status else None)


class LocalFileChannel:
    """``channel:file`` and ``channel:jsonl`` of a tenant's routes: appended to
    ``<data>/notify/<tenant>.log`` (one plain line) or ``.jsonl``. Never an approval link: who may
    read the data directory is not who may approve."""

    def __init__(self, path: Path, kind: str) -> None:
        self.path = path
        self.name = kind

    async def send(self, message: Message) -> Delivery:
        if self.name == "jsonl":
            line = json.dumps({"ts": utc_timestamp(), "tenant": message.tenant, "incident": message.incident,
                               "event": message.event, "priority": message.priority, "text": message.text,
                               "data": message.data}, sort_keys=True)
        else:
            line = f"{utc_timestamp()} [{message.priority}] {message.incident or '-'} {message.event}: " + \
                   message.text.replace("\n", " / ")
        await asyncio.to_thread(_append, self.path, line + "\n")
        return Delivery(True, False, "written", provider_id=f"{self.name}:{self.path.name}")


def _append(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a", encoding="utf-8") as f:
        f.write(text)


class ChannelResolver:
    """Builds the sender for one (tenant, channel, address) of an outbox row from the tenant's
    current settings, so a fixed token or URL takes effect at the next attempt."""

    def __init__(self, db: Any, vault: SecretVault, http: httpx.AsyncClient, directory: Path) -> None:
        self.db = db
        self.vault = vault
        self.http = http
        self.directory = directory

    def __call__(self, tenant: str, channel: str, address: str) -> RemoteChannel | None:
        if channel in ("file", "jsonl"):
            safe = "".join(c if c.isalnum() or c in "-_" else "_" for c in tenant)
            return LocalFileChannel(self.directory / f"{safe}.{'log' if channel == 'file' else 'jsonl'}", channel)
        conn = self.db.read_conn()
        row = conn.execute("SELECT config FROM channels WHERE tenant = ? AND kind = ?", (tenant, channel)).fetchone()
        if row is None:
            return None
        config = json.loads(row[0])
        secrets = channel_secrets(conn, tenant, channel, self.vault)
        if channel == "telegram" and secrets.get("bot_token") and (address or config.get("default_chat_id")):
            client = TelegramClient(config.get("api_base_url") or "https://api.telegram.org", secrets["bot_token"],
                                    self.http)
            return TelegramChannel(client, address or config["default_chat_id"])
        if channel == "webhook" and config.get("url") and secrets.get("signing_secret"):
            return WebhookChannel(self.http, config["url"], secrets["signing_secret"])
        return None
