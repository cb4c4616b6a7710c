"""What the HTTP channel clients share: reading a provider's answer without buffering too much,
``Retry-After`` in both of its forms, and short one-line details that never carry a secret."""

from __future__ import annotations

import json
import math
from datetime import datetime, timezone
from email.utils import parsedate_to_datetime
from typing import Any

import httpx

MAX_ANSWER_BYTES = 1 << 20          # providers answer with small documents; refuse to buffer more than this
MAX_DETAIL = 300


def api_base(base_url: str, default: str, provider: str) -> str:
    """A provider's API base URL without its trailing slash (``default`` when empty); http(s) only."""
    base = (base_url or default).rstrip("/")
    if not base.startswith(("http://", "https://")):
        raise ValueError(f"{provider} base_url must be an http(s) URL")
    return base


def check_timeout(timeout: float) -> float:
    if not (math.isfinite(timeout) and timeout > 0):
        raise ValueError("timeout must be a positive number of seconds")
    return timeout


def clean(text: str) -> str:
    """One line of at most MAX_DETAIL characters."""
    text = " ".join(text.split())
    return text if len(text) <= MAX_DETAIL else text[:MAX_DETAIL - 1] + "…"


async def read_capped(response: httpx.Response) -> bytes | None:
    """The answer body, or None when it is larger than MAX_ANSWER_BYTES."""
    chunks, size = [], 0
    async for chunk in response.aiter_bytes():
        size += len(chunk)
        if size > MAX_ANSWER_BYTES:
            return None
        chunks.append(chunk)
    return b"".join(chunks)


def json_object(body: bytes | None) -> dict[str, Any] | None:
    if not body:
        return None
    try:
        doc = json.loads(body)
    except ValueError:
        return None
    return doc if isinstance(doc, dict) else None


def seconds(value: object) -> float | None:
    """A non-negative finite number of seconds, or None."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) and value >= 0 else None


def retry_after_header(value: str | None) -> float | None:
    """Retry-After as delta-seconds or an HTTP date."""
    if not value:
        return None
    try:
        return seconds(float(value.strip()))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return max(0.0, (when - datetime.now(timezone.utc)).total_seconds())
