"""``alertengine tenant | key | service``: tenancy administration from the appliance's own shell."""

from __future__ import annotations

import contextlib
import getpass
import json
from pathlib import Path
from typing import Any, Callable, Iterator

import click

from .access import APPLIANCE_ADMIN, TENANT_ROLES
from .cli import EXIT_USAGE, Fail, _config, _data, data_dir_option
from .errors import AlertEngineError, FieldError, NotFoundError
from .services import create_service, get_service, list_services, normalise, remove_service
from .store import Database, WriteTx
from .tenants import create_integration, create_key, create_tenant, get_tenant, list_integrations, list_keys
from .tenants import list_tenants, revoke_integration, revoke_key
from .vault import SecretVault


def _actor() -> str:
    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):
        return "cli:unknown"


@contextlib.contextmanager
def _appliance(ctx: click.Context, data_dir: Path | None) -> Iterator[tuple[Database, SecretVault, Any]]:
    config = _config(ctx, data_dir=data_dir)
    data = _data(config)
    db = data.open_database(config)
    try:
        yield db, SecretVault(data.secret("vault.key")), config
    except NotFoundError as exc:
        raise Fail(f"{exc.what} not found") from None
    except FieldError as exc:
        raise Fail(f"{exc.field}: {exc.message}" if exc.field else exc.message, EXIT_USAGE) from None
    except AlertEngineError as exc:
        raise Fail(str(exc)) from None
    finally:
        db.close()


def _write(db: Database, fn: Callable[[WriteTx], Any]) -> Any:
    return db.write_sync(fn)


def _echo(obj: Any) -> None:
    click.echo(json.dumps(obj, indent=1))


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
    with _appliance(ctx, data_dir) as (db, _vault, _config):
        _echo(_write(db, create_tenant(name, _actor())).public())


@tenant.command("list")
@data_dir_option
@click.pass_context
def tenant_list(ctx: click.Context, data_dir: Path | None) -> None:
    """List tenants as JSON."""
    with _appliance(ctx, data_dir) as (db, _vault, _config):
        _echo([t.public() for t in list_tenants(db.read_conn())])


@tenant.command("show")
@data_dir_option
@click.argument("tenant_id")
@click.pass_context
def tenant_show(ctx: click.Context, data_dir: Path | None, tenant_id: str) -> None:
    """Show one tenant as JSON."""
    with _appliance(ctx, data_dir) as (db, _vault, _config):
        _echo(get_tenant(db.read_conn(), tenant_id).public())


# --- keys ---------------------------------------------------------------------------------------

@click.group()
def key() -> None:
    """Create, list and revoke API keys."""


@key.command("create")
@data_dir_option
@click.option("--tenant", "tenant_id", default=None, help="The tenant the key acts in.")
@click.option("--role", type=click.Choice(TENANT_ROLES), default=None, help="The key's role in its tenant.")
@click.option("--admin", is_flag=True, help="An appliance-admin key instead (manages tenants).")
@click.option("--name", required=True, help="What the key is for (shown in listings and the ledger).")
@click.pass_context
def key_create(ctx: click.Context, data_dir: Path | None, tenant_id: str | None, role: str | None, admin: bool,
               name: str) -> None:
    """Mint an API key. Its secret is printed once and stored only as a hash."""
    if admin == (tenant_id is not None) or (tenant_id is not None and role is None):
        raise Fail("give either --admin, or --tenant and --role", EXIT_USAGE)
    with _appliance(ctx, data_dir) as (db, _vault, _config):
        new, secret = _write(db, create_key(tenant_id, APPLIANCE_ADMIN if admin else str(role), name, _actor()))
        _echo({"key": new.public(), "secret": secret})
        click.echo("Store the secret now: it is not shown again.", err=True)


@key.command("list")
@data_dir_option
@click.option("--tenant", "tenant_id", default=None, help="List this tenant's keys (default: appliance-admin keys).")
@click.pass_context
def key_list(ctx: click.Context, data_dir: Path | None, tenant_id: str | None) -> None:
    """List keys (never their secrets) as JSON."""
    with _appliance(ctx, data_dir) as (db, _vault, _config):
        if tenant_id is not None:
            get_tenant(db.read_conn(), tenant_id)
        _echo([k.public() for k in list_keys(db.read_conn(), tenant_id, appliance=tenant_id is None)])


@key.command("revoke")
@data_dir_option
@click.argument("key_id")
@click.pass_context
def key_revoke(ctx: click.Context, data_dir: Path | None, key_id: str) -> None:
    """Revoke a key; a running appliance refuses it from the next request on."""
    with _appliance(ctx, data_dir) as (db, _vault, _config):
        _echo(_write(db, revoke_key(key_id, None, _actor())).public())


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
    with _appliance(ctx, data_dir) as (db, vault, config):
        spec = normalise(body, config.url_policy)
        svc, secret = _write(db, create_service(tenant_id, name, spec, vault, _actor()))
        _echo(svc.public(secret=secret))


@service.command("list")
@data_dir_option
@click.option("--tenant", "tenant_id", required=True, help="The tenant whose services to list.")
@click.pass_context
def service_list(ctx: click.Context, data_dir: Path | None, tenant_id: str) -> None:
    """List a tenant's services as JSON."""
    with _appliance(ctx, data_dir) as (db, vault, _config):
        get_tenant(db.read_conn(), tenant_id)
        _echo([s.public() for s in list_services(db.read_conn(), tenant_id, vault)])


@service.command("show")
@data_dir_option
@click.option("--tenant", "tenant_id", required=True, help="The tenant that owns the service.")
@click.argument("service_id")
@click.pass_context
def service_show(ctx: click.Context, data_dir: Path | None, tenant_id: str, service_id: str) -> None:
    """Show one service as JSON (the signing secret only as a fingerprint)."""
    with _appliance(ctx, data_dir) as (db, vault, _config):
        _echo(get_service(db.read_conn(), tenant_id, service_id, vault).public())


@service.command("remove")
@data_dir_option
@click.option("--tenant", "tenant_id", required=True, help="The tenant that owns the service.")
@click.argument("service_id")
@click.pass_context
def service_remove(ctx: click.Context, data_dir: Path | None, tenant_id: str, service_id: str) -> None:
    """Remove a service."""
    with _appliance(ctx, data_dir) as (db, vault, _config):
        _echo(_write(db, remove_service(tenant_id, service_id, vault, _actor())).public())


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
    with _appliance(ctx, data_dir) as (db, _vault, _config):
        item, key_text = _write(db, create_integration(tenant_id, name, _actor()))
        _echo({"integration": item.public(), "key": key_text})
        click.echo("Store the key now: it is not shown again.", err=True)


@integration.command("list")
@data_dir_option
@click.option("--tenant", "tenant_id", required=True, help="The tenant whose ingest keys to list.")
@click.pass_context
def integration_list(ctx: click.Context, data_dir: Path | None, tenant_id: str) -> None:
    """List a tenant's ingest keys (never the keys) as JSON."""
    with _appliance(ctx, data_dir) as (db, _vault, _config):
        get_tenant(db.read_conn(), tenant_id)
        _echo([i.public() for i in list_integrations(db.read_conn(), tenant_id)])


@integration.command("revoke")
@data_dir_option
@click.option("--tenant", "tenant_id", required=True, help="The tenant that owns the key.")
@click.argument("integration_id")
@click.pass_context
def integration_revoke(ctx: click.Context, data_dir: Path | None, tenant_id: str, integration_id: str) -> None:
    """Revoke an ingest key at once."""
    with _appliance(ctx, data_dir) as (db, _vault, _config):
        _echo(_write(db, revoke_integration(tenant_id, integration_id, _actor())).public())


# --- dead letters -------------------------------------------------------------------------------

@click.group()
def dlq() -> None:
    """Inspect the dead-letter queue of failed recovery calls."""


@dlq.command("list")
@data_dir_option
@click.option("--tenant", "tenant_id", required=True, help="The tenant whose dead letters to list.")
@click.pass_context
def dlq_list(ctx: click.Context, data_dir: Path | None, tenant_id: str) -> None:
    """List a tenant's dead letters as JSON, newest first."""
    from .deadletters import list_dead_letters
    with _appliance(ctx, data_dir) as (db, _vault, _config):
        get_tenant(db.read_conn(), tenant_id)
        _echo([d.public() for d in list_dead_letters(db.read_conn(), tenant_id)])


@dlq.command("show")
@data_dir_option
@click.option("--tenant", "tenant_id", required=True, help="The tenant that owns the dead letter.")
@click.argument("letter_id")
@click.pass_context
def dlq_show(ctx: click.Context, data_dir: Path | None, tenant_id: str, letter_id: str) -> None:
    """Show one dead letter: payload, attempts and the final answer."""
    from .deadletters import get_dead_letter
    with _appliance(ctx, data_dir) as (db, _vault, _config):
        _echo(get_dead_letter(db.read_conn(), tenant_id, letter_id).public())


# --- telegram -----------------------------------------------------------------------------------

@click.group()
def telegram() -> None:
    """Connect a tenant's Telegram bot to this appliance."""


@telegram.command("set-webhook")
@data_dir_option
@click.option("--tenant", "tenant_id", required=True, help="The tenant whose bot to connect.")
@click.option("--url", default=None, help="Public URL Telegram should call (default: public_url/bot/telegram/<tenant>).")
@click.pass_context
def telegram_set_webhook(ctx: click.Context, data_dir: Path | None, tenant_id: str, url: str | None) -> None:
    """Register the bot webhook with Telegram (setWebhook), creating the webhook secret if missing."""
    import asyncio
    import secrets as random

    import httpx

    from .channels.settings import channel_secrets, put_channel
    from .channels.telegram import TelegramClient

    with _appliance(ctx, data_dir) as (db, vault, config):
        get_tenant(db.read_conn(), tenant_id)
        stored = channel_secrets(db.read_conn(), tenant_id, "telegram", vault)
        if not stored.get("bot_token"):
            raise Fail("the tenant has no telegram bot_token: set it with PUT /api/notifications/channels/telegram")
        if not stored.get("webhook_secret"):
            stored["webhook_secret"] = random.token_urlsafe(32)
            _write(db, put_channel(tenant_id, "telegram", {"secrets": {"webhook_secret": stored["webhook_secret"]}},
                                   config.url_policy, vault, _actor()))
        row = db.read_conn().execute("SELECT config FROM channels WHERE tenant = ? AND kind = 'telegram'",
                                     (tenant_id,)).fetchone()
        base = json.loads(row[0]).get("api_base_url") or "https://api.telegram.org"
        target = url or f"{config.base_url}/bot/telegram/{tenant_id}"

        async def register() -> Any:
            async with httpx.AsyncClient(trust_env=False) as http:
                return await TelegramClient(base, stored["bot_token"], http).set_webhook(target, stored["webhook_secret"])
        delivery = asyncio.run(register())
        if not delivery.delivered:
            raise Fail(f"Telegram refused setWebhook: {delivery.detail}")
        _echo({"tenant": tenant_id, "webhook": target, "result": delivery.detail})


# --- deploys ------------------------------------------------------------------------------------

@click.group()
def deploy() -> None:
    """Record deploys: the commit context the diagnosis reads."""


@deploy.command("record")
@data_dir_option
@click.option("--tenant", "tenant_id", required=True, help="The tenant that deployed.")
@click.option("--sha", required=True, help="Commit id (7-64 hex digits).")
@click.option("--message", default="", help="Commit message.")
@click.option("--author", default=None, help="Author (ledgered only as a fingerprint).")
@click.option("--service", default=None, help="The service deployed (default: any).")
@click.option("--file", "files", multiple=True, help="A changed path (repeatable).")
@click.option("--additions", type=click.IntRange(min=0), default=None, help="Lines added.")
@click.option("--deletions", type=click.IntRange(min=0), default=None, help="Lines deleted.")
@click.option("--time", "when", default=None, help="When it was deployed (RFC 3339; default now).")
@click.pass_context
def deploy_record(ctx: click.Context, data_dir: Path | None, tenant_id: str, sha: str, message: str,
                  author: str | None, service: str | None, files: tuple[str, ...], additions: int | None,
                  deletions: int | None, when: str | None) -> None:
    """Record a deploy; recording the same sha again changes nothing."""
    from .deploys import record_deploy
    body: dict[str, Any] = {"sha": sha, "message": message, "files": list(files)}
    for name, value in (("author", author), ("service", service), ("additions", additions),
                        ("deletions", deletions), ("time", when)):
        if value is not None:
            body[name] = value
    with _appliance(ctx, data_dir) as (db, _vault, _config):
        get_tenant(db.read_conn(), tenant_id)
        _echo(_write(db, record_deploy(tenant_id, body, _actor(), source="cli")).public())
