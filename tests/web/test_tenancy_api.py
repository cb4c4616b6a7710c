"""Tenancy through the API as a client uses it: replies, rows and ledger entries."""

from __future__ import annotations

import hashlib
import hmac
import json
import logging

import pytest

from alertengine.schema import validate
from alertengine.web.app import ENDPOINTS
from alertengine.web.throttle import FailureThrottle
from tests.conftest import run_cli
from tests.web.conftest import World

SERVICE = {"name": "checkout", "health_url": "http://10.0.0.5:8000/health/alerts", "poll_interval": 5,
           "recovery_webhook_url": "https://ops.example.com/recover",
           "contacts": {"primary": {"name": "Ada", "telegram_chat_id": "123456", "phone": "+15550001111"}},
           "approvers": {"telegram": ["123456"]}, "labels": {"team": "payments"}}


def ledger(world: World, kind: str) -> list[dict]:
    rows = world.db.read_conn().execute("SELECT body FROM ledger WHERE kind = ? ORDER BY seq", (kind,)).fetchall()
    return [json.loads(r[0]) for r in rows]


def response_schema(method: str, path: str) -> dict:
    [ep] = [e for e in ENDPOINTS if e.method == method and e.path == path]
    assert ep.response is not None
    return ep.response


async def test_tenant_lifecycle_and_shadow_mode(world: World) -> None:
    admin = world.auth(world.admin)
    created = await world.client.post("/api/tenants", json={"name": "globex"}, headers=admin)
    assert created.status_code == 201
    tenant = validate(response_schema("POST", "/api/tenants"), created.json())
    assert tenant["shadow"] is True and tenant["id"].startswith("t_") and "globex" not in tenant["id"]
    dup = await world.client.post("/api/tenants", json={"name": "globex"}, headers=admin)
    assert dup.status_code == 409 and dup.json()["error"]["field"] == "name"
    live = await world.client.delete(f"/tenant/{tenant['id']}/shadow", headers=admin)
    assert live.json() == {"tenant": tenant["id"], "shadow": False}
    again = await world.client.get(f"/tenant/{tenant['id']}/shadow", headers=admin)
    assert again.json()["shadow"] is False
    [entry] = ledger(world, "tenant.shadow_disabled")
    assert entry["tenant"] == tenant["id"] and entry["actor"].startswith("apikey:")


async def test_keys_are_shown_once_stored_hashed_and_revoked_at_once(world: World) -> None:
    t, auth = world.tenants["a"], world.auth(world.keys[("a", "admin")])
    made = await world.client.post(f"/api/tenants/{t}/keys", json={"role": "viewer", "name": "dashboard"}, headers=auth)
    assert made.status_code == 201
    secret, key_id = made.json()["secret"], made.json()["key"]["id"]
    listed = await world.client.get(f"/api/tenants/{t}/keys", headers=auth)
    assert secret not in listed.text and key_id in listed.text
    db_bytes = b"".join(p.read_bytes() for p in world.data.path.glob("alertengine.db*"))
    # the random part is everything after "ae_<id>_" (it may itself hold "_")
    assert secret.encode() not in db_bytes and secret.split("_", 2)[2].encode() not in db_bytes
    use = await world.client.get(f"/api/tenants/{t}/services", headers=world.auth(secret))
    assert use.status_code == 200
    revoked = await world.client.delete(f"/api/tenants/{t}/keys/{key_id}", headers=auth)
    assert revoked.status_code == 200 and revoked.json()["revoked"]
    refused = await world.client.get(f"/api/tenants/{t}/services", headers=world.auth(secret))
    assert refused.status_code == 401
    [entry] = [e for e in ledger(world, "apikey.revoked") if e["data"]["key_id"] == key_id]
    assert secret not in json.dumps(entry)


async def test_key_revoked_from_the_cli_is_refused_by_the_running_app(world: World) -> None:
    t = world.tenants["a"]
    secret = world.keys[("a", "operator")]
    key_id = secret.split("_")[1]
    assert (await world.client.get(f"/api/tenants/{t}", headers=world.auth(secret))).status_code == 200
    result = run_cli("key", "revoke", key_id, "--data-dir", str(world.data.path))
    assert result.code == 0, result.stderr
    assert (await world.client.get(f"/api/tenants/{t}", headers=world.auth(secret))).status_code == 401


async def test_secrets_never_leave_in_clear(world: World, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    t, auth = world.tenants["a"], world.auth(world.keys[("a", "admin")])
    bot_token = "7777777777:AAFakeTelegramTokenForTestsOnly_abcdefgh"
    signing = "5e1f0c9a8b7d6e5f4a3b2c1d0e9f8a7b"  # the shape of a real Slack signing secret
    svc = await world.client.post(f"/api/tenants/{t}/services", json=SERVICE, headers=auth)
    webhook_secret = svc.json()["webhook_secret"]
    replies = [svc.text]
    for kind, body in (("telegram", {"config": {"api_base_url": "http://127.0.0.1:9001"},
                                     "secrets": {"bot_token": bot_token, "webhook_secret": "tg-hook-secret-123"}}),
                       ("slack", {"secrets": {"signing_secret": signing, "bot_token": "xoxb-17653672481-19874698323-pdFZKVeTuE8sk7oOcBrzbqgy"}})):
        reply = await world.client.put(f"/api/tenants/{t}/notifications/channels/{kind}", json=body, headers=auth)
        assert reply.status_code == 200, reply.text
        replies.append(reply.text)
    replies.append((await world.client.get("/api/notifications/channels", headers=auth)).text)
    replies.append((await world.client.get(f"/api/tenants/{t}/services", headers=auth)).text)
    shown = (await world.client.get(f"/api/tenants/{t}/services/{svc.json()['id']}", headers=auth)).json()
    assert "webhook_secret" not in shown and shown["webhook_secret_fingerprint"].startswith("sha256:")
    world.db.checkpoint_sync("test")
    db_bytes = b"".join(p.read_bytes() for p in world.data.path.glob("alertengine.db*"))
    ledger_bytes = b"".join(r[0] for r in world.db.read_conn().execute("SELECT body FROM ledger"))
    for secret in (bot_token, signing, "tg-hook-secret-123", "xoxb-1-2-3", webhook_secret):
        assert secret.encode() not in db_bytes, secret
        assert secret.encode() not in ledger_bytes, secret
        assert secret not in caplog.text, secret
        assert all(secret not in text for text in replies[1:]), secret
    assert webhook_secret in replies[0]  # shown once, at creation
    channels = (await world.client.get("/api/notifications/channels", headers=auth)).json()
    tg = next(c for c in channels["channels"] if c["kind"] == "telegram")
    assert set(tg["secrets"]) == {"bot_token", "webhook_secret"} and tg["config"]["api_base_url"] == "http://127.0.0.1:9001"


async def test_channel_secrets_merge_and_remove(world: World) -> None:
    auth = world.auth(world.keys[("a", "admin")])
    await world.client.put("/api/notifications/channels/webhook",
                           json={"config": {"url": "https://hooks.example.com/x"}, "secrets": {"signing_secret": "s1-abcdefgh"}},
                           headers=auth)
    kept = await world.client.put("/api/notifications/channels/webhook", json={"config": {}}, headers=auth)
    assert set(kept.json()["secrets"]) == {"signing_secret"} and kept.json()["config"]["url"] == "https://hooks.example.com/x"
    removed = await world.client.put("/api/notifications/channels/webhook", json={"secrets": {"signing_secret": None}},
                                     headers=auth)
    assert removed.json()["secrets"] == {}
    unknown = await world.client.put("/api/notifications/channels/pager", json={}, headers=auth)
    assert unknown.status_code == 404
    bad = await world.client.put("/api/notifications/channels/webhook", json={"config": {"colour": "red"}}, headers=auth)
    assert bad.status_code == 422 and bad.json()["error"]["field"] == "config.colour"
    other = await world.client.get("/api/notifications/channels", headers=world.auth(world.keys[("b", "admin")]))
    assert other.json()["channels"] == []
    needs_tenant = await world.client.get("/api/notifications/channels", headers=world.auth(world.admin))
    assert needs_tenant.status_code == 400


@pytest.mark.parametrize("field,url", [
    ("health_url", "http://169.254.169.254/latest/meta-data/"),
    ("health_url", "file:///etc/passwd"),
    ("recovery_webhook_url", "gopher://example.com/"),
    ("recovery_webhook_url", "http://[fe80::1]/"),
])
async def test_refused_urls_are_422_and_write_nothing(world: World, field: str, url: str) -> None:
    t, auth = world.tenants["a"], world.auth(world.keys[("a", "admin")])
    before = world.db.ledger_size
    reply = await world.client.post(f"/api/tenants/{t}/services", json={**SERVICE, field: url}, headers=auth)
    assert reply.status_code == 422
    assert reply.json()["error"]["field"] == field
    assert world.db.ledger_size == before
    assert world.db.read_conn().execute("SELECT count(*) FROM services").fetchone()[0] == 0


async def test_service_crud_is_ledgered_with_people_as_fingerprints(world: World) -> None:
    t, auth = world.tenants["a"], world.auth(world.keys[("a", "admin")])
    created = await world.client.post(f"/api/tenants/{t}/services", json=SERVICE, headers=auth)
    sid = created.json()["id"]
    validate(response_schema("POST", "/api/tenants/{tenant}/services"), created.json())
    changed = await world.client.put(f"/api/tenants/{t}/services/{sid}", json={**SERVICE, "poll_interval": 10},
                                     headers=auth)
    assert changed.json()["poll_interval"] == 10
    rotated = await world.client.post(f"/api/tenants/{t}/services/{sid}/rotate-secret", headers=auth)
    assert rotated.json()["webhook_secret"] != created.json()["webhook_secret"]
    assert (await world.client.delete(f"/api/tenants/{t}/services/{sid}", headers=auth)).status_code == 200
    assert (await world.client.get(f"/api/tenants/{t}/services/{sid}", headers=auth)).status_code == 404
    [made] = ledger(world, "service.created")
    phone = made["data"]["contacts"]["primary"]["phone"]
    assert "+15550001111" not in json.dumps(made)
    # keyed with the install's key: enumerating phone numbers through plain SHA-256 finds nothing
    key = (world.data.path / "fingerprint.key").read_bytes()
    assert phone == "hmac-sha256:" + hmac.new(key, b"+15550001111", hashlib.sha256).hexdigest()[:16]
    assert hashlib.sha256(b"+15550001111").hexdigest()[:16] not in json.dumps(ledger(world, "service.created"))
    [update] = ledger(world, "service.updated")
    assert update["data"]["changes"] == {"poll_interval": {"from": 5.0, "to": 10.0}}
    assert ledger(world, "service.secret_rotated") and ledger(world, "service.removed")


@pytest.mark.parametrize("headers,content,status,code", [
    ({"content-type": "application/json"}, b"{not json", 400, "bad_json"),
    ({"content-type": "application/json"}, b'{"name": NaN}', 400, "bad_json"),
    ({"content-type": "text/plain"}, b'{"name": "x"}', 415, "unsupported_media_type"),
    ({"content-type": "application/json"}, b'{"name": "' + b"x" * 300_000 + b'"}', 413, "too_large"),
    ({"content-type": "application/json"}, b"[1, 2]", 422, "invalid"),
    ({"content-type": "application/json"}, b'{"name": "ok", "extra": 1}', 422, "invalid"),
    ({"content-type": "application/json"}, b'{"name": ""}', 422, "invalid"),
])
async def test_bad_bodies_get_a_precise_4xx(world: World, headers: dict, content: bytes, status: int, code: str) -> None:
    before = world.db.ledger_size
    reply = await world.client.post("/api/tenants", content=content, headers={**headers, **world.auth(world.admin)})
    assert reply.status_code == status, reply.text
    assert reply.json()["error"]["code"] == code
    assert world.db.ledger_size == before


async def test_authentication_failures_are_slowed_and_ledgered_once_per_burst(world: World) -> None:
    world.app.state.auth_throttle = FailureThrottle(free=3, max_delay=0.01)  # type: ignore[attr-defined]
    for _ in range(8):
        reply = await world.client.get("/api/tenants", headers={"Authorization": "Bearer ae_000000000000_" + "B" * 43})
        assert reply.status_code == 401
    [entry] = ledger(world, "auth.failures")
    assert entry["data"]["address"] == "127.0.0.1" and "B" * 43 not in json.dumps(entry)


async def test_openapi_is_complete(world: World) -> None:
    doc = (await world.client.get("/openapi.json")).json()
    assert doc["openapi"].startswith("3.1") and doc["components"]["securitySchemes"]["bearerAuth"]["scheme"] == "bearer"
    for route in world.app.routes:  # type: ignore[attr-defined]
        for method in getattr(route, "methods", {"HEAD"}) - {"HEAD"}:   # WebSocket routes have none
            op = doc["paths"][route.path][method.lower()]
            ep = route.endpoint.__alertengine_endpoint__
            assert op["summary"] and op["responses"]
            expected = [] if ep.public else [{"integrationKey": []}] if ep.integration else [{"bearerAuth": []}]
            assert op["security"] == expected
            if ep.request is not None:
                assert op["requestBody"]["content"]["application/json"]["schema"] == ep.request
            if ep.integration:
                assert {"400", "401"} <= set(op["responses"])
            elif not ep.public:
                assert {"401", "403"} <= set(op["responses"])


async def test_last_used_is_recorded(world: World) -> None:
    import asyncio
    secret = world.keys[("a", "viewer")]
    key_id = secret.split("_")[1]
    assert (await world.client.get(f"/api/tenants/{world.tenants['a']}", headers=world.auth(secret))).status_code == 200
    await asyncio.gather(*world.app.state.background)  # type: ignore[attr-defined]
    used = world.db.read_conn().execute("SELECT last_used FROM api_keys WHERE id = ?", (key_id,)).fetchone()[0]
    assert used is not None and used.endswith("Z")
    listed = await world.client.get(f"/api/tenants/{world.tenants['a']}/keys", headers=world.auth(world.keys[("a", "admin")]))
    assert next(k for k in listed.json()["keys"] if k["id"] == key_id)["last_used"] == used


async def test_auditor_pages_through_the_tenants_ledger_only(world: World) -> None:
    t, auditor = world.tenants["a"], world.auth(world.keys[("a", "auditor")])
    first = await world.client.get(f"/api/tenants/{t}/ledger", params={"limit": 3}, headers=auditor)
    assert first.status_code == 200
    page = validate(response_schema("GET", "/api/tenants/{tenant}/ledger"), first.json())
    assert [e["tseq"] for e in page["entries"]] == [0, 1, 2] and page["next_after"] == 2
    rest = await world.client.get(f"/api/tenants/{t}/ledger", params={"after": 2, "limit": 1000}, headers=auditor)
    entries = page["entries"] + rest.json()["entries"]
    assert rest.json()["next_after"] is None
    assert {e["tenant"] for e in entries} == {t}
    assert [e["tseq"] for e in entries] == list(range(len(entries)))
    kinds = await world.client.get(f"/api/tenants/{t}/ledger", params={"kind": "apikey.revoked"}, headers=auditor)
    assert [e["kind"] for e in kinds.json()["entries"]] == ["apikey.revoked"]
    bad = await world.client.get(f"/api/tenants/{t}/ledger", params={"limit": "many"}, headers=auditor)
    assert bad.status_code == 422 and bad.json()["error"]["field"] == "limit"


async def test_auditor_exports_a_bundle_that_verifies_offline(world: World, tmp_path) -> None:  # type: ignore[no-untyped-def]
    from alertengine.ledger.verifier import verify_bundle
    t, auditor = world.tenants["a"], world.auth(world.keys[("a", "auditor")])
    reply = await world.client.post(f"/api/tenants/{t}/ledger/export", json={}, headers=auditor)
    assert reply.status_code == 200 and reply.headers["content-type"] == "application/gzip"
    bundle = tmp_path / "a.tar.gz"
    bundle.write_bytes(reply.content)
    result = verify_bundle(str(bundle), world.data.signer.vkey).as_dict()
    assert result["status"] == "ok" and result["complete"] is True, result
    assert result["covers"]["from_tseq"] == 0
    [exported] = ledger(world, "ledger.exported")
    assert exported["tenant"] == t and exported["actor"] == f"apikey:{world.keys[('a', 'auditor')].split('_')[1]}"
    bad = await world.client.post(f"/api/tenants/{t}/ledger/export", json={"since": "yesterday"}, headers=auditor)
    assert bad.status_code == 422 and bad.json()["error"]["field"] == "since"
    missing = await world.client.post(f"/api/tenants/{t}/ledger/export", json={"incident": "INC-404"}, headers=auditor)
    assert missing.status_code == 422 and "INC-404" in missing.json()["error"]["message"]
