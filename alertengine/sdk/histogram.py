"""Log-linear latency histogram: sparse bucket counts with a bounded relative error (≤ 1/128 < 1 %).

A value ``v = m · 2**e`` (``math.frexp``: ``0.5 ≤ m < 1``) falls in one of ``SUB_BUCKETS`` equal-width
linear sub-buckets of its power-of-two range ``[2**(e-1), 2**e)``. A sub-bucket is ``2**(e-1) / 64`` wide
and every value in it is at least ``2**(e-1)``, so the sub-bucket's midpoint is within ``1/128`` (0.78 %)
of any value in it. Estimates are also clamped into the exact ``[min, max]`` seen, which makes the
extreme quantiles exact.

Counts live in a plain ``dict[int, int]`` (key → count): only the buckets that were hit cost memory,
merging two histograms is adding dicts, and the hot path is one ``frexp`` and one dict update.
"""

from __future__ import annotations

import math
from typing import Iterable, Mapping, Sequence

SUB_BUCKETS = 64                      # linear sub-buckets per power of two
MAX_RELATIVE_ERROR = 1.0 / (2 * SUB_BUCKETS)
MIN_VALUE = 0.001                     # smaller values (and zero or negatives) count as this (1 µs in ms)

_frexp = math.frexp
_ldexp = math.ldexp


def key_of(value: float) -> int:
    """The bucket key of ``value`` (values below MIN_VALUE count as MIN_VALUE)."""
    if not value >= MIN_VALUE:        # also catches NaN
        value = MIN_VALUE
    mantissa, exponent = _frexp(value)
    return exponent * SUB_BUCKETS + int((mantissa - 0.5) * (2 * SUB_BUCKETS))


def bounds_of(key: int) -> tuple[float, float]:
    """The half-open value range ``[low, high)`` of bucket ``key``."""
    exponent, sub = divmod(key, SUB_BUCKETS)
    low = _ldexp(0.5 + sub / (2 * SUB_BUCKETS), exponent)
    high = _ldexp(0.5 + (sub + 1) / (2 * SUB_BUCKETS), exponent)
    return low, high


def representative(key: int) -> float:
    """The value reported for bucket ``key``: its midpoint."""
    low, high = bounds_of(key)
    return (low + high) / 2.0


def add_counts(into: dict[int, int], other: Mapping[int, int]) -> None:
    """Add ``other``'s counts into ``into``."""
    for key, count in other.items():
        into[key] = into.get(key, 0) + count


def subtract_counts(into: dict[int, int], other: Mapping[int, int]) -> None:
    """Remove ``other``'s counts from ``into`` (which must contain them); emptied buckets are dropped."""
    for key, count in other.items():
        left = into.get(key, 0) - count
        if left > 0:
            into[key] = left
        else:
            into.pop(key, None)


def quantiles(counts: Mapping[int, int], qs: Sequence[float], lowest: float | None = None,
              highest: float | None = None) -> list[float | None]:
    """Nearest-rank quantiles: for each ``q`` the estimate of the ``ceil(q · n)``-th smallest value.

    ``lowest`` / ``highest`` (the exact extremes, when known) clamp the estimates. Returns ``None``
    for each q when the histogram is empty.
    """
    total = sum(counts.values())
    if total <= 0:
        return [None for _ in qs]
    ranks = [min(total, max(1, math.ceil(q * total - 1e-9))) for q in qs]
    order = sorted(range(len(qs)), key=ranks.__getitem__)
    out: list[float | None] = [None] * len(qs)
    seen = 0
    position = 0
    keys = sorted(counts)
    for key in keys:
        seen += counts[key]
        while position < len(order) and ranks[order[position]] <= seen:
            out[order[position]] = representative(key)
            position += 1
        if position == len(order):
            break
    for i, value in enumerate(out):
        if value is None:             # only possible with inconsistent counts; report the top bucket
            value = representative(keys[-1])
        if lowest is not None and value < lowest:
            value = lowest
        if highest is not None and value > highest:
            value = highest
        out[i] = value
    return out


class Histogram:
    """A standalone log-linear histogram (the window keeps the same counts in plain dicts)."""

    __slots__ = ("counts", "count", "lowest", "highest")

    def __init__(self, values: Iterable[float] = ()) -> None:
        self.counts: dict[int, int] = {}
        self.count = 0
        self.lowest: float | None = None
        self.highest: float | None = None
        for value in values:
            self.add(value)

    def add(self, value: float) -> None:
        key = key_of(value)
        self.counts[key] = self.counts.get(key, 0) + 1
        self.count += 1
        value = max(value, MIN_VALUE) if value == value else MIN_VALUE
        if self.lowest is None or value < self.lowest:
            self.lowest = value
        if self.highest is None or value > self.highest:
            self.highest = value

    def merge(self, other: "Histogram") -> None:
        add_counts(self.counts, other.counts)
        self.count += other.count
        for extreme in (other.lowest, other.highest):
            if extreme is not None:
                self.lowest = extreme if self.lowest is None else min(self.lowest, extreme)
                self.highest = extreme if self.highest is None else max(self.highest, extreme)

    def quantile(self, q: float) -> float | None:
        return self.quantiles([q])[0]

    def quantiles(self, qs: Sequence[float]) -> list[float | None]:
        return quantiles(self.counts, qs, self.lowest, self.highest)
