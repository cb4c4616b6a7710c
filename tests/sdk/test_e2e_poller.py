"""End to end: the poller reads an instrumented app's /health/alerts and policy opens an incident when it degrades."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from pathlib import Path

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from alertengine.incidents import engine
from alertengine.incidents.detection import Detector, ServiceRef
from alertengine.notify.gateway import Gateway, JsonLinesChannel
from alertengine.sdk import instrument
from alertengine.signals import HealthReading
from alertengine.signals.poller import Poller, PollTarget
from alertengine.store import Database
from alertengine.tenancy.tenants import create_tenant
from tests.sdk.test_apps import serve

POLL_INTERVAL = 0.25
SLOW_SECONDS = 2.5                    # above the default policy's P95 threshold of 2 s


class Checkout:
    """A service whose /work endpoint turns slow or failing on command."""

    def __init__(self) -> None:
        self.mode = "healthy"
        self.app = Starlette(routes=[Route("/work/{order}", self.work)])

    async def work(self, request: Request) -> JSONResponse:
        if self.mode == "errors":
            raise RuntimeError("checkout is broken")
        if self.mode == "slow":
            until = time.monotonic() + SLOW_SECONDS
            while self.mode == "slow" and time.monotonic() < until:
                await asyncio.sleep(0.05)
        else:
            await asyncio.sleep(0.002)
        return JSONResponse({"order": request.path_params["order"]})


class Shoppers:
    """Client threads sending real requests until stopped (each at most 5 per second)."""

    def __init__(self, url: str, count: int) -> None:
        self.stop = threading.Event()
        self.sent = 0
        self.threads = [threading.Thread(target=self._shop, args=(url, n), daemon=True) for n in range(count)]
        for thread in self.threads:
            thread.start()

    def _shop(self, url: str, n: int) -> None:
        with httpx.Client(base_url=url, timeout=10, headers={"Connection": "close"}) as client:
            i = 0
            while not self.stop.is_set():
                try:
                    client.get(f"/work/{n}-{i}")
                except httpx.HTTPError:
                    pass
                self.sent += 1
                i += 1
                self.stop.wait(0.2)

    def close(self) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(10)


@pytest.mark.parametrize(("mode", "priority", "breach"), [("errors", "P1", "errors"), ("slow", "P2", "latency")])
async def test_the_poller_opens_an_incident_when_the_instrumented_app_degrades(
        db: Database, tmp_path: Path, mode: str, priority: str, breach: str) -> None:
    checkout = Checkout()
    instrument(checkout.app, service_name="checkout", window_seconds=10, bucket_seconds=1)
    detector = Detector(db, Gateway(db, [JsonLinesChannel(tmp_path / "notifications.jsonl")]))
    tenant = db.write_sync(create_tenant("acme", "test")).id
    service = ServiceRef(tenant, "svc_0000000000000001", "checkout")
    readings: list[HealthReading] = []

    async def on_reading(target: PollTarget, reading: HealthReading, lateness: float) -> None:
        readings.append(reading)
        await detector.on_reading(service, reading)

    def incidents() -> list[engine.Incident]:
        return engine.list_incidents(db.read_conn(), tenant)

    with serve(checkout.app, log_level="critical") as url:
        shoppers = Shoppers(url, count=8)
        poller = Poller(lambda: [PollTarget(f"{tenant}/checkout", f"{url}/health/alerts", POLL_INTERVAL)],
                        on_reading, timeout=2.0, refresh=0.5)
        polling = asyncio.create_task(poller.run())
        try:
            await asyncio.sleep(1.5)
            healthy = list(readings)
            assert healthy and all(r.format == "sdk" and r.outcome == "answered" for r in healthy)
            assert healthy[-1].status == "ok" and healthy[-1].sample_size
            assert incidents() == []

            checkout.mode = mode
            degraded_at = time.monotonic()
            while not incidents() and time.monotonic() - degraded_at < 12:
                await asyncio.sleep(0.1)
            [incident] = incidents()
        finally:
            checkout.mode = "healthy"
            await poller.stop()
            await polling
            shoppers.close()

    assert incident.priority == priority and incident.is_open and incident.service_name == "checkout"
    assert time.monotonic() - degraded_at < 12
    opened_by = [r for r in readings[len(healthy):] if r.status == "critical"]
    assert len(opened_by) >= 3 and all(r.format == "sdk" for r in opened_by)
    breaches = [json.loads(row[0])["data"] for row in db.read_conn().execute(
        "SELECT body FROM ledger WHERE tenant = ? AND kind = 'signal.breach' ORDER BY seq", (tenant,))]
    assert len(breaches) >= 3
    assert all(b["reading"]["format"] == "sdk" and breach in {k["kind"] for k in b["breaches"]} for b in breaches)
