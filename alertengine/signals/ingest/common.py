"""Shared checks for the ingest parsers: PayloadError, JSON paths, bounded strings, maps and hashes."""

from __future__ import annotations

import hashlib
import json
import re
from datetime import datetime
from typing import Mapping

from ...errors import FieldError

MAX_KEY = 128           # label / annotation key length
MAX_VALUE = 4096        # label / annotation value length, and any other free-text string
MAX_ENTRIES = 256       # entries in one labels / annotations map (third-party payloads)
MAX_FINGERPRINT = 255   # an alert identity from outside (PagerDuty's dedup_key limit)
MAX_TIMESTAMP = 64
ROOT = "$"              # the field named when the whole body is wrong

# RFC 3339 as Alertmanager and Grafana send it: any number of fractional digits, "Z" or an offset.
# PagerDuty's own example uses "+0000", so the colon in the offset is optional.
_TIMESTAMP_RE = re.compile(
    r"(\d{4}-\d{2}-\d{2})[Tt ](\d{2}:\d{2}:\d{2})(?:\.\d{1,12})?(?:[Zz]|[+-]\d{2}:?\d{2})", re.ASCII)
_IDENT_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_HTTP_RE = re.compile(r"https?://[^\s\x00-\x1f\x7f]+", re.IGNORECASE)


class PayloadError(FieldError):
    """An ingest body that cannot be read; ``field`` is the JSON path of the problem."""


def join(path: str, key: str) -> str:
    """The JSON path of ``key`` under ``path``: ``alerts[0].labels`` + ``severity``, or
    ``labels["a.b"]`` for keys that are not plain names (long keys are shortened)."""
    prefix = "" if path == ROOT else path
    if _IDENT_RE.fullmatch(key) and len(key) <= 40:
        return f"{prefix}.{key}" if prefix else key
    shown = key if len(key) <= 40 else key[:40] + "…"
    return f"{prefix}[{json.dumps(shown, ensure_ascii=False)}]"


def index(path: str, i: int) -> str:
    return f"{path}[{i}]"


def need_object(value: object, path: str) -> dict[str, object]:
    if not isinstance(value, dict):
        raise PayloadError(path, f"must be a JSON object, not {type_name(value)}")
    for key in value:
        if not isinstance(key, str):
            raise PayloadError(path, "has a key that is not a string")
    return value


def need_list(value: object, path: str, max_items: int) -> list[object]:
    if not isinstance(value, list):
        raise PayloadError(path, f"must be a JSON array, not {type_name(value)}")
    if len(value) > max_items:
        raise PayloadError(path, f"has {len(value)} items; at most {max_items} are accepted")
    return value


def need_str(obj: Mapping[str, object], key: str, path: str, *, max_len: int = MAX_VALUE,
             required: bool = True, allow_empty: bool = False) -> str | None:
    """``obj[key]`` as a bounded string; None when optional and missing or null."""
    value = obj.get(key)
    if type(value) is str and len(value) <= max_len and (value or allow_empty):
        return value   # the common case, without building the path an error would name
    if value is None:
        if required:
            raise PayloadError(join(path, key), "is required")
        return None
    return check_str(value, join(path, key), max_len=max_len, allow_empty=allow_empty)


def require_str(obj: Mapping[str, object], key: str, path: str, *, max_len: int = MAX_VALUE) -> str:
    """``obj[key]`` as a non-empty bounded string; missing or null is an error."""
    sub = join(path, key)
    if obj.get(key) is None:
        raise PayloadError(sub, "is required")
    return check_str(obj[key], sub, max_len=max_len, allow_empty=False)


def check_str(value: object, path: str, *, max_len: int = MAX_VALUE, allow_empty: bool = True) -> str:
    if not isinstance(value, str):
        raise PayloadError(path, f"must be a string, not {type_name(value)}")
    if not value and not allow_empty:
        raise PayloadError(path, "must not be empty")
    if len(value) > max_len:
        raise PayloadError(path, f"is {len(value)} characters long; at most {max_len} are accepted")
    return value


def string_map(value: object, path: str, *, max_entries: int = MAX_ENTRIES) -> dict[str, str]:
    """A labels / annotations object: string keys (1..MAX_KEY) to string values (..MAX_VALUE)."""
    obj = need_object(value, path)
    if len(obj) > max_entries:
        raise PayloadError(path, f"has {len(obj)} entries; at most {max_entries} are accepted")
    out: dict[str, str] = {}
    for key, item in obj.items():
        check_key(key, path)
        out[key] = item if type(item) is str and len(item) <= MAX_VALUE else check_str(item, join(path, key))
    return out


def check_key(key: str, path: str) -> None:
    if not key:
        raise PayloadError(path, "has an empty key")
    if not key.isascii():   # the ledger keeps ASCII keys only: refused here, before anything is judged
        raise PayloadError(path, f"has a key that is not ASCII: {key[:40]!r}")
    if len(key) > MAX_KEY:
        raise PayloadError(path, f"has a key of {len(key)} characters; at most {MAX_KEY} are accepted")


# Timestamps already found valid (senders repeat them: a group's alerts often share one): a set
# lookup instead of a regex and a date parse. Bounded: emptied when full.
_VALID_TIMESTAMPS: set[str] = set()
_MAX_REMEMBERED = 4096
# Links already read (what link() makes of them): a group's alerts mostly share their rule's.
_LINKS: dict[str, str | None] = {}


def is_valid_timestamp(value: object) -> bool:
    """Whether ``value`` is a string :func:`timestamp` accepts (cheap for one seen before)."""
    if type(value) is not str:
        return False
    if value in _VALID_TIMESTAMPS:
        return True
    try:
        timestamp({"t": value}, "t", ROOT, required=True)
    except PayloadError:
        return False
    return True


def timestamp(obj: Mapping[str, object], key: str, path: str, *, required: bool) -> str | None:
    """An RFC 3339 timestamp, returned as sent."""
    text = obj.get(key)
    if type(text) is str and text in _VALID_TIMESTAMPS:
        return text
    text = need_str(obj, key, path, max_len=MAX_TIMESTAMP, required=required)
    if text is None:
        return None
    match = _TIMESTAMP_RE.fullmatch(text)
    try:
        if match is None:
            raise ValueError(text)
        try:   # the fast check (a tenth of strptime's cost); strptime still admits a leap second
            datetime.fromisoformat(f"{match.group(1)}T{match.group(2)}")
        except ValueError:
            datetime.strptime(f"{match.group(1)}T{match.group(2)}", "%Y-%m-%dT%H:%M:%S")
    except ValueError:
        raise PayloadError(join(path, key), "must be an RFC 3339 timestamp") from None
    if type(text) is str:
        if len(_VALID_TIMESTAMPS) >= _MAX_REMEMBERED:
            _VALID_TIMESTAMPS.clear()
        _VALID_TIMESTAMPS.add(text)
    return text


def link(obj: Mapping[str, object], key: str, path: str) -> str | None:
    """An optional link from a third-party tool: type and length are checked; anything but an
    absolute http(s) URL (``""`` included) reads as no link, so a display link never fails a body."""
    text = need_str(obj, key, path, required=False, allow_empty=True)
    return link_of(text) if text else None


def link_of(text: str) -> str | None:
    """``text`` if it is an absolute http(s) URL, else None (the check of :func:`link`, remembered)."""
    if text in _LINKS:
        return _LINKS[text]
    found = text if text and _HTTP_RE.fullmatch(text) else None
    if type(text) is str:
        if len(_LINKS) >= _MAX_REMEMBERED:
            _LINKS.clear()
        _LINKS[text] = found
    return found


def is_http_url(text: str) -> bool:
    return _HTTP_RE.fullmatch(text) is not None


def digest(parts: object, length: int) -> str:
    """sha256 hex (first ``length`` chars) of the compact, key-sorted JSON encoding of ``parts``."""
    data = json.dumps(parts, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(data.encode("utf-8")).hexdigest()[:length]


def type_name(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__
