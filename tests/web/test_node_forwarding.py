"""A follower node (web/node.py) forwards every request but /healthz to the leader named by the
lease — method, path, query, body and the end-to-end headers, with the client's address in
X-Forwarded-For — and relays the answer; without a live leader, or with the leader unreachable,
it answers 503 with Retry-After; a request that was forwarded already is never forwarded again.
The leader here is a real HTTP server on 127.0.0.1 that records what reaches it."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator

import httpx
import pytest

from alertengine.appliance import DataDir
from alertengine.config import Config
from alertengine.store import Database
from alertengine.store.lease import Lease
from alertengine.web.node import FORWARD_MAX, NodeApp
from tests.fakes.receiver import Receiver, Reply, closed_port_url
from tests.pgcluster import PgCluster


class Clock:
    t = 1_000_000.0

    def __call__(self, conn: Any) -> float:
        return self.t


@pytest.fixture
def setup(pg_cluster: PgCluster, data_dir: DataDir) -> Iterator[tuple[NodeApp, Lease, Receiver, Clock]]:
    url = pg_cluster.fresh_url("node")
    db = Database(url, signer=data_dir.signer, checkpoint_interval=3600).open()
    clock = Clock()
    receiver = Receiver()
    leader = Lease(url, "node-a", receiver.url, clock=clock)
    follower = Lease(url, "node-b", "http://127.0.0.1:1", clock=clock)
    node = NodeApp(Config(data_dir=data_dir.path, database_url=url), data_dir, db, follower)
    try:
        yield node, leader, receiver, clock
    finally:
        receiver.close()
        leader.close()
        follower.close()
        db.close()


def client(node: NodeApp) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=node, client=("203.0.113.9", 5000)),
                             base_url="http://follower")


async def test_a_request_goes_to_the_leader_as_it_came_and_its_answer_comes_back(setup: Any) -> None:
    node, leader, receiver, _clock = setup
    assert leader.step() == (True, True)
    receiver.script(Reply(201, {"x-leader": "yes", "content-type": "application/json"}, b'{"made": 1}'))
    async with client(node) as c:
        reply = await c.post("/api/tenants/t1/things?a=1&b=%C3%A9", content=b'{"name": "x"}',
                             headers={"authorization": "Bearer k", "content-type": "application/json",
                                      "connection": "keep-alive, x-private", "x-private": "hop",
                                      "x-forwarded-for": "198.51.100.1", "te": "trailers", "x-end": "end"})
    assert (reply.status_code, reply.json(), reply.headers["x-leader"]) == (201, {"made": 1}, "yes")
    got = receiver.requests[0]
    assert got.path == "/api/tenants/t1/things?a=1&b=%C3%A9" and got.body == b'{"name": "x"}'
    assert got.headers["authorization"] == "Bearer k" and got.headers["content-type"] == "application/json"
    assert got.headers["x-forwarded-for"] == "198.51.100.1, 203.0.113.9"   # the chain, then this client
    assert got.headers["x-alertengine-forwarded-by"] == "node-b"
    assert got.headers["x-forwarded-proto"] == "http"
    assert "te" not in got.headers and "x-private" not in got.headers and got.headers["x-end"] == "end"


async def test_the_health_of_a_follower_names_the_leader_and_is_answered_locally(setup: Any) -> None:
    node, leader, receiver, _clock = setup
    leader.step()
    async with client(node) as c:
        health = (await c.get("/healthz")).json()
    assert health["role"] == "follower" and health["node"] == "node-b"
    assert health["leader"] == {"node": "node-a", "url": receiver.url, "token": 1}
    assert health["ledger"]["size"] == 0 and receiver.requests == []


async def test_without_a_live_leader_the_answer_is_503_with_retry_after(setup: Any) -> None:
    node, leader, receiver, clock = setup
    async with client(node) as c:
        never = await c.post("/ingest/alertmanager/k", json={"alerts": []})
        assert never.status_code == 503 and never.headers["retry-after"] == "2"
        assert never.json()["error"] == "no_leader"
        leader.step()
        clock.t += 1_000                      # the leader stopped renewing: its lease ended
        node._leader = (0.0, None)            # (the follower re-reads the lease at most twice a second)
        ended = await c.get("/api/tenants")
    assert ended.status_code == 503 and ended.json()["error"] == "no_leader"
    assert receiver.requests == []


async def test_an_unreachable_leader_is_503_and_the_lease_is_read_again(setup: Any) -> None:
    node, leader, _receiver, _clock = setup
    leader.url = closed_port_url("")
    leader.step()
    async with client(node) as c:
        reply = await c.get("/api/tenants")
    assert reply.status_code == 503 and reply.json()["error"] == "leader_unreachable"
    assert node._leader == (0.0, None)


async def test_a_forwarded_request_is_never_forwarded_again(setup: Any) -> None:
    node, leader, receiver, _clock = setup
    leader.step()
    async with client(node) as c:
        reply = await c.get("/api/tenants", headers={"x-alertengine-forwarded-by": "node-c"})
    assert reply.status_code == 503 and reply.json()["error"] == "forwarding_loop"
    assert receiver.requests == []


async def test_a_body_beyond_what_any_endpoint_takes_is_refused(setup: Any, tmp_path: Path) -> None:
    node, leader, receiver, _clock = setup
    leader.step()
    async with client(node) as c:
        reply = await c.post("/ingest/alertmanager/k", content=b"x" * (FORWARD_MAX + 1))
    assert reply.status_code == 413 and receiver.requests == []
