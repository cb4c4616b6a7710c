"""Property-based fuzzing over /openapi.json: generated bodies and path parameters for every
operation, as the appliance admin and as a tenant admin. No 5xx, every reply fits its declared
schema (or the error schema), and the ledger still verifies afterwards."""

from __future__ import annotations

import asyncio
import json
import re
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from alertengine.store import verify_store
from alertengine.schema import validate
from alertengine.web.routing import ERROR_SCHEMA
from tests.web.conftest import World

URLS = ["http://127.0.0.1:9/health", "https://example.com/h", "http://169.254.169.254/", "file:///etc/passwd",
        "gopher://x/", "http://[::1]:80/", "not a url", "http://user:pw@host/", "https://" + "a" * 3000]
# The odd inputs that once made 5xx: lone surrogates, integers beyond 64 bits, times far from now.
LONE_SURROGATES = st.text(alphabet=st.characters(categories=["Cs"]), min_size=1, max_size=3)
HUGE_INTS = st.integers(min_value=2 ** 63 - 2, max_value=2 ** 80) | st.integers(min_value=-(2 ** 80), max_value=-(2 ** 63) + 1)
ODD_TIMES = st.sampled_from(["0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59-01:00", "0000-01-01T00:00:00Z",
                             "99999-01-01T00:00:00Z", "2026-02-30T00:00:00Z", "1969-12-31T23:59:59Z",
                             "2026-11-22T13:50:00+99:00"])
ODD = LONE_SURROGATES | HUGE_INTS | ODD_TIMES
JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False)
                    | st.text(max_size=20) | ODD,
                    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8) | LONE_SURROGATES,
                                                                                inner, max_size=3),
                    max_leaves=8)


def from_schema(schema: dict[str, Any], name: str = "") -> st.SearchStrategy[Any]:
    """Values that mostly fit ``schema`` (its bounds, patterns and enums), with some that do not."""
    if "anyOf" in schema:
        return st.one_of([from_schema(s, name) for s in schema["anyOf"]])
    if "enum" in schema:
        return st.sampled_from(schema["enum"])
    types = schema.get("type")
    if isinstance(types, list):
        return st.one_of([from_schema({**schema, "type": t}, name) for t in types])
    if types == "string":
        if name.endswith("url"):
            return st.sampled_from(URLS)
        if "pattern" in schema:
            return st.from_regex(schema["pattern"], fullmatch=True).filter(lambda s: len(s) <= schema.get("maxLength", 10**6))
        return st.text(min_size=schema.get("minLength", 0), max_size=min(schema.get("maxLength", 40), 40)) | ODD
    if types == "integer":
        return st.integers(schema.get("minimum", -10**6), schema.get("maximum", 10**6)) | HUGE_INTS
    if types == "number":
        return st.floats(schema.get("minimum", -1e6), schema.get("maximum", 1e6), allow_nan=False)
    if types == "boolean":
        return st.booleans()
    if types == "null":
        return st.none()
    if types == "array":
        return st.lists(from_schema(schema.get("items", {}), name), max_size=3)
    if types == "object":
        props = schema.get("properties", {})
        required = {k: from_schema(props[k], k) for k in schema.get("required", ()) if k in props}
        optional = {k: from_schema(v, k) for k, v in props.items() if k not in required}
        extra = schema.get("additionalProperties")
        base = st.fixed_dictionaries(required, optional=optional)
        if isinstance(extra, dict):
            return st.tuples(base, st.dictionaries(st.text(min_size=1, max_size=8), from_schema(extra), max_size=3)).map(
                lambda t: {**t[1], **t[0]})
        return base
    return JSON


def operations(doc: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [(method.upper(), path, op) for path, item in doc["paths"].items() for method, op in item.items()]


async def test_fuzz_every_operation(world: World) -> None:
    doc = (await world.client.get("/openapi.json")).json()
    loop = asyncio.get_running_loop()
    # the live stream never ends by design (an in-process client would wait for its end forever):
    # tests/e2e/test_serve_alert_stream.py drives it over real sockets
    ops = [op for op in operations(doc) if not op[1].endswith("/alerts/stream")]
    tenants = list(world.tenants.values()) + ["t_00000000deadbeef", "../etc", "%00"]
    callers = [world.admin, world.keys[("a", "admin")], world.keys[("b", "operator")]]
    seen_statuses: set[int] = set()

    def request(method: str, path: str, body: Any, key: str) -> tuple[int, str, Any]:
        async def go() -> tuple[int, str, Any]:
            # encoded here, escaping as JSON allows (httpx's own encoder cannot send a lone surrogate)
            content = None if body is None else json.dumps(body, allow_nan=False).encode()
            reply = await world.client.request(method, path, content=content,
                                               headers={"content-type": "application/json", **world.auth(key)})
            ctype = reply.headers.get("content-type", "").split(";")[0]
            return reply.status_code, ctype, reply.json() if ctype == "application/json" else reply.content
        return asyncio.run_coroutine_threadsafe(go(), loop).result()

    @settings(max_examples=250, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    @given(data=st.data())
    def fuzz(data: st.DataObject) -> None:
        method, path, op = data.draw(st.sampled_from(ops))
        filled = re.sub(r"{(\w+)}", lambda m: data.draw(
            st.sampled_from(tenants) if m.group(1) == "tenant" else
            st.sampled_from(["webhook", "telegram", "slack", "twilio", "nope"]) if m.group(1) == "kind" else
            st.text(alphabet="abcdef0123456789_svc", min_size=1, max_size=20)), path)
        schema = op.get("requestBody", {}).get("content", {}).get("application/json", {}).get("schema")
        body = data.draw(st.one_of(from_schema(schema), JSON) if schema else st.none())
        key = data.draw(st.sampled_from(callers))
        status, ctype, reply = request(method, filled, body, key)
        seen_statuses.add(status)
        assert status < 500, (method, filled, body, reply)
        declared = op["responses"].get(str(status))
        assert declared is not None, f"{method} {path} answered undeclared {status}: {reply}"
        assert ctype in declared.get("content", {ctype: None}), f"{method} {path}: undeclared {ctype}"
        if 200 <= status < 300 and ctype == "application/json":
            schema_out = declared.get("content", {}).get("application/json", {}).get("schema")
            if schema_out:
                validate(schema_out, reply)
        elif status >= 400 and ctype == "application/json":
            validate(ERROR_SCHEMA, reply)

    await asyncio.to_thread(fuzz)
    assert any(200 <= s < 300 for s in seen_statuses) and any(400 <= s < 500 for s in seen_statuses)
    world.db.checkpoint_sync("fuzz")
    result = await asyncio.to_thread(verify_store, world.db.path, world.db.signer.verifier)
    assert result.status == "ok", result.as_dict()
