"""Classification: status, health score, anomaly and trend of simulated traffic on a controllable clock."""

from __future__ import annotations

import math
import random
from typing import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from alertengine.sdk import HealthReport, Monitor, Thresholds
from alertengine.sdk.scoring import Anomaly, assess, band, component
from alertengine.sdk.window import Summary
from tests.sdk.test_window import FakeClock

Latency = Callable[[random.Random], float]
Status = Callable[[random.Random], int]


def normal_latency(rng: random.Random) -> float:
    return rng.lognormvariate(math.log(40.0), 0.5)


def long_tail_latency(rng: random.Random) -> float:
    """Mostly quick, with 3 % of requests taking 1.5–4 s: P95 stays low, P99 is seconds."""
    return rng.uniform(1500.0, 4000.0) if rng.random() < 0.03 else rng.lognormvariate(math.log(80.0), 0.6)


def ok(rng: random.Random) -> int:
    return 200


class Traffic:
    """Requests at a steady rate on a fake clock, with a report every ``every`` seconds."""

    def __init__(self, **options: object) -> None:
        self.clock = FakeClock()
        self.rng = random.Random(42)
        self.monitor = Monitor(clock=self.clock, service_name="checkout", instance_id="i-1",
                               **options)  # type: ignore[arg-type]

    def run(self, seconds: float, latency: Latency = normal_latency, status: Status = ok, rate: int = 20,
            every: float = 5.0) -> list[HealthReport]:
        reports = []
        per_report = int(every * rate)
        for i in range(int(seconds * rate)):
            self.monitor.record("GET", "/checkout", status(self.rng), latency(self.rng))
            self.clock.advance(1.0 / rate)
            if (i + 1) % per_report == 0:
                reports.append(self.monitor.report())
        return reports


def share(code: int, fraction: float) -> Status:
    return lambda rng: code if rng.random() < fraction else 200


SCENARIOS = [
    # name, latency, status, count_4xx, expected status, alert types that must be present
    ("healthy", normal_latency, ok, False, "ok", set()),
    ("latency-only degradation", lambda rng: rng.uniform(2800.0, 3200.0), ok, False, "critical",
     {"latency_spike", "baseline_deviation"}),
    ("error burst", normal_latency, share(500, 0.2), False, "critical", {"error_anomaly"}),
    ("4xx storm, 4xx not counted", normal_latency, share(404, 0.4), False, "ok", set()),
    ("4xx storm, 4xx counted", normal_latency, share(404, 0.4), True, "critical", {"error_anomaly"}),
]


@pytest.mark.parametrize(("name", "latency", "status", "count_4xx", "expected", "alerts"), SCENARIOS,
                         ids=[s[0] for s in SCENARIOS])
def test_classification_after_a_learned_healthy_baseline(name: str, latency: Latency, status: Status,
                                                         count_4xx: bool, expected: str, alerts: set[str]) -> None:
    traffic = Traffic(count_4xx=count_4xx)
    before = traffic.run(120)
    assert {r.status for r in before} == {"ok"} and before[-1].anomaly.ready
    report = traffic.run(60, latency, status)[-1]
    doc = report.to_dict()
    assert report.status == expected == doc["status"] == doc["health_score"]["status"]
    assert alerts <= {a["type"] for a in doc["alerts"]}
    assert (doc["alerts"] == []) == (expected == "ok")
    assert band(doc["health_score"]["score"]) == expected


def test_latency_only_degradation_leaves_the_error_component_untouched() -> None:
    traffic = Traffic()
    traffic.run(120)
    doc = traffic.run(60, lambda rng: 3000.0)[-1].to_dict()
    assert doc["metrics"]["error_rate"] == 0.0 and doc["health_score"]["components"]["errors"] == 100.0
    assert doc["health_score"]["components"]["latency"] < 50 and doc["metrics"]["overall_p95_ms"] == 3000.0
    [spike] = [a for a in doc["alerts"] if a["type"] == "latency_spike"]
    assert spike["severity"] == "critical" and spike["baseline_comparison"]["current_value"] == 3000.0


def test_4xx_storm_shows_in_status_classes_whether_or_not_it_counts() -> None:
    for count_4xx, error_rate in ((False, 0.0), (True, pytest.approx(0.4, abs=0.05))):
        traffic = Traffic(count_4xx=count_4xx)
        doc = traffic.run(60, normal_latency, share(404, 0.4))[-1].to_dict()
        assert doc["metrics"]["error_rate"] == error_rate
        assert doc["metrics"]["status_classes"]["4xx"] == pytest.approx(0.4 * doc["metrics"]["sample_size"], rel=0.15)
        assert doc["counts_4xx_as_errors"] is count_4xx


def test_a_healthy_long_tail_stays_ok_for_ten_minutes() -> None:
    traffic = Traffic()
    reports = traffic.run(600, long_tail_latency)
    assert {r.status for r in reports} == {"ok"}
    assert max(r.anomaly.score for r in reports) < 3.0
    last = reports[-1].stats.overall
    assert last.p95_ms is not None and last.p99_ms is not None and last.p95_ms < 1000.0 < 1500.0 < last.p99_ms


def test_a_fourfold_latency_rise_under_the_thresholds_is_an_anomaly() -> None:
    traffic = Traffic()
    traffic.run(180)
    report = traffic.run(60, lambda rng: 4 * normal_latency(rng))[-1]
    doc = report.to_dict()
    assert doc["metrics"]["overall_p95_ms"] < 1000.0 and doc["health_score"]["components"]["latency"] > 75
    assert report.anomaly.latency >= 3.0 and report.status in ("warning", "critical")
    [alert] = [a for a in doc["alerts"] if a["type"] == "baseline_deviation"]
    assert alert["triggered_by"] == "baseline"
    assert alert["baseline_comparison"]["current_value"] > 3 * alert["baseline_comparison"]["baseline_value"]


def test_the_baseline_says_nothing_until_warmed_up() -> None:
    traffic = Traffic()
    early = traffic.run(55, lambda rng: rng.uniform(10.0, 5000.0))
    assert all(r.anomaly.score == 0.0 and not r.anomaly.ready for r in early)
    assert early[-1].to_dict()["anomaly"]["baseline_p95_ms"] is None


def test_a_long_outage_is_not_learned_as_normal() -> None:
    traffic = Traffic()
    traffic.run(120)
    reports = traffic.run(600, lambda rng: 6 * normal_latency(rng))
    assert reports[-1].anomaly.latency >= 6.0
    assert all(r.status != "ok" for r in reports[12:])


def test_recovery_turns_the_trend_to_improving_then_stable() -> None:
    traffic = Traffic()
    traffic.run(120)
    during = traffic.run(60, lambda rng: 3000.0)
    after = traffic.run(150)
    assert "degrading" in [r.trend for r in during]
    trends = [r.trend for r in after]
    assert "improving" in trends
    assert "degrading" not in trends[trends.index("improving"):]
    assert after[-1].status == "ok" and after[-1].trend == "stable"
    scores = [r.assessment.score for r in after]
    assert scores[-1] > scores[0]


# ---- formulas ---------------------------------------------------------------------------------

@pytest.mark.parametrize(("value", "expected"), [
    (0.0, 100.0), (500.0, 87.5), (1000.0, 75.0), (1500.0, 62.5), (2000.0, 50.0), (5000.0, 25.0),
    (8000.0, 0.0), (60_000.0, 0.0),
])
def test_component_curve_passes_through_its_anchors(value: float, expected: float) -> None:
    assert component(value, 1000.0, 2000.0, 8000.0) == pytest.approx(expected)


@settings(max_examples=300, deadline=None)
@given(st.floats(min_value=0, max_value=1e6), st.floats(min_value=0, max_value=1e6))
def test_component_never_rises_with_the_value(a: float, b: float) -> None:
    low, high = sorted((a, b))
    assert component(low, 1000.0, 2000.0, 8000.0) >= component(high, 1000.0, 2000.0, 8000.0)


@settings(max_examples=300, deadline=None)
@given(st.floats(min_value=0.01, max_value=1e5), st.integers(min_value=1, max_value=10_000),
       st.floats(min_value=0, max_value=1), st.floats(min_value=0, max_value=50))
def test_status_is_always_the_band_of_the_score_which_is_the_worst_component(
        p95: float, requests: int, error_share: float, anomaly: float) -> None:
    errors = round(requests * error_share)
    summary = Summary(requests, errors, p95, p95, p95, p95)
    verdict = assess(summary, Anomaly(anomaly, anomaly, 0.0, True, 1.0, 0.0), Thresholds())
    assert verdict.components is not None and verdict.score is not None
    assert verdict.score == min(verdict.components.latency, verdict.components.errors, verdict.components.anomalies)
    assert verdict.status == band(verdict.score)
    assert {f.kind for f in verdict.findings} == {
        kind for kind, score in (("latency", verdict.components.latency), ("errors", verdict.components.errors),
                                 ("anomaly", verdict.components.anomalies)) if score < 75}


@pytest.mark.parametrize("bad", [dict(p95_warning_ms=2000.0, p95_critical_ms=1000.0), dict(error_rate_warning=0.0),
                                 dict(error_rate_critical=1.0), dict(anomaly_critical=float("inf"))])
def test_thresholds_refuse_nonsense(bad: dict) -> None:
    with pytest.raises(ValueError):
        Thresholds(**bad)
