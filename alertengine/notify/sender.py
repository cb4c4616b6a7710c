"""The outbox sender: a background task that delivers stored notifications, one attempt at a time.

* Each attempt, delivered or not, is ledgered (``notification.sent`` / ``notification.failed``)
  in the same transaction that moves its row on.
* A failed attempt is retried with exponential backoff and jitter (1 s doubling to ``max_delay``),
  never sooner than the provider's ``Retry-After``, until the row's deadline (``retry_for`` of the
  routing document, 30 minutes by default); then the row is a dead letter (``notification.dead``).
* After ``failover_after`` failed attempts on one channel, or one refusal that retrying cannot cure
  (a 4xx), the next channel of the recipient is tried, then the fallback channels; the chain
  starts over while the deadline allows. A channel that refuses for good is not tried again.
* A recipient's notifications leave in order: the next waits until the one before is final.
* A failing channel raises the DEGRADED condition ``channel <kind> of <tenant>``; its next
  delivery clears it.
* Restarts lose nothing: rows in flight when the process stopped are queued again (at least once).
* Every attempt is counted in the appliance's telemetry by channel and outcome, every delivery's
  time from entering the outbox to leaving it observed; a row that becomes a dead letter is one
  warning in the log. What is read from the outbox itself at scrape time is ``metrics_lines``.

The clock is injected: tests drive ``run_due`` with a fake clock instead of waiting."""

from __future__ import annotations

import asyncio
import json
import logging
import random
import sqlite3
import time
from collections import Counter
from datetime import datetime
from typing import Callable, Iterable, Mapping, Protocol

from ..ledger.entry import LedgerEvent, identity_fingerprint, utc_timestamp
from ..store import Database, WriteTx
from ..store.modes import ModeTracker
from ..store.pg import dialect
from ..telemetry import Telemetry, family
from ..tenancy.vault import SecretVault
from . import deliveries, escalation, grouping, outbox
from .channels.base import Delivery
from .gateway import Message, in_shadow
from .message import approval_buttons
from .outbox import Outgoing
from .routes import load_routing

log = logging.getLogger("alertengine.outbox")


class Sender(Protocol):
    name: str

    async def send(self, message: Message) -> Delivery: ...


# (tenant, channel, address) -> something that sends on it, or None when the channel is not usable now
Resolver = Callable[[str, str, str], "Sender | None"]


class OutboxSender:
    def __init__(self, db: Database, vault: SecretVault, resolve: Resolver, *, modes: ModeTracker | None = None,
                 clock: Callable[[], float] = time.time, base_delay: float = 1.0, max_delay: float = 30.0,
                 concurrency: int = 8, telemetry: Telemetry | None = None) -> None:
        self.db = db
        self.vault = vault
        self.resolve = resolve
        self.modes = modes
        self.clock = clock
        self.base_delay = base_delay
        self.max_delay = max_delay
        self.concurrency = concurrency
        self.attempts: Counter[tuple[str, str]] = Counter()   # (channel, outcome) -> count, for /metrics
        # A sender made on its own (tests, tools) counts into a registry nobody scrapes.
        self.telemetry = telemetry if telemetry is not None else Telemetry()
        self._wake = asyncio.Event()
        self._busy: set[str] = set()
        self._task: asyncio.Task[None] | None = None

    # --- running ----------------------------------------------------------------------------------
    def wake(self) -> None:
        """Something was queued: look now rather than at the next deadline."""
        self._wake.set()

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._loop(), name="outbox-sender")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None

    async def recover(self) -> int:
        return int(await self.db.write(outbox.recover))

    async def _loop(self) -> None:
        await self.recover()
        while True:
            try:
                await self.run_due()
                upcoming = await asyncio.to_thread(self._next_due)
            except asyncio.CancelledError:
                raise
            except Exception:  # noqa: BLE001 - the sender must outlive any one bad row or store hiccup
                log.exception("outbox sender pass failed; trying again shortly")
                upcoming = self.clock() + 5
            wait = 5.0 if upcoming is None else min(5.0, max(0.0, upcoming - self.clock()))
            self._wake.clear()
            try:
                await asyncio.wait_for(self._wake.wait(), timeout=wait)
            except asyncio.TimeoutError:
                pass

    # Reads run in worker threads, each on its thread's own kept-open read connection.
    def _next_due(self) -> float | None:
        return outbox.next_due(self.db.read_conn())

    def _due_escalations(self, now: float) -> list[tuple[str, str]]:
        return escalation.due(self.db.read_conn(), now)

    async def _is_shadow(self, tenant: str) -> bool:
        return await self.db.read(in_shadow, tenant)

    def _due_groups(self, now: float) -> list[tuple[str, str]]:
        return grouping.due(self.db.read_conn(), now)

    def _due(self, now: float) -> list[Outgoing]:
        return outbox.due(self.db.read_conn(), now, set(self._busy), limit=self.concurrency * 8)

    async def run_due(self) -> int:
        """Deliver every row whose turn it is now (attempts to different recipients run concurrently,
        at most ``concurrency`` at a time). Returns how many rows were handled."""
        now = self.clock()
        for tenant, key in await asyncio.to_thread(self._due_groups, now):
            await self.db.write(grouping.flush(tenant, key, now))
        for tenant, incident in await asyncio.to_thread(self._due_escalations, now):
            await self.db.write(escalation.fire(tenant, incident, now, self.vault, await self._is_shadow(tenant)))
        found = await asyncio.to_thread(self._due, now)
        rows = []
        for item in found:   # claimed before the next await: a concurrent pass never takes the same recipient
            key = f"{item.tenant}/{item.recipient}"
            if key not in self._busy:
                self._busy.add(key)
                rows.append(item)
        if not rows:
            return 0
        limit = asyncio.Semaphore(self.concurrency)

        async def one(item: Outgoing) -> None:
            key = f"{item.tenant}/{item.recipient}"
            try:
                async with limit:
                    await (self._release(item) if item.state == "held" else self._attempt(item))
            except Exception:  # noqa: BLE001
                log.exception("outbox row %s could not be handled", item.id)
            finally:
                self._busy.discard(key)
        await asyncio.gather(*(one(item) for item in rows))
        return len(rows)

    # --- one attempt ------------------------------------------------------------------------------
    def _message(self, item: Outgoing) -> Message:
        m = item.body["message"]
        links = {}
        if item.sealed is not None:
            links = json.loads(self.vault.decrypt(item.sealed, context=outbox.link_context(item.tenant, item.recipient)))
        refs = item.body.get("refs") or {}
        buttons = approval_buttons(refs) if refs else [[tuple(b) for b in r] for r in m["buttons"]]
        if refs and m["incident"]:      # a proposal can be acknowledged too: that stops the chase
            buttons.append([("Acknowledge", f"ak:{m['incident']}")])
        return Message(m["tenant"], m["incident"], m["event"], m["priority"], m["text"], recipient=item.recipient,
                       data=m["data"], links=links, buttons=buttons, refs={item.recipient: refs} if refs else {},
                       code=item.body.get("code", ""))

    async def _attempt(self, item: Outgoing) -> None:
        chain = [c for c in item.chain if c[0] + ":" + c[1] not in item.body.get("broken", [])]
        if not chain:
            why = "every channel of this recipient refused for good"
            await self.db.write(self._finish_dead(item, why))
            _log_dead(item, why)
            return
        if await self._is_shadow(item.tenant):   # the tenant went into shadow mode since this was queued
            await self.db.write(outbox.suppress(item, "shadow mode: nothing leaves"))
            return
        index = item.channel_index % len(chain)
        channel, address = chain[index]
        await self.db.write(self._mark_sending(item, channel))
        # A channel that raises is broken, not busy: it is not retried, the next channel is tried.
        try:
            sender = await self.db.read(lambda _conn: self.resolve(item.tenant, channel, address))  # reads settings
        except Exception as exc:  # noqa: BLE001 - unusable settings are a failed attempt, never fatal
            log.warning("settings of channel %s of %s unusable: %s", channel, item.tenant, type(exc).__name__)
            sender, result = None, Delivery(False, False, f"channel settings unusable: {type(exc).__name__}")
        else:
            result = Delivery(False, False, f"the {channel} channel is not set up for this tenant")
        if sender is not None:
            try:
                result = await sender.send(self._message(item))
            except Exception as exc:  # noqa: BLE001 - a channel that breaks is a failed attempt, never fatal
                log.warning("channel %s raised %s", channel, type(exc).__name__)
                result = Delivery(False, False, f"the channel failed: {type(exc).__name__}")
        outcome = "delivered" if result.delivered else "failed"
        self.attempts[(channel, outcome)] += 1
        self.telemetry.deliveries.labels(channel, outcome).inc()
        if result.delivered:
            self.telemetry.delivery_latency.labels(channel).observe(_since(item.created))
        now = self.clock()
        dead = await self.db.write(self._outcome(item, channel, address, result, now))
        if dead is not None:
            _log_dead(item, dead)
        await self._mode(item.tenant, channel, result)

    def _mark_sending(self, item: Outgoing, channel: str) -> Callable[[WriteTx], None]:
        def write(tx: WriteTx) -> None:
            tx.execute("UPDATE outbox SET state = 'sending', channel = ?, updated = ? WHERE id = ? AND state = 'queued'",
                       (channel, utc_timestamp(), item.id))
        return write

    def _delay(self, attempt: int, retry_after: float | None) -> float:
        ceiling = min(self.max_delay, self.base_delay * 2.0 ** min(attempt - 1, 30))
        wait = random.uniform(ceiling / 2, ceiling)
        return max(wait, retry_after) if retry_after is not None and retry_after > 0 else wait

    def _outcome(self, item: Outgoing, channel: str, address: str, result: Delivery,
                 now: float) -> Callable[[WriteTx], str | None]:
        """Move the row on after an attempt; returns why, when the row became a dead letter."""
        attempt = item.attempts + 1

        def write(tx: WriteTx) -> str | None:
            tx.append(attempt_event(item, channel, address, result, attempt))
            stamp = utc_timestamp()
            if result.delivered:
                tx.execute("UPDATE outbox SET state = 'delivered', reason = ?, attempts = ?, sealed = NULL, "
                           "updated = ? WHERE id = ?", (f"delivered on {channel}", attempt, stamp, item.id))
                if result.provider_id and channel in deliveries.TRACKED:
                    deliveries.record(tx, item, channel, address, result.provider_id, now)
                return None
            body = dict(item.body)
            failures, index = item.channel_failures + 1, item.channel_index
            if not result.retryable:
                body["broken"] = [*body.get("broken", []), f"{channel}:{address}"]
                failures = 0
            elif failures >= self._failover(tx, item.tenant):
                index, failures = index + 1, 0
            delay = self._delay(attempt, result.retry_after)
            if now + delay > item.deadline or len(body.get("broken", [])) >= len(item.chain):
                why = f"last attempt on {channel}: {result.detail}"[:500]
                tx.execute("UPDATE outbox SET state = 'dead', reason = ?, attempts = ?, sealed = NULL, body = ?, "
                           "updated = ? WHERE id = ?", (why, attempt, json.dumps(body), stamp, item.id))
                tx.append(outbox.dead_event(item.tenant, item.incident, item.id, item.recipient, item.event, why))
                return why
            tx.execute("UPDATE outbox SET state = 'queued', reason = ?, attempts = ?, channel_index = ?, "
                       "channel_failures = ?, next_at = ?, body = ?, updated = ? WHERE id = ?",
                       (f"{channel}: {result.detail}"[:500], attempt, index, failures, now + delay, json.dumps(body),
                        stamp, item.id))
            return None
        return write

    @staticmethod
    def _failover(tx: WriteTx, tenant: str) -> int:
        return load_routing(tx.conn, tenant).failover_after

    def _finish_dead(self, item: Outgoing, why: str) -> Callable[[WriteTx], None]:
        def write(tx: WriteTx) -> None:
            tx.execute("UPDATE outbox SET state = 'dead', reason = ?, sealed = NULL, updated = ? WHERE id = ?",
                       (why, utc_timestamp(), item.id))
            tx.append(outbox.dead_event(item.tenant, item.incident, item.id, item.recipient, item.event, why))
        return write

    async def _mode(self, tenant: str, channel: str, result: Delivery) -> None:
        if self.modes is None or channel in ("file", "jsonl"):
            return
        condition = f"channel {channel} of {tenant}"
        if result.delivered:
            await self.modes.set(condition, False)
        else:
            log.warning("%s is failing: %s", condition, result.detail)
            await self.modes.set(condition, True, result.detail)

    # --- quiet hours are over -------------------------------------------------------------------
    async def _release(self, item: Outgoing) -> None:
        then = item.body.get("then") or "deliver"
        if then == "summary":
            held = await asyncio.to_thread(self._held_of, item)
            await self.db.write(summarise(held or [item], self.clock()))
        else:
            await self.db.write(release(item, then))

    def _held_of(self, item: Outgoing) -> list[Outgoing]:
        return [outbox.row(r) for r in self.db.read_conn().execute(
            f"SELECT {outbox._COLUMNS} FROM outbox WHERE tenant = ? AND recipient = ? AND state = 'held' "
            "AND next_at <= ? ORDER BY id", (item.tenant, item.recipient, self.clock()))]


def release(item: Outgoing, then: str) -> Callable[[WriteTx], None]:
    """A held row whose quiet window is over: queue it (deliver) or drop it, ledgered either way."""

    def write(tx: WriteTx) -> None:
        stamp = utc_timestamp()
        if then == "drop":
            tx.execute("UPDATE outbox SET state = 'dropped', reason = ?, sealed = NULL, updated = ? "
                       "WHERE id = ? AND state = 'held'", ("quiet hours over: the rule drops what they held", stamp,
                                                            item.id))
        else:
            tx.execute("UPDATE outbox SET state = 'queued', reason = ?, updated = ? WHERE id = ? AND state = 'held'",
                       ("quiet hours over: delivered now", stamp, item.id))
        tx.append(LedgerEvent(kind="notification.released", tenant=item.tenant, incident=item.incident,
                              actor="system", decision="dropped" if then == "drop" else "released",
                              reason=f"quiet hours over: {item.event} notification "
                                     f"{'dropped' if then == 'drop' else 'sent now'}",
                              data={"outbox": item.id, "recipient": identity_fingerprint(item.recipient),
                                    "rule": item.route}))
    return write


def summarise(held: list[Outgoing], now: float) -> Callable[[WriteTx], None]:
    """Quiet hours are over and the rule asks for a summary: the first held row becomes one message
    listing them all (newest state of each incident), the others are marked summarised."""
    first = held[0]
    lines = [f"While quiet hours held them back, {len(held)} notification(s):"]
    for item in held[:30]:
        m = item.body["message"]
        lines.append(f"• {m['event']} · {m['priority']} · {m['incident'] or '-'}: {m['text'][:200]}")
    if len(held) > 30:
        lines.append(f"… and {len(held) - 30} more")
    body = {**first.body, "message": {**first.body["message"], "event": "summary", "text": "\n".join(lines),
                                      "buttons": []}}

    def write(tx: WriteTx) -> None:
        stamp = utc_timestamp()
        tx.execute("UPDATE outbox SET state = 'queued', event = 'summary', body = ?, sealed = NULL, reason = ?, "
                   "next_at = ?, updated = ? WHERE id = ? AND state = 'held'",
                   (json.dumps(body), "quiet hours over: summary", now, stamp, first.id))
        for item in held[1:]:
            tx.execute("UPDATE outbox SET state = 'summarised', sealed = NULL, reason = ?, updated = ? "
                       "WHERE id = ? AND state = 'held'", (f"in summary {first.id}", stamp, item.id))
        tx.append(LedgerEvent(kind="notification.released", tenant=first.tenant, incident=None, actor="system",
                              decision="summarised", reason=f"quiet hours over: {len(held)} held notification(s) "
                                                            "summarised in one message",
                              data={"outbox": [i.id for i in held], "recipient": identity_fingerprint(first.recipient),
                                    "rule": first.route}))
    return write


def attempt_event(item: Outgoing, channel: str, address: str, result: Delivery, attempt: int) -> LedgerEvent:
    ok = result.delivered
    return LedgerEvent(
        kind="notification.sent" if ok else "notification.failed", tenant=item.tenant, incident=item.incident,
        actor="system", decision="sent" if ok else "failed",
        reason=f"{item.event} {'sent' if ok else 'not delivered'} on {channel}",
        data={"outbox": item.id, "channel": channel, "event": item.event, "provider_id": result.provider_id,
              "attempt": attempt, "retryable": result.retryable, "detail": result.detail[:500],
              "retry_after": result.retry_after, "text": item.body["message"]["text"],
              "recipient": identity_fingerprint(item.recipient),
              "address": identity_fingerprint(address) if address else None})


def _since(created: str) -> float:
    """Seconds from a row's ``created`` stamp to now. Wall time on purpose, not the sender's
    injected clock: the stamp is wall time (``utc_timestamp``). A clock stepped back counts 0."""
    return max(0.0, time.time() - datetime.fromisoformat(created).timestamp())


def _log_dead(item: Outgoing, why: str) -> None:
    # One line per dead letter: the event an operator must read. The reason is the ledgered one
    # (channel details are written to be ledgered, so they hold no secrets). No recipient: the
    # ledger fingerprints people, and the row id finds it (GET .../notifications).
    log.warning("notification %d (%s) of tenant %s is a dead letter: %s", item.id, item.event, item.tenant, why)


# --- /metrics ---------------------------------------------------------------------------------------
# Read at scrape time, in a worker thread on its own read connection (web/metrics_api.py).
# Pending means queued or sending: on its way out. Held (quiet hours) and grouped rows wait on
# purpose, so they stay out of the depth and age an operator alerts on; they are counted by state in
# ``alertengine_notifications``. A row's channel is the one it is being tried on (sending) or will be
# tried on next: its chain at its channel index (channels broken for good left aside).
_PENDING_BY_CHANNEL = (
    "SELECT CASE WHEN state = 'sending' THEN channel "
    "ELSE json_extract(body, '$.chain[' || (channel_index % max(json_array_length(body, '$.chain'), 1)) || '][0]') "
    "END AS ch, count(*), min(created) "
    # the partial index outbox_pending (state IN ('queued', 'sending', 'held')) serves this: the IN
    # term must be written exactly as the index's for SQLite to use it
    "FROM outbox WHERE state IN ('queued', 'sending', 'held') AND state <> 'held' GROUP BY ch")
# The same on PostgreSQL, whose JSON functions differ.
_PENDING_BY_CHANNEL_PG = (
    "SELECT CASE WHEN state = 'sending' THEN channel "
    "ELSE (body::jsonb -> 'chain' -> (channel_index % greatest(jsonb_array_length(body::jsonb -> 'chain'), 1))::int "
    "->> 0) END AS ch, count(*), min(created) "
    "FROM outbox WHERE state IN ('queued', 'sending', 'held') AND state <> 'held' GROUP BY ch")


def metrics_lines(attempts: Mapping[tuple[str, str], int], conn: sqlite3.Connection, tenants: Iterable[str],
                  now: float) -> list[str]:
    """The outbox at scrape time: rows by tenant and state, pending depth and oldest age by channel,
    dead letters by tenant, and this process's attempts (``attempts``, a copy of the sender's)."""
    counts = outbox.counts(conn)
    lines = family("alertengine_notifications", "gauge", "Stored notifications by state.",
                   (({"tenant": t, "state": s}, n) for (t, s), n in sorted(counts.items())))
    lines += family("alertengine_notification_attempts_total", "counter", "Delivery attempts by channel and outcome.",
                    (({"channel": c, "outcome": o}, n) for (c, o), n in sorted(attempts.items())))
    sql = _PENDING_BY_CHANNEL_PG if dialect(conn) == "postgresql" else _PENDING_BY_CHANNEL
    pending = {(ch or "none"): (n, oldest) for ch, n, oldest in conn.execute(sql)}
    # channels this process has tried stay in the family at 0 when drained, rather than vanish
    channels = sorted(set(pending) | {c for c, _ in attempts})
    lines += family("alertengine_outbox_pending", "gauge",
                    "Notifications on their way out (queued or sending), by the channel of their next attempt.",
                    (({"channel": c}, pending.get(c, (0, None))[0]) for c in channels))
    lines += family("alertengine_outbox_oldest_pending_seconds", "gauge",
                    "Age of the oldest notification on its way out, by channel (0 when none is).",
                    (({"channel": c}, _age(pending.get(c, (0, None))[1], now)) for c in channels))
    lines += family("alertengine_notification_dead_letters", "gauge",
                    "Notifications every channel failed until their deadline (state dead), by tenant.",
                    (({"tenant": t}, counts.get((t, "dead"), 0)) for t in sorted(tenants)))
    return lines


def _age(created: str | None, now: float) -> float:
    return 0.0 if created is None else round(max(0.0, now - datetime.fromisoformat(created).timestamp()), 3)
