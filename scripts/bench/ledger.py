"""Ledger benchmark: the single writer against raw SQLite, ack latency, verify, export, offline verify.

    python scripts/bench/ledger.py               # full run (1,000,000 entries for verify/export)
    python scripts/bench/ledger.py --entries 100000 --appends 20000   # quicker

Every figure is measured in this one run on this machine; throughput is reported as a ratio
against raw SQLite batched inserts of the same rows at the same durability (WAL, synchronous=FULL,
same schema, same batch sizes as the writer formed).
"""

from __future__ import annotations

import argparse
import asyncio
import sqlite3
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from alertengine.appliance import init_data_dir  # noqa: E402
from alertengine.config import Config  # noqa: E402
from alertengine.ledger.audit import verify_database  # noqa: E402
from alertengine.ledger.entry import LedgerEvent  # noqa: E402
from alertengine.ledger.verifier import verify_bundle  # noqa: E402
from alertengine.store import Database, connect  # noqa: E402
from alertengine.store.export import export_bundle  # noqa: E402
from alertengine.store.migrations import apply_migrations  # noqa: E402


def make_event(i: int) -> LedgerEvent:
    return LedgerEvent(kind="signal.observed", tenant=f"tenant-{i % 8}", actor="policy",
                       reason="health poll breached p95 threshold", incident=f"INC-{i % 50}",
                       policy_version="sha256:0123456789ab", confidence=80,
                       data={"service": "checkout", "p95_ms": 2847.3, "error_rate": 0.019, "n": i})


def open_db(root: Path, name: str) -> tuple[Database, Path]:
    data = init_data_dir(root / name)
    return data.open_database(Config(data_dir=data.path)), data.db_path


async def writer_throughput(db: Database, n: int, concurrency: int, per_request: int) -> float:
    events = [make_event(i) for i in range(n)]
    queue = iter(range(0, n, per_request))

    async def worker() -> None:
        for start in queue:
            await db.append(*events[start:start + per_request])

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return n / (time.perf_counter() - started)


def raw_baseline(rows: list[tuple], batch: int, path: Path) -> float:
    conn = connect(path)
    apply_migrations(conn)
    started = time.perf_counter()
    for i in range(0, len(rows), batch):
        conn.execute("BEGIN IMMEDIATE")
        conn.executemany("INSERT INTO ledger (seq, event_id, tenant, tseq, incident, kind, ts, body, leaf_hash) "
                         "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", rows[i:i + batch])
        conn.execute("COMMIT")
    rate = len(rows) / (time.perf_counter() - started)
    conn.close()
    return rate


async def steady_latency(db: Database, rate: int, seconds: float) -> tuple[float, float, int]:
    latencies: list[float] = []
    loop = asyncio.get_running_loop()
    total = int(rate * seconds)
    start = loop.time()
    tasks = []

    async def one(i: int) -> None:
        t0 = time.perf_counter()
        await db.append(make_event(i))
        latencies.append(time.perf_counter() - t0)

    for i in range(total):
        delay = start + i / rate - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(i)))
    await asyncio.gather(*tasks)
    latencies.sort()
    return latencies[len(latencies) // 2] * 1000, latencies[int(len(latencies) * 0.99)] * 1000, total


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--appends", type=int, default=50_000, help="appends for the throughput comparison")
    ap.add_argument("--entries", type=int, default=1_000_000, help="ledger size for verify/export/offline verify")
    ap.add_argument("--latency-seconds", type=float, default=5.0)
    ap.add_argument("--repeat", type=int, default=3, help="runs of each throughput measurement")
    args = ap.parse_args()
    root = Path(tempfile.mkdtemp(prefix="alertengine-bench-"))
    print(f"# ledger benchmark in {root}")

    # 1. durable appends through the writer vs raw SQLite, same rows, same batches, same durability.
    #    Each side runs `--repeat` times, interleaved; medians are compared (fsync times here vary).
    for concurrency, per_request in ((256, 1), (32, 100)):
        writer_rates, raw_rates, batch_sizes = [], [], []
        for r in range(args.repeat):
            db, path = open_db(root, f"writer-{concurrency}-{per_request}-{r}")
            writer_rates.append(asyncio.run(writer_throughput(db, args.appends, concurrency, per_request)))
            batches = db._stats["batches"]
            db.close()
            conn = sqlite3.connect(path)
            rows = conn.execute("SELECT seq, event_id, tenant, tseq, incident, kind, ts, body, leaf_hash FROM ledger "
                                "WHERE kind = 'signal.observed' ORDER BY seq").fetchall()
            conn.close()
            batch = max(1, round(len(rows) / batches))
            batch_sizes.append(batch)
            raw_rates.append(raw_baseline(rows, batch, root / f"raw-{concurrency}-{per_request}-{r}.db"))
        rate, raw = statistics.median(writer_rates), statistics.median(raw_rates)
        print(f"appends, {concurrency} concurrent tasks x {per_request} event(s)/request: writer {rate:,.0f}/s "
              f"(~{statistics.median(batch_sizes):.0f} appends/commit) vs raw SQLite inserts of the same rows in the same "
              f"batches {raw:,.0f}/s -> ratio {rate / raw:.2f} (target >= 0.5; median of {args.repeat})")

    # 2. acknowledgement latency at a steady 2,000 appends/s
    db, _ = open_db(root, "latency")
    p50, p99, total = asyncio.run(steady_latency(db, 2000, args.latency_seconds))
    db.close()
    print(f"ack latency at 2,000 appends/s ({total} appends): p50 {p50:.2f} ms, p99 {p99:.2f} ms")

    # 3. a large ledger, appended through the writer in bulk requests
    data = init_data_dir(root / "large")
    db = data.open_database(Config(data_dir=data.path))
    started = time.perf_counter()
    chunk = 5000
    for start in range(0, args.entries, chunk):
        events = [make_event(i) for i in range(start, min(start + chunk, args.entries))]
        db.append_sync(*events)
    build = time.perf_counter() - started
    db.checkpoint_sync("bench")
    print(f"built {args.entries:,} entries through the writer in {build:.1f} s ({args.entries / build:,.0f}/s incl. event creation)")

    # 4. ledger verify on the live database
    started = time.perf_counter()
    result = verify_database(data.db_path, data.signer.verifier)
    took = time.perf_counter() - started
    assert result.status == "ok", result.as_dict()
    print(f"ledger verify: {result.entries_checked:,} entries in {took:.2f} s = {result.entries_checked / took:,.0f} entries/s "
          f"(target >= 100,000)")

    # 5. export and offline verification of the whole ledger
    bundle = root / "bundle.tar.gz"
    summary = export_bundle(db, bundle)
    db.close()
    print(f"export: {summary.entries:,} entries in {summary.seconds:.1f} s, {bundle.stat().st_size / 1e6:.0f} MB (target <= 30 s)")
    started = time.perf_counter()
    verdict = verify_bundle(str(bundle), data.signer.vkey)
    took = time.perf_counter() - started
    assert verdict.status == "ok", verdict.as_dict()
    print(f"offline bundle verify: {verdict.entries_checked:,} entries in {took:.1f} s (target <= 30 s)")


if __name__ == "__main__":
    main()
