"""Poller benchmark: the poller's CPU per poll, lateness and the API's responsiveness, against two baselines.

    python scripts/bench/poller.py                       # 2,000 services, 5 s interval, 30 s per phase
    python scripts/bench/poller.py --quick               # 200 services at 1 s, a few seconds per phase (CI)
    python scripts/bench/poller.py --service-ms 50       # each service takes 50 ms to answer
    python scripts/bench/poller.py --hanging 200         # 200 services accept and never answer (timeouts)
    python scripts/bench/poller.py --no-keepalive        # a new TCP connection per poll (many distinct hosts)
    python scripts/bench/poller.py --phases poller       # only the poller (also: floor, httpx)

Processes: a fake fleet (one asyncio HTTP/1.1 keep-alive server answering ``GET /svc/<n>/health``
with a small hosted-format body), an API prober, and this one. This process runs, on one event
loop, a bare starlette app under uvicorn answering ``/healthz`` (the API stand-in) and, one phase
after the other, with the same targets and the same schedule (random start, interval ± 10 %):

* ``poller``: ``alertengine.signals.poller.Poller`` as ``serve`` runs it, with telemetry;
* ``floor``: a bare asyncio loop, one task per service sleeping until it is due, the simplest
  client (asyncio streams, kept alive, the body read by its Content-Length, not parsed): what
  fetching the same URLs at the same pace costs with nothing else done;
* ``httpx``: the same bare loop with the poller's previous client, ``httpx.AsyncClient`` as it was
  configured (200 connections, 16 kept idle).

Each phase warms up for one interval, then measures for ``--seconds``: polls done against polls
due, this process's CPU (user + system) per poll and in cores, each poll's lateness against its
schedule (p50/p99/max) and the prober's ``/healthz`` round trips (20 a second, p50/p99/max). Then
how long ``stop()`` took. Ratios: the poller's CPU per poll over each baseline's.

Targets (the poller, full size): ≤ 0.5 ms of CPU per poll (so 2,000 services at 5 s take ≤ 0.2
core), lateness p99 ≤ 250 ms, ≥ 99 % of due polls done, stop() within 1 s. A full run exits 1 when
one is missed; ``--quick`` runs (sizes too small for the targets to mean much) exit 0 whenever
every phase polled and every answer read as expected.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import random
import socket
import sys
import time
from collections import Counter
from dataclasses import dataclass, field, replace
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any, Awaitable, Callable

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from alertengine.signals import HealthReading  # noqa: E402
from alertengine.signals.healthclient import HealthClient  # noqa: E402
from alertengine.signals.poller import Poller, PollTarget  # noqa: E402
from alertengine.telemetry import Telemetry  # noqa: E402

CPU_PER_POLL_TARGET_MS = 0.5
P99_TARGET_MS = 250.0
DONE_TARGET = 0.99
STOP_TARGET_S = 1.0
JITTER = 0.1
PROBE_EVERY = 0.05                    # seconds between the prober's /healthz requests


# --------------------------------------------------------------------------------------------
# The fleet and the prober (child processes)
# --------------------------------------------------------------------------------------------

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


def _probe_api(conn: Connection) -> None:
    """Child process: on ("probe", port) GET /healthz every PROBE_EVERY s on one kept-alive connection
    until the next message arrives, then send back the round trips (seconds); EOF ends it."""
    import http.client

    while True:
        try:
            command = conn.recv()
        except EOFError:
            return
        port = command[1]
        client = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        times: list[float] = []
        while not conn.poll(PROBE_EVERY):
            started = time.perf_counter()
            try:
                client.request("GET", "/healthz")
                client.getresponse().read()
            except (OSError, http.client.HTTPException):
                client.close()
                client = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
                continue
            times.append(time.perf_counter() - started)
        conn.recv()
        client.close()
        conn.send(times)


# --------------------------------------------------------------------------------------------
# The API stand-in, in this process
# --------------------------------------------------------------------------------------------

async def _start_api() -> tuple[Any, asyncio.Task[None], int]:
    import uvicorn
    from starlette.applications import Starlette
    from starlette.responses import PlainTextResponse
    from starlette.routing import Route

    async def healthz(request: Any) -> PlainTextResponse:
        return PlainTextResponse("ok")

    app = Starlette(routes=[Route("/healthz", healthz)])
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(128)
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off",
                                           log_config=None))
    task = asyncio.create_task(server.serve(sockets=[sock]))
    while not server.started:
        await asyncio.sleep(0.01)
    return server, task, sock.getsockname()[1]


# --------------------------------------------------------------------------------------------
# Phases
# --------------------------------------------------------------------------------------------

@dataclass
class Tally:
    """What a phase's polls report, whatever does the polling."""

    polls: int = 0
    lateness: list[float] = field(default_factory=list)     # seconds, in completion order
    readings: Counter[str] = field(default_factory=Counter)


@dataclass(frozen=True)
class Settings:
    services: int
    interval: float
    warmup: float
    seconds: float
    concurrency: int
    keepalive: bool
    timeout: float
    port: int


async def _poller_phase(s: Settings, urls: list[str], tally: Tally) -> Callable[[], Awaitable[None]]:
    targets = [PollTarget(f"bench/{n}", url, s.interval) for n, url in enumerate(urls)]

    async def on_reading(target: PollTarget, reading: HealthReading, lateness: float) -> None:
        tally.polls += 1
        tally.lateness.append(lateness)
        tally.readings[f"{reading.outcome}/{reading.status}"] += 1

    client = None if s.keepalive else HealthClient(max_idle=0)
    poller = Poller(lambda: targets, on_reading, concurrency=s.concurrency, timeout=s.timeout, jitter=JITTER,
                    client=client, telemetry=Telemetry())
    task = asyncio.create_task(poller.run())

    async def stop() -> None:
        await poller.stop()
        await task
        if client is not None:
            client.close()
    return stop


def _bare_loop(s: Settings, urls: list[str], tally: Tally,
               fetch: Callable[[str], Awaitable[str]]) -> list[asyncio.Task[None]]:
    """One task per service: sleep until due, fetch (at most ``concurrency`` at once), schedule the next."""
    loop = asyncio.get_running_loop()
    rng = random.Random()
    slots = asyncio.Semaphore(s.concurrency)

    async def service(url: str) -> None:
        due = loop.time() + rng.random() * s.interval
        while True:
            await asyncio.sleep(max(0.0, due - loop.time()))
            async with slots:
                lateness = max(0.0, loop.time() - due)
                try:
                    async with asyncio.timeout(s.timeout):
                        outcome = await fetch(url)
                except TimeoutError:
                    outcome = "timeout/None"
                except Exception as exc:  # noqa: BLE001 — counted, never fatal
                    outcome = f"failed/{type(exc).__name__}"
            tally.polls += 1
            tally.lateness.append(lateness)
            tally.readings[outcome] += 1
            due = max(due + s.interval * (1.0 + rng.uniform(-JITTER, JITTER)), loop.time())

    return [asyncio.create_task(service(url)) for url in urls]


async def _floor_phase(s: Settings, urls: list[str], tally: Tally) -> Callable[[], Awaitable[None]]:
    pool: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
    request = b"GET %s HTTP/1.1\r\nHost: 127.0.0.1\r\n%s\r\n"
    close = b"" if s.keepalive else b"Connection: close\r\n"

    async def fetch(url: str) -> str:
        reader, writer = pool.pop() if pool else await asyncio.open_connection("127.0.0.1", s.port)
        try:
            writer.write(request % (url.partition(f":{s.port}")[2].encode(), close))
            head = await reader.readuntil(b"\r\n\r\n")
            length = int(head.lower().split(b"content-length:", 1)[1].split(b"\r\n", 1)[0])
            await reader.readexactly(length)
        except BaseException:
            writer.close()
            raise
        if s.keepalive:
            pool.append((reader, writer))
        else:
            writer.close()
        return "answered/-"

    tasks = _bare_loop(s, urls, tally, fetch)

    async def stop() -> None:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for _, writer in pool:
            writer.close()
    return stop


async def _httpx_phase(s: Settings, urls: list[str], tally: Tally) -> Callable[[], Awaitable[None]]:
    import httpx

    # the poller's client before this change, as it was configured
    client = httpx.AsyncClient(
        limits=httpx.Limits(max_connections=s.concurrency, max_keepalive_connections=16 if s.keepalive else 0,
                            keepalive_expiry=30.0),
        timeout=httpx.Timeout(s.timeout), follow_redirects=False, trust_env=False,
        headers={"Accept-Encoding": "identity"})

    async def fetch(url: str) -> str:
        async with client.stream("GET", url) as response:
            async for _ in response.aiter_raw():
                pass
        return f"answered/{response.status_code}"

    tasks = _bare_loop(s, urls, tally, fetch)

    async def stop() -> None:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await client.aclose()
    return stop


async def _idle_phase(s: Settings, urls: list[str], tally: Tally) -> Callable[[], Awaitable[None]]:
    async def stop() -> None:
        pass
    return stop


PHASES = {"idle": _idle_phase, "poller": _poller_phase, "floor": _floor_phase, "httpx": _httpx_phase}


def _percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


async def _phase(name: str, s: Settings, prober: Connection, api_port: int, idle_cores: float) -> dict[str, Any]:
    urls = [f"http://127.0.0.1:{s.port}/svc/{n}/health" for n in range(s.services)]
    tally = Tally()
    stop = await PHASES[name](s, urls, tally)
    if name != "idle":
        await asyncio.sleep(s.warmup)
    polls0, late0 = tally.polls, len(tally.lateness)
    prober.send(("probe", api_port))
    cpu0, wall0 = os.times(), time.perf_counter()
    await asyncio.sleep(s.seconds)
    cpu1, wall = os.times(), time.perf_counter() - wall0
    polls, lateness = tally.polls - polls0, tally.lateness[late0:]
    prober.send(("stop",))
    api = await asyncio.get_running_loop().run_in_executor(None, prober.recv)
    stopping = time.perf_counter()
    await asyncio.wait_for(stop(), 30)
    stop_s = time.perf_counter() - stopping
    cpu = (cpu1.user - cpu0.user) + (cpu1.system - cpu0.system)
    ms, nan = 1000.0, float("nan")
    return {
        "polls done / due": f"{polls} / {round(s.services * wall / s.interval)}" if name != "idle" else "-",
        "done_ratio": polls / (s.services * wall / s.interval),
        "cores used": cpu / wall,
        "cpu ms per poll": cpu / polls * ms if polls else nan,
        "  of which system": (cpu1.system - cpu0.system) / polls * ms if polls else nan,
        "  net of idle": (cpu - idle_cores * wall) / polls * ms if polls else nan,
        "lateness p50 ms": _percentile(lateness, 0.50) * ms,
        "lateness p99 ms": _percentile(lateness, 0.99) * ms,
        "lateness max ms": max(lateness, default=float("nan")) * ms,
        "api /healthz p50 ms": _percentile(api, 0.50) * ms,
        "api /healthz p99 ms": _percentile(api, 0.99) * ms,
        "api /healthz max ms": max(api, default=float("nan")) * ms,
        "api probes": len(api),
        "stop s": stop_s,
        "readings": dict(tally.readings),
    }


async def bench(s: Settings, phases: list[str], prober: Connection) -> dict[str, dict[str, Any]]:
    server, serving, api_port = await _start_api()
    try:
        # first the API and its prober alone: what every phase pays besides polling
        idle = await _phase("idle", replace(s, seconds=min(s.seconds, 5.0)), prober, api_port, 0.0)
        results = {"idle": idle}
        for name in phases:
            results[name] = await _phase(name, s, prober, api_port, idle["cores used"])
        return results
    finally:
        server.should_exit = True
        await serving


# --------------------------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------------------------

def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.3f}" if abs(value) < 10 else f"{value:.1f}"
    return str(value)


def report(s: Settings, results: dict[str, dict[str, Any]], hanging: int) -> list[str]:
    """Print the table and the ratios; return the targets the poller missed."""
    print(f"{s.services} services, every {s.interval:g} s (±{JITTER:.0%}), {s.seconds:g} s measured after "
          f"{s.warmup:g} s of warm-up per phase; concurrency {s.concurrency}, timeout {s.timeout:g} s, "
          f"keep-alive {'on' if s.keepalive else 'off'}, {hanging} hanging; {os.cpu_count()} cores")
    names = list(results)
    rows = [k for k in next(iter(results.values())) if k not in ("readings", "done_ratio")]
    width = max(len(r) for r in rows)
    print(f"{'':<{width}}  " + "  ".join(f"{n:>14}" for n in names))
    for row in rows:
        print(f"{row:<{width}}  " + "  ".join(f"{_cell(results[n][row]):>14}" for n in names))
    for name in names:
        if name != "idle":
            print(f"readings {name}: {results[name]['readings']}")
    missed: list[str] = []
    if "poller" in results:
        mine = results["poller"]
        for base in names:
            if base not in ("poller", "idle"):
                raw = mine["cpu ms per poll"] / results[base]["cpu ms per poll"]
                net = mine["  net of idle"] / results[base]["  net of idle"]
                print(f"ratio poller / {base}, cpu per poll: {raw:.3f} (net of idle: {net:.3f})")
        # the poller's own work: what it costs on top of the API and the prober alone
        checks = [
            ("cpu per poll (net of idle)", mine["  net of idle"] <= CPU_PER_POLL_TARGET_MS,
             f"≤ {CPU_PER_POLL_TARGET_MS} ms"),
            ("lateness p99", mine["lateness p99 ms"] <= P99_TARGET_MS, f"≤ {P99_TARGET_MS:g} ms"),
            ("polls done", mine["done_ratio"] >= DONE_TARGET, f"≥ {DONE_TARGET:.0%} of due"),
            ("stop", mine["stop s"] <= STOP_TARGET_S, f"≤ {STOP_TARGET_S:g} s"),
        ]
        for what, ok, target in checks:
            print(f"target {what} {target}: {'met' if ok else 'MISSED'}")
            if not ok:
                missed.append(what)
    return missed


def _sane(results: dict[str, dict[str, Any]], hanging: int) -> bool:
    """Every phase polled, and (with no hanging services) every poll was answered."""
    for name, result in results.items():
        if name == "idle":
            continue
        readings: dict[str, int] = result["readings"]
        if not readings or (hanging == 0 and any(not k.startswith("answered/") for k in readings)):
            print(f"FAILED: phase {name} read {readings}")
            return False
    return True


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small and short: 200 services at 1 s, ~15 s in all")
    parser.add_argument("--services", type=int, default=None)
    parser.add_argument("--interval", type=float, default=None)
    parser.add_argument("--seconds", type=float, default=None, help="measured seconds per phase")
    parser.add_argument("--concurrency", type=int, default=200)
    parser.add_argument("--timeout", type=float, default=3.0)
    parser.add_argument("--service-ms", type=float, default=0.0, help="simulated service response time")
    parser.add_argument("--hanging", type=int, default=0, help="how many services never answer (poll timeouts)")
    parser.add_argument("--no-keepalive", action="store_true", help="open a new connection for every poll")
    parser.add_argument("--phases", default="poller,floor,httpx",
                        help="comma-separated, of poller, floor, httpx (an idle phase always runs first)")
    args = parser.parse_args()
    phases = [p.strip() for p in args.phases.split(",") if p.strip()]
    if not phases or any(p not in PHASES or p == "idle" for p in phases):
        parser.error("--phases takes some of poller, floor, httpx")
    services = args.services or (200 if args.quick else 2000)
    interval = args.interval or (1.0 if args.quick else 5.0)
    seconds = args.seconds or (2.0 if args.quick else 30.0)

    ctx = multiprocessing.get_context("spawn")
    fleet_end, fleet_child = ctx.Pipe()
    probe_end, probe_child = ctx.Pipe()
    fleet = ctx.Process(target=_serve_fleet, args=(services, args.service_ms, args.hanging, fleet_child), daemon=True)
    prober = ctx.Process(target=_probe_api, args=(probe_child,), daemon=True)
    fleet.start()
    prober.start()
    fleet_child.close()
    probe_child.close()
    try:
        settings = Settings(services, interval, min(interval, 5.0), seconds, args.concurrency,
                            not args.no_keepalive, args.timeout, fleet_end.recv())
        results = asyncio.run(bench(settings, phases, probe_end))
    finally:
        fleet_end.close()
        probe_end.close()
        for child in (fleet, prober):
            child.join(5)
            if child.is_alive():
                child.terminate()
                child.join(5)
    missed = report(settings, results, args.hanging)
    if not _sane(results, args.hanging):
        return 1
    if args.quick:
        return 0                      # too small for the targets to mean much; it ran and read right
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
