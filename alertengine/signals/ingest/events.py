"""Our own generic JSON event (one alert per body) into an AlertSignal."""

from __future__ import annotations

from .. import SEVERITIES, AlertSignal
from .common import (
    MAX_FINGERPRINT,
    ROOT,
    PayloadError,
    digest,
    is_http_url,
    join,
    need_object,
    need_str,
    require_str,
    string_map,
)

MAX_TITLE = 512
MAX_SERVICE = 128
MAX_EVENT_ENTRIES = 64   # labels, and annotations too
MAX_EVENT_URL = 4096
EVENT_STATUSES = ("firing", "resolved")
FIELDS = frozenset({"service", "title", "status", "severity", "fingerprint", "labels", "annotations", "url"})


def parse_event(body: object) -> AlertSignal:
    """A generic event body::

        {"service": str, "title": str (≤512), "status": "firing"|"resolved" = "firing",
         "severity": critical|high|medium|low = "medium", "fingerprint": str?,
         "labels": {str: str}? (≤64), "annotations": {str: str}? (≤64), "url": "http(s)://…"?}

    Unknown fields are refused. Null reads as absent for the optional fields. Without a
    fingerprint, it is sha256 of the JSON array ``[service, title]``, 16 hex chars."""
    top = need_object(body, ROOT)
    for name in top:
        if name not in FIELDS:
            raise PayloadError(join(ROOT, name), "is not a known field")
    service = require_str(top, "service", ROOT, max_len=MAX_SERVICE)
    title = require_str(top, "title", ROOT, max_len=MAX_TITLE)
    status = need_str(top, "status", ROOT, max_len=16, required=False) or "firing"
    if status not in EVENT_STATUSES:
        raise PayloadError("status", "must be firing or resolved")
    severity = need_str(top, "severity", ROOT, max_len=16, required=False) or "medium"
    if severity not in SEVERITIES:
        raise PayloadError("severity", f"must be one of {', '.join(SEVERITIES)}")
    fingerprint = need_str(top, "fingerprint", ROOT, max_len=MAX_FINGERPRINT, required=False)
    labels = _map(top, "labels")
    annotations = _map(top, "annotations")
    url = need_str(top, "url", ROOT, max_len=MAX_EVENT_URL, required=False)
    if url is not None and not is_http_url(url):
        raise PayloadError("url", "must be an absolute http or https URL")
    return AlertSignal(
        source="events",
        fingerprint=fingerprint or digest([service, title], 16),
        status=status,
        severity=severity,
        title=title,
        service=service,
        labels=labels,
        annotations=annotations,
        url=url,
    )


def _map(top: dict[str, object], key: str) -> dict[str, str]:
    value = top.get(key)
    return {} if value is None else string_map(value, key, max_entries=MAX_EVENT_ENTRIES)
