"""A real Prometheus scraping a real ``alertengine serve`` with a scrape key.

Prometheus (Debian's ``prometheus`` package) runs on a free port of 127.0.0.1 with its own
configuration and storage under tmp_path and two scrape jobs, every second: ``alertengine`` with a
scrape key as its bearer token, and ``viewer`` with a tenant viewer's key. The first target must be
healthy (Prometheus parsed the whole document without an error) and a query must return the
appliance's metrics; the second must be down, refused with 403."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e.peers import Peer, running_peer
from tests.serving import DEADLINE, Appliance, free_port, running_appliance, wait_for

pytestmark = pytest.mark.slow

BINARY = shutil.which("prometheus") or "/usr/bin/prometheus"
SCRAPE_DEADLINE = 2 * DEADLINE    # Prometheus's start, its first scrapes, a loaded machine

CONFIG = """\
global:
  scrape_interval: 1s
  scrape_timeout: 1s
scrape_configs:
  - job_name: alertengine
    metrics_path: /metrics
    authorization:
      type: Bearer
      credentials: {scrape_key}
    static_configs:
      - targets: ['{target}']
  - job_name: viewer
    metrics_path: /metrics
    authorization:
      type: Bearer
      credentials: {viewer_key}
    static_configs:
      - targets: ['{target}']
"""


class Prometheus(Peer):
    def api(self, path: str, **params: str) -> Any:
        reply = httpx.get(f"{self.url}/api/v1/{path}", params=params, timeout=10, trust_env=False)
        assert reply.status_code == 200, reply.text
        body = reply.json()
        assert body["status"] == "success", body
        return body["data"]

    def target(self, job: str) -> dict[str, Any] | None:
        found = [t for t in self.api("targets", state="active")["activeTargets"] if t["labels"]["job"] == job]
        return found[0] if found else None


@dataclass
class Setup:
    app: Appliance
    tenant: str
    scrape_key: str
    viewer_key: str


def store_scrape_key(app: Appliance) -> str:
    """A scrape key made as an operator would: ``alertengine key create --scrape`` (a key is read
    from the database on every request, so the running appliance takes it at once)."""
    made = app.cli("key", "create", "--scrape", "--name", "prometheus")
    assert made.code == 0, made.stderr
    assert made.json()["key"]["role"] == "scrape" and made.json()["key"]["tenant"] is None
    return made.json()["secret"]


@pytest.fixture
def setup(tmp_path: Path) -> Iterator[Setup]:
    if not os.access(BINARY, os.X_OK):
        pytest.skip(f"{BINARY} is not installed (apt-get install prometheus); CI installs it")
    workdir = tmp_path / "appliance"
    workdir.mkdir()
    with running_appliance(workdir) as app:
        tenant = app.add_tenant("payments")
        _id, viewer = app.add_key(tenant, "viewer", "payments-viewer")
        # a service to poll (the appliance's own /healthz), so polls are counted as it runs
        app.ok("POST", f"/api/tenants/{tenant}/services", app.admin_key, 201,
               json={"name": "self", "health_url": f"{app.url}/healthz", "poll_interval": 0.5})
        yield Setup(app, tenant, store_scrape_key(app), viewer)


@pytest.fixture
def prometheus(tmp_path: Path, setup: Setup) -> Iterator[Prometheus]:
    workdir = tmp_path / "prometheus"
    (workdir / "data").mkdir(parents=True)
    config = workdir / "prometheus.yml"
    config.write_text(CONFIG.format(scrape_key=setup.scrape_key, viewer_key=setup.viewer_key,
                                    target=setup.app.url.removeprefix("http://")))
    port = free_port()
    with running_peer("prometheus", [BINARY, f"--config.file={config}", f"--storage.tsdb.path={workdir / 'data'}",
                                     f"--web.listen-address=127.0.0.1:{port}", "--log.level=debug"],
                      workdir, port) as peer:
        yield Prometheus(peer.name, peer.proc, peer.url, peer.log)


def test_prometheus_scrapes_the_appliance_with_a_scrape_key(setup: Setup, prometheus: Prometheus) -> None:
    def healthy() -> dict[str, Any] | None:
        target = prometheus.target("alertengine")
        return target if target and target["health"] == "up" else None

    target = wait_for(healthy, SCRAPE_DEADLINE, interval=0.2, what="the alertengine target to be up",
                      explain=lambda: f"{prometheus.api('targets')}\n{prometheus.output()}")
    assert target["lastError"] == ""
    assert target["scrapeUrl"] == f"{setup.app.url}/metrics"

    def query(expr: str) -> list[dict[str, Any]]:
        return prometheus.api("query", query=expr)["result"]

    ledger = wait_for(lambda: query('alertengine_ledger_entries{job="alertengine"}'), SCRAPE_DEADLINE, interval=0.2,
                      what="a query to return alertengine_ledger_entries")
    assert len(ledger) == 1 and float(ledger[0]["value"][1]) >= 3   # started, tenant created, keys made
    [mode] = query('alertengine_mode{job="alertengine", mode="NORMAL"}')
    assert mode["value"][1] == "1"
    [open_incidents] = query(f'alertengine_incidents_open{{job="alertengine", tenant="{setup.tenant}"}}')
    assert open_incidents["value"][1] == "0"
    # the telemetry registry came through too: a histogram's buckets, every one parsed, and what
    # the writer and the poller observed as they ran
    buckets = query('alertengine_writer_commit_seconds_bucket{job="alertengine"}')
    assert {b["metric"]["le"] for b in buckets} >= {"0.001", "0.05", "1.0", "+Inf"}
    wait_for(lambda: query('alertengine_writer_commit_seconds_count{job="alertengine"} > 0'), SCRAPE_DEADLINE,
             interval=0.2, what="writer commits observed")
    wait_for(lambda: query('alertengine_polls_total{job="alertengine", outcome="ok"} > 0'), SCRAPE_DEADLINE,
             interval=0.2, what="health polls counted")
    # nothing of the document was dropped for being malformed
    [scraped] = query('scrape_samples_scraped{job="alertengine"}')
    assert float(scraped["value"][1]) >= 50

    def refused() -> dict[str, Any] | None:
        viewer = prometheus.target("viewer")
        return viewer if viewer and viewer["health"] == "down" else None

    viewer = wait_for(refused, SCRAPE_DEADLINE, interval=0.2, what="the viewer's target to be refused")
    assert "403" in viewer["lastError"], viewer
    assert query('alertengine_ledger_entries{job="viewer"}') == []

    assert prometheus.stop() == 0, prometheus.output()
    assert setup.app.stop() == 0, setup.app.output()
