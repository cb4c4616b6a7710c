"""Bodies no schema expects — nesting a thousand levels deep, lone surrogates, integers beyond 64
bits, numbers that overflow, times far outside any sensible range — get a 4xx naming the problem on
every route that reads a body, and leave nothing half-written: the ledger still verifies."""

from __future__ import annotations

import hashlib
import hmac
import json
import re

import pytest

from alertengine.store import verify_store
from tests.web.conftest import World

DEEP_LIST = b"[" * 100_000 + b"]" * 100_000
DEEP_OBJECT = b'{"a":' * 1_000 + b"1" + b"}" * 1_000
HOSTILE = {
    "deep list": DEEP_LIST,
    "deep object": DEEP_OBJECT,
    "just too deep": b'{"a":' * 65 + b"1" + b"}" * 65,
    "lone surrogate value": b'{"name": "checkout\\ud800", "alerts": [], "sha": "\\udfff"}',
    "lone surrogate key": b'{"\\udc00name": "x"}',
    "huge integer": b'{"name": "x", "poll_interval": 123456789012345678901234567890, "additions": 1e400}',
    "int just past 64 bits": b'{"name": "x", "additions": 9223372036854775808}',
    "negative past 64 bits": b'{"name": "x", "deletions": -9223372036854775809}',
    "overflowing float": b'{"name": "x", "threshold": 1e400}',
    "NUL in a value": b'{"name": "check\\u0000out", "alerts": [], "sha": "a\\u0000"}',
    "NUL in a key": b'{"na\\u0000me": "x"}',
}
# (field, value) pairs that pass JSON decoding but no sensible time check
ODD_TIMES = ["0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59-01:00", "99999-01-01T00:00:00Z",
             "1969-12-31T23:59:59Z", "2026-02-30T00:00:00Z"]


def fill(path: str, world: World) -> str:
    values = {"tenant": world.tenants["a"], "key": "k" * 32, "name": "job", "incident": "INC-1",
              "service": "svc_00000000000000aa", "kind": "webhook", "key_id": "000000000000", "token": "t" * 40}
    return re.sub(r"\{(\w+)\}", lambda m: values.get(m.group(1), "x"), path)


async def body_operations(world: World) -> list[tuple[str, str]]:
    doc = (await world.client.get("/openapi.json")).json()
    return [(m.upper(), path) for path, item in doc["paths"].items() for m, op in item.items()
            if "requestBody" in op or path.startswith(("/ingest", "/v2/enqueue", "/bot"))]


@pytest.mark.parametrize("name", sorted(HOSTILE))
async def test_hostile_bodies_get_a_4xx_on_every_route(world: World, name: str) -> None:
    ops = await body_operations(world)
    assert len(ops) > 15
    before = world.db.ledger_size
    for method, path in ops:
        reply = await world.client.request(method, fill(path, world), content=HOSTILE[name],
                                           headers={"content-type": "application/json", **world.auth(world.admin)})
        assert 400 <= reply.status_code < 500, f"{method} {path} with {name}: {reply.status_code} {reply.text[:300]}"
        if reply.headers.get("content-type", "").startswith("application/json"):
            assert "error" in reply.json()
    assert world.db.ledger_size == before or name in ("deep list",)  # refused bodies write nothing
    world.db.checkpoint_sync("hostile")
    assert verify_store(world.db.path, world.db.signer.verifier).status == "ok"


@pytest.mark.parametrize("name, field, message", [
    ("deep object", None, "nested deeper than 64 levels"),
    ("lone surrogate value", "name", "lone surrogate"),
    ("lone surrogate key", None, "lone surrogate"),
    ("huge integer", "poll_interval", "64 bits"),
    ("overflowing float", "threshold", "too large"),
])
async def test_the_refusal_names_the_problem_and_the_field(world: World, name: str, field: str | None,
                                                           message: str) -> None:
    t = world.tenants["a"]
    reply = await world.client.post(f"/api/tenants/{t}/services", content=HOSTILE[name],
                                    headers={"content-type": "application/json", **world.auth(world.admin)})
    assert reply.status_code == 400
    error = reply.json()["error"]
    assert error["code"] == "bad_json" and message in error["message"]
    assert error.get("field") == field


@pytest.mark.parametrize("when", ODD_TIMES)
async def test_times_far_outside_the_usual_range_are_refused_not_crashed_on(world: World, when: str) -> None:
    t, auth = world.tenants["a"], world.auth(world.admin)
    replies = [
        await world.client.post(f"/api/tenants/{t}/ledger/export", json={"since": when}, headers=auth),
        await world.client.post(f"/api/tenants/{t}/policy/dry-run", json={"toml": "", "until": when}, headers=auth),
        await world.client.post(f"/api/tenants/{t}/deploys", json={"sha": "abcdef1", "time": when}, headers=auth),
    ]
    for reply in replies:
        assert 400 <= reply.status_code < 500, reply.text
    made = await world.client.post(f"/api/tenants/{t}/integrations", json={"name": "am"}, headers=auth)
    key = made.json()["key"]
    alert = {"version": "4", "status": "firing", "receiver": "r", "groupLabels": {}, "commonLabels": {},
             "commonAnnotations": {}, "externalURL": "", "groupKey": "g",
             "alerts": [{"status": "firing", "labels": {"alertname": "X"}, "annotations": {}, "startsAt": when,
                         "endsAt": when, "generatorURL": "", "fingerprint": "f1"}]}
    reply = await world.client.post(f"/ingest/alertmanager/{key}", json=alert)
    assert reply.status_code < 500, reply.text


async def test_github_pushed_at_beyond_year_9999_is_refused(world: World) -> None:
    t, auth = world.tenants["a"], world.auth(world.admin)
    await world.client.put(f"/api/tenants/{t}/notifications/channels/github", headers=auth,
                           json={"secrets": {"webhook_secret": "s3cret-github"}})
    body = json.dumps({"repository": {"pushed_at": 1 << 39}, "commits": [
        {"id": "a" * 40, "message": "m", "timestamp": "2026-11-22T13:50:00Z", "added": [], "modified": [],
         "removed": []}]}).encode()
    sig = "sha256=" + hmac.new(b"s3cret-github", body, hashlib.sha256).hexdigest()
    reply = await world.client.post(f"/ingest/github/{t}", content=body,
                                    headers={"X-Hub-Signature-256": sig, "content-type": "application/json"})
    assert reply.status_code == 400 and reply.json()["error"]["field"] == "repository.pushed_at"


@pytest.mark.parametrize("policy", ["a = " + "[" * 5000 + "]" * 5000, "a = " + "{b=" * 2000 + "1" + "}" * 2000])
async def test_a_policy_nested_thousands_deep_is_refused(world: World, policy: str) -> None:
    t, auth = world.tenants["a"], world.auth(world.admin)
    for method, path in (("PUT", f"/api/tenants/{t}/policy"), ("POST", f"/api/tenants/{t}/policy/dry-run")):
        reply = await world.client.request(method, path, json={"toml": policy}, headers=auth)
        assert reply.status_code == 422, reply.text
        assert "nested too deeply" in reply.json()["error"]["message"]


async def test_a_nul_character_in_the_path_or_the_query_is_a_400_naming_it(world: World) -> None:
    t = world.tenants["a"]
    auth = world.auth(world.admin)
    for url, field in ((f"/api/tenants/{t}%00/incidents", "tenant"), ("/api/tenants/%00", "tenant"),
                       (f"/api/tenants/{t}/incidents?before=x%00y", "before"),
                       (f"/api/tenants/{t}/ledger?kind=alert.%00", "kind"),
                       ("/ingest/alertmanager/k%00k", "key")):
        reply = await world.client.get(url, headers=auth) if not url.startswith("/ingest") else \
            await world.client.post(url, json={"alerts": []})
        assert reply.status_code == 400, f"{url}: {reply.status_code} {reply.text}"
        assert reply.json()["error"]["field"] == field and "NUL" in reply.json()["error"]["message"]
