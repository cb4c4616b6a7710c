"""The listening socket of `alertengine serve` sends answers at once (no Nagle delay)."""

from __future__ import annotations

import socket

from alertengine.cli.serve import _listen


def test_accepted_connections_have_nagle_turned_off() -> None:
    """A keep-alive client otherwise waits out its delayed ACK (~40 ms) for the second write of
    every response (headers and body go out separately): asyncio only turns Nagle off on sockets
    that name their protocol, which socket.create_server's do not."""
    listener = _listen("127.0.0.1", 0)
    try:
        assert listener.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0
        client = socket.create_connection(listener.getsockname()[:2], timeout=10)
        try:
            accepted, _ = listener.accept()
            with accepted:
                assert accepted.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0
        finally:
            client.close()
    finally:
        listener.close()
