"""Tenants and their API keys: creation, listing, shadow mode, key minting and revocation, ledgered."""

from __future__ import annotations

import dataclasses
import hashlib
import secrets
import sqlite3
from dataclasses import dataclass
from typing import Callable

from ..errors import ConflictError, NotFoundError
from ..ledger.entry import SYSTEM_TENANT, LedgerEvent, fingerprint, utc_timestamp
from ..schema import validate
from ..store import WriteTx
from .access import APPLIANCE_ADMIN, APPLIANCE_ROLES, TENANT_ROLES, mint_key, role_fits

NAME_SCHEMA = {"type": "string", "minLength": 1, "maxLength": 64, "pattern": r"^[A-Za-z0-9][A-Za-z0-9 ._-]*$"}


@dataclass(frozen=True)
class Tenant:
    id: str
    name: str
    shadow: bool
    created: str

    def public(self) -> dict:
        return {"id": self.id, "name": self.name, "shadow": self.shadow, "created": self.created}


@dataclass(frozen=True)
class ApiKey:
    id: str
    tenant: str | None
    role: str
    name: str
    created: str
    created_by: str
    revoked: str | None
    last_used: str | None

    def public(self) -> dict:
        return {"id": self.id, "tenant": self.tenant, "role": self.role, "name": self.name, "created": self.created,
                "created_by": self.created_by, "revoked": self.revoked, "last_used": self.last_used}


# --- tenants ------------------------------------------------------------------------------------

def new_tenant_id() -> str:
    """Opaque and unguessable; never a credential."""
    return "t_" + secrets.token_hex(8)


def create_tenant(name: str, actor: str) -> Callable[[WriteTx], Tenant]:
    validate(NAME_SCHEMA, name, "name")

    def write(tx: WriteTx) -> Tenant:
        if tx.execute("SELECT 1 FROM tenants WHERE name = ?", (name,)).fetchone():
            raise ConflictError("name", f"a tenant named {name!r} already exists")
        tenant = Tenant(new_tenant_id(), name, True, utc_timestamp())
        tx.execute("INSERT INTO tenants (id, name, shadow, created) VALUES (?, ?, 1, ?)",
                   (tenant.id, tenant.name, tenant.created))
        tx.append(LedgerEvent(kind="tenant.created", tenant=tenant.id, actor=actor, reason=f"tenant {name!r} created",
                              decision="shadow", data={"name": name, "shadow": True}))
        return tenant
    return write


def get_tenant(conn: sqlite3.Connection, tenant_id: str) -> Tenant:
    row = conn.execute("SELECT id, name, shadow, created FROM tenants WHERE id = ?", (tenant_id,)).fetchone()
    if row is None:
        raise NotFoundError("tenant")
    return Tenant(row[0], row[1], bool(row[2]), row[3])


def list_tenants(conn: sqlite3.Connection) -> list[Tenant]:
    return [Tenant(r[0], r[1], bool(r[2]), r[3])
            for r in conn.execute("SELECT id, name, shadow, created FROM tenants ORDER BY created, id")]


def set_shadow(tenant_id: str, shadow: bool, actor: str) -> Callable[[WriteTx], Tenant]:
    """Shadow mode on (everything runs, nothing leaves) or off (going live)."""

    def write(tx: WriteTx) -> Tenant:
        tenant = get_tenant(tx.conn, tenant_id)
        if tenant.shadow != shadow:
            tx.execute("UPDATE tenants SET shadow = ? WHERE id = ?", (int(shadow), tenant_id))
            tx.append(LedgerEvent(kind="tenant.shadow_enabled" if shadow else "tenant.shadow_disabled",
                                  tenant=tenant_id, actor=actor, decision="shadow" if shadow else "live",
                                  reason="shadow mode on: nothing leaves the appliance" if shadow
                                  else "shadow mode off: the tenant is live"))
        return Tenant(tenant.id, tenant.name, shadow, tenant.created)
    return write


# --- API keys -----------------------------------------------------------------------------------

def create_key(tenant_id: str | None, role: str, name: str, actor: str) -> Callable[[WriteTx], tuple[ApiKey, str]]:
    """Mint a key. Returns the stored key and its secret, which is shown once and never stored."""
    validate(NAME_SCHEMA, name, "name")
    if not role_fits(tenant_id, role):
        allowed = ", ".join(TENANT_ROLES if tenant_id is not None else APPLIANCE_ROLES)
        raise ConflictError("role", f"role must be one of {allowed}, got {role!r}")

    def write(tx: WriteTx) -> tuple[ApiKey, str]:
        if tenant_id is not None:
            get_tenant(tx.conn, tenant_id)
        new = mint_key()
        key = ApiKey(new.key_id, tenant_id, role, name, utc_timestamp(), actor, None, None)
        tx.execute("INSERT INTO api_keys (id, tenant, role, name, key_hash, created, created_by) "
                   "VALUES (?, ?, ?, ?, ?, ?, ?)", (key.id, tenant_id, role, name, new.key_hash, key.created, actor))
        tx.append(LedgerEvent(kind="apikey.created", tenant=tenant_id or SYSTEM_TENANT, actor=actor,
                              reason=f"API key {key.id} ({role}) created", decision=role,
                              data={"key_id": key.id, "role": role, "name": name}))
        return key, new.secret
    return write


def _key_from_row(r: tuple) -> ApiKey:
    return ApiKey(r[0], r[1], r[2], r[3], r[4], r[5], r[6], r[7])


_KEY_COLUMNS = "id, tenant, role, name, created, created_by, revoked, last_used"


def list_keys(conn: sqlite3.Connection, tenant_id: str | None, *, appliance: bool = False) -> list[ApiKey]:
    """A tenant's keys, or (``appliance=True``) the appliance-admin keys."""
    if appliance:
        rows = conn.execute(f"SELECT {_KEY_COLUMNS} FROM api_keys WHERE tenant IS NULL ORDER BY created, id")
    else:
        rows = conn.execute(f"SELECT {_KEY_COLUMNS} FROM api_keys WHERE tenant = ? ORDER BY created, id", (tenant_id,))
    return [_key_from_row(r) for r in rows]


def revoke_key(key_id: str, tenant_id: str | None, actor: str) -> Callable[[WriteTx], ApiKey]:
    """Revoke at once. ``tenant_id`` scopes the lookup (None: any key, for the appliance admin)."""

    def write(tx: WriteTx) -> ApiKey:
        row = tx.execute(f"SELECT {_KEY_COLUMNS} FROM api_keys WHERE id = ?", (key_id,)).fetchone()
        if row is None or tenant_id is not None and row[1] != tenant_id:
            raise NotFoundError("API key")
        key = _key_from_row(row)
        if key.revoked is None:
            revoked = utc_timestamp()
            tx.execute("UPDATE api_keys SET revoked = ? WHERE id = ?", (revoked, key_id))
            tx.append(LedgerEvent(kind="apikey.revoked", tenant=key.tenant or SYSTEM_TENANT, actor=actor,
                                  reason=f"API key {key_id} revoked", data={"key_id": key_id, "role": key.role}))
            key = dataclasses.replace(key, revoked=revoked)
        return key
    return write


def touch_key(key_id: str, when: str) -> Callable[[WriteTx], None]:
    def write(tx: WriteTx) -> None:
        tx.execute("UPDATE api_keys SET last_used = ? WHERE id = ?", (when, key_id))
    return write


def ensure_admin_key(actor: str = "system") -> Callable[[WriteTx], str | None]:
    """First start: mint the appliance-admin key if there is no usable one. Returns its secret once."""

    def write(tx: WriteTx) -> str | None:
        if tx.execute("SELECT 1 FROM api_keys WHERE tenant IS NULL AND role = ? AND revoked IS NULL",
                      (APPLIANCE_ADMIN,)).fetchone():   # a scrape key is no admin key
            return None
        _key, secret = create_key(None, APPLIANCE_ADMIN, "appliance admin", actor)(tx)
        return secret
    return write



# --- integration keys (ingest) ------------------------------------------------------------------

@dataclass(frozen=True)
class IntegrationKey:
    id: str
    tenant: str
    name: str
    created: str
    revoked: str | None

    def public(self) -> dict:
        return {"id": self.id, "tenant": self.tenant, "name": self.name, "created": self.created,
                "revoked": self.revoked}


def _integration_hash(key: str) -> bytes:
    return hashlib.sha256(key.encode()).digest()


def create_integration(tenant_id: str, name: str, actor: str) -> Callable[[WriteTx], tuple[IntegrationKey, str]]:
    """An ingest key: 32 lower-case letters and digits, so it also serves as a PagerDuty routing key.
    It authenticates only ingest endpoints and resolves to its tenant; stored as a hash."""
    validate(NAME_SCHEMA, name, "name")

    def write(tx: WriteTx) -> tuple[IntegrationKey, str]:
        get_tenant(tx.conn, tenant_id)
        key = "".join(secrets.choice("abcdefghijklmnopqrstuvwxyz0123456789") for _ in range(32))
        item = IntegrationKey(secrets.token_hex(6), tenant_id, name, utc_timestamp(), None)
        tx.execute("INSERT INTO integration_keys (key_hash, id, tenant, name, created) VALUES (?, ?, ?, ?, ?)",
                   (_integration_hash(key), item.id, tenant_id, name, item.created))
        tx.append(LedgerEvent(kind="integration.created", tenant=tenant_id, actor=actor,
                              reason=f"ingest integration {name!r} created",
                              data={"integration": item.id, "name": name, "key_fingerprint": fingerprint(key)}))
        return item, key
    return write


def list_integrations(conn: sqlite3.Connection, tenant_id: str) -> list[IntegrationKey]:
    return [IntegrationKey(*r) for r in conn.execute(
        "SELECT id, tenant, name, created, revoked FROM integration_keys WHERE tenant = ? ORDER BY created, id",
        (tenant_id,))]


def revoke_integration(tenant_id: str, integration_id: str, actor: str) -> Callable[[WriteTx], IntegrationKey]:
    def write(tx: WriteTx) -> IntegrationKey:
        row = tx.execute("SELECT id, tenant, name, created, revoked FROM integration_keys WHERE id = ? AND tenant = ?",
                         (integration_id, tenant_id)).fetchone()
        if row is None:
            raise NotFoundError("integration")
        item = IntegrationKey(*row)
        if item.revoked is None:
            item = dataclasses.replace(item, revoked=utc_timestamp())
            tx.execute("UPDATE integration_keys SET revoked = ? WHERE id = ?", (item.revoked, item.id))
            tx.append(LedgerEvent(kind="integration.revoked", tenant=tenant_id, actor=actor,
                                  reason=f"ingest integration {item.name!r} revoked", data={"integration": item.id}))
        return item
    return write


def integration_tenant(conn: sqlite3.Connection, key: str | None) -> tuple[str, str] | None:
    """(tenant, integration id) of a live ingest key, or None."""
    if not key or len(key) > 128:
        return None
    row = conn.execute("SELECT tenant, id FROM integration_keys WHERE key_hash = ? AND revoked IS NULL",
                       (_integration_hash(key),)).fetchone()
    return (row[0], row[1]) if row else None
