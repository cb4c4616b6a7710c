"""A real ``serve`` bounds what one request may make it hold before authentication: a megabyte of
headers or of URL is refused (4xx, connection closed) instead of being read into memory."""

from __future__ import annotations

import socket
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from tests.serving import running_appliance

pytestmark = pytest.mark.slow


def send_and_read(host: str, port: int, head: bytes) -> bytes:
    """Send ``head`` in pieces (the server may hang up part-way) and return what it answered."""
    with socket.create_connection((host, port), timeout=30) as sock:
        try:
            for start in range(0, len(head), 16384):
                sock.sendall(head[start:start + 16384])
        except (BrokenPipeError, ConnectionResetError):
            pass   # refused before the end: what it said is still to be read
        answer = b""
        try:
            while chunk := sock.recv(65536):
                answer += chunk
        except (ConnectionResetError, socket.timeout):
            pass
    return answer


@pytest.mark.parametrize("what", ["headers", "url"])
def test_a_megabyte_before_the_body_is_refused(tmp_path: Path, what: str) -> None:
    with running_appliance(tmp_path) as app:
        parts = urlsplit(app.url)
        if what == "headers":
            head = b"GET /healthz HTTP/1.1\r\nHost: x\r\n" + b"X-Pad: " + b"a" * (1 << 20) + b"\r\n\r\n"
        else:
            head = b"GET /healthz?pad=" + b"a" * (1 << 20) + b" HTTP/1.1\r\nHost: x\r\n\r\n"
        answer = send_and_read(parts.hostname or "127.0.0.1", parts.port or 80, head)
        status = answer.split(b"\r\n", 1)[0]
        assert status.startswith(b"HTTP/1.1 4"), f"expected a 4xx refusal, got {answer[:200]!r}"
        assert app.get("/healthz").status_code == 200    # and it goes on serving everyone else
