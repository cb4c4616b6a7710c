"""Seed 003's smart-rule and alert API: rules (create, list, show, change, delete), active alerts
with statistics, acknowledge / resolve / escalate, history, and test alerts.

The tenant comes from the key (``/api/...``); an appliance-admin key, which has none, uses the
same paths under ``/api/tenants/{tenant}/...``. Acting on an alert acts on what it stands for:
acknowledging it acknowledges its open incident (the escalation chain stops), resolving the last
unresolved alert of an incident resolves the incident, and escalating raises the alert's severity
one step, which policy then hears as that alert firing harder (the incident's priority rises, or
an incident opens) while the incident's escalation chain moves to its next step now."""

from __future__ import annotations

import dataclasses
import re
from typing import Any

from ..alerts import store
from ..alerts.evaluator import SOURCE, TestInputError
from ..alerts.rules import RULE_INPUT, RULE_PATCH, SmartRule
from ..errors import FieldError
from ..incidents import engine
from ..incidents.detection import service_ref
from ..incidents.policy import load_policy
from ..notify.deliveries import hasten
from ..signals import AlertSignal
from .routing import ApiError, Call, Registry

alerts_api = Registry()
T = "/api/tenants/{tenant}"

RULE = {"type": "object", "required": ["id", "name", "is_active", "rule_definition"],
        "properties": {"id": {"type": "integer"}, "name": {"type": "string"}, "is_active": {"type": "boolean"},
                       "rule_definition": {"type": "object"}, "stats": {"type": "object"}}}
ALERT = {"type": "object", "required": ["id", "rule_id", "rule_name", "severity", "message", "triggered_at", "status",
                                        "metrics_snapshot"],
         "properties": {"id": {"type": "string"}, "rule_id": {"type": ["integer", "null"]},
                        "rule_name": {"type": "string"}, "severity": {"type": "string"},
                        "message": {"type": "string"}, "triggered_at": {"type": "string"},
                        "status": {"type": "string", "enum": list(store.STATUSES)},
                        "metrics_snapshot": {"type": "object"}, "source": {"type": "string"},
                        "service": {"type": ["string", "null"]}, "incident": {"type": ["string", "null"]},
                        "test": {"type": "boolean"}, "resolved_at": {"type": ["string", "null"]}}}
STATISTICS = {"type": "object", "required": ["total_active", "by_severity"],
              "properties": {"total_active": {"type": "integer"}, "by_severity": {"type": "object"}}}
ACTED = {"type": "object", "required": ["alert"],
         "properties": {"alert": ALERT, "incident": {"type": ["object", "null"]}}}
TEST_REQUEST = {"type": "object", "additionalProperties": False, "required": ["rule_id", "test_metrics"],
                "properties": {"rule_id": {"type": "integer", "minimum": 1},
                               "test_metrics": {"type": "object", "maxProperties": 64}}}


def both(method: str, path: str, registry: Registry = alerts_api, **kwargs: Any) -> Any:
    """Declare ``path`` for a tenant's own key and under /api/tenants/{tenant} for any key."""
    def register(fn: Any) -> Any:
        registry.route(method, path, **kwargs)(fn)

        async def in_tenant(call: Call) -> Any:
            return await fn(call)
        in_tenant.__name__ = f"{fn.__name__}_in_tenant"
        registry.route(method, T + path.removeprefix("/api"), **kwargs)(in_tenant)
        return fn
    return register


def _rule_id(call: Call) -> int:
    raw = call.params["rule_id"]
    if not raw.isascii() or not raw.isdigit() or len(raw) > 18:
        raise ApiError(404, "not_found", "smart rule not found")
    return int(raw)


def _versions(conn: Any, tenant: str) -> str:
    return load_policy(conn, tenant).version


def _public_rule(call: Call, rule: SmartRule) -> dict[str, Any]:
    return {**rule.public(), "stats": call.state.runtime.smart.stats(rule.tenant, rule.id)}


# --- smart rules --------------------------------------------------------------------------------

@both("POST", "/api/smart-rules", permission="policy.write", request=RULE_INPUT, response=RULE, status=201,
      tags=("smart rules",), errors=(400,), summary="Create a smart rule (a new policy version, ledgered with its diff)")
async def create_smart_rule(call: Call) -> Any:
    tenant = call.own_tenant()
    rule = await _write(call, store.create_rule(tenant, call.body, call.engineer, _versions))
    return _public_rule(call, rule)


@both("GET", "/api/smart-rules", permission="policy.read", tags=("smart rules",), errors=(400,),
      summary="List the tenant's smart rules",
      response={"type": "object", "required": ["rules"], "properties": {"rules": {"type": "array", "items": RULE}}})
async def list_smart_rules(call: Call) -> Any:
    tenant = call.own_tenant()
    return {"rules": [_public_rule(call, r) for r in (await call.state.db.read(store.list_rules, tenant))]}


@both("GET", "/api/smart-rules/{rule_id}", permission="policy.read", response=RULE, tags=("smart rules",),
      errors=(400,), summary="Show a smart rule, with the firings its cooldown and cap held back")
async def show_smart_rule(call: Call) -> Any:
    tenant = call.own_tenant()
    return _public_rule(call, (await call.state.db.read(store.get_rule, tenant, _rule_id(call))))


async def _change(call: Call, body: dict[str, Any]) -> Any:
    """A rule changed: when it stopped or now watches something else, the alerts of its states are
    resolved (nothing would judge them again) and what it learned is forgotten."""
    tenant = call.own_tenant()
    rule_id = _rule_id(call)
    old = (await call.state.db.read(store.get_rule, tenant, rule_id))
    new = await _write(call, store.update_rule(tenant, rule_id, body, call.engineer, _versions))
    smart = call.state.runtime.smart
    if not new.is_active:
        await smart.retire(tenant, rule_id, "the rule was deactivated")
    elif new.definition != old.definition:
        await smart.retire(tenant, rule_id, "the rule was redefined")
    return _public_rule(call, new)


@both("PUT", "/api/smart-rules/{rule_id}", permission="policy.write", request=RULE_INPUT, response=RULE,
      tags=("smart rules",), errors=(400,), summary="Replace a smart rule (ledgered with its diff)")
async def replace_smart_rule(call: Call) -> Any:
    return await _change(call, {"is_active": True, **call.body})


@both("PATCH", "/api/smart-rules/{rule_id}", permission="policy.write", request=RULE_PATCH, response=RULE,
      tags=("smart rules",), errors=(400,), summary="Change some of a smart rule (is_active, name, definition)")
async def patch_smart_rule(call: Call) -> Any:
    return await _change(call, call.body)


@both("DELETE", "/api/smart-rules/{rule_id}", permission="policy.write", response=RULE, tags=("smart rules",),
      errors=(400,), summary="Delete a smart rule: it stops firing; the alerts of its states resolve, others stay")
async def delete_smart_rule(call: Call) -> Any:
    tenant = call.own_tenant()
    rule = await _write(call, store.delete_rule(tenant, _rule_id(call), call.engineer, _versions))
    await call.state.runtime.smart.retire(tenant, rule.id, "the rule was deleted")
    return rule.public()


# Ledger paths in errors, as the request names them.
_FIELDS = ((re.compile(r"^data\.diff\.(name|is_active)(\.to)?$"), r"\1"),
           (re.compile(r"^data\.diff\.rule_definition(?:\.to)?\.(.+?)(?:\.to)?$"), r"rule_definition.\1"),
           (re.compile(r"^data\.test_metrics(\..*)?$"), r"test_metrics\1"))


async def _write(call: Call, fn: Any) -> Any:
    """A write whose ledger entry may refuse a value (a credential-looking name): the error names
    the request's own field, never the ledger's."""
    try:
        return await call.state.db.write(fn)
    except FieldError as exc:
        raise _request_field(exc) from None


def _request_field(exc: FieldError) -> FieldError:
    for pattern, replacement in _FIELDS:
        if pattern.match(exc.field or ""):
            return FieldError(pattern.sub(replacement, exc.field), exc.message.replace(exc.field, "it"))
    return exc


# --- alerts -------------------------------------------------------------------------------------

@both("GET", "/api/alerts/active", permission="incident.read", tags=("alerts",), errors=(400,),
      summary="Unresolved alerts (active and acknowledged), newest first, with statistics",
      query={"limit": {"type": "integer", "minimum": 1, "maximum": 1000}},
      response={"type": "object", "required": ["alerts", "statistics"],
                "properties": {"alerts": {"type": "array", "items": ALERT}, "statistics": STATISTICS}})
async def active_alerts(call: Call) -> Any:
    tenant = call.own_tenant()
    limit = call.params.get("limit", 1000)
    return await call.state.db.read(lambda conn: {"alerts": store.active_alerts(conn, tenant, limit),
                                                  "statistics": store.statistics(conn, tenant)})


@both("GET", "/api/alerts/history", permission="incident.read", tags=("alerts",), errors=(400,),
      summary="Alerts triggered in the last N days (default 7), newest first, tests included and marked",
      query={"days": {"type": "integer", "minimum": 1, "maximum": 3650},
             "limit": {"type": "integer", "minimum": 1, "maximum": 1000}},
      response={"type": "object", "required": ["history", "total_count", "date_range"],
                "properties": {"history": {"type": "array", "items": ALERT}, "total_count": {"type": "integer"},
                               "date_range": {"type": "object", "required": ["start", "end"]}}})
async def alert_history(call: Call) -> Any:
    tenant = call.own_tenant()
    now = call.state.clock()
    start = now - call.params.get("days", 7) * 86_400.0
    items, total = (await call.state.db.read(store.history, tenant, start, now, call.params.get("limit", 100)))
    return {"history": items, "total_count": total, "date_range": {"start": store.iso(start), "end": store.iso(now)}}


@both("POST", "/api/alerts/test", permission="policy.write", request=TEST_REQUEST, tags=("alerts",), errors=(400, 404),
      summary="Judge a rule on test metrics; if it fires, deliver it marked as a test (never an incident)",
      response={"type": "object", "required": ["fired", "message", "alert", "deliveries"],
                "properties": {"fired": {"type": "boolean"}, "message": {"type": "string"},
                               "alert": {"anyOf": [ALERT, {"type": "null"}]},
                               "deliveries": {"type": "array", "items": {"type": "object"}}}})
async def test_alert(call: Call) -> Any:
    tenant = call.own_tenant()
    rule = (await call.state.db.read(store.get_rule, tenant, call.body["rule_id"]))
    try:
        return await call.state.runtime.smart.test(rule, call.body["test_metrics"], call.engineer)
    except TestInputError as exc:
        raise ApiError(422, "invalid", exc.message, exc.field) from None
    except FieldError as exc:
        raise _request_field(exc) from None


@both("GET", "/api/alerts/{alert_id}", permission="incident.read", response=ALERT, tags=("alerts",), errors=(400,),
      summary="Show an alert (a bare number names that rule's newest unresolved alert)")
async def show_alert(call: Call) -> Any:
    return (await call.state.db.read(store.find_alert, call.own_tenant(), call.params["alert_id"]))


async def _act(call: Call, what: str) -> dict[str, Any]:
    tenant = call.own_tenant()
    db = call.state.db
    actor = call.engineer
    now = call.state.clock()
    before, after = await db.write(store.act(tenant, call.params["alert_id"], what, actor, now))
    incident = None
    if after["incident"]:
        inc = (await db.read(engine.get_incident, tenant, after["incident"]))
        if what == "acknowledge" and inc.is_open and not inc.acknowledged_by:
            acked = await engine.run(db, engine.acknowledge(tenant, inc.id, actor))
            inc = acked if isinstance(acked, engine.Incident) else inc
        elif what == "resolve" and inc.is_open and not await _others_unresolved(call, tenant, inc.id):
            policy = (await db.read(load_policy, tenant))
            inc = await engine.run(db, engine.transition(
                tenant, inc.id, engine.RESOLVED, actor, decision="resolved", policy_version=policy.version,
                reason=f"its last unresolved alert ({after['id']}) was resolved by hand"))
        incident = inc
    if what == "escalate":
        incident = await _escalate(call, tenant, after, before["severity"], now) or incident
    final = (await db.read(store.find_alert, tenant, after["id"]))
    call.state.runtime.hub.publish(tenant, [final])
    return {"alert": final, "incident": incident.public() if incident is not None else None}


async def _others_unresolved(call: Call, tenant: str, incident: str) -> bool:
    return await call.state.db.read(lambda conn: conn.execute(
        "SELECT 1 FROM alerts WHERE tenant = ? AND incident = ? AND status IN ('active', 'acknowledged') LIMIT 1",
        (tenant, incident)).fetchone() is not None)


async def _escalate(call: Call, tenant: str, alert: dict[str, Any], was: str, now: float) -> Any:
    """Policy hears the escalated alert fire at its new severity; the incident's chain moves on now."""
    db = call.state.db
    fingerprint, service = await db.read(lambda conn: (
        conn.execute("SELECT fingerprint FROM alerts WHERE tenant = ? AND id = ?", (tenant, alert["id"])).fetchone()[0],
        service_ref(conn, tenant, alert["service"])))
    signal = AlertSignal(source=alert["source"], fingerprint=fingerprint, status="firing", severity=alert["severity"],
                         title=alert["rule_name"], service=alert["service"], labels={"alertname": alert["rule_name"]},
                         annotations={"summary": f"escalated by hand from {was} to {alert['severity']}"},
                         starts_at=alert["escalated_at"])
    if alert["source"] == SOURCE and alert["rule_id"] is not None:
        signal = dataclasses.replace(signal, labels={"alertname": alert["rule_name"], "rule_id": str(alert["rule_id"])},
                                     origin={"rule_id": alert["rule_id"], "rule_name": alert["rule_name"]})
    judged = await call.state.detector.on_alert(tenant, signal, service, actor="policy")
    inc = (await call.state.db.read(engine.get_incident, tenant, judged.id)) if judged is not None else None
    if inc is not None and inc.is_open:
        await call.state.db.write(lambda tx: hasten(tx, tenant, inc.id, now, f"alert {alert['id']} was escalated by "
                                                    "hand: the next step of the chain is due now",
                                                    {"alert": alert["id"]}))
    return inc


for _what in ("acknowledge", "resolve", "escalate"):
    async def _handler(call: Call, what: str = _what) -> Any:
        return await _act(call, what)
    _handler.__name__ = f"{_what}_alert"
    both("POST", f"/api/alerts/{{alert_id}}/{_what}", permission="incident.act", response=ACTED, tags=("alerts",),
         errors=(400, 409), summary=f"{_what.capitalize()} an alert (ledgered with who did it)")(_handler)
