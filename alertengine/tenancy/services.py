"""Monitored services of a tenant: health URL, recovery webhook and its signing secret, contacts,
approvers, labels and policy overrides; validated, encrypted where secret, ledgered on change."""

from __future__ import annotations

import json
import secrets
import sqlite3
from dataclasses import dataclass
from typing import Any, Callable

from ..errors import ConflictError, NotFoundError
from ..ledger.entry import LedgerEvent, fingerprint, identity_fingerprint, utc_timestamp
from ..net.urlpolicy import UrlPolicy, check_url
from ..schema import validate
from ..store import WriteTx
from .tenants import NAME_SCHEMA, get_tenant
from .vault import SecretVault

E164 = {"type": "string", "pattern": r"^\+[1-9][0-9]{6,14}$", "description": "E.164 phone number"}
CONTACT_SCHEMA = {
    "type": "object", "additionalProperties": False,
    "properties": {
        "name": {"type": "string", "maxLength": 128},
        "telegram_chat_id": {"type": "string", "pattern": r"^-?[0-9]{1,20}$"},
        "whatsapp": E164,
        "phone": E164,
        "slack": {"type": "string", "maxLength": 64, "pattern": r"^[A-Za-z0-9]+$"},
    },
}
RESPONDERS = {"type": "array", "maxItems": 50, "uniqueItems": True,
              "items": {"type": "string", "pattern": r"^(person|team|schedule):[a-z0-9][a-z0-9_.-]{0,63}$"}}
IDENTITIES = {"type": "array", "maxItems": 50, "items": {"type": "string", "minLength": 1, "maxLength": 64}}
SERVICE_INPUT = {
    "type": "object", "additionalProperties": False, "required": ["name", "health_url"],
    "properties": {
        "name": NAME_SCHEMA,
        "health_url": {"type": "string", "maxLength": 2048, "description": "polled for health (http/https)"},
        "poll_interval": {"type": "number", "minimum": 0.2, "maximum": 3600, "description": "seconds, default 5"},
        "recovery_webhook_url": {"type": ["string", "null"], "maxLength": 2048},
        "contacts": {"type": "object", "additionalProperties": False,
                     "properties": {"primary": CONTACT_SCHEMA, "secondary": CONTACT_SCHEMA}},
        "responders": {"type": "object", "additionalProperties": False,
                       "properties": {"primary": RESPONDERS, "secondary": RESPONDERS},
                       "description": "who is told about this service's incidents: person:<id> and team:<id>, "
                                      "in order (the contacts above are told too)"},
        "escalation": {"type": "string", "maxLength": 64,
                       "description": "the escalation chain of this service's incidents (a name in the routing "
                                      "document, or none); default: the route's"},
        "approvers": {"type": "object", "additionalProperties": False,
                      "properties": {"telegram": IDENTITIES, "whatsapp": IDENTITIES, "slack": IDENTITIES,
                                     "link": IDENTITIES, "people": RESPONDERS},
                      "description": "who may approve recoveries: per channel (chat user ids, phone numbers), "
                                     "and people / teams (person:<id>, team:<id>) by their addresses"},
        "labels": {"type": "object", "maxProperties": 32,
                   "additionalProperties": {"type": "string", "maxLength": 256}},
        "policy": {"type": "object", "maxProperties": 64, "description": "per-service policy overrides"},
    },
}
SERVICE_OUTPUT = {
    "type": "object",
    "required": ["id", "tenant", "name", "health_url", "poll_interval", "recovery_webhook_url",
                 "webhook_secret_fingerprint", "contacts", "approvers", "labels", "policy", "created", "updated"],
    "properties": {
        "id": {"type": "string"}, "tenant": {"type": "string"}, "name": {"type": "string"},
        "health_url": {"type": "string"}, "poll_interval": {"type": "number"},
        "recovery_webhook_url": {"type": ["string", "null"]},
        "webhook_secret_fingerprint": {"type": "string"},
        "webhook_secret": {"type": "string", "description": "present only when created or rotated: store it now"},
        "contacts": {"type": "object"}, "approvers": {"type": "object"}, "labels": {"type": "object"},
        "policy": {"type": "object"}, "created": {"type": "string"}, "updated": {"type": "string"},
    },
}


@dataclass(frozen=True)
class Service:
    id: str
    tenant: str
    name: str
    spec: dict[str, Any]
    webhook_secret_fingerprint: str
    created: str
    updated: str

    def public(self, *, secret: str | None = None) -> dict[str, Any]:
        out = {"id": self.id, "tenant": self.tenant, "name": self.name, **self.spec,
               "webhook_secret_fingerprint": self.webhook_secret_fingerprint,
               "created": self.created, "updated": self.updated}
        if secret is not None:
            out["webhook_secret"] = secret
        return out


def normalise(body: Any, policy: UrlPolicy) -> dict[str, Any]:
    """Validate a service definition and fill in defaults. Raises SchemaError / UrlPolicyError."""
    validate(SERVICE_INPUT, body)
    webhook = body.get("recovery_webhook_url")
    return {
        "health_url": check_url(body["health_url"], policy, "health_url"),
        "poll_interval": float(body.get("poll_interval", 5)),
        "recovery_webhook_url": check_url(webhook, policy, "recovery_webhook_url") if webhook else None,
        "contacts": body.get("contacts", {}),
        "responders": body.get("responders", {}),
        **({"escalation": body["escalation"]} if "escalation" in body else {}),
        "approvers": body.get("approvers", {}),
        "labels": body.get("labels", {}),
        "policy": body.get("policy", {}),
    }


def _context(tenant_id: str, service_id: str) -> str:
    return f"tenant:{tenant_id}/service:{service_id}/webhook_secret"


def _ledger_view(name: str, spec: dict[str, Any]) -> dict[str, Any]:
    """What the ledger records of a service: contacts and approvers only as fingerprints."""
    people = {role: {k: identity_fingerprint(v) for k, v in contact.items()}
              for role, contact in spec["contacts"].items()}
    approvers = {ch: [identity_fingerprint(i) for i in ids] for ch, ids in spec["approvers"].items()}
    return {"name": name, "health_url": spec["health_url"], "poll_interval": spec["poll_interval"],
            "recovery_webhook_url": spec["recovery_webhook_url"], "contacts": people,
            "responders": spec.get("responders", {}), "approvers": approvers,
            "labels": spec["labels"], "policy": spec["policy"]}


def create_service(tenant_id: str, name: str, spec: dict[str, Any], vault: SecretVault,
                   actor: str) -> Callable[[WriteTx], tuple[Service, str]]:
    """Create a service with a fresh webhook signing secret (returned once)."""

    def write(tx: WriteTx) -> tuple[Service, str]:
        get_tenant(tx.conn, tenant_id)
        if tx.execute("SELECT 1 FROM services WHERE tenant = ? AND name = ?", (tenant_id, name)).fetchone():
            raise ConflictError("name", f"a service named {name!r} already exists")
        service_id = "svc_" + secrets.token_hex(8)
        secret = "whsec_" + secrets.token_urlsafe(32)
        now = utc_timestamp()
        tx.execute("INSERT INTO services (id, tenant, name, spec, webhook_secret, created, updated) "
                   "VALUES (?, ?, ?, ?, ?, ?, ?)",
                   (service_id, tenant_id, name, json.dumps(spec), vault.encrypt(secret, context=_context(tenant_id, service_id)),
                    now, now))
        tx.append(LedgerEvent(kind="service.created", tenant=tenant_id, actor=actor, reason=f"service {name!r} added",
                              data={"service": service_id, **_ledger_view(name, spec),
                                    "webhook_secret_fingerprint": fingerprint(secret)}))
        return Service(service_id, tenant_id, name, spec, fingerprint(secret), now, now), secret
    return write


def get_service(conn: sqlite3.Connection, tenant_id: str, service_id: str, vault: SecretVault) -> Service:
    """The service, if it belongs to ``tenant_id``; otherwise NotFoundError, exactly as if absent."""
    row = conn.execute("SELECT id, tenant, name, spec, webhook_secret, created, updated FROM services "
                       "WHERE id = ? AND tenant = ?", (service_id, tenant_id)).fetchone()
    if row is None:
        raise NotFoundError("service")
    return _from_row(row, vault)


def _from_row(row: tuple, vault: SecretVault) -> Service:
    secret = vault.decrypt(bytes(row[4]), context=_context(row[1], row[0]))
    return Service(row[0], row[1], row[2], json.loads(row[3]), fingerprint(secret), row[5], row[6])


def list_services(conn: sqlite3.Connection, tenant_id: str, vault: SecretVault) -> list[Service]:
    rows = conn.execute("SELECT id, tenant, name, spec, webhook_secret, created, updated FROM services "
                        "WHERE tenant = ? ORDER BY name", (tenant_id,))
    return [_from_row(r, vault) for r in rows]


def update_service(tenant_id: str, service_id: str, name: str, spec: dict[str, Any], vault: SecretVault,
                   actor: str) -> Callable[[WriteTx], Service]:
    def write(tx: WriteTx) -> Service:
        old = get_service(tx.conn, tenant_id, service_id, vault)
        clash = tx.execute("SELECT 1 FROM services WHERE tenant = ? AND name = ? AND id != ?",
                           (tenant_id, name, service_id)).fetchone()
        if clash:
            raise ConflictError("name", f"a service named {name!r} already exists")
        now = utc_timestamp()
        tx.execute("UPDATE services SET name = ?, spec = ?, updated = ? WHERE id = ?",
                   (name, json.dumps(spec), now, service_id))
        before, after = _ledger_view(old.name, old.spec), _ledger_view(name, spec)
        changed = {k: {"from": before[k], "to": after[k]} for k in after if before[k] != after[k]}
        tx.append(LedgerEvent(kind="service.updated", tenant=tenant_id, actor=actor,
                              reason=f"service {name!r} changed: {', '.join(changed) or 'nothing'}",
                              data={"service": service_id, "changes": changed}))
        return Service(service_id, tenant_id, name, spec, old.webhook_secret_fingerprint, old.created, now)
    return write


def rotate_secret(tenant_id: str, service_id: str, vault: SecretVault, actor: str) -> Callable[[WriteTx], tuple[Service, str]]:
    def write(tx: WriteTx) -> tuple[Service, str]:
        old = get_service(tx.conn, tenant_id, service_id, vault)
        secret = "whsec_" + secrets.token_urlsafe(32)
        now = utc_timestamp()
        tx.execute("UPDATE services SET webhook_secret = ?, updated = ? WHERE id = ?",
                   (vault.encrypt(secret, context=_context(tenant_id, service_id)), now, service_id))
        tx.append(LedgerEvent(kind="service.secret_rotated", tenant=tenant_id, actor=actor,
                              reason=f"webhook signing secret of {old.name!r} rotated",
                              data={"service": service_id, "from_fingerprint": old.webhook_secret_fingerprint,
                                    "to_fingerprint": fingerprint(secret)}))
        return Service(service_id, tenant_id, old.name, old.spec, fingerprint(secret), old.created, now), secret
    return write


def remove_service(tenant_id: str, service_id: str, vault: SecretVault, actor: str) -> Callable[[WriteTx], Service]:
    def write(tx: WriteTx) -> Service:
        old = get_service(tx.conn, tenant_id, service_id, vault)
        tx.execute("DELETE FROM services WHERE id = ?", (service_id,))
        tx.append(LedgerEvent(kind="service.removed", tenant=tenant_id, actor=actor, reason=f"service {old.name!r} removed",
                              data={"service": service_id, "name": old.name}))
        return old
    return write


def service_spec(conn: sqlite3.Connection, tenant_id: str, service_id: str | None) -> dict[str, Any] | None:
    """The plain settings of a service (labels, contacts, responders, approvers; no secret), if it
    belongs to ``tenant_id``."""
    if not service_id:
        return None
    row = conn.execute("SELECT name, spec FROM services WHERE id = ? AND tenant = ?", (service_id, tenant_id)).fetchone()
    return {"name": row[0], **json.loads(row[1])} if row else None
