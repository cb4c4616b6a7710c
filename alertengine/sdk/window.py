"""Rolling time window of request measurements: a ring of fixed-width time buckets, per route and overall.

Time, not request count, defines the window: at time ``t`` in bucket ``i = floor(t / width)`` the
window holds buckets ``i - n + 1 .. i`` (``n - 1`` full buckets and the current, partial one, so between
``(n - 1) · width`` and ``n · width`` seconds). Older buckets expire as the clock moves, whether or not
requests arrive, so a service that stops getting traffic ends with an empty window.

Each time a bucket closes (a bucket boundary is crossed) ``on_tick`` receives the overall statistics
of the window as of that boundary (after a quiet gap of several buckets, only the first boundary
ticks): the monitor learns its baseline and score history from these, so both depend on time only.
The class is not thread-safe on its own; the monitor holds a lock around it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, Mapping

from .histogram import MIN_VALUE, add_counts, key_of, quantiles, subtract_counts

STATUS_CLASSES = ("1xx", "2xx", "3xx", "4xx", "5xx", "disconnected")
DISCONNECTED = 5                      # index of "disconnected" in STATUS_CLASSES
OVERFLOW_ROUTE = ("*", "<other>")     # where routes beyond max_routes are counted
QUANTILES = (0.5, 0.95, 0.99)

RouteKey = tuple[str, str]            # (method, route template)


@dataclass(frozen=True)
class Summary:
    """Requests, errors, latency percentiles (ms, nearest rank) and status classes of one slice of the window."""

    requests: int
    errors: int
    p50_ms: float | None
    p95_ms: float | None
    p99_ms: float | None
    max_ms: float | None
    status_classes: Mapping[str, int] = field(default_factory=dict)

    @property
    def error_rate(self) -> float:
        return self.errors / self.requests if self.requests else 0.0


@dataclass(frozen=True)
class RouteStats:
    """One (method, route template) over the window."""

    method: str
    route: str
    summary: Summary


@dataclass(frozen=True)
class WindowStats:
    """The window as of ``at`` (the window clock): overall, and per route when asked for."""

    at: float
    covered_seconds: float            # how much time the window spans now (less while the monitor is young)
    overall: Summary
    routes: tuple[RouteStats, ...] = ()

    @property
    def request_rate(self) -> float:
        """Requests per second over the covered time (at least one second, so a young window stays sane)."""
        return self.overall.requests / max(self.covered_seconds, 1.0)


class _Cell:
    """Counters of one route in one bucket, or a running total."""

    __slots__ = ("counts", "requests", "errors", "classes", "lowest", "highest")

    def __init__(self) -> None:
        self.counts: dict[int, int] = {}
        self.requests = 0
        self.errors = 0
        self.classes = [0, 0, 0, 0, 0, 0]
        self.lowest = math.inf
        self.highest = 0.0

    def absorb(self, other: "_Cell") -> None:
        add_counts(self.counts, other.counts)
        self.requests += other.requests
        self.errors += other.errors
        for i, n in enumerate(other.classes):
            self.classes[i] += n
        self.lowest = min(self.lowest, other.lowest)
        self.highest = max(self.highest, other.highest)

    def summary(self) -> Summary:
        has = self.requests > 0 and bool(self.counts)
        p50, p95, p99, top = quantiles(self.counts, (*QUANTILES, 1.0), self.lowest, self.highest) if has \
            else (None, None, None, None)
        return Summary(self.requests, self.errors, p50, p95, p99, top,
                       {name: n for name, n in zip(STATUS_CLASSES, self.classes)})


class _Bucket:
    __slots__ = ("index", "cells")

    def __init__(self, index: int) -> None:
        self.index = index
        self.cells: dict[RouteKey, _Cell] = {}


def status_class(status: int | None) -> int:
    """Index into STATUS_CLASSES; ``None`` is a client that went away before the response ended."""
    if status is None:
        return DISCONNECTED
    klass = status // 100 - 1
    return klass if 0 <= klass <= 4 else 4   # outside 100..599 the server broke the protocol: 5xx


class RollingWindow:
    """``n = window_seconds / bucket_seconds`` buckets in a ring, plus a running overall total."""

    def __init__(self, window_seconds: float, bucket_seconds: float, *, start: float, max_routes: int = 100,
                 on_tick: Callable[[WindowStats], None] | None = None) -> None:
        if not (bucket_seconds > 0 and math.isfinite(bucket_seconds)):
            raise ValueError("bucket_seconds must be a positive number")
        count = window_seconds / bucket_seconds
        if not (math.isfinite(count) and count >= 2 and abs(count - round(count)) < 1e-9):
            raise ValueError("window_seconds must be a whole multiple (at least 2) of bucket_seconds")
        if max_routes < 1:
            raise ValueError("max_routes must be at least 1")
        self.window_seconds = float(window_seconds)
        self.bucket_seconds = float(bucket_seconds)
        self._n = int(round(count))
        self._ring: list[_Bucket | None] = [None] * self._n
        self._total = _Cell()
        self._started = start
        self._current = self.index(start)
        self._routes: set[RouteKey] = set()
        self._max_routes = max_routes
        self._on_tick = on_tick

    def index(self, now: float) -> int:
        return math.floor(now / self.bucket_seconds)

    # -- writing -------------------------------------------------------------------------------

    def record(self, now: float, key: RouteKey, latency_ms: float, klass: int, error: bool) -> None:
        """Count one request that ended at ``now`` (a clock going backwards counts in the current bucket)."""
        idx = math.floor(now / self.bucket_seconds)
        if idx > self._current:
            self.advance(now)
        bucket = self._ring[self._current % self._n]
        if bucket is None or bucket.index != self._current:
            bucket = self._ring[self._current % self._n] = _Bucket(self._current)
        cell = bucket.cells.get(key)
        if cell is None:
            if key not in self._routes:
                if len(self._routes) >= self._max_routes:
                    key = OVERFLOW_ROUTE
                else:
                    self._routes.add(key)
            cell = bucket.cells.get(key)
            if cell is None:
                cell = bucket.cells[key] = _Cell()
        hkey = key_of(latency_ms)
        value = latency_ms if latency_ms >= MIN_VALUE else MIN_VALUE
        for target in (cell, self._total):
            counts = target.counts
            counts[hkey] = counts.get(hkey, 0) + 1
            target.requests += 1
            target.classes[klass] += 1
            if error:
                target.errors += 1
        if value < cell.lowest:
            cell.lowest = value
        if value > cell.highest:
            cell.highest = value

    def advance(self, now: float) -> None:
        """Move the window to ``now``: expire buckets that left it, one tick per bucket boundary crossed."""
        idx = self.index(now)
        if idx <= self._current:
            return
        first = self._current + 1
        last = min(idx, self._current + self._n)     # after n boundaries everything has expired
        for boundary in range(first, last + 1):
            slot = boundary % self._n
            old = self._ring[slot]
            if old is not None and old.index <= boundary - self._n:
                self._expire(old)
                self._ring[slot] = None
            self._current = boundary
            # One tick per closed bucket while traffic flows; after a quiet gap only the first boundary
            # (the bucket that last saw traffic) ticks: the emptier windows after it teach nothing new.
            if boundary == first and self._on_tick is not None and self._total.requests > 0:
                self._on_tick(self._stats(boundary * self.bucket_seconds, routes=False))
        self._current = idx

    def _expire(self, bucket: _Bucket) -> None:
        total = self._total
        for cell in bucket.cells.values():
            subtract_counts(total.counts, cell.counts)
            total.requests -= cell.requests
            total.errors -= cell.errors
            for i, n in enumerate(cell.classes):
                total.classes[i] -= n

    # -- reading -------------------------------------------------------------------------------

    def stats(self, now: float, *, routes: bool = True) -> WindowStats:
        """The window as of ``now`` (advancing it first)."""
        self.advance(now)
        return self._stats(now, routes=routes)

    def _live(self) -> list[_Bucket]:
        oldest = self._current - self._n + 1
        return [b for b in self._ring if b is not None and oldest <= b.index <= self._current]

    def _stats(self, now: float, *, routes: bool) -> WindowStats:
        live = self._live()
        span = (self._n - 1) * self.bucket_seconds + max(0.0, now - self._current * self.bucket_seconds)
        covered = max(0.0, min(span, now - self._started))
        lowest, highest = math.inf, 0.0
        if routes:                    # exact extremes for reports; ticks make do with the histogram's
            for bucket in live:
                for cell in bucket.cells.values():
                    lowest = min(lowest, cell.lowest)
                    highest = max(highest, cell.highest)
        else:
            lowest, highest = 0.0, math.inf
        total = self._total
        overall = _Cell()
        overall.counts, overall.requests, overall.errors = total.counts, total.requests, total.errors
        overall.classes, overall.lowest, overall.highest = list(total.classes), lowest, highest
        per_route: tuple[RouteStats, ...] = ()
        if routes:
            merged: dict[RouteKey, _Cell] = {}
            for bucket in live:
                for key, cell in bucket.cells.items():
                    into = merged.get(key)
                    if into is None:
                        into = merged[key] = _Cell()
                    into.absorb(cell)
            per_route = tuple(sorted((RouteStats(k[0], k[1], c.summary()) for k, c in merged.items()),
                                     key=lambda r: (-r.summary.requests, r.route, r.method)))
        return WindowStats(now, covered, overall.summary(), per_route)
