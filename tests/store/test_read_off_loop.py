"""Reads from the event loop run on reader threads (``Database.read``), never on the loop itself."""

from __future__ import annotations

import asyncio
import sqlite3
import threading

import pytest

from alertengine.store import Database
from alertengine.store import database as database_module
from alertengine.tenancy.tenants import create_tenant, get_tenant


async def test_a_read_runs_on_a_reader_thread_and_returns_its_result(db: Database) -> None:
    tenant = db.write_sync(create_tenant("acme", "test")).id
    loop_thread = threading.get_ident()
    seen: list[int] = []

    def lookup(conn: sqlite3.Connection, wanted: str, *, upper: bool) -> str:
        seen.append(threading.get_ident())
        name = get_tenant(conn, wanted).name
        return name.upper() if upper else name

    assert await db.read(lookup, tenant, upper=True) == "ACME"
    assert seen and seen[0] != loop_thread


async def test_the_loop_keeps_running_while_a_read_waits(db: Database) -> None:
    """The reader blocks until the loop itself releases it: a read done on the loop would deadlock."""
    release = threading.Event()

    def slow(conn: sqlite3.Connection) -> int:
        assert release.wait(timeout=30), "the loop never ran while the read was waiting"
        return conn.execute("SELECT 41 + 1").fetchone()[0]

    pending = asyncio.ensure_future(db.read(slow))
    await asyncio.sleep(0)          # the loop goes on; the read is on its thread
    assert not pending.done()
    release.set()
    assert await asyncio.wait_for(pending, timeout=30) == 42


async def test_an_error_in_a_read_reaches_the_caller(db: Database) -> None:
    with pytest.raises(sqlite3.OperationalError, match="no such table|does not exist"):   # SQLite's words, PostgreSQL's
        await db.read(lambda conn: conn.execute("SELECT * FROM no_such_table").fetchall())
    assert await db.read(lambda conn: conn.execute("SELECT 1").fetchone()[0]) == 1   # the pool goes on


async def test_the_appliances_code_reading_on_the_loop_is_refused_in_strict_mode(db: Database,
                                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(Database, "strict_loop", True)
    # a caller in the appliance's own package (as web handlers are) is refused ...
    code = compile("def read(db):\n    return db.read_conn()\n", "<appliance>", "exec")
    scope: dict = {"__name__": "alertengine.web.example"}
    exec(code, scope)
    with pytest.raises(RuntimeError, match="alertengine.web.example read the database on the event loop"):
        scope["read"](db)
    # ... off the loop (a worker thread, the CLI) the same call is fine
    conn = await asyncio.to_thread(scope["read"], db)
    assert conn is not None


def test_off_the_loop_read_conn_is_allowed_in_strict_mode(db: Database, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(Database, "strict_loop", True)
    assert db.read_conn().execute("SELECT 1").fetchone()[0] == 1
    assert database_module.Database.strict_loop is True


async def test_serial_reads_run_off_the_loop_one_at_a_time_while_plain_reads_go_on(db: Database) -> None:
    """read_serial: a thread of its own, never two at once; a plain read is not queued behind it."""
    loop_thread = threading.get_ident()
    release = threading.Event()
    running: list[int] = []
    overlapped: list[bool] = []
    guard = threading.Lock()

    def render(conn: sqlite3.Connection, n: int) -> int:
        with guard:
            running.append(n)
            overlapped.append(len(running) > 1)
        assert threading.get_ident() != loop_thread
        assert release.wait(timeout=30), "the serial read was never released"
        with guard:
            running.remove(n)
        return conn.execute("SELECT ?", (n,)).fetchone()[0]

    pending = [asyncio.ensure_future(db.read_serial(render, n)) for n in range(3)]
    # while the first serial read blocks its thread, a plain read still answers
    assert await asyncio.wait_for(db.read(lambda conn: conn.execute("SELECT 7").fetchone()[0]), timeout=30) == 7
    assert not any(p.done() for p in pending)
    release.set()
    assert await asyncio.wait_for(asyncio.gather(*pending), timeout=30) == [0, 1, 2]
    assert overlapped == [False, False, False]
