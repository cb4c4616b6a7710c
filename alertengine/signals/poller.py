"""Health poller: fetches every service's health URL on its own schedule and reads each answer as a HealthReading.

Two halves:

* ``read_health`` — pure: one HTTP answer (status, body, content type, round trip) becomes one
  ``HealthReading``. It understands our SDK's JSON (format ``"sdk"``), the hosted product's SDK
  JSON (format ``"hosted"``) and, for any other URL, only the HTTP status (format ``"plain"``).
  It never raises.
* ``Poller`` — the loop: a min-heap of due times, a semaphore bounding concurrent polls, one shared
  pooled ``httpx.AsyncClient``, a per-poll deadline, and the target list re-read every few seconds.

Reading rules worth knowing (the hosted format's own fields disagree with each other):

* status is normalised to ``ok | warning | critical | no_data``. When both the top-level
  ``status`` and ``health_score.status`` are given, the *worse* of the two wins (the hosted SDK
  can say ``status: critical`` next to ``health_score.status: healthy``; we never pick the
  comfortable one).
* ``reason: no_data``, ``sample_size == 0`` or a status of ``no_data`` make the status
  ``no_data`` — an idle service that says ``ok`` with nothing measured is not ok. A ``critical``
  status is kept as is, though: a service that reports critical with no traffic still means it.
* ``error_rate`` is a fraction in 0..1. A value above 1 (up to 100) is read as a percentage and
  divided by 100; above 100 the payload is refused. (A percentage of 1 % or less sent as e.g.
  ``0.5`` is indistinguishable from the fraction 0.5 and is read as the fraction.)
* A JSON object claims a format by its keys: ``"sdk": "alertengine"`` or ``window_seconds`` →
  ``sdk``; else ``metrics`` or ``health_score`` → ``hosted``; anything else (other JSON, HTML,
  text, garbage, nothing) is ``plain``. A claimed format whose fields have the wrong types,
  non-finite or negative numbers or an unknown status word is ``bad_payload``. Fields we do not
  read are not checked.
"""

from __future__ import annotations

import asyncio
import heapq
import http
import http.cookiejar
import itertools
import json
import logging
import math
import random
import time
import zlib
from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable, Iterable, Mapping

import httpx

from .. import __version__
from ..net.guard import GuardedTransport
from ..net.urlpolicy import UrlPolicy
from .model import HealthReading

log = logging.getLogger("alertengine.poller")

MAX_BODY_BYTES = 1024 * 1024          # bodies above this are cut off and read as bad_payload
MAX_DETAIL_CHARS = 300
LATENESS_SAMPLES = 100_000            # bounded window of lateness samples kept in PollStats
# Idle keep-alive connections kept by the default client. Small on purpose: httpcore 1.0's pool
# scans every pooled connection (quadratically for idle ones, with a poll() syscall each) on every
# request and release (encode/httpcore#1035), so a pool of hundreds of idle connections costs more
# CPU than the reconnects it saves. Concurrency is still bounded by ``concurrency`` connections.
KEEPALIVE_CONNECTIONS = 16

_STATUS_WORDS = {
    "ok": "ok", "healthy": "ok",
    "warning": "warning", "degraded": "warning",
    "critical": "critical", "unhealthy": "critical", "down": "critical",
    "no_data": "no_data",
}
_SEVERITY = {"ok": 0, "warning": 1, "critical": 2}
_REQUEST_HEADERS = {
    "User-Agent": f"alertengine-poller/{__version__}",
    "Accept": "application/json, */*;q=0.5",
    "Accept-Encoding": "identity",  # health bodies are small; refusing compression avoids decompression bombs
}


# --------------------------------------------------------------------------------------------
# Reading one answer
# --------------------------------------------------------------------------------------------

class _BadPayload(Exception):
    """A body that claims a known format but does not hold to it."""


def _clip(text: str) -> str:
    return text if len(text) <= MAX_DETAIL_CHARS else text[:MAX_DETAIL_CHARS - 1] + "…"


def _http_words(status_code: int) -> str:
    try:
        return f"HTTP {status_code} {http.HTTPStatus(status_code).phrase}"
    except ValueError:
        return f"HTTP {status_code}"


def _claimed_format(doc: object) -> str | None:
    if not isinstance(doc, dict):
        return None
    if doc.get("sdk") == "alertengine" or "window_seconds" in doc:
        return "sdk"
    if "metrics" in doc or "health_score" in doc:
        return "hosted"
    return None


def _name(where: str, key: str) -> str:
    return f"{where}.{key}" if where else key


def _section(doc: Mapping[str, Any], key: str) -> Mapping[str, Any]:
    value = doc.get(key)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise _BadPayload(f"{key} is {type(value).__name__}, not an object")
    return value


def _number(section: Mapping[str, Any], key: str, where: str) -> float | None:
    value = section.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise _BadPayload(f"{_name(where, key)} is {type(value).__name__}, not a number")
    try:
        number = float(value)
    except OverflowError:
        raise _BadPayload(f"{_name(where, key)} is out of range") from None
    if not math.isfinite(number) or number < 0:
        raise _BadPayload(f"{_name(where, key)} is {number!r}, not a finite non-negative number")
    return number


def _count(section: Mapping[str, Any], key: str, where: str) -> int | None:
    number = _number(section, key, where)
    if number is None:
        return None
    if not number.is_integer():
        raise _BadPayload(f"{_name(where, key)} is {number!r}, not a whole number")
    return int(number)


def _status_word(section: Mapping[str, Any], key: str, where: str) -> str | None:
    value = section.get(key)
    if value is None:
        return None
    if not isinstance(value, str):
        raise _BadPayload(f"{_name(where, key)} is {type(value).__name__}, not a string")
    word = _STATUS_WORDS.get(value.strip().lower())
    if word is None:
        raise _BadPayload(f"{_name(where, key)} {value[:40]!r} is not a known status")
    return word


def _error_rate(metrics: Mapping[str, Any]) -> float | None:
    rate = _number(metrics, "error_rate", "metrics")
    if rate is None or rate <= 1.0:
        return rate
    if rate <= 100.0:
        return rate / 100.0           # sent as a percentage
    raise _BadPayload(f"metrics.error_rate is {rate!r}, neither a fraction nor a percentage")


def _parse_claimed(doc: Mapping[str, Any], fmt: str) -> dict[str, Any]:
    """The HealthReading fields a claimed-format body carries; raises _BadPayload.

    Each format's fields are read for what they mean. Our SDK's ``anomaly_score`` is the distance
    from a learned baseline in units of its spread (0 is normal). The hosted SDK's field of the
    same name is the relative spread of the current window with no baseline at all: a healthy
    service with a normal latency tail scores high on it every day. It is not an anomaly, so it
    is not read as one (its effect on the hosted health score still counts)."""
    metrics = _section(doc, "metrics")
    score = _section(doc, "health_score")
    reason = doc.get("reason")
    if reason is not None and not isinstance(reason, str):
        raise _BadPayload(f"reason is {type(reason).__name__}, not a string")

    top = _status_word(doc, "status", "")
    composite = _status_word(score, "status", "health_score")
    sample_size = _count(metrics, "sample_size", "metrics")
    health_score = _number(score, "score", "health_score")
    if health_score is not None and health_score > 100:
        raise _BadPayload(f"health_score.score is {health_score!r}, above 100")

    said = [s for s in (top, composite) if s is not None and s != "no_data"]
    status = max(said, key=_SEVERITY.__getitem__) if said else None
    no_data = (reason is not None and reason.strip().lower() == "no_data") or sample_size == 0 \
        or "no_data" in (top, composite)
    if no_data and status != "critical":
        status = "no_data"

    return {
        "status": status,
        "p95_ms": _number(metrics, "overall_p95_ms", "metrics"),
        "error_rate": _error_rate(metrics),
        "anomaly_score": _number(metrics, "anomaly_score", "metrics") if fmt == "sdk" else None,
        "health_score": health_score,
        "sample_size": sample_size,
    }


def _load_json(body: bytes, content_type: str) -> object:
    head = body[:64].lstrip(b" \t\r\n\xef\xbb\xbf")
    if "json" not in content_type.lower() and not head.startswith(b"{"):
        return None
    try:
        return json.loads(body)
    except (ValueError, RecursionError):  # JSONDecodeError, UnicodeDecodeError, int-digit limit, nesting
        return None


def _read_health(status_code: int, body: bytes, content_type: str, latency_ms: float) -> HealthReading:
    latency = float(latency_ms) if isinstance(latency_ms, (int, float)) and math.isfinite(latency_ms) \
        and latency_ms >= 0 else None
    code = status_code if isinstance(status_code, int) and not isinstance(status_code, bool) else None
    answered_2xx = code is not None and 200 <= code < 300
    doc = _load_json(bytes(body), content_type if isinstance(content_type, str) else "")
    fmt = _claimed_format(doc)

    if fmt is None:                   # plain: only the HTTP status speaks
        if code is not None and 200 <= code < 400:
            return HealthReading(outcome="answered", format="plain", http_status=code, latency_ms=latency,
                                 status="ok")
        return HealthReading(outcome="http_error", format="plain", http_status=code, latency_ms=latency,
                             detail=_http_words(code) if code is not None else "no HTTP status")

    assert isinstance(doc, dict)
    try:
        fields = _parse_claimed(doc, fmt)
    except _BadPayload as exc:
        if answered_2xx:
            return HealthReading(outcome="bad_payload", format=fmt, http_status=code, latency_ms=latency,
                                 detail=_clip(f"{fmt} health body: {exc}"))
        return HealthReading(outcome="http_error", format=fmt, http_status=code, latency_ms=latency,
                             detail=_clip(f"{_http_words(code) if code is not None else 'no HTTP status'}; "
                                          f"unreadable {fmt} health body: {exc}"))
    if answered_2xx:
        return HealthReading(outcome="answered", format=fmt, http_status=code, latency_ms=latency, **fields)
    return HealthReading(outcome="http_error", format=fmt, http_status=code, latency_ms=latency,
                         detail=_http_words(code) if code is not None else "no HTTP status", **fields)


def read_health(status_code: int, body: bytes, content_type: str, latency_ms: float) -> HealthReading:
    """Read one HTTP answer from a health URL. Pure; never raises (anything unforeseen is bad_payload)."""
    try:
        return _read_health(status_code, body, content_type, latency_ms)
    except Exception as exc:  # noqa: BLE001 — the contract is "never raises"
        return HealthReading(outcome="bad_payload", format="plain",
                             http_status=status_code if isinstance(status_code, int) else None,
                             detail=_clip(f"unreadable health answer: {type(exc).__name__}"))


# --------------------------------------------------------------------------------------------
# The poll loop
# --------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class PollTarget:
    """One health URL to poll; ``key`` is the caller's opaque id (e.g. ``"tenant/service_id"``)."""

    key: str
    url: str
    interval: float                   # seconds between polls


@dataclass
class PollStats:
    """Running counters of one Poller, for the benchmark and diagnostics (mutable; the Poller owns it)."""

    polls: int = 0
    callback_errors: int = 0
    outcomes: Counter[str] = field(default_factory=Counter)
    lateness: deque[float] = field(default_factory=lambda: deque(maxlen=LATENESS_SAMPLES))  # seconds


@dataclass(frozen=True, eq=False)
class _Slot:
    """The schedule identity of one target version; a new slot replaces it when the target changes."""

    target: PollTarget
    generation: int


class _TooLarge(Exception):
    pass


class _UnsupportedEncoding(Exception):
    pass


def _no_cookies() -> http.cookiejar.CookieJar:
    return http.cookiejar.CookieJar(policy=http.cookiejar.DefaultCookiePolicy(allowed_domains=[]))


async def _read_capped(response: httpx.Response) -> bytes:
    """The body, at most MAX_BODY_BYTES after decoding; raises _TooLarge / _UnsupportedEncoding."""
    declared = response.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > MAX_BODY_BYTES:
        raise _TooLarge
    encoding = response.headers.get("content-encoding", "").strip().lower()
    decoder: Any = None
    if encoding in ("gzip", "x-gzip"):
        decoder = zlib.decompressobj(16 + zlib.MAX_WBITS)
    elif encoding == "deflate":
        decoder = zlib.decompressobj()
    elif encoding not in ("", "identity"):
        raise _UnsupportedEncoding(encoding)
    body = bytearray()
    async for chunk in response.aiter_raw():
        if decoder is not None:
            chunk = decoder.decompress(chunk, MAX_BODY_BYTES + 1 - len(body))
        body += chunk
        if len(body) > MAX_BODY_BYTES:
            raise _TooLarge
    if decoder is not None:
        body += decoder.flush()
        if len(body) > MAX_BODY_BYTES:
            raise _TooLarge
    return bytes(body)


class Poller:
    """Polls every target's URL every ``interval`` seconds and hands each reading to ``on_reading``.

    * Each target starts at a random offset in [0, interval) and then every interval ± ``jitter``
      × interval, counted from its previous *scheduled* time (no drift). A target has at most one
      poll in flight: when a poll (or its ``on_reading``) overruns the next slot, the next poll
      starts as soon as it ends. Readings of one target therefore arrive in order.
    * At most ``concurrency`` polls run at once; each has its own ``timeout`` (per httpx phase
      and for the whole exchange), so a slow or dead service costs one slot, never anyone's
      schedule.
    * ``targets()`` is re-read every ``refresh`` seconds: new keys are scheduled, removed keys stop,
      a changed url or interval takes a fresh schedule. A reading of a target that was removed or
      changed while its poll was in flight is dropped. If ``targets()`` raises, the previous set
      stays.
    * ``on_reading(target, reading, lateness_seconds)`` is awaited outside the concurrency slot;
      exceptions are logged and counted, never fatal. Lateness = actual start (after waiting for a
      slot) − scheduled time.
    * The default client: at most ``concurrency`` connections (only KEEPALIVE_CONNECTIONS kept
      idle), no redirects, no cookies, no environment (proxies, netrc, CA overrides) — inject
      ``client`` for anything else. An injected client is not closed by the Poller.
    """

    def __init__(self, targets: Callable[[], Iterable[PollTarget]],
                 on_reading: Callable[[PollTarget, HealthReading, float], Awaitable[None]], *,
                 concurrency: int = 200, timeout: float = 3.0, jitter: float = 0.1, refresh: float = 5.0,
                 client: httpx.AsyncClient | None = None, url_policy: UrlPolicy | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        if not (timeout > 0 and math.isfinite(timeout)):
            raise ValueError("timeout must be a positive number of seconds")
        if not 0 <= jitter < 1:
            raise ValueError("jitter must be in [0, 1)")
        if not (refresh > 0 and math.isfinite(refresh)):
            raise ValueError("refresh must be a positive number of seconds")
        self._targets = targets
        self._on_reading = on_reading
        self._url_policy = url_policy
        self._concurrency = concurrency
        self._timeout = float(timeout)
        self._jitter = float(jitter)
        self._refresh_every = float(refresh)
        self._client = client
        self._clock = clock
        self._rng = random.Random()
        self._generations = itertools.count()
        self._slots: dict[str, _Slot] = {}
        self._heap: list[tuple[float, int, _Slot]] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self._rejected: set[str] = set()
        self._semaphore = asyncio.Semaphore(concurrency)
        self._stopping = asyncio.Event()
        self._wake = asyncio.Event()
        self._done = asyncio.Event()
        self._running = False
        self.stats = PollStats()

    # -- lifecycle ---------------------------------------------------------------------------

    async def run(self) -> None:
        """Poll until ``stop()``; in-flight polls are cancelled on the way out."""
        if self._running or self._done.is_set():
            raise RuntimeError("a Poller runs once")
        self._running = True
        client = self._client if self._client is not None else self._make_client()
        try:
            await self._schedule_loop(client)
        finally:
            for task in list(self._tasks):
                task.cancel()
            if self._tasks:
                await asyncio.gather(*self._tasks, return_exceptions=True)
            if self._client is None:
                await client.aclose()
            self._running = False
            self._done.set()

    async def stop(self) -> None:
        """Stop polling; returns once ``run()`` has wound down (at once when called from ``on_reading``)."""
        self._stopping.set()
        self._wake.set()
        if self._running and asyncio.current_task() not in self._tasks:
            await self._done.wait()

    def _make_client(self) -> httpx.AsyncClient:
        limits = httpx.Limits(max_connections=self._concurrency,
                              max_keepalive_connections=min(self._concurrency, KEEPALIVE_CONNECTIONS),
                              keepalive_expiry=30.0)
        # with a URL policy, every poll connects only to addresses it allows (checked at connect time)
        transport = GuardedTransport(self._url_policy, limits=limits) if self._url_policy is not None else None
        return httpx.AsyncClient(
            limits=limits, transport=transport, timeout=httpx.Timeout(self._timeout), follow_redirects=False,
            cookies=_no_cookies(), trust_env=False, headers=_REQUEST_HEADERS)

    # -- scheduling --------------------------------------------------------------------------

    async def _schedule_loop(self, client: httpx.AsyncClient) -> None:
        next_refresh = self._clock()
        while not self._stopping.is_set():
            now = self._clock()
            if now >= next_refresh:
                self._refresh(now)
                next_refresh = now + self._refresh_every
            while self._heap and self._heap[0][0] <= now:
                due, _, slot = heapq.heappop(self._heap)
                if self._slots.get(slot.target.key) is slot:
                    task = asyncio.create_task(self._poll(client, slot, due))
                    self._tasks.add(task)
                    task.add_done_callback(self._tasks.discard)
            self._wake.clear()
            wake_at = min(next_refresh, self._heap[0][0]) if self._heap else next_refresh
            delay = wake_at - self._clock()
            if delay <= 0:
                await asyncio.sleep(0)
                continue
            try:
                async with asyncio.timeout(delay):
                    await self._wake.wait()
            except TimeoutError:
                pass

    def _refresh(self, now: float) -> None:
        try:
            wanted = list(self._targets())
        except Exception:
            log.exception("reading poll targets failed; keeping the previous %d", len(self._slots))
            return
        fresh: dict[str, PollTarget] = {}
        for target in wanted:
            if not isinstance(target, PollTarget) or not isinstance(target.interval, (int, float)) \
                    or not (math.isfinite(target.interval) and target.interval > 0):
                key = getattr(target, "key", repr(target))
                if key not in self._rejected:
                    self._rejected.add(key)
                    log.warning("not polling %r: needs a PollTarget with a positive finite interval", key)
                continue
            fresh[target.key] = target
        for key in [k for k in self._slots if k not in fresh]:
            del self._slots[key]      # its heap entry goes stale and is skipped when popped
        for key, target in fresh.items():
            current = self._slots.get(key)
            if current is not None and current.target == target:
                continue
            slot = _Slot(target, next(self._generations))
            self._slots[key] = slot
            self._push(slot, now + self._rng.random() * target.interval)

    def _push(self, slot: _Slot, due: float) -> None:
        heapq.heappush(self._heap, (due, slot.generation, slot))
        if self._heap[0][2] is slot:
            self._wake.set()

    def _next_due(self, scheduled: float, interval: float) -> float:
        step = interval * (1.0 + self._rng.uniform(-self._jitter, self._jitter))
        return max(scheduled + step, self._clock())

    # -- one poll ----------------------------------------------------------------------------

    async def _poll(self, client: httpx.AsyncClient, slot: _Slot, scheduled: float) -> None:
        target = slot.target
        try:
            async with self._semaphore:
                lateness = max(0.0, self._clock() - scheduled)
                reading = await self._fetch(client, target.url)
            self.stats.polls += 1
            self.stats.outcomes[reading.outcome] += 1
            self.stats.lateness.append(lateness)
            if self._slots.get(target.key) is slot:
                try:
                    await self._on_reading(target, reading, lateness)
                except Exception:
                    self.stats.callback_errors += 1
                    log.exception("on_reading failed for %s", target.key)
        finally:
            if self._slots.get(target.key) is slot and not self._stopping.is_set():
                self._push(slot, self._next_due(scheduled, target.interval))

    async def _fetch(self, client: httpx.AsyncClient, url: str) -> HealthReading:
        """One GET of ``url`` as a HealthReading; never raises (except cancellation)."""
        started = time.perf_counter()
        status: int | None = None

        def failed(outcome: str, detail: str) -> HealthReading:
            return HealthReading(outcome=outcome, format="plain", http_status=status,
                                 latency_ms=(time.perf_counter() - started) * 1000.0, detail=_clip(detail))

        try:
            async with asyncio.timeout(self._timeout):
                async with client.stream("GET", url, headers=_REQUEST_HEADERS, follow_redirects=False,
                                         timeout=httpx.Timeout(self._timeout)) as response:
                    status = response.status_code
                    content_type = response.headers.get("content-type", "")
                    body = await _read_capped(response)
        except (TimeoutError, httpx.TimeoutException):
            return failed("timeout", f"no complete answer within {self._timeout:g} s")
        except _TooLarge:
            return failed("bad_payload", f"response larger than {MAX_BODY_BYTES} bytes, cut off")
        except _UnsupportedEncoding as exc:
            return failed("bad_payload", f"unsupported content-encoding {str(exc)[:40]!r}")
        except zlib.error as exc:
            return failed("bad_payload", f"corrupt compressed body: {exc}")
        except httpx.ConnectError as exc:
            return failed("unreachable", f"cannot connect: {exc}")
        except (httpx.InvalidURL, httpx.UnsupportedProtocol) as exc:
            return failed("unreachable", f"unusable URL: {exc}")
        except httpx.ProtocolError as exc:
            return failed("bad_payload", f"malformed HTTP answer: {exc}")
        except httpx.TransportError as exc:
            return failed("unreachable", f"connection failed: {type(exc).__name__}: {exc}")
        except Exception as exc:  # noqa: BLE001 — one target's surprise must not stop the others
            log.warning("poll of a target failed unexpectedly: %s", type(exc).__name__, exc_info=True)
            return failed("unreachable", f"poll failed: {type(exc).__name__}")
        latency_ms = (time.perf_counter() - started) * 1000.0
        return read_health(status, body, content_type, latency_ms)
