"""Who hears what, from the appliance's shell: ``person``, ``team``, ``route`` (show, set, test,
stats), ``silence`` (add, list, expire) and ``notify`` (list, dead-letters, retry)."""

from __future__ import annotations

import json
import re
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import click

from ..errors import FieldError
from ..notify import outbox, people, routes, silences
from ..notify.gateway import route_stats
from ..notify.router import plan, sample_event
from ..notify.schedules import check_when
from ..tenancy.tenants import get_tenant
from .common import EXIT_USAGE, Fail, appliance, cli_actor, data_dir_option, echo_json

tenant_option = click.option("--tenant", "tenant_id", required=True, help="The tenant.")


# --- people and teams ---------------------------------------------------------------------------

@click.group()
def person() -> None:
    """Add, list and remove the people notifications reach."""


@person.command("set")
@data_dir_option
@tenant_option
@click.argument("person_id")
@click.option("--name", required=True, help="How messages and pages name them.")
@click.option("--time-zone", default="UTC", show_default=True, help="IANA zone, e.g. Europe/Berlin.")
@click.option("--telegram", help="Telegram chat id.")
@click.option("--whatsapp", help="WhatsApp number, E.164 (+4915...).")
@click.option("--voice", help="Phone number for calls, E.164.")
@click.option("--slack", help="Slack user id (U...).")
@click.option("--email", help="E-mail address.")
@click.option("--channels", help="Order to try their channels, comma-separated (default: every address given).")
@click.pass_context
def person_set(ctx: click.Context, data_dir: Path | None, tenant_id: str, person_id: str, name: str, time_zone: str,
               channels: str | None, **addresses: str | None) -> None:
    """Add or replace a person. Prints them as JSON."""
    body: dict[str, Any] = {"name": name, "time_zone": time_zone,
                            "addresses": {k: v for k, v in addresses.items() if v is not None}}
    if channels:
        body["channels"] = [c.strip() for c in channels.split(",") if c.strip()]
    with appliance(ctx, data_dir) as (db, _vault, _config):
        saved, _new = db.write_sync(people.put_person(people.normalise_person(tenant_id, person_id, body), cli_actor()))
        echo_json(saved.public())


@person.command("list")
@data_dir_option
@tenant_option
@click.pass_context
def person_list(ctx: click.Context, data_dir: Path | None, tenant_id: str) -> None:
    """List a tenant's people as JSON."""
    with appliance(ctx, data_dir) as (db, _vault, _config):
        get_tenant(db.read_conn(), tenant_id)
        echo_json([p.public() for p in people.list_people(db.read_conn(), tenant_id)])


@person.command("remove")
@data_dir_option
@tenant_option
@click.argument("person_id")
@click.pass_context
def person_remove(ctx: click.Context, data_dir: Path | None, tenant_id: str, person_id: str) -> None:
    """Remove a person who is in no team."""
    with appliance(ctx, data_dir) as (db, _vault, _config):
        echo_json(db.write_sync(people.remove_person(tenant_id, person_id, cli_actor())).public())


@click.group()
def team() -> None:
    """Add, list and remove teams (ordered lists of people)."""


@team.command("set")
@data_dir_option
@tenant_option
@click.argument("team_id")
@click.option("--name", required=True, help="The team's name.")
@click.option("--member", "members", multiple=True, required=True, help="A person id (repeatable, in order).")
@click.pass_context
def team_set(ctx: click.Context, data_dir: Path | None, tenant_id: str, team_id: str, name: str,
             members: tuple[str, ...]) -> None:
    """Add or replace a team. Prints it as JSON."""
    with appliance(ctx, data_dir) as (db, _vault, _config):
        found = people.normalise_team(tenant_id, team_id, {"name": name, "members": list(members)})
        saved, _new = db.write_sync(people.put_team(found, cli_actor()))
        echo_json(saved.public())


@team.command("list")
@data_dir_option
@tenant_option
@click.pass_context
def team_list(ctx: click.Context, data_dir: Path | None, tenant_id: str) -> None:
    """List a tenant's teams as JSON."""
    with appliance(ctx, data_dir) as (db, _vault, _config):
        get_tenant(db.read_conn(), tenant_id)
        echo_json([t.public() for t in people.list_teams(db.read_conn(), tenant_id)])


@team.command("remove")
@data_dir_option
@tenant_option
@click.argument("team_id")
@click.pass_context
def team_remove(ctx: click.Context, data_dir: Path | None, tenant_id: str, team_id: str) -> None:
    """Remove a team."""
    with appliance(ctx, data_dir) as (db, _vault, _config):
        echo_json(db.write_sync(people.remove_team(tenant_id, team_id, cli_actor())).public())


# --- routing ------------------------------------------------------------------------------------

@click.group()
def route() -> None:
    """Show, set, test and count the tenant's routing rules."""


def _cell(values: Any) -> str:
    if isinstance(values, (list, tuple)):
        return ",".join(str(v) for v in values) or "*"
    return str(values)


@route.command("show")
@data_dir_option
@tenant_option
@click.pass_context
def route_show(ctx: click.Context, data_dir: Path | None, tenant_id: str) -> None:
    """The rules as a readable table, in the order they are tried."""
    with appliance(ctx, data_dir) as (db, _vault, _config):
        get_tenant(db.read_conn(), tenant_id)
        routing = routes.load_routing(db.read_conn(), tenant_id)
    rows = [("#", "RULE", "MATCHES", "RECEIVERS", "LIMITS", "QUIET", "CONTINUE")]
    for i, rule in enumerate(routing.rules, start=1):
        d = rule.describe()
        match = "; ".join(f"{k}={_cell(v)}" for k, v in d["match"].items()) or "everything"
        limits = []
        if rule.rate_limit:
            limits.append(f"{rule.rate_limit}/{rule.rate_window:g}s")
        if rule.escalate_after:
            limits.append(f"x{rule.escalate_after}->{rule.escalate_to}")
        quiet = f"below {rule.quiet.suppress_below}, then {rule.quiet.then}" if rule.quiet else "-"
        rows.append((str(i), rule.name, match, _cell(rule.receivers), ", ".join(limits) or "-", quiet,
                     "yes" if rule.cont else "no"))
    widths = [max(len(r[c]) for r in rows) for c in range(len(rows[0]))]
    for r in rows:
        click.echo("  ".join(cell.ljust(w) for cell, w in zip(r, widths)).rstrip())
    click.echo(f"\nfallback: {_cell(routing.fallback)} · retry for {routing.retry_for:g} s · "
               f"{len(routing.inhibitions)} inhibition rule(s) · version {routing.version}")


@route.command("set")
@data_dir_option
@tenant_option
@click.argument("file", type=click.File("r"))
@click.pass_context
def route_set(ctx: click.Context, data_dir: Path | None, tenant_id: str, file: Any) -> None:
    """Replace the routing document with FILE (TOML; '-' reads standard input). Ledgered."""
    text = file.read()
    with appliance(ctx, data_dir) as (db, _vault, _config):
        saved = db.write_sync(routes.put_routing(tenant_id, routes.parse_routing(text), cli_actor()))
        click.echo(f"routing {saved.version}: {len(saved.rules)} rule(s)")


@route.command("test")
@data_dir_option
@tenant_option
@click.option("--event", "event_json", default=None,
              help='The event as JSON: {"severity": "critical", "service": "checkout", "labels": {...}, "message": ...}')
@click.option("--severity", type=click.Choice(routes.SEVERITIES), help="The event's severity (default medium).")
@click.option("--category", type=click.Choice(routes.CATEGORIES), help="The kind of signal (default alert).")
@click.option("--service", help="The service it is about.")
@click.option("--source", help="Where it came from (alertmanager, grafana, poller, ...).")
@click.option("--message", help="Its text (keywords match title and text).")
@click.option("--at", "at", default=None, help="Route as if at this RFC 3339 time (quiet hours, silences).")
@click.pass_context
def route_test(ctx: click.Context, data_dir: Path | None, tenant_id: str, event_json: str | None, at: str | None,
               **fields: str | None) -> None:
    """Dry run: which rules match, who would be told on which channels, and what is silenced,
    inhibited, rate limited or held by quiet hours, and why. Sends nothing, records nothing."""
    try:
        body = json.loads(event_json) if event_json else {}
    except ValueError as exc:
        raise Fail(f"--event is not valid JSON: {exc}", EXIT_USAGE) from None
    if not isinstance(body, dict):
        raise Fail("--event must be a JSON object", EXIT_USAGE)
    body.update({k: v for k, v in fields.items() if v is not None})
    with appliance(ctx, data_dir) as (db, _vault, _config):
        when = check_when(silences.parse_time(at, "--at"), "--at").timestamp() if at else time.time()
        event = sample_event(tenant_id, body)
        conn = db.read_conn()
        get_tenant(conn, tenant_id)
        result = plan(conn, routes.load_routing(conn, tenant_id), event, when)
    echo_json({"version": result.version, **result.as_data()})


@route.command("stats")
@data_dir_option
@tenant_option
@click.pass_context
def route_stats_command(ctx: click.Context, data_dir: Path | None, tenant_id: str) -> None:
    """Per rule: matched, sent, held, suppressed, escalated."""
    with appliance(ctx, data_dir) as (db, _vault, _config):
        get_tenant(db.read_conn(), tenant_id)
        stats = route_stats(db.read_conn(), tenant_id)
    rows = [("RULE", "MATCHED", "SENT", "HELD", "SUPPRESSED", "ESCALATED")]
    rows += [(s["rule"], *(str(s[k]) for k in ("matched", "sent", "held", "suppressed", "escalated"))) for s in stats]
    widths = [max(len(r[c]) for r in rows) for c in range(len(rows[0]))]
    for r in rows:
        click.echo("  ".join(cell.ljust(w) for cell, w in zip(r, widths)).rstrip())


# --- silences -----------------------------------------------------------------------------------

_DURATION = re.compile(r"^([0-9]{1,6})([smhd])$")


def _end(duration: str | None, ends: str | None, start: datetime) -> str:
    if (duration is None) == (ends is None):
        raise Fail("give exactly one of --duration (e.g. 2h) and --ends (RFC 3339)", EXIT_USAGE)
    if ends is not None:
        return ends
    m = _DURATION.match(duration or "")
    if not m:
        raise Fail(f"--duration must be a number and s, m, h or d (e.g. 90m), got {duration!r}", EXIT_USAGE)
    seconds = int(m.group(1)) * {"s": 1, "m": 60, "h": 3600, "d": 86_400}[m.group(2)]
    return (start + timedelta(seconds=seconds)).strftime("%Y-%m-%dT%H:%M:%SZ")


@click.group()
def silence() -> None:
    """Silence notifications for a while (maintenance windows); list and expire silences."""


@silence.command("add")
@data_dir_option
@tenant_option
@click.option("--match", "matchers", multiple=True, required=True, help='A matcher: service="batch" (repeatable).')
@click.option("--comment", required=True, help="Why: shown to the responders and in the ledger.")
@click.option("--duration", default=None, help="How long, e.g. 2h, 90m, 1d.")
@click.option("--ends", default=None, help="Or when it ends (RFC 3339).")
@click.option("--starts", default=None, help="When it starts (RFC 3339; default now).")
@click.option("--window", "windows", multiple=True,
              help='A recurring window as JSON, e.g. {"times": [{"start_time": "01:00", "end_time": "03:00"}], '
                   '"location": "Europe/Berlin"} (repeatable): the silence holds only inside them.')
@click.option("--force", is_flag=True, help="Allow matchers that match every incident.")
@click.pass_context
def silence_add(ctx: click.Context, data_dir: Path | None, tenant_id: str, matchers: tuple[str, ...], comment: str,
                duration: str | None, ends: str | None, starts: str | None, windows: tuple[str, ...],
                force: bool) -> None:
    """Create a silence; ledgered. The responders are told by the running appliance."""
    now = datetime.now(timezone.utc)
    try:
        start = silences.parse_time(starts, "--starts") if starts else now
    except FieldError as exc:
        raise Fail(f"{exc.field}: {exc.message}", EXIT_USAGE) from None
    body: dict[str, Any] = {"matchers": list(matchers), "comment": comment, "ends_at": _end(duration, ends, start),
                            "force": force}
    if starts:
        body["starts_at"] = starts
    try:
        if windows:
            body["windows"] = [json.loads(w) for w in windows]
    except ValueError as exc:
        raise Fail(f"--window is not valid JSON: {exc}", EXIT_USAGE) from None
    with appliance(ctx, data_dir) as (db, _vault, _config):
        made = db.write_sync(silences.create_silence(silences.normalise(tenant_id, body, cli_actor(), now)))
        echo_json(made.public(now))


@silence.command("list")
@data_dir_option
@tenant_option
@click.option("--all", "show_all", is_flag=True, help="Include expired silences.")
@click.pass_context
def silence_list(ctx: click.Context, data_dir: Path | None, tenant_id: str, show_all: bool) -> None:
    """List silences as JSON (pending and active; --all adds expired)."""
    now = datetime.now(timezone.utc)
    with appliance(ctx, data_dir) as (db, _vault, _config):
        get_tenant(db.read_conn(), tenant_id)
        found = silences.list_silences(db.read_conn(), tenant_id, include_expired=show_all, at=now)
        echo_json([s.public(now) for s in found])


@silence.command("expire")
@data_dir_option
@tenant_option
@click.argument("silence_id")
@click.pass_context
def silence_expire(ctx: click.Context, data_dir: Path | None, tenant_id: str, silence_id: str) -> None:
    """End a silence now; ledgered."""
    with appliance(ctx, data_dir) as (db, _vault, _config):
        echo_json(db.write_sync(silences.expire_silence(tenant_id, silence_id, cli_actor()))
                  .public(datetime.now(timezone.utc)))


# --- the outbox -----------------------------------------------------------------------------------

@click.group()
def notify() -> None:
    """Stored notifications: list them, list the dead letters, send one again."""


@notify.command("list")
@data_dir_option
@tenant_option
@click.option("--state", type=click.Choice(outbox.STATES), default=None, help="Only notifications in this state.")
@click.option("--incident", default=None, help="Only notifications about this incident.")
@click.option("--limit", type=click.IntRange(1, 1000), default=50, show_default=True, help="At most this many.")
@click.pass_context
def notify_list(ctx: click.Context, data_dir: Path | None, tenant_id: str, state: str | None, incident: str | None,
                limit: int) -> None:
    """Stored notifications, newest first, as JSON."""
    with appliance(ctx, data_dir) as (db, _vault, _config):
        get_tenant(db.read_conn(), tenant_id)
        echo_json([r.public() for r in outbox.listing(db.read_conn(), tenant_id, state=state, incident=incident,
                                                      limit=limit)])


@notify.command("dead-letters")
@data_dir_option
@tenant_option
@click.pass_context
def notify_dead(ctx: click.Context, data_dir: Path | None, tenant_id: str) -> None:
    """Notifications that never arrived, as JSON."""
    with appliance(ctx, data_dir) as (db, _vault, _config):
        get_tenant(db.read_conn(), tenant_id)
        echo_json([r.public() for r in outbox.listing(db.read_conn(), tenant_id, state="dead", limit=1000)])


@notify.command("retry")
@data_dir_option
@tenant_option
@click.argument("notification_id", type=int)
@click.pass_context
def notify_retry(ctx: click.Context, data_dir: Path | None, tenant_id: str, notification_id: int) -> None:
    """Queue a dead letter again (the running appliance sends it within seconds). Ledgered."""
    with appliance(ctx, data_dir) as (db, _vault, _config):
        routing = routes.load_routing(db.read_conn(), tenant_id)
        echo_json(db.write_sync(outbox.retry_dead(tenant_id, notification_id, cli_actor(), time.time(),
                                                  routing.retry_for)).public())


COMMANDS = [person, team, route, silence, notify]
