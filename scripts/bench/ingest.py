"""Ingest benchmark: Alertmanager groups over HTTP into a real ``alertengine serve``, side by side
with Debian's ``prometheus-alertmanager`` receiving the same alerts.

    python scripts/bench/ingest.py                 # 20,000 alerts in 50-alert groups, 8 senders
    python scripts/bench/ingest.py --quick         # 2,000 alerts, for CI

For each system, 8 concurrent senders POST the alerts in 50-alert requests, first all new, then
the very same requests again (all repeats). Reported: alerts/s, and CPU seconds per 1,000 alerts
of the receiving process (from /proc: user + system), and AlertEngine's CPU per alert as a ratio
of Alertmanager's (goal: <= 4x; rates: >= 3,000 new alerts/s, >= 10,000 repeats/s). AlertEngine
judges each alert by policy, deduplicates it, ledgers it durably and opens incidents (200 of them
here); Alertmanager stores and groups them. Without the Alertmanager binary only AlertEngine runs.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from alertengine.appliance import init_data_dir  # noqa: E402
from alertengine.config import Config  # noqa: E402
from alertengine.tenancy.tenants import create_integration, create_tenant  # noqa: E402

TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def alert(n: int) -> dict[str, Any]:
    return {"labels": {"alertname": f"Rule{n % 40}", "service": f"svc-{n % 25}",
                       "instance": f"10.0.{n // 250}.{n % 250}:8000", "severity": "warning"},
            "annotations": {"summary": f"alert {n}"}, "startsAt": "2026-11-22T13:49:44Z",
            "endsAt": "0001-01-01T00:00:00Z", "generatorURL": "http://prometheus/graph"}


def webhook_group(start: int, size: int) -> dict[str, Any]:
    """What Alertmanager's webhook receiver POSTs (version 4)."""
    return {"version": "4", "status": "firing", "receiver": "ae", "groupKey": "{}", "truncatedAlerts": 0,
            "groupLabels": {}, "commonLabels": {}, "commonAnnotations": {}, "externalURL": "http://am",
            "alerts": [{"status": "firing", **alert(n), "fingerprint": f"{n:016x}"}
                       for n in range(start, start + size)]}


def free_port() -> int:
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_up(url: str, proc: subprocess.Popen) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"{proc.args[0]} exited early")
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise SystemExit(f"{url} did not answer")


async def send(url: str, bodies: list[Any], headers: dict[str, str], pid: int, per_request: int) -> tuple[float, float]:
    """POST every body with 8 senders; return (alerts/s, CPU seconds of ``pid`` per 1,000 alerts)."""
    queue = iter(bodies)
    limits = httpx.Limits(max_connections=8, max_keepalive_connections=8)
    async with httpx.AsyncClient(timeout=120, limits=limits, headers=headers) as client:
        async def sender() -> None:
            for body in queue:
                reply = await client.post(url, json=body)
                assert reply.status_code in (200, 202), reply.text[:300]
        cpu0, t0 = cpu_seconds(pid), time.perf_counter()
        await asyncio.gather(*(sender() for _ in range(8)))
        took, cpu = time.perf_counter() - t0, cpu_seconds(pid) - cpu0
    total = len(bodies) * per_request
    return total / took, cpu * 1000 / total


def alertengine(root: Path, total: int, size: int, database_url: str = "") -> dict[str, tuple[float, float]]:
    """``database_url``: the node runs on that PostgreSQL database (scripts/bench/postgresql.py)."""
    data = init_data_dir(root / "ae")
    db = data.open_database(Config(data_dir=data.path, database_url=database_url))
    try:
        tenant = db.write_sync(create_tenant("bench", "bench")).id
        _item, key = db.write_sync(create_integration(tenant, "am", "bench"))
    finally:
        db.close()
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("ALERTENGINE_")}
    env["PYTHONPATH"] = str(ROOT)
    if database_url:
        env.update(ALERTENGINE_DATABASE_URL=database_url, ALERTENGINE_NODE_NAME="bench")
    proc = subprocess.Popen([sys.executable, "-m", "alertengine", "serve", "--data-dir", str(data.path),
                             "--port", str(port)], cwd=root, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        wait_up(f"http://127.0.0.1:{port}/healthz", proc)
        if database_url:   # a node on PostgreSQL serves once it holds the leader lease
            deadline = time.monotonic() + 60
            while httpx.get(f"http://127.0.0.1:{port}/healthz").json().get("role") != "leader":
                if time.monotonic() > deadline:
                    raise SystemExit("the node did not take the leader lease")
                time.sleep(0.2)
        bodies = [webhook_group(i, size) for i in range(0, total, size)]
        url = f"http://127.0.0.1:{port}/ingest/alertmanager/{key}"
        new = asyncio.run(send(url, bodies, {}, proc.pid, size))
        repeats = asyncio.run(send(url, bodies, {}, proc.pid, size))
        return {"new": new, "repeats": repeats}
    finally:
        proc.terminate()
        proc.wait(30)


def alertmanager(root: Path, binary: str, total: int, size: int) -> dict[str, tuple[float, float]]:
    conf = root / "am.yml"
    conf.write_text("route:\n  receiver: none\n  group_by: [alertname, service]\nreceivers:\n  - name: none\n")
    port = free_port()
    proc = subprocess.Popen([binary, f"--config.file={conf}", f"--storage.path={root / 'am-data'}",
                             f"--web.listen-address=127.0.0.1:{port}", "--cluster.listen-address="],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_up(f"http://127.0.0.1:{port}/-/ready", proc)
        bodies = [[alert(n) for n in range(i, i + size)] for i in range(0, total, size)]
        url = f"http://127.0.0.1:{port}/api/v2/alerts"
        new = asyncio.run(send(url, bodies, {}, proc.pid, size))
        repeats = asyncio.run(send(url, bodies, {}, proc.pid, size))
        return {"new": new, "repeats": repeats}
    finally:
        proc.terminate()
        proc.wait(30)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--alerts", type=int, default=20_000)
    ap.add_argument("--group", type=int, default=50, help="alerts per request")
    ap.add_argument("--quick", action="store_true", help="2,000 alerts: for CI")
    args = ap.parse_args()
    if args.quick:
        args.alerts = 2_000
    binary = shutil.which("prometheus-alertmanager") or shutil.which("alertmanager")
    with tempfile.TemporaryDirectory() as tmp:
        ae = alertengine(Path(tmp), args.alerts, args.group)
        am = alertmanager(Path(tmp), binary, args.alerts, args.group) if binary else None
    for label, goal in (("new", 3_000), ("repeats", 10_000)):
        rate, cpu = ae[label]
        line = f"ingest, {label}: AlertEngine {rate:,.0f} alerts/s (goal >= {goal:,}), {cpu:.3f} CPU s per 1,000"
        if am is not None:
            am_rate, am_cpu = am[label]
            line += (f"; Alertmanager {am_rate:,.0f} alerts/s, {am_cpu:.3f} CPU s per 1,000; "
                     f"CPU ratio {cpu / am_cpu if am_cpu else float('inf'):.1f}x (goal <= 4x)")
        else:
            line += "; Alertmanager not installed: no side-by-side figure"
        print(line)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
