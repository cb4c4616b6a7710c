"""A store that cannot write (a full disk, an I/O error) shows as EMERGENCY at /healthz, answers
writes with 503 and Retry-After rather than 500, loses nothing acknowledged, and recovers by itself
once writes succeed again."""

from __future__ import annotations

import pytest

from alertengine.errors import StoreError
from alertengine.store import Database, WriteTx
from alertengine.store.modes import ModeTracker
from tests.conftest import event, sqlite_only


def fill_disk(tx: WriteTx) -> None:
    """Cap the database at its current size, as a full disk does (SQLite answers SQLITE_FULL)."""
    tx.execute("PRAGMA max_page_count = 1")


def free_disk(tx: WriteTx) -> None:
    tx.execute("PRAGMA max_page_count = 1073741823")


def big(n: int) -> object:
    return event(n, data={"n": n, "pad": "x" * 20_000})   # each needs fresh pages


@sqlite_only
def test_a_full_disk_is_a_store_fault_then_recovers(db: Database) -> None:
    modes = ModeTracker(db)
    db.write_sync(fill_disk)
    with pytest.raises(StoreError, match="cannot write now"):
        for n in range(50):
            db.append_sync(big(n))
    assert db.store_fault is not None and "full" in db.store_fault
    snap = modes.snapshot()
    assert snap["mode"] == "EMERGENCY" and "store_errors" in snap["conditions"]
    acknowledged = db.ledger_size
    db.write_sync(free_disk)
    db.append_sync(big(99))
    assert db.store_fault is None and modes.snapshot()["mode"] == "NORMAL"
    assert db.ledger_size == acknowledged + 1     # nothing acknowledged was lost, nothing half-written
