"""The live alert stream against a real ``alertengine serve``, with the ``websockets`` client
library: the initial state, a new alert within a second, never another tenant's alerts, a slow
client dropped while the others keep receiving, refused keys, and the same data as Server-Sent
Events."""

from __future__ import annotations

import base64
import json
import os
import socket
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

from tests.serving import Appliance, running_appliance, wait_for

pytestmark = pytest.mark.slow
RULE = {"name": "High Risk Action Alert", "is_active": True,
        "rule_definition": {"condition_type": "threshold", "metric": "risk_score", "operator": ">=", "threshold": 80,
                            "severity": "high", "cooldown_minutes": 0, "max_alerts_per_hour": 100000}}


def ws_url(app: Appliance, path: str = "/api/alerts/stream") -> str:
    return app.url.replace("http://", "ws://") + path


def setup(app: Appliance, name: str) -> tuple[str, str, str]:
    tenant = app.add_tenant(name)
    _id, admin = app.add_key(tenant, "admin", f"{name}-admin")
    ingest = app.add_integration(tenant, "apps", by=admin)
    app.ok("POST", "/api/smart-rules", admin, status=201, json=RULE)
    return tenant, admin, ingest


def observe(app: Appliance, ingest: str, risk: float, **labels: str) -> list[str]:
    reply = app.client.post(f"{app.url}/ingest/observations/{ingest}",
                            json={"event": "action.executed", "metrics": {"risk_score": risk}, "labels": labels})
    assert reply.status_code == 200, reply.text
    return reply.json()["alerts"]


def metric(app: Appliance, name: str) -> float:
    text = app.get("/metrics", app.admin_key).text
    return float(next(line.split()[-1] for line in text.splitlines() if line.startswith(name + " ")))


def test_initial_state_then_new_alerts_within_a_second_and_only_the_tenants_own(tmp_path: Path) -> None:
    with running_appliance(tmp_path) as app:
        _a, admin_a, ingest_a = setup(app, "payments")
        _b, admin_b, ingest_b = setup(app, "health")
        [before] = observe(app, ingest_a, 85)
        with connect(ws_url(app), additional_headers={"Authorization": f"Bearer {admin_a}"}) as ws_a, \
                connect(ws_url(app), subprotocols=["bearer", admin_b]) as ws_b:   # a browser's way
            first = json.loads(ws_a.recv(timeout=10))
            assert first["type"] == "initial_alerts"
            assert [a["id"] for a in first["data"]] == [before]
            assert first["data"][0]["message"] == "High Risk Action Alert: risk_score is 85 (threshold: >= 80)"
            assert json.loads(ws_b.recv(timeout=10)) == {"type": "initial_alerts", "data": []}
            assert ws_b.subprotocol == "bearer"

            [new] = observe(app, ingest_a, 99, agent_id="export-agent")
            got = json.loads(ws_a.recv(timeout=1.0))          # within a second of the ingest's answer
            assert got["type"] == "alerts" and [a["id"] for a in got["data"]] == [new]
            assert got["data"][0]["metrics_snapshot"]["agent_id"] == "export-agent"

            [theirs] = observe(app, ingest_b, 90)
            seen_b = json.loads(ws_b.recv(timeout=5))
            assert [a["id"] for a in seen_b["data"]] == [theirs]    # the first thing B sees is its own
            app.ok("POST", f"/api/alerts/{new}/acknowledge", admin_a)
            acked = json.loads(ws_a.recv(timeout=5))
            assert acked["data"][0]["id"] == new and acked["data"][0]["status"] == "acknowledged"
            assert all(a["id"] != theirs for a in acked["data"])
            with pytest.raises(TimeoutError):
                ws_b.recv(timeout=0.5)                              # nothing of A's ever reaches B


def test_keys_are_checked_before_the_stream_opens(tmp_path: Path) -> None:
    with running_appliance(tmp_path) as app:
        tenant_a, admin_a, _ = setup(app, "payments")
        _b, admin_b, _ = setup(app, "health")
        for headers in ({}, {"Authorization": "Bearer nope"}, {"Authorization": f"Bearer {admin_a[:-2]}xx"}):
            with pytest.raises(InvalidStatus):
                connect(ws_url(app), additional_headers=headers).close()
        with pytest.raises(InvalidStatus):    # B's key on A's tenant path
            connect(ws_url(app, f"/api/tenants/{tenant_a}/alerts/stream"),
                    additional_headers={"Authorization": f"Bearer {admin_b}"}).close()
        with pytest.raises(InvalidStatus):    # the appliance admin must name a tenant
            connect(ws_url(app), additional_headers={"Authorization": f"Bearer {app.admin_key}"}).close()
        with connect(ws_url(app, f"/api/tenants/{tenant_a}/alerts/stream"),
                     additional_headers={"Authorization": f"Bearer {app.admin_key}"}) as ws:
            assert json.loads(ws.recv(timeout=10))["type"] == "initial_alerts"


def _raw_client(app: Appliance, key: str) -> socket.socket:
    """A WebSocket client that completes the handshake and then never reads again: a stuck consumer."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", app.server.port))
    nonce = base64.b64encode(os.urandom(16)).decode()
    sock.sendall((f"GET /api/alerts/stream HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
                  f"Connection: Upgrade\r\nSec-WebSocket-Key: {nonce}\r\nSec-WebSocket-Version: 13\r\n"
                  f"Authorization: Bearer {key}\r\n\r\n").encode())
    head = b""
    while b"\r\n\r\n" not in head:
        head += sock.recv(1)
    assert head.startswith(b"HTTP/1.1 101"), head
    return sock


def test_a_slow_client_is_dropped_while_the_others_keep_receiving(tmp_path: Path) -> None:
    with running_appliance(tmp_path, env={"ALERTENGINE_STREAM_BUFFER": "4"}) as app:
        _a, admin, ingest = setup(app, "payments")
        stuck = _raw_client(app, admin)
        wait_for(lambda: metric(app, "alertengine_stream_clients") == 1, what="the stuck client subscribed")
        labels = {f"label{i}": "x" * 250 for i in range(30)}     # ~8 kB an alert: the stuck one's buffers fill
        batch = {"observations": [{"event": "action.executed", "metrics": {"risk_score": 90}, "labels": labels}] * 200}
        with connect(ws_url(app), additional_headers={"Authorization": f"Bearer {admin}"}) as ws:
            assert json.loads(ws.recv(timeout=10))["type"] == "initial_alerts"
            deadline = time.monotonic() + 120
            while metric(app, "alertengine_stream_dropped_total") < 1:
                assert time.monotonic() < deadline, "the stuck client was never dropped"
                reply = app.client.post(f"{app.url}/ingest/observations/{ingest}", json=batch)
                assert reply.status_code == 200, reply.text
                expected = set(reply.json()["alerts"])
                assert len(expected) == 200
                while expected:                                    # the healthy client gets every one
                    got = json.loads(ws.recv(timeout=10))
                    expected -= {a["id"] for a in got["data"]}
            assert metric(app, "alertengine_stream_clients") == 1   # only the healthy one remains
            [last] = observe(app, ingest, 91)
            assert json.loads(ws.recv(timeout=5))["data"][0]["id"] == last
        stuck.close()
        assert "fell 4 messages behind and was dropped" in app.output()


def test_server_sent_events_carry_the_same_stream(tmp_path: Path) -> None:
    with running_appliance(tmp_path) as app:
        _a, admin, ingest = setup(app, "payments")
        [first] = observe(app, ingest, 85)
        with httpx.Client(timeout=30, trust_env=False) as client, \
                client.stream("GET", f"{app.url}/api/alerts/stream", headers={"Authorization": f"Bearer {admin}",
                                                                                "Accept": "text/event-stream"}) as r:
            assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
            events = _sse_events(r.iter_lines())
            kind, data = next(events)
            assert kind == "initial_alerts" and [a["id"] for a in data["data"]] == [first]
            [second] = observe(app, ingest, 95)
            kind, data = next(events)
            assert kind == "alerts" and [a["id"] for a in data["data"]] == [second]
        refused = app.get("/api/alerts/stream")
        assert refused.status_code == 401 and refused.json()["error"]["code"] == "unauthenticated"


def _sse_events(lines: Any) -> Any:
    kind, data = None, None
    for line in lines:
        if line.startswith("event: "):
            kind = line[7:]
        elif line.startswith("data: "):
            data = json.loads(line[6:])
        elif line == "" and kind is not None:
            yield kind, data
            kind, data = None, None
