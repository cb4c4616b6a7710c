"""The rolling window: measurements over time, expiring on a controllable clock; an empty window is no_data."""

from __future__ import annotations

import json
import random
import threading
import time

import pytest

from alertengine.sdk import Monitor
from alertengine.sdk.histogram import Histogram
from alertengine.sdk.window import OVERFLOW_ROUTE, RollingWindow, WindowStats
from alertengine.signals.poller import read_health

START = 1000.0                        # a bucket boundary for 5 s buckets


class FakeClock:
    def __init__(self, now: float = START) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def monitor(clock: FakeClock, **options: object) -> Monitor:
    return Monitor(clock=clock, wall_clock=lambda: 1795356439.0, service_name="checkout", instance_id="i-1",
                   **options)  # type: ignore[arg-type]


@pytest.mark.parametrize(("elapsed", "counted"), [
    (0.0, True), (4.9, True), (54.9, True), (59.9, True),   # between 55 and 60 s it may still count
    (60.0, False), (61.0, False), (3600.0, False),
])
def test_a_request_expires_once_its_bucket_leaves_the_window(elapsed: float, counted: bool) -> None:
    clock = FakeClock()
    mon = monitor(clock)
    mon.record("GET", "/a", 200, 12.0)
    clock.advance(elapsed)
    assert mon.stats().overall.requests == (1 if counted else 0)


def test_old_buckets_expire_bucket_by_bucket_while_new_ones_count() -> None:
    clock = FakeClock()
    mon = monitor(clock)
    for second in range(120):                 # one request per second for two minutes
        mon.record("GET", "/a", 200, float(second + 1))
        clock.advance(1.0)
    stats = mon.stats()                       # now = START + 120: buckets 109..120 → seconds 65..119
    assert stats.overall.requests == 55
    assert stats.overall.max_ms == 120.0 and stats.overall.p50_ms == pytest.approx(93.0, rel=0.01)


def test_window_percentiles_equal_a_histogram_of_the_requests_still_inside() -> None:
    rng = random.Random(3)
    clock = FakeClock()
    mon = monitor(clock)
    inside: list[float] = []
    for step in range(400):                   # 0.25 s apart: 100 s of traffic
        value = rng.lognormvariate(4, 1.2)
        mon.record("GET", "/a", 200, value)
        if clock.now >= START + 45.0:         # the window at START + 100 keeps buckets from START + 45 on
            inside.append(value)
        clock.advance(0.25)
    stats = mon.stats()
    expected = Histogram(inside)
    assert stats.overall.requests == len(inside)
    assert [stats.overall.p50_ms, stats.overall.p95_ms, stats.overall.p99_ms] == expected.quantiles([0.5, 0.95, 0.99])


@pytest.mark.parametrize("idle", [60.0, 65.0, 300.0, 86_400.0])
def test_when_traffic_stops_the_status_becomes_no_data_not_healthy(idle: float) -> None:
    clock = FakeClock()
    mon = monitor(clock)
    for _ in range(100):
        mon.record("GET", "/a", 200, 20.0)
        clock.advance(0.5)
    assert mon.report().status == "ok"
    clock.advance(idle)
    report = mon.report()
    doc = report.to_dict()
    assert report.status == "no_data"
    assert doc["reason"] == "no_data" and doc["metrics"]["sample_size"] == 0 and doc["routes"] == []
    assert doc["health_score"]["score"] is None and doc["health_score"]["status"] == "no_data"
    reading = read_health(200, json.dumps(doc).encode(), "application/json", 1.0)
    assert (reading.outcome, reading.format, reading.status) == ("answered", "sdk", "no_data")


def test_a_fresh_monitor_reports_no_data() -> None:
    assert monitor(FakeClock()).report().status == "no_data"


def test_request_rate_is_over_the_time_covered_not_over_the_whole_window() -> None:
    clock = FakeClock()
    mon = monitor(clock)
    for _ in range(300):                      # 10 requests/s for 30 s on a fresh monitor
        mon.record("POST", "/a", 201, 5.0)
        clock.advance(0.1)
    stats = mon.stats()
    assert stats.covered_seconds == pytest.approx(30.0)
    assert stats.request_rate == pytest.approx(10.0)
    clock.advance(100.0)
    for _ in range(600):                      # then 20 requests/s for 30 s, well after the start
        mon.record("POST", "/a", 201, 5.0)
        clock.advance(0.05)
    clock.now = START + 162.5                 # 11 full buckets and 2.5 s of the current one
    assert mon.stats().covered_seconds == pytest.approx(57.5)
    assert mon.stats().request_rate == pytest.approx(600 / 57.5)


def test_a_clock_going_backwards_counts_in_the_current_bucket() -> None:
    clock = FakeClock()
    mon = monitor(clock)
    clock.advance(30.0)
    mon.record("GET", "/a", 200, 1.0)
    clock.advance(-20.0)
    mon.record("GET", "/a", 200, 1.0)
    clock.advance(20.0)
    assert mon.stats().overall.requests == 2


def test_routes_beyond_the_cap_are_counted_together() -> None:
    clock = FakeClock()
    mon = monitor(clock, max_routes=2)
    for route in ("/a", "/b", "/c", "/d", "/a"):
        mon.record("GET", route, 200, 1.0)
    routes = {(r.method, r.route): r.summary.requests for r in mon.stats().routes}
    assert routes == {("GET", "/a"): 2, ("GET", "/b"): 1, OVERFLOW_ROUTE: 2}


def test_unknown_methods_are_one_label() -> None:
    clock = FakeClock()
    mon = monitor(clock)
    for method in ("PROPFIND", "BREW", "GET"):
        mon.record(method, "/a", 200, 1.0)
    assert {r.method: r.summary.requests for r in mon.stats().routes} == {"OTHER": 2, "GET": 1}


def test_one_tick_per_closed_bucket_while_traffic_flows_and_one_after_a_quiet_gap() -> None:
    ticks: list[WindowStats] = []
    window = RollingWindow(20.0, 5.0, start=START, on_tick=ticks.append)
    for second in range(1, 12):               # traffic every second: boundaries +5 and +10 each tick
        window.record(START + second, ("GET", "/a"), 10.0, 1, False)
    assert [t.at for t in ticks] == [START + 5.0, START + 10.0]
    assert [t.overall.requests for t in ticks] == [4, 9] and all(t.routes == () for t in ticks)
    window.advance(START + 500.0)             # a quiet gap: only the first boundary (+15) ticks
    assert [t.at for t in ticks] == [START + 5.0, START + 10.0, START + 15.0]
    window.record(START + 501.0, ("GET", "/a"), 10.0, 1, False)
    window.advance(START + 506.0)
    assert [t.overall.requests for t in ticks] == [4, 9, 11, 1]


@pytest.mark.parametrize(("window", "bucket"), [(60.0, 7.0), (5.0, 5.0), (60.0, 0.0), (60.0, -5.0)])
def test_a_window_must_be_a_whole_number_of_buckets(window: float, bucket: float) -> None:
    with pytest.raises(ValueError):
        RollingWindow(window, bucket, start=START)


def test_records_from_many_threads_during_bucket_rotations_are_all_counted() -> None:
    clock = FakeClock()
    mon = monitor(clock, window_seconds=3600.0, bucket_seconds=0.5)
    stop = threading.Event()

    def tick() -> None:                       # the clock races the writers: buckets rotate all the time
        while not stop.is_set():
            clock.advance(0.05)
            time.sleep(0.0005)

    def write(worker: int) -> None:
        for i in range(3000):
            mon.record("GET", f"/r{worker % 3}", 500 if i % 10 == 0 else 200, float(i % 50 + 1))

    def read() -> None:
        while not stop.is_set():
            mon.report().to_dict()

    background = [threading.Thread(target=tick), threading.Thread(target=read)]
    writers = [threading.Thread(target=write, args=(w,)) for w in range(6)]
    for t in background + writers:
        t.start()
    for t in writers:
        t.join(60)
    stop.set()
    for t in background:
        t.join(10)
    stats = mon.stats()
    assert stats.overall.requests == 18_000 and stats.overall.errors == 1_800
    assert sum(r.summary.requests for r in stats.routes) == 18_000
    assert sum(stats.overall.status_classes.values()) == 18_000
