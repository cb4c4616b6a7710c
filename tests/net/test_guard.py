"""The outbound URL policy holds at connect time: every resolved address of a name, every IPv6 form
that embeds an IPv4 address, in every outbound client; a refusal is final, never retried."""

from __future__ import annotations

import ipaddress
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Iterator

import httpcore
import httpx
import pytest

from alertengine.net.guard import GuardedBackend, guarded_client, is_refused, refusal
from alertengine.net.urlpolicy import UrlPolicy, embedded_ipv4
from alertengine.net.webhooks import post_signed
from alertengine.notify.channels.telegram import TelegramClient
from alertengine.signals.poller import Poller, PollTarget

OPEN = UrlPolicy()
NO_LOOPBACK = UrlPolicy(deny_cidrs=("127.0.0.0/8", "::1/128"))

# (address, refused by the default policy?) — the embedded IPv4 forms of 169.254.169.254 and 10.0.0.1
ADDRESSES = [
    ("169.254.169.254", True), ("::ffff:169.254.169.254", True), ("2002:a9fe:a9fe::1", True),
    ("64:ff9b::a9fe:a9fe", True), ("64:ff9b:1::a9fe:a9fe", True), ("::169.254.169.254", True),
    ("2001:0:4136:e378:8000:63bf:5601:5601", True),  # Teredo, client 169.254.169.254 (inverted bits)
    ("fe80::1", True), ("100.100.100.200", True), ("0.0.0.0", True), ("224.0.0.1", True),
    ("127.0.0.1", False), ("::1", False), ("10.0.0.1", False), ("2002:0a00:0001::1", False),  # private: allowed
    ("8.8.8.8", False), ("2606:4700::1111", False),
]


@pytest.mark.parametrize("address, refused", ADDRESSES)
def test_addresses_are_judged_with_every_ipv4_they_embed(address: str, refused: bool) -> None:
    assert (refusal(ipaddress.ip_address(address), OPEN) is not None) is refused


def test_embedded_forms_are_found() -> None:
    assert embedded_ipv4(ipaddress.ip_address("2002:a9fe:a9fe::1")) == [ipaddress.ip_address("169.254.169.254")]
    assert ipaddress.ip_address("10.0.0.1") in embedded_ipv4(ipaddress.ip_address("64:ff9b::a00:1"))
    assert embedded_ipv4(ipaddress.ip_address("2606:4700::1111")) == []


def test_a_denied_range_holds_through_its_6to4_form() -> None:
    policy = UrlPolicy(deny_cidrs=("10.0.0.0/8",))
    assert refusal(ipaddress.ip_address("2002:0a00:0001::1"), policy) is not None


class Recording(httpcore.AsyncNetworkBackend):
    def __init__(self) -> None:
        self.connects: list[str] = []

    async def connect_tcp(self, host: str, port: int, timeout: float | None = None, local_address: str | None = None,
                          socket_options: Any = None) -> httpcore.AsyncNetworkStream:
        self.connects.append(host)
        raise httpcore.ConnectError("recorded only")

    async def sleep(self, seconds: float) -> None:
        return None


def resolving_to(*addresses: str) -> Any:
    async def resolve(host: str, port: int) -> list[Any]:
        return [ipaddress.ip_address(a) for a in addresses]
    return resolve


@pytest.mark.parametrize("addresses", [("169.254.169.254",), ("93.184.216.34", "169.254.169.254"),
                                       ("::ffff:169.254.169.254",), ("2002:a9fe:a9fe::",)])
async def test_a_name_with_any_refused_address_is_never_connected_to(addresses: tuple[str, ...]) -> None:
    inner = Recording()
    backend = GuardedBackend(OPEN, resolving_to(*addresses), inner)
    with pytest.raises(httpcore.ConnectError, match="outbound policy: hooks.example.test"):
        await backend.connect_tcp("hooks.example.test", 443)
    assert inner.connects == []


async def test_an_allowed_name_is_connected_to_at_the_address_that_was_checked() -> None:
    inner = Recording()
    backend = GuardedBackend(OPEN, resolving_to("93.184.216.34", "2606:2800:220:1::1"), inner)
    with pytest.raises(httpcore.ConnectError):
        await backend.connect_tcp("hooks.example.test", 443)
    assert inner.connects == ["93.184.216.34", "2606:2800:220:1::1"]   # the checked addresses, not the name


@pytest.fixture
def server() -> Iterator[int]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802
            self.send_response(200)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"ok")

        do_POST = do_GET  # noqa: N815

        def log_message(self, *args: object) -> None:
            return None

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield httpd.server_address[1]
    httpd.shutdown()
    httpd.server_close()


async def test_a_real_name_is_resolved_and_refused_at_connect_time(server: int) -> None:
    async with guarded_client(NO_LOOPBACK) as client:
        with pytest.raises(httpx.ConnectError) as err:
            await client.get(f"http://localhost:{server}/")
        assert is_refused(err.value) and "denied address range" in str(err.value)
    async with guarded_client(OPEN) as client:
        assert (await client.get(f"http://localhost:{server}/")).text == "ok"


async def test_a_refused_webhook_is_final_and_not_retried(server: int) -> None:
    sleeps: list[float] = []

    async def sleep(seconds: float) -> None:
        sleeps.append(seconds)

    async with guarded_client(NO_LOOPBACK) as client:
        result = await post_signed(client, f"http://localhost:{server}/recover", "s" * 32, {"a": 1}, sleep=sleep,
                                   idempotency_key="k1")
    assert not result.delivered and "outbound policy" in result.detail
    assert sleeps == []


async def test_a_refused_bot_api_is_a_final_failed_delivery(server: int) -> None:
    async with guarded_client(NO_LOOPBACK) as client:
        delivery = await TelegramClient(f"http://localhost:{server}", "7777:AAsecret", client).send_message(1, "x")
    assert not delivery.delivered and not delivery.retryable and "outbound policy" in delivery.detail


async def test_the_poller_connects_only_where_the_policy_allows(server: int) -> None:
    readings: list[Any] = []

    async def record(target: PollTarget, reading: Any, lateness: float) -> None:
        readings.append(reading)
        await poller.stop()

    poller = Poller(lambda: [PollTarget("t/a", f"http://localhost:{server}/", 0.2)], record, timeout=10,
                    url_policy=NO_LOOPBACK)
    await poller.run()
    [reading] = readings[:1]
    assert reading.outcome == "unreachable" and "outbound policy" in reading.detail
