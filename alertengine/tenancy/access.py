"""Who may do what: API keys, roles, the one permission table, and authenticating a bearer key."""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import sqlite3
from dataclasses import dataclass

from ..errors import AlertEngineError

APPLIANCE_ADMIN = "appliance_admin"
# A scrape key is what a Prometheus job holds: it reads /metrics and nothing else. It is an
# appliance key (no tenant), because /metrics spans the tenants: a tenant's key that could read it
# would see the others' names and figures. It acts in no tenant (``may_act_in``).
SCRAPE = "scrape"
APPLIANCE_ROLES = (APPLIANCE_ADMIN, SCRAPE)   # keys without a tenant
TENANT_ROLES = ("admin", "operator", "auditor", "viewer")
ROLES = (*APPLIANCE_ROLES, *TENANT_ROLES)

# Every permission decision is made from this table. An appliance admin holds every permission in
# every tenant (it runs the box); tenant keys hold those of their role, in their own tenant only;
# a scrape key holds metrics.read alone.
PERMISSIONS: dict[str, frozenset[str]] = {
    "tenant.create": frozenset({APPLIANCE_ADMIN}),
    "tenant.list": frozenset({APPLIANCE_ADMIN}),
    "tenant.read": frozenset({APPLIANCE_ADMIN, "admin", "operator", "auditor", "viewer"}),
    "tenant.shadow.read": frozenset({APPLIANCE_ADMIN, "admin", "operator", "auditor", "viewer"}),
    "tenant.shadow.write": frozenset({APPLIANCE_ADMIN, "admin"}),
    "key.manage": frozenset({APPLIANCE_ADMIN, "admin"}),
    "service.read": frozenset({APPLIANCE_ADMIN, "admin", "operator", "auditor", "viewer"}),
    "service.write": frozenset({APPLIANCE_ADMIN, "admin"}),
    "channel.read": frozenset({APPLIANCE_ADMIN, "admin", "auditor"}),
    "channel.write": frozenset({APPLIANCE_ADMIN, "admin"}),
    "incident.read": frozenset({APPLIANCE_ADMIN, "admin", "operator", "auditor", "viewer"}),
    "incident.act": frozenset({APPLIANCE_ADMIN, "admin", "operator"}),
    "policy.read": frozenset({APPLIANCE_ADMIN, "admin", "operator", "auditor", "viewer"}),
    "policy.write": frozenset({APPLIANCE_ADMIN, "admin"}),
    "notify.read": frozenset({APPLIANCE_ADMIN, "admin", "operator", "auditor", "viewer"}),
    "notify.write": frozenset({APPLIANCE_ADMIN, "admin"}),
    "silence.write": frozenset({APPLIANCE_ADMIN, "admin", "operator"}),
    "slo.read": frozenset({APPLIANCE_ADMIN, "admin", "operator"}),
    "metrics.read": frozenset({APPLIANCE_ADMIN, SCRAPE}),
    "ledger.read": frozenset({APPLIANCE_ADMIN, "admin", "auditor"}),
    "ledger.export": frozenset({APPLIANCE_ADMIN, "admin", "auditor"}),
}

_KEY_RE = re.compile(r"^ae_([0-9a-f]{12})_([A-Za-z0-9_-]{43})$")
_DUMMY_HASH = hashlib.sha256(b"no such key").digest()


class AccessError(AlertEngineError):
    """Authentication (status 401) or authorisation (status 403) refused."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


@dataclass(frozen=True)
class Principal:
    """The authenticated caller of a request."""

    key_id: str
    tenant: str | None  # None for appliance keys (APPLIANCE_ROLES)
    role: str
    name: str

    @property
    def actor(self) -> str:
        """How the ledger names this caller."""
        return f"apikey:{self.key_id}"

    def may(self, permission: str) -> bool:
        return self.role in PERMISSIONS[permission]

    def may_act_in(self, tenant: str) -> bool:
        # Of the keys without a tenant only the appliance admin acts in tenants: a scrape key is
        # refused a tenant's path even if a tenant permission were ever granted to it by mistake.
        if self.tenant is None:
            return self.role == APPLIANCE_ADMIN
        # as bytes: compare_digest refuses non-ASCII str, and a path may carry any text
        return hmac.compare_digest(self.tenant.encode("utf-8", "surrogatepass"),
                                   tenant.encode("utf-8", "surrogatepass"))


def role_fits(tenant: str | None, role: str) -> bool:
    """May a key of ``role`` be made for ``tenant``? Appliance roles have no tenant, tenant roles one."""
    return role in (APPLIANCE_ROLES if tenant is None else TENANT_ROLES)


@dataclass(frozen=True)
class NewKey:
    """A freshly minted key: ``secret`` is shown once and never stored."""

    key_id: str
    secret: str
    key_hash: bytes


def mint_key() -> NewKey:
    key_id = secrets.token_hex(6)
    raw = secrets.token_urlsafe(32)
    return NewKey(key_id, f"ae_{key_id}_{raw}", hashlib.sha256(raw.encode()).digest())


def authenticate(conn: sqlite3.Connection, authorization: str | None) -> Principal:
    """Resolve an ``Authorization: Bearer <key>`` header to a Principal, or raise AccessError(401)."""
    if not authorization:
        raise AccessError(401, "unauthenticated", "an API key is required: Authorization: Bearer <key>")
    scheme, _, token = authorization.partition(" ")
    match = _KEY_RE.match(token.strip()) if scheme.lower() == "bearer" else None
    if match is None:
        hmac.compare_digest(_DUMMY_HASH, _DUMMY_HASH)
        raise AccessError(401, "unauthenticated", "malformed API key")
    key_id, raw = match.groups()
    row = conn.execute("SELECT key_hash, tenant, role, name, revoked FROM api_keys WHERE id = ?", (key_id,)).fetchone()
    presented = hashlib.sha256(raw.encode()).digest()
    stored = bytes(row[0]) if row else _DUMMY_HASH
    if not hmac.compare_digest(presented, stored) or row is None:
        raise AccessError(401, "unauthenticated", "unknown or revoked API key")
    if row[4] is not None:
        raise AccessError(401, "unauthenticated", "unknown or revoked API key")
    return Principal(key_id, row[1], row[2], row[3])


def authorize(principal: Principal, permission: str, tenant: str | None) -> None:
    """Raise AccessError(403) unless ``principal`` holds ``permission`` (in ``tenant``, if given)."""
    if permission not in PERMISSIONS:
        raise KeyError(f"unknown permission {permission!r}")
    if tenant is not None and not principal.may_act_in(tenant):
        raise AccessError(403, "forbidden", "this key may not act in that tenant")
    if not principal.may(permission):
        raise AccessError(403, "forbidden", f"role {principal.role!r} may not {permission.replace('.', ' ')}")
