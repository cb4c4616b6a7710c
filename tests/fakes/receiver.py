"""A local recovery-webhook receiver on 127.0.0.1 that verifies signatures and answers from a script."""

from __future__ import annotations

import json
import socket
import threading
from collections import deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Mapping, NamedTuple

from alertengine.net.webhooks import SIGNATURE_HEADER, TIMESTAMP_HEADER, verify

DEFAULT_BODY = json.dumps({"ok": True}).encode()
ENDLESS_CAP_BYTES = 256 * 1024 * 1024   # an "endless" body stops here even if nobody hangs up


@dataclass(frozen=True)
class Reply:
    """One scripted answer. ``body`` defaults to ``{"ok": true}`` for 2xx, else ``{"error": "HTTP <status>"}``;
    ``endless`` repeats ``body`` until the client hangs up (no Content-Length)."""

    status: int = 200
    headers: Mapping[str, str] = field(default_factory=dict)
    body: bytes | None = None
    endless: bool = False

    def content(self) -> bytes:
        if self.body is not None:
            return self.body
        return DEFAULT_BODY if 200 <= self.status < 300 else json.dumps({"error": f"HTTP {self.status}"}).encode()


Action = Reply | str   # a Reply, "timeout" or "close"
ScriptEntry = int | tuple | Reply | str


class ReceivedRequest(NamedTuple):
    """One request as it arrived; ``headers`` has lower-case names."""

    path: str
    headers: dict[str, str]
    body: bytes
    signature_ok: bool


def _action(entry: ScriptEntry) -> Action:
    if isinstance(entry, Reply) or entry in ("timeout", "close"):
        return entry  # type: ignore[return-value]
    if isinstance(entry, bool):
        raise TypeError(f"not a script entry: {entry!r}")
    if isinstance(entry, int):
        return Reply(entry)
    if isinstance(entry, tuple) and len(entry) == 2:
        return Reply(entry[0], dict(entry[1]))
    if isinstance(entry, tuple) and len(entry) == 3:
        return Reply(entry[0], dict(entry[1]), entry[2])
    raise TypeError(f"not a script entry: {entry!r}")


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.0"   # one request per connection: no idle keep-alive thread outlives a test
    timeout = 10                    # a client that stops sending mid-request cannot pin a thread for long
    receiver: Receiver

    def do_POST(self) -> None:  # noqa: N802
        self._handle()

    def do_GET(self) -> None:  # noqa: N802
        self._handle()

    def do_PUT(self) -> None:  # noqa: N802
        self._handle()

    def log_message(self, *args: object) -> None:
        return None

    def _handle(self) -> None:
        receiver = self.receiver
        length = self.headers.get("Content-Length", "0")
        body = self.rfile.read(int(length)) if length.isdigit() else b""
        headers = {name.lower(): value for name, value in self.headers.items()}
        ok = verify(receiver.secret, headers.get(TIMESTAMP_HEADER.lower()), headers.get(SIGNATURE_HEADER.lower()),
                    body)
        receiver._record(ReceivedRequest(self.path, headers, body, ok))
        action = receiver._next_action()
        self.close_connection = True
        try:
            if action == "close":
                return   # nothing written: the client sees the connection end without an answer
            if action == "timeout":
                if receiver._released.wait(receiver.hang_seconds):
                    return
                action = Reply()
            assert isinstance(action, Reply)
            self._reply(action)
        except (BrokenPipeError, ConnectionResetError, ConnectionAbortedError, TimeoutError):
            pass   # the client gave up first, as some tests intend

    def _reply(self, reply: Reply) -> None:
        self.send_response(reply.status)
        names = {name.lower() for name in reply.headers}
        for name, value in reply.headers.items():
            self.send_header(name, value)
        if "content-type" not in names:
            self.send_header("Content-Type", "application/json")
        body = reply.content()
        if not reply.endless:
            self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if not reply.endless:
            self.wfile.write(body)
            return
        chunk = body or b"x"
        sent = 0
        while sent < ENDLESS_CAP_BYTES and not self.receiver._released.is_set():
            self.wfile.write(chunk)
            sent += len(chunk)


class Receiver:
    """A real HTTP server on 127.0.0.1 in a background thread, answering from a script.

    ``receiver.script(500, 200)`` queues answers; an entry is a status, ``(status, headers)``,
    ``(status, headers, body)``, a ``Reply``, ``"timeout"`` (answer only after ``hang_seconds`` —
    longer than any client timeout in the tests — or never, if the receiver closes first) or
    ``"close"`` (hang up without answering). With the script empty it answers 200 ``{"ok": true}``.
    Every request is recorded in ``requests``, with whether its signature verified against
    ``secret``. Use as a context manager, or call ``close()``.
    """

    def __init__(self, secret: str = "whsec_receiver_test_secret", *, hang_seconds: float = 5.0) -> None:
        self.secret = secret
        self.hang_seconds = hang_seconds
        self._requests: list[ReceivedRequest] = []
        self._script: deque[Action] = deque()
        self._lock = threading.Lock()
        self._released = threading.Event()
        handler = type("Handler", (_Handler,), {"receiver": self})
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._server.daemon_threads = False   # server_close() joins every handler thread
        self._server.block_on_close = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                                        name="webhook-receiver", daemon=True)
        self._thread.start()
        self._closed = False

    @property
    def requests(self) -> list[ReceivedRequest]:
        with self._lock:
            return list(self._requests)

    def script(self, *entries: ScriptEntry) -> None:
        actions = [_action(entry) for entry in entries]
        with self._lock:
            self._script.extend(actions)

    def _record(self, request: ReceivedRequest) -> None:
        with self._lock:
            self._requests.append(request)

    def _next_action(self) -> Action:
        with self._lock:
            return self._script.popleft() if self._script else Reply()

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._released.set()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)

    def __enter__(self) -> Receiver:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()


def closed_port_url(path: str = "/hook") -> str:
    """A URL on 127.0.0.1 where nothing listens (a port just bound and released)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}{path}"
