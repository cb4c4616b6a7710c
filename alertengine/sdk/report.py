"""The health report and its JSON document (schema version 1), a superset of the hosted product's format.

Hosted fields keep the hosted types and meanings (``status``, ``service_name``, ``instance_id``,
``metrics.{overall_p95_ms, api_p95_ms, webhook_p95_ms, error_rate, anomaly_score, sample_size}``,
``alerts[]``, ``health_score{score, status, trend, components}``, ``adaptive_thresholds``,
``rate_of_change``, ``timestamp``, ``reason``). Ours are added beside them: the ``"sdk":
"alertengine"`` marker and ``window_seconds`` (what the poller keys the format on), P50 / P99 / max,
request rate, status classes, per-route statistics, the anomaly baseline and the thresholds in force.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .scoring import Anomaly, Assessment, Finding, Thresholds
from .window import Summary, WindowStats

SCHEMA_VERSION = 1
_ALERT_TYPES = {"latency": "latency_spike", "errors": "error_anomaly", "anomaly": "baseline_deviation"}


def _ms(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


def _rate(value: float) -> float:
    return round(value, 6)


def _summary_fields(summary: Summary, covered: float) -> dict[str, Any]:
    return {
        "requests": summary.requests,
        "request_rate": round(summary.requests / max(covered, 1.0), 3),
        "error_count": summary.errors,
        "error_rate": _rate(summary.error_rate),
        "p50_ms": _ms(summary.p50_ms),
        "p95_ms": _ms(summary.p95_ms),
        "p99_ms": _ms(summary.p99_ms),
        "max_ms": _ms(summary.max_ms),
        "status_classes": dict(summary.status_classes),
    }


@dataclass(frozen=True)
class HealthReport:
    """Everything the health endpoint says, as of one moment."""

    service_name: str
    instance_id: str
    timestamp: float                  # unix seconds
    window_seconds: float
    bucket_seconds: float
    stats: WindowStats
    assessment: Assessment
    anomaly: Anomaly
    trend: str                        # "improving" | "stable" | "degrading"
    thresholds: Thresholds
    count_4xx: bool
    sdk_failures: int

    @property
    def status(self) -> str:
        return self.assessment.status

    def _alert(self, finding: Finding) -> dict[str, Any]:
        overall, anomaly = self.stats.overall, self.anomaly
        alert: dict[str, Any] = {
            "type": _ALERT_TYPES[finding.kind], "severity": finding.severity, "trend_direction": self.trend,
            "triggered_by": "baseline" if finding.kind == "anomaly" else "absolute_threshold",
            "metric": {"latency": "p95_ms", "errors": "error_rate", "anomaly": "anomaly_score"}[finding.kind],
            "value": round(finding.value, 6), "threshold": finding.threshold,
        }
        if finding.kind == "latency":
            alert["message"] = f"P95 latency ({finding.value:.0f}ms) exceeds {finding.severity} threshold " \
                               f"({finding.threshold:g}ms)"
            baseline, current = anomaly.baseline_p95_ms, finding.value
        elif finding.kind == "errors":
            alert["message"] = f"Error rate elevated: {100 * finding.value:.1f}% ({finding.severity} threshold " \
                               f"{100 * finding.threshold:g}%)"
            baseline = None if anomaly.baseline_error_rate is None else 100 * anomaly.baseline_error_rate
            current = 100 * finding.value
        else:
            part = "P95 latency" if anomaly.latency >= anomaly.errors else "error rate"
            alert["message"] = f"Anomaly score {finding.value:.1f} ({part} against the learned baseline) exceeds " \
                               f"{finding.severity} threshold {finding.threshold:g}"
            baseline, current = (anomaly.baseline_p95_ms, overall.p95_ms) if part == "P95 latency" else (
                None if anomaly.baseline_error_rate is None else 100 * anomaly.baseline_error_rate,
                100 * overall.error_rate)
        over = (finding.value - finding.threshold) / finding.threshold * 100
        alert["reason_for_trigger"] = f"Value ({finding.value:.4g}) exceeds threshold ({finding.threshold:g}) " \
                                      f"by {over:.0f}%."
        if baseline is not None and current is not None:
            alert["baseline_comparison"] = {
                "baseline_value": round(baseline, 3), "current_value": round(current, 3),
                "deviation_pct": round((current - baseline) / baseline * 100, 1) if baseline > 0 else None}
        return alert

    def to_dict(self) -> dict[str, Any]:
        """The JSON document (schema version 1; see the README's SDK section)."""
        stats, overall, verdict, anomaly = self.stats, self.stats.overall, self.assessment, self.anomaly
        covered = stats.covered_seconds
        no_data = verdict.status == "no_data"
        components = {"latency": None, "errors": None, "anomalies": None} if verdict.components is None else {
            "latency": verdict.components.latency, "errors": verdict.components.errors,
            "anomalies": verdict.components.anomalies}
        p95 = overall.p95_ms if overall.p95_ms is not None else 0.0
        doc: dict[str, Any] = {
            "sdk": "alertengine",
            "schema_version": SCHEMA_VERSION,
            "status": verdict.status,
            "reason": "no_data" if no_data else None,
            "service_name": self.service_name,
            "instance_id": self.instance_id,
            "timestamp": int(self.timestamp),
            "window_seconds": self.window_seconds,
            "bucket_seconds": self.bucket_seconds,
            "window_covered_seconds": round(covered, 3),
            "metrics": {
                "overall_p95_ms": _ms(p95),
                "api_p95_ms": _ms(p95),
                "webhook_p95_ms": 0.0,
                "error_rate": _rate(overall.error_rate),
                "anomaly_score": anomaly.score,
                "sample_size": overall.requests,
                "p50_ms": _ms(overall.p50_ms),
                "p99_ms": _ms(overall.p99_ms),
                "max_ms": _ms(overall.max_ms),
                "request_rate": round(stats.request_rate, 3),
                "error_count": overall.errors,
                "status_classes": dict(overall.status_classes),
            },
            "alerts": [self._alert(f) for f in verdict.findings],
            "health_score": {
                "score": verdict.score,
                "status": verdict.status,
                "trend": self.trend,
                "components": components,
            },
            "anomaly": {
                "score": anomaly.score,
                "latency": anomaly.latency,
                "errors": anomaly.errors,
                "baseline_ready": anomaly.ready,
                "baseline_p95_ms": _ms(anomaly.baseline_p95_ms),
                "baseline_error_rate": None if anomaly.baseline_error_rate is None
                else _rate(anomaly.baseline_error_rate),
            },
            "thresholds": self.thresholds.as_dict(),
            "counts_4xx_as_errors": self.count_4xx,
            "routes": [{"method": r.method, "route": r.route, **_summary_fields(r.summary, covered)}
                       for r in stats.routes],
            "sdk_failures": self.sdk_failures,
            "adaptive_thresholds": None,
            "rate_of_change": [],
        }
        return doc

