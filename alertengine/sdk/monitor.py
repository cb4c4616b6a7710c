"""The monitor: one service's measurements (rolling window, baseline, score history) behind a lock.

``record`` is the hot path (one lock, a few dict updates); ``report`` is what the health endpoint
serves. Both take the time from the injected ``clock`` (monotonic by default), so tests can drive the
window, the baseline and the trend with a controllable clock. Safe to call from the event loop and
from worker threads at once.
"""

from __future__ import annotations

import logging
import math
import os
import socket
import threading
import time
from typing import Callable

from .report import HealthReport
from .scoring import Assessment, Baseline, ScoreHistory, Thresholds, assess
from .window import RollingWindow, WindowStats, status_class

log = logging.getLogger("alertengine.sdk")

METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
UNMATCHED = "<unmatched>"             # the route of requests no route template matched (404s, plain ASGI apps)


def default_instance_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


class Monitor:
    """Measurements of one service. See the README's SDK section for every option."""

    def __init__(self, *, window_seconds: float = 60.0, bucket_seconds: float = 5.0,
                 thresholds: Thresholds | None = None, count_4xx: bool = False,
                 is_error: Callable[[int], bool] | None = None, service_name: str = "default",
                 instance_id: str | None = None, max_routes: int = 100, baseline_half_life: float = 600.0,
                 baseline_warmup_seconds: float = 60.0, baseline_min_samples: int = 20,
                 trend_seconds: float | None = None,
                 clock: Callable[[], float] = time.monotonic, wall_clock: Callable[[], float] = time.time) -> None:
        self.thresholds = thresholds if thresholds is not None else Thresholds()
        self.count_4xx = bool(count_4xx)
        self.service_name = str(service_name)
        self.instance_id = instance_id if instance_id is not None else default_instance_id()
        self._is_error = is_error
        self._clock = clock
        self._wall = wall_clock
        self._lock = threading.Lock()
        self._window = RollingWindow(window_seconds, bucket_seconds, start=clock(), max_routes=max_routes,
                                     on_tick=self._tick)
        self.baseline = Baseline(half_life=baseline_half_life,
                                 warmup=math.ceil(baseline_warmup_seconds / bucket_seconds),
                                 min_samples=baseline_min_samples)
        span = float(trend_seconds) if trend_seconds is not None else float(window_seconds)
        self.history = ScoreHistory(span_seconds=span, recent_seconds=max(bucket_seconds, span / 4))
        self.failures = 0             # failures inside the SDK (each logged once at most; see note_failure)
        self._failure_kinds: set[str] = set()
        self._failure_lock = threading.Lock()

    @property
    def window_seconds(self) -> float:
        return self._window.window_seconds

    @property
    def bucket_seconds(self) -> float:
        return self._window.bucket_seconds

    def is_error(self, status: int | None) -> bool:
        """Whether a response status counts as an error (a client that went away is not one)."""
        if status is None:
            return False
        if self._is_error is not None:
            return bool(self._is_error(status))
        return status >= 500 or status < 100 or (self.count_4xx and status >= 400)

    # -- hot path ------------------------------------------------------------------------------

    def record(self, method: str, route: str, status: int | None, latency_ms: float) -> None:
        """Count one finished request. ``status`` None: the client disconnected before the response ended."""
        error = self.is_error(status)
        klass = status_class(status)
        key = (method if method in METHODS else "OTHER", route)
        with self._lock:
            self._window.record(self._clock(), key, latency_ms, klass, error)

    # -- reading -------------------------------------------------------------------------------

    def _tick(self, stats: WindowStats) -> None:
        """A bucket closed: score the window as of that boundary, then learn from it."""
        anomaly = self.baseline.score(stats.overall)
        verdict = assess(stats.overall, anomaly, self.thresholds)
        if verdict.score is not None:
            self.history.add(stats.at, verdict.score)
        self.baseline.learn(stats.at, stats.overall, anomalous=verdict.status != "ok")

    def stats(self) -> WindowStats:
        with self._lock:
            return self._window.stats(self._clock())

    def report(self) -> HealthReport:
        """The health report as of now."""
        with self._lock:
            now = self._clock()
            stats = self._window.stats(now)
            anomaly = self.baseline.score(stats.overall)
            verdict: Assessment = assess(stats.overall, anomaly, self.thresholds)
            trend = self.history.trend(now) if verdict.status != "no_data" else "stable"
            failures = self.failures
        return HealthReport(
            service_name=self.service_name, instance_id=self.instance_id, timestamp=self._wall(),
            window_seconds=self.window_seconds, bucket_seconds=self.bucket_seconds, stats=stats,
            assessment=verdict, anomaly=anomaly, trend=trend, thresholds=self.thresholds,
            count_4xx=self.count_4xx, sdk_failures=failures)

    # -- failures ------------------------------------------------------------------------------

    def note_failure(self, where: str, exc: BaseException) -> None:
        """A failure inside the SDK: counted always, logged (with its traceback) once per place and type."""
        kind = f"{where}:{type(exc).__name__}"
        with self._failure_lock:
            self.failures += 1
            first = kind not in self._failure_kinds
            self._failure_kinds.add(kind)
        if first:
            log.error("alertengine SDK failure in %s (logged once; the request went on untouched)", where,
                      exc_info=(type(exc), exc, exc.__traceback__))
