"""PostgreSQL benchmark: the store on PostgreSQL against raw inserts into the same PostgreSQL, and
failover time over repeated kills.

    python scripts/bench/postgresql.py            # full: 20,000 appends, 20,000 alerts, 10 kills
    python scripts/bench/postgresql.py --quick    # small sizes and 2 kills (CI)

A private PostgreSQL cluster (Debian's server, fsync on) is started in a temporary directory.
Every figure is printed next to a baseline measured in the same run:

* appends, 32 concurrent 100-entry requests and 256 concurrent single-entry requests: the writer
  (``Database.append`` on PostgreSQL, durable before each answer) against raw ``executemany``
  inserts of the same ledger rows into the same table of the same database, in batches of the size
  the writer formed, one transaction each.
* ingest: 8 senders POSTing 50-alert Alertmanager groups to a ``serve`` node on PostgreSQL (new
  alerts, then the same again as repeats), against raw inserts of the rows those alerts wrote (their
  ledger entries and alert rows) in transactions of one request's rows.
* failover: two nodes; the leader is killed (``kill -9``) ``--kills`` times, and the time until the
  other node answers ``/healthz`` as leader is measured each time (the killed node is started again
  as a follower before the next kill). Target: every failover <= 10 s with the default lease.

Exits 1 when a failover exceeds the target (full run); ``--quick`` only has to run to the end.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import psycopg

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(HERE))

import ingest as ingest_bench  # noqa: E402
from ingest import free_port, wait_up  # noqa: E402
from ledger import writer_throughput  # noqa: E402

from alertengine.appliance import init_data_dir  # noqa: E402
from alertengine.config import Config  # noqa: E402
from alertengine.ledger.chain import INSERT_SQL  # noqa: E402
from alertengine.store import pg  # noqa: E402
from tests.pgcluster import PgCluster, server_bin  # noqa: E402

FAILOVER_TARGET = 10.0


def line(name: str, value: str, baseline: str, ratio: float | None) -> None:
    shown = f"ratio {ratio:.2f}" if ratio is not None else ""
    print(f"{name}: {value}; baseline {baseline}{'; ' + shown if shown else ''}", flush=True)


def raw_inserts(url: str, batches: list[list[tuple[str, tuple]]]) -> float:
    """Rows per second: each batch (statement, row) pairs in one transaction, as the writer commits them."""
    conn = pg.connect(url)
    try:
        rows = 0
        started = time.perf_counter()
        for batch in batches:
            conn.execute("BEGIN")
            by_sql: dict[str, list[tuple]] = {}
            for sql, row in batch:
                by_sql.setdefault(sql, []).append(row)
            for sql, group in by_sql.items():
                conn.executemany(sql, group)
            conn.execute("COMMIT")
            rows += len(batch)
        return rows / (time.perf_counter() - started)
    finally:
        conn.close()


def empty_copy(cluster: PgCluster, tables: list[str], source: str) -> str:
    """A new schema holding empty copies of ``tables`` (columns, types, indexes; no triggers)."""
    url = cluster.fresh_url("raw")
    with psycopg.connect(url, autocommit=True) as conn:
        schema = conn.execute("SELECT current_schema()").fetchone()[0]
        for table in tables:
            conn.execute(f'CREATE TABLE "{schema}"."{table}" (LIKE "{source}"."{table}" INCLUDING ALL)')
    return url


def schema_of(url: str) -> str:
    with psycopg.connect(url, autocommit=True) as conn:
        return conn.execute("SELECT current_schema()").fetchone()[0]


def bench_appends(cluster: PgCluster, root: Path, appends: int) -> None:
    from alertengine.store import Database
    for concurrency, per_request in ((32, 100), (256, 1)):
        url = cluster.fresh_url("writer")
        data = init_data_dir(root / f"appends-{concurrency}")
        db = Database(url, signer=data.signer, checkpoint_interval=3600).open()
        try:
            rate = asyncio.run(writer_throughput(db, appends, concurrency, per_request))
            batches = db._stats["batches"]
            rows = db.read_conn().execute(
                "SELECT seq, event_id, tenant, tseq, incident, kind, ts, body, leaf_hash FROM ledger "
                "WHERE kind = 'signal.observed' ORDER BY seq").fetchall()
        finally:
            db.close()
        batch = max(1, round(len(rows) / batches))
        raw_url = empty_copy(cluster, ["ledger"], schema_of(url))
        raw = raw_inserts(raw_url, [[(INSERT_SQL, r) for r in rows[i:i + batch]] for i in range(0, len(rows), batch)])
        line(f"appends on PostgreSQL, {concurrency} concurrent x {per_request}",
             f"writer {rate:,.0f}/s (~{batch} appends/commit)",
             f"raw inserts of the same rows in the same batches {raw:,.0f}/s", rate / raw)


def bench_ingest(cluster: PgCluster, root: Path, total: int, size: int) -> None:
    url = cluster.fresh_url("ingest")
    (root / "ingest").mkdir()
    figures = ingest_bench.alertengine(root / "ingest", total, size, database_url=url)
    new, repeats = figures["new"], figures["repeats"]
    conn = pg.connect(url)
    try:
        ledger = conn.execute("SELECT seq, event_id, tenant, tseq, incident, kind, ts, body, leaf_hash FROM ledger "
                              "WHERE kind = 'alert.received' ORDER BY seq").fetchall()
        columns = [r[0] for r in conn.execute("SELECT column_name FROM information_schema.columns WHERE table_name = "
                                              "'alerts' AND table_schema = current_schema() ORDER BY ordinal_position")]
        alerts = conn.execute(f"SELECT {', '.join(columns)} FROM alerts ORDER BY triggered").fetchall()
    finally:
        conn.close()
    insert_alert = f"INSERT INTO alerts ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))})"
    pairs = [[(INSERT_SQL, r) for r in ledger[i:i + size]] + [(insert_alert, a) for a in alerts[i:i + size]]
             for i in range(0, len(ledger), size)]
    raw = raw_inserts(empty_copy(cluster, ["ledger", "alerts"], schema_of(url)), pairs) / 2   # two rows per alert
    line("ingest on PostgreSQL, new alerts", f"{new[0]:,.0f} alerts/s, {new[1]:.3f} CPU s per 1,000",
         f"raw inserts of their ledger and alert rows, 50 alerts a transaction: {raw:,.0f} alerts/s", new[0] / raw)
    line("ingest on PostgreSQL, repeats", f"{repeats[0]:,.0f} alerts/s, {repeats[1]:.3f} CPU s per 1,000",
         "(a repeat writes no new row)", None)


def bench_failover(cluster: PgCluster, root: Path, kills: int) -> bool:
    url = cluster.fresh_url("failover")
    seed = init_data_dir(root / "seed").path
    procs: dict[str, tuple[subprocess.Popen, int]] = {}

    def start(name: str) -> None:
        data = root / f"node-{name}"
        if not data.exists():
            shutil.copytree(seed, data)
        port = free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith("ALERTENGINE_")}
        env.update(PYTHONPATH=str(ROOT), ALERTENGINE_DATABASE_URL=url, ALERTENGINE_NODE_NAME=name,
                   ALERTENGINE_CONSOLE_NOTIFICATIONS="false")
        proc = subprocess.Popen([sys.executable, "-m", "alertengine", "serve", "--data-dir", str(data), "--port",
                                 str(port)], cwd=root, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_up(f"http://127.0.0.1:{port}/healthz", proc)
        procs[name] = (proc, port)

    def role(name: str) -> str | None:
        try:
            return httpx.get(f"http://127.0.0.1:{procs[name][1]}/healthz", timeout=2).json().get("role")
        except (httpx.HTTPError, ValueError):
            return None

    def wait_role(name: str, want: str, limit: float = 60) -> float:
        t0 = time.monotonic()
        while role(name) != want:
            if time.monotonic() - t0 > limit:
                raise SystemExit(f"{name} did not become {want}")
            time.sleep(0.05)
        return time.monotonic() - t0

    took: list[float] = []
    try:
        start("a")
        wait_role("a", "leader")
        start("b")
        wait_role("b", "follower")
        leader, follower = "a", "b"
        for _ in range(kills):
            proc, _port = procs[leader]
            proc.send_signal(signal.SIGKILL)
            proc.wait(30)
            took.append(wait_role(follower, "leader"))
            start(leader)
            wait_role(leader, "follower")
            leader, follower = follower, leader
    finally:
        for proc, _port in procs.values():
            if proc.poll() is None:
                proc.terminate()
                proc.wait(30)
    worst = max(took)
    line(f"failover after kill -9, {kills} kills", f"median {statistics.median(took):.2f} s, worst {worst:.2f} s "
         f"({', '.join(f'{t:.1f}' for t in took)})", f"the lease's own bound {Config().lease_ttl * 7 / 6:.1f} s, "
         f"target <= {FAILOVER_TARGET:.0f} s", None)
    return worst <= FAILOVER_TARGET


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--appends", type=int, default=None)
    ap.add_argument("--alerts", type=int, default=None)
    ap.add_argument("--kills", type=int, default=None)
    args = ap.parse_args()
    appends = args.appends or (2_000 if args.quick else 20_000)
    alerts = args.alerts or (1_000 if args.quick else 20_000)
    kills = args.kills or (2 if args.quick else 10)
    if server_bin() is None:
        print("PostgreSQL's server is not installed (Debian package: postgresql): skipped")
        return 0 if args.quick else 1
    cluster = PgCluster(durable=True).start()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            root = Path(tmp)
            bench_appends(cluster, root, appends)
            bench_ingest(cluster, root, alerts, 50)
            ok = bench_failover(cluster, root, kills)
    finally:
        cluster.stop()
    return 0 if ok or args.quick else 1


if __name__ == "__main__":
    sys.exit(main())
