"""The nearest-rank percentile the alert-loop dashboard reports, against values worked out by hand."""

from __future__ import annotations

import pytest

from alertengine.incidents.slo import percentile


@pytest.mark.parametrize("values,q,expected", [
    ([], 95, None),
    ([7.0], 95, 7.0),
    ([1.0, 2.0, 3.0, 4.0], 50, 2.0),          # rank ceil(0.5 * 4) = 2
    ([1.0, 2.0, 3.0, 4.0], 95, 4.0),          # rank ceil(3.8) = 4
    ([5.0, 1.0, 4.0, 2.0, 3.0], 95, 5.0),     # order does not matter
    (list(map(float, range(1, 101))), 95, 95.0),
    (list(map(float, range(1, 101))), 100, 100.0),
    ([3.0, 3.0, 9.0], 66, 3.0),               # rank ceil(1.98) = 2
])
def test_percentile(values: list[float], q: float, expected: float | None) -> None:
    assert percentile(values, q) == expected
