"""Every route refuses an over-limit body while streaming it in: nothing, authenticated or not, reads
a huge body whole before deciding it is too large."""

from __future__ import annotations

import re
from typing import AsyncIterator

import pytest

from tests.web.conftest import World

CHUNK = 64 * 1024
OFFERED = 64 * 1024 * 1024          # what a sender tries to push: 64 MiB
LARGEST_LIMIT = 5 * 1024 * 1024     # the largest body any route accepts (the GitHub push webhook)


class Stream:
    """A lazily produced body that counts how much of it the server pulled."""

    def __init__(self, total: int = OFFERED) -> None:
        self.total = total
        self.pulled = 0

    async def __aiter__(self) -> AsyncIterator[bytes]:
        while self.pulled < self.total:
            self.pulled += CHUNK
            yield b"[" * CHUNK   # deep nesting, too: it must never reach the JSON parser


def fill(path: str, world: World) -> str:
    values = {"tenant": world.tenants["a"], "key": "k" * 32, "name": "job", "incident": "INC-1",
              "service": "svc_00000000000000aa", "kind": "webhook", "key_id": "000000000000",
              "id": "1", "token": "t" * 40}
    return re.sub(r"\{(\w+)\}", lambda m: values.get(m.group(1), "x"), path)


async def operations(world: World) -> list[tuple[str, str]]:
    doc = (await world.client.get("/openapi.json")).json()
    return [(method.upper(), path) for path, item in doc["paths"].items() for method in item
            if method in ("post", "put", "patch", "delete")]


async def test_the_route_table_is_not_empty(world: World) -> None:
    ops = await operations(world)
    assert ("POST", "/action/recover/confirm") in ops and ("POST", "/ingest/github/{tenant}") in ops
    assert len(ops) > 20


@pytest.mark.parametrize("authenticated", [False, True], ids=["anonymous", "admin"])
async def test_a_huge_streamed_body_is_cut_off_at_the_limit_on_every_route(world: World, authenticated: bool) -> None:
    headers = {"content-type": "application/json"}
    if authenticated:
        headers.update(world.auth(world.admin))
    for method, path in await operations(world):
        body = Stream()
        reply = await world.client.request(method, fill(path, world), content=body, headers=headers)
        where = f"{method} {path}"
        assert reply.status_code < 500, f"{where}: {reply.status_code} {reply.text[:200]}"
        assert body.pulled <= LARGEST_LIMIT + CHUNK, f"{where} read {body.pulled} bytes of a huge body"
        if body.pulled > LARGEST_LIMIT // 2:          # it read until the limit: it must say why it stopped
            assert reply.status_code == 413, where


@pytest.mark.parametrize("path", ["/action/recover/confirm", "/ingest/github/{tenant}", "/ingest/alertmanager/{key}",
                                  "/v2/enqueue"])
async def test_a_declared_length_over_the_limit_is_refused_before_reading(world: World, path: str) -> None:
    body = Stream()
    reply = await world.client.post(fill(path, world), content=body,
                                    headers={"content-length": str(OFFERED), "content-type": "application/json"})
    assert reply.status_code == 413
    assert body.pulled == 0


async def test_an_unauthenticated_confirm_with_a_huge_form_is_refused_as_too_large(world: World) -> None:
    body = Stream()
    reply = await world.client.post("/action/recover/confirm", content=body,
                                    headers={"content-type": "application/x-www-form-urlencoded"})
    assert reply.status_code == 413 and "too large" in reply.text
    assert body.pulled <= 16_384 + CHUNK
