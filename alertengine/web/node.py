"""One node of several sharing a PostgreSQL database (``database_url``): follower, then leader.

Every node runs ``alertengine serve`` against the same database, with a copy of the same data
directory (the same keys). The leader lease (``store/lease.py``) names one leader at a time:

- **A follower** runs none of the appliance's parts. Every request but ``/healthz`` is forwarded,
  as it came, to the leader's ``node_url`` (read from the lease), and the leader's answer returned:
  ingest, approvals, API calls and reads alike, so that a client may talk to any node and always
  sees what the leader sees (a follower keeps no state of its own that could lag). With no leader
  (during a failover) it answers 503 with ``Retry-After``: senders such as Alertmanager retry.
  The live alert stream (WebSocket) is served by the leader only; a follower closes it with 1013
  ("try again later") so the client reconnects, through the load balancer, to the leader.
- **On taking the lease** the node becomes the appliance: it ledgers ``leader.acquired`` (who led
  before, with which token), builds the application and starts its parts (poller, timers, outbox
  sender, escalation chains), which resume from the database: stored deadlines, queued deliveries
  and their idempotency keys are rows, not memory. The writer reloads the ledger head (Merkle
  frontier) from the database before its first append.
- **A leader that loses the lease** (another node took it after this one paused, or the database
  could not be reached to renew it) stops serving and exits with status 75 (EX_TEMPFAIL): what it
  holds in memory may be stale once another node has written, and the fence has refused its writes
  from the moment it lost the lease anyway. Its supervisor (systemd ``Restart=always``) starts it
  again, as a follower.

A clean shutdown of the leader (SIGTERM) ledgers ``appliance.stopped``, signs a last checkpoint
and releases the lease, so another node takes over at once rather than when the lease runs out.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from typing import Any, Awaitable, Callable

import httpx

from .. import __version__
from ..appliance import DataDir, startup_events
from ..config import Config
from ..ledger.entry import SYSTEM_TENANT, LedgerEvent
from ..store import Database
from ..store.lease import Holder, Lease, LeaseKeeper
from ..telemetry import Telemetry
from .ingest import MAX_INGEST_BODY

log = logging.getLogger("alertengine.node")

EXIT_LOST_LEASE = 75    # EX_TEMPFAIL: start me again (as a follower)
# the largest body any endpoint takes (Alertmanager groups); the leader applies each endpoint's own limit
FORWARD_MAX = MAX_INGEST_BODY
FORWARDED_BY = "x-alertengine-forwarded-by"
# hop-by-hop headers (RFC 9110 7.6.1) and those the forwarding sets itself
_DROP = {"connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te", "trailer",
         "transfer-encoding", "upgrade", "host", "content-length"}

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]


class NodeApp:
    """The ASGI application of a node: a forwarding follower until it takes the lease, then the
    appliance (``create_app``)."""

    def __init__(self, config: Config, data: DataDir, db: Database, lease: Lease,
                 telemetry: Telemetry | None = None, *, stop: Callable[[], None] | None = None,
                 echo: Callable[[str], None] = print) -> None:
        self.config = config
        self.data = data
        self.db = db
        self.lease = lease
        self.telemetry = telemetry
        self.stop = stop or (lambda: None)   # asks the server to shut down (set by serve)
        self.echo = echo
        self.role = "follower"
        self.inner: Any = None
        self.lost: str | None = None
        self._inner_life: Any = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._client = httpx.AsyncClient(timeout=httpx.Timeout(30.0, connect=3.0), follow_redirects=False)
        self._leader: tuple[float, Holder | None] = (0.0, None)
        self._promoting: asyncio.Task[None] | None = None
        self.keeper = LeaseKeeper(lease, on_acquired=self._acquired, on_lost=self._lost)

    # --- the lease, on its thread ---------------------------------------------------------------
    def _acquired(self) -> None:
        loop = self._loop
        if loop is not None:
            loop.call_soon_threadsafe(self._start_promotion)

    def _lost(self, reason: str) -> None:
        self.lost = reason
        loop = self._loop
        if loop is not None:
            loop.call_soon_threadsafe(self.stop)

    def _start_promotion(self) -> None:
        self._promoting = asyncio.get_running_loop().create_task(self._promote(), name="promote")

    async def _promote(self) -> None:
        from ..tenancy.tenants import ensure_admin_key
        from .app import create_app
        lease = self.lease
        before = lease.previous
        try:
            await self.db.append(*startup_events(self.data), LedgerEvent(
                kind="leader.acquired", tenant=SYSTEM_TENANT, actor="system", decision="leader",
                reason=f"node {lease.node} took the leader lease (token {lease.token})" +
                       (f" from {before.node} (token {before.token})" if before is not None and before.node else ""),
                data={"node": lease.node, "url": lease.url, "token": lease.token,
                      "previous_node": before.node if before is not None and before.node else None,
                      "previous_token": before.token if before is not None else None}))
            admin_secret = await self.db.write(ensure_admin_key())
            app = create_app(self.config, self.data, self.db, self.telemetry)
            app.state.node = {"role": "leader", "node": lease.node, "token": lease.token}
            self._inner_life = app.router.lifespan_context(app)
            await self._inner_life.__aenter__()
        except Exception as exc:  # noqa: BLE001 - a node that cannot lead must not pretend to
            log.critical("could not take over as leader: %s", exc, exc_info=True)
            self.lost = f"could not take over as leader: {exc}"
            self.stop()
            return
        self.inner = app
        self.role = "leader"
        self.echo(f"  node {lease.node} leads (lease token {lease.token}); ledger entries: {self.db.ledger_size}")
        if admin_secret:
            self.echo(f"  appliance admin API key (shown once, store it now): {admin_secret}")
        log.warning("node %s is the leader now (token %s)", lease.node, lease.token)

    # --- ASGI -----------------------------------------------------------------------------------
    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
        elif self.inner is not None:
            await self.inner(scope, receive, send)
        elif scope["type"] == "websocket":
            await receive()
            await send({"type": "websocket.close", "code": 1013, "reason": "this node follows: connect to the leader"})
        elif scope["path"] == "/healthz":
            await self._health(send)
        else:
            await self._forward(scope, receive, send)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                self._loop = asyncio.get_running_loop()
                self.keeper.start()
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self._shutdown()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _shutdown(self) -> None:
        if self._promoting is not None and not self._promoting.done():
            await asyncio.gather(self._promoting, return_exceptions=True)
        # the lease is kept while the leader stops: its last writes (appliance.stopped, a final
        # checkpoint) are still under it; released after, so another node takes over at once
        await asyncio.to_thread(self.keeper.stop, release=False)
        if self._inner_life is not None:
            try:
                await self._inner_life.__aexit__(None, None, None)
            except Exception:  # noqa: BLE001 - stopping goes on
                log.exception("stopping the appliance failed")
        else:
            self.db.close()
        if self.lost is None:
            await asyncio.to_thread(self.lease.release)
        await self._client.aclose()

    # --- a follower -----------------------------------------------------------------------------
    async def leader(self) -> Holder | None:
        """The live lease holder (read at most twice a second), or None during a failover."""
        at, holder = self._leader
        now = time.monotonic()
        if now - at > 0.5:
            try:
                holder = await asyncio.to_thread(self.lease.holder)
            except Exception as exc:  # noqa: BLE001 - the database is unreachable: no leader known
                log.warning("cannot read the leader lease: %s", exc)
                holder = None
            self._leader = (now, holder)
        return holder if holder is not None and holder.live and holder.node != self.lease.node else None

    async def _health(self, send: Send) -> None:
        holder = await self.leader()
        body = {"status": "ok", "role": "follower", "node": self.lease.node, "version": __version__,
                "install_id": self.data.install_id,
                "leader": {"node": holder.node, "url": holder.url, "token": holder.token} if holder else None,
                "ledger": {"size": await asyncio.to_thread(self._ledger_size), "vkey": self.data.signer.vkey}}
        await _respond(send, 200, body)

    def _ledger_size(self) -> int | None:
        try:
            row = self.db.read_conn().execute("SELECT max(seq) FROM ledger").fetchone()
        except Exception:  # noqa: BLE001 - shown as unknown
            return None
        return row[0] + 1 if row[0] is not None else 0

    async def _forward(self, scope: Scope, receive: Receive, send: Send) -> None:
        headers = [(k.decode("latin-1").lower(), v.decode("latin-1")) for k, v in scope.get("headers", [])]
        if any(k == FORWARDED_BY for k, _ in headers):
            await _respond(send, 503, {"error": "forwarding_loop", "detail": "a forwarded request reached a node "
                                       "that does not lead; retry"}, retry_after=1)
            return
        body = bytearray()
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            body += message.get("body", b"")
            if len(body) > FORWARD_MAX:
                await _respond(send, 413, {"error": "too_large", "detail": f"the body exceeds {FORWARD_MAX} bytes"})
                return
            if not message.get("more_body"):
                break
        holder = await self.leader()
        if holder is None:
            await _respond(send, 503, {"error": "no_leader", "detail": "no node leads right now (a failover takes a "
                                       "few seconds); retry"}, retry_after=2)
            return
        client = scope.get("client") or ("", 0)
        listed = {t.strip() for k, v in headers if k == "connection" for t in v.lower().split(",")}   # also hop-by-hop
        out = [(k, v) for k, v in headers if k not in _DROP and k not in listed and k != "x-forwarded-for"]
        forwarded_for = ", ".join([v for k, v in headers if k == "x-forwarded-for"] + [client[0]])
        out += [("x-forwarded-for", forwarded_for), (FORWARDED_BY, self.lease.node)]
        if not any(k == "x-forwarded-proto" for k, _ in out):
            out.append(("x-forwarded-proto", scope.get("scheme", "http")))
        url = holder.url + scope.get("raw_path", scope["path"].encode()).decode("latin-1")
        if scope.get("query_string"):
            url += "?" + scope["query_string"].decode("latin-1")
        try:
            answer = await self._client.request(scope["method"], url, headers=out, content=bytes(body))
        except httpx.HTTPError as exc:
            self._leader = (0.0, None)   # read the lease again next time
            await _respond(send, 503, {"error": "leader_unreachable",
                                       "detail": f"the leader {holder.node} did not answer ({type(exc).__name__}); "
                                                 "retry"}, retry_after=2)
            return
        reply = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in answer.headers.multi_items()
                 if k.lower() not in _DROP and k.lower() != "content-encoding"]
        reply.append((b"content-length", str(len(answer.content)).encode()))
        await send({"type": "http.response.start", "status": answer.status_code, "headers": reply})
        await send({"type": "http.response.body", "body": answer.content})


async def _respond(send: Send, status: int, body: dict[str, Any], *, retry_after: int | None = None) -> None:
    data = json.dumps(body).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode())]
    if retry_after is not None:
        headers.append((b"retry-after", str(retry_after).encode()))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": data})
