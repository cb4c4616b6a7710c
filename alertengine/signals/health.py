"""Reading one health answer: an HTTP status, a body and a content type become a ``HealthReading``.

``read_health`` is pure and never raises. It understands our SDK's JSON (format ``"sdk"``), the
hosted product's SDK JSON (format ``"hosted"``) and, for any other URL, only the HTTP status
(format ``"plain"``).

Reading rules worth knowing (the hosted format's own fields disagree with each other):

* status is normalised to ``ok | warning | critical | no_data``. When both the top-level
  ``status`` and ``health_score.status`` are given, the *worse* of the two wins (the hosted SDK
  can say ``status: critical`` next to ``health_score.status: healthy``; we never pick the
  comfortable one).
* ``reason: no_data``, ``sample_size == 0`` or a status of ``no_data`` make the status
  ``no_data`` — an idle service that says ``ok`` with nothing measured is not ok. A ``critical``
  status is kept as is, though: a service that reports critical with no traffic still means it.
* ``error_rate`` is a fraction in 0..1. A value above 1 (up to 100) is read as a percentage and
  divided by 100; above 100 the payload is refused. (A percentage of 1 % or less sent as e.g.
  ``0.5`` is indistinguishable from the fraction 0.5 and is read as the fraction.)
* A JSON object claims a format by its keys: ``"sdk": "alertengine"`` or ``window_seconds`` →
  ``sdk``; else ``metrics`` or ``health_score`` → ``hosted``; anything else (other JSON, HTML,
  text, garbage, nothing) is ``plain``. A claimed format whose fields have the wrong types,
  non-finite or negative numbers or an unknown status word is ``bad_payload``. Fields we do not
  read are not checked.
"""

from __future__ import annotations

import http
import json
import math
from typing import Any, Mapping

from .model import HealthReading

MAX_DETAIL_CHARS = 300

_STATUS_WORDS = {
    "ok": "ok", "healthy": "ok",
    "warning": "warning", "degraded": "warning",
    "critical": "critical", "unhealthy": "critical", "down": "critical",
    "no_data": "no_data",
}
_SEVERITY = {"ok": 0, "warning": 1, "critical": 2}


class _BadPayload(Exception):
    """A body that claims a known format but does not hold to it."""


def clip(text: str) -> str:
    """``text`` cut to MAX_DETAIL_CHARS (a reading's detail is for people, never a dump)."""
    return text if len(text) <= MAX_DETAIL_CHARS else text[:MAX_DETAIL_CHARS - 1] + "…"


def _http_words(status_code: int) -> str:
    try:
        return f"HTTP {status_code} {http.HTTPStatus(status_code).phrase}"
    except ValueError:
        return f"HTTP {status_code}"


def _claimed_format(doc: object) -> str | None:
    if not isinstance(doc, dict):
        return None
    if doc.get("sdk") == "alertengine" or "window_seconds" in doc:
        return "sdk"
    if "metrics" in doc or "health_score" in doc:
        return "hosted"
    return None


def _name(where: str, key: str) -> str:
    return f"{where}.{key}" if where else key


def _section(doc: Mapping[str, Any], key: str) -> Mapping[str, Any]:
    value = doc.get(key)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise _BadPayload(f"{key} is {type(value).__name__}, not an object")
    return value


def _number(section: Mapping[str, Any], key: str, where: str) -> float | None:
    value = section.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise _BadPayload(f"{_name(where, key)} is {type(value).__name__}, not a number")
    try:
        number = float(value)
    except OverflowError:
        raise _BadPayload(f"{_name(where, key)} is out of range") from None
    if not math.isfinite(number) or number < 0:
        raise _BadPayload(f"{_name(where, key)} is {number!r}, not a finite non-negative number")
    return number


def _count(section: Mapping[str, Any], key: str, where: str) -> int | None:
    number = _number(section, key, where)
    if number is None:
        return None
    if not number.is_integer():
        raise _BadPayload(f"{_name(where, key)} is {number!r}, not a whole number")
    return int(number)


def _status_word(section: Mapping[str, Any], key: str, where: str) -> str | None:
    value = section.get(key)
    if value is None:
        return None
    if not isinstance(value, str):
        raise _BadPayload(f"{_name(where, key)} is {type(value).__name__}, not a string")
    word = _STATUS_WORDS.get(value.strip().lower())
    if word is None:
        raise _BadPayload(f"{_name(where, key)} {value[:40]!r} is not a known status")
    return word


def _error_rate(metrics: Mapping[str, Any]) -> float | None:
    rate = _number(metrics, "error_rate", "metrics")
    if rate is None or rate <= 1.0:
        return rate
    if rate <= 100.0:
        return rate / 100.0           # sent as a percentage
    raise _BadPayload(f"metrics.error_rate is {rate!r}, neither a fraction nor a percentage")


def _parse_claimed(doc: Mapping[str, Any], fmt: str) -> dict[str, Any]:
    """The HealthReading fields a claimed-format body carries; raises _BadPayload.

    Each format's fields are read for what they mean. Our SDK's ``anomaly_score`` is the distance
    from a learned baseline in units of its spread (0 is normal). The hosted SDK's field of the
    same name is the relative spread of the current window with no baseline at all: a healthy
    service with a normal latency tail scores high on it every day. It is not an anomaly, so it
    is not read as one (its effect on the hosted health score still counts)."""
    metrics = _section(doc, "metrics")
    score = _section(doc, "health_score")
    reason = doc.get("reason")
    if reason is not None and not isinstance(reason, str):
        raise _BadPayload(f"reason is {type(reason).__name__}, not a string")

    top = _status_word(doc, "status", "")
    composite = _status_word(score, "status", "health_score")
    sample_size = _count(metrics, "sample_size", "metrics")
    health_score = _number(score, "score", "health_score")
    if health_score is not None and health_score > 100:
        raise _BadPayload(f"health_score.score is {health_score!r}, above 100")

    said = [s for s in (top, composite) if s is not None and s != "no_data"]
    status = max(said, key=_SEVERITY.__getitem__) if said else None
    no_data = (reason is not None and reason.strip().lower() == "no_data") or sample_size == 0 \
        or "no_data" in (top, composite)
    if no_data and status != "critical":
        status = "no_data"

    return {
        "status": status,
        "p95_ms": _number(metrics, "overall_p95_ms", "metrics"),
        "error_rate": _error_rate(metrics),
        "anomaly_score": _number(metrics, "anomaly_score", "metrics") if fmt == "sdk" else None,
        "health_score": health_score,
        "sample_size": sample_size,
    }


def _load_json(body: bytes, content_type: str) -> object:
    head = body[:64].lstrip(b" \t\r\n\xef\xbb\xbf")
    if "json" not in content_type.lower() and not head.startswith(b"{"):
        return None
    try:
        return json.loads(body)
    except (ValueError, RecursionError):  # JSONDecodeError, UnicodeDecodeError, int-digit limit, nesting
        return None


def _read_health(status_code: int, body: bytes, content_type: str, latency_ms: float) -> HealthReading:
    latency = float(latency_ms) if isinstance(latency_ms, (int, float)) and math.isfinite(latency_ms) \
        and latency_ms >= 0 else None
    code = status_code if isinstance(status_code, int) and not isinstance(status_code, bool) else None
    answered_2xx = code is not None and 200 <= code < 300
    doc = _load_json(bytes(body), content_type if isinstance(content_type, str) else "")
    fmt = _claimed_format(doc)

    if fmt is None:                   # plain: only the HTTP status speaks
        if code is not None and 200 <= code < 400:
            return HealthReading(outcome="answered", format="plain", http_status=code, latency_ms=latency,
                                 status="ok")
        return HealthReading(outcome="http_error", format="plain", http_status=code, latency_ms=latency,
                             detail=_http_words(code) if code is not None else "no HTTP status")

    assert isinstance(doc, dict)
    try:
        fields = _parse_claimed(doc, fmt)
    except _BadPayload as exc:
        if answered_2xx:
            return HealthReading(outcome="bad_payload", format=fmt, http_status=code, latency_ms=latency,
                                 detail=clip(f"{fmt} health body: {exc}"))
        return HealthReading(outcome="http_error", format=fmt, http_status=code, latency_ms=latency,
                             detail=clip(f"{_http_words(code) if code is not None else 'no HTTP status'}; "
                                          f"unreadable {fmt} health body: {exc}"))
    if answered_2xx:
        return HealthReading(outcome="answered", format=fmt, http_status=code, latency_ms=latency, **fields)
    return HealthReading(outcome="http_error", format=fmt, http_status=code, latency_ms=latency,
                         detail=_http_words(code) if code is not None else "no HTTP status", **fields)


def read_health(status_code: int, body: bytes, content_type: str, latency_ms: float) -> HealthReading:
    """Read one HTTP answer from a health URL. Pure; never raises (anything unforeseen is bad_payload)."""
    try:
        return _read_health(status_code, body, content_type, latency_ms)
    except Exception as exc:  # noqa: BLE001 — the contract is "never raises"
        return HealthReading(outcome="bad_payload", format="plain",
                             http_status=status_code if isinstance(status_code, int) else None,
                             detail=clip(f"unreadable health answer: {type(exc).__name__}"))
