"""The tenancy API: tenants, shadow mode, API keys, services and notification channel settings."""

from __future__ import annotations

import asyncio
import json
import shutil
import tempfile
from pathlib import Path
from typing import Any

from starlette.background import BackgroundTask
from starlette.responses import FileResponse

from ..errors import ExportError
from ..ledger.entry import is_rfc3339, normal_ts
from ..notify.channels.settings import (
    CHANNEL_INPUT,
    CHANNEL_OUTPUT,
    KINDS,
    list_channels,
    put_channel,
)
from ..store import Where
from ..store.export import export_bundle
from ..tenancy.access import TENANT_ROLES
from ..tenancy.services import (
    SERVICE_INPUT,
    SERVICE_OUTPUT,
    create_service,
    get_service,
    list_services,
    normalise,
    remove_service,
    rotate_secret,
    update_service,
)
from ..tenancy.tenants import (
    NAME_SCHEMA,
    create_integration,
    create_key,
    create_tenant,
    get_tenant,
    list_integrations,
    list_keys,
    list_tenants,
    revoke_integration,
    revoke_key,
    set_shadow,
)
from .routing import ApiError, Call, Registry

api = Registry()

TENANT = {"type": "object", "required": ["id", "name", "shadow", "created"],
          "properties": {"id": {"type": "string"}, "name": {"type": "string"}, "shadow": {"type": "boolean"},
                         "created": {"type": "string"}}}
SHADOW = {"type": "object", "required": ["tenant", "shadow"],
          "properties": {"tenant": {"type": "string"}, "shadow": {"type": "boolean"}}}
API_KEY = {"type": "object", "required": ["id", "tenant", "role", "name", "created", "created_by", "revoked", "last_used"],
           "properties": {"id": {"type": "string"}, "tenant": {"type": ["string", "null"]},
                          "role": {"type": "string"}, "name": {"type": "string"}, "created": {"type": "string"},
                          "created_by": {"type": "string"}, "revoked": {"type": ["string", "null"]},
                          "last_used": {"type": ["string", "null"]}}}
NEW_KEY = {"type": "object", "required": ["key", "secret"],
           "properties": {"key": API_KEY, "secret": {"type": "string", "description": "shown once: store it now"}}}


def _list_of(name: str, item: dict) -> dict:
    return {"type": "object", "required": [name], "properties": {name: {"type": "array", "items": item}}}


# --- tenants ------------------------------------------------------------------------------------

@api.route("POST", "/api/tenants", summary="Create a tenant (it starts in shadow mode)", permission="tenant.create",
           request={"type": "object", "additionalProperties": False, "required": ["name"],
                    "properties": {"name": NAME_SCHEMA}},
           response=TENANT, status=201, tags=("tenants",), errors=(409,))
async def create_tenant_endpoint(call: Call) -> Any:
    return (await call.state.db.write(create_tenant(call.body["name"], call.actor))).public()


@api.route("GET", "/api/tenants", summary="List tenants", permission="tenant.list",
           response=_list_of("tenants", TENANT), tags=("tenants",))
async def list_tenants_endpoint(call: Call) -> Any:
    return {"tenants": [t.public() for t in (await call.state.db.read(list_tenants))]}


@api.route("GET", "/api/tenants/{tenant}", summary="Show a tenant", permission="tenant.read",
           response=TENANT, tags=("tenants",))
async def show_tenant_endpoint(call: Call) -> Any:
    return (await call.state.db.read(get_tenant, call.tenant)).public()


@api.route("GET", "/tenant/{tenant}/shadow", summary="Is the tenant in shadow mode?", permission="tenant.shadow.read",
           response=SHADOW, tags=("shadow mode",))
async def get_shadow_endpoint(call: Call) -> Any:
    return {"tenant": call.tenant, "shadow": (await call.state.db.read(get_tenant, call.tenant)).shadow}


@api.route("POST", "/tenant/{tenant}/shadow", summary="Enter shadow mode: everything runs, nothing leaves",
           permission="tenant.shadow.write", response=SHADOW, tags=("shadow mode",))
async def enable_shadow_endpoint(call: Call) -> Any:
    tenant = await call.state.db.write(set_shadow(call.tenant, True, call.actor))
    return {"tenant": tenant.id, "shadow": tenant.shadow}


@api.route("DELETE", "/tenant/{tenant}/shadow", summary="Leave shadow mode: go live", permission="tenant.shadow.write",
           response=SHADOW, tags=("shadow mode",))
async def disable_shadow_endpoint(call: Call) -> Any:
    tenant = await call.state.db.write(set_shadow(call.tenant, False, call.actor))
    return {"tenant": tenant.id, "shadow": tenant.shadow}


# --- API keys -----------------------------------------------------------------------------------

@api.route("POST", "/api/tenants/{tenant}/keys", summary="Create an API key (its secret is shown once)",
           permission="key.manage",
           request={"type": "object", "additionalProperties": False, "required": ["role", "name"],
                    "properties": {"role": {"type": "string", "enum": list(TENANT_ROLES)}, "name": NAME_SCHEMA}},
           response=NEW_KEY, status=201, tags=("keys",))
async def create_key_endpoint(call: Call) -> Any:
    key, secret = await call.state.db.write(create_key(call.tenant, call.body["role"], call.body["name"], call.actor))
    return {"key": key.public(), "secret": secret}


@api.route("GET", "/api/tenants/{tenant}/keys", summary="List the tenant's API keys (never their secrets)",
           permission="key.manage", response=_list_of("keys", API_KEY), tags=("keys",))
async def list_keys_endpoint(call: Call) -> Any:
    return {"keys": [k.public() for k in (await call.state.db.read(list_keys, call.tenant))]}


@api.route("DELETE", "/api/tenants/{tenant}/keys/{key_id}", summary="Revoke an API key at once",
           permission="key.manage", response=API_KEY, tags=("keys",))
async def revoke_key_endpoint(call: Call) -> Any:
    return (await call.state.db.write(revoke_key(call.params["key_id"], call.tenant, call.actor))).public()


# --- services -----------------------------------------------------------------------------------

@api.route("POST", "/api/tenants/{tenant}/services", summary="Add a monitored service", permission="service.write",
           request=SERVICE_INPUT, response=SERVICE_OUTPUT, status=201, tags=("services",), errors=(409,))
async def create_service_endpoint(call: Call) -> Any:
    spec = normalise(call.body, call.state.url_policy)
    service, secret = await call.state.db.write(
        create_service(call.tenant, call.body["name"], spec, call.state.vault, call.actor))
    return service.public(secret=secret)


@api.route("GET", "/api/tenants/{tenant}/services", summary="List services", permission="service.read",
           response=_list_of("services", SERVICE_OUTPUT), tags=("services",))
async def list_services_endpoint(call: Call) -> Any:
    return {"services": [s.public() for s in (await call.state.db.read(list_services, call.tenant, call.state.vault))]}


@api.route("GET", "/api/tenants/{tenant}/services/{service_id}", summary="Show a service", permission="service.read",
           response=SERVICE_OUTPUT, tags=("services",))
async def show_service_endpoint(call: Call) -> Any:
    return (await call.state.db.read(get_service, call.tenant, call.params["service_id"], call.state.vault)).public()


@api.route("PUT", "/api/tenants/{tenant}/services/{service_id}", summary="Replace a service's definition",
           permission="service.write", request=SERVICE_INPUT, response=SERVICE_OUTPUT, tags=("services",),
           errors=(409,))
async def update_service_endpoint(call: Call) -> Any:
    spec = normalise(call.body, call.state.url_policy)
    service = await call.state.db.write(update_service(call.tenant, call.params["service_id"], call.body["name"], spec,
                                                       call.state.vault, call.actor))
    return service.public()


@api.route("POST", "/api/tenants/{tenant}/services/{service_id}/rotate-secret",
           summary="Rotate the recovery webhook signing secret (the new one is shown once)",
           permission="service.write", response=SERVICE_OUTPUT, tags=("services",))
async def rotate_service_secret_endpoint(call: Call) -> Any:
    service, secret = await call.state.db.write(
        rotate_secret(call.tenant, call.params["service_id"], call.state.vault, call.actor))
    return service.public(secret=secret)


@api.route("DELETE", "/api/tenants/{tenant}/services/{service_id}", summary="Remove a service",
           permission="service.write", response=SERVICE_OUTPUT, tags=("services",))
async def remove_service_endpoint(call: Call) -> Any:
    service = await call.state.db.write(
        remove_service(call.tenant, call.params["service_id"], call.state.vault, call.actor))
    return service.public()


# --- notification channels ----------------------------------------------------------------------

CHANNELS = {"type": "object", "required": ["channels", "kinds"],
            "properties": {"channels": {"type": "array", "items": CHANNEL_OUTPUT},
                           "kinds": {"type": "array", "items": {"type": "string"}}}}


async def _list_channels(call: Call) -> Any:
    tenant = call.own_tenant()
    return {"channels": [c.public() for c in (await call.state.db.read(list_channels, tenant, call.state.vault))],
            "kinds": list(KINDS)}


async def _put_channel(call: Call) -> Any:
    tenant = call.own_tenant()
    write = put_channel(tenant, call.params["kind"], call.body, call.state.url_policy, call.state.vault, call.actor)
    return (await call.state.db.write(write)).public()


_CHANNEL_BODY = dict(request=CHANNEL_INPUT, validate_request=False)  # validated per kind by put_channel


@api.route("GET", "/api/tenants/{tenant}/notifications/channels", permission="channel.read", response=CHANNELS,
           summary="List a tenant's notification channel settings (secrets only as fingerprints)", tags=("channels",))
async def list_tenant_channels_endpoint(call: Call) -> Any:
    return await _list_channels(call)


@api.route("PUT", "/api/tenants/{tenant}/notifications/channels/{kind}", permission="channel.write",
           response=CHANNEL_OUTPUT, summary="Set a tenant's channel settings; secrets are write-only",
           tags=("channels",), **_CHANNEL_BODY)
async def put_tenant_channel_endpoint(call: Call) -> Any:
    return await _put_channel(call)


@api.route("GET", "/api/notifications/channels", permission="channel.read", response=CHANNELS, errors=(400,),
           summary="List the caller's tenant's notification channel settings", tags=("channels",))
async def list_channels_endpoint(call: Call) -> Any:
    return await _list_channels(call)


@api.route("PUT", "/api/notifications/channels/{kind}", permission="channel.write", response=CHANNEL_OUTPUT,
           errors=(400,), summary="Set the caller's tenant's channel settings", tags=("channels",), **_CHANNEL_BODY)
async def put_channel_endpoint(call: Call) -> Any:
    return await _put_channel(call)


# --- the tenant's ledger --------------------------------------------------------------------------

LEDGER_PAGE = {"type": "object", "required": ["entries", "next_after"],
               "properties": {"entries": {"type": "array", "items": {"type": "object"},
                                          "description": "entries as stored (docs/ledger-format.md), oldest first"},
                              "next_after": {"type": ["integer", "null"],
                                             "description": "pass as ?after= for the next page; null at the end"}}}
EXPORT_REQUEST = {"type": "object", "additionalProperties": False,
                  "properties": {"incident": {"type": "string", "minLength": 1, "maxLength": 128},
                                 "since": {"type": "string", "format": "date-time", "maxLength": 40},
                                 "until": {"type": "string", "format": "date-time", "maxLength": 40}}}


@api.route("GET", "/api/tenants/{tenant}/ledger", permission="ledger.read", response=LEDGER_PAGE,
           summary="Read the tenant's ledger entries, oldest first, a page at a time", tags=("ledger",),
           query={"after": {"type": "integer", "minimum": -1, "description": "last tseq already read (default -1)"},
                  "limit": {"type": "integer", "minimum": 1, "maximum": 1000, "description": "default 100"},
                  "kind": {"type": "string", "maxLength": 64},
                  "incident": {"type": "string", "maxLength": 128}})
async def ledger_entries_endpoint(call: Call) -> Any:
    where = Where().eq("tenant", call.tenant).add("tseq > ?", call.params.get("after", -1))
    where.eq("kind", call.params.get("kind")).eq("incident", call.params.get("incident"))
    limit = call.params.get("limit", 100)
    rows = await call.state.db.read(lambda conn: conn.execute(
        "SELECT tseq, body FROM ledger" + where.sql() + " ORDER BY tseq LIMIT ?", (*where.params, limit)).fetchall())
    return {"entries": [json.loads(body) for _, body in rows],
            "next_after": rows[-1][0] if len(rows) == limit else None}


@api.route("POST", "/api/tenants/{tenant}/ledger/export", permission="ledger.export",
           summary="Export the tenant's audit bundle (docs/ledger-format.md), optionally one incident or a time range",
           request=EXPORT_REQUEST, response={"type": "string", "contentMediaType": "application/gzip"},
           media_type="application/gzip", tags=("ledger",), errors=(422,))
async def export_ledger_endpoint(call: Call) -> Any:
    body = call.body or {}
    for name in ("since", "until"):
        if name in body and not is_rfc3339(body[name]):
            raise ApiError(422, "invalid", "must be an RFC 3339 time with a zone, like 2026-11-22T13:50:00Z", name)
    workdir = Path(tempfile.mkdtemp(prefix="alertengine-api-export-"))
    out = workdir / "bundle.tar.gz"
    publisher = call.state.runtime.publisher
    loop = asyncio.get_running_loop()

    def cosign(cp: Any) -> list[str]:   # on the export's thread: the witnesses are asked on the loop
        return asyncio.run_coroutine_threadsafe(publisher.witness(cp, force=True), loop).result(timeout=120)
    try:
        summary = await asyncio.to_thread(
            export_bundle, call.state.db, out, tenant=call.tenant, incident=body.get("incident"),
            since=normal_ts(body.get("since")), until=normal_ts(body.get("until")), actor=call.actor,
            cosign=cosign if publisher.witnesses else None)
    except ExportError as exc:
        shutil.rmtree(workdir, ignore_errors=True)
        raise ApiError(422, "invalid", str(exc), "incident" if body.get("incident") else None) from None
    name = f"alertengine-{call.tenant}-{summary.checkpoint_size}.tar.gz"
    return FileResponse(out, media_type="application/gzip", filename=name,
                        background=BackgroundTask(shutil.rmtree, workdir, True))


# --- ingest integrations ------------------------------------------------------------------------

INTEGRATION = {"type": "object", "required": ["id", "tenant", "name", "created", "revoked"],
               "properties": {"id": {"type": "string"}, "tenant": {"type": "string"}, "name": {"type": "string"},
                              "created": {"type": "string"}, "revoked": {"type": ["string", "null"]}}}


@api.route("POST", "/api/tenants/{tenant}/integrations", permission="key.manage", status=201, tags=("keys",),
           summary="Create an ingest key (Alertmanager, Grafana, PagerDuty routing_key, events, heartbeats); shown once",
           request={"type": "object", "additionalProperties": False, "required": ["name"],
                    "properties": {"name": NAME_SCHEMA}},
           response={"type": "object", "required": ["integration", "key"],
                     "properties": {"integration": INTEGRATION, "key": {"type": "string"}}})
async def create_integration_endpoint(call: Call) -> Any:
    item, key = await call.state.db.write(create_integration(call.tenant, call.body["name"], call.actor))
    return {"integration": item.public(), "key": key}


@api.route("GET", "/api/tenants/{tenant}/integrations", permission="key.manage", tags=("keys",),
           summary="List the tenant's ingest keys (never the keys)", response=_list_of("integrations", INTEGRATION))
async def list_integrations_endpoint(call: Call) -> Any:
    return {"integrations": [i.public() for i in (await call.state.db.read(list_integrations, call.tenant))]}


@api.route("DELETE", "/api/tenants/{tenant}/integrations/{integration_id}", permission="key.manage", tags=("keys",),
           summary="Revoke an ingest key at once", response=INTEGRATION)
async def revoke_integration_endpoint(call: Call) -> Any:
    return (await call.state.db.write(revoke_integration(call.tenant, call.params["integration_id"], call.actor))).public()
