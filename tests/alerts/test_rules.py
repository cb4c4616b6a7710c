"""Smart rules judged alone: every operator, each condition type, validation. The expectations are
written out here, not derived from the product's code."""

from __future__ import annotations

import pytest

from alertengine.alerts.rules import (
    Baseline,
    SmartRule,
    check_definition,
    judge_events,
    judge_value,
)
from alertengine.errors import FieldError


def rule(**definition: object) -> SmartRule:
    return SmartRule(7, "t", "R", True, check_definition(definition))


# (operator, value, threshold, fires)
OPERATOR_CASES = [
    (">", 81, 80, True), (">", 80, 80, False), (">", 79, 80, False),
    ("<", 79, 80, True), ("<", 80, 80, False), ("<", 81, 80, False),
    (">=", 80, 80, True), (">=", 81, 80, True), (">=", 79.999, 80, False),
    ("<=", 80, 80, True), ("<=", 79, 80, True), ("<=", 80.001, 80, False),
    ("==", 80, 80, True), ("==", 80.0, 80, True), ("==", 80.0000001, 80, False), ("==", 79, 80, False),
    (">", -1, -2, True), ("<", -3, -2, True),
]


@pytest.mark.parametrize("op,value,threshold,fires", OPERATOR_CASES)
def test_threshold_operators(op: str, value: float, threshold: float, fires: bool) -> None:
    r = rule(condition_type="threshold", metric="risk_score", operator=op, threshold=threshold)
    verdict = judge_value(r, value)
    assert verdict.fired is fires


def test_threshold_message_reads_like_the_seed() -> None:
    r = SmartRule(42, "t", "High Risk Action Alert", True,
                  check_definition({"condition_type": "threshold", "metric": "risk_score", "operator": ">=",
                                    "threshold": 80, "severity": "high"}))
    assert judge_value(r, 85).message == "High Risk Action Alert: risk_score is 85 (threshold: >= 80)"


def test_defaults_are_filled_in() -> None:
    d = check_definition({"condition_type": "threshold", "metric": "x", "operator": ">", "threshold": 1})
    assert (d["severity"], d["cooldown_minutes"], d["max_alerts_per_hour"]) == ("medium", 5.0, 20)


# (value, historical average, sensitivity, fires): off by at least (1 - sensitivity) of the average
AVERAGE_CASES = [
    (50, 50, 0.8, False), (59, 50, 0.8, False), (60, 50, 0.8, True), (40, 50, 0.8, True), (41, 50, 0.8, False),
    (51, 50, 1.0, True), (50, 50, 1.0, False), (99, 50, 0.0, False), (100, 50, 0.0, True), (1, 0, 0.5, True),
    (0, 0, 0.5, False),
]


@pytest.mark.parametrize("value,average,sensitivity,fires", AVERAGE_CASES)
def test_anomaly_against_a_historical_average(value: float, average: float, sensitivity: float, fires: bool) -> None:
    r = rule(condition_type="anomaly", metric="actions_per_minute", sensitivity=sensitivity, historical_average=average)
    assert judge_value(r, value).fired is fires


def learned(values: list[float]) -> Baseline:
    b = Baseline()
    for v in values:
        b.add(v)
    return b


def test_anomaly_learns_first_and_then_judges_by_deviations() -> None:
    r = rule(condition_type="anomaly", metric="latency", sensitivity=0.75)   # z = 1 + 4 * 0.25 = 2
    history = [10, 12, 10, 12, 10, 12, 10, 12, 10]      # nine values: not enough
    assert not judge_value(r, 1000, learned(history)).fired
    assert "still learning" in judge_value(r, 1000, learned(history)).message
    history.append(12)                                   # ten: mean 11, sample std ~1.054
    b = learned(history)
    assert abs(b.mean - 11) < 1e-9 and abs(b.std - 1.0540925533894598) < 1e-9
    assert not judge_value(r, 13.1, b).fired             # 2.1 off: 1.99 deviations
    assert judge_value(r, 13.2, b).fired                 # 2.2 off: 2.09 deviations
    assert judge_value(r, 8.8, b).fired                  # below counts too
    assert not judge_value(r, 11, b).fired


def test_a_constant_history_makes_any_other_value_anomalous() -> None:
    r = rule(condition_type="anomaly", metric="m", sensitivity=0.1)
    b = learned([5.0] * 12)
    assert judge_value(r, 5.0001, b).fired
    assert not judge_value(r, 5.0, b).fired


def events(*pairs: tuple[float, str]) -> list[tuple[float, str]]:
    return list(pairs)


def test_count_pattern_counts_only_its_event_within_the_window() -> None:
    r = rule(condition_type="pattern", pattern={"event": "action.denied", "count": 3, "window_minutes": 10})
    now = 10_000.0
    seen = events((now - 601, "action.denied"), (now - 300, "action.denied"), (now - 200, "login_failed"),
                  (now - 100, "action.denied"))
    assert not judge_events(r, seen, now).fired             # the first is 10 min 1 s old
    seen.append((now, "action.denied"))
    verdict = judge_events(r, seen, now)
    assert verdict.fired and verdict.value == 3
    assert verdict.message == "R: action.denied seen 3 times within 10 minutes (threshold: 3)"


@pytest.mark.parametrize("names,fires", [
    (["a", "b", "c"], True),
    (["a", "x", "b", "y", "c"], True),          # others may come between
    (["b", "a", "c"], False),                    # out of order
    (["a", "b", "c", "x"], False),               # the newest event must complete it
    (["a", "c"], False),
    (["a", "a", "b", "b", "c"], True),
])
def test_sequence_pattern(names: list[str], fires: bool) -> None:
    r = rule(condition_type="pattern", pattern={"sequence": ["a", "b", "c"], "window_minutes": 5})
    now = 1000.0
    seen = [(now - len(names) + i + 1, n) for i, n in enumerate(names)]
    assert judge_events(r, seen, now).fired is fires


def test_a_sequence_must_fit_in_its_window() -> None:
    r = rule(condition_type="pattern", pattern={"sequence": ["login_failed"] * 3, "window_minutes": 5})
    now = 1000.0
    assert not judge_events(r, [(now - 301, "login_failed"), (now - 10, "login_failed"), (now, "login_failed")], now).fired
    assert judge_events(r, [(now - 299, "login_failed"), (now - 10, "login_failed"), (now, "login_failed")], now).fired


@pytest.mark.parametrize("definition,field", [
    ({"condition_type": "threshold", "metric": "x", "operator": ">"}, "rule_definition.threshold"),
    ({"condition_type": "threshold", "metric": "x", "operator": "=>", "threshold": 1}, "rule_definition.operator"),
    ({"condition_type": "threshold", "operator": ">", "threshold": 1}, "rule_definition.metric"),
    ({"condition_type": "threshold", "metric": "system.gpu_percent", "operator": ">", "threshold": 1},
     "rule_definition.metric"),
    ({"condition_type": "anomaly", "metric": "x", "sensitivity": 1.5}, "rule_definition.sensitivity"),
    ({"condition_type": "anomaly", "metric": "x"}, "rule_definition.sensitivity"),
    ({"condition_type": "anomaly", "metric": "x", "sensitivity": 0.5, "threshold": 3}, "rule_definition.threshold"),
    ({"condition_type": "pattern", "pattern": {"event": "a", "window_minutes": 5}}, "rule_definition.pattern.count"),
    ({"condition_type": "pattern", "pattern": {"event": "a", "count": 2}}, "rule_definition.pattern.window_minutes"),
    ({"condition_type": "pattern", "pattern": {"event": "a", "count": 2, "sequence": ["a", "b"],
                                               "window_minutes": 5}}, "rule_definition.pattern"),
    ({"condition_type": "pattern", "pattern": {"sequence": ["a"], "window_minutes": 5}},
     "rule_definition.pattern.sequence"),
    ({"condition_type": "pattern", "metric": "x", "pattern": {"event": "a", "count": 1, "window_minutes": 1}},
     "rule_definition.metric"),
    ({"condition_type": "threshold", "metric": "x", "operator": ">", "threshold": 1, "severity": "urgent"},
     "rule_definition.severity"),
    ({"condition_type": "threshold", "metric": "x", "operator": ">", "threshold": 1, "service": "api"},
     "rule_definition.service"),
    ({"condition_type": "threshold", "metric": "x", "operator": ">", "threshold": 1e300},
     "rule_definition.threshold"),
    ({"condition_type": "regex"}, "rule_definition.condition_type"),
])
def test_bad_definitions_name_the_field(definition: dict, field: str) -> None:
    with pytest.raises(FieldError) as caught:
        check_definition(definition)
    assert caught.value.field == field


# --- the incremental pattern state agrees with the plain judgement --------------------------------

from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from alertengine.alerts.rules import PatternState  # noqa: E402

NAMES = st.sampled_from(["a", "b", "c", "x"])


@settings(max_examples=300, deadline=None)
@given(steps=st.lists(st.tuples(st.integers(0, 400), NAMES), max_size=60),
       kind=st.sampled_from(["count", "sequence", "repeat"]))
def test_pattern_state_fires_exactly_when_the_events_since_the_last_match_do(steps: list, kind: str) -> None:
    pattern = {"count": {"event": "a", "count": 3, "window_minutes": 5},
               "sequence": {"sequence": ["a", "b", "c"], "window_minutes": 5},
               "repeat": {"sequence": ["a", "a", "b"], "window_minutes": 5}}[kind]
    r = rule(condition_type="pattern", pattern=pattern)
    state = PatternState(r)
    now, since = 0.0, []
    for gap, name in steps:
        now += gap
        since.append((now, name))
        expected = judge_events(r, since, now).fired
        assert state.add(now, name) is expected, (since, now)
        if expected:
            since = []                           # a match spends its events
