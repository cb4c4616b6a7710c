"""``alertengine dlq | telegram | deploy | approval | migrate-store``: dead letters, the Telegram webhook, deploy
records, approval links, and moving the store to PostgreSQL."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from ..net.guard import guarded_client
from ..tenancy.tenants import get_tenant
from .common import Fail, appliance, cli_actor, data_dir_option, echo_json, open_data

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
    from ..recovery.deadletters import list_dead_letters
    with appliance(ctx, data_dir) as (db, _vault, _config):
        get_tenant(db.read_conn(), tenant_id)
        echo_json([d.public() for d in list_dead_letters(db.read_conn(), tenant_id)])


@dlq.command("show")
@data_dir_option
@click.option("--tenant", "tenant_id", required=True, help="The tenant that owns the dead letter.")
@click.argument("letter_id")
@click.pass_context
def dlq_show(ctx: click.Context, data_dir: Path | None, tenant_id: str, letter_id: str) -> None:
    """Show one dead letter: payload, attempts and the final answer."""
    from ..recovery.deadletters import get_dead_letter
    with appliance(ctx, data_dir) as (db, _vault, _config):
        echo_json(get_dead_letter(db.read_conn(), tenant_id, letter_id).public())


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

    from ..notify.channels.settings import channel_secrets, put_channel
    from ..notify.channels.telegram import TelegramClient

    with appliance(ctx, data_dir) as (db, vault, config):
        get_tenant(db.read_conn(), tenant_id)
        stored = channel_secrets(db.read_conn(), tenant_id, "telegram", vault)
        if not stored.get("bot_token"):
            raise Fail("the tenant has no telegram bot_token: set it with PUT /api/notifications/channels/telegram")
        if not stored.get("webhook_secret"):
            stored["webhook_secret"] = random.token_urlsafe(32)
            db.write_sync(put_channel(tenant_id, "telegram", {"secrets": {"webhook_secret": stored["webhook_secret"]}},
                                   config.url_policy, vault, cli_actor()))
        row = db.read_conn().execute("SELECT config FROM channels WHERE tenant = ? AND kind = 'telegram'",
                                     (tenant_id,)).fetchone()
        base = json.loads(row[0]).get("api_base_url") or "https://api.telegram.org"
        target = url or f"{config.base_url}/bot/telegram/{tenant_id}"

        async def register() -> Any:
            async with guarded_client(config.url_policy) as http:
                return await TelegramClient(base, stored["bot_token"], http).set_webhook(target, stored["webhook_secret"])
        delivery = asyncio.run(register())
        if not delivery.delivered:
            raise Fail(f"Telegram refused setWebhook: {delivery.detail}")
        echo_json({"tenant": tenant_id, "webhook": target, "result": delivery.detail})


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
    from ..diagnosis.deploys import record_deploy
    body: dict[str, Any] = {"sha": sha, "message": message, "files": list(files)}
    for name, value in (("author", author), ("service", service), ("additions", additions),
                        ("deletions", deletions), ("time", when)):
        if value is not None:
            body[name] = value
    with appliance(ctx, data_dir) as (db, _vault, _config):
        get_tenant(db.read_conn(), tenant_id)
        echo_json(db.write_sync(record_deploy(tenant_id, body, cli_actor(), source="cli")).public())





# --- approvals ----------------------------------------------------------------------------------

@click.group()
def approval() -> None:
    """Approval links, for an operator at the appliance's shell."""


@approval.command("link")
@data_dir_option
@click.option("--tenant", "tenant_id", required=True, help="The incident's tenant.")
@click.option("--incident", required=True, help="The incident, e.g. INC-7 (it must be PROPOSED).")
@click.option("--recipient", required=True, help="Who the link is for, as the proposal names them (e.g. primary:Ada).")
@click.option("--choice", default=None, help="The theory to trust (A or B) when the diagnosis dissents.")
@click.pass_context
def approval_link(ctx: click.Context, data_dir: Path | None, tenant_id: str, incident: str, recipient: str,
                  choice: str | None) -> None:
    """Mint a single-use approval link for one recipient and print it (ledgered; never logged).

    Links are never written to the console or the notification files, which are logs; this is how an
    operator with shell access hands one to a person whom no chat channel reaches."""
    from ..recovery.approvals import ApprovalTokens
    from ..recovery.orchestrator import mint_link

    with appliance(ctx, data_dir) as (db, vault, config):
        data = open_data(config)
        tokens = ApprovalTokens(data.secret("token.key"), issuer=data.signer.name)
        click.echo(mint_link(db, vault, tokens, config.base_url, tenant_id, incident, recipient, choice, cli_actor()))
# --- moving to PostgreSQL --------------------------------------------------------------------------

@click.command("migrate-store")
@data_dir_option
@click.option("--to", "target", required=True, metavar="postgresql://…",
              help="The PostgreSQL database to copy into (empty, or with an empty ledger).")
@click.pass_context
def migrate_store(ctx: click.Context, data_dir: Path | None, target: str) -> None:
    """Copy this appliance's SQLite store into PostgreSQL (docs/postgresql.md), then verify the copy.

    Stop `alertengine serve` first. Everything is copied in one transaction and verified with the
    appliance's key; the SQLite file is left as it was. Then set database_url to the same URL."""
    import fcntl
    import sqlite3

    from ..errors import StoreError
    from ..store import pg
    from ..store.migrate import migrate_store as copy_store
    from .common import EXIT_USAGE, load_settings

    config = load_settings(ctx, data_dir=data_dir)
    data = open_data(config)
    if not pg.is_url(target):
        raise Fail("--to must be a postgresql:// URL", EXIT_USAGE)
    if not data.db_path.exists():
        raise Fail(f"{data.db_path} does not exist: there is no SQLite store to copy", EXIT_USAGE)
    with open(data.path / "serve.lock", "a+") as lock:
        try:
            fcntl.flock(lock.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            raise Fail(f"`alertengine serve` is running on {data.path}: stop it first", EXIT_USAGE) from None
        try:
            copied = copy_store(data.db_path, target, data.signer.verifier)
        except (StoreError, sqlite3.Error) as exc:
            raise Fail(f"nothing was changed in {pg.redacted(target)}: {exc}") from None
    echo_json({"status": "ok", "to": pg.redacted(target), **copied.public(),
               "next": "set database_url to this URL (alertengine.toml or ALERTENGINE_DATABASE_URL) on every node"})


COMMANDS = (dlq, telegram, deploy, approval, migrate_store)
