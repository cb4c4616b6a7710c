"""Commit context: deploy records by API and by a GitHub-compatible push webhook."""

from __future__ import annotations

import json
from typing import Any

from ..diagnosis.deploys import (
    DEPLOY_SCHEMA,
    list_deploys,
    parse_github_push,
    record_deploy,
    verify_github_signature,
)
from ..notify.channels.settings import channel_secrets
from ..signals.ingest import PayloadError
from .body import ApiError, decode_json, read_body
from .routing import Call, Registry
from .throttle import failed_auth

deploys_api = Registry()
MAX_PUSH = 5 * 1024 * 1024  # GitHub caps webhook payloads at 25 MB; pushes of interest are far smaller
DEPLOY = {"type": "object", "required": ["id", "tenant", "sha", "message", "files", "risky_paths", "time", "source"],
          "properties": {"id": {"type": "string"}, "tenant": {"type": "string"}, "service": {"type": ["string", "null"]},
                         "sha": {"type": "string"}, "message": {"type": "string"}, "author": {"type": ["string", "null"]},
                         "files": {"type": "array", "items": {"type": "string"}},
                         "risky_paths": {"type": "array", "items": {"type": "string"}},
                         "additions": {"type": ["integer", "null"]}, "deletions": {"type": ["integer", "null"]},
                         "time": {"type": "string"}, "source": {"type": "string"}}}


@deploys_api.route("POST", "/api/tenants/{tenant}/deploys", permission="service.write", request=DEPLOY_SCHEMA,
                   response=DEPLOY, status=201, tags=("deploys",),
                   summary="Record a deploy (commit context for diagnosis); the same sha again is a no-op")
async def record_deploy_endpoint(call: Call) -> Any:
    deploy = await call.state.db.write(record_deploy(call.tenant, call.body, call.actor))
    if not deploy.duplicate:
        await call.state.detector.on_new_deploy(call.tenant, deploy.service)  # a material change: diagnose again
    return deploy.public()


@deploys_api.route("GET", "/api/tenants/{tenant}/deploys", permission="service.read", tags=("deploys",),
                   summary="Recent deploys, newest first",
                   response={"type": "object", "required": ["deploys"],
                             "properties": {"deploys": {"type": "array", "items": DEPLOY}}})
async def list_deploys_endpoint(call: Call) -> Any:
    return {"deploys": [d.public() for d in (await call.state.db.read(list_deploys, call.tenant))]}


@deploys_api.route("POST", "/ingest/github/{tenant}", public=True, tags=("deploys",), errors=(400, 401, 404, 413, 429),
                   summary="GitHub push webhook (authenticated by X-Hub-Signature-256 with the tenant's github "
                           "webhook_secret); each commit becomes a deploy record",
                   response={"type": "object", "required": ["recorded"],
                             "properties": {"recorded": {"type": "integer"}}})
async def github_push(call: Call) -> Any:
    tenant = call.params["tenant"]
    secrets = await call.state.db.read(channel_secrets, tenant, "github", call.state.vault) if len(tenant) <= 64 else {}
    raw = await read_body(call.request, MAX_PUSH)
    if not verify_github_signature(secrets.get("webhook_secret", ""), call.request.headers.get("x-hub-signature-256"), raw):
        await failed_auth(call.request, "GitHub signature")
        raise ApiError(401, "unauthenticated", "missing or wrong X-Hub-Signature-256")
    if call.request.headers.get("x-github-event", "push") == "ping":
        return {"recorded": 0}
    row = await call.state.db.read(lambda conn: conn.execute(
        "SELECT config FROM channels WHERE tenant = ? AND kind = 'github'", (tenant,)).fetchone())
    service = json.loads(row[0]).get("service") if row else None
    try:
        bodies = parse_github_push(decode_json(raw), service)
    except (PayloadError, ValueError) as exc:
        raise ApiError(400, "bad_payload", getattr(exc, "message", str(exc)), getattr(exc, "field", None)) from None
    for body in bodies:
        deploy = await call.state.db.write(record_deploy(tenant, body, "ingest:github", source="github"))
        if not deploy.duplicate:
            await call.state.detector.on_new_deploy(tenant, deploy.service)
    return {"recorded": len(bodies)}
