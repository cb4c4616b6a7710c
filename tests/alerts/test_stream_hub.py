"""The live stream's hub alone: nothing published is lost to a reader that timed out, a full
subscriber is dropped without slowing the others, tenants are kept apart."""

from __future__ import annotations

import asyncio
import threading

from alertengine.alerts.stream import Hub


async def test_a_reader_that_gives_up_waiting_loses_nothing() -> None:
    hub = Hub(buffer=1000)
    sub = hub.subscribe("t")
    got = []
    for i in range(200):
        waiting = asyncio.ensure_future(sub.next())
        await asyncio.sleep(0)                 # the reader is waiting on the queue
        hub.publish("t", [{"id": i}])          # a message arrives...
        waiting.cancel()                       # ...in the same turn as the reader's keep-alive time-out
        await asyncio.gather(waiting, return_exceptions=True)
        got.append((await sub.next())["data"][0]["id"])
    assert got == list(range(200))


async def test_a_full_subscriber_is_dropped_and_the_others_keep_receiving() -> None:
    hub = Hub(buffer=3)
    slow, fast, other = hub.subscribe("t"), hub.subscribe("t"), hub.subscribe("u")
    for i in range(5):
        hub.publish("t", [{"id": i}])
        assert (await fast.next())["data"][0]["id"] == i
    assert slow.dropped.is_set() and await slow.next() is None
    assert hub.dropped_total == 1 and hub.count("t") == 1 and hub.count("u") == 1
    assert other.queue.empty()                 # another tenant heard nothing


async def test_publishing_from_another_thread_reaches_the_loop() -> None:
    hub = Hub()
    sub = hub.subscribe("t")
    await asyncio.to_thread(hub.publish, "t", [{"id": "from the writer"}])
    assert (await asyncio.wait_for(sub.next(), 10))["data"] == [{"id": "from the writer"}]


async def test_many_publishes_from_a_thread_arrive_in_order_with_few_wake_ups() -> None:
    hub = Hub(buffer=1000)
    sub, other = hub.subscribe("t"), hub.subscribe("u")
    loop = asyncio.get_running_loop()
    wakes = 0
    real = loop.call_soon_threadsafe

    def counting(*args, **kwargs):  # type: ignore[no-untyped-def]
        nonlocal wakes
        wakes += 1
        return real(*args, **kwargs)
    loop.call_soon_threadsafe = counting  # type: ignore[method-assign]
    try:
        def writer() -> None:
            for i in range(200):
                hub.publish("t" if i % 2 == 0 else "u", [{"id": i}])
            hub.publish("nobody", [{"id": "unwatched"}])
        thread = threading.Thread(target=writer)
        thread.start()
        thread.join()   # the loop waits here on purpose: nothing is drained while the thread publishes
    finally:
        loop.call_soon_threadsafe = real  # type: ignore[method-assign]
    got_t = [(await asyncio.wait_for(sub.next(), 10))["data"][0]["id"] for _ in range(100)]
    got_u = [(await asyncio.wait_for(other.next(), 10))["data"][0]["id"] for _ in range(100)]
    assert got_t == list(range(0, 200, 2)) and got_u == list(range(1, 200, 2))
    assert wakes == 1               # one wake-up of the loop for the 200 (and none for a tenant nobody watches)
    assert sub.queue.empty() and other.queue.empty()
