"""The incident API (list, show, timeline, acknowledge, resolve), the policy API with dry-run, and
the shadow-mode governance report."""

from __future__ import annotations

import asyncio
import base64
import json
from typing import Any

from jinja2 import Environment, PackageLoader, select_autoescape
from starlette.responses import HTMLResponse, JSONResponse, Response

from ..incidents import engine
from ..incidents.dryrun import dry_run
from ..incidents.policy import load_policy, parse_policy, put_policy
from ..incidents.slo import dashboard
from ..ledger.entry import is_rfc3339, normal_ts
from ..notify.shadow_report import catch_up, projected_report
from ..recovery import deadletters
from ..tenancy.tenants import get_tenant
from .routing import ApiError, Call, Registry

incidents_api = Registry()
_templates = Environment(loader=PackageLoader("alertengine.web", "templates"), autoescape=select_autoescape(["html"]))
_templates.filters["when"] = lambda ts: f"{ts[:10]} {ts[11:19]} UTC" if ts else "—"

INCIDENT = {"type": "object",
            "required": ["tenant", "id", "stage", "priority", "is_open", "title", "fingerprint", "opened_at"],
            "properties": {"tenant": {"type": "string"}, "id": {"type": "string"},
                           "service_id": {"type": ["string", "null"]}, "service_name": {"type": ["string", "null"]},
                           "fingerprint": {"type": "string"}, "source": {"type": "string"}, "title": {"type": "string"},
                           "stage": {"type": "string", "enum": list(engine.STAGES)},
                           "priority": {"type": "string", "enum": list(engine.PRIORITIES)},
                           "action": {"type": ["string", "null"]}, "is_open": {"type": "boolean"},
                           "acknowledged_by": {"type": ["string", "null"]}, "opened_at": {"type": "string"},
                           "updated_at": {"type": "string"}, "closed_at": {"type": ["string", "null"]}}}
POLICY_OUT = {"type": "object", "required": ["version", "toml", "policy"],
              "properties": {"version": {"type": "string"}, "toml": {"type": "string"}, "policy": {"type": "object"}}}
POLICY_IN = {"type": "object", "additionalProperties": False, "required": ["toml"],
             "properties": {"toml": {"type": "string", "maxLength": 262_144}}}


@incidents_api.route("GET", "/api/tenants/{tenant}/incidents", permission="incident.read", tags=("incidents",),
                     summary="List incidents, newest first, a page at a time (?cursor= from next_cursor)",
                     query={"open": {"type": "string", "enum": ["true", "false"]},
                            "limit": {"type": "integer", "minimum": 1, "maximum": 1000},
                            "cursor": {"type": "string", "maxLength": 512}},
                     response={"type": "object", "required": ["incidents", "next_cursor"],
                               "properties": {"incidents": {"type": "array", "items": INCIDENT},
                                              "next_cursor": {"type": ["string", "null"]}}})
async def list_incidents_endpoint(call: Call) -> Any:
    limit = call.params.get("limit", 100)
    before = _from_cursor(call.params["cursor"]) if "cursor" in call.params else None
    db = call.state.db
    found = await asyncio.to_thread(lambda: engine.list_incidents(
        db.read_conn(), call.tenant, open_only=call.params.get("open") == "true", limit=limit + 1, before=before))
    more = len(found) > limit
    found = found[:limit]
    return {"incidents": [i.public() for i in found],
            "next_cursor": _to_cursor(found[-1].opened_at, found[-1].id) if more else None}


def _to_cursor(*key: str) -> str:
    return base64.urlsafe_b64encode(json.dumps(list(key)).encode()).decode().rstrip("=")


def _from_cursor(text: str) -> tuple[str, str]:
    """A cursor this API gave (the last item's sort key), or 400."""
    try:
        key = json.loads(base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)))
    except (ValueError, UnicodeDecodeError):
        key = None
    if not (isinstance(key, list) and len(key) == 2 and all(isinstance(k, str) and len(k) <= 200 for k in key)):
        raise ApiError(400, "invalid", "not a cursor this API gave (use next_cursor of the previous page)", "cursor")
    return key[0], key[1]


@incidents_api.route("GET", "/api/tenants/{tenant}/incidents/{incident}", permission="incident.read",
                     summary="Show an incident", response=INCIDENT, tags=("incidents",))
async def show_incident_endpoint(call: Call) -> Any:
    return (await call.state.db.read(engine.get_incident, call.tenant, call.params["incident"])).public()


@incidents_api.route("GET", "/api/tenants/{tenant}/incidents/{incident}/timeline", permission="incident.read",
                     summary="The incident's ledger entries, oldest first", tags=("incidents",),
                     response={"type": "object", "required": ["incident", "entries"],
                               "properties": {"incident": {"type": "string"},
                                              "entries": {"type": "array", "items": {"type": "object"}}}})
async def incident_timeline_endpoint(call: Call) -> Any:
    entries = (await call.state.db.read(engine.timeline, call.tenant, call.params["incident"]))
    return {"incident": call.params["incident"], "entries": entries}


@incidents_api.route("POST", "/api/tenants/{tenant}/incidents/{incident}/acknowledge", permission="incident.act",
                     summary="Acknowledge an open incident (ledgered with who did it)", response=INCIDENT,
                     tags=("incidents",), errors=(409,))
async def acknowledge_incident_endpoint(call: Call) -> Any:
    inc = await engine.run(call.state.db, engine.acknowledge(call.tenant, call.params["incident"], call.engineer))
    return inc.public()


@incidents_api.route("POST", "/api/tenants/{tenant}/incidents/{incident}/resolve", permission="incident.act",
                     summary="Resolve an open incident by hand", response=INCIDENT, tags=("incidents",),
                     request={"type": "object", "additionalProperties": False, "required": ["reason"],
                              "properties": {"reason": {"type": "string", "minLength": 1, "maxLength": 1000}}},
                     errors=(409,))
async def resolve_incident_endpoint(call: Call) -> Any:
    db = call.state.db
    inc = (await db.read(engine.get_incident, call.tenant, call.params["incident"]))
    policy = (await db.read(load_policy, call.tenant))
    done = await engine.run(db, engine.transition(call.tenant, inc.id, engine.RESOLVED, call.engineer,
                                                  reason=call.body["reason"], decision="resolved",
                                                  policy_version=policy.version))
    return done.public()


# --- policy -------------------------------------------------------------------------------------

@incidents_api.route("GET", "/api/tenants/{tenant}/policy", permission="policy.read", response=POLICY_OUT,
                     summary="The tenant's detection policy (TOML) and its version", tags=("policy",))
async def get_policy_endpoint(call: Call) -> Any:
    policy = (await call.state.db.read(load_policy, call.tenant))
    return {"version": policy.version, "toml": policy.source, "policy": policy.doc}


@incidents_api.route("PUT", "/api/tenants/{tenant}/policy", permission="policy.write", request=POLICY_IN,
                     response=POLICY_OUT, summary="Replace the policy; the change is ledgered with its diff",
                     tags=("policy",))
async def put_policy_endpoint(call: Call) -> Any:
    policy = await call.state.db.write(put_policy(call.tenant, call.body["toml"], call.actor))
    return {"version": policy.version, "toml": policy.source, "policy": policy.doc}


@incidents_api.route("POST", "/api/tenants/{tenant}/policy/dry-run", permission="policy.read",
                     summary="Which incidents a candidate policy would have opened from the recorded signals",
                     request={"type": "object", "additionalProperties": False, "required": ["toml"],
                              "properties": {"toml": {"type": "string", "maxLength": 262_144},
                                             "since": {"type": "string", "maxLength": 40},
                                             "until": {"type": "string", "maxLength": 40}}},
                     response={"type": "object", "required": ["candidate_version", "would_open", "actually_opened"]},
                     tags=("policy",))
async def dry_run_policy_endpoint(call: Call) -> Any:
    for name in ("since", "until"):
        if name in call.body and not is_rfc3339(call.body[name]):
            raise ApiError(422, "invalid", "must be an RFC 3339 time with a zone", name)
    candidate = parse_policy(call.body["toml"])
    return await call.state.db.read(dry_run, call.tenant, candidate, since=normal_ts(call.body.get("since")),
                                    until=normal_ts(call.body.get("until")))


# --- shadow report ------------------------------------------------------------------------------

@incidents_api.route("GET", "/tenant/{tenant}/shadow/report", permission="tenant.shadow.read",
                     summary="Governance report: what shadow mode held back, from the ledger (JSON, or ?format=html); "
                             "incidents a page at a time (?limit=, ?cursor= from next_cursor)",
                     query={"format": {"type": "string", "enum": ["json", "html"]},
                            "limit": {"type": "integer", "minimum": 1, "maximum": 1000},
                            "cursor": {"type": "integer", "minimum": 0}},
                     response={"type": "object", "required": ["tenant", "incidents_observed", "suppressed", "incidents",
                                                              "next_cursor"]},
                     also_media=("text/html",), tags=("shadow mode",))
async def shadow_report_endpoint(call: Call) -> Any:
    db = call.state.db
    # The report is a projection of the ledger kept up to date in the background; fold whatever
    # it still lacks (briefly, off the loop), then read one page of it: no read grows with the ledger.
    await catch_up(db)

    def build() -> Response:   # read, rendered and serialised on the reader thread: none of it on the loop
        report = projected_report(db.read_conn(), call.tenant, limit=call.params.get("limit", 100),
                                  after=call.params.get("cursor"))
        if call.params.get("format") == "html":
            return HTMLResponse(_templates.get_template("shadow_report.html").render(r=report))
        return JSONResponse(report)
    return await db.read_serial(lambda _conn: build())


# --- dead letters -------------------------------------------------------------------------------

DEAD_LETTER = {"type": "object", "required": ["id", "tenant", "incident", "url", "payload", "attempts", "detail", "created"],
               "properties": {"id": {"type": "string"}, "tenant": {"type": "string"}, "incident": {"type": "string"},
                              "url": {"type": "string"}, "payload": {"type": "object"}, "attempts": {"type": "array"},
                              "final_status": {"type": ["integer", "null"]}, "detail": {"type": "string"},
                              "created": {"type": "string"}, "retried_at": {"type": ["string", "null"]}}}


@incidents_api.route("GET", "/api/tenants/{tenant}/dlq", permission="incident.read", tags=("dead letters",),
                     summary="Recovery calls that failed for good (the tenant's dead-letter queue)",
                     response={"type": "object", "required": ["dead_letters"],
                               "properties": {"dead_letters": {"type": "array", "items": DEAD_LETTER}}})
async def list_dead_letters_endpoint(call: Call) -> Any:
    return {"dead_letters": [d.public() for d in (await call.state.db.read(deadletters.list_dead_letters, call.tenant))]}


@incidents_api.route("GET", "/api/tenants/{tenant}/dlq/{letter}", permission="incident.read", response=DEAD_LETTER,
                     summary="Show a dead letter: payload, every attempt, the final answer", tags=("dead letters",))
async def show_dead_letter_endpoint(call: Call) -> Any:
    return (await call.state.db.read(deadletters.get_dead_letter, call.tenant, call.params["letter"])).public()


@incidents_api.route("POST", "/api/tenants/{tenant}/dlq/{letter}/repropose", permission="incident.act",
                     summary="Propose the failed action again: it runs only after a fresh human approval",
                     response=INCIDENT, tags=("dead letters",), errors=(409,))
async def repropose_dead_letter_endpoint(call: Call) -> Any:
    db = call.state.db
    policy = (await db.read(load_policy, call.tenant))
    inc = await engine.run(db, deadletters.repropose(call.tenant, call.params["letter"], call.engineer, policy.version))
    await call.state.orchestrator.propose(inc)
    return inc.public()


@incidents_api.route("GET", "/v1/alerts/dashboard", permission="slo.read", tags=("incidents",), errors=(400,),
                     query={"window_minutes": {"type": "integer", "minimum": 1, "maximum": 43_200},
                            "tenant": {"type": "string", "maxLength": 64}},
                     response={"type": "object", "required": ["tenant", "window_minutes", "violations", "ok"]},
                     summary="The alert loop's SLO for the key's tenant over a window (default 60 min): "
                             "acknowledgement latency p95, failed delivery rate, stuck deliveries, the violations "
                             "of the policy's [slo], and open auto-resolve candidates")
async def alerts_dashboard_endpoint(call: Call) -> Any:
    tenant = call.principal.tenant if call.principal is not None else None
    if tenant is None:                                  # the appliance admin names the tenant
        tenant = call.params.get("tenant")
        if tenant is None:
            raise ApiError(400, "tenant_required", "an appliance-admin key must name the tenant (?tenant=)", "tenant")
        (await call.state.db.read(get_tenant, tenant))
    elif call.params.get("tenant") not in (None, tenant):
        raise ApiError(400, "invalid", "a tenant's key reads its own tenant only", "tenant")
    db, window = call.state.db, call.params.get("window_minutes", 60)

    def compute() -> dict[str, Any]:
        with db.reader() as conn:
            return dashboard(conn, tenant, window)
    return await asyncio.to_thread(compute)
