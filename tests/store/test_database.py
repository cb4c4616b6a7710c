"""The single writer: group commit, atomic ledger + working-table writes, idempotency, bad input."""

from __future__ import annotations

import asyncio
import math
import sqlite3

import pytest

from alertengine.errors import LedgerInputError
from alertengine.store import verify_store
from alertengine.ledger.entry import fingerprint
from alertengine.store import Database, WriteTx
from tests.conftest import event
from tests.waiting import wait_for


def assert_verifies(db: Database) -> dict:
    db.checkpoint_sync("test")
    result = verify_store(db.path, db.signer.verifier).as_dict()
    assert result["status"] == "ok", result
    return result


async def test_many_concurrent_appenders_make_a_gap_free_verifiable_chain(db: Database) -> None:
    async def appender(worker: int) -> list[int]:
        seqs = []
        for i in range(40):
            (entry,) = await db.append(event(i, tenant=f"t{worker % 7}", data={"worker": worker, "i": i}))
            seqs.append(entry.seq)
        return seqs

    results = await asyncio.gather(*(appender(w) for w in range(50)))
    seqs = sorted(s for r in results for s in r)
    assert seqs == list(range(2000))
    assert db._stats["batches"] < 2000  # concurrent requests were grouped into shared commits
    result = assert_verifies(db)
    assert result["entries_checked"] == 2000
    with db.reader() as conn:
        per_tenant = conn.execute("SELECT tenant, count(*), max(tseq) FROM ledger GROUP BY tenant").fetchall()
    assert all(count == top + 1 for _, count, top in per_tenant)


async def test_replaying_the_same_event_id_appends_nothing(db: Database) -> None:
    events = [event(i, event_id=f"evt-{i:04d}-fixed") for i in range(20)]
    first = await asyncio.gather(*(db.append(e) for e in events))
    size = db.ledger_size
    again = await asyncio.gather(*(db.append(e) for e in events))
    assert db.ledger_size == size
    assert [a[0].seq for a in again] == [f[0].seq for f in first]
    assert all(a[0].duplicate for a in again)
    assert [a[0].body for a in again] == [f[0].body for f in first]
    assert_verifies(db)


def test_write_changes_ledger_and_table_in_one_transaction(db: Database) -> None:
    db.write_sync(lambda tx: tx.execute("CREATE TABLE IF NOT EXISTS notes (id INTEGER PRIMARY KEY, text TEXT)"))

    def ok(tx: WriteTx) -> int:
        tx.execute("INSERT INTO notes (text) VALUES ('kept')")
        return tx.append(event(1)).seq

    def broken(tx: WriteTx) -> None:
        tx.execute("INSERT INTO notes (text) VALUES ('lost')")
        tx.append(event(2))
        raise RuntimeError("the caller's logic failed half-way")

    seq = db.write_sync(ok)
    with pytest.raises(RuntimeError):
        db.write_sync(broken)
    assert db.ledger_size == seq + 1
    with db.reader() as conn:
        assert [r[0] for r in conn.execute("SELECT text FROM notes")] == ["kept"]
        assert conn.execute("SELECT count(*) FROM ledger").fetchone()[0] == seq + 1
    assert db.append_sync(event(3))[0].seq == seq + 1  # the failed write left no hole in the chain
    assert_verifies(db)


async def test_one_failing_write_does_not_fail_its_batch(db: Database) -> None:
    def failing(tx: WriteTx) -> None:
        tx.append(event(-1))
        raise ValueError("boom")

    jobs = [db.append(event(i)) for i in range(30)] + [db.write(failing)] + [db.append(event(i)) for i in range(30, 60)]
    results = await asyncio.gather(*jobs, return_exceptions=True)
    assert sum(isinstance(r, ValueError) for r in results) == 1
    assert db.ledger_size == 60
    assert_verifies(db)


def test_after_commit_runs_only_after_commit(db: Database) -> None:
    seen: list[int] = []

    def fn(tx: WriteTx) -> None:
        entry = tx.append(event(1))
        tx.after_commit(lambda: seen.append(entry.seq))
        assert seen == []

    db.write_sync(fn)
    assert seen == [0]


@pytest.mark.parametrize("bad,field", [
    (dict(data={"blob": "x" * 70_000}), "data"),
    (dict(data={"rate": math.nan}), "data.rate"),
    (dict(data={"rate": math.inf}), "data.rate"),
    (dict(data=["not", "an", "object"]), "data"),
    (dict(data={"bot_token": "123456:ABCdefGhIJKlmnoPQRstuVWXyz0123456789"}), "data.bot_token"),
    (dict(data={"config": {"api_key": "plain-text-key"}}), "data.config.api_key"),
    (dict(data={"note": "key is sk-ant-api03-abcdefghijklmnop"}), "data.note"),
    (dict(reason="token xoxb-1234567890-abcdefghij"), "reason"),
    (dict(kind="NotDotted"), "kind"),
    (dict(confidence=101), "confidence"),
    (dict(tenant="bad tenant!"), "tenant"),
    (dict(data={1: "non-string key"}), "data"),
])
def test_bad_input_is_refused_and_nothing_is_appended(db: Database, bad: dict, field: str) -> None:
    before = db.ledger_size
    with pytest.raises(LedgerInputError) as info:
        db.append_sync(event(1, **bad))
    assert info.value.field == field
    assert db.ledger_size == before
    with db.reader() as conn:
        assert conn.execute("SELECT count(*) FROM ledger").fetchone()[0] == before


def test_a_fingerprint_of_a_secret_is_accepted(db: Database) -> None:
    fp = fingerprint("123456:ABCdefGhIJKlmnoPQRstuVWXyz0123456789")
    (entry,) = db.append_sync(event(1, data={"bot_token_fingerprint": fp, "api_key": fp}))
    assert fp.encode() in entry.body and b"ABCdef" not in entry.body


def test_bodies_are_stored_exactly_and_never_reserialised(db: Database) -> None:
    (entry,) = db.append_sync(event(1, reason="ünïcödé — ok", data={"p95_ms": 2847.3, "n": 0}))
    with db.reader() as conn:
        stored = bytes(conn.execute("SELECT body FROM ledger WHERE seq = ?", (entry.seq,)).fetchone()[0])
    assert stored == entry.body
    assert "ünïcödé — ok".encode() in stored and b"2847.3" in stored


def test_checkpoints_are_signed_at_most_once_per_interval(data_dir, config) -> None:  # type: ignore[no-untyped-def]
    import time
    interval = 0.5
    db = Database(data_dir.db_path, signer=data_dir.signer, checkpoint_interval=interval).open()

    def interval_checkpoints() -> int:
        with db.reader() as conn:
            return conn.execute("SELECT count(*) FROM checkpoints WHERE reason = 'interval'").fetchone()[0]

    try:
        started = time.monotonic()
        deadline = started + 60
        n = 0
        while interval_checkpoints() < 3:  # keep appending until three are due and signed
            assert time.monotonic() < deadline, "no interval checkpoints while appending"
            db.append_sync(event(n))
            n += 1
        elapsed = time.monotonic() - started
        signed = interval_checkpoints()
        assert signed <= elapsed / interval + 1, (signed, elapsed)  # never more often than the interval
        assert n > signed  # many appends share one checkpoint
    finally:
        db.close()
    with sqlite3.connect(data_dir.db_path) as conn:
        sizes = [r[0] for r in conn.execute("SELECT size FROM checkpoints ORDER BY rowid")]
    assert sizes == sorted(sizes) and len(set(sizes)) == len(sizes)
    assert sizes[-1] == n  # the final checkpoint at close covers everything


def test_idle_appender_gets_a_checkpoint_without_more_writes(db: Database) -> None:
    db.append_sync(event(1))
    wait_for(lambda: db.latest is not None and db.latest.size >= 1, what="a checkpoint of the idle ledger")
    assert db.latest is not None and db.latest.size == 1


def test_another_process_appending_is_picked_up(data_dir, config) -> None:  # type: ignore[no-untyped-def]
    a = data_dir.open_database(config)
    b = data_dir.open_database(config)
    try:
        a.append_sync(event(1))
        b.append_sync(event(2))
        a.append_sync(event(3))
        assert a.ledger_size == 3
    finally:
        a.close()
        b.close()
    db = data_dir.open_database(config)
    try:
        assert_verifies(db)
    finally:
        db.close()


async def test_async_readers_see_committed_rows(db: Database) -> None:
    await db.append(event(1), event(2, tenant="globex"))
    rows = await db.read(lambda conn: conn.execute("SELECT tenant, tseq FROM ledger ORDER BY seq").fetchall())
    assert [tuple(r) for r in rows] == [("acme", 0), ("globex", 0)]
