"""The leader lease (store/lease.py): one holder at a time, a token that rises with every
acquisition, and a fence that refuses the writes of a node that lost the lease — even one that has
not noticed yet. Time is the test's own clock, injected; the database is the one under test (an
SQLite file, or PostgreSQL with ALERTENGINE_TEST_STORE=postgresql)."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path
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
        assert events[1] == "another node holds it now, or it ran out"
        assert not keeper.leader and a.token is None
    finally:
        keeper.stop(release=False)
        b.close()


def test_a_node_name_is_required(db: Database) -> None:
    with pytest.raises(ValueError, match="^a lease needs this node's name$"):
        Lease(target(db), "", "http://a")


def test_the_lease_ends_at_its_expiry_exactly(pair: tuple[Clock, Lease, Lease]) -> None:
    clock, a, b = pair
    a.step()
    clock.t += 6 - 0.001
    assert a.holder().live and b.step() == (False, False)
    clock.t += 0.001                  # now == expires: over
    assert not a.holder().live
    assert b.step() == (True, True)


def test_the_messages_say_who_holds_the_lease(db: Database, pair: tuple[Clock, Lease, Lease]) -> None:
    clock, a, b = pair
    db.lease = a
    with pytest.raises(NotLeaderError) as never:
        db.append_sync(event(0))
    assert str(never.value) == "node 'node-a' does not hold the leader lease: writes go to the leader"
    a.step()
    clock.t += 7
    b.step()
    with pytest.raises(NotLeaderError) as lost:
        db.append_sync(event(1))
    assert str(lost.value) == ("node 'node-a' lost the leader lease (token 1; the lease names node-b with token 2): "
                               "writing refused")


def test_without_its_row_nobody_holds_the_lease_and_nobody_takes_it(db: Database) -> None:
    clock = Clock()
    db.write_sync(lambda tx: tx.execute("DELETE FROM leader_lease"))
    a = Lease(target(db), "node-a", "http://a", clock=clock)
    try:
        h = a.holder()
        assert (h.node, h.url, h.token, h.expires, h.now, h.live) == ("", "", 0, 0.0, clock.t, False)
        assert a.step() == (False, False)
    finally:
        a.close()


def test_an_unreachable_database_is_an_error_and_the_lease_tries_a_new_connection(tmp_path: Path) -> None:
    gone = Lease(str(tmp_path / "no-such-dir" / "x.db"), "node-a", "http://a", clock=Clock())
    for call in (gone.holder, gone.step):
        with pytest.raises(sqlite3.Error):
            call()
        assert gone._conn is None


class Flaky:
    """A lease whose database can be made unreachable."""

    def __init__(self, lease: Lease) -> None:
        self.lease, self.down, self.failed, self.renewed = lease, False, 0, 0
        self.ttl = lease.ttl

    def step(self) -> tuple[bool, bool]:
        if self.down:
            self.failed += 1
            raise sqlite3.OperationalError("could not connect to server")
        held = self.lease.step()
        self.renewed += 1
        return held

    def release(self) -> None:
        self.lease.release()

    def close(self) -> None:
        self.lease.close()


def test_a_leader_rides_out_a_short_outage_and_gives_up_once_its_lease_surely_ended(db: Database) -> None:
    clock, mono = Clock(), Clock(100.0)
    flaky = Flaky(Lease(target(db), "node-a", "http://a", ttl=1.2, clock=clock))
    events: list[str] = []
    keeper = LeaseKeeper(flaky, on_acquired=lambda: events.append("acquired"),  # type: ignore[arg-type]
                         on_lost=events.append, monotonic=lambda: mono.t)
    keeper.start()
    try:
        wait_for(lambda: events == ["acquired"], timeout=10)
        flaky.down = True                         # the database is unreachable for a while ...
        wait_for(lambda: flaky.failed >= 3, timeout=10)
        assert events == ["acquired"] and keeper.leader   # ... within the lease: still the leader
        flaky.down = False
        renewed = flaky.renewed
        wait_for(lambda: flaky.renewed > renewed, timeout=10)     # back: renewed with the same token
        assert flaky.lease.token == 1 and keeper.leader and events == ["acquired"]
        flaky.down = True
        mono.t += 1.2                              # past the lease's last sure moment: it has ended
        wait_for(lambda: len(events) == 2, timeout=10)
        assert events[1].startswith("the database could not be reached to renew it: could not connect")
        assert not keeper.leader
    finally:
        keeper.stop(release=False)
    assert keeper._thread is not None and not keeper._thread.is_alive()


def test_not_leader_is_a_store_error() -> None:
    assert issubclass(NotLeaderError, StoreError)
    assert Config().database_url == ""
