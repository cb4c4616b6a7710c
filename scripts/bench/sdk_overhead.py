"""SDK overhead benchmark: µs per request of a bare Starlette app, with instrument(app), and with starlette-exporter.

    python scripts/bench/sdk_overhead.py                   # 20,000 requests × 7 rounds per app
    python scripts/bench/sdk_overhead.py --requests 50000 --rounds 9

Everything runs in this process: each request is one direct ASGI call (a fresh scope, a receive that
hands over an empty body, a send that drops the messages), so no socket or server is measured, only
the app and its middleware. The three apps are identical (one JSON route with a path parameter, so
both middlewares must find the route template) and are measured in interleaved rounds; the figure per
app is the median round. Reported: µs/request for each, the µs each middleware adds, and the ratio
exporter-added / SDK-added (the goal: the SDK adds less than starlette-exporter, a ratio above 1).
Needs starlette-exporter (``pip install starlette-exporter``).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Callable

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from starlette.applications import Starlette  # noqa: E402
from starlette.requests import Request  # noqa: E402
from starlette.responses import JSONResponse  # noqa: E402
from starlette.routing import Route  # noqa: E402

from alertengine.sdk import instrument  # noqa: E402


async def item(request: Request) -> JSONResponse:
    return JSONResponse({"id": request.path_params["item_id"], "ok": True})


def make_app() -> Starlette:
    return Starlette(routes=[Route("/items/{item_id}", item)])


def build_apps() -> dict[str, Any]:
    bare = make_app()
    ours = make_app()
    instrument(ours, service_name="bench")
    apps: dict[str, Any] = {"bare": bare, "alertengine": ours}
    try:
        from starlette_exporter import PrometheusMiddleware
    except ImportError:
        print("starlette-exporter is not installed: measuring bare and alertengine only", file=sys.stderr)
        return apps
    exporter = make_app()
    exporter.add_middleware(PrometheusMiddleware, app_name="bench")
    apps["starlette-exporter"] = exporter
    return apps


def scope_for(n: int) -> dict[str, Any]:
    path = f"/items/{n % 100}"
    return {"type": "http", "asgi": {"version": "3.0", "spec_version": "2.3"}, "http_version": "1.1",
            "method": "GET", "scheme": "http", "path": path, "raw_path": path.encode(), "root_path": "",
            "query_string": b"", "headers": [(b"host", b"bench"), (b"accept", b"*/*")],
            "client": ("127.0.0.1", 50000), "server": ("127.0.0.1", 8000)}


async def run_round(app: Any, requests: int) -> float:
    """µs per request over ``requests`` sequential ASGI calls."""
    scopes = [scope_for(n) for n in range(requests)]
    request_message = {"type": "http.request", "body": b"", "more_body": False}
    statuses: list[int] = []

    async def receive() -> dict[str, Any]:
        return request_message

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            statuses.append(message["status"])

    gc.collect()
    started = time.perf_counter()
    for scope in scopes:
        await app(scope, receive, send)
    elapsed = time.perf_counter() - started
    if statuses.count(200) != requests:
        raise SystemExit(f"unexpected statuses: {set(statuses)}")
    return elapsed / requests * 1e6


async def bench(requests: int, rounds: int, warmup: int) -> dict[str, list[float]]:
    apps = build_apps()
    for app in apps.values():                     # build middleware stacks, warm caches
        await run_round(app, warmup)
    figures: dict[str, list[float]] = {name: [] for name in apps}
    for _ in range(rounds):
        for name, app in apps.items():
            figures[name].append(await run_round(app, requests))
    return figures


def report(figures: dict[str, list[float]], out: Callable[[str], None] = print) -> None:
    med = {name: statistics.median(values) for name, values in figures.items()}
    out(f"{'app':<20} {'µs/request (median)':>20} {'min':>8} {'max':>8}")
    for name, values in figures.items():
        out(f"{name:<20} {med[name]:>20.2f} {min(values):>8.2f} {max(values):>8.2f}")
    ours = med["alertengine"] - med["bare"]
    out(f"alertengine adds        {ours:8.2f} µs/request")
    if "starlette-exporter" in med:
        theirs = med["starlette-exporter"] - med["bare"]
        out(f"starlette-exporter adds {theirs:8.2f} µs/request")
        ratio = theirs / ours if ours > 0 else float("inf")
        verdict = "met" if theirs > ours else "NOT met"
        out(f"ratio exporter/alertengine added cost: {ratio:.2f}x (goal: alertengine adds less: {verdict})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=20_000, help="requests per round per app")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--warmup", type=int, default=2_000)
    parser.add_argument("--quick", action="store_true", help="3 rounds of 2,000: for CI")
    args = parser.parse_args()
    if args.quick:
        args.requests, args.rounds, args.warmup = 2_000, 3, 200
    print(f"{args.rounds} rounds × {args.requests} in-process ASGI requests per app, Python {sys.version.split()[0]}")
    report(asyncio.run(bench(args.requests, args.rounds, args.warmup)))


if __name__ == "__main__":
    main()
