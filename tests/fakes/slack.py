"""A fake Slack on 127.0.0.1: Web API ``chat.postMessage`` / ``chat.update``, an incoming webhook,
failure injection, and the signed ``block_actions`` requests Slack sends to an app.

Web API calls take JSON with ``Authorization: Bearer <token>`` and answer HTTP 200 ``{"ok": false,
"error": ...}`` on errors (HTTP 429 with ``Retry-After`` when rate limited); the incoming webhook
answers ``ok`` as plain text or an error word with a 4xx. Block Kit is checked lightly. Posting to a
user id ``U…`` stores the message in the direct-message channel ``D…`` that the answer names.
Not implemented: tokens in JSON bodies, ``response_url``.

Usage::

    with FakeSlack() as fake:
        client = SlackClient(fake.base_url, fake.token, http)
        fake.fail_next("chat.postMessage", status=429, retry_after=2)
"""

from __future__ import annotations

import json
import re
import secrets
import threading
import time
from collections import defaultdict, deque
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit

import httpx
import pytest
from slack_sdk.signature import SignatureVerifier

from tests.fakes.http import FakeHandler, FakeService

METHODS = ("chat.postMessage", "chat.update")
WEBHOOK = "webhook"
TEAM_ID = "T000"
TEAM_DOMAIN = "alertengine-fake"
BOT_USER = "U0BOT"
BOT_ID = "B0BOT"
APP_ID = "A0APP"
LOOPBACK = {"127.0.0.1", "localhost", "::1"}
MAX_BODY = 1 << 20
MAX_TEXT = 40_000
# incoming-webhook error words and their HTTP status, as Slack's webhook documentation lists them
WEBHOOK_ERRORS = {"invalid_payload": 400, "user_not_found": 400, "channel_not_found": 404,
                  "channel_is_archived": 410, "action_prohibited": 403, "posting_to_general_channel_denied": 403,
                  "too_many_attachments": 400, "no_service": 404, "no_service_id": 400, "no_team": 400,
                  "team_disabled": 403, "invalid_token": 403, "invalid_blocks": 400, "rate_limited": 429}
_SERVER_ERRORS = {500: "internal_error", 502: "bad_gateway", 503: "service_unavailable", 504: "request_timeout"}
_BLOCK_TYPES = ("actions", "context", "divider", "file", "header", "image", "input", "rich_text", "section",
                "video", "markdown")
_ELEMENT_TYPES = ("button", "checkboxes", "datepicker", "datetimepicker", "overflow", "radio_buttons",
                  "static_select", "external_select", "users_select", "conversations_select",
                  "channels_select", "multi_static_select", "multi_users_select", "timepicker",
                  "workflow_button")


class SlackError(Exception):
    """A request the fake refuses; ``error`` is the Slack error word sent back."""

    def __init__(self, error: str, detail: str | None = None) -> None:
        super().__init__(error)
        self.error = error
        self.detail = detail


@dataclass(frozen=True)
class InjectedFailure:
    status: int
    error: str | None = None
    retry_after: int | None = None


@dataclass(frozen=True)
class Call:
    """One request the fake accepted for processing: the method, its decoded body and its headers."""

    method: str
    body: dict[str, Any]
    headers: dict[str, str]


# ----------------------------------------------------------------------------------------------
# Block Kit (light)
# ----------------------------------------------------------------------------------------------

def _invalid(reason: str) -> SlackError:
    return SlackError("invalid_blocks", reason)


def _text_object(obj: Any, where: str, limit: int, plain_only: bool = False) -> None:
    if not isinstance(obj, dict):
        raise _invalid(f"{where} must be a text object")
    kinds = ("plain_text",) if plain_only else ("plain_text", "mrkdwn")
    if obj.get("type") not in kinds:
        raise _invalid(f"{where}.type must be one of {', '.join(kinds)}")
    text = obj.get("text")
    if not isinstance(text, str) or not 1 <= len(text) <= limit:
        raise _invalid(f"{where}.text must be a string of 1 to {limit} characters")
    if "emoji" in obj and (obj["type"] != "plain_text" or not isinstance(obj["emoji"], bool)):
        raise _invalid(f"{where}.emoji is allowed on plain_text only, as a boolean")


def _unique_id(value: Any, where: str, seen: set[str]) -> None:
    """An optional block_id or action_id: 1-255 characters, unique in the message."""
    if value is None:
        return
    if not isinstance(value, str) or not 1 <= len(value) <= 255:
        raise _invalid(f"{where} must be a string of 1 to 255 characters")
    if value in seen:
        raise _invalid(f"{where} {value!r} is not unique in the message")
    seen.add(value)


def _element(element: Any, where: str, action_ids: set[str]) -> None:
    if not isinstance(element, dict) or not isinstance(element.get("type"), str):
        raise _invalid(f"{where} must be an object with a type")
    if element["type"] not in _ELEMENT_TYPES:
        raise _invalid(f"{where}.type {element['type']!r} is not an interactive element")
    action_id = element.get("action_id")
    _unique_id(action_id, f"{where}.action_id", action_ids)
    if element["type"] != "button":
        return
    if action_id is None:
        raise _invalid(f"{where}.action_id is required")
    _text_object(element.get("text"), f"{where}.text", 75, plain_only=True)
    value = element.get("value")
    if value is not None and (not isinstance(value, str) or len(value) > 2000):
        raise _invalid(f"{where}.value must be a string of at most 2000 characters")
    if "style" in element and element["style"] not in ("primary", "danger"):
        raise _invalid(f"{where}.style must be primary or danger")
    url = element.get("url")
    if url is not None and (not isinstance(url, str) or not 1 <= len(url) <= 3000):
        raise _invalid(f"{where}.url must be a string of at most 3000 characters")


def check_blocks(blocks: Any) -> list[dict[str, Any]]:
    """The blocks when they pass the fake's light Block Kit checks; else SlackError("invalid_blocks")."""
    if isinstance(blocks, str):                     # form-encoded calls send blocks as a JSON string
        try:
            blocks = json.loads(blocks)
        except ValueError:
            raise SlackError("invalid_blocks_format") from None
    if not isinstance(blocks, list):
        raise SlackError("invalid_blocks_format")
    if len(blocks) > 50:
        raise _invalid("no more than 50 blocks")
    block_ids: set[str] = set()
    action_ids: set[str] = set()
    for i, block in enumerate(blocks):
        where = f"blocks[{i}]"
        if not isinstance(block, dict) or not isinstance(block.get("type"), str):
            raise _invalid(f"{where} must be an object with a type")
        kind = block["type"]
        if kind not in _BLOCK_TYPES:
            raise _invalid(f"{where}.type {kind!r} is not a block type")
        _unique_id(block.get("block_id"), f"{where}.block_id", block_ids)
        if kind == "header":
            _text_object(block.get("text"), f"{where}.text", 150, plain_only=True)
        elif kind == "section":
            fields = block.get("fields")
            if "text" not in block and not fields:
                raise _invalid(f"{where} needs text or fields")
            if "text" in block:
                _text_object(block["text"], f"{where}.text", 3000)
            if fields is not None:
                if not isinstance(fields, list) or not 1 <= len(fields) <= 10:
                    raise _invalid(f"{where}.fields must be a list of 1 to 10 text objects")
                for j, field_ in enumerate(fields):
                    _text_object(field_, f"{where}.fields[{j}]", 2000)
            if "accessory" in block:
                _element(block["accessory"], f"{where}.accessory", action_ids)
        elif kind == "context":
            elements = block.get("elements")
            if not isinstance(elements, list) or not 1 <= len(elements) <= 10:
                raise _invalid(f"{where}.elements must be a list of 1 to 10 elements")
            for j, element in enumerate(elements):
                if isinstance(element, dict) and element.get("type") == "image":
                    continue
                _text_object(element, f"{where}.elements[{j}]", 3000)
        elif kind == "actions":
            elements = block.get("elements")
            if not isinstance(elements, list) or not 1 <= len(elements) <= 25:
                raise _invalid(f"{where}.elements must be a list of 1 to 25 elements")
            for j, element in enumerate(elements):
                _element(element, f"{where}.elements[{j}]", action_ids)
    return blocks


def _buttons(blocks: list[dict[str, Any]]) -> Iterator[tuple[str | None, dict[str, Any]]]:
    for block in blocks:
        if block.get("type") == "actions":
            for element in block.get("elements", []):
                if element.get("type") == "button":
                    yield block.get("block_id"), element


# ----------------------------------------------------------------------------------------------
# the fake
# ----------------------------------------------------------------------------------------------

class FakeSlack(FakeService):
    """Slack for one workspace, one bot token and one incoming webhook (posting to ``webhook_channel``).
    Records every call that passed authentication; ``unauthorized`` counts the others."""

    def __init__(self, token: str | None = None, *, webhook_channel: str = "C0ALERTS") -> None:
        super().__init__()
        self.token = token or (f"xoxb-{secrets.randbelow(10**12):012d}-{secrets.randbelow(10**13):013d}-"
                               f"{secrets.token_hex(12)}")
        self.webhook_secret = secrets.token_hex(12)
        self.webhook_channel = webhook_channel
        self.verification_token = secrets.token_hex(12)
        self.unauthorized = 0
        self._channels: dict[str, str] = {"C0ALERTS": "alerts", "U0ADA": "ada", "U0BOB": "bob"}
        self._lock = threading.Lock()
        self._calls: list[Call] = []
        self._messages: dict[str, list[dict[str, Any]]] = defaultdict(list)
        self._failures: dict[str, deque[InjectedFailure]] = defaultdict(deque)
        self._last_ts = 0

    # ------------------------------------------------------------------------------------------
    # test controls
    # ------------------------------------------------------------------------------------------

    @property
    def webhook_url(self) -> str:
        return f"{self.base_url}/services/{TEAM_ID}/B000/{self.webhook_secret}"

    def add_channel(self, channel_id: str, name: str | None = None) -> None:
        """Make a channel (C…/G…) or user (U…/W…) id known."""
        with self._lock:
            self._channels[channel_id] = name or channel_id.lower()

    def fail_next(self, method: str, status: int | None = None, error: str | None = None,
                  retry_after: int | None = None) -> None:
        """Answer the next call of ``method`` ("chat.postMessage", "chat.update" or "webhook") with a
        failure (queued, one per call): HTTP 429 with ``Retry-After`` (default 1), a 5xx, HTTP 200
        ``{"ok": false, "error": error}`` (Web API), or a 4xx with the error word (webhook). Without a
        status: 200 for a Web API error, the documented status for a webhook error word, else 500."""
        if method not in (*METHODS, WEBHOOK):
            raise ValueError(f"unknown method {method!r}")
        if status is None:
            if error is None:
                status = 500
            elif method == WEBHOOK:
                status = WEBHOOK_ERRORS.get(error, 400)
            else:
                status = 200
        if status == 200 and (method == WEBHOOK or error is None):
            raise ValueError("an HTTP 200 failure is a Web API error word")
        with self._lock:
            self._failures[method].append(InjectedFailure(status, error, retry_after))

    def calls_to(self, method: str) -> list[dict[str, Any]]:
        """The decoded bodies of the calls of ``method``, in order."""
        with self._lock:
            return [call.body for call in self._calls if call.method == method]

    def requests_to(self, method: str) -> list[Call]:
        """The calls of ``method`` with their headers, in order."""
        with self._lock:
            return [call for call in self._calls if call.method == method]

    def messages_in(self, channel: str) -> list[dict[str, Any]]:
        """Copies of the messages stored in a channel (a user id reads its direct-message channel)."""
        with self._lock:
            return json.loads(json.dumps(self._messages.get(self._dm(channel), [])))

    def message(self, channel: str, ts: str) -> dict[str, Any] | None:
        for stored in self.messages_in(channel):
            if stored["ts"] == ts:
                return stored
        return None

    def block_actions_body(self, *, user_id: str, value: str, channel_id: str, message_ts: str,
                           user_name: str = "ada", team_id: str = TEAM_ID, response_url: str | None = None) -> bytes:
        """The form body Slack posts to an app's Interactivity Request URL when ``user_id`` presses the
        button carrying ``value`` on the message (channel_id, message_ts): ``payload=<JSON>``."""
        stored = self.message(channel_id, message_ts)
        blocks = stored.get("blocks", []) if stored else []
        block_id, button = next(((b, e) for b, e in _buttons(blocks) if e.get("value") == value),
                                ("alertengine", {"action_id": "ae0", "text": {"type": "plain_text", "text": "Approve"}}))
        now = time.time()
        action: dict[str, Any] = {"action_id": button.get("action_id"), "block_id": block_id or "alertengine",
                                  "text": dict(button.get("text") or {}), "value": value, "type": "button",
                                  "action_ts": f"{now:.6f}"}
        if button.get("style"):
            action["style"] = button["style"]
        message: dict[str, Any] = {"type": "message", "user": BOT_USER, "bot_id": BOT_ID, "app_id": APP_ID,
                                   "team": team_id, "ts": message_ts,
                                   "text": stored.get("text", "") if stored else "", "blocks": blocks}
        payload = {
            "type": "block_actions",
            "user": {"id": user_id, "username": user_name, "name": user_name, "team_id": team_id},
            "api_app_id": APP_ID,
            "token": self.verification_token,
            "container": {"type": "message", "message_ts": message_ts, "channel_id": channel_id,
                          "is_ephemeral": False},
            "trigger_id": f"{secrets.randbelow(10**13)}.{secrets.randbelow(10**12)}.{secrets.token_hex(16)}",
            "team": {"id": team_id, "domain": TEAM_DOMAIN},
            "enterprise": None,
            "is_enterprise_install": False,
            "channel": {"id": channel_id, "name": self._channel_name(channel_id)},
            "message": message,
            "state": {"values": {}},
            "response_url": response_url or (f"https://hooks.slack.com/actions/{team_id}/"
                                             f"{secrets.randbelow(10**12)}/{secrets.token_urlsafe(18)}"),
            "actions": [action],
        }
        return urlencode({"payload": json.dumps(payload, separators=(",", ":"))}).encode("ascii")

    async def send_block_action(self, url: str, signing_secret: str, *, timestamp: int | None = None,
                                timeout: float = 10.0, **press: Any) -> httpx.Response:
        """POST a signed block_actions request to a local interactivity endpoint, as Slack does."""
        if urlsplit(url).hostname not in LOOPBACK:
            raise ValueError("FakeSlack only posts interactions to loopback addresses")
        body = self.block_actions_body(**press)
        headers = signed_headers(signing_secret, body, int(time.time()) if timestamp is None else timestamp)
        async with httpx.AsyncClient(timeout=timeout) as client:
            return await client.post(url, content=body, headers=headers)

    # ------------------------------------------------------------------------------------------
    # the Web API
    # ------------------------------------------------------------------------------------------

    def handle_api(self, method: str, authorization: str | None, body: dict[str, Any],
                   headers: dict[str, str]) -> tuple[int, dict[str, Any], dict[str, str]]:
        """(HTTP status, JSON document, extra headers) for one Web API call."""
        scheme, _, token = (authorization or "").partition(" ")
        if not token and isinstance(body.get("token"), str) and headers.get("content-type", "").startswith(
                "application/x-www-form-urlencoded"):
            scheme, token = "Bearer", body["token"]
        if not token or scheme.lower() != "bearer":
            with self._lock:
                self.unauthorized += 1
            return 200, {"ok": False, "error": "not_authed"}, {}
        if not secrets.compare_digest(token.encode(), self.token.encode()):
            with self._lock:
                self.unauthorized += 1
            return 200, {"ok": False, "error": "invalid_auth"}, {}
        with self._lock:
            self._calls.append(Call(method, body, headers))
            queue = self._failures.get(method)
            failure = queue.popleft() if queue else None
        if failure is not None:
            return self._injected_api(failure)
        try:
            doc = self._m_post(body) if method == "chat.postMessage" else self._m_update(body)
        except SlackError as exc:
            doc = {"ok": False, "error": exc.error}
            if exc.detail:
                doc["errors"] = [exc.detail]
                doc["response_metadata"] = {"messages": [f"[ERROR] {exc.detail}"]}
            return 200, doc, {}
        return 200, {"ok": True, **doc}, {}

    @staticmethod
    def _injected_api(failure: InjectedFailure) -> tuple[int, dict[str, Any], dict[str, str]]:
        headers = {"Retry-After": str(failure.retry_after)} if failure.retry_after is not None else {}
        if failure.status == 429:
            headers.setdefault("Retry-After", "1")
            return 429, {"ok": False, "error": failure.error or "ratelimited"}, headers
        error = failure.error or _SERVER_ERRORS.get(failure.status, "fatal_error")
        return failure.status, {"ok": False, "error": error}, headers

    def _dm(self, channel: str) -> str:
        return "D" + channel[1:] if channel[:1] in ("U", "W") else channel

    def _channel_name(self, channel: str) -> str:
        if channel.startswith("D"):
            return "directmessage"
        with self._lock:
            return self._channels.get(channel, channel.lower())

    def _target(self, channel: Any, *, update: bool) -> str:
        if not isinstance(channel, str) or not channel:
            raise SlackError("channel_not_found")
        with self._lock:
            if channel.startswith("D"):
                known = any(c[:1] in ("U", "W") and self._dm(c) == channel for c in self._channels)
            else:
                # chat.update wants the DM channel id (D…), not the user id
                known = channel in self._channels and not (update and channel[:1] in ("U", "W"))
        if not known:
            raise SlackError("channel_not_found")
        return self._dm(channel)

    @staticmethod
    def _content(body: dict[str, Any]) -> tuple[str, list[dict[str, Any]] | None]:
        text, blocks = body.get("text"), body.get("blocks")
        if text is not None and not isinstance(text, str):
            raise SlackError("invalid_arguments", "text must be a string")
        if blocks is not None:
            blocks = check_blocks(blocks)
        if not text and not blocks:
            raise SlackError("no_text")
        if text and len(text) > MAX_TEXT:
            raise SlackError("msg_too_long")
        return text or "", blocks

    def _next_ts(self) -> str:
        with self._lock:
            self._last_ts = max(self._last_ts + 1, time.time_ns() // 1000)
            micros = self._last_ts
        return f"{micros // 1_000_000}.{micros % 1_000_000:06d}"

    def _m_post(self, body: dict[str, Any]) -> dict[str, Any]:
        if "channel" not in body:
            raise SlackError("channel_not_found")
        text, blocks = self._content(body)
        channel = self._target(body["channel"], update=False)
        ts = self._next_ts()
        message: dict[str, Any] = {"type": "message", "user": BOT_USER, "bot_id": BOT_ID, "app_id": APP_ID,
                                   "team": TEAM_ID, "text": text, "ts": ts}
        if blocks:
            message["blocks"] = blocks
        with self._lock:
            self._messages[channel].append(message)
        return {"channel": channel, "ts": ts, "message": json.loads(json.dumps(message))}

    def _m_update(self, body: dict[str, Any]) -> dict[str, Any]:
        channel = self._target(body.get("channel"), update=True)
        ts = body.get("ts")
        text, blocks = self._content(body)
        with self._lock:
            stored = next((m for m in self._messages.get(channel, []) if m["ts"] == ts), None)
            if stored is None:
                raise SlackError("message_not_found")
            stored["text"] = text
            stored.pop("blocks", None)
            if blocks:
                stored["blocks"] = blocks
            stored["edited"] = {"user": BOT_USER, "ts": f"{time.time():.6f}"}
            message = json.loads(json.dumps(stored))
        return {"channel": channel, "ts": ts, "text": text, "message": message}

    # ------------------------------------------------------------------------------------------
    # the incoming webhook
    # ------------------------------------------------------------------------------------------

    def handle_webhook(self, path: str, raw: bytes, headers: dict[str, str]) -> tuple[int, str, dict[str, str]]:
        """(HTTP status, plain-text word, extra headers) for one post to an incoming webhook."""
        expected = f"/services/{TEAM_ID}/B000/{self.webhook_secret}"
        if not secrets.compare_digest(path.encode(), expected.encode()):
            with self._lock:
                self.unauthorized += 1
            return 404, "no_service", {}
        body = self._webhook_body(raw, headers.get("content-type", ""))
        if body is None:
            return 400, "invalid_payload", {}
        with self._lock:
            self._calls.append(Call(WEBHOOK, body, headers))
            queue = self._failures.get(WEBHOOK)
            failure = queue.popleft() if queue else None
        if failure is not None:
            extra = {"Retry-After": str(failure.retry_after)} if failure.retry_after is not None else {}
            if failure.status == 429:
                extra.setdefault("Retry-After", "1")
            default = {429: "rate_limited"}.get(failure.status) or _SERVER_ERRORS.get(failure.status) or next(
                (word for word, status in WEBHOOK_ERRORS.items() if status == failure.status), "invalid_payload")
            return failure.status, failure.error or default, extra
        try:
            text, blocks = self._content(body)
        except SlackError as exc:
            return 400, "invalid_blocks" if exc.error.startswith("invalid_blocks") else "invalid_payload", {}
        ts = self._next_ts()
        message: dict[str, Any] = {"type": "message", "subtype": "bot_message", "bot_id": BOT_ID, "app_id": APP_ID,
                                   "team": TEAM_ID, "text": text, "ts": ts}
        if blocks:
            message["blocks"] = blocks
        with self._lock:
            self._messages[self.webhook_channel].append(message)
        return 200, "ok", {}

    @staticmethod
    def _webhook_body(raw: bytes, content_type: str) -> dict[str, Any] | None:
        try:
            text = raw.decode("utf-8")
            if content_type.split(";")[0].strip().lower() == "application/x-www-form-urlencoded":
                text = dict(parse_qsl(text, keep_blank_values=True)).get("payload", "")
            doc = json.loads(text)
        except ValueError:
            return None
        return doc if isinstance(doc, dict) else None


def signed_headers(signing_secret: str, body: bytes, timestamp: int | str) -> dict[str, str]:
    """The headers Slack sends with an interaction: its timestamp and ``v0`` signature (made by
    slack_sdk's own SignatureVerifier), and the form content type."""
    stamp = str(timestamp)
    signature = SignatureVerifier(signing_secret).generate_signature(timestamp=stamp, body=body)
    assert signature is not None
    return {"X-Slack-Request-Timestamp": stamp, "X-Slack-Signature": signature,
            "Content-Type": "application/x-www-form-urlencoded"}


# ----------------------------------------------------------------------------------------------
# HTTP plumbing
# ----------------------------------------------------------------------------------------------

_API_PATH = re.compile(r"/api/([A-Za-z]+\.[A-Za-z]+)")


class _Handler(FakeHandler):
    server_version = "Apache"

    def _serve(self) -> None:
        fake: FakeSlack = self.server.fake
        path = urlsplit(self.path).path
        raw = self._body()
        if raw is None:
            return
        headers = {k.lower(): v for k, v in self.headers.items()}
        if path.startswith("/services/"):
            if self.command != "POST":
                self._reply(405, b"invalid_method", "text/plain; charset=utf-8")
                return
            status, word, extra = fake.handle_webhook(path, raw, headers)
            self._reply(status, word.encode(), "text/plain; charset=utf-8", extra)
            return
        match = _API_PATH.fullmatch(path)
        if match is None or match.group(1) not in METHODS:
            self._json(404, {"ok": False, "error": "unknown_method"})
            return
        ctype = headers.get("content-type", "").split(";")[0].strip().lower()
        if ctype == "application/json":
            try:
                body = json.loads(raw) if raw else {}
            except ValueError:
                self._json(200, {"ok": False, "error": "invalid_json"})
                return
            if not isinstance(body, dict):
                self._json(200, {"ok": False, "error": "invalid_json"})
                return
        elif ctype == "application/x-www-form-urlencoded" or not raw:
            body = dict(parse_qsl(raw.decode("utf-8", "replace"), keep_blank_values=True))
        else:
            self._json(200, {"ok": False, "error": "invalid_form_data"})
            return
        status, doc, extra = fake.handle_api(match.group(1), self.headers.get("Authorization"), body, headers)
        self._json(status, doc, extra)

    def _body(self) -> bytes | None:
        if self.headers.get("Transfer-Encoding"):
            self.close_connection = True
            self._reply(411, b"Length Required", "text/plain")
            return None
        length = int(self.headers.get("Content-Length") or 0)
        if length > MAX_BODY:
            self.close_connection = True
            self._reply(413, b"Request Entity Too Large", "text/plain")
            return None
        return self.rfile.read(length) if length else b""

    def _json(self, status: int, doc: dict[str, Any], headers: dict[str, str] | None = None) -> None:
        self._reply(status, json.dumps(doc).encode(), "application/json; charset=utf-8", headers)

    def _reply(self, status: int, data: bytes, ctype: str, headers: dict[str, str] | None = None) -> None:
        self.send(status, data, ctype, headers)


@pytest.fixture
def fake_slack() -> Iterator[FakeSlack]:
    """A running FakeSlack for one test (import this name into a test module or conftest to use it)."""
    with FakeSlack() as fake:
        yield fake


FakeSlack.handler = _Handler
