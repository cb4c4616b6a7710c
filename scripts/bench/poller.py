"""Poller benchmark: 2,000 health URLs served by a fake fleet in another process, lateness and CPU measured.

    python scripts/bench/poller.py                       # 2,000 services, 5 s interval, 30 s
    python scripts/bench/poller.py --seconds 20
    python scripts/bench/poller.py --service-ms 50       # each service takes 50 ms to answer
    python scripts/bench/poller.py --hanging 200         # 200 services accept and never answer (timeouts)
    python scripts/bench/poller.py --no-keepalive        # a new TCP connection per poll (many distinct hosts)

The fleet is one asyncio HTTP/1.1 keep-alive server in a child process answering
``GET /svc/<n>/health`` for n < --services with a small hosted-format JSON body. The poller runs in
this process with its default client (unless --no-keepalive). Reported: polls done against the
number expected (services × seconds / interval), lateness of each poll's start against its
schedule (p50/p99/max; target p99 ≤ 250 ms), and this process's CPU time as a fraction of one core.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import statistics
import sys
import time
from collections import Counter
from multiprocessing.connection import Connection
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from alertengine.signals import HealthReading  # noqa: E402
from alertengine.signals.poller import Poller, PollTarget  # noqa: E402

P99_TARGET_MS = 250.0


def _response(n: int) -> bytes:
    body = json.dumps({
        "status": "ok", "service_name": f"svc-{n}", "instance_id": "bench",
        "metrics": {"overall_p95_ms": 30.0 + n % 17, "error_rate": 0.0, "anomaly_score": 0.4, "sample_size": 60},
        "alerts": [], "health_score": {"score": 99.0, "status": "healthy", "trend": "stable"},
        "timestamp": 1795356439,
    }).encode()
    return (b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(body)) + body


_NOT_FOUND = b"HTTP/1.1 404 Not Found\r\nContent-Type: text/plain\r\nContent-Length: 9\r\n\r\nnot found"


def _serve_fleet(services: int, service_ms: float, hanging: int, conn: Connection) -> None:
    """Child process: serve the fleet on 127.0.0.1 until the parent closes its end of ``conn``.

    The first ``hanging`` services accept the request and never answer (until the poller hangs up)."""
    responses = {f"/svc/{n}/health".encode(): _response(n) for n in range(hanging, services)}
    silent = {f"/svc/{n}/health".encode() for n in range(hanging)}

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")   # GET only: no request bodies
                target = head.split(b" ", 2)[1]
                if target in silent:
                    await reader.read()                     # until the poller gives up and closes
                    break
                if service_ms:
                    await asyncio.sleep(service_ms / 1000.0)
                writer.write(responses.get(target, _NOT_FOUND))
                await writer.drain()
                if b"\r\nconnection: close" in head.lower():
                    break
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError, IndexError):
            pass
        except asyncio.CancelledError:                      # the fleet is shutting down
            pass
        finally:
            writer.close()

    async def main() -> None:
        server = await asyncio.start_server(handle, "127.0.0.1", 0, backlog=4096)
        conn.send(server.sockets[0].getsockname()[1])
        loop = asyncio.get_running_loop()
        try:
            await loop.run_in_executor(None, conn.recv_bytes)
        except EOFError:                                    # the parent closed its end: done
            pass
        server.close()

    asyncio.run(main())


def _percentile(sorted_values: list[float], q: float) -> float:
    if not sorted_values:
        return float("nan")
    index = min(len(sorted_values) - 1, max(0, round(q * (len(sorted_values) - 1))))
    return sorted_values[index]


async def bench(services: int, interval: float, seconds: float, port: int, keepalive: bool,
                concurrency: int) -> dict[str, object]:
    targets = [PollTarget(f"bench/{n}", f"http://127.0.0.1:{port}/svc/{n}/health", interval)
               for n in range(services)]
    statuses: Counter[str] = Counter()

    async def on_reading(target: PollTarget, reading: HealthReading, lateness: float) -> None:
        statuses[f"{reading.outcome}/{reading.status}"] += 1

    client = None
    if not keepalive:
        client = httpx.AsyncClient(limits=httpx.Limits(max_connections=concurrency, max_keepalive_connections=0),
                                   follow_redirects=False, trust_env=False)
    poller = Poller(lambda: targets, on_reading, concurrency=concurrency, client=client)
    cpu0, wall0 = time.process_time(), time.perf_counter()
    task = asyncio.create_task(poller.run())
    await asyncio.sleep(seconds)
    await poller.stop()
    await task
    cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
    if client is not None:
        await client.aclose()

    lateness_ms = sorted(x * 1000.0 for x in poller.stats.lateness)
    return {
        "services": services, "interval_s": interval, "seconds": round(wall, 2),
        "keepalive": keepalive, "concurrency": concurrency,
        "polls_done": poller.stats.polls, "polls_expected": round(services * seconds / interval),
        "lateness_p50_ms": round(_percentile(lateness_ms, 0.50), 2),
        "lateness_p99_ms": round(_percentile(lateness_ms, 0.99), 2),
        "lateness_max_ms": round(lateness_ms[-1], 2) if lateness_ms else None,
        "lateness_mean_ms": round(statistics.fmean(lateness_ms), 2) if lateness_ms else None,
        "cpu_seconds": round(cpu, 2), "cpu_fraction_of_one_core": round(cpu / wall, 3),
        "readings": dict(statuses), "callback_errors": poller.stats.callback_errors,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--services", type=int, default=2000)
    parser.add_argument("--interval", type=float, default=5.0)
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--concurrency", type=int, default=200)
    parser.add_argument("--service-ms", type=float, default=0.0, help="simulated service response time")
    parser.add_argument("--hanging", type=int, default=0, help="how many services never answer (poll timeouts)")
    parser.add_argument("--no-keepalive", action="store_true", help="open a new connection for every poll")
    args = parser.parse_args()

    ctx = multiprocessing.get_context("spawn")
    parent_end, child_end = ctx.Pipe()
    fleet = ctx.Process(target=_serve_fleet, args=(args.services, args.service_ms, args.hanging, child_end),
                        daemon=True)
    fleet.start()
    child_end.close()
    try:
        port = parent_end.recv()
        result = asyncio.run(bench(args.services, args.interval, args.seconds, port, not args.no_keepalive,
                                   args.concurrency))
    finally:
        parent_end.close()
        fleet.join(5)
        if fleet.is_alive():
            fleet.terminate()
            fleet.join(5)

    width = max(len(k) for k in result)
    for key, value in result.items():
        print(f"{key:<{width}}  {value}")
    p99 = result["lateness_p99_ms"]
    ok = isinstance(p99, float) and p99 <= P99_TARGET_MS
    print(f"{'p99 target':<{width}}  ≤ {P99_TARGET_MS:g} ms: {'met' if ok else 'MISSED'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
