"""What smart rules measure: the appliance's host, its deliveries and approvals, each poll of a
service, and the events a tenant sends, counted in a sliding window."""

from __future__ import annotations

import collections
import math
import re
import shutil
import sqlite3
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from ..signals import HealthReading
from ..signals.ingest.common import (
    ROOT,
    PayloadError,
    index,
    join,
    need_list,
    need_object,
    require_str,
    string_map,
)
from .rules import EVENT_PATTERN, METRIC_PATTERN, RESERVED_PREFIXES
from .store import iso

MAX_EVENTS = 200_000        # per tenant, kept in memory for patterns and rates; the oldest go first


class HostMetrics:
    """``system.cpu_percent`` (busy share of CPU time since the previous reading, or since boot on
    the first), ``system.memory_percent`` (1 − MemAvailable / MemTotal) and
    ``system.disk_percent`` (of the file system holding the data directory), from Linux's /proc.
    A figure the host does not offer is left out, never guessed."""

    def __init__(self, disk_path: Path, proc: Path = Path("/proc")) -> None:
        self.disk_path = disk_path
        self.proc = proc
        self._cpu: tuple[int, int] | None = None

    def read(self) -> dict[str, float]:
        out: dict[str, float] = {}
        cpu = self._cpu_percent()
        if cpu is not None:
            out["system.cpu_percent"] = cpu
        memory = self._memory_percent()
        if memory is not None:
            out["system.memory_percent"] = memory
        try:
            usage = shutil.disk_usage(self.disk_path)
            out["system.disk_percent"] = round(usage.used / usage.total * 100.0, 2) if usage.total else 0.0
        except OSError:
            pass
        return out

    def _cpu_percent(self) -> float | None:
        try:
            first = (self.proc / "stat").read_text().splitlines()[0].split()
        except (OSError, IndexError):
            return None
        if first[:1] != ["cpu"]:
            return None
        ticks = [int(x) for x in first[1:9]]
        idle = ticks[3] + (ticks[4] if len(ticks) > 4 else 0)     # idle + iowait
        total = sum(ticks)
        last, self._cpu = self._cpu, (total - idle, total)
        busy, whole = (total - idle, total) if last is None else (total - idle - last[0], total - last[1])
        return round(busy / whole * 100.0, 2) if whole > 0 else 0.0

    def _memory_percent(self) -> float | None:
        try:
            info = dict(line.split(":", 1) for line in (self.proc / "meminfo").read_text().splitlines() if ":" in line)
            total = int(info["MemTotal"].split()[0])
            available = int(info["MemAvailable"].split()[0])
        except (OSError, KeyError, ValueError, IndexError):
            return None
        return round((1.0 - available / total) * 100.0, 2) if total else None


def appliance_metrics(conn: sqlite3.Connection, tenant: str, now: float) -> dict[str, float]:
    """The tenant's delivery and approval figures: pending deliveries, dead ones in the last hour
    and their share of the finished ones, approvals waiting, approvals that expired in the last hour."""
    hour_ago, now_iso = iso(now - 3600.0), iso(now)
    pending = conn.execute("SELECT count(*) FROM outbox WHERE tenant = ? AND state IN ('queued', 'sending', 'held')",
                           (tenant,)).fetchone()[0]
    finished = dict(conn.execute("SELECT state, count(*) FROM outbox WHERE tenant = ? AND state IN ('delivered', 'dead') "
                                 "AND updated >= ? GROUP BY state", (tenant, hour_ago)).fetchall())
    dead, delivered = finished.get("dead", 0), finished.get("delivered", 0)
    waiting = conn.execute("SELECT count(*) FROM approvals WHERE tenant = ? AND used_at IS NULL AND outcome IS NULL "
                           "AND expires > ?", (tenant, now_iso)).fetchone()[0]
    expired = conn.execute("SELECT count(*) FROM approvals WHERE tenant = ? AND outcome = 'expired' AND expires >= ? "
                           "AND expires <= ?", (tenant, hour_ago, now_iso)).fetchone()[0]
    return {"deliveries.pending": float(pending), "deliveries.failed_last_hour": float(dead),
            "deliveries.failed_rate": round(dead / (dead + delivered), 4) if dead + delivered else 0.0,
            "approvals.pending": float(waiting), "approvals.expired_last_hour": float(expired)}


def reading_metrics(reading: HealthReading) -> dict[str, float]:
    """One poll as service.* metrics: availability is 1 when the service answered, else 0."""
    out = {"service.availability": 1.0 if reading.outcome == "answered" else 0.0}
    for name, value in (("service.health_score", reading.health_score), ("service.p95_ms", reading.p95_ms),
                        ("service.error_rate", reading.error_rate), ("service.anomaly_score", reading.anomaly_score),
                        ("service.latency_ms", reading.latency_ms)):
        if value is not None:
            out[name] = float(value)
    return out


@dataclass(frozen=True)
class Observation:
    """One event a tenant sent: its name, its numbers, its labels (what a snapshot shows)."""

    name: str
    metrics: Mapping[str, float] = field(default_factory=dict)
    labels: Mapping[str, str] = field(default_factory=dict)


class EventWindow:
    """A tenant's events of the last minute (time, name), oldest first: what the rates count.
    Bounded by ``MAX_EVENTS``. (Patterns keep their own state: ``rules.PatternState``.)"""

    def __init__(self, limit: int = MAX_EVENTS) -> None:
        self.events: collections.deque[tuple[float, str]] = collections.deque(maxlen=limit)

    def add(self, at: float, name: str) -> None:
        self.events.append((at, name))

    def prune(self, now: float) -> None:
        while self.events and self.events[0][0] < now - 60.0:
            self.events.popleft()

    def rates(self, now: float) -> dict[str, float]:
        """``events_per_minute`` and ``events_per_minute.<name>`` over the last minute."""
        counts: dict[str, float] = collections.Counter()
        total = 0
        for at, name in reversed(self.events):
            if at < now - 60.0:
                break
            counts[f"events_per_minute.{name}"] += 1
            total += 1
        return {"events_per_minute": float(total), **counts}


def snapshot(values: Mapping[str, Any], limit: int = 32, text: int = 256) -> dict[str, Any]:
    """What an alert keeps of the values it was judged on: at most ``limit`` entries, text cut to
    ``text`` characters, so an alert (and its ledger entry) stays small whatever was sent."""
    out: dict[str, Any] = {}
    for key, value in list(values.items())[:limit]:
        if isinstance(value, str):
            value = value[:text]
        elif not isinstance(value, (int, float, bool)) and value is not None:
            value = str(value)[:text]
        out[str(key)[:text]] = value
    return out


MAX_OBSERVATIONS = 1000     # in one request
MAX_METRICS = 64


def parse_observations(body: object) -> list[Observation]:
    """``POST /ingest/observations``: one observation, or ``{"observations": [...]}`` (at most 1000)::

        {"event": "action.denied", "metrics": {"risk_score": 85}, "labels": {"agent_id": "export-agent"}}

    ``event`` names it (1-128 of letters, digits, ``_ . : / -`` and space); ``metrics`` are finite
    numbers by metric name (at most 64); ``labels`` strings (at most 64). Unknown fields are refused."""
    top = need_object(body, ROOT)
    if "observations" in top:
        if set(top) != {"observations"}:
            raise PayloadError(ROOT, "give either one observation or {\"observations\": [...]}, not both")
        items = need_list(top["observations"], "observations", MAX_OBSERVATIONS)
        return [_observation(item, index("observations", i)) for i, item in enumerate(items)]
    return [_observation(top, ROOT)]


def _observation(value: object, path: str) -> Observation:
    obj = need_object(value, path)
    for name in obj:
        if name not in ("event", "metrics", "labels"):
            raise PayloadError(join(path, name), "is not a known field")
    name = require_str(obj, "event", path, max_len=128)
    if not re.fullmatch(EVENT_PATTERN, name):
        raise PayloadError(join(path, "event"), "must be 1-128 of letters, digits, '_', '.', ':', '/', '-' and space")
    metrics: dict[str, float] = {}
    raw = obj.get("metrics")
    if raw is not None:
        found = need_object(raw, join(path, "metrics"))
        if len(found) > MAX_METRICS:
            raise PayloadError(join(path, "metrics"), f"has {len(found)} entries; at most {MAX_METRICS} are accepted")
        for key, number in found.items():
            where = join(join(path, "metrics"), key)
            if not re.fullmatch(METRIC_PATTERN, key) or key.startswith(RESERVED_PREFIXES):
                raise PayloadError(where, "is not a metric name you may send (letters, digits, '_', '.', ':', '-'; "
                                          "not service., system., deliveries. or approvals.)")
            if isinstance(number, bool) or not isinstance(number, (int, float)) or \
                    (isinstance(number, int) and abs(number) > 10**15) or \
                    (isinstance(number, float) and not (math.isfinite(number) and abs(number) <= 1e15)):
                raise PayloadError(where, "must be a finite number within ±1e15")
            metrics[key] = float(number)
    labels = {} if obj.get("labels") is None else string_map(obj["labels"], join(path, "labels"), max_entries=64)
    return Observation(name, metrics, labels)
