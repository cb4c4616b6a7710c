"""What every command shares: exit codes, the ``Fail`` error, settings, the data directory, the actor."""

from __future__ import annotations

import contextlib
import getpass
import json
from pathlib import Path
from typing import Any, Iterator

import click

from ..appliance import DataDir, open_data_dir
from ..config import Config, load_config
from ..errors import AlertEngineError, ConfigError, FieldError, NotFoundError
from ..store import Database
from ..tenancy.vault import SecretVault

EXIT_OK, EXIT_FAIL, EXIT_USAGE = 0, 1, 2


class Fail(click.ClickException):
    """A command that cannot do what was asked: prints ``Error: <message>`` and exits with ``code``."""

    def __init__(self, message: str, code: int = EXIT_FAIL) -> None:
        super().__init__(message)
        self.exit_code = code


def load_settings(ctx: click.Context, **overrides: Any) -> Config:
    """The settings for this command: file and environment, then the command's own flags."""
    try:
        return load_config(ctx.obj.get("config")).with_overrides(**overrides)
    except ConfigError as exc:
        raise Fail(f"configuration error: {exc}", EXIT_USAGE) from None


def open_data(config: Config) -> DataDir:
    try:
        return open_data_dir(config.data_dir)
    except ConfigError as exc:
        raise Fail(exc.message, EXIT_USAGE) from None


data_dir_option = click.option("--data-dir", type=click.Path(path_type=Path), default=None,
                               help="Data directory (default ./alertengine-data, or $ALERTENGINE_DATA_DIR).")


def cli_actor() -> str:
    """The ledger actor of a command run from the appliance's own shell."""
    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):
        return "cli:unknown"


@contextlib.contextmanager
def appliance(ctx: click.Context, data_dir: Path | None) -> Iterator[tuple[Database, SecretVault, Config]]:
    """The open database, the vault and the settings; errors become a ``Fail`` naming the problem."""
    config = load_settings(ctx, data_dir=data_dir)
    data = open_data(config)
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


def echo_json(obj: Any) -> None:
    click.echo(json.dumps(obj, indent=1))
