"""Twilio's REST API (Messages for WhatsApp, Calls for voice) and its request signatures.

The client posts form-encoded requests with HTTP Basic ``AccountSid:AuthToken`` to a configurable
base URL (``https://api.twilio.com`` by default) and reads Twilio's JSON answers. Every call returns
a :class:`Delivery` and never raises for HTTP or transport trouble: transport errors, 5xx and 429
(Twilio error 20429, "never processed and always safe to retry") are retryable, with Twilio's
``Retry-After`` when it sends one; any other 4xx is final and its detail names Twilio's error code
(legacy ``{"code", "message"}`` bodies and RFC 9457 ``{"code", "detail"}`` bodies alike). The auth
token is never part of a detail, a log line or a repr.

Twilio signs every webhook it sends us (status callbacks, inbound messages, ``<Gather>`` results)
with ``X-Twilio-Signature``: base64 HMAC-SHA1, keyed with the auth token, of the full URL it
requested followed by each POST parameter's name and value in sorted order. :func:`signature_ok`
checks it in constant time against the URL with and without the scheme's default port, as
Twilio's own validator does.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import re
from dataclasses import dataclass
from typing import Any, Iterable, Mapping
from urllib.parse import parse_qsl, urlsplit, urlunsplit

import httpx

from ...net.guard import is_refused
from .base import Delivery
from .http import api_base, check_timeout, clean, json_object, read_capped, retry_after_header

log = logging.getLogger("alertengine.channels.twilio")

DEFAULT_BASE_URL = "https://api.twilio.com"
API_VERSION = "2010-04-01"
ACCOUNT_SID = re.compile(r"AC[0-9a-fA-F]{32}")
E164 = re.compile(r"\+[1-9][0-9]{6,14}")
# Twilio's message and call statuses (the REST API's enums), in the order a delivery moves through them.
MESSAGE_STATUSES = ("accepted", "scheduled", "queued", "sending", "sent", "receiving", "received", "delivered",
                    "read", "undelivered", "failed", "canceled", "partially_delivered")
CALL_STATUSES = ("queued", "initiated", "ringing", "in-progress", "completed", "busy", "no-answer", "failed",
                 "canceled")
MESSAGE_FAILED = frozenset({"undelivered", "failed", "canceled"})
CALL_UNANSWERED = frozenset({"busy", "no-answer", "failed", "canceled"})
MAX_BODY = 1600            # Twilio's limit for one message body, in characters
_NUMBER = re.compile(r"(?:whatsapp:)?\+?[0-9][0-9 ()-]{5,18}[0-9]")


@dataclass(frozen=True)
class Created:
    """What Twilio answered when it accepted a message or call: its SID and first status."""

    sid: str
    status: str


class TwilioClient:
    """Messages and Calls of one Twilio account over a caller-owned ``httpx.AsyncClient``."""

    def __init__(self, base_url: str, account_sid: str, auth_token: str, client: httpx.AsyncClient,
                 timeout: float = 10.0) -> None:
        base = api_base(base_url, DEFAULT_BASE_URL, "Twilio")
        if not isinstance(account_sid, str) or not ACCOUNT_SID.fullmatch(account_sid):
            raise ValueError("a Twilio account SID is AC followed by 32 hexadecimal digits")
        if not isinstance(auth_token, str) or not auth_token:
            raise ValueError("the Twilio auth token is empty")
        self.base_url = base
        self.account_sid = account_sid
        self.timeout = check_timeout(timeout)
        self._token = auth_token
        self._client = client

    def __repr__(self) -> str:
        return f"TwilioClient(base_url={self.base_url!r}, account_sid={self.account_sid!r}, auth_token='<secret>')"

    async def send_message(self, to: str, from_: str, *, body: str | None = None, content_sid: str | None = None,
                           content_variables: str | None = None,
                           status_callback: str | None = None) -> tuple[Delivery, Created | None]:
        """POST Messages.json: a session message (``body``) or a Content template (``content_sid``)."""
        if (body is None) == (content_sid is None):
            raise ValueError("a message has a body or a content_sid, not both")
        params: list[tuple[str, str]] = [("To", to), ("From", from_)]
        if body is not None:
            if not body.strip():
                raise ValueError("message body is empty")
            params.append(("Body", body if len(body) <= MAX_BODY else body[:MAX_BODY - 1] + "…"))
        else:
            params.append(("ContentSid", str(content_sid)))
            if content_variables is not None:
                params.append(("ContentVariables", content_variables))
        if status_callback:
            params.append(("StatusCallback", status_callback))
        return await self._create("Messages", params)

    async def create_call(self, to: str, from_: str, twiml: str, *, status_callback: str | None = None,
                          ring_for: int = 30) -> tuple[Delivery, Created | None]:
        """POST Calls.json with inline TwiML; status callbacks for every progress event when asked."""
        if not 5 <= ring_for <= 600:
            raise ValueError("ring_for is 5-600 seconds")
        params: list[tuple[str, str]] = [("To", to), ("From", from_), ("Twiml", twiml), ("Timeout", str(ring_for))]
        if status_callback:
            params += [("StatusCallback", status_callback), ("StatusCallbackMethod", "POST")]
            params += [("StatusCallbackEvent", e) for e in ("initiated", "ringing", "answered", "completed")]
        return await self._create("Calls", params)

    async def _create(self, resource: str, params: list[tuple[str, str]]) -> tuple[Delivery, Created | None]:
        url = f"{self.base_url}/{API_VERSION}/Accounts/{self.account_sid}/{resource}.json"
        what = f"{resource}.create"
        try:
            async with self._client.stream("POST", url, data=dict(_group(params)), auth=(self.account_sid, self._token),
                                           timeout=self.timeout) as response:
                raw = await read_capped(response)
        except (httpx.UnsupportedProtocol, httpx.InvalidURL) as exc:
            return self._failure(what, False, f"bad API base URL: {type(exc).__name__}"), None
        except httpx.RequestError as exc:
            reason = str(exc)
            if is_refused(exc):
                return self._failure(what, False, reason), None
            return self._failure(what, True, f"{type(exc).__name__}: {reason}" if reason else type(exc).__name__), None
        status = response.status_code
        doc = json_object(raw) or {}
        if 200 <= status < 300:
            sid, state = doc.get("sid"), doc.get("status")
            if not isinstance(sid, str) or not sid:
                return Delivery(True, False, f"{what}: accepted (the answer had no sid)"), None
            state = state if isinstance(state, str) else "queued"
            return Delivery(True, False, f"{what}: {state}", provider_id=sid), Created(sid, state)
        code = doc.get("code")
        words = doc.get("message") if isinstance(doc.get("message"), str) else doc.get("detail")
        detail = f"HTTP {status}" + (f" (Twilio error {code})" if isinstance(code, int) else "") + \
            (f": {words}" if isinstance(words, str) and words else "")
        if status == 429 or status >= 500:
            return self._failure(what, True, detail, retry_after_header(response.headers.get("retry-after"))), None
        return self._failure(what, False, detail), None

    def _failure(self, what: str, retryable: bool, detail: str, retry_after: float | None = None) -> Delivery:
        # Twilio's messages quote the phone number; the ledger keeps numbers only as fingerprints
        detail = _NUMBER.sub("<number>", detail.replace(self._token, "<secret>"))
        delivery = Delivery(False, retryable, f"{what}: {clean(detail)}",
                            retry_after=retry_after)
        log.debug("twilio %s", delivery.detail)
        return delivery


def _group(params: list[tuple[str, str]]) -> dict[str, Any]:
    """Form fields; a repeated key (StatusCallbackEvent) becomes a list, which httpx sends repeated."""
    out: dict[str, Any] = {}
    for key, value in params:
        if key in out:
            out[key] = [*out[key], value] if isinstance(out[key], list) else [out[key], value]
        else:
            out[key] = value
    return out


# ----------------------------------------------------------------------------------------------
# request signatures
# ----------------------------------------------------------------------------------------------

def compute_signature(auth_token: str, url: str, params: Iterable[tuple[str, str]]) -> str:
    """X-Twilio-Signature of a POST to ``url`` with form ``params`` (pairs; a name may repeat)."""
    grouped: dict[str, list[str]] = {}
    for name, value in params:
        grouped.setdefault(name, []).append(value)
    # as Twilio's own validator: each name once, its distinct values sorted
    text = url + "".join(name + value for name in sorted(grouped) for value in sorted(set(grouped[name])))
    mac = hmac.new(auth_token.encode("utf-8"), text.encode("utf-8", "surrogatepass"), hashlib.sha1)
    return base64.b64encode(mac.digest()).decode("ascii")


def _port_variants(url: str) -> list[str]:
    """The URL as given, with the scheme's default port added, or with its port removed (the host's
    case kept as written: Twilio signs the URL exactly as it was configured)."""
    parts = urlsplit(url)
    userinfo, at, hostport = parts.netloc.rpartition("@")
    if hostport.startswith("["):
        end = hostport.find("]") + 1
        host, port = hostport[:end], hostport[end + 1:] if hostport[end:end + 1] == ":" else ""
    else:
        host, _, port = hostport.partition(":")
    prefix = userinfo + at
    default = {"https": 443, "http": 80}.get(parts.scheme)
    out = [url]
    if not port and default is not None:
        out.append(urlunsplit((parts.scheme, f"{prefix}{host}:{default}", parts.path, parts.query, parts.fragment)))
    elif port:
        out.append(urlunsplit((parts.scheme, prefix + host, parts.path, parts.query, parts.fragment)))
    return out


def signature_ok(auth_token: str, url: str, params: Iterable[tuple[str, str]], signature: str | None) -> bool:
    """Whether ``signature`` is Twilio's for this request, compared in constant time; False when the
    token or the signature is empty."""
    if not auth_token or not signature:
        return False
    pairs = list(params)
    given = signature.encode("utf-8", "surrogatepass")
    ok = False
    for candidate in _port_variants(url):
        expected = compute_signature(auth_token, candidate, pairs).encode("ascii")
        ok = hmac.compare_digest(expected, given) or ok
    return ok


def form_pairs(body: bytes) -> list[tuple[str, str]]:
    """The pairs of an ``application/x-www-form-urlencoded`` body (blank values kept, as Twilio signs them).
    Raises ValueError for a body that is not UTF-8 form data."""
    try:
        return parse_qsl(body.decode("utf-8"), keep_blank_values=True, strict_parsing=False, max_num_fields=200,
                         encoding="utf-8", errors="strict")
    except UnicodeDecodeError:
        raise ValueError("the form body is not UTF-8") from None


def first(pairs: Iterable[tuple[str, str]]) -> Mapping[str, str]:
    """Each name's first value."""
    out: dict[str, str] = {}
    for name, value in pairs:
        out.setdefault(name, value)
    return out
