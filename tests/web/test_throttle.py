"""Failed authentications of every kind count alike, are slowed per address with a cap on held
answers, and are ledgered once per burst however many addresses take part."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json

import httpx
import pytest

from alertengine.web.throttle import FailureThrottle
from tests.web.conftest import World


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_delays_double_after_the_free_failures_up_to_the_cap() -> None:
    throttle = FailureThrottle(free=2, max_delay=1.0, clock=Clock())
    delays = [throttle.record("10.0.0.1").delay for _ in range(8)]
    assert delays == [0.0, 0.0, 0.1, 0.2, 0.4, 0.8, 1.0, 1.0]
    assert throttle.record("10.0.0.2").delay == 0.0          # another address has its own allowance


def test_the_allowance_comes_back_after_a_quiet_window() -> None:
    clock = Clock()
    throttle = FailureThrottle(free=2, window=60, clock=clock)
    assert [throttle.record("a").delay > 0 for _ in range(3)] == [False, False, True]
    clock.now += 61
    assert [throttle.record("a").delay > 0 for _ in range(3)] == [False, False, True]


def test_one_burst_from_many_addresses_begins_once_and_a_later_burst_again() -> None:
    clock = Clock()
    throttle = FailureThrottle(free=1, window=60, clock=clock)
    began = []
    for n in range(50):                    # fifty addresses, each past its allowance, within the window
        throttle.record(f"10.0.0.{n}")
        began.append(throttle.record(f"10.0.0.{n}").burst_began)
        clock.now += 1
    assert began.count(True) == 1 and began[0]
    clock.now += 61                        # quiet for a window: the burst is over
    throttle.record("10.9.9.9")
    assert throttle.record("10.9.9.9").burst_began


async def test_held_answers_per_address_are_capped_and_the_rest_refused_at_once() -> None:
    throttle = FailureThrottle(free=0, concurrent=2, clock=Clock())
    gate = asyncio.Event()

    async def sleep(_: float) -> None:
        await gate.wait()

    held = [asyncio.create_task(throttle.hold("a", throttle.record("a").delay, sleep)) for _ in range(2)]
    await asyncio.sleep(0)
    assert throttle.record("a").refuse                  # a third waits for nobody: refused now
    assert not throttle.record("b").refuse              # another address is unaffected
    gate.set()
    await asyncio.gather(*held)
    assert not throttle.record("a").refuse              # the held answers went out: room again


def _ledgered(world: World) -> list[dict]:
    rows = world.db.read_conn().execute("SELECT body FROM ledger WHERE kind = 'auth.failures' ORDER BY seq")
    return [json.loads(r[0]) for r in rows]


def _client(world: World, address: str) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=world.app, client=(address, 40000))  # type: ignore[arg-type]
    return httpx.AsyncClient(transport=transport, base_url="http://appliance")


# Each kind of credential, presented wrong: (what the ledger calls it, method, path template, request kwargs)
WRONG = [
    ("API key", "GET", "/api/tenants", {"headers": {"Authorization": "Bearer ae_000000000000_" + "x" * 43}}),
    ("ingest key", "POST", "/ingest/alertmanager/" + "k" * 32, {"json": {"alerts": []}}),
    ("Telegram webhook secret", "POST", "/bot/telegram/{tenant}",
     {"headers": {"X-Telegram-Bot-Api-Secret-Token": "wrong"}, "json": {"update_id": 1}}),
    ("GitHub signature", "POST", "/ingest/github/{tenant}",
     {"headers": {"X-Hub-Signature-256": "sha256=" + "0" * 64, "X-GitHub-Event": "push"}, "json": {"commits": []}}),
    ("Twilio signature", "POST", "/bot/twilio/{tenant}/status",
     {"headers": {"X-Twilio-Signature": "AAAAAAAAAAAAAAAAAAAAAAAAAAA="}, "data": {"MessageSid": "SM1"}}),
    ("Slack signature", "POST", "/bot/slack/{tenant}",
     {"headers": {"X-Slack-Request-Timestamp": "1", "X-Slack-Signature": "v0=" + "0" * 64},
      "content": "payload=%7B%7D"}),
    ("approval link", "GET", "/action/recover/" + "eyJhbGciOiJIUzI1NiJ9.e30." + "A" * 43, {}),
]


@pytest.mark.parametrize("what, method, path, kw", WRONG, ids=[w[0] for w in WRONG])
async def test_every_kind_of_failed_authentication_is_slowed_and_ledgered(world: World, what: str, method: str,
                                                                         path: str, kw: dict) -> None:
    t = world.tenants["a"]
    await world.client.put(f"/api/tenants/{t}/notifications/channels/telegram", headers=world.auth(world.admin),
                           json={"secrets": {"webhook_secret": "right-secret"}})
    secret = "right-github-secret"
    await world.client.put(f"/api/tenants/{t}/notifications/channels/github", headers=world.auth(world.admin),
                           json={"secrets": {"webhook_secret": secret}})
    assert hmac.new(secret.encode(), b"{}", hashlib.sha256).hexdigest() not in json.dumps(kw)
    clock = Clock()
    world.app.state.auth_throttle = FailureThrottle(free=3, max_delay=0.001, clock=clock)  # type: ignore[attr-defined]
    async with _client(world, "192.0.2.10") as client:
        for _ in range(6):
            reply = await client.request(method, path.replace("{tenant}", t), **kw)
            assert reply.status_code in (400, 401), reply.text
    [entry] = _ledgered(world)
    assert entry["data"]["address"] == "192.0.2.10" and entry["data"]["what"] == what
    assert entry["data"]["path"] == path.replace("k" * 32, "{key}").replace("eyJhbGciOiJIUzI1NiJ9.e30." + "A" * 43, "{token}")
    for secret_text in ("x" * 43, "k" * 32, "wrong", "A" * 43):
        assert secret_text not in json.dumps(entry)


async def test_a_burst_from_many_addresses_writes_one_entry(world: World) -> None:
    world.app.state.auth_throttle = FailureThrottle(free=1, max_delay=0.001, clock=Clock())  # type: ignore[attr-defined]
    for n in range(20):
        async with _client(world, f"198.51.100.{n}") as client:
            for _ in range(3):
                reply = await client.get("/api/tenants", headers={"Authorization": "Bearer nonsense"})
                assert reply.status_code == 401
    assert len(_ledgered(world)) == 1


async def test_concurrent_failures_beyond_the_cap_are_refused_with_429(world: World) -> None:
    throttle = FailureThrottle(free=0, max_delay=30.0, concurrent=2, clock=Clock())
    world.app.state.auth_throttle = throttle  # type: ignore[attr-defined]
    async with _client(world, "203.0.113.5") as client:
        held = [asyncio.create_task(client.get("/api/tenants", headers={"Authorization": "Bearer nope"}))
                for _ in range(2)]
        while sum(throttle._waiting.values()) < 2:   # both answers are being held
            await asyncio.sleep(0.01)
        refused = await client.get("/api/tenants", headers={"Authorization": "Bearer nope"})
        assert refused.status_code == 429 and refused.headers["retry-after"] == "5"
        assert refused.json()["error"]["code"] == "too_many_requests"
        for task in held:
            task.cancel()
        await asyncio.gather(*held, return_exceptions=True)
