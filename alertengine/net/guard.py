"""The outbound URL policy, enforced on the address actually connected to, at connect time.

Checking a URL when it is saved is a courtesy: a host name can resolve to anything later (DNS
rebinding, a record changed after the check). Every outbound client of the appliance — the poller,
the recovery and generic webhooks, the chat channels, the AI and Bot API clients — connects through
``guarded_transport``: its network backend resolves the name itself, refuses the connection if
**any** resolved address is refused by the policy (an IPv6 address embedding an IPv4 one — mapped,
6to4, Teredo, NAT64, IPv4-compatible — is judged by the IPv4 address too), then connects to the
address it checked, so nothing can resolve differently between the check and the connect. TLS still
verifies the certificate against the host name. Redirects are not followed by our clients, and any
that were would go through the same check.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import typing
from typing import Awaitable, Callable

import httpcore
import httpx

from .urlpolicy import IPAddress, UrlPolicy, address_refusal

Resolver = Callable[[str, int], Awaitable[list[IPAddress]]]


class RefusedAddressError(httpcore.ConnectError):
    """A connection the outbound URL policy refuses; the message names the host and why."""


def is_refused(exc: BaseException) -> bool:
    """Whether an httpx error was the outbound policy refusing the connection (final: never retried)."""
    seen: BaseException | None = exc
    for _ in range(8):
        if seen is None:
            return False
        if isinstance(seen, RefusedAddressError):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def refusal(ip: IPAddress, policy: UrlPolicy) -> str | None:
    """Why ``ip`` may not be connected to (judging every IPv4 address it embeds too), or None."""
    return address_refusal(ip, policy)


async def system_resolver(host: str, port: int) -> list[IPAddress]:
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    out: list[IPAddress] = []
    for *_, sockaddr in infos:
        ip = ipaddress.ip_address(str(sockaddr[0]).split("%", 1)[0])
        if ip not in out:
            out.append(ip)
    return out


class GuardedBackend(httpcore.AsyncNetworkBackend):
    """An httpcore network backend that connects only to addresses the policy allows."""

    def __init__(self, policy: UrlPolicy, resolver: Resolver = system_resolver,
                 inner: httpcore.AsyncNetworkBackend | None = None) -> None:
        self.policy = policy
        self.resolver = resolver
        self.inner = inner or httpcore.AnyIOBackend()

    async def connect_tcp(self, host: str, port: int, timeout: float | None = None, local_address: str | None = None,
                          socket_options: typing.Iterable[typing.Any] | None = None) -> httpcore.AsyncNetworkStream:
        try:
            addresses: list[IPAddress] = [ipaddress.ip_address(host.strip("[]"))]
        except ValueError:
            try:
                addresses = await asyncio.wait_for(self.resolver(host, port), timeout)
            except (OSError, UnicodeError, asyncio.TimeoutError) as exc:
                raise httpcore.ConnectError(f"cannot resolve {host}: {exc}") from None
        if not addresses:
            raise httpcore.ConnectError(f"{host} does not resolve")
        for ip in addresses:   # every address the name has: a mix is refused, not raced
            reason = refusal(ip, self.policy)
            if reason is not None:
                subject = str(ip) if str(ip) == host.strip("[]") else f"{host} ({ip})"
                raise RefusedAddressError(f"outbound policy: {subject} {reason}")
        last: Exception | None = None
        for ip in addresses:
            try:
                return await self.inner.connect_tcp(str(ip), port, timeout=timeout, local_address=local_address,
                                                    socket_options=socket_options)
            except (httpcore.ConnectError, httpcore.ConnectTimeout, OSError) as exc:
                last = exc
        assert last is not None
        raise last

    async def connect_unix_socket(self, path: str, timeout: float | None = None,
                                  socket_options: typing.Iterable[typing.Any] | None = None) -> httpcore.AsyncNetworkStream:
        raise httpcore.ConnectError("outbound policy: unix sockets are not reachable")

    async def sleep(self, seconds: float) -> None:
        await self.inner.sleep(seconds)


class GuardedTransport(httpx.AsyncHTTPTransport):
    """``httpx.AsyncHTTPTransport`` whose every connection goes through ``GuardedBackend``."""

    def __init__(self, policy: UrlPolicy, *, resolver: Resolver = system_resolver, verify: typing.Any = True,
                 limits: httpx.Limits = httpx.Limits(max_connections=100, max_keepalive_connections=20),
                 retries: int = 0) -> None:
        super().__init__(verify=verify, limits=limits, retries=retries, trust_env=False)
        old = self._pool
        # httpx builds its connection pool without a way to pass a network backend: rebuild it with
        # the same settings and ours (httpcore.AsyncConnectionPool's public constructor).
        self._pool = httpcore.AsyncConnectionPool(
            ssl_context=old._ssl_context, max_connections=old._max_connections,
            max_keepalive_connections=old._max_keepalive_connections, keepalive_expiry=old._keepalive_expiry,
            http1=old._http1, http2=old._http2, retries=retries,
            network_backend=GuardedBackend(policy, resolver))


def guarded_client(policy: UrlPolicy, **kw: typing.Any) -> httpx.AsyncClient:
    """An ``httpx.AsyncClient`` that never follows redirects and connects only where ``policy`` allows."""
    transport_kw = {k: kw.pop(k) for k in ("resolver", "verify", "limits") if k in kw}
    return httpx.AsyncClient(transport=GuardedTransport(policy, **transport_kw), follow_redirects=False,
                             trust_env=False, **kw)
