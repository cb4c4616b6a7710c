"""The ledger side of one writer transaction: entries are chained at once, their rows inserted together.

The single writer used to insert every entry with its own ``INSERT`` and wrap every write in its
own ``SAVEPOINT``: four statements per single-entry write, each one a trip through the sqlite3
module (and a release and re-take of the GIL, which the event loop's thread competes for). Now a
batch keeps the rows of the entries it chains in ``pending`` and writes them with one
``executemany`` — before the write that first touches the connection itself (so that every SQL
statement sees every entry appended before it, as if each had been inserted at once) and before
``COMMIT``. A write that only appends needs no savepoint: if it fails, its pending rows are dropped
and the head is undone (:meth:`LedgerBatch.undo`).

Appending an ``event_id`` that is already in the ledger returns the stored entry, marked
``duplicate``, and appends nothing. Without an ``INSERT`` to fail on the unique index, the batch
finds duplicates itself: among the entries it appended (``known``), among ids looked up for the
whole batch in one query before its writes ran (:meth:`LedgerBatch.precheck`, for ``db.append``
whose events are known in advance), or else with one lookup of that id.

If writing pending rows fails, the transaction holds part of them: the batch is then ``broken``
and the writer fails the whole transaction, whatever the write that triggered it did with the error.
"""

from __future__ import annotations

import sqlite3
from typing import Iterable

from .chain import INSERT_NEW_SQL, INSERT_SQL, ChainHead, HeadMark, Row, stored_entry
from .entry import Entry, LedgerEvent, take_fresh, utc_timestamp

# Ids per lookup query: well under SQLite's limit on bound parameters (32,766 since 3.32, 999 before).
PRECHECK_IDS = 900
_UNCHECKED = object()


class LedgerBatch:
    """Appends ledger entries within one writer transaction (see the module docstring)."""

    __slots__ = ("conn", "head", "ts", "pending", "flushed", "known", "checked", "added", "broken")

    def __init__(self, conn: sqlite3.Connection, head: ChainHead) -> None:
        self.conn = conn
        self.head = head
        # The entries' ``ts``: the clock is read once per transaction (the writer builds all of its
        # entries within milliseconds), and again by each write function (which may take longer).
        self.ts = utc_timestamp()
        self.pending: list[Row] = []              # rows chained but not yet inserted, in seq order
        self.flushed = 0                          # rows inserted so far (positions count from the first)
        self.known: dict[str, Entry] = {}         # event_id -> entry appended in this transaction
        self.checked: dict[str, Entry | None] = {}  # event_id -> stored entry (None: not in the ledger)
        self.added: list[str] = []                # event_ids appended, in order (to undo)
        self.broken: BaseException | None = None

    def precheck(self, event_ids: Iterable[str]) -> None:
        """Look up, in one query per ``PRECHECK_IDS``, which of these ids the ledger already holds."""
        checked = self.checked
        ids = []
        for i in dict.fromkeys(i for i in event_ids if i not in checked):
            checked[i] = None
            if not take_fresh(i):   # an id made here and never appended needs no lookup
                ids.append(i)
        for start in range(0, len(ids), PRECHECK_IDS):
            part = ids[start:start + PRECHECK_IDS]
            sql = ("SELECT event_id, seq, tenant, tseq, body, leaf_hash FROM ledger WHERE event_id IN ("
                   + ",".join("?" * len(part)) + ")")
            for eid, seq, tenant, tseq, body, leaf in self.conn.execute(sql, part):
                checked[eid] = Entry(seq, tenant, tseq, bytes(body), bytes(leaf), True)

    def append(self, event: LedgerEvent) -> Entry:
        """Chain ``event`` and keep its row pending (or return the entry its ``event_id`` already has)."""
        eid = event.event_id
        entry = self.known.get(eid)
        if entry is not None:
            return entry._replace(duplicate=True)
        entry = self.checked.get(eid, _UNCHECKED)
        if entry is _UNCHECKED:
            entry = None if take_fresh(eid) else stored_entry(self.conn, eid)
        if entry is not None:
            return entry   # type: ignore[return-value]
        head = self.head
        entry, row = head.build(self.conn, event, self.ts)
        head.advance(entry)
        self.pending.append(row)
        self.known[eid] = entry
        self.added.append(eid)
        return entry

    def append_now(self, event: LedgerEvent) -> Entry:
        """Append ``event`` with its own ``INSERT`` (for a write inside its savepoint; nothing may be pending)."""
        assert not self.pending, "rows are pending: flush them before inserting directly"
        eid = event.event_id
        entry = self.known.get(eid)
        if entry is not None:
            return entry._replace(duplicate=True)
        entry, row = self.head.build(self.conn, event, self.ts)
        if self.conn.execute(INSERT_NEW_SQL, row).rowcount == 0:
            existing = stored_entry(self.conn, eid)
            if existing is None:
                raise sqlite3.IntegrityError(f"ledger entry {eid} was neither inserted nor found")
            return existing
        self.head.advance(entry)
        self.known[eid] = entry
        self.added.append(eid)
        return entry

    @property
    def position(self) -> int:
        """How many rows this batch has chained so far (inserted or pending)."""
        return self.flushed + len(self.pending)

    def flush(self, upto: int | None = None) -> None:
        """Insert the pending rows (only those before position ``upto``, if given) with one statement."""
        rows = self.pending if upto is None else self.pending[:max(upto - self.flushed, 0)]
        if not rows:
            return
        try:
            if len(rows) == 1:
                self.conn.execute(INSERT_SQL, rows[0])
            else:
                self.conn.executemany(INSERT_SQL, rows)
        except BaseException as exc:
            self.broken = exc   # part of the rows may be in: only rolling back the transaction undoes them
            raise
        del self.pending[:len(rows)]
        self.flushed += len(rows)

    # --- undo of one failed write ------------------------------------------------------------
    def mark(self) -> tuple[HeadMark, int, int]:
        return self.head.mark(), self.position, len(self.added)

    def undo(self, mark: tuple[HeadMark, int, int]) -> None:
        """Forget what was appended since ``mark``: the head, pending rows and known ids. (Rows already
        inserted since are the caller's to roll back, with the write's savepoint.)"""
        head_mark, position, added = mark
        self.head.undo(head_mark)
        del self.pending[max(position - self.flushed, 0):]
        for eid in self.added[added:]:
            self.known.pop(eid, None)
        del self.added[added:]
