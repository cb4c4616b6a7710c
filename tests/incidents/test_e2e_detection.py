"""End to end, as a user runs it: a real `alertengine serve`, a real service that degrades on
command, a real poll loop. In shadow mode nothing leaves; the report matches the ledger; recovery
closes the incident and the next outage opens another; replay equals the tables."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import run_cli
from tests.serving import start_server, stop
from tests.waiting import wait_for

HEALTHY = {"sdk": "alertengine", "status": "ok", "window_seconds": 60,
           "metrics": {"overall_p95_ms": 120.0, "error_rate": 0.0, "anomaly_score": 0.1, "sample_size": 400},
           "health_score": {"score": 98.0, "status": "ok", "trend": "stable"}}
SLOW = {**HEALTHY, "status": "warning",
        "metrics": {"overall_p95_ms": 9000.0, "error_rate": 0.0, "anomaly_score": 0.4, "sample_size": 400}}


class Fleet:
    """A service whose health answer changes on command, and a listener counting every request
    that reaches its recovery webhook or anything else but /health."""

    def __init__(self) -> None:
        self.state: dict[str, Any] = HEALTHY
        self.outbound: list[str] = []
        fleet = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802
                if self.path == "/health":
                    body = json.dumps(fleet.state).encode()
                    self.send_response(200)
                    self.send_header("content-type", "application/json")
                    self.send_header("content-length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                else:
                    self.do_POST()

            def do_POST(self) -> None:  # noqa: N802
                fleet.outbound.append(self.path)
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                return None

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()




@pytest.mark.slow
def test_outage_in_shadow_mode_then_recovery_then_a_second_outage(tmp_path: Path) -> None:
    fleet = Fleet()
    data = tmp_path / "data"
    server = start_server(tmp_path, "--data-dir", str(data), env={"ALERTENGINE_CONSOLE_NOTIFICATIONS": "false"})
    api = httpx.Client(base_url=server.url, timeout=10)
    try:
        import re
        admin = re.search(r"appliance admin API key \(shown once, store it now\): (\S+)", server.output()).group(1)
        api.headers["Authorization"] = f"Bearer {admin}"
        tenant = api.post("/api/tenants", json={"name": "acme"}).json()["id"]
        service = api.post(f"/api/tenants/{tenant}/services", json={
            "name": "checkout", "health_url": f"{fleet.url}/health", "poll_interval": 0.5,
            "recovery_webhook_url": f"{fleet.url}/recover"}).json()
        assert service["id"].startswith("svc_")

        def incidents() -> list[dict]:
            return api.get(f"/api/tenants/{tenant}/incidents").json()["incidents"]

        time.sleep(2)  # healthy polls: nothing opens
        assert incidents() == []
        fleet.state = SLOW
        # detection is immediate; diagnosis and the proposal follow: wait for the stage asserted
        [inc] = wait_for(lambda: [i for i in incidents() if i["stage"] == "PROPOSED"], what="INC-1 PROPOSED")
        assert inc["id"] == "INC-1" and inc["priority"] == "P2"
        time.sleep(1.5)  # more breaching polls: still one incident, never authorized
        assert [i["id"] for i in incidents()] == ["INC-1"]
        timeline = api.get(f"/api/tenants/{tenant}/incidents/INC-1/timeline").json()["entries"]
        assert "incident.authorized" not in [e["kind"] for e in timeline]

        fleet.state = HEALTHY
        wait_for(lambda: incidents()[0]["stage"] == "RECOVERED")
        fleet.state = SLOW
        wait_for(lambda: len(incidents()) == 2)
        assert incidents()[0]["id"] == "INC-2" and incidents()[0]["is_open"]

        assert fleet.outbound == []  # shadow mode: nothing left the appliance
        assert not (data / "notifications.jsonl").exists()
        def suppressed() -> int:
            return len(api.get(f"/api/tenants/{tenant}/ledger", params={"kind": "notification.suppressed",
                                                                         "limit": 1000}).json()["entries"])
        before = suppressed()  # the poll loop goes on, so the report is bracketed by two ledger reads
        report = api.get(f"/tenant/{tenant}/shadow/report").json()
        after = suppressed()
        assert report["incidents_observed"] == 2
        assert 3 <= before <= report["suppressed"]["notification"] <= after
        assert [i["incident"] for i in report["incidents"]] == ["INC-1", "INC-2"]
        assert report["incidents"][0]["detection_latency_s"] >= 0
        html = api.get(f"/tenant/{tenant}/shadow/report", params={"format": "html"})
        assert html.headers["content-type"].startswith("text/html") and "INC-1" in html.text

        live = api.delete(f"/tenant/{tenant}/shadow").json()
        assert live == {"tenant": tenant, "shadow": False}
        fleet.state = HEALTHY
        wait_for(lambda: incidents()[0]["stage"] == "RECOVERED")
        lines = wait_for(lambda: (data / "notifications.jsonl").exists() and (data / "notifications.jsonl").read_text())
        assert json.loads(lines.splitlines()[0])["event"] == "recovered"
    finally:
        api.close()
        assert stop(server) == 0, server.output()
        fleet.close()
    replayed = run_cli("replay", "--data-dir", str(data), "--json")
    assert replayed.code == 0, replayed.stdout
    assert json.loads(replayed.stdout)["differences"] == []
    assert run_cli("ledger", "verify", "--data-dir", str(data)).code == 0
