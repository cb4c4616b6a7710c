"""Waiting for a condition, never for a fixed time: the suite must pass on a loaded 2-core machine.

Deadlines are generous (30 s by default) because they only bound a failure; a passing test waits
just as long as the condition takes.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any, Awaitable, Callable

DEADLINE = 30.0


def wait_for(check: Callable[[], Any], timeout: float = DEADLINE, interval: float = 0.05,
             what: str = "condition", explain: Callable[[], str] | None = None) -> Any:
    """Call ``check`` until it returns a truthy value, and return that value; on time-out, fail naming
    ``what`` with the last value seen (and ``explain()``, e.g. a server's output, when given)."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            extra = f"\n{explain()}" if explain else ""
            raise AssertionError(f"{what} not met within {timeout:g} s (last value {value!r}){extra}")
        time.sleep(interval)


async def async_wait_for(check: Callable[[], Any | Awaitable[Any]], timeout: float = DEADLINE,
                         interval: float = 0.02, what: str = "condition") -> Any:
    """The same inside an event loop: ``check`` may be a plain or an async function."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not met within {timeout} s (last value {value!r})")
        await asyncio.sleep(interval)
