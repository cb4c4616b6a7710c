"""The log-linear histogram: percentiles of generated distributions within 1 % of the exact ones."""

from __future__ import annotations

import math
import random
from typing import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from alertengine.sdk.histogram import (
    MAX_RELATIVE_ERROR,
    MIN_VALUE,
    Histogram,
    bounds_of,
    key_of,
)

QS = (0.5, 0.9, 0.95, 0.99, 0.999)
N = 50_000


def exact(values: list[float], q: float) -> float:
    """Nearest rank: the ceil(q·n)-th smallest value."""
    ordered = sorted(values)
    return ordered[max(1, math.ceil(q * len(ordered))) - 1]


def _bimodal(rng: random.Random) -> float:
    return rng.gauss(20.0, 3.0) if rng.random() < 0.8 else rng.gauss(800.0, 120.0)


DISTRIBUTIONS: dict[str, Callable[[random.Random], float]] = {
    "uniform": lambda rng: rng.uniform(1.0, 1000.0),
    "lognormal": lambda rng: rng.lognormvariate(math.log(80.0), 1.0),
    "bimodal": lambda rng: max(0.5, _bimodal(rng)),
    "heavy_tail": lambda rng: 10.0 * rng.paretovariate(1.2),
    "sub_millisecond": lambda rng: rng.uniform(0.002, 0.9),
}


@pytest.mark.parametrize("name", sorted(DISTRIBUTIONS))
def test_percentiles_of_generated_distributions_are_within_one_percent_of_exact(name: str) -> None:
    rng = random.Random(name)
    values = [DISTRIBUTIONS[name](rng) for _ in range(N)]
    histogram = Histogram(values)
    for q, estimate in zip(QS, histogram.quantiles(QS)):
        truth = exact(values, q)
        assert estimate is not None
        assert abs(estimate - truth) / truth <= 0.01, (name, q, estimate, truth)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.floats(min_value=MIN_VALUE, max_value=1e7, allow_nan=False), min_size=1, max_size=300),
       st.floats(min_value=0.0, max_value=1.0))
def test_any_quantile_of_any_sample_is_within_the_bound(values: list[float], q: float) -> None:
    estimate = Histogram(values).quantile(q)
    truth = exact(values, q) if q > 0 else min(values)
    assert estimate is not None
    assert abs(estimate - truth) <= MAX_RELATIVE_ERROR * truth * (1 + 1e-12)


@settings(max_examples=300, deadline=None)
@given(st.floats(min_value=MIN_VALUE, max_value=1e9, allow_nan=False))
def test_every_value_falls_inside_its_own_bucket(value: float) -> None:
    low, high = bounds_of(key_of(value))
    assert low <= value < high
    assert (high - low) / low <= 2 * MAX_RELATIVE_ERROR


@pytest.mark.parametrize("value", [0.0, -5.0, 1e-9, float("nan")])
def test_values_below_the_floor_count_as_the_floor(value: float) -> None:
    assert key_of(value) == key_of(MIN_VALUE)


def test_merging_histograms_equals_one_histogram_of_all_values() -> None:
    rng = random.Random(7)
    a = [rng.lognormvariate(3, 1) for _ in range(5000)]
    b = [rng.uniform(500, 5000) for _ in range(500)]
    merged = Histogram(a)
    merged.merge(Histogram(b))
    whole = Histogram(a + b)
    assert merged.counts == whole.counts
    assert merged.quantiles(QS) == whole.quantiles(QS)
    assert (merged.lowest, merged.highest, merged.count) == (min(a + b), max(a + b), 5500)


def test_empty_histogram_has_no_percentiles() -> None:
    assert Histogram().quantiles(QS) == [None] * len(QS)
