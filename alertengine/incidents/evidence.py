"""Evidence of an open incident, summarised per minute: the ledger grows with changes, not polls.

While a health incident is open, every breaching poll is evidence that it still is — one ledger
entry per poll made a service breaching at a 5 s interval cost 17,000 entries (19 MB) a day.
Detection now folds those polls into one ``signal.evidence`` entry per service and minute: how many
polls breached, when the first and the last were, the worst value of each kind of breach (the one
furthest past its threshold) with the reading that showed it, and the last reading. The entry is
chained and signed like every other, so the evidence stays verifiable.

Every change of state keeps its own entry, in order: the summary so far is written *before* the
entry of a healthy poll, a priority raise, a new kind of breach, or a recovery. A summary is also
written when its minute is over (at the next poll of any service, or by :meth:`Evidence.due`), and
when the appliance stops. Decision: a crash loses at most the last minute's *count* of breaching
polls of an incident that was already open; no state change is ever held back.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from ..ledger.entry import LedgerEvent
from ..signals import HealthReading
from .policy import Breach

WINDOW = 60.0   # seconds per summary


def _distance(b: Breach) -> float:
    """How far past its threshold a breach is (0 when the values are not numbers)."""
    if isinstance(b.value, (int, float)) and isinstance(b.threshold, (int, float)):
        return abs(float(b.value) - float(b.threshold))
    return 0.0


def _iso(t: float) -> str:
    return datetime.fromtimestamp(t, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass
class Pending:
    """One service's breaching polls of the current window, not yet ledgered."""

    tenant: str
    incident: str
    service: str
    service_name: str
    policy_version: str
    window: float                         # start of the window (unix seconds, a multiple of WINDOW)
    first: float
    last: float
    count: int = 0
    worst: dict[str, dict[str, Any]] = field(default_factory=dict)   # kind -> breach, reading, at
    last_reading: dict[str, Any] = field(default_factory=dict)

    def add(self, at: float, reading: HealthReading, breaches: list[Breach]) -> None:
        self.count += 1
        self.last = at
        self.last_reading = reading.as_data()
        for b in breaches:
            held = self.worst.get(b.kind)
            if held is None or _distance(b) > held["distance"]:
                self.worst[b.kind] = {"distance": _distance(b), **b.as_data(), "at": _iso(at),
                                      "reading": self.last_reading}

    def event(self) -> LedgerEvent:
        worst = {k: {kk: vv for kk, vv in v.items() if kk != "distance"} for k, v in sorted(self.worst.items())}
        said = ", ".join(f"{k} {v['value']} (threshold {v['threshold']})" for k, v in worst.items())
        return LedgerEvent(
            kind="signal.evidence", tenant=self.tenant, incident=self.incident, actor="policy",
            policy_version=self.policy_version, decision="breach",
            reason=f"{self.count} breaching poll{'s' if self.count != 1 else ''} from {_iso(self.first)[11:19]} "
                   f"to {_iso(self.last)[11:19]} UTC; worst: {said}",
            data={"service": self.service, "service_name": self.service_name,
                  "window": {"from": _iso(self.window), "to": _iso(self.window + WINDOW)},
                  "count": self.count, "first_at": _iso(self.first), "last_at": _iso(self.last),
                  "worst": worst, "last_reading": self.last_reading})


class Evidence:
    """Summaries being gathered, one per (tenant, service). Not thread-safe: detection's loop only."""

    def __init__(self) -> None:
        self._pending: dict[tuple[str, str], Pending] = {}

    def add(self, at: float, tenant: str, incident: str, service: str, service_name: str, policy_version: str,
            reading: HealthReading, breaches: list[Breach]) -> LedgerEvent | None:
        """Count one breaching poll of an open incident. Returns the summary of the window it
        closes, if the poll falls in a new window (or is of another incident): ledger it first."""
        key = (tenant, service)
        window = at - at % WINDOW
        held = self._pending.get(key)
        closed = None
        if held is not None and (held.window != window or held.incident != incident):
            closed = self._pending.pop(key).event()
            held = None
        if held is None:
            held = self._pending[key] = Pending(tenant, incident, service, service_name, policy_version, window, at, at)
        held.add(at, reading, breaches)
        return closed

    def take(self, tenant: str, service: str) -> LedgerEvent | None:
        """The summary so far of a service, to ledger before a change of state (or None)."""
        held = self._pending.pop((tenant, service), None)
        return held.event() if held is not None else None

    def kinds(self, tenant: str, service: str) -> set[str]:
        held = self._pending.get((tenant, service))
        return set(held.worst) if held is not None else set()

    def due(self, now: float) -> list[LedgerEvent]:
        """The summaries of windows that are over (a service no longer polled, say)."""
        over = [key for key, held in self._pending.items() if held.window + WINDOW <= now]
        return [self._pending.pop(key).event() for key in over]

    def drain(self) -> list[LedgerEvent]:
        """Every summary still held (at shutdown)."""
        out = [held.event() for held in self._pending.values()]
        self._pending.clear()
        return out

    def __len__(self) -> int:
        return len(self._pending)
