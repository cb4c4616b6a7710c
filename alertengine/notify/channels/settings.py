"""Per-tenant notification channel settings: plain configuration plus secrets encrypted at rest.

Secrets are never returned (only fingerprints), never logged and never ledgered."""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass
from typing import Any, Callable

from ...errors import NotFoundError
from ...ledger.entry import LedgerEvent, fingerprint, utc_timestamp
from ...net.urlpolicy import UrlPolicy, check_url
from ...schema import validate
from ...store import WriteTx
from ...tenancy.tenants import get_tenant
from ...tenancy.vault import SecretVault

URL = {"type": "string", "maxLength": 2048}
# Secrets are checked for their provider's shape when saved, so that a pasted newline or a token of
# the wrong service is refused at once instead of failing every delivery later. A null removes one.
PRINTABLE_SECRET = {"type": ["string", "null"], "minLength": 1, "maxLength": 4096, "pattern": r"^[!-~]+$"}
SECRET_SHAPES: dict[str, dict[str, Any]] = {
    "telegram.bot_token": {"type": ["string", "null"], "maxLength": 128, "pattern": r"^[0-9]{1,20}:[A-Za-z0-9_-]{20,100}$"},
    # Telegram allows 1-256 characters of A-Z, a-z, 0-9, _ and - in a webhook secret_token
    "telegram.webhook_secret": {"type": ["string", "null"], "pattern": r"^[A-Za-z0-9_-]{1,256}$"},
    "twilio.auth_token": {"type": ["string", "null"], "pattern": r"^[0-9A-Za-z]{32}$"},
    "slack.bot_token": {"type": ["string", "null"], "maxLength": 256, "pattern": r"^xox[abpr]-[A-Za-z0-9-]{8,250}$"},
    "slack.signing_secret": {"type": ["string", "null"], "pattern": r"^[0-9A-Za-z]{16,128}$"},
    # an incoming webhook's URL is its credential: stored sealed, shown only as a fingerprint
    "slack.webhook_url": {"type": ["string", "null"], "maxLength": 2048, "pattern": r"^https?://[!-~]+$"},
}


@dataclass(frozen=True)
class ChannelKind:
    name: str
    config: dict[str, Any]          # JSON schema properties of the plain settings
    secrets: tuple[str, ...]        # names of the secret settings
    url_fields: tuple[str, ...] = ()
    secret_urls: tuple[str, ...] = ()    # secrets that are URLs: the outbound URL policy applies to them


KINDS: dict[str, ChannelKind] = {k.name: k for k in (
    ChannelKind("telegram", {"api_base_url": URL, "default_chat_id": {"type": "string", "pattern": r"^-?[0-9]{1,20}$"}},
                ("bot_token", "webhook_secret"), ("api_base_url",)),
    ChannelKind("twilio", {"api_base_url": URL, "account_sid": {"type": "string", "pattern": r"^AC[0-9a-fA-F]{32}$"},
                           "from_number": {"type": "string", "pattern": r"^\+[1-9][0-9]{6,14}$"},
                           "whatsapp_from": {"type": "string", "pattern": r"^(whatsapp:)?\+[1-9][0-9]{6,14}$"},
                           "whatsapp_template_sid": {"type": "string", "pattern": r"^HX[0-9a-fA-F]{32}$",
                                                     "description": "Content template sent outside WhatsApp's "
                                                                    "24-hour session"}},
                ("auth_token",), ("api_base_url",)),
    ChannelKind("slack", {"api_base_url": URL, "channel": {"type": "string", "pattern": r"^[A-Z0-9]{2,32}$",
                                                           "description": "default channel id (C…) for channel:slack"}},
                ("bot_token", "signing_secret", "webhook_url"), ("api_base_url",), ("webhook_url",)),
    ChannelKind("webhook", {"url": URL}, ("signing_secret",), ("url",)),
    # not a notification channel: the GitHub push webhook's shared secret, and the service it deploys
    ChannelKind("github", {"service": {"type": "string", "maxLength": 64}}, ("webhook_secret",)),
)}


def input_schema(kind: ChannelKind) -> dict[str, Any]:
    return {"type": "object", "additionalProperties": False,
            "properties": {
                "config": {"type": "object", "additionalProperties": False, "properties": kind.config},
                "secrets": {"type": "object", "additionalProperties": False,
                            "properties": {name: SECRET_SHAPES.get(f"{kind.name}.{name}", PRINTABLE_SECRET)
                                           for name in kind.secrets},
                            "description": "write-only; a null value removes the secret"},
            }}


CHANNEL_INPUT = {"anyOf": [input_schema(k) for k in KINDS.values()], "description": "the form for the {kind} in the path"}
CHANNEL_OUTPUT = {
    "type": "object", "required": ["kind", "config", "secrets", "updated"],
    "properties": {"kind": {"type": "string", "enum": list(KINDS)}, "config": {"type": "object"},
                   "secrets": {"type": "object", "additionalProperties": {"type": "string"},
                               "description": "fingerprints of the stored secrets, never their values"},
                   "updated": {"type": "string"}},
}


@dataclass(frozen=True)
class ChannelSettings:
    tenant: str
    kind: str
    config: dict[str, Any]
    secret_fingerprints: dict[str, str]
    updated: str

    def public(self) -> dict[str, Any]:
        return {"kind": self.kind, "config": self.config, "secrets": self.secret_fingerprints, "updated": self.updated}


def _context(tenant_id: str, kind: str) -> str:
    return f"tenant:{tenant_id}/channel:{kind}"


def channel_kind(name: str) -> ChannelKind:
    kind = KINDS.get(name)
    if kind is None:
        raise NotFoundError("channel kind")
    return kind


def put_channel(tenant_id: str, kind_name: str, body: Any, policy: UrlPolicy, vault: SecretVault,
                actor: str) -> Callable[[WriteTx], ChannelSettings]:
    """Validate and store a channel's settings; secrets not mentioned are kept, null removes one."""
    kind = channel_kind(kind_name)
    validate(input_schema(kind), body)
    config = dict(body.get("config", {}))
    for name in kind.url_fields:
        if name in config:
            config[name] = check_url(config[name], policy, f"config.{name}")
    changes = dict(body.get("secrets", {}))
    for name in kind.secret_urls:
        if changes.get(name) is not None:
            changes[name] = check_url(changes[name], policy, f"secrets.{name}")

    def write(tx: WriteTx) -> ChannelSettings:
        get_tenant(tx.conn, tenant_id)
        row = tx.execute("SELECT config, secrets FROM channels WHERE tenant = ? AND kind = ?",
                         (tenant_id, kind.name)).fetchone()
        stored: dict[str, str] = vault.decrypt_json(bytes(row[1]), context=_context(tenant_id, kind.name)) if row and row[1] else {}
        merged = dict(json.loads(row[0])) if row else {}
        merged.update(config)
        for name, value in changes.items():
            if value is None:
                stored.pop(name, None)
            else:
                stored[name] = value
        now = utc_timestamp()
        blob = vault.encrypt_json(stored, context=_context(tenant_id, kind.name)) if stored else None
        tx.execute("INSERT INTO channels (tenant, kind, config, secrets, updated) VALUES (?, ?, ?, ?, ?) "
                   "ON CONFLICT (tenant, kind) DO UPDATE SET config = excluded.config, secrets = excluded.secrets, "
                   "updated = excluded.updated", (tenant_id, kind.name, json.dumps(merged), blob, now))
        prints = {name: fingerprint(value) for name, value in sorted(stored.items())}
        tx.append(LedgerEvent(kind="channel.updated", tenant=tenant_id, actor=actor,
                              reason=f"{kind.name} channel settings changed",
                              data={"channel": kind.name, "config": merged, "fingerprints": prints,
                                    "changed": sorted(changes)}))
        return ChannelSettings(tenant_id, kind.name, merged, prints, now)
    return write


def list_channels(conn: sqlite3.Connection, tenant_id: str, vault: SecretVault) -> list[ChannelSettings]:
    out = []
    for kind, config, blob, updated in conn.execute(
            "SELECT kind, config, secrets, updated FROM channels WHERE tenant = ? ORDER BY kind", (tenant_id,)):
        stored = vault.decrypt_json(bytes(blob), context=_context(tenant_id, kind)) if blob else {}
        out.append(ChannelSettings(tenant_id, kind, json.loads(config),
                                   {n: fingerprint(v) for n, v in sorted(stored.items())}, updated))
    return out


def channel_secrets(conn: sqlite3.Connection, tenant_id: str, kind: str, vault: SecretVault) -> dict[str, str]:
    """The decrypted secrets, for the channel senders only (never for an API response)."""
    row = conn.execute("SELECT secrets FROM channels WHERE tenant = ? AND kind = ?", (tenant_id, kind)).fetchone()
    return vault.decrypt_json(bytes(row[0]), context=_context(tenant_id, kind)) if row and row[0] else {}

