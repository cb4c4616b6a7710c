"""Prometheus Alertmanager webhook (v4) bodies into AlertSignal values; also the group reader
Grafana's webhook shares."""

from __future__ import annotations

from typing import Mapping, Sequence

from .. import AlertSignal
from .common import (
    MAX_ENTRIES,
    MAX_FINGERPRINT,
    MAX_KEY,
    MAX_VALUE,
    ROOT,
    PayloadError,
    digest,
    index,
    join,
    is_valid_timestamp,
    link,
    link_of,
    need_list,
    need_object,
    need_str,
    string_map,
    timestamp,
)

MAX_ALERTS = 1000
ZERO_TIME = "0001-01-01T00:00:00Z"   # Go's zero time: Alertmanager's "no end yet"
ALERT_STATUSES = ("firing", "resolved")
_SEVERITY_WORDS: dict[str, str] = {
    **dict.fromkeys(("critical", "page", "p0", "p1"), "critical"),
    **dict.fromkeys(("error", "high", "major"), "high"),
    **dict.fromkeys(("warning", "warn", "medium", "minor"), "medium"),
    **dict.fromkeys(("info", "low", "none", "unknown"), "low"),
}
_SERVICE_LABELS = ("service", "job", "app")
UNTITLED = "untitled alert"


def parse_alertmanager(body: object) -> list[AlertSignal]:
    """An Alertmanager webhook body (``version`` "4") as one signal per alert, in order."""
    return parse_group(body, version="4", source="alertmanager", url_keys=("generatorURL",))


def parse_group(body: object, *, version: str, source: str, url_keys: Sequence[str]) -> list[AlertSignal]:
    """A notification group: check ``version``, then read every alert. The group's own ``status``
    is ignored: a partly resolved group stays "firing" while its alerts carry their own status.
    ``url_keys`` lists the per-alert link fields in order of preference."""
    top = need_object(body, ROOT)
    sent = top.get("version")
    if sent != version:
        shown = repr(sent) if isinstance(sent, str) and len(sent) <= 16 else "another value"
        raise PayloadError("version", f'must be "{version}", not {shown}')
    if "alerts" not in top:
        raise PayloadError("alerts", "is required")
    alerts = need_list(top["alerts"], "alerts", MAX_ALERTS)
    out = []
    for i, item in enumerate(alerts):
        signal = _plain_alert(item, source, url_keys) if type(item) is dict else None
        # anything out of the ordinary takes the full reading, which names the field that is wrong
        out.append(signal if signal is not None else _alert(item, index("alerts", i), source, url_keys))
    return out


def _plain_map(value: object) -> dict[str, str] | None:
    """A labels / annotations object that :func:`string_map` accepts as it is (a copy), or None
    when it needs the full check (which may accept it still, or name what is wrong)."""
    if type(value) is not dict or len(value) > MAX_ENTRIES:
        return None
    for key, item in value.items():
        if type(key) is not str or not key or len(key) > MAX_KEY or not key.isascii() \
                or type(item) is not str or len(item) > MAX_VALUE:
            return None
    return dict(value)


def _plain_alert(alert: dict, source: str, url_keys: Sequence[str]) -> AlertSignal | None:
    """The common case of :func:`_alert` — every field present and of its plain type — read without
    building the JSON paths an error would name; None for anything else, which ``_alert`` reads.
    Whatever this accepts, ``_alert`` accepts and reads the same."""
    status = alert.get("status")
    if type(status) is not str or status not in ALERT_STATUSES:
        return None
    labels = _plain_map(alert.get("labels"))
    if labels is None:
        return None
    raw_annotations = alert.get("annotations")
    annotations = {} if raw_annotations is None else _plain_map(raw_annotations)
    starts_at, ends_at = alert.get("startsAt"), alert.get("endsAt")
    if annotations is None or not is_valid_timestamp(starts_at) or not is_valid_timestamp(ends_at):
        return None
    fingerprint = alert.get("fingerprint")
    if fingerprint is not None and (type(fingerprint) is not str or len(fingerprint) > MAX_FINGERPRINT):
        return None
    url = None
    for key in url_keys:
        text = alert.get(key)
        if text is None:
            continue
        if type(text) is not str or len(text) > MAX_VALUE:
            return None
        if url is None:
            url = link_of(text)
    for key in alert:
        if type(key) is not str:
            return None
    return _signal(source, status, labels, annotations, fingerprint, starts_at, ends_at, url)


def _alert(item: object, path: str, source: str, url_keys: Sequence[str]) -> AlertSignal:
    alert = need_object(item, path)
    status = need_str(alert, "status", path, max_len=16)
    if status not in ALERT_STATUSES:
        raise PayloadError(join(path, "status"), "must be firing or resolved")
    if alert.get("labels") is None:
        raise PayloadError(join(path, "labels"), "is required")
    labels = string_map(alert["labels"], join(path, "labels"))
    raw_annotations = alert.get("annotations")
    annotations = {} if raw_annotations is None else string_map(raw_annotations, join(path, "annotations"))
    starts_at = timestamp(alert, "startsAt", path, required=True)
    ends_at = timestamp(alert, "endsAt", path, required=True)
    # An empty fingerprint reads as a missing one.
    fingerprint = need_str(alert, "fingerprint", path, max_len=MAX_FINGERPRINT, required=False, allow_empty=True)
    urls = [link(alert, key, path) for key in url_keys]
    return _signal(source, status, labels, annotations, fingerprint, starts_at, ends_at,
                   next((u for u in urls if u), None))


def _signal(source: str, status: str, labels: dict[str, str], annotations: dict[str, str], fingerprint: str | None,
            starts_at: str, ends_at: str, url: str | None) -> AlertSignal:
    """The signal of one checked alert (an empty fingerprint reads as a missing one)."""
    return AlertSignal(
        source=source,
        fingerprint=fingerprint or labels_fingerprint(labels),
        status=status,
        severity=map_severity(labels.get("severity")),
        title=annotations.get("summary") or labels.get("alertname") or UNTITLED,
        service=service_of(labels),
        labels=labels,
        annotations=annotations,
        starts_at=starts_at,
        ends_at=None if ends_at == ZERO_TIME else ends_at,
        url=url,
    )


def map_severity(word: str | None) -> str:
    """A free-form severity label onto SEVERITIES (case-insensitive); unknown or missing → medium."""
    if word is None:
        return "medium"
    return _SEVERITY_WORDS.get(word.strip().lower(), "medium")


def service_of(labels: Mapping[str, str]) -> str | None:
    """The first non-empty of the ``service``, ``job`` and ``app`` labels."""
    for key in _SERVICE_LABELS:
        value = labels.get(key)
        if value:
            return value
    return None


def labels_fingerprint(labels: Mapping[str, str]) -> str:
    """A stable stand-in for a missing fingerprint: sha256 of the sorted label set, 16 hex chars."""
    return digest(sorted(labels.items()), 16)
