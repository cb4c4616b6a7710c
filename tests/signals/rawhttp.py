"""A scripted HTTP/1.1 server on 127.0.0.1 for the poller's client tests: raw bytes out, every request head kept.

``script(request_index, connection_index, head)`` says what to do with each request: bytes to send,
``Last(bytes)`` (send them, then close), ``CLOSE`` (close the connection without answering) or
``HANG`` (never answer, until the client hangs up). The server counts connections opened and closed,
so tests can see reuse and aborts."""

from __future__ import annotations

import asyncio
import ssl
from dataclasses import dataclass, field
from typing import Callable, Union

CLOSE = object()
HANG = object()
Action = Union[bytes, object]


class Last(bytes):
    """An answer after which the server closes the connection (without saying so in a header)."""


def answer(status: int = 200, body: bytes = b"ok", ctype: str = "text/plain", extra: str = "") -> bytes:
    return (f"HTTP/1.1 {status} X\r\nContent-Type: {ctype}\r\nContent-Length: {len(body)}\r\n{extra}\r\n"
            .encode() + body)


@dataclass
class RawServer:
    script: Callable[[int, int, bytes], Action]
    heads: list[bytes] = field(default_factory=list)
    opened: int = 0
    closed: int = 0
    hanging: int = 0
    port: int = 0
    server: asyncio.AbstractServer | None = None
    writers: set[asyncio.StreamWriter] = field(default_factory=set)

    async def start(self, tls: ssl.SSLContext | None = None) -> RawServer:
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", 0, ssl=tls)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def stop(self) -> None:
        assert self.server is not None
        self.server.close()
        for writer in list(self.writers):
            writer.transport.abort()
        await self.server.wait_closed()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connection = self.opened
        self.opened += 1
        self.writers.add(writer)
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                self.heads.append(head)
                action = self.script(len(self.heads) - 1, connection, head)
                if action is CLOSE:
                    break
                if action is HANG:
                    self.hanging += 1
                    await reader.read()               # until the client hangs up
                    break
                assert isinstance(action, bytes)
                writer.write(action)
                await writer.drain()
                if isinstance(action, Last):
                    break
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.LimitOverrunError):
            pass
        finally:
            self.closed += 1
            self.writers.discard(writer)
            writer.close()


async def serve(script: Callable[[int, int, bytes], Action], tls: ssl.SSLContext | None = None) -> RawServer:
    return await RawServer(script).start(tls)
