"""A tenant's remote notification channels, built from its channel settings: Telegram (with
approval buttons) and the signed generic webhook. Primary first, the other as fallback."""

from __future__ import annotations

import hashlib
import sqlite3
from dataclasses import dataclass
from typing import Protocol

import httpx

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
    "dissent": "⚖️ Diagnoses disagree: your call",
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


def remote_channels(conn: sqlite3.Connection, vault: SecretVault, tenant: str,
                    http: httpx.AsyncClient) -> list[RemoteChannel]:
    """The tenant's configured remote channels, primary (Telegram) first."""
    import json
    out: list[RemoteChannel] = []
    rows = {kind: json.loads(config) for kind, config in
            conn.execute("SELECT kind, config FROM channels WHERE tenant = ?", (tenant,))}
    if "telegram" in rows:
        secrets = channel_secrets(conn, tenant, "telegram", vault)
        chat = rows["telegram"].get("default_chat_id")
        if secrets.get("bot_token") and chat:
            out.append(TelegramChannel(TelegramClient(rows["telegram"].get("api_base_url") or "https://api.telegram.org",
                                                      secrets["bot_token"], http), chat))
    if "webhook" in rows:
        secrets = channel_secrets(conn, tenant, "webhook", vault)
        if rows["webhook"].get("url") and secrets.get("signing_secret"):
            out.append(WebhookChannel(http, rows["webhook"]["url"], secrets["signing_secret"]))
    return out
