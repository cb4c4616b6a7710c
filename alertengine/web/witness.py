"""The witness's HTTP service (C2SP tlog-witness): ``POST /add-checkpoint`` and ``GET /healthz``.

A separate, small application run by ``alertengine witness serve`` on the auditor's host; it shares
nothing with the appliance's app but the body limit."""

from __future__ import annotations

import asyncio

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from ..ledger.witness import MAX_BODY, Witness
from .body import ApiError, read_body


def witness_app(witness: Witness) -> Starlette:
    async def add_checkpoint(request: Request) -> Response:
        try:
            body = await read_body(request, MAX_BODY)
        except ApiError as exc:
            return PlainTextResponse(exc.message + "\n", status_code=exc.status)
        answer = await asyncio.to_thread(witness.add_checkpoint, body)   # file I/O and fsync: off the loop
        return Response(answer.body, status_code=answer.status, media_type=answer.content_type)

    async def healthz(request: Request) -> Response:
        return JSONResponse({"status": "ok", "witness": witness.signer.vkey, "logs": sorted(witness.logs)})

    return Starlette(routes=[Route("/add-checkpoint", add_checkpoint, methods=["POST"]),
                             Route("/healthz", healthz, methods=["GET"])])
