"""``GET /metrics``: the appliance in the Prometheus text format (0.0.4), for an appliance admin or a
scrape key (``tenancy/access.py``).

One document, three sources, never a metric name twice:

* what the running parts hold (mode and its conditions, the live stream's clients, this process's
  delivery attempts, the ledger's size): read on the event loop, where they live;
* what the database holds (tokens spent, open incidents, the outbox by state, its pending depth
  and age by channel, dead letters): read in a worker thread on that thread's own read
  connection, so a slow read never stalls the loop that polls, ingests and delivers;
* the telemetry registry (``telemetry.py``): what the writer, poller, ingest, detection and sender
  observed as they ran, rendered by prometheus_client in the same worker thread.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Any

from starlette.responses import Response

from ..notify.sender import metrics_lines
from ..store import Database
from ..telemetry import CONTENT_TYPE, Telemetry, family
from .routing import Call, Registry

metrics_api = Registry()
MODES = ("NORMAL", "DEGRADED", "EMERGENCY")


@dataclass(frozen=True)
class Live:
    """The running parts' figures, copied on the event loop before the worker thread renders them."""

    mode: str
    conditions: tuple[str, ...]
    ledger_entries: int
    stream_clients: int
    stream_dropped: int
    attempts: dict[tuple[str, str], int]


@metrics_api.route("GET", "/metrics", permission="metrics.read", response={"type": "string"},
                   media_type="text/plain",
                   summary="Prometheus metrics: deliveries, outbox, polls, ingest, detection, the writer, AI tokens, "
                           "open incidents, ledger size, appliance mode (appliance admin or scrape key)",
                   tags=("system",))
async def metrics(call: Call) -> Any:
    runtime = call.state.runtime
    modes = runtime.modes.snapshot()
    live = Live(mode=modes["mode"], conditions=tuple(sorted(modes["conditions"])),
                ledger_entries=call.state.db.ledger_size, stream_clients=runtime.hub.count(),
                stream_dropped=runtime.hub.dropped_total, attempts=dict(runtime.sender.attempts))
    body = await asyncio.to_thread(document, call.state.db, runtime.telemetry, live, time.time())
    return Response(body, media_type=CONTENT_TYPE)


def document(db: Database, telemetry: Telemetry, live: Live, now: float) -> bytes:
    """The whole exposition. Runs in a worker thread: ``db.read_conn()`` is that thread's connection."""
    conn = db.read_conn()
    tenants = [t for (t,) in conn.execute("SELECT id FROM tenants ORDER BY id")]
    tokens = conn.execute("SELECT tenant, model, coalesce(sum(input_tokens), 0), coalesce(sum(output_tokens), 0) "
                          "FROM ai_exchanges GROUP BY tenant, model ORDER BY tenant, model").fetchall()
    lines = family("alertengine_ai_tokens_total", "counter", "Tokens used by the diagnosis council.",
                   (({"tenant": t, "model": m, "kind": kind}, n)
                    for t, m, inp, out in tokens for kind, n in (("input", inp), ("output", out))))
    # every tenant, at 0 when nothing is open: a series that vanishes reads as "no data", not "none open"
    open_by = dict(conn.execute("SELECT tenant, count(*) FROM incidents WHERE is_open = 1 GROUP BY tenant").fetchall())
    lines += family("alertengine_incidents_open", "gauge", "Open incidents.",
                    (({"tenant": t}, open_by.get(t, 0)) for t in sorted(set(tenants) | set(open_by))))
    lines += family("alertengine_ledger_entries", "gauge", "Entries in the ledger.", [({}, live.ledger_entries)])
    lines += family("alertengine_mode", "gauge", "The appliance mode (1 for the current one).",
                    (({"mode": m}, int(m == live.mode)) for m in MODES))
    lines += metrics_lines(live.attempts, conn, tenants, now)
    lines += family("alertengine_stream_clients", "gauge", "Live alert stream clients connected.",
                    [({}, live.stream_clients)])
    lines += family("alertengine_stream_dropped_total", "counter",
                    "Live alert stream clients dropped for falling behind.", [({}, live.stream_dropped)])
    lines += family("alertengine_condition", "gauge",
                    "A condition that makes the appliance DEGRADED (a failing channel, the AI).",
                    (({"name": c}, 1) for c in live.conditions))
    return ("\n".join(lines) + "\n").encode() + telemetry.exposition()
