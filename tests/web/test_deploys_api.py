"""Commit context through the API, the GitHub push webhook and the CLI, and into the diagnosis."""

from __future__ import annotations

import hashlib
import hmac
import json

from alertengine.incidents.detection import ServiceRef
from alertengine.notify.channels.settings import put_channel
from alertengine.signals import HealthReading
from tests.conftest import run_cli
from tests.web.conftest import World

SHA = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b"
SLOW = HealthReading("answered", "sdk", 200, 10.0, "warning", p95_ms=9000.0, error_rate=0.0, health_score=70.0,
                     sample_size=100)


async def test_a_recent_risky_deploy_leads_the_heuristic_diagnosis(world: World) -> None:
    t, admin = world.tenants["a"], world.auth(world.keys[("a", "admin")])
    made = await world.client.post(f"/api/tenants/{t}/deploys", headers=admin, json={
        "sha": SHA, "message": "add index to orders", "author": "Ada <ada@example.com>", "service": "checkout",
        "files": ["db/migrations/0042_orders.sql", "app/orders.py"], "additions": 12, "deletions": 3})
    assert made.status_code == 201 and made.json()["risky_paths"] == ["db/migrations/0042_orders.sql"]
    again = await world.client.post(f"/api/tenants/{t}/deploys", headers=admin, json={"sha": SHA, "service": "checkout"})
    assert again.status_code == 201 and again.json()["id"] == made.json()["id"]
    bad = await world.client.post(f"/api/tenants/{t}/deploys", headers=admin, json={"sha": "zz"})
    assert bad.status_code == 422 and bad.json()["error"]["field"] == "sha"
    ref = ServiceRef(t, "svc_00000000000000aa", "checkout")
    for _ in range(3):
        await world.app.state.detector.on_reading(ref, SLOW)  # type: ignore[attr-defined]
    diagnosed = json.loads(world.db.read_conn().execute(
        "SELECT body FROM ledger WHERE kind = 'incident.diagnosed'").fetchone()[0])
    assert diagnosed["data"]["category"] == "code_deploy" and diagnosed["data"]["deploy"]["sha"] == SHA
    assert "ada@example.com" not in json.dumps(diagnosed)
    ledgered = b"".join(r[0] for r in world.db.read_conn().execute("SELECT body FROM ledger"))
    assert b"ada@example.com" not in ledgered


async def test_github_push_webhook_is_signature_checked(world: World) -> None:
    t = world.tenants["a"]
    secret = "gh-webhook-secret-0123456789"
    world.db.write_sync(put_channel(t, "github", {"config": {"service": "checkout"}, "secrets": {"webhook_secret": secret}},
                                    world.app.state.url_policy, world.app.state.vault, "test"))  # type: ignore[attr-defined]
    push = {"ref": "refs/heads/main", "repository": {"pushed_at": 1795356000},
            "commits": [{"id": SHA, "message": "tune pool size", "timestamp": "2026-11-22T13:00:00Z",
                         "author": {"name": "Ada", "email": "ada@example.com"},
                         "added": [], "removed": [], "modified": ["config/pool.yaml"]}]}
    raw = json.dumps(push).encode()
    sig = "sha256=" + hmac.new(secret.encode(), raw, hashlib.sha256).hexdigest()
    ok = await world.client.post(f"/ingest/github/{t}", content=raw, headers={"X-Hub-Signature-256": sig,
                                                                              "X-GitHub-Event": "push"})
    assert ok.status_code == 200 and ok.json() == {"recorded": 1}
    forged = await world.client.post(f"/ingest/github/{t}", content=raw, headers={"X-Hub-Signature-256": "sha256=" + "0" * 64})
    assert forged.status_code == 401
    listed = (await world.client.get(f"/api/tenants/{t}/deploys", headers=world.auth(world.keys[("a", "viewer")]))).json()
    assert [d["sha"] for d in listed["deploys"]] == [SHA] and listed["deploys"][0]["service"] == "checkout"


def test_deploy_record_from_the_cli(data_dir) -> None:  # type: ignore[no-untyped-def]
    code = run_cli("tenant", "add", "acme", "--data-dir", str(data_dir.path))
    tenant = json.loads(code.stdout)["id"]
    result = run_cli("deploy", "record", "--tenant", tenant, "--sha", SHA, "--message", "release 42",
                     "--file", "schema.sql", "--data-dir", str(data_dir.path))
    assert result.code == 0, result.stderr
    assert json.loads(result.stdout)["risky_paths"] == ["schema.sql"]
