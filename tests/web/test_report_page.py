"""The shadow-mode report page in a real headless Chromium: it renders, shows the incident and the
held-back counts, and escapes what services and alerts put in it."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from alertengine.incidents.detection import ServiceRef
from alertengine.signals import HealthReading
from tests.web.conftest import World

SLOW = HealthReading("answered", "sdk", 200, 10.0, "warning", p95_ms=9000.0, error_rate=0.0, health_score=70.0,
                     sample_size=100)


def chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None:
        if os.environ.get("CI"):
            pytest.fail("CI must install Debian's chromium (see .ci/run)")
        pytest.skip("chromium is not installed on this machine")
    return found


def headless(binary: str, tmp: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([binary, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                           "--disable-background-networking", "--disable-component-update", "--disable-sync",
                           f"--user-data-dir={tmp / 'profile'}", *args],
                          capture_output=True, text=True, timeout=120)


async def test_report_page_renders_in_chromium(world: World, tmp_path: Path) -> None:
    binary = chromium()
    t = world.tenants["a"]
    ref = ServiceRef(t, "svc_00000000000000aa", "<script>alert('x')</script>checkout")
    for _ in range(3):
        await world.app.state.detector.on_reading(ref, SLOW)  # type: ignore[attr-defined]
    reply = await world.client.get(f"/tenant/{t}/shadow/report", params={"format": "html"},
                                   headers=world.auth(world.keys[("a", "auditor")]))
    assert reply.status_code == 200 and reply.headers["content-type"].startswith("text/html")
    page = tmp_path / "report.html"
    page.write_text(reply.text, encoding="utf-8")
    dom = headless(binary, tmp_path, "--dump-dom", page.as_uri())
    assert dom.returncode == 0, dom.stderr[-2000:]
    assert "Shadow-mode report: tenant-a" in dom.stdout and "INC-1" in dom.stdout
    assert "notifications held back" in dom.stdout
    assert "<script>alert" not in dom.stdout and "&lt;script&gt;" in dom.stdout  # escaped, never executed
    shot = tmp_path / "report.png"
    result = headless(binary, tmp_path, f"--screenshot={shot}", "--window-size=1200,1400", page.as_uri())
    assert result.returncode == 0, result.stderr[-2000:]
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 10_000
    if os.environ.get("ALERTENGINE_KEEP_SCREENSHOTS"):
        shutil.copy(shot, os.environ["ALERTENGINE_KEEP_SCREENSHOTS"])


async def test_building_the_report_never_holds_up_the_event_loop(world, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """The report is read on a worker thread, so while it is being built (held here until
    released) the appliance answers everyone else."""
    import asyncio
    import threading

    from alertengine.web import incidents as incidents_web
    building, release = threading.Event(), threading.Event()
    real = incidents_web.projected_report

    def slow(conn, tenant, **kw):  # type: ignore[no-untyped-def]
        building.set()
        assert release.wait(30)
        return real(conn, tenant, **kw)
    monkeypatch.setattr(incidents_web, "projected_report", slow)
    t = world.tenants["a"]
    report = asyncio.ensure_future(world.client.get(f"/tenant/{t}/shadow/report",
                                                    headers=world.auth(world.keys[("a", "viewer")])))
    assert await asyncio.to_thread(building.wait, 30)
    health = await asyncio.wait_for(world.client.get("/healthz"), 10)   # answered while the report is held
    assert health.status_code == 200 and not report.done()
    release.set()
    assert (await report).status_code == 200
