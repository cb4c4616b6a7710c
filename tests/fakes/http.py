"""Plumbing shared by the local fake servers: a threaded HTTP server that can end its open
connections on close, so no handler thread or socket outlives a test."""

from __future__ import annotations

import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class TrackingServer(ThreadingHTTPServer):
    """Tracks open connections so that close() can end idle keep-alive ones and join their threads.
    ``fake`` is the fake service the handlers answer for."""

    daemon_threads = False
    block_on_close = True

    def __init__(self, address: tuple[str, int], handler: type[BaseHTTPRequestHandler], fake: Any) -> None:
        self.fake = fake
        self._open: set[socket.socket] = set()
        self._open_lock = threading.Lock()
        super().__init__(address, handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        with self._open_lock:
            self._open.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self._open_lock:
            self._open.discard(request)
        super().shutdown_request(request)

    def close_connections(self) -> None:
        with self._open_lock:
            open_now = list(self._open)
        for sock in open_now:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


class FakeService:
    """Lifecycle shared by the fake services: a TrackingServer on 127.0.0.1 in a background thread.
    Subclasses set ``handler`` (their request handler class) and may override ``before_close``."""

    handler: type[BaseHTTPRequestHandler]

    def __init__(self) -> None:
        self._httpd: TrackingServer | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> Any:
        if self._httpd is not None:
            raise RuntimeError(f"{type(self).__name__} is already running")
        self._httpd = TrackingServer(("127.0.0.1", 0), self.handler, self)
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.01},
                                        name=type(self).__name__, daemon=True)
        self._thread.start()
        return self

    def before_close(self) -> None:
        """Wake whatever a handler may be waiting on."""

    def close(self) -> None:
        httpd, thread = self._httpd, self._thread
        if httpd is None:
            return
        self.before_close()
        httpd.shutdown()
        httpd.close_connections()
        httpd.server_close()                       # joins the connection threads
        if thread is not None:
            thread.join(5)
        self._httpd = self._thread = None

    def __enter__(self) -> Any:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def base_url(self) -> str:
        """The server root."""
        if self._httpd is None:
            raise RuntimeError(f"{type(self).__name__} is not running")
        return f"http://127.0.0.1:{self._httpd.server_address[1]}"


class FakeHandler(BaseHTTPRequestHandler):
    """What the fakes' request handlers share: HTTP/1.1, quiet, GET and POST to ``_serve``, and
    ``send`` that writes one whole answer and gives up quietly when the client already left."""

    protocol_version = "HTTP/1.1"
    sys_version = ""
    timeout = 30
    server: TrackingServer

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 — quiet
        pass

    def do_GET(self) -> None:  # noqa: N802
        self._serve()

    def do_POST(self) -> None:  # noqa: N802
        self._serve()

    def _serve(self) -> None:
        raise NotImplementedError

    def send(self, status: int, data: bytes, ctype: str, headers: dict[str, str] | None = None) -> None:
        try:
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(data)))
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True

