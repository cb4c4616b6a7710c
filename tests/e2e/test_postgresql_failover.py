"""Two ``alertengine serve`` nodes on one PostgreSQL database (a private cluster of Debian's
server): one leads, the other forwards to it; ``kill -9`` the leader while alerts flow and the
other takes over within the bound, with every acknowledged alert kept, the leadership change in
the ledger, and ``alertengine ledger verify`` passing. A leader that is stopped (SIGSTOP) and
wakes after losing its lease cannot write, and exits to be started again as a follower."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

from alertengine.appliance import init_data_dir
from tests.conftest import run_cli
from tests.fakes.telegram import FakeTelegram, fake_telegram  # noqa: F401  (fixture)
from tests.pgcluster import PgCluster, server_bin
from tests.serving import ADMIN_KEY_RE, Server, start_server, stop
from tests.waiting import wait_for

pytestmark = pytest.mark.skipif(server_bin() is None, reason="PostgreSQL's server is not installed")

FAILOVER_BOUND = 10.0   # seconds, with the default lease (issue 17)


def alert_group(start: int, size: int) -> dict[str, Any]:
    return {"version": "4", "status": "firing", "receiver": "ae", "groupKey": "{}", "truncatedAlerts": 0,
            "groupLabels": {}, "commonLabels": {}, "commonAnnotations": {}, "externalURL": "http://am",
            "alerts": [{"status": "firing", "labels": {"alertname": f"Rule{n % 7}", "service": f"svc-{n % 5}",
                                                       "instance": f"host-{n}", "severity": "warning"},
                        "annotations": {"summary": f"alert {n}"}, "startsAt": "2026-12-02T10:00:00Z",
                        "endsAt": "0001-01-01T00:00:00Z", "fingerprint": f"{n:016x}"}
                       for n in range(start, start + size)]}


class Nodes:
    def __init__(self, root: Path, url: str) -> None:
        self.root = root
        self.url = url
        self.servers: dict[str, Server] = {}
        seed = init_data_dir(root / "seed")          # one set of keys, copied to every node
        self.seed = seed.path

    def env(self, name: str) -> dict[str, str]:
        return {"ALERTENGINE_DATABASE_URL": self.url, "ALERTENGINE_NODE_NAME": name,
                "ALERTENGINE_CONSOLE_NOTIFICATIONS": "false"}

    def start(self, name: str) -> Server:
        data = self.root / name
        if not data.exists():
            shutil.copytree(self.seed, data)
        server = start_server(self.root, "--data-dir", str(data), env=self.env(name))
        self.servers[name] = server
        return server

    def health(self, name: str) -> dict[str, Any] | None:
        try:
            reply = httpx.get(self.servers[name].url + "/healthz", timeout=2)
        except httpx.HTTPError:
            return None
        return reply.json() if reply.status_code == 200 else None

    def role(self, name: str) -> str | None:
        health = self.health(name)
        return health.get("role") if health else None

    def stop_all(self) -> None:
        for server in self.servers.values():
            if server.proc.poll() is None:
                try:
                    os.kill(server.proc.pid, signal.SIGCONT)
                    stop(server)
                except (subprocess.TimeoutExpired, ProcessLookupError):
                    server.proc.kill()
                    server.proc.wait(timeout=30)
            print(f"--- serve output ({server.url}) ---\n{server.output()}")


@pytest.fixture
def nodes(tmp_path: Path, pg_cluster: PgCluster) -> Any:
    made = Nodes(tmp_path, pg_cluster.fresh_url("ha"))
    try:
        yield made
    finally:
        made.stop_all()


def rows(url: str, sql: str, *params: Any) -> list[tuple]:
    with psycopg.connect(url, autocommit=True) as conn:
        return conn.execute(sql.replace("?", "%s"), params).fetchall()


def test_kill_the_leader_and_the_other_node_takes_over_losing_nothing_acknowledged(nodes: Nodes) -> None:
    a = nodes.start("node-a")
    wait_for(lambda: nodes.role("node-a") == "leader", what="node-a to lead", explain=a.output)
    admin = ADMIN_KEY_RE.findall(a.output())
    assert len(admin) == 1, a.output()
    b = nodes.start("node-b")
    wait_for(lambda: nodes.role("node-b") == "follower", what="node-b to follow", explain=b.output)
    assert nodes.health("node-b")["leader"]["node"] == "node-a"

    head = {"Authorization": f"Bearer {admin[0]}"}
    with httpx.Client(timeout=30, trust_env=False) as client:   # set up through the follower: forwarded
        tenant = client.post(b.url + "/api/tenants", headers=head, json={"name": "payments"})
        assert tenant.status_code == 201, tenant.text
        tid = tenant.json()["id"]
        made = client.post(f"{b.url}/api/tenants/{tid}/integrations", headers=head, json={"name": "am"})
        assert made.status_code == 201, made.text
        key = made.json()["key"]
        listed = client.get(f"{b.url}/api/tenants/{tid}/integrations", headers=head)
        assert listed.status_code == 200 and [i["name"] for i in listed.json()["integrations"]] == ["am"], listed.text

    acknowledged: list[int] = []
    refused: list[int] = []
    stop_sending = threading.Event()

    def sender() -> None:   # as Alertmanager does: to the follower, retrying what was not acknowledged
        n = 0
        with httpx.Client(timeout=30, trust_env=False) as c:
            while not stop_sending.is_set():
                try:
                    reply = c.post(f"{b.url}/ingest/alertmanager/{key}", json=alert_group(n, 10))
                    ok = reply.status_code < 300
                except httpx.HTTPError:
                    ok = False
                if ok:
                    acknowledged.extend(range(n, n + 10))
                    n += 10
                else:
                    refused.append(n)
                    time.sleep(0.2)

    thread = threading.Thread(target=sender)
    thread.start()
    try:
        wait_for(lambda: len(acknowledged) >= 200, what="alerts flowing")
        a.proc.kill()                                  # kill -9: no release, no last checkpoint
        a.proc.wait(timeout=30)
        killed = time.monotonic()
        wait_for(lambda: nodes.role("node-b") == "leader", timeout=30, what="node-b to take over", explain=b.output)
        took = time.monotonic() - killed
        before = len(acknowledged)
        wait_for(lambda: len(acknowledged) >= before + 200, what="alerts flowing through the new leader")
    finally:
        stop_sending.set()
        thread.join(timeout=60)
    assert took <= FAILOVER_BOUND, f"node-b took {took:.1f} s to lead"
    print(f"failover took {took:.2f} s; {len(acknowledged)} alerts acknowledged, {len(refused)} requests refused")

    # every acknowledged alert is stored and ledgered, once; anything else stored was at least sent
    stored = [r[0] for r in rows(nodes.url, "SELECT fingerprint FROM alerts WHERE tenant = ?", tid)]
    print("stored fingerprints, e.g.", stored[:3])
    sent = set(acknowledged) | {n for start in refused for n in range(start, start + 10)}
    assert {f"{n:016x}" for n in acknowledged} <= set(stored)
    assert set(stored) <= {f"{n:016x}" for n in sent}
    assert len(stored) == len(set(stored))
    received = [r[0] for r in rows(nodes.url, "SELECT body FROM ledger WHERE tenant = ? AND kind = 'alert.received'",
                                   tid)]
    assert len(received) == len(stored)
    # the leadership changes are in the ledger
    changes = [(r[0], r[1]) for r in rows(nodes.url, "SELECT kind, body FROM ledger WHERE kind = 'leader.acquired' "
                                                     "ORDER BY seq")]
    assert len(changes) == 2
    assert b'"node":"node-a"' in changes[0][1] and b'"token":1' in changes[0][1]
    assert b'"node":"node-b"' in changes[1][1] and b'"previous_node":"node-a"' in changes[1][1]
    # the ledger verifies, through the new leader's data directory and the command line
    verified = run_cli("ledger", "verify", "--data-dir", str(nodes.root / "node-b"),
                       env={"ALERTENGINE_DATABASE_URL": nodes.url})
    assert verified.code == 0, verified.stdout + verified.stderr
    assert verified.json()["status"] == "ok"


def test_a_stopped_leader_that_wakes_after_losing_its_lease_cannot_write(nodes: Nodes) -> None:
    a = nodes.start("node-a")
    wait_for(lambda: nodes.role("node-a") == "leader", what="node-a to lead", explain=a.output)
    b = nodes.start("node-b")
    wait_for(lambda: nodes.role("node-b") == "follower", what="node-b to follow", explain=b.output)
    size_before = rows(nodes.url, "SELECT count(*) FROM ledger")[0][0]
    os.kill(a.proc.pid, signal.SIGSTOP)                # paused: it cannot renew
    wait_for(lambda: nodes.role("node-b") == "leader", timeout=30, what="node-b to take over", explain=b.output)
    seq_taken = rows(nodes.url, "SELECT max(seq) FROM ledger WHERE kind = 'leader.acquired'")[0][0]
    os.kill(a.proc.pid, signal.SIGCONT)                # wakes: every write it tries is fenced
    code = a.proc.wait(timeout=60)
    assert code == 75, a.output()
    assert "lost the leader lease" in a.output()
    # nothing after node-b took over came from node-a: every later entry is node-b's or a tenant's
    later = rows(nodes.url, "SELECT kind, body FROM ledger WHERE seq > ? ORDER BY seq", seq_taken)
    assert not any(kind == "appliance.stopped" for kind, _body in later), later
    assert rows(nodes.url, "SELECT count(*) FROM ledger")[0][0] > size_before
    verified = run_cli("ledger", "verify", "--data-dir", str(nodes.root / "node-b"),
                       env={"ALERTENGINE_DATABASE_URL": nodes.url})
    assert verified.code == 0, verified.stdout + verified.stderr


def test_a_message_in_flight_when_the_leader_dies_is_sent_again_and_no_other_twice(
        nodes: Nodes, fake_telegram: FakeTelegram) -> None:  # noqa: F811
    """Delivery is at least once: the one message whose send was under way when the leader died
    cannot be known to have arrived, so the next leader sends it again; every other message goes
    out exactly once, before and after the change of leader."""
    a = nodes.start("node-a")
    wait_for(lambda: nodes.role("node-a") == "leader", what="node-a to lead", explain=a.output)
    admin = {"Authorization": f"Bearer {ADMIN_KEY_RE.findall(a.output())[0]}"}
    b = nodes.start("node-b")
    wait_for(lambda: nodes.role("node-b") == "follower", what="node-b to follow", explain=b.output)
    with httpx.Client(timeout=30, trust_env=False, headers=admin) as api:
        def ok(method: str, path: str, status: int = 200, **kw: Any) -> Any:
            reply = api.request(method, b.url + path, **kw)
            assert reply.status_code == status, f"{method} {path}: {reply.status_code} {reply.text}"
            return reply.json()
        tid = ok("POST", "/api/tenants", 201, json={"name": "payments"})["id"]
        ok("DELETE", f"/tenant/{tid}/shadow")
        ok("PUT", f"/api/tenants/{tid}/notifications/channels/telegram", json={
            "config": {"api_base_url": fake_telegram.base_url, "default_chat_id": "-1005550002"},
            "secrets": {"bot_token": fake_telegram.token}})
        ok("PUT", f"/api/tenants/{tid}/routes", json={"toml": '[defaults]\nreceivers = ["channel:telegram"]\n'})
        key = ok("POST", f"/api/tenants/{tid}/integrations", 201, json={"name": "am"})["key"]

    def fire(name: str, to: Server) -> None:
        body = alert_group(0, 1)
        body["alerts"][0]["labels"] = {"alertname": name, "service": "checkout", "severity": "critical"}
        body["alerts"][0]["fingerprint"] = name.lower()
        reply = httpx.post(f"{to.url}/ingest/alertmanager/{key}", json=body, timeout=30)
        assert reply.status_code < 300, reply.text

    release = fake_telegram.hold_next("sendMessage")
    fire("CheckoutDown", b)
    wait_for(lambda: fake_telegram.held, what="the first message to be in flight", explain=a.output)
    in_flight = fake_telegram.held[0]["text"]
    a.proc.kill()                                    # kill -9 while the message is being sent
    a.proc.wait(timeout=30)
    release.set()                                    # its answer reaches nobody
    wait_for(lambda: nodes.role("node-b") == "leader", timeout=30, what="node-b to take over", explain=b.output)
    for name in ("PaymentsDown", "LedgerSlow", "QueueStuck"):
        fire(name, b)

    def texts() -> list[str]:
        return [c["text"] for c in fake_telegram.calls_to("sendMessage")]
    wait_for(lambda: all(any(f"INC-{n}" in t for t in texts()) for n in (2, 3, 4)) and texts().count(in_flight) == 2,
             what="every message sent", explain=lambda: "\n".join(texts()))
    sent = texts()
    assert "INC-1" in in_flight
    assert sent.count(in_flight) == 2, sent             # in flight at the kill: sent again
    assert sorted(t.split("\n")[0] for t in sent if t != in_flight) == [   # everything else once
        "🔴 Incident detected · P0 · INC-2", "🔴 Incident detected · P0 · INC-3", "🔴 Incident detected · P0 · INC-4"]
