"""``alertengine tenant | key | service | integration``: tenancy administration from the appliance's shell."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from ..tenancy.access import APPLIANCE_ADMIN, SCRAPE, TENANT_ROLES
from ..tenancy.services import (
    create_service,
    get_service,
    list_services,
    normalise,
    remove_service,
)
from ..tenancy.tenants import (
    create_integration,
    create_key,
    create_tenant,
    get_tenant,
    list_integrations,
    list_keys,
    list_tenants,
    revoke_integration,
    revoke_key,
)
from .common import EXIT_USAGE, Fail, appliance, cli_actor, data_dir_option, echo_json

# --- tenants ------------------------------------------------------------------------------------

@click.group()
def tenant() -> None:
    """Create and inspect tenants."""


@tenant.command("add")
@data_dir_option
@click.argument("name")
@click.pass_context
def tenant_add(ctx: click.Context, data_dir: Path | None, name: str) -> None:
    """Create a tenant (it starts in shadow mode). Prints it as JSON."""
    with appliance(ctx, data_dir) as (db, _vault, _config):
        echo_json(db.write_sync(create_tenant(name, cli_actor())).public())


@tenant.command("list")
@data_dir_option
@click.pass_context
def tenant_list(ctx: click.Context, data_dir: Path | None) -> None:
    """List tenants as JSON."""
    with appliance(ctx, data_dir) as (db, _vault, _config):
        echo_json([t.public() for t in list_tenants(db.read_conn())])


@tenant.command("show")
@data_dir_option
@click.argument("tenant_id")
@click.pass_context
def tenant_show(ctx: click.Context, data_dir: Path | None, tenant_id: str) -> None:
    """Show one tenant as JSON."""
    with appliance(ctx, data_dir) as (db, _vault, _config):
        echo_json(get_tenant(db.read_conn(), tenant_id).public())


# --- keys ---------------------------------------------------------------------------------------

@click.group()
def key() -> None:
    """Create, list and revoke API keys."""


@key.command("create")
@data_dir_option
@click.option("--tenant", "tenant_id", default=None, help="The tenant the key acts in.")
@click.option("--role", type=click.Choice(TENANT_ROLES), default=None, help="The key's role in its tenant.")
@click.option("--admin", is_flag=True, help="An appliance-admin key instead (manages tenants).")
@click.option("--scrape", is_flag=True, help="A scrape key: reads /metrics and nothing else (a Prometheus job's).")
@click.option("--name", required=True, help="What the key is for (shown in listings and the ledger).")
@click.pass_context
def key_create(ctx: click.Context, data_dir: Path | None, tenant_id: str | None, role: str | None, admin: bool,
               scrape: bool, name: str) -> None:
    """Mint an API key. Its secret is printed once and stored only as a hash."""
    if admin + scrape + (tenant_id is not None) != 1 or (tenant_id is not None) != (role is not None):
        raise Fail("give exactly one of --admin, --scrape, or --tenant with --role", EXIT_USAGE)
    with appliance(ctx, data_dir) as (db, _vault, _config):
        new, secret = db.write_sync(create_key(
            tenant_id, APPLIANCE_ADMIN if admin else SCRAPE if scrape else str(role), name, cli_actor()))
        echo_json({"key": new.public(), "secret": secret})
        click.echo("Store the secret now: it is not shown again.", err=True)


@key.command("list")
@data_dir_option
@click.option("--tenant", "tenant_id", default=None, help="List this tenant's keys (default: appliance-admin keys).")
@click.pass_context
def key_list(ctx: click.Context, data_dir: Path | None, tenant_id: str | None) -> None:
    """List keys (never their secrets) as JSON."""
    with appliance(ctx, data_dir) as (db, _vault, _config):
        if tenant_id is not None:
            get_tenant(db.read_conn(), tenant_id)
        echo_json([k.public() for k in list_keys(db.read_conn(), tenant_id, appliance=tenant_id is None)])


@key.command("revoke")
@data_dir_option
@click.argument("key_id")
@click.pass_context
def key_revoke(ctx: click.Context, data_dir: Path | None, key_id: str) -> None:
    """Revoke a key; a running appliance refuses it from the next request on."""
    with appliance(ctx, data_dir) as (db, _vault, _config):
        echo_json(db.write_sync(revoke_key(key_id, None, cli_actor())).public())


# --- services -----------------------------------------------------------------------------------

@click.group()
def service() -> None:
    """Add, list, show and remove monitored services."""


@service.command("add")
@data_dir_option
@click.option("--tenant", "tenant_id", required=True, help="The tenant that owns the service.")
@click.option("--name", required=True, help="Service name, unique in the tenant.")
@click.option("--health-url", required=True, help="URL polled for health.")
@click.option("--interval", type=float, default=None, help="Poll interval in seconds (default 5).")
@click.option("--webhook-url", default=None, help="Recovery webhook URL (called, signed, after approval).")
@click.option("--label", "labels", multiple=True, help="A label as key=value (repeatable).")
@click.option("--json-file", type=click.File("r"), default=None,
              help="A full service definition as JSON (contacts, approvers, policy); flags override it.")
@click.pass_context
def service_add(ctx: click.Context, data_dir: Path | None, tenant_id: str, name: str, health_url: str,
                interval: float | None, webhook_url: str | None, labels: tuple[str, ...], json_file: Any) -> None:
    """Add a service. Prints it with its webhook signing secret, shown once."""
    body: dict[str, Any] = json.load(json_file) if json_file else {}
    body.update(name=name, health_url=health_url)
    if interval is not None:
        body["poll_interval"] = interval
    if webhook_url is not None:
        body["recovery_webhook_url"] = webhook_url
    for label in labels:
        k, sep, v = label.partition("=")
        if not sep or not k:
            raise Fail(f"--label must be key=value, got {label!r}", EXIT_USAGE)
        body.setdefault("labels", {})[k] = v
    with appliance(ctx, data_dir) as (db, vault, config):
        spec = normalise(body, config.url_policy)
        svc, secret = db.write_sync(create_service(tenant_id, name, spec, vault, cli_actor()))
        echo_json(svc.public(secret=secret))


@service.command("list")
@data_dir_option
@click.option("--tenant", "tenant_id", required=True, help="The tenant whose services to list.")
@click.pass_context
def service_list(ctx: click.Context, data_dir: Path | None, tenant_id: str) -> None:
    """List a tenant's services as JSON."""
    with appliance(ctx, data_dir) as (db, vault, _config):
        get_tenant(db.read_conn(), tenant_id)
        echo_json([s.public() for s in list_services(db.read_conn(), tenant_id, vault)])


@service.command("show")
@data_dir_option
@click.option("--tenant", "tenant_id", required=True, help="The tenant that owns the service.")
@click.argument("service_id")
@click.pass_context
def service_show(ctx: click.Context, data_dir: Path | None, tenant_id: str, service_id: str) -> None:
    """Show one service as JSON (the signing secret only as a fingerprint)."""
    with appliance(ctx, data_dir) as (db, vault, _config):
        echo_json(get_service(db.read_conn(), tenant_id, service_id, vault).public())


@service.command("remove")
@data_dir_option
@click.option("--tenant", "tenant_id", required=True, help="The tenant that owns the service.")
@click.argument("service_id")
@click.pass_context
def service_remove(ctx: click.Context, data_dir: Path | None, tenant_id: str, service_id: str) -> None:
    """Remove a service."""
    with appliance(ctx, data_dir) as (db, vault, _config):
        echo_json(db.write_sync(remove_service(tenant_id, service_id, vault, cli_actor())).public())


# --- ingest integrations ------------------------------------------------------------------------

@click.group()
def integration() -> None:
    """Create, list and revoke ingest keys (Alertmanager, Grafana, PagerDuty, events, heartbeats)."""


@integration.command("create")
@data_dir_option
@click.option("--tenant", "tenant_id", required=True, help="The tenant whose alerts this key delivers.")
@click.option("--name", required=True, help="What sends with it, e.g. prometheus-prod.")
@click.pass_context
def integration_create(ctx: click.Context, data_dir: Path | None, tenant_id: str, name: str) -> None:
    """Mint an ingest key; printed once. Use it as a bearer token, the URL's last segment or a routing_key."""
    with appliance(ctx, data_dir) as (db, _vault, _config):
        item, key_text = db.write_sync(create_integration(tenant_id, name, cli_actor()))
        echo_json({"integration": item.public(), "key": key_text})
        click.echo("Store the key now: it is not shown again.", err=True)


@integration.command("list")
@data_dir_option
@click.option("--tenant", "tenant_id", required=True, help="The tenant whose ingest keys to list.")
@click.pass_context
def integration_list(ctx: click.Context, data_dir: Path | None, tenant_id: str) -> None:
    """List a tenant's ingest keys (never the keys) as JSON."""
    with appliance(ctx, data_dir) as (db, _vault, _config):
        get_tenant(db.read_conn(), tenant_id)
        echo_json([i.public() for i in list_integrations(db.read_conn(), tenant_id)])


@integration.command("revoke")
@data_dir_option
@click.option("--tenant", "tenant_id", required=True, help="The tenant that owns the key.")
@click.argument("integration_id")
@click.pass_context
def integration_revoke(ctx: click.Context, data_dir: Path | None, tenant_id: str, integration_id: str) -> None:
    """Revoke an ingest key at once."""
    with appliance(ctx, data_dir) as (db, _vault, _config):
        echo_json(db.write_sync(revoke_integration(tenant_id, integration_id, cli_actor())).public())


COMMANDS = (tenant, key, service, integration)
