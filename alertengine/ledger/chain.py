"""The ledger's head as the writer sees it: global and per-tenant chains, the Merkle frontier, undo."""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass

from ..errors import LedgerInputError
from .entry import MAX_BODY_BYTES, ZERO_HASH_HEX, Entry, LedgerEvent, utc_timestamp
from .verifier import RootBuilder, leaf_hash

_ZERO = bytes(32)


@dataclass(frozen=True)
class HeadMark:
    size: int
    prev: bytes
    frontier: tuple[bytes, ...]
    journal_len: int


class ChainHead:
    """Appends entries inside the writer's transaction and can undo them if it rolls back."""

    def __init__(self) -> None:
        self.tree = RootBuilder()
        self.prev = _ZERO
        self._tenants: dict[str, tuple[int, bytes]] = {}  # tenant -> (next tseq, last leaf)
        self._journal: list[tuple[str, tuple[int, bytes] | None]] = []

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
        while len(self._journal) > mark.journal_len:
            tenant, old = self._journal.pop()
            if old is None:
                self._tenants.pop(tenant, None)
            else:
                self._tenants[tenant] = old

    def forget_journal(self) -> None:
        self._journal.clear()

    # --- appending ---------------------------------------------------------------------------
    def _tenant_head(self, conn: sqlite3.Connection, tenant: str) -> tuple[int, bytes]:
        head = self._tenants.get(tenant)
        if head is None:
            row = conn.execute("SELECT tseq, leaf_hash FROM ledger WHERE tenant = ? ORDER BY tseq DESC LIMIT 1",
                               (tenant,)).fetchone()
            head = (row[0] + 1, bytes(row[1])) if row else (0, _ZERO)
            self._journal.append((tenant, None))
            self._tenants[tenant] = head
        return head

    def append(self, conn: sqlite3.Connection, event: LedgerEvent) -> Entry:
        tseq, tprev = self._tenant_head(conn, event.tenant)
        seq = self.tree.size
        ts = utc_timestamp()
        body = event.body(seq, self.prev.hex() if seq else ZERO_HASH_HEX, tseq, tprev.hex() if tseq else ZERO_HASH_HEX, ts)
        if len(body) > MAX_BODY_BYTES:
            raise LedgerInputError("data", f"entry of {len(body)} bytes exceeds {MAX_BODY_BYTES}")
        leaf = leaf_hash(body)
        try:
            conn.execute("INSERT INTO ledger (seq, event_id, tenant, tseq, incident, kind, ts, body, leaf_hash) "
                         "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                         (seq, event.event_id, event.tenant, tseq, event.incident, event.kind, ts, body, leaf))
        except sqlite3.IntegrityError:
            existing = conn.execute("SELECT seq, tenant, tseq, body, leaf_hash FROM ledger WHERE event_id = ?",
                                    (event.event_id,)).fetchone()
            if existing is None:
                raise
            return Entry(existing[0], existing[1], existing[2], bytes(existing[3]), bytes(existing[4]), True)
        self._journal.append((event.tenant, self._tenants[event.tenant]))
        self._tenants[event.tenant] = (tseq + 1, leaf)
        self.tree.add(leaf)
        self.prev = leaf
        return Entry(seq, event.tenant, tseq, body, leaf)
