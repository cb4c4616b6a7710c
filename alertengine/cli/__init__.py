"""The ``alertengine`` command line: one click group, its commands in one module per concern.

Owns: ``common`` (exit codes, errors, settings, the data directory), ``serve`` (serve,
check-config), ``ledger`` (ledger verify | key | show, export, bundle verify, replay),
``tenancy`` (tenant, key, service, integration), ``notify`` (person, team, route, silence,
notify), ``oncall`` (schedule), ``operations`` (dlq, telegram, deploy) and
``witness`` (a witness's own service, run by an auditor).
May import: anything in the package; nothing imports it but ``__main__``.
"""

from __future__ import annotations

import sys
from pathlib import Path

import click

from .. import __version__
from ..errors import AlertEngineError
from .common import EXIT_FAIL


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "--version", prog_name="alertengine")
@click.option("--config", "config_path", type=click.Path(path_type=Path, dir_okay=False), default=None,
              help="Config file (TOML). Default: $ALERTENGINE_CONFIG, else ./alertengine.toml if present.")
@click.pass_context
def cli(ctx: click.Context, config_path: Path | None) -> None:
    """AlertEngine: incident command appliance with a signed, verifiable ledger."""
    ctx.ensure_object(dict)
    ctx.obj["config"] = config_path


from . import ledger, notify, oncall, operations, serve, tenancy, witness  # noqa: E402  (each module adds its commands)

for _module in (serve, ledger, tenancy, notify, oncall, operations, witness):
    for _command in _module.COMMANDS:
        cli.add_command(_command)


def main() -> None:
    try:
        cli(prog_name="alertengine")
    except AlertEngineError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(EXIT_FAIL)
