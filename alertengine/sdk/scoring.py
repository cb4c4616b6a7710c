"""Health scoring: thresholds, the 0–100 health score and its components, the anomaly baseline, and the trend.

Formulas (all documented in the README's SDK section; every one is monotone):

* A **component** maps one measured value ``v`` to 0–100 by the piecewise-linear curve through
  ``(0, 100)``, ``(warning, 75)``, ``(critical, 50)`` and ``(zero_at, 0)`` (and 0 beyond). It never
  rises when ``v`` rises. ``latency`` uses the window's P95 (``zero_at = 4 × critical``), ``errors`` the
  error rate (``zero_at = min(1, 10 × critical)``), ``anomalies`` the anomaly score (``zero_at = 2 ×
  critical``).
* The **score** is the lowest component (floored to one decimal): a service is as healthy as its worst
  aspect, so the score never hides a critical component behind two good ones.
* The **status** is the score's band: ``critical`` below 50, ``warning`` below 75, else ``ok``; with
  an empty window it is ``no_data`` (and there is no score). Because the bands sit exactly at the
  warning / critical thresholds, "status is warning" means "some value is above its warning threshold".
* The **anomaly score** compares the window with a slowly learned baseline (EWMA over time, half-life
  ``half_life`` seconds, fed once per closed bucket): for latency ``(ln P95 − mean) / max(sd, ln 1.25)``
  of ln P95, for errors ``(rate − mean) / max(sd, binomial sd, 0.01)``; each is at least 0 and the
  anomaly score is the larger, capped at 100. Deviations are in units of the baseline's own spread,
  with floors, so a steady long tail (high but stable P95) scores near 0 and a doubling of P95 scores
  about 3. It stays 0 until the baseline has learned from ``warmup`` closed buckets with at least
  ``min_samples`` requests each; the latency part also needs ``min_samples`` in the current window.
  While the window is not ok the baseline learns ten times more slowly, and the spread only ever
  learns deviations clipped to 3 spreads, so an outage is not absorbed into "normal" within minutes
  (nor does it widen the spread until it hides itself), yet a lasting change is eventually accepted.
* The **trend** compares the mean score of the last ``recent_seconds`` with the mean of the rest of
  the last ``span_seconds``: ``improving`` / ``degrading`` when it moved by at least ``min_change``
  points, else ``stable`` (also when there is not enough history).
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass

from .window import Summary

STATUSES = ("ok", "warning", "critical", "no_data")
WARNING_SCORE = 75.0
CRITICAL_SCORE = 50.0
LATENCY_FLOOR = math.log(1.25)        # baseline spread floor of ln(P95): +25 % is one unit
ERROR_FLOOR = 0.01                    # baseline spread floor of the error rate: one percentage point
ANOMALY_CAP = 100.0
CLIP_SPREADS = 3.0                    # deviations beyond this many spreads teach the spread no more than this


@dataclass(frozen=True)
class Thresholds:
    """Warning and critical levels of P95 (ms), error rate (0..1) and anomaly score."""

    p95_warning_ms: float = 1000.0
    p95_critical_ms: float = 2000.0
    error_rate_warning: float = 0.01
    error_rate_critical: float = 0.05
    anomaly_warning: float = 3.0
    anomaly_critical: float = 6.0

    def __post_init__(self) -> None:
        for name, warning, critical in (("p95", self.p95_warning_ms, self.p95_critical_ms),
                                        ("error_rate", self.error_rate_warning, self.error_rate_critical),
                                        ("anomaly", self.anomaly_warning, self.anomaly_critical)):
            if not (math.isfinite(warning) and math.isfinite(critical) and 0 < warning < critical):
                raise ValueError(f"{name} thresholds need 0 < warning < critical, got {warning!r}, {critical!r}")
        if self.error_rate_critical >= 1:
            raise ValueError("error_rate_critical must be below 1")

    def as_dict(self) -> dict[str, float]:
        return dict(self.__dict__)


def component(value: float, warning: float, critical: float, zero_at: float) -> float:
    """0–100 through (0, 100), (warning, 75), (critical, 50), (zero_at, 0); 0 beyond. Non-increasing."""
    if value <= 0:
        return 100.0
    if value <= warning:
        return 100.0 - 25.0 * value / warning
    if value <= critical:
        return 75.0 - 25.0 * (value - warning) / (critical - warning)
    if value < zero_at:
        return 50.0 - 50.0 * (value - critical) / (zero_at - critical)
    return 0.0


def band(score: float) -> str:
    return "critical" if score < CRITICAL_SCORE else "warning" if score < WARNING_SCORE else "ok"


def _floor1(x: float) -> float:
    return math.floor(x * 10.0 + 1e-9) / 10.0


@dataclass(frozen=True)
class Anomaly:
    """The window against the learned baseline (all zeros until the baseline is ready)."""

    score: float
    latency: float
    errors: float
    ready: bool
    baseline_p95_ms: float | None
    baseline_error_rate: float | None


@dataclass(frozen=True)
class Components:
    latency: float
    errors: float
    anomalies: float


@dataclass(frozen=True)
class Finding:
    """One aspect at or beyond its warning level."""

    kind: str                         # "latency" | "errors" | "anomaly"
    severity: str                     # "warning" | "critical"
    value: float
    threshold: float                  # the level it passed (the critical one when critical)


@dataclass(frozen=True)
class Assessment:
    status: str                       # one of STATUSES
    score: float | None               # None with no data
    components: Components | None
    findings: tuple[Finding, ...]


def assess(overall: Summary, anomaly: Anomaly, thresholds: Thresholds) -> Assessment:
    """Status, score and components of one window summary."""
    if overall.requests == 0 or overall.p95_ms is None:
        return Assessment("no_data", None, None, ())
    t = thresholds
    measured = (("latency", overall.p95_ms, t.p95_warning_ms, t.p95_critical_ms, 4 * t.p95_critical_ms),
                ("errors", overall.error_rate, t.error_rate_warning, t.error_rate_critical,
                 min(1.0, 10 * t.error_rate_critical)),
                ("anomaly", anomaly.score, t.anomaly_warning, t.anomaly_critical, 2 * t.anomaly_critical))
    scores: list[float] = []
    findings: list[Finding] = []
    for kind, value, warning, critical, zero_at in measured:
        score = _floor1(component(value, warning, critical, zero_at))
        scores.append(score)
        level = band(score)
        if level != "ok":
            findings.append(Finding(kind, level, value, critical if level == "critical" else warning))
    score = min(scores)
    return Assessment(band(score), score, Components(*scores), tuple(findings))


class Baseline:
    """EWMA mean and spread of ln(P95) and of the error rate, learned once per closed bucket."""

    def __init__(self, *, half_life: float = 600.0, warmup: int = 12, min_samples: int = 20) -> None:
        if not (half_life > 0 and math.isfinite(half_life)):
            raise ValueError("half_life must be a positive number of seconds")
        self.half_life = float(half_life)
        self.warmup = max(1, int(warmup))
        self.min_samples = max(1, int(min_samples))
        self.learned = 0
        self._last: float | None = None
        self._lat_mean = 0.0
        self._lat_var = 0.0
        self._err_mean = 0.0
        self._err_var = 0.0

    @property
    def ready(self) -> bool:
        return self.learned >= self.warmup

    def score(self, overall: Summary) -> Anomaly:
        if not self.ready or overall.requests == 0:
            return Anomaly(0.0, 0.0, 0.0, self.ready, self._p95() if self.ready else None,
                           self._err_mean if self.ready else None)
        latency = 0.0
        if overall.p95_ms is not None and overall.requests >= self.min_samples:
            spread = max(math.sqrt(self._lat_var), LATENCY_FLOOR)
            latency = max(0.0, (math.log(overall.p95_ms) - self._lat_mean) / spread)
        n = overall.requests
        p = min(max(self._err_mean, 1.0 / n), 1.0)
        spread = max(math.sqrt(self._err_var), math.sqrt(p * (1.0 - p) / n), ERROR_FLOOR)
        errors = max(0.0, (overall.error_rate - self._err_mean) / spread)
        latency, errors = min(latency, ANOMALY_CAP), min(errors, ANOMALY_CAP)
        return Anomaly(round(max(latency, errors), 3), round(latency, 3), round(errors, 3), True,
                       self._p95(), self._err_mean)

    def _p95(self) -> float:
        return math.exp(self._lat_mean)

    def learn(self, at: float, overall: Summary, anomalous: bool) -> None:
        """Learn from the window as of ``at`` (a closed bucket boundary)."""
        if overall.requests < self.min_samples or overall.p95_ms is None:
            return
        dt = self.half_life / 120.0 if self._last is None else max(0.0, at - self._last)
        self._last = at
        alpha = 1.0 - 0.5 ** (dt / (self.half_life * (10.0 if anomalous else 1.0)))
        self.learned += 1
        alpha = max(alpha, 1.0 / self.learned) if self.learned <= self.warmup else alpha
        first = self.learned == 1
        self._lat_mean, self._lat_var = _ewm(self._lat_mean, self._lat_var, math.log(overall.p95_ms), alpha,
                                             first, LATENCY_FLOOR)
        self._err_mean, self._err_var = _ewm(self._err_mean, self._err_var, overall.error_rate, alpha,
                                             first, ERROR_FLOOR)


def _ewm(mean: float, var: float, x: float, alpha: float, first: bool, floor: float) -> tuple[float, float]:
    """Exponentially weighted mean and variance (West's update); the variance sees the deviation clipped
    to 3 spreads (Huber-style), so a long outage cannot inflate the spread and hide itself."""
    if first:
        return x, 0.0
    diff = x - mean
    limit = CLIP_SPREADS * max(math.sqrt(var), floor)
    clipped = max(-limit, min(limit, diff))
    return mean + alpha * diff, (1.0 - alpha) * (var + alpha * clipped * clipped)


class ScoreHistory:
    """Scores of closed buckets over time, for the trend."""

    def __init__(self, *, span_seconds: float = 60.0, recent_seconds: float = 15.0, min_change: float = 5.0) -> None:
        if not 0 < recent_seconds < span_seconds:
            raise ValueError("need 0 < recent_seconds < span_seconds")
        self.span_seconds = float(span_seconds)
        self.recent_seconds = float(recent_seconds)
        self.min_change = float(min_change)
        self._points: deque[tuple[float, float]] = deque()

    def add(self, at: float, score: float) -> None:
        self._points.append((at, score))
        self._trim(at)

    def _trim(self, now: float) -> None:
        while self._points and self._points[0][0] <= now - self.span_seconds:
            self._points.popleft()

    def trend(self, now: float) -> str:
        self._trim(now)
        recent = [s for t, s in self._points if t > now - self.recent_seconds]
        earlier = [s for t, s in self._points if t <= now - self.recent_seconds]
        if not recent or not earlier:
            return "stable"
        change = sum(recent) / len(recent) - sum(earlier) / len(earlier)
        if change >= self.min_change:
            return "improving"
        if change <= -self.min_change:
            return "degrading"
        return "stable"
