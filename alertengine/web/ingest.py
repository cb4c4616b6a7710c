"""Ingest endpoints: Alertmanager, Grafana, PagerDuty Events v2, generic events and heartbeats.

Each is authenticated by one of the tenant's ingest keys, answers 2xx once the signals are judged
and ledgered, 400 with the reason for a bad payload, and is idempotent on repeats."""

from __future__ import annotations

import asyncio
import time
from typing import Any, Callable

from ..alerts.metrics import parse_observations
from ..diagnosis.deploys import record_deploy
from ..errors import FieldError
from ..incidents.alertbatch import AlertBatch
from ..incidents.detection import Detector, service_refs
from ..signals import AlertSignal
from ..signals.heartbeats import heartbeat_signal, record_beat
from ..signals.ingest import (
    PayloadError,
    parse_alertmanager,
    parse_change,
    parse_event,
    parse_grafana,
    parse_pagerduty,
)
from ..telemetry import Telemetry
from .routing import ApiError, Call, Registry

ingest_api = Registry()
MAX_INGEST_BODY = 4 * 1024 * 1024
ACCEPTED = {"type": "object", "required": ["accepted", "incidents"],
            "properties": {"accepted": {"type": "integer"},
                           "incidents": {"type": "array", "items": {"type": "string"}}}}
ANY_JSON = {"description": "the sender's own format (see the tag's documentation)"}


async def _judge(call: Call, signals: list[AlertSignal]) -> dict[str, Any]:
    started = time.monotonic()
    detector: Detector = call.state.detector
    incidents = []
    fresh: list[AlertSignal] = []
    batch = AlertBatch()   # the request's alerts are written together, in one transaction

    def read() -> dict[str | None, Any]:   # what judging the alerts reads, at once and off the loop
        detector.prefetch(call.tenant, signals, batch)
        return service_refs(call.state.db.read_conn(), call.tenant, {s.service for s in signals})
    services = await asyncio.to_thread(read)
    for signal in signals:
        inc = await detector.on_alert(call.tenant, signal, services[signal.service], fresh=fresh, batch=batch)
        if inc is not None and inc.id not in incidents:
            incidents.append(inc.id)
    await detector.settle(batch)
    telemetry: Telemetry | None = getattr(call.state, "telemetry", None)
    if telemetry is not None and signals:
        source = signals[0].source
        telemetry.ingest_request.labels(source).observe(time.monotonic() - started)
        telemetry.ingest_batch.labels(source).observe(len(signals))
        telemetry.ingest_alerts.labels(source, "new").inc(len(fresh))
        telemetry.ingest_alerts.labels(source, "repeat").inc(len(signals) - len(fresh))
    fired = [s.labels.get("alertname") or s.title for s in fresh if s.status == "firing"]
    if fired:   # smart rules' patterns count ingested alerts by name: news only, never a sender's repeat
        await call.state.runtime.smart.on_alert_names(call.tenant, fired)
    return {"accepted": len(signals), "incidents": incidents}


def _parsed(parse: Callable[[Any], Any], body: Any) -> Any:
    try:
        return parse(body)
    except PayloadError as exc:
        raise ApiError(400, "bad_payload", exc.message, exc.field) from None


def _ingest(sender: str, parse: Callable[[Any], list[AlertSignal]], summary: str) -> None:
    async def handler(call: Call) -> Any:
        return await _judge(call, _parsed(parse, call.body))
    for path in (f"/ingest/{sender}", f"/ingest/{sender}/{{key}}"):
        handler_for_path = _named(handler, f"ingest_{sender}" + ("_keyed" if "{key}" in path else ""))
        ingest_api.route("POST", path, integration=True, summary=summary, request=ANY_JSON, validate_request=False,
                         response=ACCEPTED, tags=("ingest",), max_body=MAX_INGEST_BODY)(handler_for_path)


def _named(fn: Callable, name: str) -> Callable:
    async def wrapper(call: Call) -> Any:
        return await fn(call)
    wrapper.__name__ = name
    return wrapper


_ingest("alertmanager", parse_alertmanager,
        "Alertmanager webhook (v4): each alert is judged by policy; resolved alerts resolve")
_ingest("grafana", parse_grafana, "Grafana unified-alerting webhook")
_ingest("events", lambda body: [parse_event(body)], "A generic JSON event of a service")


@ingest_api.route("POST", "/v2/enqueue", integration=True, body_key="routing_key", request=ANY_JSON,
                  validate_request=False, status=202, tags=("ingest",), max_body=512 * 1024,
                  summary="PagerDuty Events API v2: routing_key is the tenant's ingest key",
                  response={"type": "object", "required": ["status", "message", "dedup_key"],
                            "properties": {"status": {"type": "string"}, "message": {"type": "string"},
                                           "dedup_key": {"type": "string"}}})
async def pagerduty_enqueue(call: Call) -> Any:
    _routing_key, signal = _parsed(parse_pagerduty, call.body)
    await _judge(call, [signal])
    return {"status": "success", "message": "Event processed", "dedup_key": signal.fingerprint}


OBSERVED = {"type": "object", "required": ["accepted", "alerts"],
            "properties": {"accepted": {"type": "integer"},
                           "alerts": {"type": "array", "items": {"type": "string"},
                                      "description": "ids of the alerts smart rules raised on them"}}}


async def _observe(call: Call) -> Any:
    observations = _parsed(parse_observations, call.body)
    alerts = await call.state.runtime.smart.on_observations(call.tenant, observations)
    return {"accepted": len(observations), "alerts": alerts}


for _path, _name in (("/ingest/observations", "ingest_observations"),
                     ("/ingest/observations/{key}", "ingest_observations_keyed")):
    ingest_api.route("POST", _path, integration=True, request=ANY_JSON, validate_request=False, response=OBSERVED,
                     tags=("ingest",), max_body=MAX_INGEST_BODY,
                     summary="Events a tenant observes (name, numbers, labels): what smart rules count and judge; "
                             "not alerts themselves")(_named(_observe, _name))


HEARTBEAT_QUERY = {"interval": {"type": "integer", "minimum": 5, "maximum": 86_400,
                                "description": "seconds between beats (default 60); missed after 1.5 intervals"}}
BEAT = {"type": "object", "required": ["name", "interval", "next_due"],
        "properties": {"name": {"type": "string"}, "interval": {"type": "number"}, "next_due": {"type": "string"},
                       "incidents": {"type": "array", "items": {"type": "string"}}}}


async def _beat(call: Call) -> Any:
    name = call.params["name"]
    if not 1 <= len(name) <= 128:
        raise ApiError(400, "bad_payload", "a heartbeat name has 1-128 characters", "name")
    beat = await call.state.db.write(record_beat(call.tenant, name, float(call.params.get("interval", 60))))
    judged = {"incidents": []}
    if beat.was_missed:
        judged = await _judge(call, [heartbeat_signal(beat, "resolved")])
    return {"name": name, "interval": beat.interval, "next_due": beat.due, "incidents": judged["incidents"]}


for _path, _name in (("/ingest/heartbeat/{name}", "heartbeat"), ("/ingest/heartbeat/{name}/{key}", "heartbeat_keyed")):
    ingest_api.route("POST", _path, integration=True, query=HEARTBEAT_QUERY, response=BEAT, tags=("ingest",),
                     summary="A heartbeat: if the next one is late, policy hears of it")(_named(_beat, _name))


@ingest_api.route("POST", "/v2/change/enqueue", integration=True, body_key="routing_key", request=ANY_JSON,
                  validate_request=False, status=202, tags=("ingest",), max_body=512 * 1024,
                  summary="PagerDuty Change Events: recorded as commit context for diagnosis, never an alert",
                  response={"type": "object", "required": ["status", "message"],
                            "properties": {"status": {"type": "string"}, "message": {"type": "string"}}})
async def pagerduty_change_enqueue(call: Call) -> Any:
    _routing_key, record = _parsed(parse_change, call.body)
    try:
        change = await call.state.db.write(record_deploy(call.tenant, record, "ingest:pagerduty", source="pagerduty"))
    except FieldError as exc:   # e.g. a source that is not a service name
        raise ApiError(400, "bad_payload", exc.message, f"payload.{'source' if exc.field == 'service' else exc.field}") \
            from None
    if not change.duplicate:
        await call.state.detector.on_new_deploy(call.tenant, change.service)  # a material change: diagnose again
    return {"status": "success", "message": "Change event processed"}
