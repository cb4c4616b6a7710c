"""Health poller: fetches every service's health URL on its own schedule and reads each answer as a HealthReading.

Stages, each its own module, frozen data between them:

* ``PollTarget`` (here): what to poll → ``http1.Request``, built once per target version;
* ``healthclient.HealthClient``: one GET over a pooled keep-alive connection → ``Answer``
  (or ``FetchFailed`` naming the outcome);
* ``health.read_health``: pure, the answer → ``HealthReading``;
* ``Poller`` (here): the schedule, the concurrency bound, the per-poll deadline, telemetry and
  handing each reading to ``on_reading``.

The poller is meant to be cheap: 2,000 services every 5 s within a fifth of a core
(``scripts/bench/poller.py``). So the schedule is one min-heap and one loop timer (no task sleeps
per target, no scheduler coroutine waking per poll), each poll is one task, and nothing is logged
per poll: only surprises (a failing ``targets()`` or ``on_reading``, an unexpected error) are.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import logging
import math
import random
import time
from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Awaitable, Callable, Iterable

from .. import __version__
from ..net.urlpolicy import UrlPolicy
from ..telemetry import Telemetry
from .health import clip, read_health
from .healthclient import FetchFailed, HealthClient, default_max_idle
from .http1 import MAX_BODY_BYTES, Request
from .model import HealthReading

__all__ = ["MAX_BODY_BYTES", "PollStats", "PollTarget", "Poller", "read_health"]

log = logging.getLogger("alertengine.poller")

LATENESS_SAMPLES = 100_000            # bounded window of lateness samples kept in PollStats
# On stop, readings already being handed over get this long to finish before they are cancelled
# too, and cancelled work this long again to unwind: stop() returns within about twice this,
# whatever the targets do (a fetch in flight is abandoned at once: its reading would be dropped).
STOP_GRACE = 0.4
# One timer tick starts every poll due within this many seconds of it (starting those up to this
# much early): the process wakes some 50 times a second instead of once per poll. Waking from idle
# is most of a poll's cost (in a VM it costs more than the HTTP exchange itself); a few ms early
# against a schedule jittered by ±10 % of its interval changes nothing anyone can see.
BATCH_WINDOW = 0.02


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
    request: Request | None           # None when the URL is unusable
    unusable: str = ""                # why, then


class Poller:
    """Polls every target's URL every ``interval`` seconds and hands each reading to ``on_reading``.

    * Each target starts at a random offset in [0, interval) and then every interval ± ``jitter``
      × interval, counted from its previous *scheduled* time (no drift). A target has at most one
      poll in flight: when a poll (or its ``on_reading``) overruns the next slot, the next poll
      starts as soon as it ends. Readings of one target therefore arrive in order.
    * At most ``concurrency`` polls run at once; each has its own ``timeout`` for the whole
      exchange (resolve, connect, TLS, request, answer), so a slow or dead service costs one slot,
      never anyone's schedule.
    * ``targets()`` is re-read every ``refresh`` seconds: new keys are scheduled, removed keys stop,
      a changed url or interval takes a fresh schedule. A reading of a target that was removed or
      changed while its poll was in flight is dropped. If ``targets()`` raises, the previous set
      stays.
    * ``on_reading(target, reading, lateness_seconds)`` is awaited outside the concurrency slot;
      exceptions are logged and counted, never fatal. Lateness = actual start (after waiting for a
      slot) − scheduled time.
    * ``telemetry``: every poll observes its lateness (``poll_lateness``) and its outcome
      (``polls``): ``ok`` when the service answered readably (whatever its health says), ``failed``
      otherwise (unreachable, timeout, HTTP error, unreadable). Whether a reading breaches is
      policy's decision, made above this package, so the poller never counts ``breach``.
    * ``stop()`` returns within about 2 × STOP_GRACE: fetches in flight are abandoned at once (their
      connections aborted), readings being handed over get STOP_GRACE to finish.
    * The default client (``healthclient``): keep-alive connections pooled per origin, no redirects,
      no cookies, no environment, the URL policy judged at connect time. An injected ``client`` is
      not closed by the Poller.
    """

    def __init__(self, targets: Callable[[], Iterable[PollTarget]],
                 on_reading: Callable[[PollTarget, HealthReading, float], Awaitable[None]], *,
                 concurrency: int = 200, timeout: float = 3.0, jitter: float = 0.1, refresh: float = 5.0,
                 client: HealthClient | None = None, url_policy: UrlPolicy | None = None,
                 telemetry: Telemetry | None = None, clock: Callable[[], float] = time.monotonic) -> None:
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
        self._timeout = float(timeout)
        self._jitter = float(jitter)
        self._refresh_every = float(refresh)
        self._own_client = client is None
        self._client = client if client is not None else HealthClient(
            url_policy=url_policy, user_agent=f"alertengine-poller/{__version__}",
            max_idle=default_max_idle(concurrency))
        self._clock = clock
        self._rng = random.Random()
        self._generations = itertools.count()
        self._slots: dict[str, _Slot] = {}
        self._heap: list[tuple[float, int, _Slot]] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self._fetching: set[asyncio.Task[None]] = set()   # the tasks of _tasks still fetching
        self._rejected: set[str] = set()
        self._semaphore = asyncio.Semaphore(concurrency)
        self._stopping = asyncio.Event()
        self._done = asyncio.Event()
        self._running = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._timer_due = math.inf
        self._next_refresh = 0.0
        self._refreshing = False
        if telemetry is not None:     # bound once: a labelled child per poll would be a lookup under a lock
            self._count_ok: Callable[[], None] | None = telemetry.polls.labels(outcome="ok").inc
            self._count_failed: Callable[[], None] | None = telemetry.polls.labels(outcome="failed").inc
            self._observe_lateness: Callable[[float], None] | None = telemetry.poll_lateness.observe
        else:
            self._count_ok = self._count_failed = self._observe_lateness = None
        self.stats = PollStats()

    # -- lifecycle ---------------------------------------------------------------------------

    async def run(self) -> None:
        """Poll until ``stop()``; polls in flight are abandoned on the way out (see ``stop``)."""
        if self._running or self._done.is_set():
            raise RuntimeError("a Poller runs once")
        self._running = True
        self._loop = asyncio.get_running_loop()
        try:
            if not self._stopping.is_set():
                self._next_refresh = self._clock()
                self._tick()
                await self._stopping.wait()
        finally:
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
            await self._wind_down()
            if self._own_client:
                self._client.close()
            self._running = False
            self._done.set()

    async def stop(self) -> None:
        """Stop polling; returns once ``run()`` has wound down (at once when called from ``on_reading``)."""
        self._stopping.set()
        if self._running and asyncio.current_task() not in self._tasks:
            await self._done.wait()

    async def _wind_down(self) -> None:
        for task in list(self._fetching):
            task.cancel()
        pending = set(self._tasks)
        if pending:
            _, pending = await asyncio.wait(pending, timeout=STOP_GRACE)
        if pending:
            for task in pending:
                task.cancel()
            _, pending = await asyncio.wait(pending, timeout=STOP_GRACE)
        if pending:
            log.warning("%d poll(s) did not end within %.1f s of being cancelled; leaving them", len(pending),
                        STOP_GRACE)

    # -- scheduling ------------------------------------------------------------------------------

    def _tick(self) -> None:
        """The loop timer fired: refresh when due, start every poll that is due, set the next timer."""
        self._timer, self._timer_due = None, math.inf
        if self._stopping.is_set():
            return
        heap = self._heap
        try:
            now = self._clock()
            slots, loop = self._slots, self._loop
            assert loop is not None
            if now >= self._next_refresh:
                self._next_refresh = now + self._refresh_every
                if not self._refreshing:
                    self._refreshing = True
                    task = loop.create_task(self._refresh())
                    self._tasks.add(task)
                    task.add_done_callback(self._tasks.discard)
                self._client.sweep()
            horizon = now + BATCH_WINDOW
            while heap and heap[0][0] <= horizon:
                due, _, slot = heapq.heappop(heap)
                if slots.get(slot.target.key) is slot:
                    task = loop.create_task(self._poll(slot, due))
                    self._tasks.add(task)
                    self._fetching.add(task)
                    task.add_done_callback(self._tasks.discard)
        except Exception:             # a timer callback that raised would end the schedule: never
            log.exception("poll schedule tick failed; the next one retries")
        finally:
            self._arm(min(self._next_refresh, heap[0][0]) if heap else self._next_refresh)

    def _arm(self, due: float) -> None:
        """Make sure the timer fires by ``due`` (on the poller's clock)."""
        if due >= self._timer_due or self._stopping.is_set() or self._loop is None:
            return
        if self._timer is not None:
            self._timer.cancel()
        self._timer_due = due
        self._timer = self._loop.call_later(max(0.0, due - self._clock()), self._tick)

    async def _refresh(self) -> None:
        """Read the targets on a worker thread (reading them may scan a table: never on the loop),
        then schedule what changed."""
        try:
            wanted = await asyncio.to_thread(lambda: list(self._targets()))
        except Exception:
            log.exception("reading poll targets failed; keeping the previous %d", len(self._slots))
            return
        finally:
            self._refreshing = False
        if not self._stopping.is_set():
            self._apply(wanted, self._clock())

    def _apply(self, wanted: list[PollTarget], now: float) -> None:
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
            try:
                slot = _Slot(target, next(self._generations), self._client.prepare(target.url))
            except FetchFailed as exc:  # every poll of it says why, without touching the network
                slot = _Slot(target, next(self._generations), None, exc.detail)
            self._slots[key] = slot
            self._push(slot, now + self._rng.random() * target.interval)

    def _push(self, slot: _Slot, due: float) -> None:
        heapq.heappush(self._heap, (due, slot.generation, slot))
        self._arm(due)

    def _next_due(self, scheduled: float, interval: float) -> float:
        step = interval * (1.0 + self._rng.uniform(-self._jitter, self._jitter))
        return max(scheduled + step, self._clock())

    # -- one poll --------------------------------------------------------------------------------

    async def _poll(self, slot: _Slot, scheduled: float) -> None:
        target = slot.target
        try:
            async with self._semaphore:
                lateness = max(0.0, self._clock() - scheduled)
                reading = await self._fetch(slot)
            self._fetching.discard(asyncio.current_task())  # type: ignore[arg-type]
            stats = self.stats
            stats.polls += 1
            stats.outcomes[reading.outcome] += 1
            stats.lateness.append(lateness)
            if self._observe_lateness is not None:
                self._observe_lateness(lateness)
                (self._count_ok if reading.outcome == "answered" else self._count_failed)()  # type: ignore[misc]
            if self._slots.get(target.key) is slot:
                try:
                    await self._on_reading(target, reading, lateness)
                except Exception:
                    stats.callback_errors += 1
                    log.exception("on_reading failed for %s", target.key)
        finally:
            self._fetching.discard(asyncio.current_task())  # type: ignore[arg-type]
            if self._slots.get(target.key) is slot and not self._stopping.is_set():
                self._push(slot, self._next_due(scheduled, target.interval))

    async def _fetch(self, slot: _Slot) -> HealthReading:
        """One GET of the slot's URL as a HealthReading; never raises (except cancellation)."""
        started = time.perf_counter()
        if slot.request is None:
            return HealthReading(outcome="unreachable", format="plain", latency_ms=0.0, detail=clip(slot.unusable))
        try:
            async with asyncio.timeout(self._timeout):
                answer = await self._client.fetch(slot.request)
        except TimeoutError:
            return self._failed(started, "timeout", f"no complete answer within {self._timeout:g} s", None)
        except FetchFailed as exc:
            return self._failed(started, exc.outcome, exc.detail, exc.status)
        except Exception as exc:  # noqa: BLE001 — one target's surprise must not stop the others
            log.warning("poll of a target failed unexpectedly: %s", type(exc).__name__, exc_info=True)
            return self._failed(started, "unreachable", f"poll failed: {type(exc).__name__}", None)
        return read_health(answer.status, answer.body, answer.content_type, (time.perf_counter() - started) * 1000.0)

    @staticmethod
    def _failed(started: float, outcome: str, detail: str, status: int | None) -> HealthReading:
        return HealthReading(outcome=outcome, format="plain", http_status=status,
                             latency_ms=(time.perf_counter() - started) * 1000.0, detail=clip(detail))
