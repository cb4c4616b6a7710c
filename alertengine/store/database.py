"""The SQLite store: one writer thread with group commit, read connections, signed checkpoints.

Every write goes through :meth:`Database.write` (async) or :meth:`Database.write_sync`. A write
is a function ``fn(tx: WriteTx) -> T`` run on the writer thread inside the batch's transaction,
in its own savepoint: it may change working tables with ``tx.execute`` and append ledger entries
with ``tx.append`` — both commit together or not at all. Concurrent writes are batched into one
``BEGIN IMMEDIATE … COMMIT`` with ``synchronous=FULL``; each caller is answered only after the
commit is durable. A write function that raises rolls back its own savepoint only and its
caller gets the exception; the rest of the batch commits.

What a batch costs is kept close to what SQLite itself costs for the same rows
(``scripts/bench/ledger.py``): ledger rows are inserted with one ``executemany`` per batch, a
write's savepoint is opened only when it first uses the connection (``ledger/batch.py`` explains
both), :meth:`Database.append` hands its events to the writer without a write function, and the
callers of one event loop are answered with one thread-safe call per batch.

After a commit, the writer signs a checkpoint if one is due (at most every
``checkpoint_interval`` seconds while entries are appended), and always on
:meth:`Database.checkpoint` (export) and :meth:`Database.close` (shutdown).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import functools
import logging
import os
import queue
import sqlite3
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator, TypeVar

from ..errors import RollbackDetectedError, StoreError
from ..ledger.batch import LedgerBatch
from ..ledger.chain import ChainHead
from ..ledger.entry import SYSTEM_TENANT, Entry, LedgerEvent, utc_timestamp
from ..ledger.keys import LedgerSigner
from ..ledger.audit import verify_database
from ..ledger.verifier import Checkpoint, NoteError, Result, VerifierKey, b64, open_note, parse_checkpoint
from .anchor import Anchor, check_extends
from .lease import Lease, NotLeaderError
from . import pg
from .migrations import apply_migrations

if TYPE_CHECKING:
    from ..telemetry import Telemetry

T = TypeVar("T")
log = logging.getLogger("alertengine.store")


@dataclass(frozen=True)
class StoredCheckpoint:
    size: int
    root: bytes
    note: str
    reason: str
    created: str


class WriteTx:
    """What a write function gets: the transaction's connection and the ledger.

    The write's savepoint is opened when it first uses the connection (``tx.conn`` or
    ``tx.execute``), after the entries of earlier writes in the batch are inserted and followed by
    its own, so that its statements see every entry appended before them. A write that only
    appends needs no savepoint: its entries stay pending until the batch inserts them."""

    __slots__ = ("_ledger", "_savepoint", "_start", "_open", "_after_commit", "appended", "memo")

    def __init__(self, ledger: LedgerBatch, savepoint: str) -> None:
        ledger.ts = utc_timestamp()   # a write function may take a while: its entries get their own time
        self._ledger = ledger
        self._savepoint = savepoint
        self._start = ledger.position   # entries of earlier writes end here
        self._open = False
        self._after_commit: list[Callable[[], None]] = []
        self.appended: list[Entry] = []
        self.memo: dict[Any, Any] = {}   # scratch for the write function's helpers, dropped with the write

    @property
    def conn(self) -> sqlite3.Connection:
        if not self._open:
            ledger = self._ledger
            ledger.flush(self._start)   # earlier writes' entries, outside this write's savepoint
            ledger.conn.execute(f"SAVEPOINT {self._savepoint}")
            self._open = True
            ledger.flush()              # this write's own entries so far, inside it
        return self._ledger.conn

    def execute(self, sql: str, params: Any = ()) -> sqlite3.Cursor:
        return self.conn.execute(sql, params)

    def append(self, event: LedgerEvent) -> Entry:
        """Append one ledger entry in this transaction (a no-op returning the stored entry if its
        ``event_id`` is already in the ledger)."""
        ledger = self._ledger
        entry = ledger.append_now(event) if self._open else ledger.append(event)
        if not entry.duplicate:
            self.appended.append(entry)
        return entry

    def after_commit(self, callback: Callable[[], None]) -> None:
        """Run ``callback`` on the writer thread once this write has committed. Keep it short."""
        self._after_commit.append(callback)

    def _release(self) -> None:
        if self._open:
            self._ledger.conn.execute(f"RELEASE {self._savepoint}")

    def _rollback(self) -> None:
        if self._open:
            conn = self._ledger.conn
            conn.execute(f"ROLLBACK TO {self._savepoint}")
            conn.execute(f"RELEASE {self._savepoint}")


class _Request:
    """One write (or control) request: a write function, or the events of :meth:`Database.append`.
    Async callers get an asyncio future on their own loop; the writer resolves all of a batch's
    futures of one loop with a single thread-safe call."""

    __slots__ = ("fn", "events", "control", "loop", "future")

    def __init__(self, fn: Callable[[WriteTx], Any] | None, control: str | None = None,
                 loop: asyncio.AbstractEventLoop | None = None, events: tuple[LedgerEvent, ...] | None = None) -> None:
        self.fn = fn
        self.events = events
        self.control = control
        self.loop = loop
        self.future: concurrent.futures.Future | asyncio.Future = (
            loop.create_future() if loop is not None else concurrent.futures.Future())


Outcome = tuple[_Request, Any, "BaseException | None"]


def _deliver(outcomes: list[Outcome]) -> None:
    by_loop: dict[asyncio.AbstractEventLoop, list[Outcome]] = {}
    for outcome in outcomes:
        req = outcome[0]
        if req.loop is None:
            _settle([outcome])
        else:
            by_loop.setdefault(req.loop, []).append(outcome)
    for loop, items in by_loop.items():
        with contextlib.suppress(RuntimeError):  # the caller's loop is already closed
            loop.call_soon_threadsafe(_settle, items)


def _settle(outcomes: list[Outcome]) -> None:
    for req, result, exc in outcomes:
        fut = req.future
        if fut.done():  # an async caller gave up (cancelled); the write itself stands
            continue
        if exc is None:
            fut.set_result(result)
        else:
            fut.set_exception(exc)


_FAULTS = ("SQLITE_FULL", "SQLITE_IOERR", "SQLITE_READONLY", "SQLITE_CANTOPEN", "SQLITE_CORRUPT", "SQLITE_NOTADB")


def _is_fault(exc: BaseException) -> bool:
    """An error of the store itself (disk full, I/O, read-only, corrupt; on PostgreSQL: the connection
    or the server), whatever the request was."""
    if isinstance(exc, (pg.PgOperationalError, pg.PgIntegrityError)):
        return pg.is_fault(exc)
    name = getattr(exc, "sqlite_errorname", "") or ""
    return isinstance(exc, sqlite3.Error) and name.startswith(_FAULTS)


def connect(path: Path | str, *, readonly: bool = False) -> sqlite3.Connection:
    """A connection to the store: an SQLite file, or a PostgreSQL database when ``path`` is a
    ``postgresql://`` URL (``pg.py``: the same interface and SQL)."""
    if pg.is_url(path):
        return pg.connect(str(path), readonly=readonly)  # type: ignore[return-value]
    if readonly:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, isolation_level=None, check_same_thread=False)
    else:
        conn = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA busy_timeout = 30000")
    if not readonly:
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("PRAGMA synchronous = FULL")
    return conn


def open_readonly(target: Path | str) -> sqlite3.Connection:
    """A read-only connection to the store (module level, so worker processes can be handed it)."""
    return connect(target, readonly=True)


def verify_store(target: Path | str, vkey: VerifierKey, **options: Any) -> Result:
    """``ledger.audit.verify_database`` on the store at ``target``: an SQLite file or a PostgreSQL URL."""
    return verify_database(target, vkey, connect=open_readonly, **options)


class Database:
    """Owns the database file: migrations, the single writer, read connections, checkpoints."""

    def __init__(self, path: Path | str, *, signer: LedgerSigner | None = None,
                 checkpoint_interval: float = 1.0, checkpoint_file: Path | None = None,
                 batch_max: int = 1000, telemetry: Telemetry | None = None) -> None:
        # an SQLite file, or a PostgreSQL URL (kept as text: ``Path`` would fold its "//")
        self.path: Path | str = str(path) if pg.is_url(path) else Path(path)
        self.telemetry = telemetry   # observed once per batch: writes committed, BEGIN to durable COMMIT
        self.signer = signer
        self.checkpoint_interval = checkpoint_interval
        self.checkpoint_file = checkpoint_file
        self.batch_max = batch_max
        self._queue: queue.SimpleQueue[_Request] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._conn: sqlite3.Connection | None = None
        self._head = ChainHead()
        self._last_cp_size = -1
        self._last_cp_time = 0.0
        self._closed = False
        self._latest: StoredCheckpoint | None = None
        self._dead: BaseException | None = None
        self._anchor: Anchor | None = None   # the newest checkpoint signed or verified (see anchor.py)
        self._reloaded = False               # the head was reloaded from the database since the anchor
        self._fault: str | None = None       # the store cannot write (disk full, I/O error) until a commit succeeds
        self._head_stale = False             # a failed batch could not reload the head (store unreachable)
        # nodes sharing one PostgreSQL database: set, every write transaction checks this node holds it
        self.lease: Lease | None = None
        # called on the writer thread with every checkpoint it signs (the checkpoint sink); never fatal
        self.on_checkpoint: Callable[[StoredCheckpoint], None] | None = None
        self._local = threading.local()
        self._readers: list[sqlite3.Connection] = []
        # the threads :meth:`read` runs queries on (started on first use); the loop never reads itself
        self._read_pool = concurrent.futures.ThreadPoolExecutor(max_workers=4, thread_name_prefix="alertengine-read")
        # reads that are mostly Python work (a page of a report, rendered): one at a time (:meth:`read_serial`)
        self._serial_pool = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="alertengine-render")
        self._stats = {"batches": 0, "writes": 0}

    # --- lifecycle ---------------------------------------------------------------------------
    def open(self) -> "Database":
        """Apply migrations, load the ledger head, refuse a rolled-back database, start the writer."""
        conn = connect(self.path)
        try:
            apply_migrations(conn)
            self._head.load(conn)
            held = self._check_rollback(conn)
            self._latest = latest_checkpoint(conn)
            self._last_cp_size = self._latest.size if self._latest else -1
            # the database must extend both what it says it signed and what was held outside it
            candidates = sorted((Anchor(c.size, c.root) for c in (self._latest, held) if c is not None),
                                key=lambda a: a.size)
            for anchor in candidates:
                check_extends(conn, self._head, anchor, reloaded=True)
            self._anchor = candidates[-1] if candidates else None
        except BaseException:
            conn.close()
            raise
        self._conn = conn
        self._thread = threading.Thread(target=self._run, name="alertengine-writer", daemon=True)
        self._thread.start()
        return self

    def close(self, *, final_checkpoint: bool = True) -> None:
        """Sign a final checkpoint (if asked and possible), stop the writer, close connections."""
        if self._closed or self._thread is None:
            return
        if self._dead is not None:
            self._thread.join()
            self._closed = True
            return
        if final_checkpoint and self.signer is not None:
            with contextlib.suppress(Exception):
                self._submit(_Request(None, "checkpoint:shutdown")).result()
        if self._dead is None:
            with contextlib.suppress(StoreError):   # the writer may stop (a rollback found) meanwhile
                self._submit(_Request(None, "stop")).result()
        self._thread.join()
        self._closed = True
        self._read_pool.shutdown(wait=True, cancel_futures=True)
        self._serial_pool.shutdown(wait=True, cancel_futures=True)
        for conn in self._readers:
            conn.close()

    def __enter__(self) -> "Database":
        return self.open()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _check_rollback(self, conn: sqlite3.Connection) -> Checkpoint | None:
        """Refuse a database smaller than a checkpoint signed for it; return the verified checkpoint
        held outside the database (``latest-checkpoint.txt``), if any."""
        size = self._head.size
        row = conn.execute("SELECT max(size) FROM checkpoints").fetchone()
        if row[0] is not None and row[0] > size:
            raise RollbackDetectedError(
                f"ROLLBACK: the database holds {size} ledger entries but a checkpoint of size {row[0]} was "
                f"signed; entries were removed or an old copy of the database was restored. Refusing to start.")
        if self.checkpoint_file and self.checkpoint_file.exists() and self.signer is not None:
            try:
                cp = parse_checkpoint(open_note(self.checkpoint_file.read_text(encoding="utf-8"),
                                                self.signer.verifier))
            except NoteError as exc:
                raise RollbackDetectedError(f"{self.checkpoint_file} does not verify: {exc.detail}") from None
            if cp.size > size:
                raise RollbackDetectedError(
                    f"ROLLBACK: the database holds {size} ledger entries but this appliance signed a checkpoint "
                    f"of size {cp.size} ({self.checkpoint_file}); an old copy of the database was restored. "
                    "Refusing to start.")
            return cp
        return None

    # --- writing -----------------------------------------------------------------------------
    def _submit(self, req: _Request) -> Any:
        if self._closed or self._thread is None:
            raise StoreError("the database is not open for writing")
        if self._dead is not None:
            raise StoreError(f"the database writer stopped: {self._dead}")
        self._queue.put(req)
        return req.future

    async def write(self, fn: Callable[[WriteTx], T]) -> T:
        """Run ``fn`` in the writer's transaction; return its result once committed.

        If the awaiting task is cancelled the write may still commit: it is not undone."""
        return await self._submit(_Request(fn, loop=asyncio.get_running_loop()))

    def write_sync(self, fn: Callable[[WriteTx], T]) -> T:
        return self._submit(_Request(fn)).result()

    async def append(self, *events: LedgerEvent) -> list[Entry]:
        """Append ``events`` in one write; return their entries once committed (an event whose
        ``event_id`` the ledger already holds gets the stored entry, marked ``duplicate``)."""
        return await self._submit(_Request(None, loop=asyncio.get_running_loop(), events=events))

    def append_sync(self, *events: LedgerEvent) -> list[Entry]:
        return self._submit(_Request(None, events=events)).result()

    def checkpoint_sync(self, reason: str = "requested") -> StoredCheckpoint | None:
        """Sign (or return the existing) checkpoint of everything committed so far."""
        return self._submit(_Request(None, f"checkpoint:{reason}")).result()

    async def checkpoint(self, reason: str = "requested") -> StoredCheckpoint | None:
        return await self._submit(_Request(None, f"checkpoint:{reason}", loop=asyncio.get_running_loop()))

    # --- the writer thread -------------------------------------------------------------------
    def _run(self) -> None:
        conn = self._conn
        assert conn is not None
        try:
            while True:
                timeout = None
                if self.signer is not None and self._head.size > max(self._last_cp_size, 0):
                    timeout = max(0.0, self._last_cp_time + self.checkpoint_interval - time.monotonic())
                try:
                    first = self._queue.get(timeout=timeout)
                except queue.Empty:
                    self._safe_checkpoint("interval", force=False)
                    continue
                if first.control is not None:
                    if self._control(first):
                        return
                    continue
                batch = [first]
                control = None
                while len(batch) < self.batch_max:
                    try:
                        nxt = self._queue.get_nowait()
                    except queue.Empty:
                        break
                    if nxt.control is not None:
                        control = nxt
                        break
                    batch.append(nxt)
                self._run_batch(self._conn, batch)
                self._safe_checkpoint("interval", force=False)
                if control is not None and self._control(control):
                    return
        except BaseException as exc:  # noqa: BLE001 - the writer must never die silently
            log.critical("the database writer stopped: %s", exc, exc_info=not isinstance(exc, RollbackDetectedError))
            self._dead = exc
            if isinstance(exc, RollbackDetectedError):
                self._ledger_alarm(self._conn, exc)
            while True:  # fail whatever is still queued instead of leaving callers waiting
                try:
                    req = self._queue.get_nowait()
                except queue.Empty:
                    break
                _deliver([(req, None, StoreError(f"the database writer stopped: {exc}"))])
        finally:
            self._conn.close()

    def _control(self, req: _Request) -> bool:
        if req.control == "stop":
            _deliver([(req, None, None)])
            return True
        reason = req.control.split(":", 1)[1]
        try:
            _deliver([(req, self._checkpoint(reason, force=True), None)])
        except RollbackDetectedError as exc:
            self._dead = exc
            _deliver([(req, None, exc)])
            raise                      # the writer stops: nothing more is written or signed
        except BaseException as exc:  # noqa: BLE001 - handed to the caller
            _deliver([(req, None, exc)])
        return False

    def _ledger_alarm(self, conn: sqlite3.Connection, exc: RollbackDetectedError) -> None:
        """Record the refusal in the ledger when the database still takes writes (never signed)."""
        try:
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
            conn.execute("BEGIN IMMEDIATE")
            self._head.load(conn)
            self._head.append(conn, LedgerEvent(
                kind="ledger.rollback_detected", tenant=SYSTEM_TENANT, actor="system", decision="refused",
                reason=str(exc)[:2000], data={"anchor_size": self._anchor.size if self._anchor else None,
                                              "database_size": self._head.size}))
            self._head.save(conn)
            conn.execute("COMMIT")
        except Exception as alarm_exc:  # noqa: BLE001 - the refusal stands whether or not it is ledgered
            log.error("could not ledger the rollback alarm: %s", alarm_exc)

    def _run_batch(self, conn: sqlite3.Connection, batch: list[_Request]) -> None:
        head = self._head
        outcomes: list[tuple[_Request, Any, BaseException | None, WriteTx | None]] = []
        started = time.perf_counter()
        try:
            conn.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as exc:
            if _is_fault(exc):
                self._fault = str(exc)
            _deliver([(req, None, StoreError(f"could not begin a write transaction: {exc}")) for req in batch])
            self._reconnected(conn)
            return
        try:
            if self.lease is not None:
                self.lease.fence(conn)   # under the writer's lock: only the lease's holder writes
            if self._head_stale:
                head.load(conn)
                self._head_stale = False
            self._sync_head(conn)
            size = head.size
            ledger = LedgerBatch(conn, head)
            ledger.precheck(e.event_id for req in batch if req.events for e in req.events)
            for i, req in enumerate(batch):
                mark = ledger.mark()
                tx = None
                try:
                    if req.events is not None:
                        result: Any = [ledger.append(e) for e in req.events]
                    else:
                        tx = WriteTx(ledger, f"w{i}")
                        result = req.fn(tx)  # type: ignore[misc]
                        tx._release()
                    outcomes.append((req, result, None, tx))
                except BaseException as exc:  # noqa: BLE001 - handed to the caller
                    if _is_fault(exc) or ledger.broken is not None:
                        raise   # the store's trouble, not the request's: the whole batch fails
                    if tx is not None:
                        tx._rollback()
                    ledger.undo(mark)
                    outcomes.append((req, None, exc, tx))
                if ledger.broken is not None:   # the write caught the error of inserting pending rows
                    raise ledger.broken
            ledger.flush()
            if head.size != size:
                head.save(conn)
            conn.execute("COMMIT")
        except RollbackDetectedError as exc:
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
            self._dead = exc           # before anyone is answered: a refused caller sees the writer stopped
            _deliver([(req, None, StoreError("the ledger was rolled back under the appliance; writing refused"))
                      for req in batch])
            raise
        except NotLeaderError as exc:   # nothing was written: no fault of the store
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
            _deliver([(req, None, exc) for req in batch])
            return
        except BaseException as exc:  # noqa: BLE001 - the whole batch failed
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
            self._fault = str(exc)   # (SQLite may have rolled back by itself: a disk full does)
            try:
                conn = self._reconnected(conn)
                head.load(conn)
            except sqlite3.Error:   # the store is unreachable: the next batch reloads the head first
                self._head_stale = True
            err = StoreError(f"the store cannot write now: {exc}" if _is_fault(exc) else
                             f"write transaction failed: {exc}")
            _deliver([(req, None, err) for req in batch])
            return
        committed = time.perf_counter()
        head.forget_journal()
        self._fault = None   # a commit went through: the store writes again
        self._stats["batches"] += 1
        self._stats["writes"] += len(batch)
        written = 0
        for _req, _result, exc, tx in outcomes:
            if exc is None:
                written += 1
                if tx is not None:
                    for cb in tx._after_commit:
                        try:
                            cb()
                        except Exception:  # noqa: BLE001 - the write committed; a hook cannot undo it
                            log.exception("an after-commit hook failed")
        _deliver([(req, result, exc) for req, result, exc, _tx in outcomes])
        if self.telemetry is not None:
            self.telemetry.writer_batch.observe(written)
            self.telemetry.writer_commit.observe(committed - started)

    def _reconnected(self, conn: sqlite3.Connection) -> sqlite3.Connection:
        """The writer's connection, opened anew if the PostgreSQL server dropped it (a restart, a
        failover of the operator's replication): the next batch writes again once it is back."""
        if not isinstance(conn, pg.PgConnection) or not conn.lost:
            return conn
        with contextlib.suppress(Exception):
            conn.close()
        try:
            fresh = connect(self.path)
        except sqlite3.Error as exc:
            log.error("the store %s is unreachable: %s", self.where, exc)
            return conn   # still closed: the next batch fails as a fault and tries again
        self._conn = fresh
        return fresh

    def _sync_head(self, conn: sqlite3.Connection) -> None:
        """Reload the head if another process changed the ledger since our last transaction (another
        appliance command appending is normal; fewer entries than the anchor is a rollback)."""
        row = conn.execute("SELECT max(seq) FROM ledger").fetchone()
        size = row[0] + 1 if row[0] is not None else 0
        if size != self._head.size:
            self._head.load(conn)
            self._reloaded = True
            check_extends(conn, self._head, self._anchor, reloaded=True)
            self._reloaded = False   # re-hashed just now: it extends the anchor

    def _safe_checkpoint(self, reason: str, *, force: bool) -> None:
        try:
            self._checkpoint(reason, force=force)
        except RollbackDetectedError:
            raise
        except Exception as exc:  # noqa: BLE001 - retried after the next interval; entries stay chained
            self._last_cp_time = time.monotonic()
            log.error("could not sign a ledger checkpoint (will retry): %s", exc)

    def _checkpoint(self, reason: str, *, force: bool) -> StoredCheckpoint | None:
        if self.signer is None:
            return None
        conn = self._conn
        assert conn is not None
        now = time.monotonic()
        if self.lease is not None and self.lease.token is None:
            self._last_cp_time = now   # checkpoints are the leader's to sign
            return None
        if not force and (now - self._last_cp_time < self.checkpoint_interval or self._head.size <= self._last_cp_size):
            return None
        conn.execute("BEGIN IMMEDIATE")
        try:
            if self.lease is not None:
                self.lease.fence(conn)
            self._sync_head(conn)
            check_extends(conn, self._head, self._anchor, reloaded=self._reloaded)
            size = self._head.size
            row = conn.execute("SELECT size, root, note, reason, created FROM checkpoints "
                               "ORDER BY size DESC LIMIT 1").fetchone()
            if row is not None and row[0] >= size:
                if row[0] > size or bytes(row[1]) != self._head.root():
                    raise RollbackDetectedError(
                        f"ROLLBACK: a checkpoint of size {row[0]} is stored but the database holds {size} entries "
                        "that do not match it. Refusing to sign.")
                conn.execute("COMMIT")
                self._last_cp_size, self._last_cp_time = row[0], now
                self._latest = StoredCheckpoint(row[0], bytes(row[1]), row[2], row[3], row[4])
                self._anchor = Anchor(size, self._latest.root)
                return self._latest
            root = self._head.root()
            note = self.signer.sign_note(f"{self.signer.name}\n{size}\n{b64(root)}\n")
            cp = StoredCheckpoint(size, root, note, reason, utc_timestamp())
            conn.execute("INSERT INTO checkpoints (size, root, note, reason, created) VALUES (?, ?, ?, ?, ?)",
                         (cp.size, cp.root, cp.note, cp.reason, cp.created))
            conn.execute("COMMIT")
        except BaseException:
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
            raise
        self._last_cp_size, self._last_cp_time = size, now
        self._latest = cp
        self._anchor = Anchor(size, root)
        if self.checkpoint_file is not None:
            _write_atomic(self.checkpoint_file, note.encode())
        if self.on_checkpoint is not None:
            try:
                self.on_checkpoint(cp)
            except Exception:  # noqa: BLE001 - publishing a checkpoint never stops the writer
                log.exception("publishing checkpoint %d failed", size)
        return cp

    # --- reading -----------------------------------------------------------------------------
    @contextlib.contextmanager
    def reader(self) -> Iterator[sqlite3.Connection]:
        """A read-only connection for synchronous callers (CLI, verify, export)."""
        conn = connect(self.path, readonly=True)
        try:
            yield conn
        finally:
            conn.close()

    # A test sets this: the appliance's own code then raises when it reads on an event loop's thread.
    strict_loop = False

    async def read(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """``fn(conn, *args, **kwargs)`` on a reader thread, with that thread's kept-open read-only connection.

        This is how code on the event loop reads: no query, however much it finds, stalls the loop
        (the API, the poller and the sender share it). A WAL reader never waits for the writer."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._read_pool, functools.partial(self._read_call, fn, args, kwargs))

    async def read_serial(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """:meth:`read`, for a read that is mostly Python work rather than SQLite's (building and
        rendering a page of a report): such reads run one at a time, on a thread of their own.

        Python runs one thread at a time; the event loop waits up to the switch interval (5 ms) each
        time it takes the interpreter back, behind every thread that is busy. Four viewers rendering
        at once on four threads kept ``/healthz`` waiting 60-80 ms; one at a time, the loop competes
        with one thread only, and the viewers together wait no longer (they never ran in parallel)."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._serial_pool, functools.partial(self._read_call, fn, args, kwargs))

    def _read_call(self, fn: Callable[..., T], args: tuple[Any, ...], kwargs: dict[str, Any]) -> T:
        return fn(self.read_conn(), *args, **kwargs)

    def read_conn(self) -> sqlite3.Connection:
        """This thread's read-only connection, kept open (a WAL reader never waits for the writer).
        Only for code off the event loop: worker threads, :meth:`read`, the CLI."""
        if self.strict_loop:
            _refuse_loop_read()
        conn = getattr(self._local, "conn", None)
        if conn is not None and isinstance(conn, pg.PgConnection) and conn.lost:
            # the PostgreSQL server dropped it (a restart, a failover of the operator's replication)
            with contextlib.suppress(ValueError):
                self._readers.remove(conn)
            conn = None
        if conn is None:
            conn = self._local.conn = connect(self.path, readonly=True)
            self._readers.append(conn)
        return conn

    @property
    def is_postgresql(self) -> bool:
        return isinstance(self.path, str)

    @property
    def where(self) -> str:
        """The store, for messages: the SQLite file, or the PostgreSQL URL without its password."""
        return pg.redacted(self.path) if isinstance(self.path, str) else str(self.path)

    @property
    def store_fault(self) -> str | None:
        """Why the store cannot write right now (disk full, I/O error), or None when it can."""
        return self._fault

    @property
    def writer_failed(self) -> bool:
        """The writer thread stopped on an error: nothing can be written any more."""
        return self._dead is not None

    @property
    def writer_error(self) -> str | None:
        """Why the writer stopped, or None while it runs."""
        return None if self._dead is None else str(self._dead)

    @property
    def ledger_size(self) -> int:
        """Entries committed so far, as the writer knows them."""
        return self._head.size

    @property
    def latest(self) -> StoredCheckpoint | None:
        """The newest checkpoint this process signed or found at start (no I/O)."""
        return self._latest


class Where:
    """A WHERE clause from optional conditions; a condition whose value is None is left out.

    ``w = Where().eq("tenant", tenant).add("ts >= ?", since)`` then
    ``conn.execute("SELECT … FROM ledger" + w.sql(), w.params)``. Terms are code, never user input."""

    def __init__(self) -> None:
        self.terms: list[str] = []
        self.params: list[Any] = []

    def add(self, term: str, value: Any) -> "Where":
        if value is not None:
            self.terms.append(term)
            self.params.append(value)
        return self

    def eq(self, column: str, value: Any) -> "Where":
        return self.add(f"{column} = ?", value)

    def sql(self) -> str:
        return f" WHERE {' AND '.join(self.terms)}" if self.terms else ""


def _refuse_loop_read() -> None:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return   # not on a loop's thread
    caller = sys._getframe(2).f_globals.get("__name__", "")
    if caller.startswith("alertengine."):
        raise RuntimeError(f"{caller} read the database on the event loop: use `await db.read(fn, ...)`")


def latest_checkpoint(conn: sqlite3.Connection) -> StoredCheckpoint | None:
    row = conn.execute("SELECT size, root, note, reason, created FROM checkpoints "
                       "ORDER BY size DESC LIMIT 1").fetchone()
    return StoredCheckpoint(row[0], bytes(row[1]), row[2], row[3], row[4]) if row else None


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
