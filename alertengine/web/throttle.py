"""Failed authentications, whatever was presented: API keys, ingest keys, chat-webhook secrets,
GitHub signatures, approval links. All count alike, per client address.

After ``free`` failures from one address within ``window`` seconds, each further failure is answered
only after a delay that doubles up to ``max_delay``; an address may have at most ``concurrent``
answers waiting at once, and anything beyond that is refused at once with 429 (so a client cannot
tie up the appliance with slow answers, nor get round the delay by opening more connections). The
appliance ledgers one ``auth.failures`` entry per burst — a burst lasts while any address keeps
failing past its free allowance, and ends after ``window`` quiet seconds — however many addresses
take part, so a distributed attack cannot flood the ledger either.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Callable

from starlette.requests import Request

from ..ledger.entry import SYSTEM_TENANT, LedgerEvent

MAX_ADDRESSES = 10_000   # remembered at most; the oldest half is forgotten beyond that


@dataclass(frozen=True)
class Verdict:
    delay: float           # seconds to hold the answer
    refuse: bool           # too many answers already waiting for this address: 429 now
    burst_began: bool      # the first failure over the allowance since the last quiet window


class TooManyFailuresError(Exception):
    """More failed attempts from one address at once than the throttle holds."""


class FailureThrottle:
    def __init__(self, free: int = 5, window: float = 60.0, max_delay: float = 5.0, concurrent: int = 4,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.free, self.window, self.max_delay, self.concurrent = free, window, max_delay, concurrent
        self.clock = clock
        self._seen: dict[str, tuple[float, int]] = {}   # address -> (window start, failures in it)
        self._waiting: dict[str, int] = {}              # address -> answers being held now
        self._burst_until = float("-inf")

    def record(self, address: str) -> Verdict:
        """Count one failure from ``address`` and say what to do with its answer."""
        now = self.clock()
        start, count = self._seen.get(address, (now, 0))
        if now - start > self.window:
            start, count = now, 0
        count += 1
        self._seen[address] = (start, count)
        if len(self._seen) > MAX_ADDRESSES:
            for key in sorted(self._seen, key=lambda a: self._seen[a][0])[:MAX_ADDRESSES // 2]:
                del self._seen[key]
        over = count - self.free
        if over <= 0:
            return Verdict(0.0, False, False)
        began = now > self._burst_until
        self._burst_until = now + self.window
        if self._waiting.get(address, 0) >= self.concurrent:
            return Verdict(0.0, True, began)
        return Verdict(min(self.max_delay, 0.1 * 2 ** min(over - 1, 32)), False, began)

    async def hold(self, address: str, seconds: float, sleep: Callable[[float], object] = asyncio.sleep) -> None:
        """Wait ``seconds`` before answering ``address``, counted against its concurrent allowance."""
        self._waiting[address] = self._waiting.get(address, 0) + 1
        try:
            await sleep(seconds)  # type: ignore[misc]
        finally:
            left = self._waiting[address] - 1
            if left:
                self._waiting[address] = left
            else:
                del self._waiting[address]

    def reset(self, address: str) -> None:
        self._seen.pop(address, None)


def client_address(request: Request) -> str:
    return request.client.host if request.client else "unknown"


def route_of(request: Request) -> str:
    """The request's path with every path parameter put back as ``{name}``: paths carry ingest keys
    and approval tokens, which must never reach the ledger."""
    path = request.url.path
    for name, value in sorted(request.path_params.items(), key=lambda kv: -len(str(kv[1]))):
        if value:
            path = path.replace(str(value), "{" + name + "}")
    return path


async def failed_auth(request: Request, what: str) -> None:
    """A failed authentication of ``what`` (e.g. "API key", "GitHub signature"): ledger the burst it
    starts, hold the answer, or raise ``TooManyFailuresError`` when the address already has too many
    answers held. Nothing presented (key, secret, signature) is ever ledgered."""
    state = request.app.state
    throttle: FailureThrottle = state.auth_throttle
    address = client_address(request)
    verdict = throttle.record(address)
    if verdict.burst_began:
        await state.db.append(LedgerEvent(
            kind="auth.failures", tenant=SYSTEM_TENANT, actor="system", decision="throttle",
            reason=f"repeated authentication failures ({what}) from {address}; answers are now slowed",
            data={"address": address, "path": route_of(request), "what": what}))
    if verdict.refuse:
        raise TooManyFailuresError(address)
    if verdict.delay:
        await throttle.hold(address, verdict.delay)
