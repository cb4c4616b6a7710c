"""What every notification channel shares: the result of one delivery attempt and the retry policy around it."""

from __future__ import annotations

import asyncio
import math
import random
from dataclasses import dataclass
from typing import Awaitable, Callable


@dataclass(frozen=True)
class Delivery:
    """The outcome of one attempt to hand a message to a provider.

    ``retryable`` says whether trying the same request again may succeed (transport errors, 5xx, 429);
    ``retry_after`` is how many seconds the provider asked us to wait first, when it said so.
    ``detail`` is for humans and logs: it never contains a secret."""

    delivered: bool
    retryable: bool
    detail: str
    provider_id: str | None = None
    retry_after: float | None = None


@dataclass(frozen=True)
class RetryPolicy:
    """How many attempts to make and how long to wait between them.

    The waits are exponential backoff with full jitter: before retry ``n`` (``n`` = attempts made so far)
    the wait is uniform in ``[0, min(max_delay, base_delay * 2**(n-1))]``, raised to the provider's
    ``retry_after`` when one was given. A provider's ``retry_after`` is never shortened, not even to
    ``max_delay``: :meth:`delay` then returns more than ``max_delay`` and :func:`deliver_with_retries`
    gives up instead of sleeping that long, handing the still-retryable result (with its ``retry_after``)
    back to the caller, which may reschedule the delivery durably."""

    attempts: int = 3
    base_delay: float = 0.5
    max_delay: float = 30.0

    def __post_init__(self) -> None:
        if self.attempts < 1:
            raise ValueError("RetryPolicy.attempts must be at least 1")
        if not (math.isfinite(self.base_delay) and self.base_delay >= 0):
            raise ValueError("RetryPolicy.base_delay must be a finite number >= 0")
        if not (math.isfinite(self.max_delay) and self.max_delay >= self.base_delay):
            raise ValueError("RetryPolicy.max_delay must be finite and >= base_delay")

    def delay(self, attempt: int, retry_after: float | None) -> float:
        """Seconds to wait after ``attempt`` failed attempts (1 after the first failure) before the next one."""
        if attempt < 1:
            raise ValueError("attempt counts the attempts made so far and starts at 1")
        ceiling = min(self.max_delay, self.base_delay * 2.0 ** min(attempt - 1, 64))
        wait = random.uniform(0.0, ceiling)
        if retry_after is not None and math.isfinite(retry_after) and retry_after > wait:
            return float(retry_after)
        return wait


async def deliver_with_retries(send: Callable[[], Awaitable[Delivery]], policy: RetryPolicy,
                               sleep: Callable[[float], Awaitable[object]] = asyncio.sleep) -> tuple[Delivery, int]:
    """Call ``send`` until it delivers, fails for good, or the policy runs out; return the last result and
    the number of attempts made.

    Stops early, without sleeping, when the provider asks for a wait longer than ``policy.max_delay``: the
    returned Delivery is then still ``retryable`` and carries the provider's ``retry_after``.
    Exceptions from ``send`` (programming errors such as invalid input) propagate unchanged."""
    attempt = 0
    while True:
        attempt += 1
        result = await send()
        if result.delivered or not result.retryable or attempt >= policy.attempts:
            return result, attempt
        wait = policy.delay(attempt, result.retry_after)
        if wait > policy.max_delay:
            return result, attempt
        await sleep(wait)
