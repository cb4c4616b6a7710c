"""The leader lease (store/lease.py): one holder at a time, a token that rises with every
acquisition, and a fence that refuses the writes of a node that lost the lease — even one that has
not noticed yet. Time is the test's own clock, injected; the database is the one under test (an
SQLite file, or PostgreSQL with ALERTENGINE_TEST_STORE=postgresql)."""

from __future__ import annotations

import threading
from typing import Any, Iterator

import pytest

from alertengine.config import Config
from alertengine.errors import StoreError
from alertengine.store import Database
from alertengine.store.lease import Lease, LeaseKeeper, NotLeaderError, db_now, read_holder
from tests.conftest import event
from tests.waiting import wait_for


class Clock:
    def __init__(self, t: float = 1_000_000.0) -> None:
        self.t = t

    def __call__(self, conn: Any) -> float:
        return self.t


def target(db: Database) -> Any:
    return db.path


@pytest.fixture
def pair(db: Database) -> Iterator[tuple[Clock, Lease, Lease]]:
    """Two nodes' leases on the test's database, 6 s long, on one injected clock."""
    clock = Clock()
    a = Lease(target(db), "node-a", "http://a", ttl=6, clock=clock)
    b = Lease(target(db), "node-b", "http://b", ttl=6, clock=clock)
    try:
        yield clock, a, b
    finally:
        db.lease = None
        a.close()
        b.close()


def test_one_node_takes_the_lease_the_other_waits_until_it_ends(pair: tuple[Clock, Lease, Lease]) -> None:
    clock, a, b = pair
    assert a.step() == (True, True) and a.token == 1
    assert b.step() == (False, False) and b.token is None
    clock.t += 5          # renewed before it ends: still a's, same token
    assert a.step() == (True, False) and a.token == 1
    clock.t += 5.9
    assert b.step() == (False, False)
    clock.t += 0.2        # 6.1 s after a's last renewal: over
    assert b.step() == (True, True) and b.token == 2
    assert b.previous is not None and (b.previous.node, b.previous.token) == ("node-a", 1)
    assert a.step() == (False, False) and a.token is None   # a cannot renew, nor take it back
    h = b.holder()
    assert (h.node, h.url, h.token, h.expires) == ("node-b", "http://b", 2, clock.t + 6)


def test_a_released_lease_is_taken_at_once(pair: tuple[Clock, Lease, Lease]) -> None:
    _clock, a, b = pair
    a.step()
    a.release()
    assert a.token is None
    assert b.step() == (True, True) and b.token == 2


def test_the_fence_refuses_the_writes_of_a_node_that_lost_the_lease(db: Database,
                                                                   pair: tuple[Clock, Lease, Lease]) -> None:
    clock, a, b = pair
    with pytest.raises(NotLeaderError, match="does not hold"):   # not yet acquired: no write at all
        db.lease = a
        db.append_sync(event(0))
    a.step()
    size = db.ledger_size
    db.append_sync(event(1))
    assert db.ledger_size == size + 1
    clock.t += 7          # a paused: its lease ran out and b took it; a has not noticed
    assert b.step() == (True, True)
    assert a.token == 1
    with pytest.raises(NotLeaderError, match="lost the leader lease"):   # seen at its next write
        db.append_sync(event(2))
    with pytest.raises(NotLeaderError, match="does not hold"):          # and known from then on
        db.append_sync(event(3))
    assert a.token is None
    assert db.ledger_size == size + 1        # nothing was written after the lease was lost
    with db.reader() as conn:
        assert conn.execute("SELECT count(*) FROM ledger").fetchone()[0] == size + 1
    # the node whose lease it is writes on
    db.lease = b
    db.append_sync(event(4))
    assert db.ledger_size == size + 2


def test_an_expired_lease_nobody_took_still_fences(db: Database) -> None:
    clock = Clock()
    a = Lease(target(db), "node-a", "http://a", ttl=6, clock=clock)
    try:
        a.step()
        db.lease = a
        clock.t += 6.5        # ended, though no other node took it: a must renew before writing
        with pytest.raises(NotLeaderError):
            db.append_sync(event(1))
    finally:
        db.lease = None
        a.close()


def test_checkpoints_are_signed_only_by_the_holder(db: Database) -> None:
    clock = Clock()
    a = Lease(target(db), "node-a", "http://a", ttl=6, clock=clock)
    try:
        db.append_sync(event(1))
        db.lease = a          # not held: no checkpoint, and no error either
        assert db.checkpoint_sync("test") is None
        a.step()
        cp = db.checkpoint_sync("test")
        assert cp is not None and cp.size == db.ledger_size
    finally:
        db.lease = None
        a.close()


def test_of_many_nodes_trying_at_once_exactly_one_takes_it(db: Database) -> None:
    clock = Clock()
    leases = [Lease(target(db), f"node-{i}", f"http://{i}", ttl=6, clock=clock) for i in range(8)]
    results: list[tuple[str, bool]] = []
    gate = threading.Barrier(len(leases))

    def go(lease: Lease) -> None:
        gate.wait()
        results.append((lease.node, lease.step()[0]))

    threads = [threading.Thread(target=go, args=(lease,)) for lease in leases]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        winners = [node for node, held in results if held]
        assert len(winners) == 1
        with db.reader() as conn:
            assert read_holder(conn).node == winners[0] and read_holder(conn).token == 1
    finally:
        for lease in leases:
            lease.close()


def test_the_database_clock_is_the_epoch_in_seconds(db: Database) -> None:
    import time
    with db.reader() as conn:
        assert abs(db_now(conn) - time.time()) < 5


def test_the_keeper_tells_when_the_lease_is_taken_and_when_it_is_lost(db: Database) -> None:
    clock = Clock()
    events: list[str] = []
    a = Lease(target(db), "node-a", "http://a", ttl=0.6, clock=clock)
    keeper = LeaseKeeper(a, on_acquired=lambda: events.append("acquired"), on_lost=lambda why: events.append(why))
    b = Lease(target(db), "node-b", "http://b", ttl=0.6, clock=clock)
    keeper.start()
    try:
        wait_for(lambda: events == ["acquired"], timeout=10)
        # the keeper renews with the same clock value: jump past its end and let b in first
        clock.t += 100
        taken = b.step()[0]
        assert taken
        wait_for(lambda: len(events) == 2, timeout=10)
        assert "another node holds it" in events[1]
        assert not keeper.leader and a.token is None
    finally:
        keeper.stop(release=False)
        b.close()


def test_a_node_name_is_required(db: Database) -> None:
    with pytest.raises(ValueError):
        Lease(target(db), "", "http://a")


def test_not_leader_is_a_store_error() -> None:
    assert issubclass(NotLeaderError, StoreError)
    assert Config().database_url == ""
