"""A fake Telegram Bot API on 127.0.0.1 (real wire format, failure injection) that also sends webhook updates.

Wire behaviour follows the Telegram Bot API reference: ``/bot<token>/<method>`` (method
names case-insensitive), the ``{"ok":...}`` envelope with the HTTP status equal to ``error_code``, JSON,
form-encoded or query-string parameters (``reply_markup`` / ``allowed_updates`` as JSON strings in forms).
Where the fake words an error that the reference does not quote, the description starts like Telegram's
("Bad Request: ...") but is this fake's own. Deliberate differences: message ids increase across all
chats, webhook URLs may be http:// (tests use loopback), multipart bodies are refused.

Usage::

    with FakeTelegram() as fake:
        client = TelegramClient(fake.base_url, fake.token, http)
        fake.fail_next("sendMessage", status=429, retry_after=2)
"""

from __future__ import annotations

import json
import re
import secrets
import threading
import time
from collections import defaultdict, deque
from dataclasses import dataclass, field
from typing import Any, Iterator
from urllib.parse import parse_qsl, urlsplit

import httpx
import pytest

from tests.fakes.http import FakeHandler, FakeService

METHODS = ("getMe", "sendMessage", "editMessageText", "answerCallbackQuery", "setWebhook", "deleteWebhook",
           "getWebhookInfo")
_CANONICAL = {name.lower(): name for name in METHODS}
_JSON_FIELDS = ("reply_markup", "allowed_updates")
_PATH = re.compile(r"/bot([^/]*)/([A-Za-z]+)")
_SECRET = re.compile(r"[A-Za-z0-9_-]{1,256}")
_BUTTON_TYPES = ("url", "callback_data", "web_app", "login_url", "switch_inline_query",
                 "switch_inline_query_current_chat", "switch_inline_query_chosen_chat", "copy_text",
                 "callback_game", "pay")
NOT_MODIFIED = ("Bad Request: message is not modified: specified new message content and reply markup are "
                "exactly the same as a current content and reply markup of the message")
QUERY_TOO_OLD = "Bad Request: query is too old and response timeout expired or query ID is invalid"
LOOPBACK = {"127.0.0.1", "localhost", "::1"}
MAX_BODY = 1 << 20


class BadRequestError(Exception):
    """A request the fake refuses; ``description`` is the Bot API description sent back."""

    def __init__(self, description: str, status: int = 400) -> None:
        super().__init__(description)
        self.description = description
        self.status = status


@dataclass(frozen=True)
class InjectedFailure:
    status: int
    retry_after: int | None = None
    description: str | None = None
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes | None = None           # raw body instead of the Bot API envelope (e.g. a proxy's HTML page)


def _envelope_error(status: int, description: str, parameters: dict[str, Any] | None = None) -> dict[str, Any]:
    doc: dict[str, Any] = {"ok": False, "error_code": status, "description": description}
    if parameters:
        doc["parameters"] = parameters
    return doc


def _int(value: Any, name: str) -> int:
    if isinstance(value, bool):
        raise BadRequestError(f"Bad Request: invalid {name} specified")
    if isinstance(value, int):
        return value
    if isinstance(value, str) and re.fullmatch(r"-?[0-9]{1,20}", value):
        return int(value)
    raise BadRequestError(f"Bad Request: invalid {name} specified")


def _check_text(text: Any) -> str:
    if not isinstance(text, str) or not text.strip():
        raise BadRequestError("Bad Request: message text is empty")
    if len(text) > 4096:
        raise BadRequestError("Bad Request: message is too long")
    return text


def _check_markup(markup: Any, inline_only: bool) -> dict[str, Any] | None:
    if markup is None:
        return None
    if not isinstance(markup, dict):
        raise BadRequestError("Bad Request: can't parse reply keyboard markup JSON object")
    if "inline_keyboard" not in markup:
        if inline_only or not any(k in markup for k in ("keyboard", "remove_keyboard", "force_reply")):
            raise BadRequestError("Bad Request: can't parse reply keyboard markup JSON object")
        return markup
    rows = markup["inline_keyboard"]
    if not isinstance(rows, list) or not all(isinstance(row, list) for row in rows):
        raise BadRequestError("Bad Request: can't parse inline keyboard button: field \"inline_keyboard\" "
                              "must be an Array of Arrays")
    for row in rows:
        for button in row:
            if not isinstance(button, dict) or not isinstance(button.get("text"), str):
                raise BadRequestError("Bad Request: can't parse inline keyboard button: Text buttons are "
                                      "unallowed in the inline keyboard")
            kinds = [k for k in _BUTTON_TYPES if k in button]
            if len(kinds) != 1:
                raise BadRequestError("Bad Request: can't parse inline keyboard button: Text buttons are "
                                      "unallowed in the inline keyboard")
            if "callback_data" in button:
                data = button["callback_data"]
                if not isinstance(data, str) or not 1 <= len(data.encode("utf-8")) <= 64:
                    raise BadRequestError("Bad Request: BUTTON_DATA_INVALID")
            if "url" in button and (not isinstance(button["url"], str) or not button["url"]):
                raise BadRequestError("Bad Request: BUTTON_URL_INVALID")
    return markup


class FakeTelegram(FakeService):
    """A Telegram Bot API on 127.0.0.1 for one bot token; records every accepted call in ``calls``."""

    def __init__(self, token: str | None = None) -> None:
        super().__init__()
        self.token = token or f"{1_000_000_000 + secrets.randbelow(8_999_999_999)}:{secrets.token_urlsafe(26)}"
        self.bot_id = int(self.token.split(":", 1)[0]) if self.token.split(":", 1)[0].isdigit() else 1
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self.unauthorized = 0                       # requests that used another token
        self.messages: dict[tuple[int, int], dict[str, Any]] = {}
        self.webhook: dict[str, Any] | None = None
        self.answered: list[tuple[str, dict[str, Any]]] = []
        self._lock = threading.Lock()
        self._failures: dict[str, deque[InjectedFailure]] = defaultdict(deque)
        self._next_message_id = 1
        self._next_update_id = 900_001
        self._open_queries: set[str] = set()
        self._usernames: dict[str, int] = {}
        self._holds: dict[str, deque[threading.Event]] = defaultdict(deque)
        self.held: list[dict[str, Any]] = []       # calls being held right now (see hold_next)

    # ------------------------------------------------------------------------------------------
    # lifecycle
    # ------------------------------------------------------------------------------------------


    # ------------------------------------------------------------------------------------------
    # test controls
    # ------------------------------------------------------------------------------------------

    def fail_next(self, method: str, status: int = 500, *, retry_after: int | None = None,
                  description: str | None = None, headers: dict[str, str] | None = None,
                  body: bytes | None = None) -> None:
        """Answer the next call of ``method`` with this failure (queued; one failure per call)."""
        with self._lock:
            self._failures[method.lower()].append(
                InjectedFailure(status, retry_after, description, dict(headers or {}), body))

    def hold_next(self, method: str) -> threading.Event:
        """Keep the next call of ``method`` unanswered (it is recorded, and shows in ``held``) until
        the returned event is set: a request in flight, for as long as a test needs one."""
        release = threading.Event()
        with self._lock:
            self._holds[method.lower()].append(release)
        return release

    def calls_to(self, method: str) -> list[dict[str, Any]]:
        with self._lock:
            return [params for name, params in self.calls if name.lower() == method.lower()]

    def callback_update(self, *, user_id: int, data: str, chat_id: int, message_id: int,
                        first_name: str = "Ann") -> dict[str, Any]:
        """A callback_query Update as Telegram would send it for a press on (chat_id, message_id);
        its query id becomes answerable once."""
        with self._lock:
            update_id, self._next_update_id = self._next_update_id, self._next_update_id + 1
            query_id = str(secrets.randbits(63))
            self._open_queries.add(query_id)
            stored = self.messages.get((chat_id, message_id))
        message: dict[str, Any] = {
            "message_id": message_id, "from": self._bot_user(),
            "date": stored["date"] if stored else int(time.time()) - 5,
            "chat": self._chat(chat_id), "text": stored["text"] if stored else "",
        }
        if stored and stored.get("reply_markup"):
            message["reply_markup"] = stored["reply_markup"]
        return {"update_id": update_id, "callback_query": {
            "id": query_id,
            "from": {"id": user_id, "is_bot": False, "first_name": first_name, "language_code": "en"},
            "message": message, "chat_instance": str(-secrets.randbits(62)), "data": data}}

    async def send_callback(self, webhook_url: str, secret: str | None, *, user_id: int, data: str, chat_id: int,
                            message_id: int, first_name: str = "Ann", timeout: float = 10.0) -> httpx.Response:
        """POST a callback_query Update to a local webhook like Telegram does (secret header when set)."""
        if urlsplit(webhook_url).hostname not in LOOPBACK:
            raise ValueError("FakeTelegram only posts updates to loopback addresses")
        update = self.callback_update(user_id=user_id, data=data, chat_id=chat_id, message_id=message_id,
                                      first_name=first_name)
        headers = {"Content-Type": "application/json"}
        if secret:
            headers["X-Telegram-Bot-Api-Secret-Token"] = secret
        async with httpx.AsyncClient(timeout=timeout) as client:
            return await client.post(webhook_url, content=json.dumps(update).encode(), headers=headers)

    # ------------------------------------------------------------------------------------------
    # the API
    # ------------------------------------------------------------------------------------------

    def handle(self, token: str, method: str, params: dict[str, Any]) -> tuple[int, dict[str, Any] | bytes,
                                                                              dict[str, str]]:
        """(HTTP status, envelope or raw body, extra headers) for one request."""
        if token != self.token:
            with self._lock:
                self.unauthorized += 1
            return 401, _envelope_error(401, "Unauthorized"), {}
        name = _CANONICAL.get(method.lower(), method)
        with self._lock:
            self.calls.append((name, params))
            queue = self._failures.get(method.lower())
            failure = queue.popleft() if queue else None
            holds = self._holds.get(method.lower())
            hold = holds.popleft() if holds else None
            if hold is not None:
                self.held.append(params)
        if hold is not None:
            hold.wait(timeout=120)
            with self._lock:
                self.held.remove(params)
        if failure is not None:
            return self._injected(failure)
        handler = getattr(self, f"_m_{name}", None) if name in METHODS else None
        if handler is None:
            return 404, _envelope_error(404, "Not Found"), {}
        try:
            result, description = handler(params)
        except BadRequestError as exc:
            return exc.status, _envelope_error(exc.status, exc.description), {}
        doc: dict[str, Any] = {"ok": True, "result": result}
        if description:
            doc["description"] = description
        return 200, doc, {}

    def _injected(self, failure: InjectedFailure) -> tuple[int, dict[str, Any] | bytes, dict[str, str]]:
        if failure.body is not None:
            return failure.status, failure.body, failure.headers
        default = {429: f"Too Many Requests: retry after {failure.retry_after}", 400: "Bad Request",
                   401: "Unauthorized", 403: "Forbidden", 404: "Not Found", 409: "Conflict",
                   500: "Internal Server Error", 502: "Bad Gateway"}.get(failure.status, "Error")
        parameters = {"retry_after": failure.retry_after} if failure.retry_after is not None else None
        return failure.status, _envelope_error(failure.status, failure.description or default, parameters), \
            failure.headers

    def _bot_user(self) -> dict[str, Any]:
        return {"id": self.bot_id, "is_bot": True, "first_name": "AlertEngine Fake", "username": "alertengine_fake_bot"}

    def _chat_key(self, chat_id: Any) -> int:
        if isinstance(chat_id, str) and re.fullmatch(r"@[A-Za-z0-9_]{1,64}", chat_id):
            with self._lock:
                return self._usernames.setdefault(chat_id, -1_000_000_000_000 - len(self._usernames) - 1)
        if chat_id is None or chat_id == "":
            raise BadRequestError("Bad Request: chat_id is empty")
        try:
            return _int(chat_id, "chat_id")
        except BadRequestError:
            raise BadRequestError("Bad Request: chat not found") from None

    @staticmethod
    def _chat(chat_id: int) -> dict[str, Any]:
        if chat_id > 0:
            return {"id": chat_id, "type": "private", "first_name": "Ann"}
        kind = "supergroup" if str(chat_id).startswith("-100") else "group"
        return {"id": chat_id, "type": kind, "title": "ops"}

    def _m_getMe(self, params: dict[str, Any]) -> tuple[Any, str]:
        return {**self._bot_user(), "can_join_groups": True, "can_read_all_group_messages": False,
                "supports_inline_queries": False}, ""

    def _m_sendMessage(self, params: dict[str, Any]) -> tuple[Any, str]:
        chat = self._chat_key(params.get("chat_id"))
        text = _check_text(params.get("text"))
        markup = _check_markup(params.get("reply_markup"), inline_only=False)
        with self._lock:
            message_id, self._next_message_id = self._next_message_id, self._next_message_id + 1
            message = {"message_id": message_id, "from": self._bot_user(), "chat": self._chat(chat),
                       "date": int(time.time()), "text": text}
            if markup and markup.get("inline_keyboard"):
                message["reply_markup"] = markup
            self.messages[(chat, message_id)] = message
        return dict(message), ""

    def _m_editMessageText(self, params: dict[str, Any]) -> tuple[Any, str]:
        if "inline_message_id" in params:
            raise BadRequestError("Bad Request: MESSAGE_ID_INVALID")
        chat = self._chat_key(params.get("chat_id"))
        message_id = _int(params.get("message_id"), "message_id")
        text = _check_text(params.get("text"))
        markup = _check_markup(params.get("reply_markup"), inline_only=True)
        keyboard = markup if markup and markup.get("inline_keyboard") else None
        with self._lock:
            stored = self.messages.get((chat, message_id))
            if stored is None:
                raise BadRequestError("Bad Request: message to edit not found")
            if stored["text"] == text and stored.get("reply_markup") == keyboard:
                raise BadRequestError(NOT_MODIFIED)
            stored["text"] = text
            stored.pop("reply_markup", None)
            if keyboard:
                stored["reply_markup"] = keyboard
            stored["edit_date"] = int(time.time())
            return dict(stored), ""

    def _m_answerCallbackQuery(self, params: dict[str, Any]) -> tuple[Any, str]:
        query_id = params.get("callback_query_id")
        text = params.get("text", "")
        if not isinstance(text, str) or len(text) > 200:
            raise BadRequestError("Bad Request: MESSAGE_TOO_LONG")
        with self._lock:
            if not isinstance(query_id, str) or query_id not in self._open_queries:
                raise BadRequestError(QUERY_TOO_OLD)
            self._open_queries.discard(query_id)
            self.answered.append((query_id, params))
        return True, ""

    def _m_setWebhook(self, params: dict[str, Any]) -> tuple[Any, str]:
        url = params.get("url")
        if not isinstance(url, str):
            raise BadRequestError("Bad Request: bad webhook: URL must be provided")
        if url == "":
            with self._lock:
                self.webhook = None
            return True, "Webhook was deleted"
        if urlsplit(url).scheme not in ("https", "http"):
            raise BadRequestError("Bad Request: bad webhook: An HTTPS URL must be provided for webhook")
        secret = params.get("secret_token")
        if secret is not None and (not isinstance(secret, str) or not _SECRET.fullmatch(secret)):
            raise BadRequestError("Bad Request: bad webhook: secret token contains unallowed characters "
                                  "or is longer than 256 characters")
        allowed = params.get("allowed_updates")
        if allowed is not None and (not isinstance(allowed, list) or not all(isinstance(u, str) for u in allowed)):
            raise BadRequestError("Bad Request: can't parse allowed updates")
        with self._lock:
            self.webhook = {"url": url, "secret_token": secret, "allowed_updates": allowed}
        return True, "Webhook was set"

    def _m_deleteWebhook(self, params: dict[str, Any]) -> tuple[Any, str]:
        with self._lock:
            existed, self.webhook = self.webhook is not None, None
        return True, "Webhook was deleted" if existed else "Webhook is already deleted"

    def _m_getWebhookInfo(self, params: dict[str, Any]) -> tuple[Any, str]:
        with self._lock:
            hook = self.webhook
        info: dict[str, Any] = {"url": hook["url"] if hook else "", "has_custom_certificate": False,
                                "pending_update_count": 0}
        if hook and hook.get("allowed_updates") is not None:
            info["allowed_updates"] = hook["allowed_updates"]
        return info, ""


# ----------------------------------------------------------------------------------------------
# HTTP plumbing
# ----------------------------------------------------------------------------------------------



class _Handler(FakeHandler):
    server_version = "nginx/1.18.0"

    def _serve(self) -> None:
        parts = urlsplit(self.path)
        match = _PATH.fullmatch(parts.path)
        if match is None:
            self._reply(404, _envelope_error(404, "Not Found"))
            return
        try:
            params = self._params(parts.query)
        except BadRequestError as exc:
            self._reply(exc.status, _envelope_error(exc.status, exc.description))
            return
        status, payload, headers = self.server.fake.handle(match.group(1), match.group(2), params)
        self._reply(status, payload, headers)

    def _params(self, query: str) -> dict[str, Any]:
        params: dict[str, Any] = dict(parse_qsl(query, keep_blank_values=True))
        if self.headers.get("Transfer-Encoding"):
            self.close_connection = True
            raise BadRequestError("Length Required", 411)
        length = int(self.headers.get("Content-Length") or 0)
        if length > MAX_BODY:
            self.close_connection = True
            raise BadRequestError("Request Entity Too Large", 413)
        body = self.rfile.read(length) if length else b""
        ctype = (self.headers.get("Content-Type") or "").split(";")[0].strip().lower()
        if body and ctype == "application/json":
            try:
                doc = json.loads(body)
            except ValueError:
                raise BadRequestError("Bad Request: can't parse JSON object") from None
            if not isinstance(doc, dict):
                raise BadRequestError("Bad Request: can't parse JSON object")
            params.update(doc)
        elif body and ctype == "application/x-www-form-urlencoded":
            form = dict(parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True))
            for name in _JSON_FIELDS:
                if isinstance(form.get(name), str):
                    try:
                        form[name] = json.loads(form[name])
                    except ValueError:
                        pass                        # left as a string: the method refuses it
            params.update(form)
        elif body:
            raise BadRequestError("Bad Request: the fake reads JSON and form-encoded bodies only")
        return params

    def _reply(self, status: int, payload: dict[str, Any] | bytes, headers: dict[str, str] | None = None) -> None:
        if isinstance(payload, bytes):
            data, ctype = payload, "text/html"
        else:
            data, ctype = json.dumps(payload).encode(), "application/json"
        self.send(status, data, ctype, headers)


@pytest.fixture
def fake_telegram() -> Iterator[FakeTelegram]:
    """A running FakeTelegram for one test (import this name into a test module or conftest to use it)."""
    with FakeTelegram() as fake:
        yield fake


FakeTelegram.handler = _Handler
