"""Ledger growth benchmark: how many bytes a day the ledger gains from health polling.

    python scripts/bench/ledger_growth.py            # an hour of 2,000 services at 5 s, 10 % breaching
    python scripts/bench/ledger_growth.py --quick    # 10 minutes of 200 services, for CI

The detector runs as in ``serve`` with a simulated clock (no waiting): every service is polled
every ``--interval`` seconds; the breaching ones open an incident and keep breaching for the whole
run (the worst case: incidents nobody fixes). The database file's growth is measured (WAL folded
in), then projected to a day. The baseline, measured in the same run on the same readings, is a
ledger entry per breaching poll (what detection wrote before evidence was summarised per minute);
it runs for a tenth of the time and is projected the same way. Goal: <= 1 GB a day.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from alertengine.appliance import init_data_dir  # noqa: E402
from alertengine.config import Config  # noqa: E402
from alertengine.incidents.detection import Detector, ServiceRef  # noqa: E402
from alertengine.notify.gateway import Gateway, JsonLinesChannel  # noqa: E402
from alertengine.signals import HealthReading  # noqa: E402
from alertengine.tenancy.tenants import create_tenant  # noqa: E402

HEALTHY = HealthReading("answered", "sdk", 200, 12.0, "ok", p95_ms=180.0, error_rate=0.001, health_score=97.0,
                        anomaly_score=0.1, sample_size=500)


def breaching(n: int) -> HealthReading:
    return HealthReading("answered", "sdk", 200, 14.0, "warning", p95_ms=4000.0 + n % 700, error_rate=0.004,
                         health_score=62.0, anomaly_score=2.5, sample_size=480)


def size(db) -> int:  # type: ignore[no-untyped-def]
    """Bytes of every page in use, of every table and index (SQLite's dbstat: WAL content included)."""
    with db.reader() as conn:
        return conn.execute("SELECT sum(pgsize) FROM dbstat").fetchone()[0]


async def run(root: Path, services: int, share: float, interval: float, seconds: float, per_poll: bool) -> float:
    data = init_data_dir(root)
    db = data.open_database(Config(data_dir=data.path, checkpoint_interval=3600))
    clock = [1_800_000_000.0]
    detector = Detector(db, Gateway(db, [JsonLinesChannel(root / "n.jsonl")]), clock=lambda: clock[0])
    if per_poll:   # the baseline: every breaching poll a change of state, so its own entry
        detector._changes = lambda *a: True  # type: ignore[method-assign]
    try:
        tenant = db.write_sync(create_tenant("bench", "bench")).id
        refs = [ServiceRef(tenant, f"svc_{i:016d}", f"service-{i}") for i in range(services)]
        bad = set(range(int(services * share)))
        for ref_i in bad:       # open every breaching service's incident before measuring
            for _ in range(3):
                await detector.on_reading(refs[ref_i], breaching(ref_i))
        await detector.flush_evidence()
        db.checkpoint_sync()
        before = size(db)
        polls = int(seconds / interval)
        t0 = time.perf_counter()
        for tick in range(polls):
            clock[0] += interval
            for i, ref in enumerate(refs):
                await detector.on_reading(ref, breaching(i + tick) if i in bad else HEALTHY)
        await detector.flush_evidence()
        wall = time.perf_counter() - t0
        grown = size(db) - before
        per_day = grown * 86_400 / seconds
        label = "baseline, an entry per breaching poll" if per_poll else "evidence summarised per minute"
        print(f"{label}: {polls * services:,} polls ({len(bad):,} breaching services) over {seconds / 60:.0f} "
              f"simulated minutes in {wall:.1f} s; the database grew {grown / 1e6:,.2f} MB: "
              f"{per_day / 1e9:,.3f} GB a day projected")
        return per_day
    finally:
        db.close()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--services", type=int, default=2000)
    ap.add_argument("--breaching", type=float, default=0.10, help="share of services breaching all along")
    ap.add_argument("--interval", type=float, default=5.0)
    ap.add_argument("--seconds", type=float, default=3600.0, help="simulated time")
    ap.add_argument("--quick", action="store_true", help="200 services for 10 minutes: for CI")
    args = ap.parse_args()
    if args.quick:
        args.services, args.seconds = 200, 600.0
    with tempfile.TemporaryDirectory() as tmp:
        summarised = asyncio.run(run(Path(tmp) / "a", args.services, args.breaching, args.interval, args.seconds,
                                     per_poll=False))
        baseline = asyncio.run(run(Path(tmp) / "b", args.services, args.breaching, args.interval,
                                   max(300.0, args.seconds / 10), per_poll=True))
    print(f"ledger growth: {summarised / 1e9:.3f} GB/day against {baseline / 1e9:.2f} GB/day per poll "
          f"(ratio {summarised / baseline:.3f}); goal <= 1 GB/day")
    return 0 if args.quick or summarised <= 1e9 else 1


if __name__ == "__main__":
    raise SystemExit(main())
