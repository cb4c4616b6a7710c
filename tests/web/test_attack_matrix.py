"""Every route the app registers, attacked: no key, a bad key, a revoked key, another tenant's key,
a key of too low a role. A route without an access declaration fails here."""

from __future__ import annotations

import re
import uuid

import pytest
from starlette.routing import WebSocketRoute

from alertengine.incidents.engine import Opening, open_incident
from alertengine.tenancy.access import PERMISSIONS, TENANT_ROLES
from alertengine.web.routing import Endpoint
from tests.web.conftest import World


def declared_routes(app: object) -> list[tuple[str, str, Endpoint | None]]:
    out = []
    for route in app.routes:  # type: ignore[attr-defined]
        if isinstance(route, WebSocketRoute):   # the live stream: attacked by tests/e2e/test_serve_alert_stream.py
            continue
        ep = getattr(route.endpoint, "__alertengine_endpoint__", None)
        for method in sorted(route.methods - {"HEAD"}):
            out.append((method, route.path, ep))
    return out


def _in_a_day() -> str:
    from datetime import datetime, timedelta, timezone
    return (datetime.now(timezone.utc) + timedelta(days=1)).strftime("%Y-%m-%dT%H:%M:%SZ")


async def fill(world: World, path: str, tenant_label: str = "a") -> str:
    """Real ids of tenant ``tenant_label`` for every path parameter."""
    client, auth = world.client, world.auth(world.keys[(tenant_label, "admin")])
    tenant = world.tenants[tenant_label]
    values = {"tenant": tenant, "key_id": world.key_ids[tenant_label], "kind": "webhook", "rule_id": "1",
              "alert_id": "alert_1_1764590000"}
    if "{integration_id}" in path:
        from alertengine.tenancy.tenants import create_integration
        item, _ = await world.db.write(create_integration(tenant, f"i-{uuid.uuid4().hex[:8]}", "test"))
        values["integration_id"] = item.id
    if "{letter}" in path:
        letter = f"dlq_{uuid.uuid4().hex[:16]}"

        def add(tx):  # type: ignore[no-untyped-def]
            tx.execute("INSERT INTO dead_letters (id, tenant, incident, url, payload, attempts, final_status, detail, "
                       "created) VALUES (?, ?, 'INC-1', 'http://x', '{}', '[]', 500, 'failed', '2026-01-01')",
                       (letter, tenant))
        await world.db.write(add)
        values["letter"] = letter
    if "{incident}" in path:
        opening = Opening(tenant, f"health:{uuid.uuid4().hex}", "poller", "checkout down", "P1", None, "checkout",
                          "restart", "sha256:000000000000", "test", {})
        inc, _ = await world.db.write(open_incident(opening))
        values["incident"] = inc.id
    if "{service_id}" in path:
        reply = await client.post(f"/api/tenants/{tenant}/services", headers=auth,
                                  json={"name": f"svc-{uuid.uuid4().hex[:12]}", "health_url": "http://127.0.0.1:9/health"})
        assert reply.status_code == 201, reply.text
        values["service_id"] = reply.json()["id"]
    if "{person}" in path or "{team}" in path:
        person = f"p-{uuid.uuid4().hex[:8]}"
        reply = await client.put(f"/api/tenants/{tenant}/people/{person}", headers=auth,
                                 json={"name": "Ada", "addresses": {"telegram": "111"}})
        assert reply.status_code == 200, reply.text
        values["person"] = person
        if "{team}" in path:
            team = f"t-{uuid.uuid4().hex[:8]}"
            reply = await client.put(f"/api/tenants/{tenant}/teams/{team}", headers=auth,
                                     json={"name": "Payments", "members": [person]})
            assert reply.status_code == 200, reply.text
            values["team"] = team
    if "{schedule}" in path:
        person = f"p-{uuid.uuid4().hex[:8]}"
        reply = await client.put(f"/api/tenants/{tenant}/people/{person}", headers=auth, json={"name": "Ada"})
        assert reply.status_code == 200, reply.text
        schedule = f"s-{uuid.uuid4().hex[:8]}"
        reply = await client.put(f"/api/tenants/{tenant}/schedules/{schedule}", headers=auth, json={
            "name": "Primary", "time_zone": "Europe/Berlin",
            "layers": [{"start": "2026-01-05T09:00", "length": "weekly", "members": [person]}]})
        assert reply.status_code == 200, reply.text
        values["schedule"] = schedule
        if "{override}" in path:
            reply = await client.post(f"/api/tenants/{tenant}/schedules/{schedule}/overrides", headers=auth, json={
                "person": person, "starts_at": "2026-01-06T00:00:00Z", "ends_at": "2026-01-07T00:00:00Z"})
            assert reply.status_code == 201, reply.text
            values["override"] = reply.json()["id"]
    if "{silence}" in path:
        reply = await client.post(f"/api/tenants/{tenant}/silences", headers=auth,
                                  json={"matchers": ['service="batch"'], "ends_at": _in_a_day(),
                                        "comment": "nightly batch"})
        assert reply.status_code == 201, reply.text
        values["silence"] = reply.json()["id"]
    if "{id}" in path:
        def dead(tx):  # type: ignore[no-untyped-def]
            return tx.execute("INSERT INTO outbox (tenant, recipient, event, body, state, next_at, deadline, created, "
                              "updated) VALUES (?, 'person:x', 'detected', ?, 'dead', 0, 0, 'x', 'x') RETURNING id",
                              (tenant, '{"message": {"text": "t"}, "chain": []}')).fetchone()[0]
        values["id"] = str(await world.db.write(dead))
    return re.sub(r"{(\w+)}", lambda m: values[m.group(1)], path)


async def test_every_route_is_declared(world: World) -> None:
    routes = declared_routes(world.app)
    assert len(routes) > 10
    undeclared = [(m, p) for m, p, ep in routes if ep is None]
    assert not undeclared, f"routes without an access declaration: {undeclared}"
    public = {(m, p) for m, p, ep in routes if ep is not None and ep.public}
    # Public to API keys, each authenticated by its own means: the signed single-use approval token,
    # Telegram's secret-token header, GitHub's X-Hub-Signature-256, X-Twilio-Signature, X-Slack-Signature.
    assert public == {("GET", "/healthz"), ("GET", "/openapi.json"), ("GET", "/action/recover/{token}"),
                      ("POST", "/action/recover/confirm"), ("POST", "/bot/telegram/{tenant}"),
                      ("POST", "/ingest/github/{tenant}"), ("POST", "/bot/slack/{tenant}"),
                      ("POST", "/bot/twilio/{tenant}/status"), ("POST", "/bot/twilio/{tenant}/inbound"),
                      ("POST", "/bot/twilio/{tenant}/voice")}


def _protected(world: World) -> list[tuple[str, str, Endpoint]]:
    return [(m, p, ep) for m, p, ep in declared_routes(world.app)
            if ep is not None and not ep.public and not ep.integration]


async def test_ingest_routes_refuse_missing_wrong_revoked_and_api_keys(world: World) -> None:
    from alertengine.tenancy.tenants import create_integration, revoke_integration
    item, dead = await world.db.write(create_integration(world.tenants["a"], "old", "test"))
    await world.db.write(revoke_integration(world.tenants["a"], item.id, "test"))
    ingest = [(m, p) for m, p, ep in declared_routes(world.app) if ep is not None and ep.integration]
    assert len(ingest) >= 6
    for method, path in ingest:
        for key in (None, "x" * 32, dead, world.keys[("a", "admin")], world.admin):
            url = path.replace("{name}", "nightly")
            headers = {}
            if "{key}" in url:
                url = url.replace("{key}", key or "missing")
            elif key:
                headers = world.auth(key)
            body = {"routing_key": key} if path == "/v2/enqueue" and key else {}
            reply = await world.client.request(method, url, headers=headers, json=body)
            assert reply.status_code == 401, (method, url, key, reply.text)


async def test_no_key_bad_key_and_revoked_key_are_refused(world: World) -> None:
    for method, path, _ep in _protected(world):
        url = await fill(world, path)
        for headers in ({}, {"Authorization": "Bearer nope"}, {"Authorization": "Basic YTpi"},
                        world.auth("ae_000000000000_" + "A" * 43), world.auth(world.revoked["a"])):
            reply = await world.client.request(method, url, headers=headers, json={})
            assert reply.status_code == 401, (method, path, headers, reply.text)
            assert reply.json()["error"]["code"] == "unauthenticated"


async def test_another_tenants_key_is_refused_whether_or_not_the_tenant_exists(world: World) -> None:
    for method, path, _ep in _protected(world):
        if "{tenant}" not in path:
            continue
        url = await fill(world, path, "a")
        reply = await world.client.request(method, url, headers=world.auth(world.keys[("b", "admin")]), json={})
        ghost = url.replace(world.tenants["a"], "t_00000000deadbeef")
        ghost_reply = await world.client.request(method, ghost, headers=world.auth(world.keys[("b", "admin")]), json={})
        assert reply.status_code == 403, (method, path, reply.text)
        assert (ghost_reply.status_code, ghost_reply.json()) == (reply.status_code, reply.json())


async def test_too_low_a_role_is_refused(world: World) -> None:
    checked = 0
    for method, path, ep in _protected(world):
        allowed = PERMISSIONS[ep.permission]
        for role in TENANT_ROLES:
            if role in allowed:
                continue
            url = await fill(world, path)
            reply = await world.client.request(method, url, headers=world.auth(world.keys[("a", role)]), json={})
            assert reply.status_code == 403, (method, path, role, reply.text)
            assert reply.json()["error"]["code"] == "forbidden"
            checked += 1
    assert checked > 10


async def test_tenant_keys_cannot_list_or_count_tenants(world: World) -> None:
    for role in TENANT_ROLES:
        reply = await world.client.get("/api/tenants", headers=world.auth(world.keys[("a", role)]))
        assert reply.status_code == 403
        assert "tenant-b" not in reply.text and world.tenants["b"] not in reply.text
    admin = await world.client.get("/api/tenants", headers=world.auth(world.admin))
    assert {t["name"] for t in admin.json()["tenants"]} == {"tenant-a", "tenant-b"}


@pytest.mark.parametrize("path", ["/api/tenants/{tenant}/services/{id}", "/api/tenants/{tenant}/keys/{id}"])
async def test_another_tenants_resource_answers_exactly_like_a_missing_one(world: World, path: str) -> None:
    a_service = await fill(world, "/api/tenants/{tenant}/services/{service_id}", "a")
    foreign_id = a_service.rsplit("/", 1)[1] if "services" in path else world.key_ids["a"]
    b, auth = world.tenants["b"], world.auth(world.keys[("b", "admin")])
    method = "GET" if "services" in path else "DELETE"
    foreign = await world.client.request(method, path.format(tenant=b, id=foreign_id), headers=auth)
    missing = await world.client.request(method, path.format(tenant=b, id="svc_0123456789abcdef"), headers=auth)
    assert foreign.status_code == missing.status_code == 404
    assert foreign.json() == missing.json()
    # and the foreign resource is untouched
    still = await world.client.get(f"/api/tenants/{world.tenants['a']}/keys", headers=world.auth(world.keys[("a", "admin")]))
    assert all(k["revoked"] is None for k in still.json()["keys"] if k["id"] == world.key_ids["a"])
