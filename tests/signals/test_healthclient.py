"""The poller's HTTP client against scripted servers on 127.0.0.1: keep-alive and its limits, the outbound
policy at connect time, no cookies, no redirects, content codings, TLS, and aborting on cancel and close."""

from __future__ import annotations

import asyncio
import datetime as dt
import gzip
import ipaddress
import socket
import ssl
import zlib
from pathlib import Path
from typing import Any, AsyncIterator

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from alertengine.net.urlpolicy import UrlPolicy
from alertengine.signals.healthclient import IDLE_EXPIRY, Answer, FetchFailed, HealthClient
from alertengine.signals.http1 import MAX_BODY_BYTES
from tests.signals.rawhttp import CLOSE, HANG, Last, RawServer, answer, serve
from tests.waiting import async_wait_for

NO_LOOPBACK = UrlPolicy(deny_cidrs=("127.0.0.0/8", "::1/128"))


def resolving_to(*addresses: str) -> Any:
    async def resolve(host: str, port: int) -> list[Any]:
        return [ipaddress.ip_address(a) for a in addresses]
    return resolve


async def failing_resolver(host: str, port: int) -> list[Any]:
    raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")


def always(action: Any) -> Any:
    return lambda request, connection, head: action


@pytest.fixture
async def ok_server() -> AsyncIterator[RawServer]:
    server = await serve(always(answer(200, b'{"status": "ok"}', "application/json")))
    yield server
    await server.stop()


async def fetch(client: HealthClient, url: str) -> Answer:
    return await client.fetch(client.prepare(url))


# --------------------------------------------------------------------------------------------
# Keep-alive
# --------------------------------------------------------------------------------------------

async def test_polls_of_one_origin_share_one_kept_alive_connection(ok_server: RawServer) -> None:
    client = HealthClient(user_agent="alertengine-poller/test")
    for path in ("/a", "/b", "/c"):
        result = await fetch(client, f"{ok_server.url}{path}")
        assert result == Answer(200, "application/json", b'{"status": "ok"}')
    assert ok_server.opened == 1
    assert client.idle == 1
    head = ok_server.heads[0].decode()
    assert head.startswith("GET /a HTTP/1.1\r\n")
    assert f"\r\nHost: 127.0.0.1:{ok_server.port}\r\n" in head
    assert "\r\nUser-Agent: alertengine-poller/test\r\n" in head
    assert "\r\nAccept-Encoding: identity\r\n" in head
    assert "Connection" not in head
    client.close()


async def test_without_keep_alive_every_poll_asks_for_close_and_connects_anew(ok_server: RawServer) -> None:
    client = HealthClient(max_idle=0)
    await fetch(client, ok_server.url)
    await fetch(client, ok_server.url)
    assert ok_server.opened == 2
    assert all(b"\r\nConnection: close\r\n" in head for head in ok_server.heads)
    assert client.idle == 0


async def test_a_kept_connection_the_server_dropped_as_it_was_reused_is_retried_once_on_a_new_one() -> None:
    # the first connection answers once, then closes on its second request without a byte
    server = await serve(lambda request, connection, head: CLOSE if (connection, request) == (0, 1) else answer())
    client = HealthClient()
    try:
        assert (await fetch(client, server.url)).status == 200
        assert (await fetch(client, server.url)).status == 200
        assert server.opened == 2
        assert len(server.heads) == 3
    finally:
        client.close()
        await server.stop()


async def test_a_fresh_connection_closed_without_an_answer_is_not_retried() -> None:
    server = await serve(always(CLOSE))
    client = HealthClient()
    try:
        with pytest.raises(FetchFailed) as failed:
            await fetch(client, server.url)
        assert (failed.value.outcome, failed.value.detail) == (
            "bad_payload", "malformed HTTP answer: the server closed the connection without answering")
        assert server.opened == 1
    finally:
        await server.stop()


async def test_a_connection_the_server_closes_while_idle_leaves_the_pool() -> None:
    server = await serve(always(Last(answer())))
    client = HealthClient()
    try:
        await fetch(client, server.url)
        await async_wait_for(lambda: client.idle == 0 and client.open == 0, what="the closed connection dropped")
        assert (await fetch(client, server.url)).status == 200
        assert server.opened == 2
    finally:
        client.close()
        await server.stop()


async def test_idle_connections_expire_by_the_clock(ok_server: RawServer) -> None:
    now = [1000.0]
    client = HealthClient(clock=lambda: now[0])
    await fetch(client, ok_server.url)
    now[0] += IDLE_EXPIRY - 1
    await fetch(client, ok_server.url)
    assert ok_server.opened == 1                 # still fresh enough: reused
    now[0] += IDLE_EXPIRY
    client.sweep()
    assert client.idle == 0
    await async_wait_for(lambda: ok_server.closed == 1, what="the expired connection closed")
    await fetch(client, ok_server.url)
    now[0] += IDLE_EXPIRY                        # expired, not yet swept: not reused either
    await fetch(client, ok_server.url)
    assert ok_server.opened == 3
    client.close()


async def test_a_full_idle_pool_closes_the_connection_released_rather_than_an_older_one() -> None:
    server = await serve(always(answer()))
    client = HealthClient(max_idle=1)
    try:
        first, second = client.prepare(f"{server.url}/1"), client.prepare(f"{server.url}/2")
        # two polls in flight at once: two connections; only one may stay
        results = await asyncio.gather(client.fetch(first), client.fetch(second))
        assert [r.status for r in results] == [200, 200]
        assert server.opened == 2
        assert client.idle == 1
        await async_wait_for(lambda: server.closed == 1, what="the second connection closed")
    finally:
        client.close()
        await server.stop()


# --------------------------------------------------------------------------------------------
# What the client never does: cookies, redirects, other codings
# --------------------------------------------------------------------------------------------

async def test_cookies_are_never_kept_or_sent() -> None:
    server = await serve(always(answer(extra="Set-Cookie: session=abc; Path=/\r\n")))
    client = HealthClient()
    try:
        await fetch(client, server.url)
        await fetch(client, server.url)
        assert len(server.heads) == 2 and all(b"cookie" not in head.lower() for head in server.heads)
    finally:
        client.close()
        await server.stop()


async def test_a_redirect_is_an_answer_and_is_not_followed() -> None:
    server = await serve(always(answer(302, b"", extra="Location: http://169.254.169.254/latest\r\n")))
    client = HealthClient()
    try:
        assert (await fetch(client, server.url)).status == 302
        assert len(server.heads) == 1
    finally:
        client.close()
        await server.stop()


BODY = b'{"status": "ok", "metrics": {"sample_size": 5}}'


@pytest.mark.parametrize(("coding", "payload"), [
    ("gzip", gzip.compress(BODY)), ("x-gzip", gzip.compress(BODY)), ("deflate", zlib.compress(BODY)),
    ("identity", BODY),
])
async def test_gzip_and_deflate_bodies_are_decoded(coding: str, payload: bytes) -> None:
    server = await serve(always(answer(200, payload, "application/json", f"Content-Encoding: {coding}\r\n")))
    client = HealthClient()
    try:
        assert (await fetch(client, server.url)).body == BODY
    finally:
        client.close()
        await server.stop()


@pytest.mark.parametrize(("coding", "payload", "detail"), [
    ("br", b"\x0b\x02\x80", "unsupported content-encoding 'br'"),
    ("gzip, gzip", gzip.compress(gzip.compress(BODY)), "unsupported content-encoding 'gzip, gzip'"),
    ("gzip", b"\x1f\x8b not gzip at all", "corrupt compressed body"),
    ("gzip", gzip.compress(b" " * (MAX_BODY_BYTES + 1)), f"larger than {MAX_BODY_BYTES} bytes, cut off"),
])
async def test_other_codings_corrupt_bodies_and_bombs_are_bad_payloads(coding: str, payload: bytes,
                                                                      detail: str) -> None:
    server = await serve(always(answer(200, payload, "application/json", f"Content-Encoding: {coding}\r\n")))
    client = HealthClient()
    try:
        with pytest.raises(FetchFailed) as failed:
            await fetch(client, server.url)
        assert failed.value.outcome == "bad_payload" and failed.value.status == 200
        assert detail in failed.value.detail
    finally:
        client.close()
        await server.stop()


async def test_a_chunked_answer_over_a_real_connection_is_joined() -> None:
    chunked = (b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
               b"7\r\n{\"a\": 1\r\n1\r\n}\r\n0\r\n\r\n")
    server = await serve(always(chunked))
    client = HealthClient()
    try:
        assert (await fetch(client, server.url)).body == b'{"a": 1}'
        assert (await fetch(client, server.url)).body == b'{"a": 1}'
        assert server.opened == 1
    finally:
        client.close()
        await server.stop()


# --------------------------------------------------------------------------------------------
# Where it connects: the outbound policy at connect time
# --------------------------------------------------------------------------------------------

async def test_a_name_resolving_to_a_refused_address_is_never_connected_to(ok_server: RawServer) -> None:
    client = HealthClient(url_policy=NO_LOOPBACK, resolver=resolving_to("127.0.0.1"))
    with pytest.raises(FetchFailed) as failed:
        await fetch(client, f"http://health.example.test:{ok_server.port}/")
    assert failed.value.outcome == "unreachable"
    assert failed.value.detail == ("cannot connect: outbound policy: health.example.test (127.0.0.1) "
                                   "is in a denied address range")
    assert ok_server.opened == 0


@pytest.mark.parametrize("addresses", [("93.184.216.34", "169.254.169.254"), ("::ffff:169.254.169.254",)])
async def test_a_name_with_any_refused_address_is_refused_whole(addresses: tuple[str, ...]) -> None:
    client = HealthClient(url_policy=UrlPolicy(), resolver=resolving_to(*addresses))
    with pytest.raises(FetchFailed, match="outbound policy: health.example.test"):
        await fetch(client, "http://health.example.test/")


async def test_an_address_in_the_url_is_judged_too(ok_server: RawServer) -> None:
    client = HealthClient(url_policy=NO_LOOPBACK)
    with pytest.raises(FetchFailed) as failed:
        await fetch(client, ok_server.url)
    assert failed.value.detail == "cannot connect: outbound policy: 127.0.0.1 is in a denied address range"
    assert ok_server.opened == 0


async def test_an_allowed_name_is_connected_to_at_the_address_that_was_checked(ok_server: RawServer) -> None:
    client = HealthClient(url_policy=UrlPolicy(), resolver=resolving_to("127.0.0.1"))
    assert (await fetch(client, f"http://health.example.test:{ok_server.port}/h")).status == 200
    assert f"\r\nHost: health.example.test:{ok_server.port}\r\n".encode() in ok_server.heads[0]
    client.close()


async def test_unresolvable_and_refused_hosts_are_unreachable() -> None:
    client = HealthClient(resolver=failing_resolver)
    with pytest.raises(FetchFailed, match="cannot resolve health.example.test") as failed:
        await fetch(client, "http://health.example.test/")
    assert failed.value.outcome == "unreachable"
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(FetchFailed, match="cannot connect") as failed:
        await fetch(client, f"http://127.0.0.1:{port}/")
    assert failed.value.outcome == "unreachable"


def test_an_unusable_url_is_unreachable_before_any_network() -> None:
    with pytest.raises(FetchFailed) as failed:
        HealthClient().prepare("gopher://svc.example.test/")
    assert failed.value.outcome == "unreachable" and failed.value.detail.startswith("unusable URL: ")


# --------------------------------------------------------------------------------------------
# Cancel and close
# --------------------------------------------------------------------------------------------

async def test_cancelling_a_fetch_aborts_its_connection() -> None:
    server = await serve(always(HANG))
    client = HealthClient()
    try:
        task = asyncio.create_task(fetch(client, server.url))
        await async_wait_for(lambda: server.hanging == 1, what="the request in flight")
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await async_wait_for(lambda: server.closed == 1, what="the server seeing the connection end")
        assert client.open == 0 and client.idle == 0
    finally:
        await server.stop()


async def test_close_aborts_busy_and_idle_connections_and_refuses_more(ok_server: RawServer) -> None:
    hanging = await serve(always(HANG))
    client = HealthClient()
    try:
        await fetch(client, ok_server.url)
        task = asyncio.create_task(fetch(client, hanging.url))
        await async_wait_for(lambda: hanging.hanging == 1, what="the request in flight")
        client.close()
        with pytest.raises(FetchFailed) as failed:
            await task
        assert failed.value.outcome == "unreachable"
        await async_wait_for(lambda: ok_server.closed == 1 and hanging.closed == 1, what="both connections closed")
        with pytest.raises(FetchFailed, match="closed"):
            await fetch(client, ok_server.url)
    finally:
        await hanging.stop()


# --------------------------------------------------------------------------------------------
# TLS
# --------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A self-signed certificate for the name ``localhost`` only (not for 127.0.0.1)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = dt.datetime.now(dt.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(days=1)).not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    folder = tmp_path_factory.mktemp("tls")
    (folder / "cert.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (folder / "key.pem").write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                       serialization.NoEncryption()))
    return folder / "cert.pem", folder / "key.pem"


@pytest.fixture
async def tls_server(certificate: tuple[Path, Path]) -> AsyncIterator[RawServer]:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(*certificate)
    server = await serve(always(answer(200, b"secure")), tls=context)
    yield server
    await server.stop()


async def test_https_verifies_the_certificate_against_the_host_name(tls_server: RawServer,
                                                                     certificate: tuple[Path, Path]) -> None:
    trusting = ssl.create_default_context(cafile=str(certificate[0]))
    client = HealthClient(ssl_context=trusting, resolver=resolving_to("127.0.0.1"))
    url = f"https://localhost:{tls_server.port}/h"
    assert (await fetch(client, url)).body == b"secure"
    assert (await fetch(client, url)).body == b"secure"
    assert tls_server.opened == 1                     # kept alive over TLS too
    # the same trusted certificate, reached by an address it does not name
    with pytest.raises(FetchFailed, match="TLS certificate not trusted") as failed:
        await fetch(client, f"https://127.0.0.1:{tls_server.port}/h")
    assert failed.value.outcome == "unreachable"
    client.close()


async def test_https_with_the_default_roots_refuses_a_self_signed_certificate(tls_server: RawServer) -> None:
    client = HealthClient(resolver=resolving_to("127.0.0.1"))
    with pytest.raises(FetchFailed, match="TLS certificate not trusted") as failed:
        await fetch(client, f"https://localhost:{tls_server.port}/h")
    assert failed.value.outcome == "unreachable"
