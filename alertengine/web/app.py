"""The Starlette application factory: declared routes, JSON errors, and the appliance's lifespan."""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any, AsyncIterator

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse

from .. import __version__
from ..appliance import DataDir
from ..config import Config
from ..ledger.entry import SYSTEM_TENANT, LedgerEvent
from ..ledger.verifier import b64
from ..runtime import Runtime
from ..store import Database
from ..telemetry import Telemetry
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
from .metrics_api import metrics_api
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
                         "role": {"type": "string", "enum": ["leader", "follower"]},
                         "node": {"type": "string"}, "token": {"type": "integer"},
                         "ledger": {"type": "object", "required": ["size", "checkpoint_size", "root", "vkey"],
                                    "properties": {"size": {"type": "integer"}, "checkpoint_size": {"type": "integer"},
                                                   "root": {"type": ["string", "null"]}, "vkey": {"type": "string"}}}}}


@system.route("GET", "/healthz", public=True, summary="Liveness and ledger size", response=HEALTH, tags=("system",))
async def healthz(call: Call) -> Any:
    db: Database = call.state.db
    data: DataDir = call.state.data
    cp = db.latest
    modes = call.state.runtime.modes.snapshot()
    node = getattr(call.state, "node", None)   # {role, node, token} on a node sharing PostgreSQL (web/node.py)
    return {"status": "ok" if modes["mode"] != "EMERGENCY" else "failing", **modes, **(node or {}),
            "version": __version__, "install_id": data.install_id,
            "ledger": {"size": db.ledger_size, "checkpoint_size": cp.size if cp else 0,
                       "root": b64(cp.root) if cp else None, "vkey": data.signer.vkey}}


@system.route("GET", "/openapi.json", public=True, summary="This API's OpenAPI 3.1 document",
              response={"type": "object"}, tags=("system",))
async def openapi(call: Call) -> Any:
    return call.state.openapi


REGISTRIES = (system, api, incidents_api, ingest_api, actions_api, bots_api, slack_api, twilio_api, deploys_api,
              notify_api, stream_api, alerts_api, subscriptions_api, metrics_api)


ENDPOINTS = [ep for registry in REGISTRIES for ep in registry.endpoints]


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, HTTPException)
    codes = {404: "not_found", 405: "method_not_allowed", 400: "bad_request"}
    return error_response(exc.status_code, codes.get(exc.status_code, "error"), str(exc.detail))


def create_app(config: Config, data: DataDir, db: Database, telemetry: Telemetry | None = None) -> Starlette:
    """Build the app around an open database. Its lifespan ledgers the stop and closes the
    database (with a final signed checkpoint) on shutdown. ``telemetry`` is the appliance's one
    (``serve`` made it before the database); without one the app makes its own."""

    runtime = Runtime(config, db, data, telemetry)

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
    app.state.telemetry = runtime.telemetry   # for endpoints that observe (ingest)
    app.state.clock = time.time    # request freshness (Slack signatures); tests may set their own
    app.state.detector = runtime.detector
    app.state.gateway = runtime.gateway
    app.state.orchestrator = runtime.orchestrator
    app.state.run_background = True  # poller and timers; tests driving the app in process may turn them off
    return app
