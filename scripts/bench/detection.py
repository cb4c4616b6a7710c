"""Detection benchmarks: detection latency through a real poll loop, and Alertmanager ingest rate.

    python scripts/bench/detection.py                     # 100 services at 1 s, 2,000 alerts
    python scripts/bench/detection.py --services 300 --alerts 5000

1. Detection latency: ``--services`` health URLs served by a local HTTP server in another thread
   turn bad at a known instant; the poller, the detector and the writer run as in ``serve`` with a
   policy opening on the first breaching poll. Reported: time from turning bad to each service's
   ``incident.detected`` entry, p50/p95, against the budget of one poll interval + 500 ms.
2. Ingest: Alertmanager groups of 50 alerts POSTed through the ASGI app (in process, 8 at a time):
   alerts/s accepted, judged by policy, deduplicated and ledgered; then the same groups again
   (all repeats) for the deduplication rate. Target >= 1,000 alerts/s.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import statistics
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from alertengine.appliance import init_data_dir  # noqa: E402
from alertengine.config import Config  # noqa: E402
from alertengine.incidents.policy import put_policy  # noqa: E402
from alertengine.runtime import Runtime  # noqa: E402
from alertengine.tenancy.services import create_service, normalise  # noqa: E402
from alertengine.tenancy.tenants import create_integration, create_tenant, set_shadow  # noqa: E402
from alertengine.tenancy.vault import SecretVault  # noqa: E402
from alertengine.web.app import create_app  # noqa: E402

GOOD = json.dumps({"sdk": "alertengine", "status": "ok", "window_seconds": 60,
                   "metrics": {"overall_p95_ms": 100.0, "error_rate": 0.0, "anomaly_score": 0.1, "sample_size": 300},
                   "health_score": {"score": 99.0, "status": "ok", "trend": "stable"}}).encode()
BAD = json.dumps({"sdk": "alertengine", "status": "critical", "window_seconds": 60,
                  "metrics": {"overall_p95_ms": 9000.0, "error_rate": 0.3, "anomaly_score": 5.0, "sample_size": 300},
                  "health_score": {"score": 20.0, "status": "critical", "trend": "degrading"}}).encode()


def fleet() -> tuple[ThreadingHTTPServer, dict[str, bytes]]:
    state = {"body": GOOD}

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:  # noqa: N802
            body = state["body"]
            self.send_response(200)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            return None

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, state


def _ts(value: str) -> float:
    return dt.datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


async def detection_latency(root: Path, services: int, interval: float) -> None:
    data = init_data_dir(root / "latency")
    config = Config(data_dir=data.path, console_notifications=False)
    db = data.open_database(config)
    server, state = fleet()
    url = f"http://127.0.0.1:{server.server_address[1]}"
    tenant = db.write_sync(create_tenant("bench", "bench")).id
    db.write_sync(set_shadow(tenant, False, "bench"))
    db.write_sync(put_policy(tenant, "[detection]\nbreaches_to_open = 1\n", "bench"))
    vault = SecretVault(data.secret("vault.key"))
    for n in range(services):
        spec = normalise({"name": f"svc-{n}", "health_url": f"{url}/svc/{n}/health", "poll_interval": interval},
                         config.url_policy)
        db.write_sync(create_service(tenant, f"svc-{n}", spec, vault, "bench"))
    runtime = Runtime(config, db, data)
    runtime.start()
    await asyncio.sleep(interval * 2 + 1)  # every service polled healthy at least once
    turned_bad = time.time()
    state["body"] = BAD
    deadline = time.monotonic() + interval * 5 + 10
    detected: list[float] = []
    while time.monotonic() < deadline:
        rows = db.read_conn().execute("SELECT ts FROM ledger WHERE kind = 'incident.detected'").fetchall()
        detected = [_ts(r[0]) - turned_bad for r in rows]
        if len(detected) >= services:
            break
        await asyncio.sleep(0.1)
    await runtime.stop()
    server.shutdown()
    server.server_close()
    db.close()
    detected.sort()
    budget = interval + 0.5
    p95 = detected[int(len(detected) * 0.95) - 1] if detected else float("nan")
    print(f"detection latency, {services} services polled every {interval:g} s: {len(detected)} incidents; "
          f"p50 {statistics.median(detected):.3f} s, p95 {p95:.3f} s, max {detected[-1]:.3f} s "
          f"-> p95 / budget ({budget:g} s) = {p95 / budget:.2f} (target <= 1)")


def _group(start: int, size: int, status: str = "firing") -> dict:
    alerts = [{"status": status, "labels": {"alertname": f"Rule{n % 40}", "service": f"svc-{n % 25}",
                                             "instance": f"10.0.{n // 250}.{n % 250}:8000", "severity": "warning"},
               "annotations": {"summary": f"alert {n}"}, "startsAt": "2026-11-22T13:49:44Z",
               "endsAt": "0001-01-01T00:00:00Z", "generatorURL": "", "fingerprint": f"{n:016x}"}
              for n in range(start, start + size)]
    return {"version": "4", "status": status, "receiver": "ae", "groupKey": "{}", "truncatedAlerts": 0,
            "groupLabels": {}, "commonLabels": {}, "commonAnnotations": {}, "externalURL": "http://am", "alerts": alerts}


async def ingest_rate(root: Path, total: int) -> None:
    data = init_data_dir(root / "ingest")
    config = Config(data_dir=data.path, console_notifications=False)
    db = data.open_database(config)
    tenant = db.write_sync(create_tenant("bench", "bench")).id
    _item, key = db.write_sync(create_integration(tenant, "am", "bench"))
    app = create_app(config, data, db)
    size = 50
    groups = [_group(i, size) for i in range(0, total, size)]
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://bench",
                                 headers={"Authorization": f"Bearer {key}"}, timeout=120) as client:
        for label in ("new alerts", "repeats (deduplicated)"):
            queue = iter(groups)
            started = time.perf_counter()

            async def sender() -> None:
                for group in queue:
                    reply = await client.post("/ingest/alertmanager", json=group)
                    assert reply.status_code == 200, reply.text

            await asyncio.gather(*(sender() for _ in range(8)))
            took = time.perf_counter() - started
            print(f"ingest, {label}: {total} Alertmanager alerts in {took:.2f} s = {total / took:,.0f} alerts/s "
                  f"(target >= 1,000)")
    received = db.read_conn().execute("SELECT count(*) FROM ledger WHERE kind = 'alert.received'").fetchone()[0]
    incidents = db.read_conn().execute("SELECT count(*) FROM incidents").fetchone()[0]
    print(f"  ledgered {received} alert.received entries for {total} distinct alerts; {incidents} incidents")
    db.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--services", type=int, default=100)
    ap.add_argument("--interval", type=float, default=1.0)
    ap.add_argument("--alerts", type=int, default=2000)
    ap.add_argument("--quick", action="store_true", help="20 services, 500 alerts: for CI")
    args = ap.parse_args()
    if args.quick:
        args.services, args.alerts = 20, 500
    root = Path(tempfile.mkdtemp(prefix="alertengine-bench-detection-"))
    asyncio.run(detection_latency(root, args.services, args.interval))
    asyncio.run(ingest_rate(root, args.alerts))


if __name__ == "__main__":
    main()
