"""A scrape key against every route the app registers: /metrics answers, every other protected
route refuses it with 403 (real ids in the paths, so a refusal is never a 404 in disguise), the
ingest routes do not take it, and the public routes stay what they were."""

from __future__ import annotations

from alertengine.web.routing import Endpoint
from alertengine.tenancy.tenants import create_key
from tests.web.conftest import World
from tests.web.test_attack_matrix import declared_routes, fill

NOT_IN_TENANT = {"code": "forbidden", "message": "this key may not act in that tenant"}


async def scraper(world: World) -> str:
    _id, secret = await scrape_key(world)
    return secret


def protected(world: World) -> list[tuple[str, str, Endpoint]]:
    # the live stream over HTTP never ends once allowed; its refusal is the same _prepare as the
    # others', and the websocket's is tested over real sockets (tests/e2e/test_serve_alert_stream.py)
    return [(m, p, ep) for m, p, ep in declared_routes(world.app)
            if ep is not None and not ep.public and not ep.integration and not p.endswith("/alerts/stream")]


async def test_the_scrape_key_reads_metrics_and_is_refused_everywhere_else(world: World) -> None:
    key = await scraper(world)
    refused = 0
    for method, path, ep in protected(world):
        url = await fill(world, path)
        reply = await world.client.request(method, url, headers=world.auth(key), json={})
        if path == "/metrics":
            assert reply.status_code == 200 and "alertengine_ledger_entries" in reply.text
            continue
        assert reply.status_code == 403, (method, path, reply.text)
        error = reply.json()["error"]
        if "{tenant}" in path:
            assert error == NOT_IN_TENANT, (method, path)
        else:
            assert error == {"code": "forbidden",
                             "message": f"role 'scrape' may not {ep.permission.replace('.', ' ')}"}, (method, path)
        refused += 1
    assert refused > 50


async def test_the_scrape_key_is_no_ingest_key(world: World) -> None:
    key = await scraper(world)
    ingest = [(m, p) for m, p, ep in declared_routes(world.app) if ep is not None and ep.integration]
    assert len(ingest) >= 6
    for method, path in ingest:
        url = path.replace("{name}", "nightly").replace("{key}", key)
        body = {"routing_key": key} if path == "/v2/enqueue" else {}
        reply = await world.client.request(method, url, headers=world.auth(key), json=body)
        assert reply.status_code == 401, (method, url, reply.text)


async def test_the_scrape_key_names_no_tenant_of_its_own(world: World) -> None:
    """Routes whose tenant is the caller's own (no {tenant} in the path) refuse it by role, before
    they could ask which tenant it has."""
    key = await scraper(world)
    for path in ("/api/smart-rules", "/api/alerts/active", "/api/notifications/channels", "/v1/alerts/dashboard",
                 "/api/tenants"):
        reply = await world.client.get(path, headers=world.auth(key))
        assert reply.status_code == 403, (path, reply.text)
        assert world.tenants["a"] not in reply.text and "tenant-a" not in reply.text


async def test_public_routes_answer_a_scrape_key_as_they_answer_anyone(world: World) -> None:
    key = await scraper(world)
    for path in ("/healthz", "/openapi.json"):
        with_key = await world.client.get(path, headers=world.auth(key))
        without = await world.client.get(path)
        assert with_key.status_code == without.status_code == 200


async def scrape_key(world: World) -> tuple[str, str]:
    """(key id, secret) of a new scrape key, made as the CLI and API make keys."""
    key, secret = await world.db.write(create_key(None, "scrape", "prometheus", "test"))
    return key.id, secret
