"""Notification benchmark: an alert storm through routing and grouping.

    python scripts/bench/notify.py                        # 10,000 alerts in 50 groups
    python scripts/bench/notify.py --alerts 2000 --groups 20

The same Alertmanager alerts (each its own incident, spread over ``--groups`` values of a ``site``
label) are POSTed to the ingest endpoint of two fresh appliances, in process, 8 requests at a time:

1. baseline: ingest, policy and the ledger as in ``serve``, with notification routing switched off
   (the gateway's notify does nothing) — the ingest cost of these alerts;
2. routed: the tenant's routing sends every alert to the team chat with ``group_by = ["site"]``,
   so each notification is routed, ledgered and stored in the outbox, and the sender flushes one
   message per group when ``group_wait`` has passed (deliveries are counted by an in-process sender).

Reported: messages sent against alerts in (target: about one per group), and the routing cost per
alert beside the ingest cost of the same alerts (both in this run, on this machine).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from alertengine.appliance import init_data_dir  # noqa: E402
from alertengine.config import Config  # noqa: E402
from alertengine.notify.channels.base import Delivery  # noqa: E402
from alertengine.notify.channels.settings import put_channel  # noqa: E402
from alertengine.notify.routes import parse_routing, put_routing  # noqa: E402
from alertengine.tenancy.tenants import create_integration, create_tenant, set_shadow  # noqa: E402
from alertengine.tenancy.vault import SecretVault  # noqa: E402
from alertengine.web.app import create_app  # noqa: E402

ROUTING = """
[defaults]
receivers = []
[[route]]
name = "team-chat"
receivers = ["channel:telegram"]
group_by = ["site"]
group_wait = {wait}
group_interval = 300.0
"""


class Counting:
    name = "telegram"

    def __init__(self) -> None:
        self.sent: list[Any] = []

    async def send(self, message: Any) -> Delivery:
        self.sent.append(message)
        return Delivery(True, False, "ok", provider_id=str(len(self.sent)))


def storm(total: int, groups: int, size: int = 50) -> list[dict[str, Any]]:
    bodies = []
    for start in range(0, total, size):
        alerts = [{"status": "firing", "labels": {"alertname": f"Rule{n}", "service": f"svc-{n % 25}",
                                                  "site": f"site-{n % groups}", "severity": "warning"},
                   "annotations": {"summary": f"alert {n}"}, "startsAt": "2026-11-30T02:00:00Z",
                   "endsAt": "0001-01-01T00:00:00Z", "generatorURL": "", "fingerprint": f"{n:016x}"}
                  for n in range(start, min(total, start + size))]
        bodies.append({"version": "4", "status": "firing", "receiver": "ae", "groupKey": "{}", "truncatedAlerts": 0,
                       "groupLabels": {}, "commonLabels": {}, "commonAnnotations": {}, "externalURL": "http://am",
                       "alerts": alerts})
    return bodies


async def run(root: Path, name: str, bodies: list[dict[str, Any]], *, routed: bool,
              wait: float) -> tuple[float, int, int]:
    data = init_data_dir(root / name)
    config = Config(data_dir=data.path, console_notifications=False)
    db = data.open_database(config)
    tenant = db.write_sync(create_tenant("bench", "bench")).id
    db.write_sync(set_shadow(tenant, False, "bench"))
    vault = SecretVault(data.secret("vault.key"))
    db.write_sync(put_channel(tenant, "telegram", {"config": {"default_chat_id": "-100"},
                                                   "secrets": {"bot_token": "123456:" + "A" * 35}},
                              config.url_policy, vault, "bench"))
    db.write_sync(put_routing(tenant, parse_routing(ROUTING.format(wait=wait)), "bench"))
    _item, key = db.write_sync(create_integration(tenant, "am", "bench"))
    app = create_app(config, data, db)
    runtime = app.state.runtime
    chat = Counting()
    runtime.sender.resolve = lambda tenant, channel, address: chat
    if not routed:
        async def nothing(message: Any, **kw: Any) -> None:
            return None
        runtime.gateway.notify = nothing
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://bench",
                                 headers={"Authorization": f"Bearer {key}"}, timeout=300) as client:
        queue = iter(bodies)
        started = time.perf_counter()

        async def sender() -> None:
            for body in queue:
                reply = await client.post("/ingest/alertmanager", json=body)
                assert reply.status_code == 200, reply.text

        await asyncio.gather(*(sender() for _ in range(8)))
        took = time.perf_counter() - started
    if routed:   # let group_wait pass, then the sender flushes the groups
        await asyncio.sleep(wait + 0.5)
        while await runtime.sender.run_due():
            pass
    incidents = db.read_conn().execute("SELECT count(*) FROM incidents").fetchone()[0]
    await runtime.http.aclose()
    db.close()
    return took, incidents, len(chat.sent)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--alerts", type=int, default=10_000)
    ap.add_argument("--groups", type=int, default=50)
    ap.add_argument("--quick", action="store_true", help="300 alerts in 5 groups: for CI")
    args = ap.parse_args()
    if args.quick:
        args.alerts, args.groups = 300, 5
    root = Path(tempfile.mkdtemp(prefix="alertengine-bench-notify-"))
    bodies = storm(args.alerts, args.groups)
    # group_wait longer than the storm takes to ingest, so every group's alerts are in its first message
    base, base_incidents, _ = asyncio.run(run(root, "baseline", bodies, routed=False, wait=0))
    wait = max(5.0, base * 3)
    routed, incidents, messages = asyncio.run(run(root, "routed", bodies, routed=True, wait=wait))
    n = args.alerts
    print(f"alert storm: {n:,} alerts ({incidents:,} incidents) in {args.groups} groups -> {messages} message(s) "
          f"sent = {messages / n:.4f} per alert (target: about {args.groups})")
    print(f"ingest without routing (baseline): {base:.2f} s = {base / n * 1e6:,.0f} us/alert "
          f"({base_incidents:,} incidents)")
    print(f"ingest with routing and grouping:  {routed:.2f} s = {routed / n * 1e6:,.0f} us/alert")
    print(f"routing cost per alert: {(routed - base) / n * 1e6:,.0f} us = {(routed - base) / base:.2f} x the ingest "
          f"cost of the same alerts (routed / baseline = {routed / base:.2f})")


if __name__ == "__main__":
    main()
