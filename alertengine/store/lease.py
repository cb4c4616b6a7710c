"""One leader at a time among appliance nodes that share one PostgreSQL database.

The lease is one row (``leader_lease``): the node that holds it, the URL the other nodes forward
requests to, a fencing token and the moment it ends, on the database's own clock (nodes' clocks
may disagree; the database has one).

- **Acquire**: a node takes the lease only when it has ended (or was released); the token goes up
  by one with every acquisition. One ``UPDATE … WHERE expires < now`` decides: of two nodes trying
  at once, PostgreSQL's row lock lets exactly one succeed.
- **Renew**: the holder pushes the end forward while its token is still the row's and unexpired.
- **Fence**: every write transaction of a node that runs with a lease checks, under the writer's
  lock (``BEGIN IMMEDIATE``: an advisory lock on PostgreSQL), that the row still names this node
  with its token and has not ended. A node that paused (a stopped process, a long GC, a partition)
  and lost its lease therefore cannot write afterwards, even before it notices: its next
  transaction is refused. Writes of two nodes can never interleave either, because both take the
  writer's lock and the new leader's first transaction sees everything the old one committed.
- **Release**: a clean shutdown ends the lease at once, so another node takes over without waiting.

Timing: the holder renews every ``ttl / 3`` s; the others try every ``ttl / 6`` s. After a leader
dies, another holds the lease within ``ttl + ttl / 6`` s of its last renewal (default ttl 6 s:
failover in at most 7 s, under the 10 s the appliance promises).

Renewal runs on a thread of its own (:class:`LeaseKeeper`) with its own connection: an event loop
that stalls does not lose the lease by itself, and a lost lease is noticed even while it stalls.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from ..errors import StoreError
from ..ledger.entry import utc_timestamp
from . import pg

log = logging.getLogger("alertengine.lease")

DEFAULT_TTL = 6.0


class NotLeaderError(StoreError):
    """A write on a node that does not hold the leader lease (or no longer does)."""


@dataclass(frozen=True)
class Holder:
    """The lease as the database holds it."""
    node: str
    url: str
    token: int
    expires: float     # seconds since the epoch, the database's clock
    now: float         # the database's clock when this was read

    @property
    def live(self) -> bool:
        return bool(self.node) and self.expires > self.now


# The database's clock, in seconds since the epoch, as an SQL expression.
_NOW = {"postgresql": "extract(epoch FROM clock_timestamp())::float8",
        "sqlite": "(julianday('now') - 2440587.5) * 86400.0"}


def db_now(conn: Any) -> float:
    """The database's clock, in seconds since the epoch."""
    return float(conn.execute(f"SELECT {_NOW[pg.dialect(conn)]}").fetchone()[0])


def read_holder(conn: Any, now: float | None = None) -> Holder:
    """The lease's row, and "now": ``now`` if given, else the database's clock read with it (one statement)."""
    row = conn.execute(f"SELECT node, url, token, expires, {_NOW[pg.dialect(conn)]} FROM leader_lease "
                       "WHERE id = 1").fetchone()
    if row is None:
        return Holder("", "", 0, 0.0, db_now(conn) if now is None else now)
    return Holder(row[0], row[1], int(row[2]), float(row[3]), float(row[4]) if now is None else now)


class Lease:
    """This node's side of the lease. ``clock(conn)`` gives "now" (the database's clock by default;
    tests inject their own)."""

    def __init__(self, target: Path | str, node: str, url: str, *, ttl: float = DEFAULT_TTL,
                 clock: Callable[[Any], float] = db_now) -> None:
        if not node:
            raise ValueError("a lease needs this node's name")
        self.target = target
        self.node = node
        self.url = url
        self.ttl = ttl
        self.clock = clock
        self.token: int | None = None     # held, as far as this node knows
        self.previous: Holder | None = None   # who held it before this node's last acquisition
        self._conn: Any = None
        self._lock = threading.Lock()

    # --- the database side ---------------------------------------------------------------------
    def _connection(self) -> Any:
        if self._conn is None:
            from .database import connect
            self._conn = connect(self.target)
        return self._conn

    def _drop_connection(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            try:
                conn.close()
            except Exception:  # noqa: BLE001 - it is being thrown away
                pass

    def holder(self) -> Holder:
        with self._lock:
            try:
                conn = self._connection()
                return read_holder(conn, self.clock(conn))
            except Exception:
                self._drop_connection()
                raise

    def step(self) -> tuple[bool, bool]:
        """Renew the lease if this node holds it, else take it if it has ended. Returns (held now,
        acquired by this step). Raises the store's error if the database cannot be reached."""
        with self._lock:
            try:
                return self._step(self._connection())
            except Exception:
                self._drop_connection()
                raise

    def _step(self, conn: Any) -> tuple[bool, bool]:
        now = self.clock(conn)
        if self.token is not None:
            row = conn.execute("UPDATE leader_lease SET expires = ?, url = ? WHERE id = 1 AND node = ? AND token = ? "
                               "AND expires > ? RETURNING token",
                               (now + self.ttl, self.url, self.node, self.token, now)).fetchone()
            if row is not None:
                return True, False
            self.token = None   # ended, or another node took it: this node must not write again
        before = read_holder(conn, now)
        row = conn.execute("UPDATE leader_lease SET node = ?, url = ?, token = token + 1, expires = ?, acquired = ? "
                           "WHERE id = 1 AND (expires <= ? OR node = '') RETURNING token",
                           (self.node, self.url, now + self.ttl, utc_timestamp(), now)).fetchone()
        if row is None:
            return False, False
        self.token = int(row[0])
        self.previous = before
        return True, True

    def release(self) -> None:
        """End the lease now (clean shutdown): another node may take it at once."""
        with self._lock:
            if self.token is None:
                return
            try:
                conn = self._connection()
                conn.execute("UPDATE leader_lease SET expires = 0 WHERE id = 1 AND node = ? AND token = ?",
                             (self.node, self.token))
            except Exception as exc:  # noqa: BLE001 - the lease then simply runs out
                log.warning("could not release the leader lease (it ends by itself within %.0f s): %s", self.ttl, exc)
            finally:
                self.token = None
                self._drop_connection()

    def fence(self, conn: Any) -> None:
        """Inside a write transaction, under the writer's lock: refuse unless this node holds the
        lease, with its token, unexpired."""
        token = self.token
        if token is None:
            raise NotLeaderError(f"node {self.node!r} does not hold the leader lease: writes go to the leader")
        holder = read_holder(conn, None if self.clock is db_now else self.clock(conn))
        if holder.node != self.node or holder.token != token or not holder.live:
            self.token = None
            raise NotLeaderError(f"node {self.node!r} lost the leader lease (token {token}; the lease names "
                                 f"{holder.node or 'nobody'} with token {holder.token}): writing refused")

    def close(self) -> None:
        with self._lock:
            self._drop_connection()


class LeaseKeeper:
    """Keeps the lease on a thread of its own: renews it while held, tries to take it while not.

    ``on_acquired()`` and ``on_lost()`` are called on this thread (keep them short: hand over to the
    event loop). A node that held the lease and loses it never gets it back in the same process:
    what it holds in memory may be stale once another node has written, so ``on_lost`` is its end."""

    def __init__(self, lease: Lease, *, on_acquired: Callable[[], None], on_lost: Callable[[str], None],
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        self.lease = lease
        self.monotonic = monotonic   # this node's clock, for how long a lease it could not renew surely lasts
        self.on_acquired = on_acquired
        self.on_lost = on_lost
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.leader = False

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="alertengine-lease", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        ttl = self.lease.ttl
        valid_until = 0.0   # by this node's monotonic clock: the lease surely lasts until then
        while not self._stop.is_set():
            started = self.monotonic()
            try:
                held, _acquired = self.lease.step()
                error = None
            except Exception as exc:  # noqa: BLE001 - unreachable database: try again, the lease runs out meanwhile
                held, error = False, exc
            if held:
                valid_until = started + ttl
            elif self.leader and error is not None and self.monotonic() < valid_until - ttl / 6:
                log.warning("could not renew the leader lease (trying again): %s", error)
                self._stop.wait(min(ttl / 12, 0.5))
                continue
            if self.leader and not held:
                self.leader = False
                reason = f"the database could not be reached to renew it: {error}" if error else \
                    "another node holds it now, or it ran out"
                log.critical("this node lost the leader lease (%s)", reason)
                self.on_lost(reason)
                return
            if held and not self.leader:
                self.leader = True
                self.on_acquired()
            self._stop.wait(ttl / 3 if self.leader else ttl / 6)

    def stop(self, *, release: bool = True) -> None:
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=10)
        if release:
            self.lease.release()
        self.lease.close()
