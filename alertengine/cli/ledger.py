"""``alertengine ledger verify | key | show``, ``export``, ``bundle verify`` and ``replay``."""

from __future__ import annotations

import json
import sqlite3
import sys
from pathlib import Path
from typing import Any, Callable

import click

from ..appliance import open_data_dir
from ..errors import ConfigError, RollbackDetectedError
from .common import (
    EXIT_FAIL,
    EXIT_OK,
    EXIT_USAGE,
    Fail,
    data_dir_option,
    load_settings,
    open_data,
)

# --- ledger -----------------------------------------------------------------------------------

@click.group()
def ledger() -> None:
    """Inspect and verify the ledger."""


@ledger.command("verify")
@data_dir_option
@click.option("--vkey", default=None, help="Verifier key to pin (default: this appliance's own key).")
@click.option("--checkpoint", "held", type=click.Path(path_type=Path, dir_okay=False, exists=True), default=None,
              help="An earlier signed checkpoint you hold: checks that the ledger extends it.")
@click.pass_context
def ledger_verify(ctx: click.Context, data_dir: Path | None, vkey: str | None, held: Path | None) -> None:
    """Verify every entry and checkpoint of the live database. Prints one JSON object.

    Exit status: 0 verified, 1 verification failed, 2 could not run."""
    from ..ledger.verifier import VerifierKey
    from ..store import pg, verify_store

    config = load_settings(ctx, data_dir=data_dir)
    try:
        data = open_data_dir(config.data_dir)
        key = VerifierKey.parse(vkey) if vkey else data.signer.verifier
        target = config.database_url or data.db_path
        if not config.database_url and not data.db_path.exists():
            raise ConfigError("data_dir", f"{data.db_path} does not exist")
    except (ConfigError, ValueError) as exc:
        click.echo(json.dumps({"status": "error", "detail": str(exc)}))
        sys.exit(EXIT_USAGE)
    try:
        result = verify_store(target, key, external_checkpoint=data.checkpoint_file,
                              held_checkpoint=held.read_text(encoding="utf-8") if held else None)
    except sqlite3.Error as exc:   # the store cannot be read (PostgreSQL unreachable, a file that is no database)
        where = pg.redacted(target) if isinstance(target, str) else str(target)
        click.echo(json.dumps({"status": "error", "detail": f"cannot read the store {where}: {exc}"}))
        sys.exit(EXIT_USAGE)
    click.echo(json.dumps(result.as_dict()))
    sys.exit(EXIT_OK if result.status == "ok" else EXIT_FAIL)


@ledger.command("key")
@data_dir_option
@click.pass_context
def ledger_key(ctx: click.Context, data_dir: Path | None) -> None:
    """Print the ledger's verifier key (what an auditor pins)."""
    click.echo(open_data(load_settings(ctx, data_dir=data_dir)).signer.vkey)


@ledger.command("fingerprint")
@data_dir_option
@click.argument("value")
@click.pass_context
def ledger_fingerprint(ctx: click.Context, data_dir: Path | None, value: str) -> None:
    """Print the ledger's fingerprint of a person or address (a phone number, chat id, name, e-mail),
    keyed with this install's fingerprint key, to find where the ledger names it."""
    from ..ledger.entry import identity_fingerprint

    config = load_settings(ctx, data_dir=data_dir)
    data = open_data(config)
    db = data.open_database(config)   # loads the install's fingerprint key
    db.close(final_checkpoint=False)
    click.echo(identity_fingerprint(value))


@ledger.command("show")
@data_dir_option
@click.option("--tenant", default=None, help="Only this tenant's entries.")
@click.option("--incident", default=None, help="Only this incident's entries.")
@click.option("--kind", default=None, help="Only entries of this kind (a trailing * matches a prefix).")
@click.option("--limit", type=click.IntRange(min=1), default=50, show_default=True, help="Newest N entries.")
@click.option("--json", "as_json", is_flag=True, help="Print the entries' exact bytes as JSON lines.")
@click.pass_context
def ledger_show(ctx: click.Context, data_dir: Path | None, tenant: str | None, incident: str | None,
                kind: str | None, limit: int, as_json: bool) -> None:
    """List ledger entries, oldest first."""
    from ..store import Where, connect

    config = load_settings(ctx, data_dir=data_dir)
    data = open_data(config)
    where = Where().eq("tenant", tenant).eq("incident", incident)
    if kind and kind.endswith("*"):
        prefix = kind[:-1].replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        where.add("kind LIKE ? ESCAPE '\\'", prefix + "%")
    else:
        where.eq("kind", kind or None)
    sql = "SELECT body FROM (SELECT seq, body FROM ledger" + where.sql() + " ORDER BY seq DESC LIMIT ?) AS newest ORDER BY seq"
    conn = connect(config.database_url or data.db_path, readonly=True)
    try:
        rows = [bytes(r[0]) for r in conn.execute(sql, (*where.params, limit))]
    finally:
        conn.close()
    if as_json:
        out = click.get_binary_stream("stdout")
        for body in rows:
            out.write(body + b"\n")
        return
    click.echo(f"{'seq':>7}  {'ts':<27} {'tenant':<14} {'kind':<26} {'incident':<14} {'actor':<16} reason")
    for body in rows:
        e = json.loads(body)
        click.echo(f"{e['seq']:>7}  {e['ts']:<27} {e['tenant'][:14]:<14} {e['kind'][:26]:<26} "
                   f"{(e['incident'] or '-')[:14]:<14} {e['actor'][:16]:<16} {e['reason'][:60]}")


# --- export and bundles -----------------------------------------------------------------------

@click.command()
@data_dir_option
@click.option("--tenant", default=None, help="Export only this tenant's entries (a tenant bundle).")
@click.option("--incident", default=None, help="Export the tenant bundle spanning this incident.")
@click.option("--since", default=None, help="Only entries at or after this UTC time (RFC 3339).")
@click.option("--until", default=None, help="Only entries before this UTC time (RFC 3339).")
@click.option("-o", "--output", type=click.Path(path_type=Path, dir_okay=False), default=None,
              help="Bundle file to write (default alertengine-<scope>-<size>.tar.gz).")
@click.option("--progress/--no-progress", default=None, help="Show a progress bar (default: on a terminal).")
@click.pass_context
def export(ctx: click.Context, data_dir: Path | None, tenant: str | None, incident: str | None,
           since: str | None, until: str | None, output: Path | None, progress: bool | None) -> None:
    """Write an offline audit bundle (docs/ledger-format.md) with its own verify.py."""
    from ..errors import ExportError
    from ..ledger.entry import is_rfc3339, normal_ts
    from ..store.export import export_bundle

    config = load_settings(ctx, data_dir=data_dir)
    data = open_data(config)
    for label, value in (("--since", since), ("--until", until)):
        if value is not None and not is_rfc3339(value):
            raise Fail(f"{label} must be an RFC 3339 UTC time like 2026-11-22T13:50:00Z, got {value!r}", EXIT_USAGE) from None
    try:
        db = data.open_database(config)
    except RollbackDetectedError as exc:
        raise Fail(str(exc), EXIT_FAIL) from None
    scope_name = incident or tenant or "global"
    out = output or Path(f"alertengine-{scope_name}-{db.ledger_size}.tar.gz")
    show = sys.stderr.isatty() if progress is None else progress
    bar = click.progressbar(length=1, label="exporting", file=sys.stderr) if show else None
    try:
        summary = export_bundle(db, out, tenant=tenant, incident=incident, since=normal_ts(since),
                                until=normal_ts(until), actor="operator:cli", progress=_bar_callback(bar),
                                cosign=_cosigner(db, config))
    except ExportError as exc:
        raise Fail(str(exc), EXIT_FAIL) from None
    finally:
        if bar is not None:
            bar.render_finish()
        db.close()
    click.echo(json.dumps({"bundle": str(summary.path), "entries": summary.entries,
                           "checkpoint_size": summary.checkpoint_size, "root": summary.root,
                           "scope": summary.scope, "vkey": data.signer.vkey}))


def _cosigner(db: Any, config: Any) -> Callable[[Any], list[str]] | None:
    """With witnesses configured: ask them, from this process, to cosign the bundle's checkpoint."""
    import asyncio

    from ..net.guard import guarded_client
    from ..store.publish import Publisher, parse_witnesses

    witnesses = parse_witnesses(config.witnesses)
    if not witnesses:
        return None

    def cosign(cp: Any) -> list[str]:
        async def ask() -> list[str]:
            async with guarded_client(config.url_policy, timeout=15.0) as client:
                return await Publisher(db, client, "", witnesses).witness(cp, force=True)
        return asyncio.run(ask())
    return cosign


def _bar_callback(bar: Any) -> Callable[[int, int], None] | None:
    if bar is None:
        return None

    def update(done: int, total: int) -> None:
        bar.length = max(total, 1)
        bar.update(done - bar.pos)
    return update


@click.group()
def bundle() -> None:
    """Work with audit bundles offline."""


@bundle.command("verify")
@click.argument("path", type=click.Path(path_type=Path, exists=True))
@click.option("--vkey", default=None, help="The appliance's verifier key you pinned.")
@click.option("--checkpoint", "held", type=click.Path(path_type=Path, dir_okay=False, exists=True), default=None,
              help="An earlier signed checkpoint you hold, to check consistency with it.")
@click.option("--witness-key", "witness_keys", multiple=True,
              help="A witness's key whose cosignature the checkpoint must carry (repeatable).")
def bundle_verify(path: Path, vkey: str | None, held: Path | None, witness_keys: tuple[str, ...]) -> None:
    """Verify an audit bundle offline: no database, no server. Prints one JSON object.

    Without --vkey nothing is proven (status "unpinned"). Exit status: 0 verified against the pinned
    key (and every --witness-key), 1 not verified, 2 could not run."""
    import tarfile

    from ..ledger.verifier import verify_bundle

    try:
        result = verify_bundle(str(path), vkey, held.read_text(encoding="utf-8") if held else None, witness_keys)
    except (OSError, ValueError, tarfile.TarError) as exc:
        click.echo(json.dumps({"status": "error", "detail": str(exc)}))
        sys.exit(EXIT_USAGE)
    click.echo(json.dumps(result.as_dict()))
    sys.exit(EXIT_OK if result.status == "ok" else EXIT_FAIL)


# --- replay -----------------------------------------------------------------------------------

@click.command()
@data_dir_option
@click.option("--tenant", default=None, help="Only this tenant.")
@click.option("--incident", default=None, help="Only this incident.")
@click.option("--json", "as_json", is_flag=True, help="Print the full report as JSON.")
@click.pass_context
def replay(ctx: click.Context, data_dir: Path | None, tenant: str | None, incident: str | None, as_json: bool) -> None:
    """Rebuild incident state from the ledger alone and report differences from the working tables."""
    from ..incidents.replay import replay_database
    from ..store import connect

    config = load_settings(ctx, data_dir=data_dir)
    data = open_data(config)
    conn = connect(config.database_url or data.db_path, readonly=True)
    try:
        report = replay_database(conn, tenant=tenant, incident=incident)
    finally:
        conn.close()
    if as_json:
        click.echo(json.dumps(report.as_dict(), indent=1))
    else:
        click.echo(f"folded {report.entries} entries into {len(report.incidents)} incidents")
        for state in report.incidents.values():
            click.echo(f"  {state.tenant}/{state.incident}: stage {state.stage or '-'}, {state.entries} entries, "
                       f"seq {state.first_seq}..{state.last_seq}")
        if report.unfolded_kinds:
            click.echo("  kinds without a reducer yet: " + ", ".join(f"{k} ({n})" for k, n in report.unfolded_kinds.items()))
        click.echo(f"differences from working tables: {len(report.differences)}")
        for diff in report.differences:
            click.echo(f"  {diff}")
    sys.exit(EXIT_FAIL if report.differences else EXIT_OK)


COMMANDS = (ledger, export, bundle, replay)
