"""The /health/alerts document: a superset of the hosted product's format, read by the poller as "sdk"."""

from __future__ import annotations

import json
from typing import Any

import pytest

from alertengine.sdk import SCHEMA_VERSION
from alertengine.signals.poller import read_health
from tests.conftest import FIXTURES
from tests.sdk.test_scoring import Traffic, normal_latency, share

HOSTED = FIXTURES / "hosted-sdk"
# with no data ours says "no score" (null), where the hosted product says 100
NULL_WHEN_IDLE = {"health_score.score", "health_score.components.latency", "health_score.components.errors",
                  "health_score.components.anomalies"}


def json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    return {str: "string", list: "array", dict: "object"}[type(value)]


def missing_or_retyped(hosted: Any, ours: Any, where: str = "") -> list[str]:
    """Paths of the hosted document that ours lacks or types differently (null in hosted matches anything)."""
    problems = []
    if isinstance(hosted, dict):
        if not isinstance(ours, dict):
            return [f"{where or '.'}: object expected"]
        for key, value in hosted.items():
            path = f"{where}.{key}" if where else key
            if key not in ours:
                problems.append(f"{path}: missing")
            elif value is not None and json_type(ours[key]) != json_type(value) and \
                    not (ours[key] is None and path in NULL_WHEN_IDLE):
                problems.append(f"{path}: {json_type(ours[key])}, hosted has {json_type(value)}")
            elif isinstance(value, dict):
                problems += missing_or_retyped(value, ours[key], path)
    return problems


def document(scenario: str) -> dict[str, Any]:
    traffic = Traffic()
    if scenario == "idle":
        return traffic.monitor.report().to_dict()
    traffic.run(120)
    if scenario == "slow":
        return traffic.run(60, lambda rng: 2500.0, share(500, 0.1))[-1].to_dict()
    if scenario == "errors":
        return traffic.run(60, normal_latency, share(500, 0.2))[-1].to_dict()
    return traffic.run(60)[-1].to_dict()


@pytest.mark.parametrize("name", ["healthy", "errors", "slow", "idle"])
def test_every_hosted_field_is_there_with_its_type(name: str) -> None:
    hosted = json.loads((HOSTED / f"{name}.json").read_text())
    ours = document(name)
    assert missing_or_retyped(hosted, ours) == []
    for hosted_alert in hosted["alerts"]:
        matching = [a for a in ours["alerts"] if a["type"] == hosted_alert["type"]]
        assert matching, hosted_alert["type"]
        assert set(hosted_alert) <= set(matching[0]), set(hosted_alert) - set(matching[0])


@pytest.mark.parametrize(("name", "status"), [("healthy", "ok"), ("errors", "critical"), ("slow", "critical"),
                                              ("idle", "no_data")])
def test_the_poller_reads_our_document_as_sdk_with_every_figure(name: str, status: str) -> None:
    doc = document(name)
    reading = read_health(200, json.dumps(doc).encode(), "application/json", 2.0)
    assert (reading.outcome, reading.format, reading.status) == ("answered", "sdk", status)
    assert reading.p95_ms == doc["metrics"]["overall_p95_ms"]
    assert reading.error_rate == doc["metrics"]["error_rate"]
    assert reading.anomaly_score == doc["metrics"]["anomaly_score"]
    assert reading.health_score == doc["health_score"]["score"]
    assert reading.sample_size == doc["metrics"]["sample_size"]


def test_our_own_fields_are_there() -> None:
    doc = document("errors")
    assert doc["sdk"] == "alertengine" and doc["schema_version"] == SCHEMA_VERSION
    assert doc["window_seconds"] == 60.0 and doc["bucket_seconds"] == 5.0
    metrics = doc["metrics"]
    assert metrics["p50_ms"] <= metrics["overall_p95_ms"] <= metrics["p99_ms"] <= metrics["max_ms"]
    assert metrics["request_rate"] == pytest.approx(20.0, rel=0.05)
    assert metrics["error_count"] == metrics["status_classes"]["5xx"] > 0
    [route] = doc["routes"]
    assert route["method"] == "GET" and route["route"] == "/checkout" and route["requests"] == metrics["sample_size"]
    assert doc["anomaly"]["baseline_ready"] is True and doc["anomaly"]["score"] == metrics["anomaly_score"]
    assert set(doc["thresholds"]) == {"p95_warning_ms", "p95_critical_ms", "error_rate_warning",
                                      "error_rate_critical", "anomaly_warning", "anomaly_critical"}
    assert doc["service_name"] == "checkout" and doc["instance_id"] == "i-1"
    assert isinstance(doc["timestamp"], int) and doc["sdk_failures"] == 0
