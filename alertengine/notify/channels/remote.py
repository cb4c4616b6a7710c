"""The senders of the outbox, built from the tenant's channel settings: Telegram and Slack (with
buttons), WhatsApp and voice through Twilio, the signed generic webhook, and a tenant's local file
and JSON-lines channels."""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Protocol
from urllib.parse import quote

import httpx

from ...ledger.entry import utc_timestamp
from ...net.webhooks import post_signed
from ...tenancy.vault import SecretVault
from ..message import Message
from .base import Delivery
from ..deliveries import session_open
from .settings import channel_secrets
from .slack import SlackClient, post_webhook
from .telegram import TelegramClient
from .twilio import TwilioClient
from .voice import VoiceChannel
from .whatsapp import SESSION_SECONDS, WhatsAppChannel
from .text import phone_text


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


class SlackChannel:
    """A person's Slack (a direct message to their user id) or a channel, by bot token."""

    name = "slack"

    def __init__(self, client: SlackClient, channel: str) -> None:
        self.client = client
        self.channel = channel

    async def send(self, message: Message) -> Delivery:
        return await self.client.post_message(self.channel, message)


@dataclass
class SlackWebhookChannel:
    http: httpx.AsyncClient
    url: str
    name: str = "slack"

    async def send(self, message: Message) -> Delivery:
        return await post_webhook(self.http, self.url, message)


class ChannelResolver:
    """Builds the sender for one (tenant, channel, address) of an outbox row from the tenant's
    current settings, so a fixed token or URL takes effect at the next attempt. ``public_url`` is
    where the providers' callbacks reach this appliance (Twilio's status reports and keypresses)."""

    def __init__(self, db: Any, vault: SecretVault, http: httpx.AsyncClient, directory: Path,
                 public_url: str = "", clock: Callable[[], float] = time.time) -> None:
        self.db = db
        self.vault = vault
        self.http = http
        self.directory = directory
        self.public_url = public_url.rstrip("/")
        self.clock = clock

    def __call__(self, tenant: str, channel: str, address: str) -> RemoteChannel | None:
        if channel in ("file", "jsonl"):
            safe = "".join(c if c.isalnum() or c in "-_" else "_" for c in tenant)
            return LocalFileChannel(self.directory / f"{safe}.{'log' if channel == 'file' else 'jsonl'}", channel)
        kind = "twilio" if channel in ("whatsapp", "voice") else channel
        conn = self.db.read_conn()
        row = conn.execute("SELECT config FROM channels WHERE tenant = ? AND kind = ?", (tenant, kind)).fetchone()
        if row is None:
            return None
        config = json.loads(row[0])
        secrets = channel_secrets(conn, tenant, kind, self.vault)
        if channel == "telegram" and secrets.get("bot_token") and (address or config.get("default_chat_id")):
            client = TelegramClient(config.get("api_base_url") or "https://api.telegram.org", secrets["bot_token"],
                                    self.http)
            return TelegramChannel(client, address or config["default_chat_id"])
        if channel == "webhook" and config.get("url") and secrets.get("signing_secret"):
            return WebhookChannel(self.http, config["url"], secrets["signing_secret"])
        if channel == "slack":
            target = address or config.get("channel")
            if target and secrets.get("bot_token"):
                return SlackChannel(SlackClient(config.get("api_base_url") or "", secrets["bot_token"], self.http), target)
            if not address and secrets.get("webhook_url"):
                return SlackWebhookChannel(self.http, secrets["webhook_url"])
            return None
        if kind == "twilio" and address and config.get("account_sid") and secrets.get("auth_token"):
            return self._twilio(tenant, channel, address, config, secrets["auth_token"])
        return None

    def _twilio(self, tenant: str, channel: str, address: str, config: dict[str, Any],
                token: str) -> RemoteChannel | None:
        client = TwilioClient(config.get("api_base_url") or "", config["account_sid"], token, self.http)
        base = f"{self.public_url}/bot/twilio/{quote(tenant, safe='')}" if self.public_url else None
        status = f"{base}/status" if base else None
        if channel == "whatsapp" and config.get("whatsapp_from"):
            open_ = session_open(self.db.read_conn(), tenant, "whatsapp", address, self.clock(), SESSION_SECONDS)
            return WhatsAppChannel(client, config["whatsapp_from"], address, status, open_,
                                   config.get("whatsapp_template_sid"))
        if channel == "voice" and config.get("from_number"):
            return VoiceChannel(client, config["from_number"], address, f"{base}/voice" if base else None, status)
        return None
