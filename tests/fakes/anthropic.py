"""A fake Anthropic Messages API on 127.0.0.1 (real wire format) answering each model from a script.

Wire behaviour follows Anthropic's Messages API reference: ``POST /v1/messages`` under the
server root (the SDK's ``base_url`` has no ``/v1``); the API key in ``x-api-key`` — or in
``Authorization: Bearer``, which is what the installed SDK (2.x) sends for ``api_key=``; an
``anthropic-version`` header (any value); ``message`` responses with ``tool_use`` / ``text`` blocks,
``stop_reason`` and ``usage``; errors as ``{"type":"error","error":{"type":…,"message":…},
"request_id":"req_…"}`` with a ``request-id`` header (429 also carries ``retry-after`` and
``retry-after-ms``). Error messages are this fake's own words. Every connection is closed after its
answer (``Connection: close``), so no idle keep-alive thread outlives a test.

Usage::

    with FakeAnthropic(default=ToolUse({"category": "unknown"})) as fake:
        client = anthropic.AsyncAnthropic(api_key=fake.api_key, base_url=fake.base_url, max_retries=0)
        fake.answer("claude-fast", Status(429, retry_after_ms=10), ToolUse({"category": "database"}))
"""

from __future__ import annotations

import json
import math
import secrets
import threading
from collections import defaultdict, deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from typing import Any, Iterator, Mapping, Union

import pytest

from tests.fakes.http import FakeService, TrackingServer

MAX_BODY = 32 * 1024 * 1024          # the real API's request size limit
API_VERSION = "2023-06-01"
ERROR_TYPES = {400: "invalid_request_error", 401: "authentication_error", 402: "billing_error",
               403: "permission_error", 404: "not_found_error", 413: "request_too_large",
               429: "rate_limit_error", 500: "api_error", 504: "timeout_error", 529: "overloaded_error"}
ERROR_MESSAGES = {429: "Number of request tokens has exceeded your per-minute rate limit",
                  500: "Internal server error", 529: "Overloaded", 504: "Request timed out"}


@dataclass(frozen=True)
class ToolUse:
    """200 with one ``tool_use`` block named after the request's forced tool, ``stop_reason: tool_use``."""

    input: Mapping[str, Any]
    usage: tuple[int, int] = (400, 60)


@dataclass(frozen=True)
class Malformed:
    """A ``tool_use`` whose input breaks the caller's schema (any dict: the fake does not look at it)."""

    input: Mapping[str, Any]
    usage: tuple[int, int] = (400, 60)


@dataclass(frozen=True)
class Text:
    """200 with only a text block, ``stop_reason: end_turn`` (the model ignored the forced tool)."""

    text: str
    usage: tuple[int, int] = (400, 30)


@dataclass(frozen=True)
class Refusal:
    """200 with ``stop_reason: refusal`` and a text block."""

    text: str = "I can't help with that request."
    usage: tuple[int, int] = (400, 12)


@dataclass(frozen=True)
class Status:
    """An error answer with the documented body. ``retry_after_ms`` defaults to 10 for 429 (sent as
    ``retry-after-ms`` and, rounded up to whole seconds, ``retry-after``); ``headers`` are added as given
    (e.g. ``{"x-should-retry": "false"}``)."""

    status: int
    retry_after_ms: int | None = None
    error_type: str | None = None
    message: str | None = None
    headers: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Hang:
    """Wait ``seconds`` (or until the fake closes) and then answer 200 with ``then`` — by default the
    fake's default reply, or a text block when it has none. Used to exceed client timeouts."""

    seconds: float
    then: "ToolUse | Malformed | Text | Refusal | None" = None


Reply = Union[ToolUse, Malformed, Text, Refusal, Status, Hang]
Answer = tuple[int, dict[str, Any], dict[str, str]]


def _request_id() -> str:
    return "req_01" + secrets.token_hex(12)


def error_body(status: int, error_type: str | None = None, message: str | None = None) -> dict[str, Any]:
    """The documented error envelope (its ``request_id`` is fresh)."""
    kind = error_type or ERROR_TYPES.get(status, "api_error")
    return {"type": "error", "error": {"type": kind, "message": message or ERROR_MESSAGES.get(status, kind)},
            "request_id": _request_id()}


class FakeAnthropic(FakeService):
    """The Messages API for one API key. ``requests`` holds every ``POST /v1/messages`` as
    ``{"headers": {lower-case name: value}, "body": parsed JSON or None}``, in arrival order."""

    def __init__(self, api_key: str | None = None, *, default: ToolUse | None = None) -> None:
        super().__init__()
        self.api_key = api_key or "sk-ant-api03-fake-" + secrets.token_urlsafe(24)
        self.default = default
        self.requests: list[dict[str, Any]] = []
        self.raw: list[bytes] = []                  # every request body exactly as it arrived
        self._scripts: dict[str, deque[Reply]] = defaultdict(deque)
        self._lock = threading.Lock()
        self._stop = threading.Event()

    # --- lifecycle -----------------------------------------------------------------------------
    def before_close(self) -> None:
        self._stop.set()                            # wakes every Hang

    def start(self) -> FakeAnthropic:
        self._stop.clear()
        return super().start()

    # --- test controls -------------------------------------------------------------------------
    def answer(self, model: str, *replies: Reply) -> None:
        """Queue replies for requests naming ``model``; one reply per accepted request."""
        for reply in replies:
            if not isinstance(reply, (ToolUse, Malformed, Text, Refusal, Status, Hang)):
                raise TypeError(f"not a reply: {reply!r}")
        with self._lock:
            self._scripts[model].extend(replies)

    def pending(self, model: str) -> int:
        """Replies still queued for ``model``."""
        with self._lock:
            return len(self._scripts.get(model, ()))

    def requests_for(self, model: str) -> list[dict[str, Any]]:
        with self._lock:
            return [r for r in self.requests if isinstance(r["body"], dict) and r["body"].get("model") == model]

    def wire_text(self) -> str:
        """Every request body received so far, decoded and joined: what reached the server (for
        asserting that a secret never did)."""
        with self._lock:
            return "\n".join(raw.decode("utf-8", "replace") for raw in self.raw)

    # --- the API -------------------------------------------------------------------------------
    def handle(self, path: str, headers: dict[str, str], raw: bytes) -> Answer | tuple[Hang, dict[str, Any]]:
        """The answer to one request: ``(status, JSON body, extra headers)``, or a Hang to wait out
        (with the request body, to build the late answer from)."""
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = None
        with self._lock:
            self.requests.append({"headers": headers, "body": body})
            self.raw.append(raw)
        if path.split("?", 1)[0] != "/v1/messages":
            return self._error(404, message=f"Not found: {path}")
        if _presented_key(headers) != self.api_key:
            return self._error(401, message="invalid x-api-key")
        if not headers.get("anthropic-version"):
            return self._error(400, message="anthropic-version: header is required")
        problem = _check_request(body)
        if problem:
            return self._error(400, message=problem)
        assert isinstance(body, dict)
        with self._lock:
            script = self._scripts.get(body["model"])
            reply: Reply | None = script.popleft() if script else None
        if reply is None:
            if self.default is None:
                return self._error(500, message=f"the fake has no reply scripted for {body['model']!r}")
            reply = self.default
        if isinstance(reply, Hang):
            return reply, body
        return self.respond(reply, body)

    def respond(self, reply: ToolUse | Malformed | Text | Refusal | Status, body: dict[str, Any]) -> Answer:
        if isinstance(reply, Status):
            return self._error(reply.status, reply.error_type, reply.message, reply.retry_after_ms, reply.headers)
        if isinstance(reply, (ToolUse, Malformed)):
            name = _forced_tool(body)
            if name is None:
                return self._error(400, message="the fake was told to answer with tool_use but the request "
                                                "offers no tool")
            block: dict[str, Any] = {"type": "tool_use", "id": "toolu_01" + secrets.token_hex(11), "name": name,
                                     "input": dict(reply.input)}
            return self._message(body, [block], "tool_use", reply.usage)
        if isinstance(reply, Refusal):
            return self._message(body, [{"type": "text", "text": reply.text}], "refusal", reply.usage)
        return self._message(body, [{"type": "text", "text": reply.text}], "end_turn", reply.usage)

    def late_answer(self, hang: Hang, body: dict[str, Any]) -> Answer | None:
        """Wait out a Hang; None when the fake closed first."""
        if self._stop.wait(hang.seconds):
            return None
        then = hang.then or self.default or Text("(a late answer)")
        return self.respond(then, body)

    @staticmethod
    def _message(body: dict[str, Any], content: list[dict[str, Any]], stop_reason: str,
                 usage: tuple[int, int]) -> Answer:
        doc = {"id": "msg_01" + secrets.token_hex(11), "type": "message", "role": "assistant",
               "model": body["model"], "content": content, "stop_reason": stop_reason, "stop_sequence": None,
               "usage": {"input_tokens": usage[0], "output_tokens": usage[1], "cache_creation_input_tokens": 0,
                         "cache_read_input_tokens": 0, "service_tier": "standard"}}
        return 200, doc, {"request-id": _request_id()}

    @staticmethod
    def _error(status: int, error_type: str | None = None, message: str | None = None,
               retry_after_ms: int | None = None, extra: Mapping[str, str] | None = None) -> Answer:
        doc = error_body(status, error_type, message)
        headers = {"request-id": doc["request_id"]}
        if status == 429 and retry_after_ms is None:
            retry_after_ms = 10
        if retry_after_ms is not None:
            headers["retry-after-ms"] = str(retry_after_ms)
            headers["retry-after"] = str(max(1, math.ceil(retry_after_ms / 1000)))
        headers.update(extra or {})
        return status, doc, headers


def _presented_key(headers: Mapping[str, str]) -> str | None:
    """The API key a request carries: ``x-api-key`` (SDK 0.x, as the API reference documents) or ``Authorization: Bearer``
    (what the installed SDK 2.x sends for ``api_key=``)."""
    if "x-api-key" in headers:
        return headers["x-api-key"]
    scheme, _, token = headers.get("authorization", "").partition(" ")
    return token if scheme.lower() == "bearer" and token else None


def _check_request(body: Any) -> str | None:
    """What the real API would refuse with 400 (the parts callers are likely to get wrong)."""
    if not isinstance(body, dict):
        return "request body must be a JSON object"
    if not isinstance(body.get("model"), str) or not body["model"]:
        return "model: Field required"
    tokens = body.get("max_tokens")
    if type(tokens) is not int or tokens < 1:
        return "max_tokens: Field required (a positive integer)"
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        return "messages: at least one message is required"
    tools = body.get("tools", [])
    if not isinstance(tools, list) or not all(isinstance(t, dict) and isinstance(t.get("name"), str) for t in tools):
        return "tools: each tool needs a name"
    choice = body.get("tool_choice")
    if choice is not None:
        if not isinstance(choice, dict) or choice.get("type") not in ("auto", "any", "none", "tool"):
            return "tool_choice.type: must be auto, any, none or tool"
        if choice["type"] == "tool" and choice.get("name") not in {t["name"] for t in tools}:
            return f"tool_choice.name: tool {choice.get('name')!r} not found in tools"
    return None


def _forced_tool(body: dict[str, Any]) -> str | None:
    """The tool a tool_use answer is named after: the forced one, else the first offered."""
    choice = body.get("tool_choice")
    if isinstance(choice, dict) and choice.get("type") == "tool":
        return choice["name"]
    tools = body.get("tools") or []
    return tools[0]["name"] if tools else None


# ----------------------------------------------------------------------------------------------
# HTTP plumbing
# ----------------------------------------------------------------------------------------------



class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "fake-anthropic"
    sys_version = ""
    timeout = 30
    server: TrackingServer

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - quiet
        pass

    def do_POST(self) -> None:  # noqa: N802
        self.close_connection = True
        fake = self.server.fake
        length = self.headers.get("Content-Length") or "0"
        if not length.isdigit() or int(length) > MAX_BODY:
            self._reply(*fake._error(413, message="request body too large or without a length"))
            return
        try:
            raw = self.rfile.read(int(length))
        except (OSError, ValueError):
            return
        headers = {name.lower(): value for name, value in self.headers.items()}
        answer = fake.handle(self.path, headers, raw)
        if isinstance(answer[0], Hang):
            late = fake.late_answer(answer[0], answer[1])  # type: ignore[arg-type]
            if late is None:
                return                                   # closing: hang up without an answer
            answer = late
        self._reply(*answer)  # type: ignore[misc]

    def do_GET(self) -> None:  # noqa: N802
        self.close_connection = True
        self._reply(*self.server.fake._error(404, message=f"Not found: {self.path}"))

    def _reply(self, status: int, doc: dict[str, Any], headers: dict[str, str]) -> None:
        data = json.dumps(doc).encode()
        try:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.send_header("Connection", "close")
            for name, value in headers.items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError, ConnectionAbortedError, TimeoutError):
            pass                                         # the client gave up first, as timeout tests intend


@pytest.fixture
def fake_anthropic() -> Iterator[FakeAnthropic]:
    """A running FakeAnthropic for one test (import this name into a test module or conftest to use it)."""
    with FakeAnthropic() as fake:
        yield fake


FakeAnthropic.handler = _Handler
