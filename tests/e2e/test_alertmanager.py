"""The real Prometheus Alertmanager delivering to a real ``alertengine serve``.

Alertmanager runs on a free port of 127.0.0.1 with its own configuration and storage under
tmp_path, clustering off, and one route (1 s group_wait / group_interval) to a webhook receiver
pointing at the appliance's ``/ingest/alertmanager`` with the tenant's integration key as a bearer
header and ``send_resolved: true``. A firing alert posted to Alertmanager's API opens an incident
in the appliance; the same alert posted again with ``endsAt`` in the past resolves it there."""

from __future__ import annotations

import json
import os
import re
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e.peers import Peer, running_peer
from tests.serving import DEADLINE, Appliance, free_port, running_appliance, wait_for

pytestmark = pytest.mark.slow

BINARY = shutil.which("prometheus-alertmanager") or "/usr/bin/prometheus-alertmanager"
NOTIFY_DEADLINE = 2 * DEADLINE   # Alertmanager's group timers plus a loaded machine

CONFIG = """\
route:
  receiver: alertengine
  group_by: ['alertname', 'service']
  group_wait: 1s
  group_interval: 1s
  repeat_interval: 1h
receivers:
  - name: alertengine
    webhook_configs:
      - url: {url}
        send_resolved: true
        http_config:
          authorization:
            type: Bearer
            credentials: {key}
"""


class Alertmanager(Peer):
    def metric(self, name: str, **labels: str) -> float:
        """The sum of a counter over the series whose labels include ``labels``."""
        text = httpx.get(f"{self.url}/metrics", timeout=30, trust_env=False).text
        total = 0.0
        for line in text.splitlines():
            found = re.fullmatch(rf"{name}(?:\{{(.*)\}})? (\S+)", line)
            if found and all(f'{k}="{v}"' in (found.group(1) or "") for k, v in labels.items()):
                total += float(found.group(2))
        return total


@dataclass
class Setup:
    app: Appliance
    tenant: str
    admin: str
    ingest_key: str


def utc(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@pytest.fixture
def setup(tmp_path: Path) -> Iterator[Setup]:
    if not os.access(BINARY, os.X_OK):
        pytest.skip(f"{BINARY} is not installed (apt-get install prometheus-alertmanager); CI installs it")
    workdir = tmp_path / "appliance"
    workdir.mkdir()
    with running_appliance(workdir) as app:
        tenant = app.add_tenant("payments")
        _admin_id, admin = app.add_key(tenant, "admin", "payments-admin")
        ingest_key = app.add_integration(tenant, "alertmanager", by=admin)
        yield Setup(app, tenant, admin, ingest_key)


@pytest.fixture
def alertmanager(tmp_path: Path, setup: Setup) -> Iterator[Alertmanager]:
    workdir = tmp_path / "alertmanager"
    (workdir / "data").mkdir(parents=True)
    config = workdir / "alertmanager.yml"
    config.write_text(CONFIG.format(url=f"{setup.app.url}/ingest/alertmanager", key=setup.ingest_key))
    port = free_port()
    with running_peer("prometheus-alertmanager",
                      [BINARY, f"--config.file={config}", f"--storage.path={workdir / 'data'}",
                       "--cluster.listen-address=", f"--web.listen-address=127.0.0.1:{port}",
                       f"--web.external-url=http://127.0.0.1:{port}", "--log.level=debug"], workdir, port) as peer:
        yield Alertmanager(peer.name, peer.proc, peer.url, peer.log)


def test_alertmanager_opens_then_resolves_an_incident(setup: Setup, alertmanager: Alertmanager) -> None:
    app, tenant = setup.app, setup.tenant
    started = datetime.now(UTC) - timedelta(seconds=30)
    alert: dict[str, Any] = {
        "labels": {"alertname": "CheckoutDown", "service": "checkout", "severity": "critical",
                   "instance": "10.0.0.5:8000"},
        "annotations": {"summary": "checkout answers 503", "description": "every probe failed for 30 s"},
        "startsAt": utc(started),
        "generatorURL": "http://prometheus.test/graph?g0.expr=up",
    }
    posted = httpx.post(f"{alertmanager.url}/api/v2/alerts", json=[alert], timeout=30, trust_env=False)
    assert posted.status_code == 200, posted.text

    def explain() -> str:
        return f"appliance incidents: {app.incidents(tenant)}\n--- alertmanager ---\n{alertmanager.output()}"

    [opened] = wait_for(what="the appliance to open an incident", check=lambda: app.incidents(tenant), timeout=NOTIFY_DEADLINE,
                        explain=explain)
    assert opened["id"] == "INC-1" and opened["is_open"] and opened["source"] == "alertmanager"
    assert opened["service_name"] == "checkout" and opened["title"] == "checkout answers 503"
    assert opened["priority"] == "P0"

    # resolve it in Alertmanager: the same alert again, ended a moment ago
    alert["endsAt"] = utc(datetime.now(UTC) - timedelta(seconds=1))
    posted = httpx.post(f"{alertmanager.url}/api/v2/alerts", json=[alert], timeout=30, trust_env=False)
    assert posted.status_code == 200, posted.text
    closed = app.wait_for_stage(tenant, "INC-1", "RESOLVED", NOTIFY_DEADLINE)
    assert closed["is_open"] is False and closed["closed_at"]
    assert [i["id"] for i in app.incidents(tenant)] == ["INC-1"]   # one incident, however often AM re-sent

    timeline = app.ok("GET", f"/api/tenants/{tenant}/incidents/INC-1/timeline", setup.admin)["entries"]
    received = [e for e in timeline if e["kind"] == "alert.received"]
    assert [e["decision"] for e in received] == ["firing", "resolved"]
    assert {e["actor"] for e in received} == {"ingest:alertmanager"}
    for entry in received:
        assert entry["data"]["labels"]["alertname"] == "CheckoutDown"
        assert entry["data"]["url"] == alert["generatorURL"]
        assert entry["data"]["starts_at"].startswith(alert["startsAt"][:19])
    [detected] = [e for e in timeline if e["kind"] == "incident.detected"]
    assert detected["actor"] == "policy" and detected["stage"] == "DETECTED"
    [resolved] = [e for e in timeline if e["kind"] == "incident.resolved"]
    assert resolved["actor"] == "ingest:alertmanager" and resolved["stage"] == "RESOLVED"
    assert resolved["data"]["status"] == "resolved" and resolved["data"]["ends_at"]
    kinds = [e["kind"] for e in timeline]
    assert kinds.index("incident.detected") < kinds.index("incident.resolved")
    assert [e["kind"] for e in app.ledger(tenant, kind="incident.resolved")] == ["incident.resolved"]

    # Alertmanager saw every delivery accepted
    assert alertmanager.metric("alertmanager_notifications_total", integration="webhook") >= 2
    assert alertmanager.metric("alertmanager_notifications_failed_total", integration="webhook") == 0, \
        alertmanager.output()

    assert alertmanager.stop() == 0, alertmanager.output()
    assert app.stop() == 0, app.output()
    verified = app.cli("ledger", "verify")
    assert verified.code == 0, verified.stdout + verified.stderr
    assert json.loads(verified.stdout)["checkpoint_size"] == json.loads(verified.stdout)["entries_checked"]
