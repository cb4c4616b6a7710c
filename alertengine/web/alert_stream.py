"""The live alert stream, ``/api/alerts/stream``: a WebSocket, or Server-Sent Events for clients
without one. Authenticated by the same API key (``Authorization: Bearer``; a browser's WebSocket,
which cannot set headers, offers the subprotocols ``bearer`` and the key instead), scoped to the
key's tenant (an appliance-admin key uses ``/api/tenants/{tenant}/alerts/stream``; a WebSocket may
also say ``?tenant=``).

First an ``initial_alerts`` message with the unresolved alerts, then an ``alerts`` message with
the alerts that changed, as they change (test alerts included, marked ``"test": true``). A client
that falls ``stream_buffer`` messages behind is dropped (WebSocket close code 1013, "try again
later"), so it never slows the appliance or the other clients."""

from __future__ import annotations

import asyncio
import json
import re
from typing import Any, AsyncIterator

from starlette.responses import StreamingResponse
from starlette.routing import WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

from ..alerts import store
from ..alerts.stream import Hub, Subscriber
from ..tenancy.access import AccessError, authenticate, authorize
from ..tenancy.tenants import get_tenant
from ..errors import NotFoundError
from .alerts_api import both
from .routing import Call, Registry
from .throttle import TooManyFailuresError, failed_auth

SSE_KEEPALIVE = 15.0     # seconds between comments that keep idle proxies from closing the stream
SEND_TIMEOUT = 10.0      # a WebSocket send that takes longer than this: the client is gone or stuck
_KEY = re.compile(r"^ae_[0-9a-f]{12}_[A-Za-z0-9_-]{43}$")
stream_api = Registry()   # before the alert API's /api/alerts/{alert_id}, which "stream" would match


def _initial(db: Any, tenant: str) -> dict[str, Any]:
    return {"type": "initial_alerts", "data": store.active_alerts(db.read_conn(), tenant)}


@both("GET", "/api/alerts/stream", stream_api, permission="incident.read", tags=("alerts",), errors=(400,),
      media_type="text/event-stream", response={"type": "string"},
      summary="The live alert stream as Server-Sent Events (the same path is a WebSocket)")
async def alert_stream_sse(call: Call) -> Any:
    tenant = call.own_tenant()
    hub: Hub = call.state.runtime.hub
    sub = hub.subscribe(tenant)
    first = await asyncio.to_thread(_initial, call.state.db, tenant)

    async def events() -> AsyncIterator[str]:
        try:
            yield _sse(first)
            while True:
                try:
                    message = await asyncio.wait_for(sub.next(), SSE_KEEPALIVE)
                except asyncio.TimeoutError:
                    yield ": keepalive\n\n"
                    continue
                if message is None:
                    yield _sse({"type": "dropped", "data": "this client fell too far behind; reconnect"})
                    return
                yield _sse(message)
        finally:
            hub.unsubscribe(sub)
    return StreamingResponse(events(), media_type="text/event-stream",
                             headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})


def _sse(message: dict[str, Any]) -> str:
    return f"event: {message['type']}\ndata: {json.dumps(message, separators=(',', ':'))}\n\n"


async def alert_stream_ws(websocket: WebSocket) -> None:
    state = websocket.app.state
    offered = [p.strip() for p in websocket.headers.get("sec-websocket-protocol", "").split(",") if p.strip()]
    header = websocket.headers.get("authorization")
    subprotocol = None
    if header is None and len(offered) == 2 and offered[0] == "bearer" and _KEY.match(offered[1]):
        header, subprotocol = f"Bearer {offered[1]}", "bearer"
    try:
        try:
            principal = await state.db.read(authenticate, header)
        except AccessError:
            await failed_auth(websocket, "API key")   # type: ignore[arg-type]
            raise
        tenant = websocket.path_params.get("tenant") or websocket.query_params.get("tenant") or principal.tenant
        if tenant is None:
            raise AccessError(400, "tenant_required", "an appliance-admin key names the tenant: ?tenant=<id>")
        authorize(principal, "incident.read", tenant)
        await state.db.read(get_tenant, tenant)
    except (AccessError, TooManyFailuresError, NotFoundError) as exc:
        await websocket.close(code=1008, reason=_why(exc))
        return
    hub: Hub = state.runtime.hub
    sub = hub.subscribe(tenant)     # before the initial state is read: no change falls between the two
    try:
        await websocket.accept(subprotocol=subprotocol)
        await websocket.send_text(json.dumps(await asyncio.to_thread(_initial, state.db, tenant)))
        await _pump(websocket, sub)
    except (WebSocketDisconnect, asyncio.TimeoutError, RuntimeError, OSError):
        pass
    finally:
        hub.unsubscribe(sub)


async def _pump(websocket: WebSocket, sub: Subscriber) -> None:
    """Send what the hub queues until the client leaves or is dropped; read (and ignore) what the
    client sends, which is also how its leaving is noticed."""
    async def reader() -> None:
        while True:
            message = await websocket.receive()
            if message["type"] == "websocket.disconnect":
                return

    listening = asyncio.ensure_future(reader())
    try:
        while not listening.done():
            nxt = asyncio.ensure_future(sub.next())
            try:
                done, _ = await asyncio.wait({nxt, listening}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                if not nxt.done():
                    nxt.cancel()
            if nxt not in done:
                return
            message = nxt.result()
            if message is None:    # dropped: too slow
                await asyncio.wait_for(websocket.close(code=1013, reason="too slow: fell behind the alert stream"),
                                       SEND_TIMEOUT)
                return
            await asyncio.wait_for(websocket.send_text(json.dumps(message)), SEND_TIMEOUT)
    finally:
        listening.cancel()


def _why(exc: BaseException) -> str:
    if isinstance(exc, AccessError):
        return exc.message[:120]
    if isinstance(exc, TooManyFailuresError):
        return "too many failed authentications from your address; retry later"
    return "tenant not found"


STREAM_ROUTES = [WebSocketRoute("/api/alerts/stream", alert_stream_ws),
                 WebSocketRoute("/api/tenants/{tenant}/alerts/stream", alert_stream_ws)]
