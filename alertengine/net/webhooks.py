"""Signed outbound webhooks: signing, verifying and delivering with retries (recovery webhooks, webhook channel).

The receiver's contract — every delivery is one ``POST`` with these headers::

    Content-Type:            application/json
    User-Agent:              AlertEngine/<version>
    Idempotency-Key:         <key>              same on every retry of one delivery; dedupe on it
    X-AlertEngine-Timestamp: <unix seconds>     fresh on every attempt
    X-AlertEngine-Signature: v1=<hex>           hex HMAC-SHA256(secret, f"{timestamp}.".encode() + body)

* ``body`` is the raw request body exactly as received (compact, sorted-key JSON, ASCII only);
  verify the bytes, not a re-serialisation of the parsed JSON. The secret is UTF-8 encoded.
* Refuse a timestamp more than 300 s away from your clock (replay protection), and compare with a
  constant-time function (``hmac.compare_digest``).
* The signature header may carry several comma-separated values (``v1=<a>,v1=<b>``, e.g. while a
  secret is rotated); accept the request when any ``v1=`` value matches. Ignore schemes you do
  not know.
* Answer 2xx once the event is accepted. 5xx, 429 and network failures are retried with
  exponential backoff and full jitter (``Retry-After`` — seconds or an HTTP date — is a minimum
  delay); any other 4xx is final. Redirects are never followed and never retried: a redirect could
  carry the signed body to a host the customer never configured, so a 3xx is a failure.

``RECEIVER_EXAMPLE`` is a stand-alone (stdlib only) check of the above, shown in the README;
``verify`` is the same check for Python code that can import AlertEngine.

``post_signed`` never raises for HTTP or transport problems: it returns a ``DeliveryResult``
whose ``detail`` is a short sentence that never holds the secret, the URL, or more than a
200-character excerpt (control characters removed) of a response body. Response bodies are read
no further than 64 KiB. Only programming errors (bad arguments, a payload that is not JSON)
raise ``ValueError``.
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import hashlib
import hmac
import http
import json
import math
import random
import re
import time
import unicodedata
from dataclasses import dataclass
from datetime import timezone
from typing import Any, Awaitable, Callable, Mapping

import httpx

from .. import __version__
from .guard import is_refused

__all__ = [
    "Attempt", "DeliveryResult", "RECEIVER_EXAMPLE", "canonical_body", "post_signed", "sign", "verify",
    "TIMESTAMP_HEADER", "SIGNATURE_HEADER", "IDEMPOTENCY_HEADER", "USER_AGENT", "DEFAULT_TOLERANCE",
    "MAX_RESPONSE_BYTES", "EXCERPT_CHARS",
]

TIMESTAMP_HEADER = "X-AlertEngine-Timestamp"
SIGNATURE_HEADER = "X-AlertEngine-Signature"
IDEMPOTENCY_HEADER = "Idempotency-Key"
USER_AGENT = f"AlertEngine/{__version__}"
SCHEME = "v1"
DEFAULT_TOLERANCE = 300               # seconds either side of the receiver's clock
MAX_RESPONSE_BYTES = 64 * 1024        # response bodies are not read beyond this
EXCERPT_CHARS = 200                   # at most this much of a response body reaches a detail
MAX_DETAIL_CHARS = 500
MAX_IDEMPOTENCY_KEY_CHARS = 255

_TIMESTAMP_RE = re.compile(r"[0-9]{1,12}")
_RETRY_AFTER_SECONDS_RE = re.compile(r"[0-9]{1,10}(?:\.[0-9]{1,6})?")
_IDEMPOTENCY_KEY_RE = re.compile(r"[\x21-\x7e]+")   # visible ASCII: no spaces, no CR/LF
_REDACTED = "[redacted]"

RECEIVER_EXAMPLE = '''\
import hashlib, hmac, time

def verify_alertengine(secret: str, headers, body: bytes, tolerance: int = 300) -> bool:
    """headers: the request's (case-insensitive) headers; body: the raw request body bytes."""
    ts = headers.get("X-AlertEngine-Timestamp") or ""
    if not (ts.isascii() and ts.isdigit()) or abs(time.time() - int(ts)) > tolerance:
        return False
    mac = "v1=" + hmac.new(secret.encode(), ts.encode() + b"." + body, hashlib.sha256).hexdigest()
    offered = (headers.get("X-AlertEngine-Signature") or "").split(",")
    return any(hmac.compare_digest(mac.encode(), v.strip().encode()) for v in offered)
'''


# --------------------------------------------------------------------------------------------
# Signing
# --------------------------------------------------------------------------------------------

def _mac(secret: str, timestamp: str, body: bytes) -> str:
    return hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()


def sign(secret: str, timestamp: int, body: bytes) -> str:
    """The ``X-AlertEngine-Signature`` value for ``body`` sent at ``timestamp``: ``v1=<hex>``."""
    if not secret:
        raise ValueError("webhook secret must not be empty")
    if isinstance(timestamp, bool) or not isinstance(timestamp, int) or timestamp < 0:
        raise ValueError("timestamp must be a non-negative int of unix seconds")
    return f"{SCHEME}={_mac(secret, str(timestamp), body)}"


def verify(secret: str, timestamp_header: str | None, signature_header: str | None, body: bytes, *,
           now: float | None = None, tolerance: int = DEFAULT_TOLERANCE) -> bool:
    """Whether ``signature_header`` holds a ``v1=`` signature of ``body`` at ``timestamp_header``
    by ``secret``, with the timestamp at most ``tolerance`` seconds from ``now``.

    Missing or malformed headers, and an empty secret, are simply not valid (False).
    """
    if tolerance < 0:
        raise ValueError("tolerance must not be negative")
    if not secret or not timestamp_header or not signature_header:
        return False
    timestamp = timestamp_header.strip()
    if not _TIMESTAMP_RE.fullmatch(timestamp):
        return False
    if abs((time.time() if now is None else now) - int(timestamp)) > tolerance:
        return False
    expected = f"{SCHEME}={_mac(secret, timestamp, body)}".encode()
    matched = False
    for offered in signature_header.split(","):
        offered = offered.strip()
        if offered.startswith(f"{SCHEME}="):
            # no early exit: every offered value costs the same, whichever one matches
            matched |= hmac.compare_digest(expected, offered.encode("utf-8", "replace"))
    return matched


def _json_default(value: object) -> object:
    if isinstance(value, Mapping):
        return dict(value)
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


def canonical_body(payload: Mapping[str, Any]) -> bytes:
    """``payload`` as compact, sorted-key, ASCII-only JSON: exactly the bytes that are signed and sent.

    Raises ValueError for anything JSON cannot carry faithfully (other types, NaN, infinities).
    """
    if not isinstance(payload, Mapping):
        raise ValueError(f"payload must be a mapping, not {type(payload).__name__}")
    try:
        text = json.dumps(dict(payload), sort_keys=True, separators=(",", ":"), ensure_ascii=True,
                          allow_nan=False, default=_json_default)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"payload is not JSON-serialisable: {exc}") from None
    return text.encode("ascii")


# --------------------------------------------------------------------------------------------
# Delivery
# --------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Attempt:
    """One POST: its HTTP status (None if none came), what went wrong (None on success), how long
    it took, and the receiver's ``Retry-After`` in seconds (None if absent or unreadable)."""

    number: int
    status: int | None
    error: str | None
    duration_ms: float
    retry_after: float | None


@dataclass(frozen=True)
class DeliveryResult:
    """The outcome of one delivery: every attempt in order, the last HTTP status, and a sentence."""

    delivered: bool
    attempts: tuple[Attempt, ...]
    final_status: int | None
    detail: str


@dataclass(frozen=True)
class _Outcome:
    attempt: Attempt
    retryable: bool
    reason: str          # why it failed, for the detail ("" when delivered)


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[:limit - 1] + "…"


def _scrub(text: str, secrets: tuple[str, ...]) -> str:
    for secret in secrets:
        if secret:
            text = text.replace(secret, _REDACTED)
    return text


def _printable(text: str) -> str:
    """Control, format and separator characters become spaces; runs of whitespace collapse."""
    cleaned = "".join(" " if unicodedata.category(ch)[0] in "CZ" else ch for ch in text)
    return " ".join(cleaned.split())


def _excerpt(body: bytes, content_encoding: str, secrets: tuple[str, ...]) -> str:
    if not body:
        return ""
    if content_encoding not in ("", "identity"):
        return f"({len(body)} bytes of {_clip(_printable(content_encoding), 20)}-encoded body)"
    text = _scrub(body.decode("utf-8", "replace"), secrets)   # before clipping: no partial secret survives
    return _clip(_scrub(_printable(text), secrets), EXCERPT_CHARS)


def _http_words(status: int) -> str:
    try:
        return f"HTTP {status} {http.HTTPStatus(status).phrase}"
    except ValueError:
        return f"HTTP {status}"


def _parse_retry_after(value: str | None, now: float) -> float | None:
    """``Retry-After`` as seconds from ``now`` (delay-seconds or an HTTP date); None if unreadable."""
    if value is None:
        return None
    value = value.strip()
    if _RETRY_AFTER_SECONDS_RE.fullmatch(value):
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return max(0.0, when.timestamp() - now)


def _backoff(number: int, base_delay: float, max_delay: float) -> float:
    """Full jitter: uniform in [0, min(max_delay, base_delay · 2^(number-1))]."""
    ceiling = min(max_delay, base_delay * 2.0 ** min(number - 1, 60))
    return random.uniform(0.0, ceiling)


async def _read_head(response: httpx.Response) -> bytes:
    """At most MAX_RESPONSE_BYTES of the raw body; the rest is never read."""
    head = bytearray()
    async with contextlib.aclosing(response.aiter_raw()) as chunks:
        async for chunk in chunks:
            head += chunk
            if len(head) >= MAX_RESPONSE_BYTES:
                break
    return bytes(head[:MAX_RESPONSE_BYTES])


async def _attempt(client: httpx.AsyncClient, url: str, secret: str, body: bytes, idempotency_key: str,
                   number: int, timeout: float, clock: Callable[[], float]) -> _Outcome:
    secrets = (secret, url)
    timestamp = int(clock())
    headers = {
        "Content-Type": "application/json",
        "User-Agent": USER_AGENT,
        "Accept-Encoding": "identity",   # the 64 KiB cap is on the bytes we read, not on a decompressed bomb
        IDEMPOTENCY_HEADER: idempotency_key,
        TIMESTAMP_HEADER: str(timestamp),
        SIGNATURE_HEADER: sign(secret, timestamp, body),
    }
    started = time.perf_counter()
    status: int | None = None

    def outcome(error: str | None, retryable: bool, reason: str = "",
                retry_after: float | None = None) -> _Outcome:
        if error is not None:
            error = _clip(_scrub(error, secrets), MAX_DETAIL_CHARS)
        attempt = Attempt(number=number, status=status, error=error,
                          duration_ms=(time.perf_counter() - started) * 1000.0, retry_after=retry_after)
        return _Outcome(attempt, retryable, _scrub(reason, secrets))

    def transport(error: str) -> _Outcome:
        return outcome(error, True, error)

    try:
        async with asyncio.timeout(timeout):
            async with client.stream("POST", url, content=body, headers=headers, timeout=httpx.Timeout(timeout),
                                     follow_redirects=False) as response:
                status = response.status_code
                head = await _read_head(response)
                encoding = response.headers.get("content-encoding", "").strip().lower()
                retry_after_header = response.headers.get("retry-after")
    except (TimeoutError, httpx.TimeoutException):
        status = None   # an answer cut off by the deadline is no answer
        return transport(f"no complete answer within {timeout:g} s")
    except httpx.ConnectError as exc:
        if is_refused(exc):   # the outbound policy said no: asking again cannot change that
            return outcome(str(exc), False, str(exc))
        return transport(f"cannot connect: {exc}" if str(exc) else "cannot connect")
    except (httpx.InvalidURL, httpx.UnsupportedProtocol) as exc:
        error = f"unusable URL ({type(exc).__name__})"   # the message would repeat the URL
        return outcome(error, False, error)
    except httpx.LocalProtocolError as exc:
        error = f"request could not be sent ({type(exc).__name__})"
        return outcome(error, False, error)
    except (httpx.TransportError, OSError) as exc:
        return transport(f"connection failed: {type(exc).__name__}: {exc}" if str(exc)
                         else f"connection failed: {type(exc).__name__}")

    words = _http_words(status)
    if 200 <= status < 300:
        return outcome(None, False)
    excerpt = _excerpt(head, encoding, secrets)
    error = f"{words}: {excerpt}" if excerpt else words
    if status == 429 or 500 <= status < 600:
        return outcome(error, True, error, _parse_retry_after(retry_after_header, clock()))
    if 300 <= status < 400:
        return outcome(error, False, f"{words} — redirects are not followed (one could carry the signed body "
                                     "to another host), so it was not retried")
    return outcome(error, False, f"{error} — the receiver refused it, so it was not retried")


def _check_arguments(secret: str, idempotency_key: str, attempts: int, base_delay: float, max_delay: float,
                     timeout: float) -> None:
    if not secret:
        raise ValueError("webhook secret must not be empty")
    if (not isinstance(idempotency_key, str) or len(idempotency_key) > MAX_IDEMPOTENCY_KEY_CHARS
            or not _IDEMPOTENCY_KEY_RE.fullmatch(idempotency_key)):
        raise ValueError(f"idempotency_key must be 1-{MAX_IDEMPOTENCY_KEY_CHARS} visible ASCII characters")
    if isinstance(attempts, bool) or not isinstance(attempts, int) or attempts < 1:
        raise ValueError("attempts must be an int of at least 1")
    for name, value in (("base_delay", base_delay), ("max_delay", max_delay)):
        if not (isinstance(value, (int, float)) and math.isfinite(value) and value >= 0):
            raise ValueError(f"{name} must be a finite number of seconds, at least 0")
    if not (isinstance(timeout, (int, float)) and math.isfinite(timeout) and timeout > 0):
        raise ValueError("timeout must be a finite number of seconds above 0")


def _plural(n: int) -> str:
    return f"{n} attempt" if n == 1 else f"{n} attempts"


async def post_signed(client: httpx.AsyncClient, url: str, secret: str, payload: Mapping[str, Any], *,
                      idempotency_key: str, attempts: int = 3, base_delay: float = 0.5, max_delay: float = 30.0,
                      timeout: float = 10.0, sleep: Callable[[float], Awaitable[object]] = asyncio.sleep,
                      clock: Callable[[], float] = time.time) -> DeliveryResult:
    """POST ``payload`` to ``url`` signed with ``secret``, retrying as the module docstring says.

    The same body and ``idempotency_key`` go out on every attempt; each attempt gets a fresh
    timestamp (from ``clock``) and signature. ``timeout`` bounds each attempt as a whole. Between
    attempts ``sleep`` waits a full-jitter backoff, or the receiver's ``Retry-After`` if that is
    longer; a ``Retry-After`` above ``max_delay`` ends the delivery at once. The client's own
    redirect setting is overridden: redirects are never followed.
    """
    _check_arguments(secret, idempotency_key, attempts, base_delay, max_delay, timeout)
    body = canonical_body(payload)
    history: list[Attempt] = []

    def result(delivered: bool, detail: str) -> DeliveryResult:
        detail = _clip(_scrub(detail, (secret, url)), MAX_DETAIL_CHARS)
        return DeliveryResult(delivered=delivered, attempts=tuple(history), final_status=history[-1].status,
                              detail=detail)

    for number in range(1, attempts + 1):
        outcome = await _attempt(client, url, secret, body, idempotency_key, number, timeout, clock)
        attempt = outcome.attempt
        history.append(attempt)
        if attempt.error is None:
            return result(True, f"delivered: {_http_words(attempt.status or 0)} on attempt {number} of {attempts}")
        if not outcome.retryable:
            return result(False, f"not delivered: {outcome.reason} ({_plural(number)})")
        if number == attempts:
            break
        delay = _backoff(number, base_delay, max_delay)
        if attempt.retry_after is not None:
            if attempt.retry_after > max_delay:
                return result(False, f"not delivered: the receiver asked to retry after {attempt.retry_after:g} s, "
                                     f"more than max_delay {max_delay:g} s, so AlertEngine gave up after "
                                     f"{_plural(number)} of {attempts}; last: {outcome.reason}")
            delay = max(delay, attempt.retry_after)
        await sleep(delay)
    return result(False, f"not delivered after {_plural(attempts)}; last: {history[-1].error}")
