"""On-call schedules from the appliance's shell: ``schedule set|list|oncall|override|ics``."""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import click

from ..notify import people, schedules
from ..notify.silences import parse_time
from ..tenancy.tenants import get_tenant
from .common import EXIT_USAGE, Fail, appliance, cli_actor, data_dir_option, echo_json

tenant_option = click.option("--tenant", "tenant_id", required=True, help="The tenant.")


@click.group()
def schedule() -> None:
    """On-call schedules: rotations in layers, overrides, who is on call, iCalendar."""


@schedule.command("set")
@data_dir_option
@tenant_option
@click.argument("schedule_id")
@click.argument("file", type=click.File("r"))
@click.pass_context
def schedule_set(ctx: click.Context, data_dir: Path | None, tenant_id: str, schedule_id: str, file: Any) -> None:
    """Add or replace a schedule from FILE (JSON: name, time_zone, layers). Ledgered."""
    try:
        doc = json.load(file)
    except ValueError as exc:
        raise Fail(f"{file.name} is not valid JSON: {exc}", EXIT_USAGE) from None
    with appliance(ctx, data_dir) as (db, _vault, _config):
        found = schedules.build(tenant_id, schedule_id, doc)
        echo_json(db.write_sync(schedules.put_schedule(found, cli_actor())).public())


@schedule.command("list")
@data_dir_option
@tenant_option
@click.pass_context
def schedule_list(ctx: click.Context, data_dir: Path | None, tenant_id: str) -> None:
    """List the tenant's schedules as JSON, with who is on call now."""
    now = datetime.now(timezone.utc)
    with appliance(ctx, data_dir) as (db, _vault, _config):
        get_tenant(db.read_conn(), tenant_id)
        echo_json([{**s.public(), "on_call_now": s.on_call(now)[0]}
                   for s in schedules.list_schedules(db.read_conn(), tenant_id)])


@schedule.command("oncall")
@data_dir_option
@tenant_option
@click.argument("schedule_id")
@click.option("--at", "at", default=None, help="An RFC 3339 time (default now).")
@click.pass_context
def schedule_oncall(ctx: click.Context, data_dir: Path | None, tenant_id: str, schedule_id: str,
                    at: str | None) -> None:
    """Who is on call now, or at --at, and why."""
    with appliance(ctx, data_dir) as (db, _vault, _config):
        when = schedules.check_when(parse_time(at, "--at"), "--at") if at else datetime.now(timezone.utc)
        person, why = schedules.get_schedule(db.read_conn(), tenant_id, schedule_id).on_call(when)
        echo_json({"schedule": schedule_id, "at": when.strftime("%Y-%m-%dT%H:%M:%SZ"), "person": person, "why": why})


@schedule.command("override")
@data_dir_option
@tenant_option
@click.argument("schedule_id")
@click.option("--person", required=True, help="Who is on call instead.")
@click.option("--starts", required=True, help="From (RFC 3339).")
@click.option("--ends", required=True, help="Until (RFC 3339).")
@click.pass_context
def schedule_override(ctx: click.Context, data_dir: Path | None, tenant_id: str, schedule_id: str, person: str,
                      starts: str, ends: str) -> None:
    """Put a person on call for a period, over every layer. Ledgered."""
    with appliance(ctx, data_dir) as (db, _vault, _config):
        made = db.write_sync(schedules.add_override(tenant_id, schedule_id, {
            "person": person, "starts_at": starts, "ends_at": ends}, cli_actor()))
        echo_json(made.public())


@schedule.command("ics")
@data_dir_option
@tenant_option
@click.argument("schedule_id")
@click.option("--days", type=click.IntRange(1, 366), default=28, show_default=True, help="How far ahead.")
@click.pass_context
def schedule_ics(ctx: click.Context, data_dir: Path | None, tenant_id: str, schedule_id: str, days: int) -> None:
    """The schedule's shifts as iCalendar, for people's calendars."""
    with appliance(ctx, data_dir) as (db, _vault, _config):
        conn = db.read_conn()
        found = schedules.get_schedule(conn, tenant_id, schedule_id)
        names = {p.id: p.name for p in people.list_people(conn, tenant_id)}
        click.echo(schedules.ical(found, names, datetime.now(timezone.utc), days), nl=False)


COMMANDS = [schedule]
