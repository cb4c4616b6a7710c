"""Slack: ``chat.postMessage`` with Block Kit by bot token, or an incoming webhook for notify-only
channels; the interactivity endpoint's signature check and payload reader.

* Messages are Block Kit: a header (what happened, priority, incident), the text as plain text (no
  mrkdwn, so ``*``, ``_``, ``<`` or ``&`` in alert text are shown verbatim and cannot mention
  ``@channel`` or forge a link), and the buttons (Approve / Reject, Trust A / Trust B and Reject for
  a dissent, Acknowledge / Resolve / Silence 1 h on news of an open incident). A button's value is
  its callback data (``ap:<ref>:y``, ``ak:INC-7``), never a token. ``text`` carries the same words as
  the notification fallback.
* Web API answers are ``{"ok": false, "error": "..."}`` behind HTTP 200: ``ratelimited`` and HTTP 429
  are retryable after ``Retry-After``, 5xx and transport errors are retryable, any other error is
  final. An incoming webhook answers ``ok`` in plain text, or an error word with a 4xx.
* Slack signs each interaction: ``v0=`` hex HMAC-SHA256 of ``v0:{timestamp}:{raw body}`` with the
  app's signing secret; :func:`signature_ok` refuses a timestamp more than five minutes from the
  appliance's clock and compares in constant time.
* The bot token is sent only in the ``Authorization`` header and never appears in a detail or a log.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs

import httpx

from ...net.guard import is_refused
from ..message import Message
from .base import Delivery
from .http import api_base, check_timeout, clean, json_object, read_capped, retry_after_header
from .text import headline

log = logging.getLogger("alertengine.channels.slack")

DEFAULT_BASE_URL = "https://slack.com"
MAX_SKEW = 300                 # seconds between Slack's timestamp and our clock
MAX_SECTION = 3000             # characters of a section block's text
MAX_HEADER = 150
_STYLES = {"Approve": "primary", "Reject": "danger"}
_ID = re.compile(r"[A-Z0-9]{2,32}")           # Slack user, channel and team ids
_TS = re.compile(r"[0-9]{1,12}\.[0-9]{1,8}")


@dataclass(frozen=True)
class Posted:
    channel: str
    ts: str


@dataclass(frozen=True)
class Interaction:
    """One button press from a Slack ``block_actions`` payload."""

    user_id: str
    user_name: str
    team_id: str | None
    value: str
    channel_id: str | None
    message_ts: str | None


def blocks(message: Message, outcome: str | None = None) -> list[dict[str, Any]]:
    """The Block Kit of a notification; with ``outcome`` (who did what) instead of its buttons."""
    text = message.text if len(message.text) <= MAX_SECTION else message.text[:MAX_SECTION - 1] + "…"
    head = headline(message)
    out: list[dict[str, Any]] = [
        {"type": "header", "text": {"type": "plain_text", "text": head[:MAX_HEADER], "emoji": True}}]
    if text.strip():     # Slack refuses an empty text object
        out.append({"type": "section", "text": {"type": "plain_text", "text": text, "emoji": True}})
    service = message.data.get("service")
    if service:
        out.append({"type": "context", "elements": [{"type": "plain_text", "text": f"Service: {service}"}]})
    if outcome is not None:
        if outcome.strip():
            out.append({"type": "context", "elements": [{"type": "plain_text", "text": outcome}]})
        return out
    elements = []
    for row in message.buttons:
        for label, value in row:
            button: dict[str, Any] = {"type": "button", "text": {"type": "plain_text", "text": label},
                                      "action_id": f"ae{len(elements)}", "value": value}
            if label in _STYLES or label.startswith("Trust "):
                button["style"] = _STYLES.get(label, "primary")
            elements.append(button)
    if elements:
        out.append({"type": "actions", "block_id": "alertengine", "elements": elements[:25]})
    return out


class SlackClient:
    """chat.postMessage and chat.update with a bot token, over a caller-owned ``httpx.AsyncClient``."""

    def __init__(self, base_url: str, bot_token: str, client: httpx.AsyncClient, timeout: float = 10.0) -> None:
        base = api_base(base_url, DEFAULT_BASE_URL, "Slack")
        if not isinstance(bot_token, str) or not bot_token.startswith("xox"):
            raise ValueError("a Slack bot token starts with xox")
        self.base_url = base
        self.timeout = check_timeout(timeout)
        self._token = bot_token
        self._client = client

    def __repr__(self) -> str:
        return f"SlackClient(base_url={self.base_url!r}, bot_token='<secret>')"

    async def post_message(self, channel: str, message: Message) -> Delivery:
        """chat.postMessage; ``provider_id`` is ``"{channel}:{ts}"``."""
        body = {"channel": channel, "text": _fallback(message), "blocks": blocks(message),
                "unfurl_links": False, "unfurl_media": False}
        return await self._call("chat.postMessage", body)

    async def update_message(self, channel: str, ts: str, message: Message, outcome: str) -> Delivery:
        """chat.update: the message now says ``outcome`` and has no buttons."""
        body = {"channel": channel, "ts": ts, "text": f"{_fallback(message)}\n{outcome}",
                "blocks": blocks(message, outcome)}
        return await self._call("chat.update", body)

    async def _call(self, method: str, body: dict[str, Any]) -> Delivery:
        url = f"{self.base_url}/api/{method}"
        headers = {"Authorization": f"Bearer {self._token}", "Content-Type": "application/json; charset=utf-8"}
        try:
            async with self._client.stream("POST", url, content=json.dumps(body).encode(), headers=headers,
                                           timeout=self.timeout) as response:
                raw = await read_capped(response)
        except (httpx.UnsupportedProtocol, httpx.InvalidURL) as exc:
            return self._failure(method, False, f"bad API base URL: {type(exc).__name__}")
        except httpx.RequestError as exc:
            if is_refused(exc):
                return self._failure(method, False, str(exc))
            return self._failure(method, True, f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__)
        status = response.status_code
        retry_after = retry_after_header(response.headers.get("retry-after"))
        doc = json_object(raw)
        if status == 429:
            return self._failure(method, True, "HTTP 429: rate limited", retry_after)
        if status >= 500:
            return self._failure(method, True, f"HTTP {status}")
        if doc is None:
            return self._failure(method, False, f"HTTP {status}: the answer was not a Slack API document")
        if doc.get("ok") is True:
            channel, ts = doc.get("channel"), doc.get("ts")
            pid = f"{channel}:{ts}" if isinstance(channel, str) and isinstance(ts, str) else None
            return Delivery(True, False, f"{method}: ok", provider_id=pid)
        error = doc.get("error") if isinstance(doc.get("error"), str) else "unknown_error"
        if error in ("ratelimited", "rate_limited"):
            return self._failure(method, True, f"{error}", retry_after)
        if error in ("internal_error", "fatal_error", "service_unavailable", "request_timeout"):
            return self._failure(method, True, error)
        return self._failure(method, False, f"HTTP {status}: {error}")

    def _failure(self, method: str, retryable: bool, detail: str, retry_after: float | None = None) -> Delivery:
        delivery = Delivery(False, retryable, f"{method}: {clean(detail.replace(self._token, '<secret>'))}",
                            retry_after=retry_after)
        log.debug("slack %s", delivery.detail)
        return delivery


async def post_webhook(client: httpx.AsyncClient, url: str, message: Message, timeout: float = 10.0) -> Delivery:
    """An incoming webhook (notify only: no buttons, for nobody could be told apart in the channel).
    The URL is itself the credential: it never appears in a detail."""
    plain = Message(message.tenant, message.incident, message.event, message.priority, message.text,
                    data=message.data)
    body = {"text": _fallback(plain), "blocks": blocks(plain), "unfurl_links": False, "unfurl_media": False}
    try:
        async with client.stream("POST", url, content=json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json"}, timeout=timeout) as response:
            raw = await read_capped(response)
    except (httpx.UnsupportedProtocol, httpx.InvalidURL) as exc:
        return Delivery(False, False, f"incoming webhook: bad URL: {type(exc).__name__}")
    except httpx.RequestError as exc:
        return Delivery(False, not is_refused(exc), f"incoming webhook: {type(exc).__name__}")
    words = clean((raw or b"").decode("utf-8", "replace"))[:80]
    status = response.status_code
    if status == 200:
        return Delivery(True, False, "incoming webhook: ok", provider_id="slack-webhook")
    if status == 429 or status >= 500:
        return Delivery(False, True, f"incoming webhook: HTTP {status}: {words}",
                        retry_after=retry_after_header(response.headers.get("retry-after")))
    return Delivery(False, False, f"incoming webhook: HTTP {status}: {words}")


def _fallback(message: Message) -> str:
    return f"{headline(message)}\n{message.text}"[:4000]


# ----------------------------------------------------------------------------------------------
# interactivity
# ----------------------------------------------------------------------------------------------

def compute_signature(signing_secret: str, timestamp: str, body: bytes) -> str:
    base = b"v0:" + timestamp.encode("ascii") + b":" + body
    return "v0=" + hmac.new(signing_secret.encode("utf-8"), base, hashlib.sha256).hexdigest()


def signature_ok(signing_secret: str, timestamp: str | None, signature: str | None, body: bytes, now: float) -> bool:
    """Whether a request is Slack's: a fresh timestamp (within five minutes of ``now``) and a matching
    ``v0`` signature, compared in constant time."""
    if not signing_secret or not timestamp or not signature:
        return False
    if not timestamp.isascii() or not timestamp.isdigit() or len(timestamp) > 12:
        return False
    if abs(now - int(timestamp)) > MAX_SKEW:
        return False
    expected = compute_signature(signing_secret, timestamp, body).encode("ascii")
    return hmac.compare_digest(expected, signature.encode("utf-8", "surrogatepass"))


def parse_interaction(body: bytes) -> Interaction | None:
    """The button press in an interactivity request (``payload=<JSON>``); None for other interaction
    types. Raises ValueError naming the first problem of a malformed one."""
    try:
        form = parse_qs(body.decode("utf-8"), strict_parsing=True, max_num_fields=10)
    except (UnicodeDecodeError, ValueError):
        raise ValueError("the body is not form data with a payload field") from None
    values = form.get("payload")
    if not values or len(values) != 1:
        raise ValueError("the body has no single payload field")
    try:
        doc = json.loads(values[0])
    except (ValueError, RecursionError):
        raise ValueError("payload is not JSON (or nested too deep)") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("type"), str):
        raise ValueError("payload is not an object with a type")
    if doc["type"] != "block_actions":
        return None
    user = doc.get("user")
    if not isinstance(user, dict) or not isinstance(user.get("id"), str) or not _ID.fullmatch(user["id"]):
        raise ValueError("payload.user.id is missing or not a Slack id")
    actions = doc.get("actions")
    if not isinstance(actions, list) or not actions or not isinstance(actions[0], dict):
        raise ValueError("payload.actions is missing")
    value = actions[0].get("value")
    if not isinstance(value, str) or not 1 <= len(value) <= 2000:
        raise ValueError("payload.actions[0].value must be a string of 1-2000 characters")
    container = doc.get("container") if isinstance(doc.get("container"), dict) else {}
    channel = container.get("channel_id")
    channel = channel if isinstance(channel, str) and _ID.fullmatch(channel) else None
    ts = container.get("message_ts")
    ts = ts if isinstance(ts, str) and _TS.fullmatch(ts) else None
    team = doc.get("team") if isinstance(doc.get("team"), dict) else {}
    name = user.get("name") or user.get("username") or user["id"]
    name = str(name)[:80].encode("utf-8", "replace").decode("utf-8") if isinstance(name, str) else user["id"]
    return Interaction(user["id"], name, team.get("id") if isinstance(team.get("id"), str) else None, value,
                       channel, ts)
