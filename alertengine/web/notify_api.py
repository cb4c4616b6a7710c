"""Who hears what: people, teams, the routing document and its dry run, silences, and the outbox
(every stored notification, the dead letters, and sending one again)."""

from __future__ import annotations

import asyncio
import time
from datetime import datetime, timezone
from typing import Any

from starlette.responses import Response

from ..errors import FieldError
from ..notify import outbox, people, routes, schedules, silences
from ..notify.gateway import route_stats
from ..notify.router import SAMPLE_EVENT, plan, sample_event
from .body import ApiError
from .routing import Call, Registry

notify_api = Registry()
T = "/api/tenants/{tenant}"
ROUTING_IN = {"type": "object", "additionalProperties": False,
              "properties": {"toml": {"type": "string", "maxLength": 262_144},
                             "routing": {"type": "object", "description": "the same document as JSON"}},
              "description": "give toml or routing"}
ROUTING_OUT = {"type": "object", "required": ["version", "source", "rules", "inhibit", "defaults"],
               "properties": {"version": {"type": "string"}, "source": {"type": "string"},
                              "rules": {"type": "array", "items": {"type": "object"}},
                              "inhibit": {"type": "array", "items": {"type": "object"}},
                              "defaults": {"type": "object"}}}
PLAN_OUT = {"type": "object", "required": ["version", "matched", "severity", "decisions"],
            "properties": {"version": {"type": "string"}, "matched": {"type": "array", "items": {"type": "string"}},
                           "severity": {"type": "string"}, "escalated_by": {"type": ["string", "null"]},
                           "silenced_by": {"type": "array"}, "inhibited_by": {"type": "array"},
                           "decisions": {"type": "array", "items": {"type": "object"}}}}
LIST = {"type": "object"}


def _person_id(call: Call) -> str:
    return people.check_id(call.params["person"], "person")


def _team_id(call: Call) -> str:
    return people.check_id(call.params["team"], "team")


# --- people and teams ---------------------------------------------------------------------------

@notify_api.route("GET", f"{T}/people", permission="notify.read", tags=("people",), response=LIST,
                  summary="The tenant's people: names, time zones, addresses per channel, channel order")
async def list_people_endpoint(call: Call) -> Any:
    return {"people": [p.public() for p in (await call.state.db.read(people.list_people, call.tenant))]}


@notify_api.route("GET", f"{T}/people/{{person}}", permission="notify.read", tags=("people",),
                  response=people.PERSON_OUTPUT, errors=(404, 422), summary="One person")
async def get_person_endpoint(call: Call) -> Any:
    return (await call.state.db.read(people.get_person, call.tenant, _person_id(call))).public()


@notify_api.route("PUT", f"{T}/people/{{person}}", permission="notify.write", tags=("people",),
                  request=people.PERSON_INPUT, response=people.PERSON_OUTPUT, errors=(422,),
                  summary="Add or replace a person (ledgered; addresses only as fingerprints)")
async def put_person_endpoint(call: Call) -> Any:
    person = people.normalise_person(call.tenant, _person_id(call), call.body)
    saved, _new = await call.state.db.write(people.put_person(person, call.actor))
    return saved.public()


@notify_api.route("DELETE", f"{T}/people/{{person}}", permission="notify.write", tags=("people",),
                  response=people.PERSON_OUTPUT, errors=(404, 409, 422), summary="Remove a person who is in no team")
async def remove_person_endpoint(call: Call) -> Any:
    return (await call.state.db.write(people.remove_person(call.tenant, _person_id(call), call.actor))).public()


@notify_api.route("GET", f"{T}/teams", permission="notify.read", tags=("people",), response=LIST,
                  summary="The tenant's teams and their members, in order")
async def list_teams_endpoint(call: Call) -> Any:
    return {"teams": [t.public() for t in (await call.state.db.read(people.list_teams, call.tenant))]}


@notify_api.route("GET", f"{T}/teams/{{team}}", permission="notify.read", tags=("people",),
                  response=people.TEAM_OUTPUT, errors=(404, 422), summary="One team")
async def get_team_endpoint(call: Call) -> Any:
    return (await call.state.db.read(people.get_team, call.tenant, _team_id(call))).public()


@notify_api.route("PUT", f"{T}/teams/{{team}}", permission="notify.write", tags=("people",),
                  request=people.TEAM_INPUT, response=people.TEAM_OUTPUT, errors=(422,),
                  summary="Add or replace a team (every member must be a person of the tenant)")
async def put_team_endpoint(call: Call) -> Any:
    team = people.normalise_team(call.tenant, _team_id(call), call.body)
    saved, _new = await call.state.db.write(people.put_team(team, call.actor))
    return saved.public()


@notify_api.route("DELETE", f"{T}/teams/{{team}}", permission="notify.write", tags=("people",),
                  response=people.TEAM_OUTPUT, errors=(404, 422), summary="Remove a team")
async def remove_team_endpoint(call: Call) -> Any:
    return (await call.state.db.write(people.remove_team(call.tenant, _team_id(call), call.actor))).public()


# --- routing ------------------------------------------------------------------------------------

def routing_view(routing: routes.Routing) -> dict[str, Any]:
    return {"version": routing.version, "source": routing.source_text,
            "rules": [r.describe() for r in routing.rules],
            "inhibit": [{"name": i.name, "source": [str(m) for m in i.source], "target": [str(m) for m in i.target],
                         "equal": list(i.equal)} for i in routing.inhibitions],
            "defaults": {"receivers": list(routing.fallback), "retry_for": routing.retry_for,
                         "failover_after": routing.failover_after, "group_by": list(routing.grouping.by),
                         "group_wait": routing.grouping.wait, "group_interval": routing.grouping.interval,
                         "repeat_interval": routing.grouping.repeat}}


@notify_api.route("GET", f"{T}/routes", permission="notify.read", tags=("routing",), response=ROUTING_OUT,
                  summary="The tenant's routing rules, inhibition rules and defaults, and their version")
async def get_routes_endpoint(call: Call) -> Any:
    return routing_view((await call.state.db.read(routes.load_routing, call.tenant)))


@notify_api.route("PUT", f"{T}/routes", permission="notify.write", tags=("routing",), request=ROUTING_IN,
                  response=ROUTING_OUT, errors=(422,),
                  summary="Replace the routing document (TOML in toml, or JSON in routing); ledgered")
async def put_routes_endpoint(call: Call) -> Any:
    if ("toml" in call.body) == ("routing" in call.body):
        raise ApiError(422, "invalid", "give exactly one of toml or routing", "")
    new = routes.parse_routing(call.body["toml"]) if "toml" in call.body else \
        routes.routing_from_json(call.body["routing"])
    return routing_view(await call.state.db.write(routes.put_routing(call.tenant, new, call.actor)))


@notify_api.route("POST", f"{T}/route/test", permission="notify.read", tags=("routing",),
                  request=SAMPLE_EVENT, response=PLAN_OUT,
                  summary="Dry run: which rules match an event, who would be told on which channels, and what "
                          "is silenced, inhibited, rate limited or held by quiet hours, and why. Sends nothing")
async def route_test_endpoint(call: Call) -> Any:
    event = sample_event(call.tenant, call.body)
    db = call.state.db

    def run() -> dict[str, Any]:
        with db.reader() as conn:
            result = plan(conn, routes.load_routing(conn, call.tenant), event, time.time())
        return {"version": result.version, **result.as_data()}
    return await asyncio.to_thread(run)


@notify_api.route("GET", f"{T}/route/stats", permission="notify.read", tags=("routing",), response=LIST,
                  summary="Per rule: how many notifications it matched, sent, held, suppressed and escalated")
async def route_stats_endpoint(call: Call) -> Any:
    return {"rules": (await call.state.db.read(route_stats, call.tenant))}


# --- silences -----------------------------------------------------------------------------------

@notify_api.route("GET", f"{T}/silences", permission="notify.read", tags=("silences",), response=LIST,
                  query={"state": {"type": "string", "enum": ["pending", "active", "expired"]}},
                  summary="Silences and maintenance windows, newest first")
async def list_silences_endpoint(call: Call) -> Any:
    now = datetime.now(timezone.utc)
    found = [s.public(now) for s in (await call.state.db.read(silences.list_silences, call.tenant, at=now))]
    if "state" in call.params:
        found = [s for s in found if s["state"] == call.params["state"]]
    return {"silences": found}


@notify_api.route("POST", f"{T}/silences", permission="silence.write", tags=("silences",),
                  request=silences.SILENCE_INPUT, response=silences.SILENCE_OUTPUT, status=201, errors=(422,),
                  summary="Create a silence: matchers, start, a required end, a comment; ledgered, and the "
                          "responders are told. Matchers matching everything need force")
async def create_silence_endpoint(call: Call) -> Any:
    now = datetime.now(timezone.utc)
    silence = silences.normalise(call.tenant, call.body, call.actor, now)
    created = await call.state.db.write(silences.create_silence(silence))
    call.state.runtime.wake_timers()
    return created.public(now)


def _silence_id(call: Call) -> str:
    value = call.params["silence"]
    if len(value) > 64:
        raise FieldError("silence", "not a silence id")
    return value


@notify_api.route("GET", f"{T}/silences/{{silence}}", permission="notify.read", tags=("silences",),
                  response=silences.SILENCE_OUTPUT, errors=(404, 422), summary="One silence")
async def get_silence_endpoint(call: Call) -> Any:
    found = (await call.state.db.read(silences.get_silence, call.tenant, _silence_id(call)))
    return found.public(datetime.now(timezone.utc))


@notify_api.route("DELETE", f"{T}/silences/{{silence}}", permission="silence.write", tags=("silences",),
                  response=silences.SILENCE_OUTPUT, errors=(404, 409, 422),
                  summary="Expire a silence now (ledgered; the responders are told)")
async def expire_silence_endpoint(call: Call) -> Any:
    ended = await call.state.db.write(silences.expire_silence(call.tenant, _silence_id(call), call.actor))
    call.state.runtime.wake_timers()
    return ended.public(datetime.now(timezone.utc))


# --- the outbox -----------------------------------------------------------------------------------

@notify_api.route("GET", f"{T}/notifications", permission="notify.read", tags=("notifications",), response=LIST,
                  query={"state": {"type": "string", "enum": list(outbox.STATES)},
                         "incident": {"type": "string", "maxLength": 64},
                         "limit": {"type": "integer", "minimum": 1, "maximum": 1000}},
                  summary="Stored notifications, newest first: recipient, state and why, attempts, channel")
async def list_notifications_endpoint(call: Call) -> Any:
    rows = await call.state.db.read(outbox.listing, call.tenant, state=call.params.get("state"),
                                    incident=call.params.get("incident"), limit=call.params.get("limit", 100))
    return {"notifications": [r.public() for r in rows]}


@notify_api.route("GET", f"{T}/notifications/dead", permission="notify.read", tags=("notifications",), response=LIST,
                  summary="Notification dead letters: every channel kept failing until the deadline")
async def dead_letters_endpoint(call: Call) -> Any:
    rows = await call.state.db.read(outbox.listing, call.tenant, state="dead", limit=1000)
    return {"dead_letters": [r.public() for r in rows]}


@notify_api.route("POST", f"{T}/notifications/{{id}}/retry", permission="notify.write", tags=("notifications",),
                  response=outbox.OUTBOX_OUTPUT, errors=(404, 409, 422),
                  summary="Send a dead letter again from its recipient's first channel, with a fresh deadline")
async def retry_dead_endpoint(call: Call) -> Any:
    raw = call.params["id"]
    if not raw.isdigit() or len(raw) > 18:
        raise ApiError(422, "invalid", "must be a notification id (an integer)", "id")
    db = call.state.db
    routing = (await db.read(routes.load_routing, call.tenant))
    row = await db.write(outbox.retry_dead(call.tenant, int(raw), call.actor, time.time(), routing.retry_for))
    call.state.runtime.sender.wake()
    return row.public()


# --- on-call schedules ----------------------------------------------------------------------------

def _schedule_id(call: Call) -> str:
    return people.check_id(call.params["schedule"], "schedule")


@notify_api.route("GET", f"{T}/schedules", permission="notify.read", tags=("schedules",), response=LIST,
                  summary="The tenant's on-call schedules, with who is on call now")
async def list_schedules_endpoint(call: Call) -> Any:
    now = datetime.now(timezone.utc)
    out = []
    for s in (await call.state.db.read(schedules.list_schedules, call.tenant)):
        person, why = s.on_call(now)
        out.append({**s.public(), "on_call_now": person, "why": why})
    return {"schedules": out}


@notify_api.route("PUT", f"{T}/schedules/{{schedule}}", permission="notify.write", tags=("schedules",),
                  request=schedules.SCHEDULE_INPUT, response=LIST, errors=(422,),
                  summary="Add or replace a schedule: layers of rotations (daily, weekly, hours) with a hand-off "
                          "time in the schedule's zone; ledgered")
async def put_schedule_endpoint(call: Call) -> Any:
    found = schedules.build(call.tenant, _schedule_id(call), call.body)
    return (await call.state.db.write(schedules.put_schedule(found, call.actor))).public()


@notify_api.route("GET", f"{T}/schedules/{{schedule}}", permission="notify.read", tags=("schedules",),
                  response=LIST, errors=(404, 422), summary="One schedule")
async def get_schedule_endpoint(call: Call) -> Any:
    return (await call.state.db.read(schedules.get_schedule, call.tenant, _schedule_id(call))).public()


@notify_api.route("DELETE", f"{T}/schedules/{{schedule}}", permission="notify.write", tags=("schedules",),
                  response=LIST, errors=(404, 422), summary="Remove a schedule and its overrides")
async def remove_schedule_endpoint(call: Call) -> Any:
    return (await call.state.db.write(schedules.remove_schedule(call.tenant, _schedule_id(call), call.actor))).public()


@notify_api.route("GET", f"{T}/schedules/{{schedule}}/oncall", permission="notify.read", tags=("schedules",),
                  query={"at": {"type": "string", "maxLength": 40}}, response=LIST, errors=(404, 422),
                  summary="Who is on call now, or at ?at= (RFC 3339), and why (a layer or an override)")
async def on_call_endpoint(call: Call) -> Any:
    at = schedules.check_when(silences.parse_time(call.params["at"], "at"), "at") if "at" in call.params \
        else datetime.now(timezone.utc)
    found = (await call.state.db.read(schedules.get_schedule, call.tenant, _schedule_id(call)))
    person, why = found.on_call(at)
    return {"schedule": found.id, "at": at.strftime("%Y-%m-%dT%H:%M:%SZ"), "person": person, "why": why}


@notify_api.route("POST", f"{T}/schedules/{{schedule}}/overrides", permission="notify.write", tags=("schedules",),
                  request=schedules.OVERRIDE_INPUT, response=LIST, status=201, errors=(404, 422),
                  summary="Put a person on call for a period, over every layer; ledgered")
async def add_override_endpoint(call: Call) -> Any:
    made = await call.state.db.write(schedules.add_override(call.tenant, _schedule_id(call), call.body, call.actor))
    return made.public()


@notify_api.route("DELETE", f"{T}/schedules/{{schedule}}/overrides/{{override}}", permission="notify.write",
                  tags=("schedules",), response=LIST, errors=(404, 422), summary="Remove an override; ledgered")
async def remove_override_endpoint(call: Call) -> Any:
    await call.state.db.write(schedules.remove_override(call.tenant, _schedule_id(call), call.params["override"][:64],
                                                        call.actor))
    return {"removed": call.params["override"][:64]}


@notify_api.route("GET", f"{T}/schedules/{{schedule}}/calendar.ics", permission="notify.read", tags=("schedules",),
                  query={"days": {"type": "integer", "minimum": 1, "maximum": 366}}, response={"type": "string"},
                  media_type="text/calendar", errors=(404, 422),
                  summary="The schedule's shifts for the next ?days= (default 28) as iCalendar")
async def schedule_ics_endpoint(call: Call) -> Any:
    schedule_id = _schedule_id(call)
    found, names = await call.state.db.read(lambda conn: (
        schedules.get_schedule(conn, call.tenant, schedule_id),
        {p.id: p.name for p in people.list_people(conn, call.tenant)}))
    body = await asyncio.to_thread(schedules.ical, found, names, datetime.now(timezone.utc),
                                   call.params.get("days", 28))
    return Response(body, media_type="text/calendar; charset=utf-8",
                    headers={"Content-Disposition": f'attachment; filename="{found.id}.ics"'})
