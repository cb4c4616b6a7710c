"""An in-process appliance with two tenants, keys of every role, a service and channel settings."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import AsyncIterator

import httpx
import pytest

from alertengine.appliance import DataDir
from alertengine.config import Config
from alertengine.store import Database
from alertengine.tenancy.access import APPLIANCE_ADMIN, TENANT_ROLES
from alertengine.tenancy.tenants import create_key, create_tenant, revoke_key
from alertengine.web.app import create_app
from alertengine.web.throttle import FailureThrottle


@dataclass
class World:
    app: object
    db: Database
    data: DataDir
    client: httpx.AsyncClient
    admin: str                                   # appliance-admin key
    tenants: dict[str, str] = field(default_factory=dict)          # label -> tenant id
    keys: dict[tuple[str, str], str] = field(default_factory=dict)  # (label, role) -> secret
    revoked: dict[str, str] = field(default_factory=dict)           # label -> revoked admin key
    key_ids: dict[str, str] = field(default_factory=dict)           # label -> an admin key's id

    def auth(self, secret: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {secret}"}


@pytest.fixture
async def world(data_dir: DataDir, config: Config, db: Database) -> AsyncIterator[World]:
    _, admin = db.write_sync(create_key(None, APPLIANCE_ADMIN, "root", "test"))
    app = create_app(config, data_dir, db)
    transport = httpx.ASGITransport(app=app, client=("127.0.0.1", 50000))
    async with httpx.AsyncClient(transport=transport, base_url="http://appliance") as client:
        w = World(app, db, data_dir, client, admin)
        # The matrix sends hundreds of refused requests from one address; the throttle has its own test.
        app.state.auth_throttle = FailureThrottle(free=1_000_000)
        for label in ("a", "b"):
            tenant = db.write_sync(create_tenant(f"tenant-{label}", "test"))
            w.tenants[label] = tenant.id
            for role in TENANT_ROLES:
                key, secret = db.write_sync(create_key(tenant.id, role, f"{label}-{role}", "test"))
                w.keys[(label, role)] = secret
                if role == "admin":
                    w.key_ids[label] = key.id
            old, secret = db.write_sync(create_key(tenant.id, "admin", f"{label}-old", "test"))
            db.write_sync(revoke_key(old.id, tenant.id, "test"))
            w.revoked[label] = secret
        yield w
