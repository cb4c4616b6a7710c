"""A real headless Chromium (Debian's, driven by Playwright) opens an approval link, sees the
action and the host it will call, clicks Approve, sees the confirmation; opening it again shows
"already used"."""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import threading
from pathlib import Path

import pytest
import uvicorn

from alertengine.appliance import DataDir
from alertengine.config import Config
from alertengine.incidents import engine
from alertengine.incidents.detection import ServiceRef
from alertengine.store import Database
from alertengine.tenancy.services import create_service, normalise
from alertengine.tenancy.tenants import create_tenant, set_shadow
from alertengine.web.app import create_app
from tests.fakes.person import PersonChannel
from tests.fakes.receiver import Receiver
from tests.recovery.test_approvals import SLOW
from tests.waiting import wait_for


def _chromium() -> str:
    found = shutil.which("chromium")
    if found is None:
        if os.environ.get("CI"):
            pytest.fail("CI must install Debian's chromium (see .ci/run)")
        pytest.skip("chromium is not installed on this machine")
    return found


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_browser_preview_approve_and_reload(data_dir: DataDir, db: Database, tmp_path: Path) -> None:
    chromium = _chromium()
    from playwright.sync_api import sync_playwright

    port = _free_port()
    config = Config(data_dir=data_dir.path, console_notifications=False, port=port,
                    public_url=f"http://127.0.0.1:{port}")
    app = create_app(config, data_dir, db)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    wait_for(lambda: server.started, what="the appliance started")
    try:
        with Receiver() as receiver:
            tenant = db.write_sync(create_tenant("acme", "test")).id
            db.write_sync(set_shadow(tenant, False, "test"))
            spec = normalise({"name": "checkout", "health_url": "http://127.0.0.1:9/h",
                              "recovery_webhook_url": f"{receiver.url}/recover",
                              "contacts": {"primary": {"name": "Ada"}}}, config.url_policy)
            svc, receiver.secret = db.write_sync(create_service(tenant, "checkout", spec, app.state.vault, "test"))
            ref = ServiceRef(tenant, svc.id, "checkout")

            async def outage() -> None:
                for _ in range(3):
                    await app.state.detector.on_reading(ref, SLOW)
            person = PersonChannel().install(app)
            asyncio.run(outage())
            [link] = person.links()
            assert "/action/recover/" not in (data_dir.path / "notifications.jsonl").read_text()  # a log: no links
            assert link.startswith(f"http://127.0.0.1:{port}/action/recover/")

            with sync_playwright() as pw:
                browser = pw.chromium.launch(executable_path=chromium, args=[
                    "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                    "--disable-sync", "--no-first-run"])
                page = browser.new_page()
                page.goto(link)
                assert page.locator("h1").inner_text() == "Approve recovery for INC-1?"
                body = page.locator("body").inner_text()
                assert "restart service" in body and "127.0.0.1" in body and "Ada" in body
                assert engine.get_incident(db.read_conn(), tenant, "INC-1").stage == engine.PROPOSED
                page.screenshot(path=str(tmp_path / "preview.png"))
                page.get_by_role("button", name="Approve").click()
                page.wait_for_selector("text=Approved")
                assert "is running now" in page.locator("body").inner_text()
                page.goto(link)
                assert page.locator("h1").inner_text() == "Already used"
                assert "link:primary:Ada" in page.locator("body").inner_text()
                browser.close()
            wait_for(lambda: engine.get_incident(db.read_conn(), tenant, "INC-1").stage == engine.EXECUTED,
                     what="INC-1 EXECUTED")
            assert len(receiver.requests) == 1 and receiver.requests[0].signature_ok
            if os.environ.get("ALERTENGINE_KEEP_SCREENSHOTS"):
                shutil.copy(tmp_path / "preview.png", os.environ["ALERTENGINE_KEEP_SCREENSHOTS"])
    finally:
        server.should_exit = True
        thread.join(10)
        asyncio.run(app.state.runtime.http.aclose())
