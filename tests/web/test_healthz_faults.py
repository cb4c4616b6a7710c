"""/healthz and the API while the store cannot write: EMERGENCY and 503 with Retry-After, then
NORMAL again once writes succeed."""

from __future__ import annotations

from tests.conftest import sqlite_only
from tests.store.test_store_faults import fill_disk, free_disk
from tests.web.conftest import World


@sqlite_only   # a full disk made with SQLite's page cap
async def test_healthz_and_writes_during_a_full_disk(world: World) -> None:
    world.db.write_sync(fill_disk)
    auth = world.auth(world.admin)
    replies = [await world.client.post("/api/tenants", json={"name": f"t{n}-" + "x" * 60}, headers=auth)
               for n in range(40)]
    refused = [r for r in replies if r.status_code != 201]
    assert refused, "the cap never filled the database"
    assert all(r.status_code == 503 and r.headers["retry-after"] == "5" for r in refused), refused[0].text
    health = (await world.client.get("/healthz")).json()
    assert health["mode"] == "EMERGENCY" and health["status"] == "failing"
    assert "full" in health["conditions"]["store_errors"]
    world.db.write_sync(free_disk)
    again = await world.client.post("/api/tenants", json={"name": "after"}, headers=auth)
    assert again.status_code == 201
    health = (await world.client.get("/healthz")).json()
    assert health["mode"] == "NORMAL" and health["status"] == "ok"
