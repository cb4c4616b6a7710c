"""Detection to the first delivered notification, with every service polled.

    python scripts/bench/delivery.py               # 2,000 services at 5 s, 20 of them turn bad
    python scripts/bench/delivery.py --quick       # 100 services at 1 s, for CI

The appliance runs as in ``serve`` (poller, detector, router, outbox sender, writer) in this
process, against ``--services`` health URLs on a local HTTP server and a fake Telegram Bot API on
127.0.0.1 (the tests' fake: the real wire format). The tenant is live and routes everything to its
Telegram chat. After every service has been polled healthy, ``--bad`` of them turn bad at a known
instant; reported: from that instant to each one's first ``sendMessage`` reaching the fake, p50 and
p95, against the budget of one poll interval + 0.5 s (the baseline: the poll interval alone is the
least any poller can do).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from alertengine.appliance import init_data_dir  # noqa: E402
from alertengine.config import Config  # noqa: E402
from alertengine.incidents.policy import put_policy  # noqa: E402
from alertengine.runtime import Runtime  # noqa: E402
from alertengine.tenancy.services import create_service, normalise  # noqa: E402
from alertengine.tenancy.tenants import create_key, create_tenant, set_shadow  # noqa: E402
from alertengine.tenancy.vault import SecretVault  # noqa: E402
from alertengine.web.app import create_app  # noqa: E402
from tests.fakes.telegram import FakeTelegram  # noqa: E402

GOOD = json.dumps({"sdk": "alertengine", "status": "ok", "window_seconds": 60,
                   "metrics": {"overall_p95_ms": 100.0, "error_rate": 0.0, "anomaly_score": 0.1, "sample_size": 300},
                   "health_score": {"score": 99.0, "status": "ok", "trend": "stable"}}).encode()
BAD = json.dumps({"sdk": "alertengine", "status": "critical", "window_seconds": 60,
                  "metrics": {"overall_p95_ms": 9000.0, "error_rate": 0.3, "anomaly_score": 5.0, "sample_size": 300},
                  "health_score": {"score": 20.0, "status": "critical", "trend": "degrading"}}).encode()
CHAT = "-1005550002"


class StampedTelegram(FakeTelegram):
    """The fake, noting when each message arrived."""

    def __init__(self) -> None:
        super().__init__()
        self.arrived: list[tuple[float, str]] = []

    def handle(self, token, method, params):  # type: ignore[no-untyped-def]
        if method.lower() == "sendmessage":
            self.arrived.append((time.time(), str(params.get("text", ""))))
        return super().handle(token, method, params)


def fleet(bad: set[int]) -> tuple[ThreadingHTTPServer, dict[str, bool]]:
    state = {"bad": False}

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:  # noqa: N802
            n = int(self.path.split("/")[2])
            body = BAD if state["bad"] and n in bad else GOOD
            self.send_response(200)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            return None

    class Quiet(ThreadingHTTPServer):
        daemon_threads = True

        def handle_error(self, request, client_address):  # type: ignore[no-untyped-def]
            return None   # a poller closing its kept-alive connection at shutdown is not news

    server = Quiet(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, state


async def run(root: Path, services: int, bad_count: int, interval: float) -> int:
    data = init_data_dir(root / "data")
    config = Config(data_dir=data.path, console_notifications=False)
    db = data.open_database(config)
    bad = set(range(0, services, max(1, services // bad_count)))
    server, state = fleet(bad)
    url = f"http://127.0.0.1:{server.server_address[1]}"
    telegram = StampedTelegram()
    telegram.start()
    tenant = db.write_sync(create_tenant("bench", "bench")).id
    db.write_sync(set_shadow(tenant, False, "bench"))
    db.write_sync(put_policy(tenant, "[detection]\nbreaches_to_open = 1\n", "bench"))
    _k, admin = db.write_sync(create_key(tenant, "admin", "bench", "bench"))
    vault = SecretVault(data.secret("vault.key"))
    for n in range(services):
        spec = normalise({"name": f"svc-{n}", "health_url": f"{url}/svc/{n}/health", "poll_interval": interval},
                         config.url_policy)
        db.write_sync(create_service(tenant, f"svc-{n}", spec, vault, "bench"))
    app = create_app(config, data, db)
    app.state.run_background = True   # the poller, the sender and the timers, as in serve
    async with app.router.lifespan_context(app):
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://bench",
                                     headers={"authorization": f"Bearer {admin}"}) as api:
            r = await api.put(f"/api/tenants/{tenant}/notifications/channels/telegram", json={
                "config": {"api_base_url": telegram.base_url, "default_chat_id": CHAT},
                "secrets": {"bot_token": telegram.token}})
            assert r.status_code == 200, r.text
            r = await api.put(f"/api/tenants/{tenant}/routes",
                              json={"toml": '[defaults]\nreceivers = ["channel:telegram"]\n'})
            assert r.status_code == 200, r.text
        await asyncio.sleep(interval * 2 + 1)   # every service polled healthy at least once
        telegram.arrived.clear()
        turned_bad = time.time()
        state["bad"] = True
        deadline = time.monotonic() + interval * 6 + 20
        firsts: dict[str, float] = {}
        while time.monotonic() < deadline and len(firsts) < len(bad):
            for at, text in list(telegram.arrived):
                for n in bad:
                    if f"svc-{n}" in text.replace(":", " ").split() or f"svc-{n}:" in text:
                        firsts.setdefault(f"svc-{n}", at - turned_bad)
            await asyncio.sleep(0.1)
        kinds = db.read_conn().execute("SELECT kind, count(*) FROM ledger GROUP BY kind").fetchall()
    telegram.close()
    server.shutdown()
    got = sorted(firsts.values())
    budget = interval + 0.5
    if not got:
        print(f"detection to delivery: no notification arrived for {len(bad)} services turned bad; "
              f"{len(telegram.arrived)} messages; ledger {kinds}")
        return 1
    p95 = got[max(0, int(len(got) * 0.95) - 1)]
    print(f"detection to first delivered notification, {services:,} services polled every {interval:g} s, "
          f"{len(bad)} turned bad: {len(got)} delivered; p50 {statistics.median(got):.2f} s, p95 {p95:.2f} s, "
          f"max {got[-1]:.2f} s; p95 / budget ({budget:g} s) = {p95 / budget:.2f} (goal <= 1); "
          f"p95 / poll interval (the least possible) = {p95 / interval:.2f}")
    return 0 if len(got) == len(bad) and p95 <= budget else 1


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--services", type=int, default=2000)
    ap.add_argument("--bad", type=int, default=20)
    ap.add_argument("--interval", type=float, default=5.0)
    ap.add_argument("--quick", action="store_true", help="100 services at 1 s: for CI")
    args = ap.parse_args()
    if args.quick:
        args.services, args.bad, args.interval = 100, 5, 1.0
    with tempfile.TemporaryDirectory() as tmp:
        code = asyncio.run(run(Path(tmp), args.services, args.bad, args.interval))
    return 0 if args.quick else code


if __name__ == "__main__":
    raise SystemExit(main())
