"""The ``alertengine`` command line: serve, check-config, ledger, export, bundle, replay."""

from __future__ import annotations

import fcntl
import json
import logging
import os
import signal
import sys
from pathlib import Path
from typing import Any, Callable

import click

from . import __version__
from .appliance import DataDir, init_data_dir, open_data_dir, startup_events
from .config import Config, describe, load_config, read_file
from .errors import AlertEngineError, ConfigError, RollbackDetectedError

EXIT_OK, EXIT_FAIL, EXIT_USAGE = 0, 1, 2


def _config(ctx: click.Context, **overrides: Any) -> Config:
    try:
        return load_config(ctx.obj.get("config")).with_overrides(**overrides)
    except ConfigError as exc:
        raise Fail(f"configuration error: {exc}", EXIT_USAGE) from None


class Fail(click.ClickException):
    """A command that cannot do what was asked: prints ``Error: <message>`` and exits with ``code``."""

    def __init__(self, message: str, code: int = EXIT_FAIL) -> None:
        super().__init__(message)
        self.exit_code = code


def _data(config: Config) -> DataDir:
    try:
        return open_data_dir(config.data_dir)
    except ConfigError as exc:
        raise Fail(exc.message, EXIT_USAGE) from None


data_dir_option = click.option("--data-dir", type=click.Path(path_type=Path), default=None,
                               help="Data directory (default ./alertengine-data, or $ALERTENGINE_DATA_DIR).")


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "--version", prog_name="alertengine")
@click.option("--config", "config_path", type=click.Path(path_type=Path, dir_okay=False), default=None,
              help="Config file (TOML). Default: $ALERTENGINE_CONFIG, else ./alertengine.toml if present.")
@click.pass_context
def cli(ctx: click.Context, config_path: Path | None) -> None:
    """AlertEngine: incident command appliance with a signed, verifiable ledger."""
    ctx.ensure_object(dict)
    ctx.obj["config"] = config_path


# --- serve ------------------------------------------------------------------------------------

@cli.command()
@data_dir_option
@click.option("--host", default=None, help="Listen address (default 127.0.0.1).")
@click.option("--port", type=int, default=None, help="Listen port (default 8080).")
@click.pass_context
def serve(ctx: click.Context, data_dir: Path | None, host: str | None, port: int | None) -> None:
    """Run the appliance. Works with no configuration: creates the data directory and keys."""
    import uvicorn

    from .web.app import create_app

    config = _config(ctx, data_dir=data_dir, host=host, port=port)
    logging.basicConfig(level=config.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    data = init_data_dir(config.data_dir)
    lock = _lock_data_dir(data.path)
    try:
        db = data.open_database(config)
    except RollbackDetectedError as exc:
        raise Fail(str(exc), EXIT_FAIL) from None
    try:
        db.append_sync(*startup_events(data))
        from .tenants import ensure_admin_key
        admin_secret = db.write_sync(ensure_admin_key())
        click.echo(f"AlertEngine {__version__} serving on {config.base_url}")
        click.echo(f"  data directory: {data.path.resolve()}" + ("  (created)" if data.created else ""))
        click.echo(f"  ledger verifier key: {data.signer.vkey}")
        click.echo(f"  ledger entries: {db.ledger_size}")
        if admin_secret:
            click.echo(f"  appliance admin API key (shown once, store it now): {admin_secret}")
        sys.stdout.flush()
        app = create_app(config, data, db)
        server = uvicorn.Server(uvicorn.Config(app, host=config.host, port=config.port, log_level=config.log_level,
                                               access_log=False, lifespan="on", log_config=None))
        # uvicorn shuts down gracefully on SIGINT/SIGTERM, then re-raises the signal to the handler
        # it found. With these no-op handlers a clean shutdown (final checkpoint signed) exits 0.
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda signum, frame: None)
        server.run()
    finally:
        db.close()
        lock.close()


def _lock_data_dir(path: Path) -> Any:
    f = open(path / "serve.lock", "a+")
    try:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        f.close()
        raise Fail(f"another `alertengine serve` is already using {path}", EXIT_FAIL) from None
    f.seek(0)
    f.truncate()
    f.write(str(os.getpid()))
    f.flush()
    return f


# --- check-config -----------------------------------------------------------------------------

@cli.command("check-config")
@click.argument("file", type=click.Path(path_type=Path, dir_okay=False), required=False)
@click.option("--list", "list_settings", is_flag=True, help="List every setting with its default and help.")
@click.option("--policy", "policy_file", type=click.Path(path_type=Path, dir_okay=False, exists=True), default=None,
              help="Validate a detection policy (TOML) instead, and print its version.")
@click.pass_context
def check_config(ctx: click.Context, file: Path | None, list_settings: bool, policy_file: Path | None) -> None:
    """Validate a config file (and ALERTENGINE_* variables), or a policy file; name the bad key."""
    if policy_file is not None:
        from .policy import PolicyError, parse_policy
        try:
            policy = parse_policy(policy_file.read_text(encoding="utf-8"))
        except PolicyError as exc:
            raise Fail(f"{policy_file}: {exc}", EXIT_FAIL) from None
        except UnicodeDecodeError:
            raise Fail(f"{policy_file} is not UTF-8 text", EXIT_FAIL) from None
        click.echo(f"ok: policy {policy_file} is valid, version {policy.version}")
        return
    if list_settings:
        for name, default, text in describe():
            click.echo(f"{name} (default {default}; env ALERTENGINE_{name.upper()})\n    {text}")
        return
    try:
        if file is not None:
            read_file(file)
        config = load_config(file or ctx.obj.get("config"))
    except ConfigError as exc:
        raise Fail(str(exc), EXIT_FAIL) from None
    click.echo(f"ok: configuration from {config.source} is valid")


# --- ledger -----------------------------------------------------------------------------------

@cli.group()
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
    from .ledger.audit import verify_database
    from .ledger.verifier import VerifierKey

    config = _config(ctx, data_dir=data_dir)
    try:
        data = open_data_dir(config.data_dir)
        key = VerifierKey.parse(vkey) if vkey else data.signer.verifier
        if not data.db_path.exists():
            raise ConfigError("data_dir", f"{data.db_path} does not exist")
    except (ConfigError, ValueError) as exc:
        click.echo(json.dumps({"status": "error", "detail": str(exc)}))
        sys.exit(EXIT_USAGE)
    result = verify_database(data.db_path, key, external_checkpoint=data.checkpoint_file,
                             held_checkpoint=held.read_text(encoding="utf-8") if held else None)
    click.echo(json.dumps(result.as_dict()))
    sys.exit(EXIT_OK if result.status == "ok" else EXIT_FAIL)


@ledger.command("key")
@data_dir_option
@click.pass_context
def ledger_key(ctx: click.Context, data_dir: Path | None) -> None:
    """Print the ledger's verifier key (what an auditor pins)."""
    click.echo(_data(_config(ctx, data_dir=data_dir)).signer.vkey)


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
    from .store import Where, connect

    data = _data(_config(ctx, data_dir=data_dir))
    where = Where().eq("tenant", tenant).eq("incident", incident)
    if kind and kind.endswith("*"):
        prefix = kind[:-1].replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        where.add("kind LIKE ? ESCAPE '\\'", prefix + "%")
    else:
        where.eq("kind", kind or None)
    sql = "SELECT body FROM (SELECT seq, body FROM ledger" + where.sql() + " ORDER BY seq DESC LIMIT ?) ORDER BY seq"
    conn = connect(data.db_path, readonly=True)
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

@cli.command()
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
    """Write an offline audit bundle (spec/ledger.md §4) with its own verify.py."""
    from .errors import ExportError
    from .ledger.bundle import export_bundle
    from .ledger.entry import is_rfc3339, normal_ts

    config = _config(ctx, data_dir=data_dir)
    data = _data(config)
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
                                until=normal_ts(until), actor="operator:cli", progress=_bar_callback(bar))
    except ExportError as exc:
        raise Fail(str(exc), EXIT_FAIL) from None
    finally:
        if bar is not None:
            bar.render_finish()
        db.close()
    click.echo(json.dumps({"bundle": str(summary.path), "entries": summary.entries,
                           "checkpoint_size": summary.checkpoint_size, "root": summary.root,
                           "scope": summary.scope, "vkey": data.signer.vkey}))


def _bar_callback(bar: Any) -> Callable[[int, int], None] | None:
    if bar is None:
        return None

    def update(done: int, total: int) -> None:
        bar.length = max(total, 1)
        bar.update(done - bar.pos)
    return update


@cli.group()
def bundle() -> None:
    """Work with audit bundles offline."""


@bundle.command("verify")
@click.argument("path", type=click.Path(path_type=Path, exists=True))
@click.option("--vkey", default=None, help="The appliance's verifier key you pinned.")
@click.option("--checkpoint", "held", type=click.Path(path_type=Path, dir_okay=False, exists=True), default=None,
              help="An earlier signed checkpoint you hold, to check consistency with it.")
def bundle_verify(path: Path, vkey: str | None, held: Path | None) -> None:
    """Verify an audit bundle offline: no database, no server. Prints one JSON object.

    Exit status: 0 verified, 1 verification failed, 2 could not run."""
    import tarfile

    from .ledger.verifier import verify_bundle

    try:
        result = verify_bundle(str(path), vkey, held.read_text(encoding="utf-8") if held else None)
    except (OSError, ValueError, tarfile.TarError) as exc:
        click.echo(json.dumps({"status": "error", "detail": str(exc)}))
        sys.exit(EXIT_USAGE)
    click.echo(json.dumps(result.as_dict()))
    sys.exit(EXIT_OK if result.status == "ok" else EXIT_FAIL)


# --- replay -----------------------------------------------------------------------------------

@cli.command()
@data_dir_option
@click.option("--tenant", default=None, help="Only this tenant.")
@click.option("--incident", default=None, help="Only this incident.")
@click.option("--json", "as_json", is_flag=True, help="Print the full report as JSON.")
@click.pass_context
def replay(ctx: click.Context, data_dir: Path | None, tenant: str | None, incident: str | None, as_json: bool) -> None:
    """Rebuild incident state from the ledger alone and report differences from the working tables."""
    from .ledger.replay import replay_database
    from .store import connect

    data = _data(_config(ctx, data_dir=data_dir))
    conn = connect(data.db_path, readonly=True)
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


from .cli_tenancy import deploy, dlq, integration, key, service, telegram, tenant  # noqa: E402  (use the helpers above)

for _group in (tenant, key, service, integration, dlq, telegram, deploy):
    cli.add_command(_group)


def main() -> None:
    try:
        cli(prog_name="alertengine")
    except AlertEngineError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(EXIT_FAIL)
