"""The Starlette application factory: declared routes, JSON errors, and the appliance's lifespan."""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any, AsyncIterator

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse

from .. import __version__
from ..appliance import DataDir
from ..config import Config
from ..ledger.entry import SYSTEM_TENANT, LedgerEvent
from ..ledger.verifier import b64
from ..notify.outbox import counts as outbox_counts
from ..notify.sender import metrics_lines
from ..runtime import Runtime
from ..store import Database
from .actions import actions_api
from .alert_stream import STREAM_ROUTES, stream_api
from .alerts_api import alerts_api
from .api import api
from .bots import bots_api
from .bots_slack import slack_api
from .bots_twilio import twilio_api
from .deploys_api import deploys_api
from .incidents import incidents_api
from .ingest import ingest_api
from .notify_api import notify_api
from .openapi import openapi_document
from .subscriptions import subscriptions_api
from .routing import Call, Registry, error_response
from .throttle import FailureThrottle

system = Registry()
HEALTH = {"type": "object", "required": ["status", "mode", "version", "install_id", "ledger"],
          "properties": {"status": {"type": "string"}, "version": {"type": "string"}, "install_id": {"type": "string"},
                         "mode": {"type": "string", "enum": ["NORMAL", "DEGRADED", "EMERGENCY"]},
                         "conditions": {"type": "object"},
                         "ledger": {"type": "object", "required": ["size", "checkpoint_size", "root", "vkey"],
                                    "properties": {"size": {"type": "integer"}, "checkpoint_size": {"type": "integer"},
                                                   "root": {"type": ["string", "null"]}, "vkey": {"type": "string"}}}}}


@system.route("GET", "/healthz", public=True, summary="Liveness and ledger size", response=HEALTH, tags=("system",))
async def healthz(call: Call) -> Any:
    db: Database = call.state.db
    data: DataDir = call.state.data
    cp = db.latest
    modes = call.state.runtime.modes.snapshot()
    return {"status": "ok" if modes["mode"] != "EMERGENCY" else "failing", **modes,
            "version": __version__, "install_id": data.install_id,
            "ledger": {"size": db.ledger_size, "checkpoint_size": cp.size if cp else 0,
                       "root": b64(cp.root) if cp else None, "vkey": data.signer.vkey}}


@system.route("GET", "/openapi.json", public=True, summary="This API's OpenAPI 3.1 document",
              response={"type": "object"}, tags=("system",))
async def openapi(call: Call) -> Any:
    return call.state.openapi


REGISTRIES = (system, api, incidents_api, ingest_api, actions_api, bots_api, slack_api, twilio_api, deploys_api,
              notify_api, stream_api, alerts_api, subscriptions_api)
@system.route("GET", "/metrics", permission="metrics.read", response={"type": "string"}, media_type="text/plain",
              summary="Prometheus metrics: AI tokens per tenant, open incidents, ledger size, appliance mode",
              tags=("system",))
async def metrics(call: Call) -> Any:
    db: Database = call.state.db
    conn = db.read_conn()
    lines = ["# HELP alertengine_ai_tokens_total Tokens used by the diagnosis council.",
             "# TYPE alertengine_ai_tokens_total counter"]
    for tenant, model, inp, out in conn.execute("SELECT tenant, model, sum(input_tokens), sum(output_tokens) "
                                                "FROM ai_exchanges GROUP BY tenant, model ORDER BY tenant, model"):
        for kind, value in (("input", inp), ("output", out)):
            lines.append(f'alertengine_ai_tokens_total{{tenant="{tenant}",model="{_label(model)}",kind="{kind}"}} {value}')
    lines += ["# HELP alertengine_incidents_open Open incidents.", "# TYPE alertengine_incidents_open gauge"]
    for tenant, count in conn.execute("SELECT tenant, count(*) FROM incidents WHERE is_open = 1 GROUP BY tenant"):
        lines.append(f'alertengine_incidents_open{{tenant="{tenant}"}} {count}')
    mode = call.state.runtime.modes.snapshot()["mode"]
    lines += ["# HELP alertengine_ledger_entries Entries in the ledger.", "# TYPE alertengine_ledger_entries gauge",
              f"alertengine_ledger_entries {db.ledger_size}",
              "# HELP alertengine_mode The appliance mode (1 for the current one).", "# TYPE alertengine_mode gauge"]
    lines += [f'alertengine_mode{{mode="{m}"}} {int(m == mode)}' for m in ("NORMAL", "DEGRADED", "EMERGENCY")]
    lines += metrics_lines(call.state.runtime.sender, outbox_counts(conn))
    hub = call.state.runtime.hub
    lines += ["# HELP alertengine_stream_clients Live alert stream clients connected.",
              "# TYPE alertengine_stream_clients gauge", f"alertengine_stream_clients {hub.count()}",
              "# HELP alertengine_stream_dropped_total Live alert stream clients dropped for falling behind.",
              "# TYPE alertengine_stream_dropped_total counter", f"alertengine_stream_dropped_total {hub.dropped_total}"]
    lines += ["# HELP alertengine_condition A condition that makes the appliance DEGRADED (a failing channel, the AI).",
              "# TYPE alertengine_condition gauge"]
    lines += [f'alertengine_condition{{name="{_label(c)}"}} 1'
              for c in sorted(call.state.runtime.modes.snapshot()["conditions"])]
    return PlainTextResponse("\n".join(lines) + "\n", media_type="text/plain; version=0.0.4")


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", " ")


ENDPOINTS = [ep for registry in REGISTRIES for ep in registry.endpoints]


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, HTTPException)
    codes = {404: "not_found", 405: "method_not_allowed", 400: "bad_request"}
    return error_response(exc.status_code, codes.get(exc.status_code, "error"), str(exc.detail))


def create_app(config: Config, data: DataDir, db: Database) -> Starlette:
    """Build the app around an open database. Its lifespan ledgers the stop and closes the
    database (with a final signed checkpoint) on shutdown."""

    runtime = Runtime(config, db, data)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        if app.state.run_background:
            runtime.start()
        try:
            yield
        finally:
            await runtime.stop()
            if app.state.background:
                await asyncio.gather(*app.state.background, return_exceptions=True)
            with contextlib.suppress(Exception):
                await db.append(LedgerEvent(kind="appliance.stopped", tenant=SYSTEM_TENANT, actor="system",
                                            reason="clean shutdown"))
            db.close()

    routes = [route for registry in REGISTRIES for route in registry.routes()] + STREAM_ROUTES
    app = Starlette(routes=routes, exception_handlers={HTTPException: _http_error}, lifespan=lifespan)
    app.state.config = config
    app.state.data = data
    app.state.db = db
    app.state.vault = runtime.vault
    app.state.url_policy = config.url_policy
    app.state.auth_throttle = FailureThrottle()
    app.state.key_touched = {}
    app.state.background = set()
    app.state.openapi = openapi_document(ENDPOINTS)
    app.state.runtime = runtime
    app.state.clock = time.time    # request freshness (Slack signatures); tests may set their own
    app.state.detector = runtime.detector
    app.state.gateway = runtime.gateway
    app.state.orchestrator = runtime.orchestrator
    app.state.run_background = True  # poller and timers; tests driving the app in process may turn them off
    return app
