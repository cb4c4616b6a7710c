"""The Starlette application factory: routes, JSON errors, and the appliance's lifespan."""

from __future__ import annotations

import contextlib
from typing import AsyncIterator

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from .. import __version__
from ..appliance import DataDir
from ..config import Config
from ..ledger.entry import SYSTEM_TENANT, LedgerEvent
from ..ledger.verifier import b64
from ..store import Database


def error_response(status: int, code: str, message: str, field: str | None = None) -> JSONResponse:
    """The one error shape every endpoint answers with."""
    body: dict = {"code": code, "message": message}
    if field is not None:
        body["field"] = field
    return JSONResponse({"error": body}, status_code=status)


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, HTTPException)
    codes = {404: "not_found", 405: "method_not_allowed", 400: "bad_request"}
    return error_response(exc.status_code, codes.get(exc.status_code, "error"), str(exc.detail))


async def healthz(request: Request) -> JSONResponse:
    db: Database = request.app.state.db
    data: DataDir = request.app.state.data
    cp = db.latest
    return JSONResponse({
        "status": "ok",
        "version": __version__,
        "install_id": data.install_id,
        "ledger": {"size": db.ledger_size, "checkpoint_size": cp.size if cp else 0,
                   "root": b64(cp.root) if cp else None, "vkey": data.signer.vkey},
    })


def create_app(config: Config, data: DataDir, db: Database) -> Starlette:
    """Build the app around an open database. Its lifespan ledgers start and stop and closes the
    database (with a final signed checkpoint) on shutdown."""

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        try:
            yield
        finally:
            with contextlib.suppress(Exception):
                await db.append(LedgerEvent(kind="appliance.stopped", tenant=SYSTEM_TENANT, actor="system",
                                            reason="clean shutdown"))
            db.close()

    app = Starlette(routes=[Route("/healthz", healthz, methods=["GET"])],
                    exception_handlers={HTTPException: _http_error}, lifespan=lifespan)
    app.state.config = config
    app.state.data = data
    app.state.db = db
    return app
