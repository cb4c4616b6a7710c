"""The live stream's hub alone: nothing published is lost to a reader that timed out, a full
subscriber is dropped without slowing the others, tenants are kept apart."""

from __future__ import annotations

import asyncio

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
