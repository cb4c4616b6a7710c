"""The ledger's head as the writer sees it: global and per-tenant chains, the Merkle frontier, undo."""

from __future__ import annotations

import hashlib
import sqlite3
from typing import NamedTuple

from ..errors import LedgerInputError
from .entry import MAX_BODY_BYTES, ZERO_HASH_HEX, Entry, LedgerEvent, spend_fresh, utc_timestamp
from .verifier import RootBuilder

_ZERO = bytes(32)
_sha256 = hashlib.sha256
INSERT_SQL = ("INSERT INTO ledger (seq, event_id, tenant, tseq, incident, kind, ts, body, leaf_hash) "
              "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)")
# One entry whose event id may already be stored (a replay): nothing is inserted then (rowcount 0).
# Not an exception: PostgreSQL aborts the transaction on a failed statement, SQLite does not.
INSERT_NEW_SQL = INSERT_SQL + " ON CONFLICT (event_id) DO NOTHING"
# A ledger row as INSERT_SQL takes it.
Row = tuple


class HeadMark(NamedTuple):
    """Where the head stood (a named tuple: the writer takes one per write)."""
    size: int
    prev: bytes
    frontier: tuple[bytes, ...]
    journal_len: int


class ChainHead:
    """Builds entries inside the writer's transaction and can undo them if it rolls back.

    :meth:`append` inserts the entry at once; the writer's batches use :meth:`build` and
    :meth:`advance` instead and insert many rows with one ``executemany`` (see ``batch.py``).
    Links are kept as the hex text the next body carries (the zero hash before a chain's first
    entry), so that each leaf hash is turned into text once."""

    def __init__(self) -> None:
        self.tree = RootBuilder()
        self.prev = _ZERO
        self._prev_hex = ZERO_HASH_HEX
        self._tenants: dict[str, tuple[int, str]] = {}  # tenant -> (next tseq, hex of its last leaf)
        self._journal: list[tuple[str, tuple[int, str] | None]] = []

    @property
    def size(self) -> int:
        return self.tree.size

    def root(self) -> bytes:
        return self.tree.root()

    # --- loading -----------------------------------------------------------------------------
    def load(self, conn: sqlite3.Connection) -> None:
        """Load the head from the database, rebuilding the frontier if its stored copy is stale."""
        self._tenants.clear()
        self._journal.clear()
        last = conn.execute("SELECT seq, leaf_hash FROM ledger ORDER BY seq DESC LIMIT 1").fetchone()
        size = last[0] + 1 if last else 0
        self.prev = bytes(last[1]) if last else _ZERO
        self._prev_hex = self.prev.hex() if last else ZERO_HASH_HEX
        row = conn.execute("SELECT size, frontier FROM ledger_head WHERE id = 1").fetchone()
        if row and row[0] == size:
            blob = bytes(row[1])
            self.tree = RootBuilder(size, [blob[i:i + 32] for i in range(0, len(blob), 32)])
        else:
            self.tree = RootBuilder()
            for (leaf,) in conn.execute("SELECT leaf_hash FROM ledger ORDER BY seq"):
                self.tree.add(bytes(leaf))
            # a gap in seq makes the tree size differ from max(seq)+1; `ledger verify` reports it

    def save(self, conn: sqlite3.Connection) -> None:
        conn.execute("INSERT INTO ledger_head (id, size, frontier) VALUES (1, ?, ?) "
                     "ON CONFLICT(id) DO UPDATE SET size = excluded.size, frontier = excluded.frontier",
                     (self.tree.size, b"".join(self.tree.frontier)))

    # --- undo --------------------------------------------------------------------------------
    def mark(self) -> HeadMark:
        return HeadMark(self.tree.size, self.prev, tuple(self.tree.frontier), len(self._journal))

    def undo(self, mark: HeadMark) -> None:
        self.tree = RootBuilder(mark.size, list(mark.frontier))
        self.prev = mark.prev
        self._prev_hex = mark.prev.hex() if mark.size else ZERO_HASH_HEX
        while len(self._journal) > mark.journal_len:
            tenant, old = self._journal.pop()
            if old is None:
                self._tenants.pop(tenant, None)
            else:
                self._tenants[tenant] = old

    def forget_journal(self) -> None:
        self._journal.clear()

    # --- appending ---------------------------------------------------------------------------
    def _tenant_head(self, conn: sqlite3.Connection, tenant: str) -> tuple[int, str]:
        head = self._tenants.get(tenant)
        if head is None:
            row = conn.execute("SELECT tseq, leaf_hash FROM ledger WHERE tenant = ? ORDER BY tseq DESC LIMIT 1",
                               (tenant,)).fetchone()
            head = (row[0] + 1, bytes(row[1]).hex()) if row else (0, ZERO_HASH_HEX)
            self._journal.append((tenant, None))
            self._tenants[tenant] = head
        return head

    def build(self, conn: sqlite3.Connection, event: LedgerEvent, ts: str) -> tuple[Entry, Row]:
        """The next entry for ``event``, written at ``ts``, and its ledger row, without changing the
        chains (only the tenant's head may be read from ``conn`` into the cache, journalled).
        :meth:`advance` takes it."""
        tenant = event.tenant
        spend_fresh(event.event_id)   # whether or not the caller took it: once chained it is not fresh
        tseq, tprev = self._tenants.get(tenant) or self._tenant_head(conn, tenant)
        seq = self.tree.size
        body = event.body(seq, self._prev_hex, tseq, tprev, ts)
        if len(body) > MAX_BODY_BYTES:
            raise LedgerInputError("data", f"entry of {len(body)} bytes exceeds {MAX_BODY_BYTES}")
        leaf = _sha256(b"\x00" + body).digest()   # leaf_hash(body), inlined: once per entry
        return (Entry(seq, tenant, tseq, body, leaf),
                (seq, event.event_id, tenant, tseq, event.incident, event.kind, ts, body, leaf))

    def advance(self, entry: Entry) -> None:
        """Make ``entry`` (from :meth:`build`, not yet advanced past) the head of both its chains."""
        tenant = entry.tenant
        leaf = entry.leaf_hash
        link = leaf.hex()
        tenants = self._tenants
        self._journal.append((tenant, tenants[tenant]))
        tenants[tenant] = (entry.tseq + 1, link)
        self.tree.add(leaf)
        self.prev = leaf
        self._prev_hex = link

    def append(self, conn: sqlite3.Connection, event: LedgerEvent) -> Entry:
        """Insert the next entry for ``event`` now (a no-op returning the stored entry, marked
        ``duplicate``, if its ``event_id`` is already in the ledger)."""
        entry, row = self.build(conn, event, utc_timestamp())
        if conn.execute(INSERT_NEW_SQL, row).rowcount == 0:
            existing = stored_entry(conn, event.event_id)
            if existing is None:
                raise sqlite3.IntegrityError(f"ledger entry {event.event_id} was neither inserted nor found")
            return existing
        self.advance(entry)
        return entry


def stored_entry(conn: sqlite3.Connection, event_id: str) -> Entry | None:
    """The ledger's entry with ``event_id`` (marked ``duplicate``: it is what an append of that id returns)."""
    row = conn.execute("SELECT seq, tenant, tseq, body, leaf_hash FROM ledger WHERE event_id = ?",
                       (event_id,)).fetchone()
    return None if row is None else Entry(row[0], row[1], row[2], bytes(row[3]), bytes(row[4]), True)
