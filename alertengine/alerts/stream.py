"""The live alert stream's hub: each subscriber (a WebSocket or an SSE client of one tenant) has a
bounded queue; publishing never waits. A subscriber whose queue is full is too slow: it is
dropped (told why, if it still listens), and everyone else goes on receiving."""

from __future__ import annotations

import asyncio
import logging
import threading
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger("alertengine.stream")
DEFAULT_BUFFER = 256     # messages a subscriber may fall behind before it is dropped


@dataclass(eq=False)
class Subscriber:
    tenant: str
    queue: asyncio.Queue[dict[str, Any] | None]
    dropped: asyncio.Event = field(default_factory=asyncio.Event)
    _getter: asyncio.Future[Any] | None = None   # survives a caller's time-out: nothing taken is lost

    async def next(self) -> dict[str, Any] | None:
        """The next message, or None once dropped. A caller that gives up waiting (a keep-alive
        time-out) loses nothing: the message it would have got is the next call's."""
        if self.dropped.is_set():
            return None
        if self._getter is None:
            self._getter = asyncio.ensure_future(self.queue.get())
        stop = asyncio.ensure_future(self.dropped.wait())
        try:
            await asyncio.wait({self._getter, stop}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            if not stop.done():
                stop.cancel()
        if self._getter.done() and not self.dropped.is_set():
            getter, self._getter = self._getter, None
            return getter.result()
        return None

    def close(self) -> None:
        if self._getter is not None and not self._getter.done():
            self._getter.cancel()


class Hub:
    def __init__(self, buffer: int = DEFAULT_BUFFER) -> None:
        self.buffer = buffer
        self.loop: asyncio.AbstractEventLoop | None = None
        self._subscribers: dict[str, set[Subscriber]] = {}
        self.dropped_total = 0
        self.published_total = 0
        # what other threads published, handed to the loop in order with one wake-up for many
        self._pending: list[tuple[str, list[dict[str, Any]]]] = []
        self._pending_lock = threading.Lock()
        self._wake_scheduled = False

    def attach(self, loop: asyncio.AbstractEventLoop) -> None:
        with self._pending_lock:   # what was meant for an earlier loop is not this one's
            self._pending.clear()
            self._wake_scheduled = False
        self.loop = loop

    def subscribe(self, tenant: str) -> Subscriber:
        if self.loop is None:
            self.loop = asyncio.get_running_loop()
        sub = Subscriber(tenant, asyncio.Queue(maxsize=self.buffer))
        self._subscribers.setdefault(tenant, set()).add(sub)
        return sub

    def unsubscribe(self, sub: Subscriber) -> None:
        sub.close()
        subs = self._subscribers.get(sub.tenant)
        if subs is not None:
            subs.discard(sub)
            if not subs:
                del self._subscribers[sub.tenant]

    def watched(self, tenant: str) -> bool:
        """Whether anyone subscribes to the tenant's stream now (any thread may ask)."""
        return tenant in self._subscribers

    def count(self, tenant: str | None = None) -> int:
        if tenant is not None:
            return len(self._subscribers.get(tenant, ()))
        return sum(len(s) for s in self._subscribers.values())

    def publish(self, tenant: str, alerts: list[dict[str, Any]]) -> None:
        """Tell the tenant's subscribers that these alerts changed. Callable from any thread (the
        store's writer calls it once the change has committed). A tenant nobody watches costs
        nothing; from another thread, what is published before the loop runs is handed over in
        order, with one wake-up of the loop for all of it (not one per alert)."""
        if not alerts or tenant not in self._subscribers or self.loop is None or self.loop.is_closed():
            return
        if _running_loop() is self.loop:
            self._publish(tenant, alerts)
            return
        with self._pending_lock:
            self._pending.append((tenant, alerts))
            if self._wake_scheduled:
                return
            self._wake_scheduled = True
        try:
            self.loop.call_soon_threadsafe(self._drain)
        except RuntimeError:   # the loop closed meanwhile: nobody is left to tell
            with self._pending_lock:
                self._pending.clear()
                self._wake_scheduled = False

    def _drain(self) -> None:
        with self._pending_lock:
            pending, self._pending, self._wake_scheduled = self._pending, [], False
        for tenant, alerts in pending:
            self._publish(tenant, alerts)

    def _publish(self, tenant: str, alerts: list[dict[str, Any]]) -> None:
        message = {"type": "alerts", "data": alerts}
        self.published_total += 1
        for sub in list(self._subscribers.get(tenant, ())):
            try:
                sub.queue.put_nowait(message)
            except asyncio.QueueFull:
                self.drop(sub)

    def drop(self, sub: Subscriber) -> None:
        self.unsubscribe(sub)
        if not sub.dropped.is_set():
            self.dropped_total += 1
            log.warning("a live-stream client of %s fell %d messages behind and was dropped", sub.tenant, self.buffer)
            sub.dropped.set()


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None
