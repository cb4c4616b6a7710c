"""Copy an SQLite appliance's data into an empty PostgreSQL database (``alertengine migrate-store``).

Everything is copied in one PostgreSQL transaction: the ledger and its checkpoints byte for byte,
and every working table (tenants, keys, services, incidents, the outbox, timers, ...). Either all
of it is there afterwards or none of it. The copy is then verified on the PostgreSQL side with
the appliance's own key (every entry, every checkpoint) and its size and root compared with the
SQLite ledger's; only then does the command report success. The SQLite file is only read.

The target must be empty of appliance data (a new database, or one whose ledger is empty); its
schema is made by the same migrations as SQLite's. Identity columns continue after the highest id
copied. Keys stay where they were: in the data directory, which every node needs a copy of.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import StoreError
from ..ledger.verifier import VerifierKey, b64
from . import pg
from .database import connect, latest_checkpoint, open_readonly, verify_store
from .migrations import apply_migrations

CHUNK = 5_000
SKIP = {"_migrations"}   # made by the target's own migrations


@dataclass(frozen=True)
class Copied:
    tables: dict[str, int]
    ledger_size: int
    checkpoint_size: int
    root: str | None

    def public(self) -> dict[str, Any]:
        return {"tables": self.tables, "ledger_size": self.ledger_size, "checkpoint_size": self.checkpoint_size,
                "root": self.root}


def _tables(conn: sqlite3.Connection) -> list[str]:
    """The tables to copy, each after those its foreign keys refer to."""
    names = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table' "
                                        "AND name NOT LIKE 'sqlite_%' ORDER BY name") if r[0] not in SKIP]
    refers = {n: {r[2] for r in conn.execute(f'PRAGMA foreign_key_list("{n}")')} - {n} for n in names}
    ordered: list[str] = []
    while len(ordered) < len(names):
        ready = [n for n in names if n not in ordered and refers[n] <= set(ordered)]
        if not ready:
            raise StoreError(f"foreign keys form a cycle among {sorted(set(names) - set(ordered))}")
        ordered.extend(ready)
    return ordered


def migrate_store(source: Path, target: str, vkey: VerifierKey) -> Copied:
    """Copy the SQLite store at ``source`` into the PostgreSQL database at ``target``."""
    if not pg.is_url(target):
        raise StoreError("the target must be a postgresql:// URL")
    src = sqlite3.connect(f"file:{source}?mode=ro", uri=True)
    try:
        names = {r[0] for r in src.execute("SELECT name FROM _migrations")}
        dst = connect(target)
        try:
            apply_migrations(dst)
            missing = names - {r[0] for r in dst.execute("SELECT name FROM _migrations")}
            if missing:
                raise StoreError(f"the SQLite store has migrations this version does not know: {sorted(missing)}; "
                                 "migrate with the version that made it")
            counts = _copy(src, dst)
        finally:
            dst.close()
        top = src.execute("SELECT max(seq) FROM ledger").fetchone()[0]
        size = top + 1 if top is not None else 0
        cp = latest_checkpoint(src)
    finally:
        src.close()
    result = verify_store(target, vkey)
    if result.status != "ok":
        raise StoreError(f"the copy does not verify: {result.kind} at {result.first_bad_seq}: {result.detail}")
    if result.entries_checked != size:
        raise StoreError(f"the copy holds {result.entries_checked} ledger entries, the SQLite store {size}")
    conn = open_readonly(target)
    try:
        copied_cp = latest_checkpoint(conn)
    finally:
        conn.close()
    if (cp is None) != (copied_cp is None) or (cp and copied_cp and (cp.size, cp.root) != (copied_cp.size, copied_cp.root)):
        raise StoreError("the copy's newest checkpoint differs from the SQLite store's")
    return Copied(counts, size, cp.size if cp else 0, b64(cp.root) if cp else None)


def _copy(src: sqlite3.Connection, dst: Any) -> dict[str, int]:
    counts: dict[str, int] = {}
    dst.execute("BEGIN IMMEDIATE")   # the writer's lock: no node writes meanwhile
    try:
        if dst.execute("SELECT count(*) FROM ledger").fetchone()[0]:
            raise StoreError("the target database already holds a ledger: migrate into an empty database")
        for table in _tables(src):
            columns = [r[1] for r in src.execute(f'PRAGMA table_info("{table}")')]
            dst.execute(f'DELETE FROM "{table}"')   # rows the migrations seeded (single-row state tables)
            insert = (f'INSERT INTO "{table}" ({", ".join(columns)}) '
                      f'VALUES ({", ".join("?" * len(columns))})')
            cur = src.execute(f'SELECT {", ".join(columns)} FROM "{table}"')
            n = 0
            while True:
                rows = cur.fetchmany(CHUNK)
                if not rows:
                    break
                try:
                    dst.executemany(insert, rows)
                except sqlite3.Error as exc:
                    raise StoreError(f"table {table}: {exc}") from None
                n += len(rows)
            counts[table] = n
        for table, column in dst.execute(
                "SELECT table_name, column_name FROM information_schema.columns "
                "WHERE table_schema = current_schema() AND is_identity = 'YES'").fetchall():
            dst.execute(f"SELECT setval(pg_get_serial_sequence('\"{table}\"', '{column}'), "
                        f"coalesce((SELECT max({column}) FROM \"{table}\"), 0) + 1, false)")
        dst.execute("COMMIT")
    except BaseException:
        dst.execute("ROLLBACK")
        raise
    return counts
