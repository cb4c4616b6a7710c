"""An event id the appliance made itself and never appended needs no lookup in the ledger; any other
id is looked up, and a replay of an event (its id taken once) is still found a duplicate."""

from __future__ import annotations

import asyncio
import dataclasses
import threading

from alertengine.ledger.entry import LedgerEvent, new_event_id, take_fresh
from alertengine.store import Database


def fresh(n: int) -> LedgerEvent:
    return LedgerEvent(kind="test.fresh", tenant="acme", actor="test", reason=f"event {n}", data={"n": n})


def lookups(db: Database) -> tuple[list[str], object]:
    """Statements of the writer's connection that look an event id up (traced on the writer thread)."""
    seen: list[str] = []
    lock = threading.Lock()

    def trace(sql: str) -> None:
        if "WHERE event_id" in sql:
            with lock:
                seen.append(sql)
    return seen, trace


def test_an_id_made_here_is_fresh_once_and_no_other_id_is() -> None:
    made = new_event_id()
    assert take_fresh(made) is True
    assert take_fresh(made) is False                    # taken: from now on it is looked up
    assert take_fresh("evt-0001-chosen-by-a-caller") is False
    assert take_fresh(str(made).upper()) is False


async def test_fresh_events_are_appended_without_a_lookup_and_replays_are_still_duplicates(db: Database) -> None:
    seen, trace = lookups(db)
    db._conn.set_trace_callback(trace)   # type: ignore[union-attr]
    try:
        events = [fresh(i) for i in range(40)]
        first = await asyncio.gather(*(db.append(e) for e in events))
        assert seen == []                                   # 40 fresh ids: not one lookup
        assert not any(f[0].duplicate for f in first)

        size = db.ledger_size
        again = await asyncio.gather(*(db.append(e) for e in events[:5]))          # the same events again
        copies = await db.append(*(dataclasses.replace(e, reason="changed") for e in events[5:8]))
        assert db.ledger_size == size
        assert [a[0].seq for a in again] == [f[0].seq for f in first[:5]] and all(a[0].duplicate for a in again)
        assert [c.seq for c in copies] == [f[0].seq for f in first[5:8]] and all(c.duplicate for c in copies)
        assert seen, "a replayed id must be looked up"

        chosen = LedgerEvent(kind="test.fresh", tenant="acme", actor="test", reason="r", event_id="evt-0001-chosen")
        seen.clear()
        (entry,) = await db.append(chosen)
        assert not entry.duplicate and seen                # an id the caller chose is looked up
        (entry,) = await db.append(dataclasses.replace(chosen))
        assert entry.duplicate
    finally:
        db._conn.set_trace_callback(None)   # type: ignore[union-attr]


async def test_a_fresh_event_in_a_write_function_is_not_looked_up(db: Database) -> None:
    seen, trace = lookups(db)
    db._conn.set_trace_callback(trace)   # type: ignore[union-attr]
    try:
        ev = fresh(1)
        entry = await db.write(lambda tx: tx.append(ev))
        assert not entry.duplicate and seen == []
        again = await db.write(lambda tx: tx.append(ev))
        assert again.duplicate and again.seq == entry.seq and seen
    finally:
        db._conn.set_trace_callback(None)   # type: ignore[union-attr]


async def test_an_event_appended_after_its_write_opened_the_connection_is_not_fresh_again(db: Database) -> None:
    """A write that touched the connection appends with its own INSERT (no lookup): the id is
    spent all the same, so appending the event again finds it a duplicate instead of failing the
    whole batch on the unique index."""
    db.write_sync(lambda tx: tx.execute("CREATE TABLE IF NOT EXISTS notes (id INTEGER PRIMARY KEY)"))
    ev = fresh(7)

    def write(tx):  # type: ignore[no-untyped-def]
        tx.execute("INSERT INTO notes DEFAULT VALUES")
        return tx.append(ev)
    first = await db.write(write)
    assert not first.duplicate
    (again,) = await db.append(ev)                       # through the batch's lookup-free path
    assert again.duplicate and again.seq == first.seq
    copy = await db.write(lambda tx: tx.append(dataclasses.replace(ev, reason="other words")))
    assert copy.duplicate and copy.seq == first.seq
    assert db.ledger_size == first.seq + 1
