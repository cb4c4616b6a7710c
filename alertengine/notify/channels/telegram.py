"""The Telegram channel: a Bot API client and the readers of webhook callback updates; the bot token never leaks.

It sends, edits and answers messages with inline buttons, and sets or deletes the webhook.

Choices:

* Plain text only: no ``parse_mode`` is ever sent, so incident text containing ``_``, ``*``, ``<`` or ``[``
  is shown verbatim and can never make Telegram reject the message with "can't parse entities".
* Text longer than Telegram's 4096 characters is cut to 4095 characters plus "…" (answerCallbackQuery:
  200); empty or blank text is a programming error (``ValueError``), as is ``callback_data`` outside
  1–64 UTF-8 bytes (Telegram's BUTTON_DATA_INVALID), which is refused before anything is sent.
* Every method returns a :class:`Delivery` and never raises for HTTP or transport trouble: transport
  errors and 5xx are retryable, 429 is retryable with Telegram's ``retry_after``, other 4xx are not.
  A timeout after sendMessage may hide a message that did arrive, so retrying is at-least-once.
* The token is part of every request URL. It is replaced by ``<bot-token>`` in every Delivery detail,
  and a filter on the ``httpx`` logger (installed when this module is imported) rewrites ``/bot<...>/``
  in its "HTTP Request: POST <url>" lines.
"""

from __future__ import annotations

import hmac
import logging
import re
from dataclasses import dataclass
from typing import Any, Sequence

import httpx

from ...net.guard import is_refused
from .base import Delivery
from .http import api_base, check_timeout
from .http import clean as _clean
from .http import json_object as _json_object
from .http import read_capped as _read_capped
from .http import retry_after_header as _retry_after_header
from .http import seconds as _seconds

log = logging.getLogger("alertengine.channels.telegram")

DEFAULT_BASE_URL = "https://api.telegram.org"
TOKEN_PLACEHOLDER = "<bot-token>"
MAX_TEXT = 4096
MAX_CALLBACK_ANSWER = 200
MAX_CALLBACK_DATA_BYTES = 64

Buttons = Sequence[Sequence[tuple[str, str]]]

_TOKEN_RE = re.compile(r"[A-Za-z0-9:_-]{1,256}")
_SECRET_RE = re.compile(r"[A-Za-z0-9_-]{1,256}")
_CHAT_RE = re.compile(r"-?[0-9]{1,20}|@[A-Za-z0-9_]{1,64}")
_URL_TOKEN_RE = re.compile(r"/bot[^/\s'\"<>]+/")
_NOT_MODIFIED = "message is not modified"


class _RedactBotTokens(logging.Filter):
    """Rewrites ``/bot<token>/`` in log lines of the logger it sits on (httpx logs every request URL)."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a broken record is the logging module's problem, not ours
            return True
        redacted = _URL_TOKEN_RE.sub(f"/bot{TOKEN_PLACEHOLDER}/", message)
        if redacted != message:
            record.msg, record.args = redacted, None
        return True


_REDACT = _RedactBotTokens()
logging.getLogger("httpx").addFilter(_REDACT)


@dataclass(frozen=True)
class CallbackQuery:
    """A press on one of our inline buttons, as read from a webhook Update."""

    id: str
    user_id: int
    user_name: str
    chat_id: int | None         # None when the button was on an inline-mode message
    message_id: int | None
    data: str


@dataclass(frozen=True)
class _Ok:
    result: Any
    description: str


class TelegramClient:
    """A small Bot API client over a caller-owned ``httpx.AsyncClient`` (JSON bodies, POST only)."""

    def __init__(self, base_url: str, bot_token: str, client: httpx.AsyncClient, timeout: float = 10.0) -> None:
        base = api_base(base_url, DEFAULT_BASE_URL, "Telegram")
        if not isinstance(bot_token, str) or not _TOKEN_RE.fullmatch(bot_token):
            raise ValueError("Telegram bot token is empty or has characters that cannot go in a URL path")
        self.base_url = base
        self.timeout = check_timeout(timeout)
        self._token = bot_token
        self._client = client

    def __repr__(self) -> str:
        return f"TelegramClient(base_url={self.base_url!r}, bot_token={TOKEN_PLACEHOLDER!r})"

    # ------------------------------------------------------------------------------------------
    # methods
    # ------------------------------------------------------------------------------------------

    async def send_message(self, chat_id: int | str, text: str,
                           buttons: Buttons | None = None) -> Delivery:
        """sendMessage in plain text; ``buttons`` are rows of (label, callback_data) pairs.
        ``provider_id`` is ``"{chat_id}:{message_id}"``."""
        params: dict[str, Any] = {"chat_id": _chat(chat_id), "text": fit_text(text, MAX_TEXT)}
        if buttons:
            params["reply_markup"] = inline_keyboard(buttons)
        answer = await self._call("sendMessage", params)
        if isinstance(answer, Delivery):
            return answer
        message_id = answer.result.get("message_id") if isinstance(answer.result, dict) else None
        if not _is_int(message_id):
            return Delivery(True, False, "sendMessage: sent (the answer had no message_id)")
        return Delivery(True, False, "sendMessage: sent", provider_id=f"{chat_id}:{message_id}")

    async def edit_message(self, chat_id: int | str, message_id: int, text: str,
                           buttons: Buttons | None = None) -> Delivery:
        """editMessageText. Without ``buttons`` the message loses its inline keyboard (Telegram's rule).
        "message is not modified" counts as delivered: the message already shows exactly this."""
        if not _is_int(message_id) or message_id < 1:
            raise ValueError("message_id must be a positive integer")
        params: dict[str, Any] = {"chat_id": _chat(chat_id), "message_id": message_id,
                                  "text": fit_text(text, MAX_TEXT)}
        if buttons is not None:
            params["reply_markup"] = inline_keyboard(buttons)
        answer = await self._call("editMessageText", params)
        provider_id = f"{chat_id}:{message_id}"
        if isinstance(answer, Delivery):
            if not answer.delivered and not answer.retryable and _NOT_MODIFIED in answer.detail.lower():
                return Delivery(True, False, "editMessageText: not modified (already shows this text and buttons)",
                                provider_id=provider_id)
            return answer
        return Delivery(True, False, "editMessageText: edited", provider_id=provider_id)

    async def answer_callback(self, callback_query_id: str, text: str) -> Delivery:
        """answerCallbackQuery: stops the button's spinner and shows ``text`` (0–200 characters, longer is cut)."""
        if not isinstance(callback_query_id, str) or not callback_query_id:
            raise ValueError("callback_query_id must be a non-empty string")
        if not isinstance(text, str):
            raise ValueError("text must be a string")
        params: dict[str, Any] = {"callback_query_id": callback_query_id}
        if text:
            params["text"] = fit_text(text, MAX_CALLBACK_ANSWER)
        answer = await self._call("answerCallbackQuery", params)
        return answer if isinstance(answer, Delivery) else Delivery(True, False, "answerCallbackQuery: answered")

    async def set_webhook(self, url: str, secret_token: str,
                          allowed_updates: Sequence[str] = ("message", "callback_query")) -> Delivery:
        """setWebhook; Telegram will send ``secret_token`` in X-Telegram-Bot-Api-Secret-Token on every update."""
        if not isinstance(url, str) or not url:
            raise ValueError("webhook url must be non-empty (use delete_webhook to remove the webhook)")
        if not isinstance(secret_token, str) or not _SECRET_RE.fullmatch(secret_token):
            raise ValueError("webhook secret_token must be 1-256 characters from A-Z a-z 0-9 _ -")
        if isinstance(allowed_updates, str) or not all(isinstance(u, str) and u for u in allowed_updates):
            raise ValueError("allowed_updates must be a sequence of update type names")
        answer = await self._call("setWebhook", {"url": url, "secret_token": secret_token,
                                                 "allowed_updates": list(allowed_updates)})
        return answer if isinstance(answer, Delivery) else Delivery(
            True, False, f"setWebhook: {answer.description or 'webhook set'}")

    async def delete_webhook(self) -> Delivery:
        """deleteWebhook (pending updates are kept)."""
        answer = await self._call("deleteWebhook", {})
        return answer if isinstance(answer, Delivery) else Delivery(
            True, False, f"deleteWebhook: {answer.description or 'webhook deleted'}")

    # ------------------------------------------------------------------------------------------
    # transport
    # ------------------------------------------------------------------------------------------

    def _scrub(self, text: str) -> str:
        text = text.replace(self._token, TOKEN_PLACEHOLDER)
        return _URL_TOKEN_RE.sub(f"/bot{TOKEN_PLACEHOLDER}/", text)

    def _failure(self, method: str, retryable: bool, detail: str, retry_after: float | None = None) -> Delivery:
        delivery = Delivery(False, retryable, f"{method}: {_clean(self._scrub(detail))}", retry_after=retry_after)
        log.debug("telegram %s", delivery.detail)
        return delivery

    async def _call(self, method: str, params: dict[str, Any]) -> _Ok | Delivery:
        url = f"{self.base_url}/bot{self._token}/{method}"
        try:
            async with self._client.stream("POST", url, json=params, timeout=self.timeout) as response:
                body = await _read_capped(response)
        except (httpx.UnsupportedProtocol, httpx.InvalidURL) as exc:
            return self._failure(method, False, f"bad API base URL: {type(exc).__name__}: {exc}")
        except httpx.RequestError as exc:
            reason = str(exc)
            if is_refused(exc):   # the outbound policy refused the Bot API's address: final
                return self._failure(method, False, reason)
            return self._failure(method, True, f"{type(exc).__name__}: {reason}" if reason else type(exc).__name__)
        status = response.status_code
        doc = _json_object(body)
        description = doc.get("description") if doc and isinstance(doc.get("description"), str) else ""
        if 200 <= status < 300 and doc is not None and doc.get("ok") is True:
            return _Ok(doc.get("result"), _clean(self._scrub(description)))
        if 200 <= status < 300 and doc is not None and _is_int(doc.get("error_code")):
            status = doc["error_code"]          # an error envelope behind a 2xx status: trust the envelope
        if not description:
            description = ("the answer was not a Bot API envelope" if 200 <= status < 300
                           else httpx.codes.get_reason_phrase(status) or "no description")
        parameters = doc.get("parameters") if doc and isinstance(doc.get("parameters"), dict) else {}
        if status == 429:
            retry_after = _seconds(parameters.get("retry_after"))
            if retry_after is None:
                retry_after = _retry_after_header(response.headers.get("retry-after"))
            return self._failure(method, True, f"HTTP 429: {description}", retry_after)
        if status >= 500:
            return self._failure(method, True, f"HTTP {status}: {description}")
        if _is_int(parameters.get("migrate_to_chat_id")):
            description += f" (migrate_to_chat_id={parameters['migrate_to_chat_id']})"
        return self._failure(method, False, f"HTTP {status}: {description}")


# ----------------------------------------------------------------------------------------------
# validation
# ----------------------------------------------------------------------------------------------

def fit_text(text: str, limit: int) -> str:
    """``text`` unchanged when it has at most ``limit`` characters, else cut to ``limit - 1`` plus "…".
    Blank text is refused: Telegram would answer "message text is empty"."""
    if not isinstance(text, str):
        raise ValueError("text must be a string")
    if not text.strip():
        raise ValueError("text is empty or only whitespace")
    return text if len(text) <= limit else text[:limit - 1] + "…"


def inline_keyboard(buttons: Buttons) -> dict[str, Any]:
    """The reply_markup for rows of (label, callback_data) buttons; refuses what Telegram would refuse."""
    if isinstance(buttons, (str, bytes)) or not isinstance(buttons, Sequence):
        raise ValueError("buttons must be a list of rows of (label, callback_data) pairs")
    rows = []
    for r, row in enumerate(buttons, 1):
        if isinstance(row, (str, bytes)) or not isinstance(row, Sequence) or not row:
            raise ValueError(f"button row {r} must be a non-empty list of (label, callback_data) pairs")
        out = []
        for c, button in enumerate(row, 1):
            if not (isinstance(button, tuple) and len(button) == 2 and all(isinstance(x, str) for x in button)):
                raise ValueError(f"button at row {r}, column {c} must be a (label, callback_data) pair of strings")
            label, data = button
            if not label.strip():
                raise ValueError(f"button at row {r}, column {c} has an empty label")
            size = len(data.encode("utf-8"))
            if not 1 <= size <= MAX_CALLBACK_DATA_BYTES:
                raise ValueError(f"button {label!r} (row {r}, column {c}): callback_data is {size} UTF-8 bytes; "
                                 f"Telegram allows 1-{MAX_CALLBACK_DATA_BYTES}")
            out.append({"text": label, "callback_data": data})
        rows.append(out)
    return {"inline_keyboard": rows}


def _chat(chat_id: int | str) -> int | str:
    if _is_int(chat_id) or (isinstance(chat_id, str) and _CHAT_RE.fullmatch(chat_id)):
        return chat_id
    raise ValueError("chat_id must be an integer, a numeric string or an @username")


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


# ----------------------------------------------------------------------------------------------
# webhook side
# ----------------------------------------------------------------------------------------------

def parse_callback(update: object) -> CallbackQuery | None:
    """The button press in a decoded webhook Update; None for other updates (messages, edits, …) and for
    game callbacks (no ``data``). Raises ValueError naming the first problem for a malformed update.
    Unknown extra fields are ignored."""
    if not isinstance(update, dict):
        raise ValueError("update is not a JSON object")
    if not _is_int(update.get("update_id")):
        raise ValueError("update has no integer update_id")
    if "callback_query" not in update:
        return None
    query = update["callback_query"]
    if not isinstance(query, dict):
        raise ValueError("callback_query is not an object")
    query_id = query.get("id")
    if not isinstance(query_id, str) or not query_id:
        raise ValueError("callback_query.id is missing or not a non-empty string")
    user = query.get("from")
    if not isinstance(user, dict):
        raise ValueError("callback_query.from is missing or not an object")
    if not _is_int(user.get("id")):
        raise ValueError("callback_query.from.id is missing or not an integer")
    first, last = user.get("first_name"), user.get("last_name")
    if not isinstance(first, str):
        raise ValueError("callback_query.from.first_name is missing or not a string")
    if last is not None and not isinstance(last, str):
        raise ValueError("callback_query.from.last_name is not a string")
    chat_id = message_id = None
    if "message" in query:
        message = query["message"]
        chat = message.get("chat") if isinstance(message, dict) else None
        if not isinstance(chat, dict) or not _is_int(chat.get("id")) or not _is_int(message.get("message_id")):
            raise ValueError("callback_query.message needs an integer message_id and a chat with an integer id")
        chat_id, message_id = chat["id"], message["message_id"]
    data = query.get("data")
    if data is None:
        if isinstance(query.get("game_short_name"), str):
            return None
        raise ValueError("callback_query has neither data nor game_short_name")
    if not isinstance(data, str) or not 1 <= len(data.encode("utf-8")) <= MAX_CALLBACK_DATA_BYTES:
        raise ValueError(f"callback_query.data must be a string of 1-{MAX_CALLBACK_DATA_BYTES} UTF-8 bytes")
    name = f"{first} {last}".strip() if last else first
    return CallbackQuery(id=query_id, user_id=user["id"], user_name=name, chat_id=chat_id,
                         message_id=message_id, data=data)


def secret_token_ok(header: str | None, expected: str) -> bool:
    """Whether the X-Telegram-Bot-Api-Secret-Token header matches, in constant time; False when either is empty."""
    if not header or not expected:
        return False
    return hmac.compare_digest(header.encode("utf-8", "surrogatepass"), expected.encode("utf-8", "surrogatepass"))
