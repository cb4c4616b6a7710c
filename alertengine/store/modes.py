"""Appliance modes: NORMAL, DEGRADED (something the pipeline leans on is failing: notifications, the
AI), EMERGENCY (the store itself is failing). Shown at /healthz; every change is ledgered."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from ..ledger.entry import SYSTEM_TENANT, LedgerEvent
from .database import Database

log = logging.getLogger("alertengine.modes")
NORMAL, DEGRADED, EMERGENCY = "NORMAL", "DEGRADED", "EMERGENCY"
# Conditions that make the appliance EMERGENCY rather than DEGRADED.
SEVERE = frozenset({"store_errors"})


@dataclass
class ModeTracker:
    db: Database
    conditions: dict[str, str] = field(default_factory=dict)  # name -> detail
    mode: str = NORMAL

    def _compute(self) -> str:
        if self.db.writer_failed or self.db.store_fault or SEVERE & set(self.conditions):
            return EMERGENCY
        return DEGRADED if self.conditions else NORMAL

    async def set(self, condition: str, active: bool, detail: str = "") -> None:
        """Raise or clear a condition; ledger the mode change it causes, if any."""
        if active:
            self.conditions[condition] = detail[:500]
        elif self.conditions.pop(condition, None) is None:
            return
        new = self._compute()
        if new == self.mode:
            return
        old, self.mode = self.mode, new
        log.warning("appliance mode %s -> %s (%s)", old, new, ", ".join(self.conditions) or "all clear")
        try:
            await self.db.append(LedgerEvent(kind="appliance.mode_changed", tenant=SYSTEM_TENANT, actor="system",
                                             decision=new, reason=f"{old} -> {new}",
                                             data={"from": old, "to": new, "conditions": dict(self.conditions)}))
        except Exception as exc:  # noqa: BLE001 - a store that cannot ledger is itself the emergency
            log.error("could not ledger the mode change: %s", exc)

    def snapshot(self) -> dict[str, object]:
        """The mode now, with what causes it. The store's own failures are read live: a store that
        cannot write cannot ledger its own mode change either."""
        conditions = dict(self.conditions)
        if self.db.writer_error is not None:
            conditions["writer_stopped"] = self.db.writer_error[:500]
        if self.db.store_fault:
            conditions["store_errors"] = self.db.store_fault[:500]
        return {"mode": self._compute(), "conditions": conditions}
