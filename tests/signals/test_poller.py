"""The health poller: reading each answer format, and the poll loop against real local HTTP servers."""

from __future__ import annotations

import asyncio
import gzip
import json
import logging
import socket
import statistics
import threading
import time
from collections import defaultdict
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable, Iterator

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from alertengine import __version__
from alertengine.incidents.policy import DEFAULT_POLICY, evaluate_reading
from alertengine.signals import OUTCOMES, SELF_STATUSES, HealthReading
from alertengine.signals.poller import MAX_BODY_BYTES, STOP_GRACE, Poller, PollTarget, read_health
from alertengine.telemetry import Telemetry
from tests.conftest import FIXTURES
from tests.signals.rawhttp import HANG, answer, serve
from tests.waiting import async_wait_for

HOSTED = FIXTURES / "hosted-sdk"
JSON = "application/json"


def hosted(name: str) -> bytes:
    return (HOSTED / f"{name}.json").read_bytes()


def body(doc: dict[str, Any]) -> bytes:
    return json.dumps(doc).encode()


SDK_BODY = body({
    "sdk": "alertengine", "status": "warning", "window_seconds": 60,
    "metrics": {"overall_p95_ms": 812.5, "p50_ms": 40.0, "error_rate": 0.031, "anomaly_score": 1.7,
                "sample_size": 1200},
    "health_score": {"score": 78.0, "status": "degraded", "trend": "degrading"},
})


# --------------------------------------------------------------------------------------------
# read_health
# --------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("name", "expected"), [
    # the hosted "anomaly_score" is a window's relative spread, not an anomaly: never read as one
    ("healthy", dict(status="ok", p95_ms=30.2, error_rate=0.0, anomaly_score=None, health_score=99.2,
                     sample_size=60)),
    # the top-level status says critical, health_score.status says healthy: the worse one wins
    ("errors", dict(status="critical", p95_ms=30.3, error_rate=0.185, anomaly_score=None, health_score=71.7,
                    sample_size=200)),
    ("slow", dict(status="critical", p95_ms=1306.7, error_rate=0.2, anomaly_score=None, health_score=49.9,
                  sample_size=200)),
    # says "ok", score 100 — but nothing was measured: that is no_data, never ok
    ("idle", dict(status="no_data", sample_size=0, health_score=100.0)),
])
def test_hosted_fixtures_are_read_with_the_worse_status_and_no_data_for_idle(name: str, expected: dict) -> None:
    reading = read_health(200, hosted(name), JSON, 12.5)
    assert reading.outcome == "answered"
    assert reading.format == "hosted"
    assert reading.http_status == 200
    assert reading.latency_ms == 12.5
    assert reading.detail == ""
    for key, value in expected.items():
        assert getattr(reading, key) == value, key


def test_a_healthy_hosted_service_with_a_long_tail_opens_nothing() -> None:
    """The hosted SDK reports a wide but normal latency spread as a high "anomaly_score"; with good
    latency, no errors and a good score, policy must see a healthy service."""
    doc = json.loads(hosted("healthy"))
    doc["metrics"]["anomaly_score"] = 7.5
    doc["health_score"]["components"]["anomalies"] = 20.0
    doc["health_score"]["score"] = 84.0
    reading = read_health(200, body(doc), JSON, 4.0)
    assert reading.anomaly_score is None
    assert evaluate_reading(reading, DEFAULT_POLICY.rules("checkout", None)) == []


def test_our_sdk_anomaly_score_still_breaches() -> None:
    doc = json.loads(SDK_BODY)
    doc["metrics"]["anomaly_score"] = 7.5
    reading = read_health(200, body(doc), JSON, 3.0)
    assert [b.kind for b in evaluate_reading(reading, DEFAULT_POLICY.rules("checkout", None))] == ["anomaly"]


def test_our_sdk_body_is_read_as_sdk_format() -> None:
    reading = read_health(200, SDK_BODY, JSON, 3.0)
    assert reading == HealthReading(outcome="answered", format="sdk", http_status=200, latency_ms=3.0,
                                    status="warning", p95_ms=812.5, error_rate=0.031, anomaly_score=1.7,
                                    health_score=78.0, sample_size=1200)


def test_a_window_seconds_key_marks_the_sdk_format_without_the_sdk_marker() -> None:
    doc = {"status": "ok", "window_seconds": 300, "metrics": {"sample_size": 10, "error_rate": 0.0}}
    assert read_health(200, body(doc), JSON, 1.0).format == "sdk"


@pytest.mark.parametrize(("top", "composite", "expected"), [
    ("ok", "healthy", "ok"),
    ("healthy", None, "ok"),
    ("ok", "degraded", "warning"),
    ("WARNING", "healthy", "warning"),
    ("unhealthy", "healthy", "critical"),
    ("down", None, "critical"),
    (None, "degraded", "warning"),
    (None, None, None),
])
def test_status_words_are_normalised_and_the_worse_of_both_fields_wins(
        top: str | None, composite: str | None, expected: str | None) -> None:
    doc: dict[str, Any] = {"metrics": {"sample_size": 5}, "health_score": {"score": 50}}
    if top is not None:
        doc["status"] = top
    if composite is not None:
        doc["health_score"]["status"] = composite
    reading = read_health(200, body(doc), JSON, 1.0)
    assert (reading.outcome, reading.status) == ("answered", expected)


@pytest.mark.parametrize(("doc", "expected"), [
    ({"status": "ok", "reason": "no_data", "metrics": {"sample_size": 40}}, "no_data"),
    ({"status": "warning", "metrics": {"sample_size": 0}}, "no_data"),
    ({"status": "no_data", "metrics": {}}, "no_data"),
    ({"status": "critical", "metrics": {"sample_size": 0}}, "critical"),  # a critical claim is kept
])
def test_no_data_is_never_read_as_ok(doc: dict, expected: str) -> None:
    assert read_health(200, body(doc), JSON, 1.0).status == expected


@pytest.mark.parametrize(("sent", "read"), [(18.5, 0.185), (100, 1.0), (1, 1.0), (0.4, 0.4), (0, 0.0)])
def test_an_error_rate_above_one_is_read_as_a_percentage(sent: float, read: float) -> None:
    doc = {"status": "critical", "metrics": {"error_rate": sent, "sample_size": 10}}
    reading = read_health(200, body(doc), JSON, 1.0)
    assert reading.outcome == "answered"
    assert reading.error_rate == pytest.approx(read)


def test_a_hosted_body_with_an_http_error_keeps_its_metrics() -> None:
    reading = read_health(503, hosted("slow"), JSON, 2.0)
    assert (reading.outcome, reading.format, reading.http_status) == ("http_error", "hosted", 503)
    assert reading.status == "critical"
    assert reading.p95_ms == 1306.7
    assert "503" in reading.detail


@pytest.mark.parametrize(("code", "payload", "ctype"), [
    (200, b"OK", "text/plain"),
    (204, b"", ""),
    (302, b"", "text/html"),
    (200, b"<html><body>fine</body></html>", "text/html"),
    (200, b'{"status": "UP"}', JSON),          # JSON, but neither SDK format: only the HTTP status speaks
    (200, b"[1, 2, 3]", JSON),
])
def test_plain_answers_below_400_read_as_ok(code: int, payload: bytes, ctype: str) -> None:
    reading = read_health(code, payload, ctype, 4.0)
    assert (reading.outcome, reading.format, reading.status, reading.http_status) == ("answered", "plain", "ok", code)


@pytest.mark.parametrize("code", [400, 404, 500, 503])
def test_plain_answers_from_400_are_http_errors_with_a_detail(code: int) -> None:
    reading = read_health(code, b"Service Unavailable", "text/plain", 4.0)
    assert (reading.outcome, reading.format, reading.status) == ("http_error", "plain", None)
    assert reading.detail.startswith(f"HTTP {code} ")


@pytest.mark.parametrize("code", [200, 500])
def test_garbage_bytes_are_plain_and_do_not_raise(code: int) -> None:
    reading = read_health(code, b"\x00\xff\xfe{{{\x80garbage", JSON, 1.0)
    assert reading.format == "plain"
    assert reading.outcome == ("answered" if code == 200 else "http_error")


@pytest.mark.parametrize(("doc", "words"), [
    ({"status": 5, "metrics": {}}, "status is int"),
    ({"status": "ok", "metrics": ["sample_size", 3]}, "metrics is list"),
    ({"status": "ok", "metrics": {"error_rate": "high"}}, "metrics.error_rate is str"),
    ({"status": "ok", "metrics": {"overall_p95_ms": True}}, "metrics.overall_p95_ms is bool"),
    ({"status": "ok", "metrics": {"sample_size": 2.5}}, "not a whole number"),
    ({"status": "ok", "metrics": {"overall_p95_ms": -1}}, "non-negative"),
    ({"status": "ok", "metrics": {"error_rate": 250}}, "neither a fraction nor a percentage"),
    ({"status": "ok", "health_score": {"score": 140}}, "above 100"),
    ({"status": "ok", "health_score": "good"}, "health_score is str"),
    ({"status": "sideways", "metrics": {}}, "not a known status"),
    ({"status": "ok", "reason": 7, "metrics": {}}, "reason is int"),
    ({"sdk": "alertengine", "status": "ok", "metrics": {"anomaly_score": {"v": 1}}}, "anomaly_score is dict"),
])
def test_a_claimed_format_with_wrong_types_is_a_bad_payload(doc: dict, words: str) -> None:
    reading = read_health(200, body(doc), JSON, 1.0)
    assert reading.outcome == "bad_payload"
    assert reading.status is None
    assert words in reading.detail


def test_non_finite_numbers_are_a_bad_payload() -> None:
    reading = read_health(200, b'{"status": "ok", "metrics": {"overall_p95_ms": NaN}}', JSON, 1.0)
    assert reading.outcome == "bad_payload"


def test_wrong_types_behind_an_http_error_stay_an_http_error_and_say_why() -> None:
    reading = read_health(500, body({"status": "ok", "metrics": {"error_rate": "x"}}), JSON, 1.0)
    assert (reading.outcome, reading.format, reading.status) == ("http_error", "hosted", None)
    assert "HTTP 500" in reading.detail and "error_rate" in reading.detail


@settings(max_examples=300, deadline=None)
@given(code=st.integers(-5, 1000), payload=st.one_of(
    st.binary(max_size=300),
    st.sampled_from([hosted(n) for n in ("idle", "healthy", "errors", "slow")]).flatmap(
        lambda full: st.integers(0, len(full)).map(lambda cut: full[:cut])),
    st.recursive(st.none() | st.booleans() | st.floats() | st.integers() | st.text(max_size=8),
                 lambda inner: st.lists(inner, max_size=3) | st.dictionaries(
                     st.sampled_from(["status", "metrics", "health_score", "sdk", "window_seconds", "reason",
                                      "error_rate", "sample_size", "score", "overall_p95_ms"]), inner, max_size=4),
                 max_leaves=12).map(lambda doc: json.dumps(doc).encode()),
), ctype=st.sampled_from(["", JSON, "text/html"]), latency=st.floats())
def test_read_health_never_raises_and_stays_in_vocabulary(code: int, payload: bytes, ctype: str,
                                                          latency: float) -> None:
    reading = read_health(code, payload, ctype, latency)
    assert reading.outcome in OUTCOMES
    assert reading.format in ("sdk", "hosted", "plain")
    assert reading.status is None or reading.status in SELF_STATUSES
    assert reading.error_rate is None or 0.0 <= reading.error_rate <= 1.0
    assert reading.outcome != "answered" or reading.status is not None or reading.format != "plain"


# --------------------------------------------------------------------------------------------
# The poll loop, against a real threaded HTTP server on 127.0.0.1
# --------------------------------------------------------------------------------------------

INTERVAL = 0.2
TIMEOUT = 2.0  # generous: a loaded machine must not turn a healthy answer into a timeout


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    release: threading.Event

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 — quiet
        pass

    def _send(self, code: int, payload: bytes, ctype: str, extra: dict[str, str] | None = None) -> None:
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(payload)))
        for key, value in (extra or {}).items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(payload)

    def do_GET(self) -> None:  # noqa: N802
        path = self.path
        try:
            if path.startswith("/healthy"):
                self._send(200, hosted("healthy"), JSON)
            elif path == "/slow":
                self.release.wait(5 * TIMEOUT)   # far longer than the poll timeout
                self._send(200, b"late", "text/plain")
            elif path == "/500":
                self._send(500, b"boom", "text/plain")
            elif path == "/huge":
                self._send(200, b"{" + b" " * (MAX_BODY_BYTES + 10) + b"}", JSON)
            elif path == "/gzip":
                self._send(200, gzip.compress(hosted("errors")), JSON, {"Content-Encoding": "gzip"})
            elif path == "/bomb":
                self._send(200, gzip.compress(b" " * (8 * MAX_BODY_BYTES)), JSON, {"Content-Encoding": "gzip"})
            else:
                self._send(404, b"no", "text/plain")
        except (BrokenPipeError, ConnectionResetError):
            pass


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    release = threading.Event()
    handler = type("Handler", (_Handler,), {"release": release})
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    release.set()
    httpd.shutdown()
    httpd.server_close()
    thread.join(5)


@pytest.fixture
def dead_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/health"  # nothing listens there any more


class Recorder:
    """Collects readings per target key with the time they arrived."""

    def __init__(self) -> None:
        self.readings: dict[str, list[tuple[float, HealthReading, float]]] = defaultdict(list)

    async def __call__(self, target: PollTarget, reading: HealthReading, lateness: float) -> None:
        self.readings[target.key].append((time.monotonic(), reading, lateness))

    def outcomes(self, key: str) -> set[str]:
        return {reading.outcome for _, reading, _ in self.readings[key]}


async def run_until(poller: Poller, condition: Callable[[], Any], what: str) -> None:
    """Run the poll loop until ``condition`` holds (generous deadline), then stop it."""
    task = asyncio.create_task(poller.run())
    try:
        await async_wait_for(condition, what=what)
    finally:
        await poller.stop()
        await asyncio.wait_for(task, 30)


def after(record: Recorder, key: str, moment: float) -> list[HealthReading]:
    return [reading for t, reading, _ in record.readings[key] if t > moment]


async def test_each_target_gets_its_own_outcome_and_slow_ones_do_not_delay_the_fast(
        server: str, dead_url: str) -> None:
    targets = [PollTarget("t/fast", f"{server}/healthy", INTERVAL), PollTarget("t/slow", f"{server}/slow", INTERVAL),
               PollTarget("t/error", f"{server}/500", INTERVAL), PollTarget("t/dead", dead_url, INTERVAL),
               PollTarget("t/huge", f"{server}/huge", INTERVAL)]
    record = Recorder()
    poller = Poller(lambda: targets, record, concurrency=8, timeout=TIMEOUT, refresh=0.5)
    await run_until(poller, lambda: len(record.readings["t/fast"]) >= 5
                    and all(record.readings[t.key] for t in targets), "five fast polls and one of each")

    assert record.outcomes("t/fast") == {"answered"}
    assert record.outcomes("t/slow") == {"timeout"}
    assert record.outcomes("t/error") == {"http_error"}
    assert record.outcomes("t/dead") == {"unreachable"}
    assert record.outcomes("t/huge") == {"bad_payload"}
    fast = record.readings["t/fast"]
    assert all(reading.status == "ok" and reading.format == "hosted" for _, reading, _ in fast)
    # Had the slow target's polls held up the fast one, every fast poll would be at least a poll
    # timeout late; the median is robust to a loaded machine's occasional stall.
    assert statistics.median(lateness for _, _, lateness in fast) < TIMEOUT
    slow_ms = record.readings["t/slow"][0][1].latency_ms
    assert TIMEOUT * 1000 * 0.9 <= slow_ms < 5 * TIMEOUT * 1000  # cut off at the timeout, not served late
    assert poller.stats.polls == sum(len(r) for r in record.readings.values())
    assert len(poller.stats.lateness) == poller.stats.polls


async def test_a_target_removed_from_the_list_stops_being_polled_and_an_added_one_starts(server: str) -> None:
    current = [PollTarget("t/stays", f"{server}/healthy?a", INTERVAL),
               PollTarget("t/goes", f"{server}/healthy?b", INTERVAL)]
    record = Recorder()
    poller = Poller(lambda: list(current), record, timeout=TIMEOUT, refresh=0.2)
    task = asyncio.create_task(poller.run())
    try:
        await async_wait_for(lambda: record.readings["t/goes"] and record.readings["t/stays"], what="both polled")
        current[:] = [current[0], PollTarget("t/new", f"{server}/500", INTERVAL)]
        # The first poll of the added target proves a refresh has read the new list.
        await async_wait_for(lambda: record.readings["t/new"], what="the added target polled")
        refreshed = record.readings["t/new"][0][0]
        await async_wait_for(lambda: len(after(record, "t/stays", refreshed)) >= 3, what="three more polls")
    finally:
        await poller.stop()
        await asyncio.wait_for(task, 30)

    assert len(after(record, "t/goes", refreshed)) <= 1  # at most the one poll already in flight
    assert record.outcomes("t/new") == {"http_error"}


async def test_a_changed_url_is_picked_up_at_the_next_refresh(server: str) -> None:
    url = {"now": f"{server}/healthy"}
    record = Recorder()
    poller = Poller(lambda: [PollTarget("t/moving", url["now"], INTERVAL)], record, timeout=TIMEOUT, refresh=0.2)

    def outcomes() -> list[str]:
        return [reading.outcome for _, reading, _ in record.readings["t/moving"]]

    task = asyncio.create_task(poller.run())
    try:
        await async_wait_for(lambda: "answered" in outcomes(), what="a healthy poll")
        url["now"] = f"{server}/500"
        await async_wait_for(lambda: outcomes().count("http_error") >= 2, what="two polls of the new URL")
    finally:
        await poller.stop()
        await asyncio.wait_for(task, 30)

    assert outcomes()[0] == "answered"
    assert outcomes()[-1] == "http_error"
    assert outcomes() == sorted(outcomes())  # every answered reading precedes every http_error one


async def test_a_failing_on_reading_is_logged_and_polling_goes_on(server: str,
                                                                  caplog: pytest.LogCaptureFixture) -> None:
    calls: list[str] = []

    async def explode(target: PollTarget, reading: HealthReading, lateness: float) -> None:
        calls.append(target.key)
        raise RuntimeError("downstream broke")

    targets = [PollTarget("t/a", f"{server}/healthy", INTERVAL)]
    poller = Poller(lambda: targets, explode, timeout=TIMEOUT)
    await run_until(poller, lambda: len(calls) >= 3, "three polls")
    assert poller.stats.callback_errors == len(calls)
    assert "on_reading failed for t/a" in caplog.text


async def test_a_failing_target_list_keeps_the_previous_targets(server: str) -> None:
    state = {"fail": False, "failures": 0}

    def targets() -> list[PollTarget]:
        if state["fail"]:
            state["failures"] += 1
            raise OSError("database locked")
        return [PollTarget("t/a", f"{server}/healthy", INTERVAL)]

    record = Recorder()
    poller = Poller(targets, record, timeout=TIMEOUT, refresh=0.2)
    task = asyncio.create_task(poller.run())
    try:
        await async_wait_for(lambda: record.readings["t/a"], what="a first poll")
        state["fail"] = True
        failed_at = time.monotonic()
        await async_wait_for(lambda: state["failures"] >= 2 and len(after(record, "t/a", failed_at)) >= 2,
                             what="two failed refreshes and polls after them")
        assert len(after(record, "t/a", failed_at)) >= 2   # the previous target is still polled
    finally:
        await poller.stop()
        await asyncio.wait_for(task, 30)


async def test_compressed_bodies_are_read_and_decompression_bombs_are_cut_off(server: str) -> None:
    targets = [PollTarget("t/gzip", f"{server}/gzip", INTERVAL), PollTarget("t/bomb", f"{server}/bomb", INTERVAL)]
    record = Recorder()
    poller = Poller(lambda: targets, record, timeout=TIMEOUT)
    await run_until(poller, lambda: record.readings["t/gzip"] and record.readings["t/bomb"], "both polled")
    assert {(r.outcome, r.format, r.status) for _, r, _ in record.readings["t/gzip"]} == {
        ("answered", "hosted", "critical")}
    assert record.outcomes("t/bomb") == {"bad_payload"}
    assert all("cut off" in r.detail for _, r, _ in record.readings["t/bomb"])


async def test_stop_before_any_poll_returns_and_the_poller_does_not_run_twice(server: str) -> None:
    poller = Poller(lambda: [PollTarget("t/a", f"{server}/healthy", 60.0)], Recorder())
    task = asyncio.create_task(poller.run())
    await asyncio.sleep(0.05)  # let it start
    await asyncio.wait_for(poller.stop(), 30)
    await asyncio.wait_for(task, 30)
    with pytest.raises(RuntimeError):
        await poller.run()


def test_settings_out_of_range_are_refused() -> None:
    async def sink(target: PollTarget, reading: HealthReading, lateness: float) -> None:
        pass

    for bad in ({"concurrency": 0}, {"timeout": 0}, {"jitter": 1.0}, {"refresh": -1}):
        with pytest.raises(ValueError):
            Poller(list, sink, **bad)  # type: ignore[arg-type]


# --------------------------------------------------------------------------------------------
# Telemetry, quiet, stopping
# --------------------------------------------------------------------------------------------

async def test_each_poll_is_observed_in_telemetry_as_ok_or_failed(server: str, dead_url: str) -> None:
    telemetry = Telemetry()
    targets = [PollTarget("t/ok", f"{server}/healthy", INTERVAL), PollTarget("t/dead", dead_url, INTERVAL),
               PollTarget("t/error", f"{server}/500", INTERVAL)]
    record = Recorder()
    poller = Poller(lambda: targets, record, timeout=TIMEOUT, telemetry=telemetry)
    await run_until(poller, lambda: all(len(record.readings[t.key]) >= 2 for t in targets), "two polls of each")

    def sample(name: str, **labels: str) -> float:
        value = telemetry.registry.get_sample_value(name, labels)
        return 0.0 if value is None else value

    # a readable answer is "ok" whatever it says; unreachable, timeouts, HTTP errors and unreadable ones failed
    assert poller.stats.outcomes["answered"] >= len(record.readings["t/ok"]) >= 2
    assert sample("alertengine_polls_total", outcome="ok") == poller.stats.outcomes["answered"]
    assert sample("alertengine_polls_total", outcome="failed") == poller.stats.polls - poller.stats.outcomes["answered"]
    assert sample("alertengine_polls_total", outcome="breach") == 0.0    # policy's call, not the poller's
    assert sample("alertengine_poll_lateness_seconds_count") == poller.stats.polls
    assert sample("alertengine_poll_lateness_seconds_sum") == pytest.approx(sum(poller.stats.lateness))


async def test_polling_logs_nothing_at_info(server: str, dead_url: str, caplog: pytest.LogCaptureFixture) -> None:
    """Every poll, answered or failed, is a reading and a counter, never a log line."""
    caplog.set_level(logging.DEBUG)
    targets = [PollTarget("t/ok", f"{server}/healthy", INTERVAL), PollTarget("t/dead", dead_url, INTERVAL),
               PollTarget("t/huge", f"{server}/huge", INTERVAL)]
    record = Recorder()
    poller = Poller(lambda: targets, record, timeout=TIMEOUT)
    await run_until(poller, lambda: all(len(record.readings[t.key]) >= 3 for t in targets), "three polls of each")
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.INFO] == []


async def test_stop_returns_promptly_with_hanging_targets_and_polls_in_flight() -> None:
    hanging = await serve(lambda request, connection, head: HANG)
    targets = [PollTarget(f"t/{n}", f"{hanging.url}/{n}", INTERVAL) for n in range(20)]
    poller = Poller(lambda: targets, Recorder(), timeout=60.0)       # no poll would end by itself
    task = asyncio.create_task(poller.run())
    try:
        await async_wait_for(lambda: hanging.hanging == len(targets), what="every poll in flight")
        started = time.monotonic()
        await poller.stop()
        took = time.monotonic() - started
        await asyncio.wait_for(task, 30)
        assert took < 1.0 + 2 * STOP_GRACE   # about 1 s, not the 60 s poll timeout
        await async_wait_for(lambda: hanging.closed == len(targets), what="every connection closed")
        assert poller.stats.polls == 0       # abandoned fetches are no readings
    finally:
        await hanging.stop()


async def test_stop_waits_a_little_for_a_handover_then_cancels_it(server: str) -> None:
    entered, cancelled = asyncio.Event(), asyncio.Event()

    async def stuck(target: PollTarget, reading: HealthReading, lateness: float) -> None:
        entered.set()
        try:
            await asyncio.Event().wait()     # never set: a handover that never ends
        except asyncio.CancelledError:
            cancelled.set()
            raise

    poller = Poller(lambda: [PollTarget("t/a", f"{server}/healthy", INTERVAL)], stuck, timeout=TIMEOUT)
    task = asyncio.create_task(poller.run())
    await asyncio.wait_for(entered.wait(), 30)
    started = time.monotonic()
    await poller.stop()
    took = time.monotonic() - started
    await asyncio.wait_for(task, 30)
    assert cancelled.is_set()
    assert STOP_GRACE * 0.9 <= took < 1.0 + 2 * STOP_GRACE


async def test_a_target_with_an_unusable_url_reads_unreachable_and_the_others_go_on(server: str) -> None:
    targets = [PollTarget("t/bad", "ftp://svc.example.test/health", INTERVAL),
               PollTarget("t/ok", f"{server}/healthy", INTERVAL)]
    record = Recorder()
    poller = Poller(lambda: targets, record, timeout=TIMEOUT)
    await run_until(poller, lambda: len(record.readings["t/bad"]) >= 2 and record.readings["t/ok"], "both polled")
    bad = {(r.outcome, r.detail) for _, r, _ in record.readings["t/bad"]}
    assert bad == {("unreachable", "unusable URL: the scheme 'ftp' is neither http nor https")}
    assert record.outcomes("t/ok") == {"answered"}


async def test_the_poller_sends_its_own_user_agent_and_no_cookies() -> None:
    seen = await serve(lambda request, connection, head: answer(extra="Set-Cookie: s=1\r\n"))
    record = Recorder()
    poller = Poller(lambda: [PollTarget("t/a", f"{seen.url}/h", INTERVAL)], record, timeout=TIMEOUT)
    try:
        await run_until(poller, lambda: len(record.readings["t/a"]) >= 2, "two polls")
    finally:
        await seen.stop()
    assert all(f"\r\nUser-Agent: alertengine-poller/{__version__}\r\n".encode() in h for h in seen.heads)
    assert all(b"cookie" not in h.lower() for h in seen.heads)
    assert seen.opened == 1                  # kept alive between polls
