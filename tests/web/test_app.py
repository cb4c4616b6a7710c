"""The web app in process: /healthz and the shared JSON error shape."""

from __future__ import annotations

import httpx

from alertengine.appliance import DataDir
from alertengine.config import Config
from alertengine.store import Database
from alertengine.web.app import create_app
from tests.conftest import event


async def test_healthz_reports_ledger_size_and_checkpoint(data_dir: DataDir, config: Config, db: Database) -> None:
    db.append_sync(event(1), event(2))
    db.checkpoint_sync("test")
    app = create_app(config, data_dir, db)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as client:
        reply = await client.get("/healthz")
        wrong_method = await client.post("/healthz")
    body = reply.json()
    assert reply.status_code == 200
    assert body["ledger"]["size"] == 2 and body["ledger"]["checkpoint_size"] == 2
    assert body["ledger"]["vkey"] == data_dir.signer.vkey
    assert wrong_method.status_code == 405
    assert wrong_method.json() == {"error": {"code": "method_not_allowed", "message": "Method Not Allowed"}}
