"""PagerDuty Events API v2 (``/v2/enqueue``) bodies into a routing key and an AlertSignal."""

from __future__ import annotations

import json
import re

from .. import AlertSignal
from .common import (
    MAX_ENTRIES,
    ROOT,
    PayloadError,
    check_key,
    digest,
    index,
    join,
    link,
    need_object,
    need_str,
    require_str,
    timestamp,
    type_name,
)

# PagerDuty's integration keys are exactly 32 characters and PagerDuty itself refuses any other
# length. We are more tolerant on purpose: 1-64 characters of [A-Za-z0-9_-], so that keys we
# issue ourselves, or test keys, need not mimic PagerDuty's format.
_ROUTING_KEY_RE = re.compile(r"[A-Za-z0-9_-]{1,64}")
ACTIONS = {"trigger": "firing", "acknowledge": "acknowledged", "resolve": "resolved"}
PD_SEVERITIES = {"critical": "critical", "error": "high", "warning": "medium", "info": "low"}
MAX_DEDUP_KEY = 255      # PagerDuty's limit
MAX_SUMMARY = 1024       # PagerDuty's limit
MAX_DETAIL = 1024        # custom_details values are cut to this length, not refused
MAX_DETAIL_DEPTH = 8     # custom_details nested deeper than this is refused
_LABEL_FIELDS = ("source", "component", "group", "class")


def parse_pagerduty(body: object) -> tuple[str, AlertSignal]:
    """An Events API v2 body as ``(routing_key, signal)``.

    ``acknowledge`` and ``resolve`` need only ``routing_key``, ``dedup_key`` and ``event_action``;
    like PagerDuty, any ``payload`` they carry is ignored. A ``trigger`` without ``dedup_key``
    gets a stable one: sha256 of the JSON array ``[routing_key, summary, source]``, 32 hex chars."""
    top = need_object(body, ROOT)
    routing_key = require_str(top, "routing_key", ROOT, max_len=64)
    if not _ROUTING_KEY_RE.fullmatch(routing_key):
        raise PayloadError("routing_key", "must be 1-64 characters of A-Z, a-z, 0-9, _ and -")
    action = require_str(top, "event_action", ROOT, max_len=16)
    if action not in ACTIONS:
        raise PayloadError("event_action", "must be trigger, acknowledge or resolve")
    url = link(top, "client_url", ROOT)
    if action != "trigger":
        dedup_key = require_str(top, "dedup_key", ROOT, max_len=MAX_DEDUP_KEY)
        return routing_key, AlertSignal(source="pagerduty", fingerprint=dedup_key, status=ACTIONS[action],
                                        severity="medium", title=dedup_key, url=url)

    if top.get("payload") is None:
        raise PayloadError("payload", "is required for trigger")
    payload = need_object(top["payload"], "payload")
    dedup_key = need_str(top, "dedup_key", ROOT, max_len=MAX_DEDUP_KEY, required=False)
    summary = require_str(payload, "summary", "payload", max_len=MAX_SUMMARY)
    source = require_str(payload, "source", "payload")
    severity = require_str(payload, "severity", "payload", max_len=16)
    if severity not in PD_SEVERITIES:
        raise PayloadError("payload.severity", "must be critical, error, warning or info")
    labels: dict[str, str] = {}
    for name in _LABEL_FIELDS:
        value = need_str(payload, name, "payload", required=False, allow_empty=True)
        if value:
            labels[name] = value
    starts_at = timestamp(payload, "timestamp", "payload", required=False)
    annotations = {"summary": summary}
    if payload.get("custom_details") is not None:
        details = flatten_details(payload["custom_details"], "payload.custom_details")
        annotations.update((k, v) for k, v in details.items() if k != "summary")
    return routing_key, AlertSignal(
        source="pagerduty",
        fingerprint=dedup_key or digest([routing_key, summary, source], 32),
        status="firing",
        severity=PD_SEVERITIES[severity],
        title=summary,
        service=labels.get("component") or source,
        labels=labels,
        annotations=annotations,
        starts_at=starts_at,
        url=url,
    )


def flatten_details(value: object, path: str) -> dict[str, str]:
    """``custom_details`` as flat string annotations: nested keys joined with ``.``, list items as
    ``key[i]``, scalars in their JSON spelling, every value cut to MAX_DETAIL characters."""
    need_object(value, path)
    out: dict[str, str] = {}
    _flatten(value, "", path, out, 0)
    return out


def _flatten(value: object, key: str, path: str, out: dict[str, str], depth: int) -> None:
    if depth > MAX_DETAIL_DEPTH:
        raise PayloadError(path, f"nests deeper than {MAX_DETAIL_DEPTH} levels")
    if isinstance(value, dict) and value:
        for name, item in value.items():
            if not isinstance(name, str):
                raise PayloadError(path, "has a key that is not a string")
            if not name and not key:
                raise PayloadError(path, "has an empty key")
            _flatten(item, f"{key}.{name}" if key else name, join(path, name), out, depth + 1)
        return
    if isinstance(value, list) and value:
        for i, item in enumerate(value):
            _flatten(item, f"{key}[{i}]", index(path, i), out, depth + 1)
        return
    check_key(key, path)
    if len(out) >= MAX_ENTRIES:
        raise PayloadError("payload.custom_details", f"has more than {MAX_ENTRIES} values")
    out[key] = _scalar(value, path)[:MAX_DETAIL]


def _scalar(value: object, path: str) -> str:
    if isinstance(value, str):
        return value
    if value is None or isinstance(value, (bool, int, float, dict, list)):
        try:
            return json.dumps(value)  # true / false / null / 1.5 / NaN / {} / []
        except ValueError:  # an int too long to print; json.loads never makes one
            raise PayloadError(path, "is a number too large to read") from None
    raise PayloadError(path, f"must be a JSON value, not {type_name(value)}")


def parse_change(body: object) -> tuple[str, dict[str, object]]:
    """A Change Events API body (``/v2/change/enqueue``) as ``(routing_key, deploy record)``.

    PagerDuty change events say "something changed" (a deploy, a config push, a feature flag): they
    are commit context for diagnosis, never an alert. They have no commit id, so the record's ``sha``
    is a digest of the event (40 hex digits): sending the same event twice records it once."""
    top = need_object(body, ROOT)
    routing_key = require_str(top, "routing_key", ROOT, max_len=64)
    if not _ROUTING_KEY_RE.fullmatch(routing_key):
        raise PayloadError("routing_key", "must be 1-64 characters of A-Z, a-z, 0-9, _ and -")
    if top.get("payload") is None:
        raise PayloadError("payload", "is required")
    payload = need_object(top["payload"], "payload")
    summary = require_str(payload, "summary", "payload", max_len=MAX_SUMMARY)
    source = need_str(payload, "source", "payload", required=False)
    when = timestamp(payload, "timestamp", "payload", required=False)
    lines = [summary]
    if payload.get("custom_details") is not None:
        details = flatten_details(payload["custom_details"], "payload.custom_details")
        lines += [f"{k}: {v}" for k, v in sorted(details.items())][:20]
    record: dict[str, object] = {"sha": digest([routing_key, summary, source, when], 40),
                                 "message": "\n".join(lines)[:4000]}
    if when is not None:
        record["time"] = when
    if source:
        record["service"] = source[:64]
    return routing_key, record
