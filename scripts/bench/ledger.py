"""Ledger benchmark: the writer and the verifiers against what SQLite, gzip and SHA-256 alone cost.

    python scripts/bench/ledger.py               # full run (1,000,000 entries for verify/export)
    python scripts/bench/ledger.py --quick       # small sizes, under 30 s (CI)
    python scripts/bench/ledger.py --entries 100000 --appends 20000   # in between
    python scripts/bench/ledger.py --parts appends,latency            # only some (appends, latency, verify)

Every figure is measured in this one run on this machine, next to a baseline measured in the same
run, and printed with their ratio:

* appends, 256 concurrent single-entry requests and 32 concurrent 100-entry requests: the writer
  (``Database.append`` from asyncio tasks, durable before each answer) against raw SQLite batched
  inserts of the same rows, in batches of the size the writer formed, at the same durability (WAL,
  ``synchronous=FULL``, same schema). Target: ratio >= 0.7. Each side runs ``--repeat`` times,
  interleaved; medians are compared (fsync times vary).
* acknowledgement latency at a steady 2,000 appends/s: the writer against a bare group-commit loop
  (one thread, one executemany and COMMIT per batch of whatever is queued, answers through the
  event loop) writing the same rows at the same pace. Target: writer p99 <= 50 ms.
* ``alertengine ledger verify`` of a ledger of ``--entries`` (the live database check,
  ``verify_database``, as the CLI runs it): against one process reading the same rows and hashing
  each entry (the floor of any one-process check). Target: >= 200,000 entries/s. The CLI itself,
  start-up included, is timed too (full size only).
* offline verification of an export of that whole ledger (``verify_bundle``, as ``verify.py``
  runs it): against gunzip and SHA-256 of the bundle's entries.jsonl in one process. Target
  (1,000,000 entries): <= 15 s.

A full run exits 1 when a target is missed; ``--quick`` (sizes too small for the targets to mean
much) exits 0 whenever every verification said "ok".
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import queue
import sqlite3
import statistics
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from alertengine.appliance import DataDir, init_data_dir  # noqa: E402
from alertengine.config import Config  # noqa: E402
from alertengine.ledger.audit import verify_database  # noqa: E402
from alertengine.ledger.chain import INSERT_SQL  # noqa: E402
from alertengine.ledger.entry import LedgerEvent  # noqa: E402
from alertengine.ledger.verifier import verify_bundle  # noqa: E402
from alertengine.store import Database, connect  # noqa: E402
from alertengine.store.export import export_bundle  # noqa: E402
from alertengine.store.migrations import apply_migrations  # noqa: E402

RATIO_TARGET = 0.7
P99_TARGET_MS = 50.0
VERIFY_TARGET = 200_000
OFFLINE_TARGET_S = 15.0   # for 1,000,000 entries; scaled linearly for other sizes
ROWS_SQL = "SELECT seq, event_id, tenant, tseq, incident, kind, ts, body, leaf_hash FROM ledger ORDER BY seq"


def make_event(i: int) -> LedgerEvent:
    return LedgerEvent(kind="signal.observed", tenant=f"tenant-{i % 8}", actor="policy",
                       reason="health poll breached p95 threshold", incident=f"INC-{i % 50}",
                       policy_version="sha256:0123456789ab", confidence=80,
                       data={"service": "checkout", "p95_ms": 2847.3, "error_rate": 0.019, "n": i})


def open_db(root: Path, name: str) -> tuple[Database, DataDir]:
    data = init_data_dir(root / name)
    return data.open_database(Config(data_dir=data.path)), data


def ledger_rows(path: Path) -> list[tuple]:
    conn = sqlite3.connect(path)
    try:
        return conn.execute(ROWS_SQL.replace("ORDER BY", "WHERE kind = 'signal.observed' ORDER BY")).fetchall()
    finally:
        conn.close()


def fresh_raw_db(path: Path) -> sqlite3.Connection:
    conn = connect(path)
    apply_migrations(conn)
    return conn


def line(name: str, value: str, baseline: str, ratio: float, target: str, ok: bool) -> bool:
    print(f"{name}: {value} | baseline {baseline} | ratio {ratio:.2f} | target {target} {'ok' if ok else 'MISSED'}")
    return ok


# --- 1. throughput ------------------------------------------------------------------------------

async def writer_throughput(db: Database, n: int, concurrency: int, per_request: int) -> float:
    events = [make_event(i) for i in range(n)]
    starts = iter(range(0, n, per_request))

    async def worker() -> None:
        for start in starts:
            await db.append(*events[start:start + per_request])

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return n / (time.perf_counter() - started)


def raw_throughput(rows: list[tuple], batch: int, path: Path) -> float:
    conn = fresh_raw_db(path)
    started = time.perf_counter()
    for i in range(0, len(rows), batch):
        conn.execute("BEGIN IMMEDIATE")
        conn.executemany(INSERT_SQL, rows[i:i + batch])
        conn.execute("COMMIT")
    rate = len(rows) / (time.perf_counter() - started)
    conn.close()
    return rate


def bench_throughput(root: Path, appends: int, repeat: int) -> bool:
    ok = True
    for concurrency, per_request in ((256, 1), (32, 100)):
        writer_rates, raw_rates, batch_sizes = [], [], []
        for r in range(repeat):
            db, data = open_db(root, f"writer-{concurrency}-{per_request}-{r}")
            writer_rates.append(asyncio.run(writer_throughput(db, appends, concurrency, per_request)))
            batches = db._stats["batches"]
            db.close()
            rows = ledger_rows(data.db_path)
            batch = max(1, round(len(rows) / batches))
            batch_sizes.append(batch)
            raw_rates.append(raw_throughput(rows, batch, root / f"raw-{concurrency}-{per_request}-{r}.db"))
        rate, raw = statistics.median(writer_rates), statistics.median(raw_rates)
        ok &= line(f"appends, {concurrency} concurrent x {per_request} event(s)/request",
                   f"writer {rate:,.0f}/s (~{statistics.median(batch_sizes):.0f} appends/commit, median of {repeat})",
                   f"raw SQLite inserts of the same rows in the same batches {raw:,.0f}/s",
                   rate / raw, f">= {RATIO_TARGET}", rate / raw >= RATIO_TARGET)
    return ok


# --- 2. acknowledgement latency -----------------------------------------------------------------

async def offered_load(submit, rate: int, seconds: float) -> list[float]:  # type: ignore[no-untyped-def]
    """Call ``await submit(i)`` at a steady ``rate`` for ``seconds``; the latency of each, sorted."""
    latencies: list[float] = []
    loop = asyncio.get_running_loop()
    total = int(rate * seconds)
    tasks = []

    async def one(i: int) -> None:
        t0 = time.perf_counter()
        await submit(i)
        latencies.append(time.perf_counter() - t0)

    start = loop.time()
    for i in range(total):
        delay = start + i / rate - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(i)))
    await asyncio.gather(*tasks)
    return sorted(latencies)


class RawGroupCommit:
    """The baseline writer: one thread, each batch of whatever is queued in one transaction."""

    def __init__(self, path: Path) -> None:
        self.conn = fresh_raw_db(path)
        self.queue: queue.SimpleQueue = queue.SimpleQueue()
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def run(self) -> None:
        while True:
            first = self.queue.get()
            if first is None:
                return
            batch = [first]
            while True:
                try:
                    batch.append(self.queue.get_nowait())
                except queue.Empty:
                    break
            self.conn.execute("BEGIN IMMEDIATE")
            self.conn.executemany(INSERT_SQL, [row for row, _, _ in batch])
            self.conn.execute("COMMIT")
            batch[0][1].call_soon_threadsafe(_resolve, [fut for _, _, fut in batch])   # one event loop

    async def write(self, row: tuple) -> None:
        loop = asyncio.get_running_loop()
        fut = loop.create_future()
        self.queue.put((row, loop, fut))
        await fut

    def close(self) -> None:
        """Stop (every write has been answered: the queue is empty)."""
        self.queue.put(None)
        self.thread.join()
        self.conn.close()


def _resolve(futures: list[asyncio.Future]) -> None:
    for fut in futures:
        if not fut.done():
            fut.set_result(None)


def percentile(sorted_values: list[float], q: float) -> float:
    return sorted_values[min(len(sorted_values) - 1, int(len(sorted_values) * q))] * 1000


def bench_latency(root: Path, seconds: float, rate: int = 2000) -> bool:
    db, data = open_db(root, "latency")
    writer = asyncio.run(offered_load(lambda i: db.append(make_event(i)), rate, seconds))
    db.close()
    rows = ledger_rows(data.db_path)
    raw = RawGroupCommit(root / "raw-latency.db")
    floor = asyncio.run(offered_load(lambda i: raw.write(rows[i]), rate, seconds))
    raw.close()
    p50, p99, raw50, raw99 = (percentile(writer, 0.5), percentile(writer, 0.99),
                              percentile(floor, 0.5), percentile(floor, 0.99))
    return line(f"ack latency at {rate:,} appends/s ({len(writer):,} appends)", f"writer p50 {p50:.1f} ms, p99 {p99:.1f} ms",
                f"bare group commit of the same rows p50 {raw50:.1f} ms, p99 {raw99:.1f} ms",
                p99 / raw99, f"p99 <= {P99_TARGET_MS:.0f} ms", p99 <= P99_TARGET_MS)


# --- 3. verification ------------------------------------------------------------------------------

def build_ledger(root: Path, entries: int) -> tuple[Database, DataDir]:
    db, data = open_db(root, "large")
    started = time.perf_counter()
    chunk = 5000
    for start in range(0, entries, chunk):
        db.append_sync(*(make_event(i) for i in range(start, min(start + chunk, entries))))
    took = time.perf_counter() - started
    db.checkpoint_sync("bench")
    print(f"built {entries:,} entries through the writer in {took:.1f} s ({entries / took:,.0f}/s incl. event creation)")
    return db, data


def scan_floor(path: Path) -> float:
    """Entries/s of one process reading every row and hashing every entry: the least any check does."""
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    sha = hashlib.sha256
    started = time.perf_counter()
    n = 0
    for _seq, _tenant, _tseq, body, leaf in conn.execute("SELECT seq, tenant, tseq, body, leaf_hash FROM ledger ORDER BY seq"):
        if sha(b"\x00" + body).digest() != leaf:
            raise AssertionError("the floor scan found a bad leaf")
        n += 1
    took = time.perf_counter() - started
    conn.close()
    return n / took


def bench_live_verify(data: DataDir, cli: bool) -> bool:
    started = time.perf_counter()
    result = verify_database(data.db_path, data.signer.verifier, external_checkpoint=data.checkpoint_file)
    took = time.perf_counter() - started
    assert result.status == "ok", result.as_dict()
    rate = result.entries_checked / took
    floor = scan_floor(data.db_path)
    ok = line("ledger verify (verify_database)", f"{result.entries_checked:,} entries in {took:.2f} s = {rate:,.0f} entries/s",
              f"one process reading and hashing every row {floor:,.0f} entries/s", rate / floor,
              f">= {VERIFY_TARGET:,} entries/s", rate >= VERIFY_TARGET)
    if cli:
        started = time.perf_counter()
        proc = subprocess.run([sys.executable, "-m", "alertengine", "ledger", "verify", "--data-dir", str(data.path)],
                              capture_output=True, text=True)
        took = time.perf_counter() - started
        assert proc.returncode == 0, proc.stdout + proc.stderr
        cli_rate = result.entries_checked / took
        ok &= line("alertengine ledger verify (CLI, start-up included)", f"{took:.2f} s = {cli_rate:,.0f} entries/s",
                   f"one process reading and hashing every row {floor:,.0f} entries/s", cli_rate / floor,
                   f">= {VERIFY_TARGET:,} entries/s", cli_rate >= VERIFY_TARGET)
    return ok


def gunzip_floor(bundle: Path) -> float:
    """Seconds to decompress the bundle and hash its entries.jsonl in one process."""
    started = time.perf_counter()
    with tarfile.open(bundle, "r:*") as tar:
        for member in tar.getmembers():
            if member.name.endswith("entries.jsonl"):
                f = tar.extractfile(member)
                assert f is not None
                digest = hashlib.sha256()
                for block in iter(lambda: f.read(1 << 20), b""):
                    digest.update(block)
    return time.perf_counter() - started


def bench_offline_verify(db: Database, data: DataDir, root: Path, entries: int) -> bool:
    bundle = root / "bundle.tar.gz"
    summary = export_bundle(db, bundle)
    db.close()
    print(f"export: {summary.entries:,} entries in {summary.seconds:.1f} s, {bundle.stat().st_size / 1e6:.0f} MB")
    started = time.perf_counter()
    verdict = verify_bundle(str(bundle), data.signer.vkey)
    took = time.perf_counter() - started
    assert verdict.status == "ok", verdict.as_dict()
    floor = gunzip_floor(bundle)
    target = OFFLINE_TARGET_S * entries / 1_000_000
    return line("offline bundle verify (verify_bundle)", f"{verdict.entries_checked:,} entries in {took:.1f} s",
                f"gunzip and SHA-256 of entries.jsonl {floor:.1f} s", took / floor, f"<= {target:.1f} s", took <= target)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="small sizes, under 30 s: for CI (exit 0 when all verified)")
    ap.add_argument("--appends", type=int, default=50_000, help="appends for the throughput comparison")
    ap.add_argument("--entries", type=int, default=1_000_000, help="ledger size for verify/export/offline verify")
    ap.add_argument("--latency-seconds", type=float, default=5.0)
    ap.add_argument("--repeat", type=int, default=3, help="runs of each throughput measurement")
    ap.add_argument("--parts", default="appends,latency,verify", help="what to run (comma-separated; default all)")
    args = ap.parse_args()
    parts = set(args.parts.split(","))
    if args.quick:
        args.appends, args.entries, args.latency_seconds, args.repeat = 2_000, 20_000, 1.0, 1
    root = Path(tempfile.mkdtemp(prefix="alertengine-bench-"))
    print(f"# ledger benchmark in {root}{' (quick: targets do not apply)' if args.quick else ''}")
    ok = True
    if "appends" in parts:
        ok &= bench_throughput(root, args.appends, args.repeat)
    if "latency" in parts:
        ok &= bench_latency(root, args.latency_seconds)
    if "verify" in parts:
        db, data = build_ledger(root, args.entries)
        db.close()   # `ledger verify` runs in a process of its own, beside the appliance
        ok &= bench_live_verify(data, cli=not args.quick)
        db = data.open_database(Config(data_dir=data.path))
        ok &= bench_offline_verify(db, data, root, args.entries)
    return 0 if args.quick or ok else 1


if __name__ == "__main__":
    sys.exit(main())
