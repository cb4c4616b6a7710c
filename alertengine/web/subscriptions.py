"""Seed 003's channel subscriptions, ``POST /api/notifications/channels``, mapped onto routing.

A subscription becomes one routing rule, ``subscription-<name>`` (a name already there is a 409:
a subscription never silently replaces a rule), placed first with
``continue = true`` (it adds a channel; it never takes notifications away from anyone), matching
the subscribed events and sending to ``channel:<channel_type>``. Its ``webhook_url``, when given,
becomes that channel's setting (Slack: the incoming webhook, a secret; webhook: its URL), under the
outbound URL policy. Routing change and channel setting are one transaction, both ledgered.

Events: ``alert.critical|high|medium|low`` and ``alert.*`` (by severity), ``incident.<event>``
(``incident.detected``, ``incident.resolved``...: by what happened). Decision for
``min_risk_score`` (0-100), which has no meaning of its own here: it sets a severity floor by
bands, 90+ critical, 70+ high, 40+ medium, below 40 low; the subscription gets the subscribed
severities at or above the floor (the seed's 80 with alert.critical and alert.high keeps both)."""

from __future__ import annotations

import re
from typing import Any

from ..errors import ConflictError, FieldError
from ..notify import routes
from ..notify.channels.settings import put_channel
from ..notify.vocabulary import EVENTS, LOCAL_CHANNELS, REMOTE_CHANNELS, SEVERITIES
from ..store import WriteTx
from .routing import ApiError, Call, Registry

subscriptions_api = Registry()
RISK_BANDS = ((90, "critical"), (70, "high"), (40, "medium"), (0, "low"))
CHANNEL_TYPES = tuple(c for c in REMOTE_CHANNELS + LOCAL_CHANNELS if c != "email")
SUBSCRIPTION = {
    "type": "object", "additionalProperties": False, "required": ["name", "channel_type", "subscribed_events"],
    "properties": {
        "name": {"type": "string", "minLength": 1, "maxLength": 100},
        "channel_type": {"type": "string", "enum": list(CHANNEL_TYPES)},
        "webhook_url": {"type": "string", "minLength": 1, "maxLength": 2048},
        "subscribed_events": {"type": "array", "minItems": 1, "maxItems": 32, "uniqueItems": True,
                              "items": {"type": "string", "maxLength": 64}},
        "min_risk_score": {"type": "number", "minimum": 0, "maximum": 100},
    },
}


def floor_of(risk: float) -> str:
    return next(severity for bound, severity in RISK_BANDS if risk >= bound)


def route_of(body: dict[str, Any]) -> dict[str, Any]:
    """The routing rule a subscription stands for."""
    severities: set[str] = set()
    events: set[str] = set()
    for i, name in enumerate(body["subscribed_events"]):
        family, _, what = name.partition(".")
        if family == "alert" and (what == "*" or what in SEVERITIES):
            severities |= set(SEVERITIES) if what == "*" else {what}
        elif family == "incident" and what in EVENTS:
            events.add(what)
        else:
            raise ApiError(422, "invalid", "events are alert.<critical|high|medium|low>, alert.* or incident.<event> "
                                           f"({', '.join(EVENTS)})", f"subscribed_events[{i}]")
    if "min_risk_score" in body:
        floor = SEVERITIES.index(floor_of(float(body["min_risk_score"])))
        severities = {s for s in (severities or set(SEVERITIES)) if SEVERITIES.index(s) <= floor}
        if not severities:
            raise ApiError(422, "invalid", "no subscribed severity is at or above the floor this risk score sets",
                           "min_risk_score")
    match: dict[str, Any] = {}
    if severities:
        match["severity"] = [s for s in SEVERITIES if s in severities]
    if events:
        match["event"] = sorted(events)
    slug = re.sub(r"[^a-z0-9]+", "-", body["name"].lower()).strip("-")[:48] or "unnamed"
    return {"name": f"subscription-{slug}", "match": match, "receivers": [f"channel:{body['channel_type']}"],
            "continue": True}


@subscriptions_api.route("POST", "/api/notifications/channels", permission="notify.write", request=SUBSCRIPTION,
                         status=201, tags=("channels",), errors=(400, 409),
                         summary="Subscribe a channel to alert events (seed 003): a routing rule, and the channel's "
                                 "webhook URL",
                         response={"type": "object", "required": ["id", "name", "route", "routing_version"]})
async def subscribe_channel(call: Call) -> Any:
    return await _subscribe(call)


@subscriptions_api.route("POST", "/api/tenants/{tenant}/notifications/channels", permission="notify.write",
                         request=SUBSCRIPTION, status=201, tags=("channels",), errors=(409,),
                         summary="Subscribe a channel of the tenant to alert events",
                         response={"type": "object", "required": ["id", "name", "route", "routing_version"]})
async def subscribe_tenant_channel(call: Call) -> Any:
    return await _subscribe(call)


async def _subscribe(call: Call) -> Any:
    tenant = call.own_tenant()
    body = call.body
    route = route_of(body)
    channel_write = None
    if "webhook_url" in body:
        kind = body["channel_type"]
        if kind == "slack":
            settings: dict[str, Any] = {"secrets": {"webhook_url": body["webhook_url"]}}
        elif kind == "webhook":
            settings = {"config": {"url": body["webhook_url"]}}
        else:
            raise ApiError(422, "invalid", f"a {kind} channel has no webhook URL (slack and webhook do)", "webhook_url")
        try:
            channel_write = put_channel(tenant, kind, settings, call.state.url_policy, call.state.vault, call.actor)
        except FieldError as exc:   # named as the request names it (secrets.webhook_url, config.url)
            raise FieldError("webhook_url", exc.message) from None

    def write(tx: WriteTx) -> tuple[routes.Routing, dict[str, Any] | None]:
        doc = dict(routes.load_routing(tx.conn, tenant).doc)
        if any(r.get("name") == route["name"] for r in doc.get("route", [])):
            raise ConflictError("name", f"the routing already has a rule {route['name']!r} (a subscription of a "
                                        "name like this one): choose another name, or change it in the routing")
        doc["route"] = [route] + list(doc.get("route", []))
        new = routes.put_routing(tenant, routes.routing_from_json(doc), call.actor)(tx)
        channel = channel_write(tx).public() if channel_write is not None else None
        return new, channel
    routing, channel = await call.state.db.write(write)
    return {"id": route["name"], "name": body["name"], "channel_type": body["channel_type"],
            "subscribed_events": body["subscribed_events"], "min_risk_score": body.get("min_risk_score"),
            "route": route, "routing_version": routing.version, "channel": channel}
