"""Signals: what the poller and the ingest endpoints observe, before policy decides anything.

Both are plain frozen data. The poller produces one ``HealthReading`` per poll of a service; the
ingest endpoints turn each monitoring tool's payload into ``AlertSignal`` values. Policy
(``policy.py``) then decides whether an incident exists."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

SEVERITIES = ("critical", "high", "medium", "low")
# How a poll ended. Only "answered" carries the service's own view; the others are signals of
# their own and never read as healthy.
OUTCOMES = ("answered", "unreachable", "timeout", "http_error", "bad_payload")
# The service's self-reported status, normalised.
SELF_STATUSES = ("ok", "warning", "critical", "no_data")


@dataclass(frozen=True)
class HealthReading:
    """One poll of a service's health URL."""

    outcome: str                      # one of OUTCOMES
    format: str                       # "sdk" (our SDK), "hosted" (the hosted product's SDK), "plain" (any URL)
    http_status: int | None = None
    latency_ms: float | None = None   # the poll's own round trip
    status: str | None = None         # one of SELF_STATUSES, when the body says so
    p95_ms: float | None = None
    error_rate: float | None = None   # 0..1
    anomaly_score: float | None = None
    health_score: float | None = None  # 0..100
    sample_size: int | None = None
    detail: str = ""                  # why, in words, for outcomes other than "answered"

    def as_data(self) -> dict[str, object]:
        """The reading as ledger ``data`` (None fields left out)."""
        return {k: v for k, v in self.__dict__.items() if v is not None and v != ""}


@dataclass(frozen=True)
class AlertSignal:
    """One alert from a monitoring tool (Alertmanager, Grafana, PagerDuty, generic events)."""

    source: str                       # "alertmanager" | "grafana" | "pagerduty" | "events"
    fingerprint: str                  # stable identity of the alert at its source (dedup key)
    status: str                       # "firing" | "resolved" | "acknowledged"
    severity: str                     # one of SEVERITIES
    title: str
    service: str | None = None        # service name from the payload (label service/job/app), if any
    labels: Mapping[str, str] = field(default_factory=dict)
    annotations: Mapping[str, str] = field(default_factory=dict)
    starts_at: str | None = None      # RFC 3339, as sent
    ends_at: str | None = None
    url: str | None = None            # generator / dashboard link
    # a smart rule's own account of its alert (rule_id, rule_name, message, metrics_snapshot);
    # empty for the alerts of other sources
    origin: Mapping[str, Any] = field(default_factory=dict)
