"""``alertengine witness serve | key``: a witness for an appliance's ledger, run by its auditor."""

from __future__ import annotations

import signal
import socket
from pathlib import Path

import click

from ..ledger.keys import WitnessSigner
from ..ledger.verifier import VerifierKey
from .common import EXIT_USAGE, Fail

state_option = click.option("--state", "state_dir", type=click.Path(path_type=Path, file_okay=False), required=True,
                            help="The witness's own directory: its key and the newest checkpoint it cosigned per log.")
name_option = click.option("--name", default=None,
                           help="The witness's name in its key and cosignatures (default witness/<host name>).")


def _signer(state_dir: Path, name: str | None) -> WitnessSigner:
    state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    name_file = state_dir / "name"
    if name_file.exists():
        stored = name_file.read_text(encoding="utf-8").strip()
        if name and name != stored:
            raise Fail(f"this witness is named {stored!r}; its name cannot change", EXIT_USAGE)
        name = stored
    else:
        name = name or f"witness/{socket.gethostname()}"
        if not name or any(c.isspace() or c == "+" for c in name):
            raise Fail("a witness name has no spaces and no '+'", EXIT_USAGE)
        name_file.write_text(name + "\n", encoding="utf-8")
    return WitnessSigner.load_or_create(state_dir / "witness.key", name)


@click.group()
def witness() -> None:
    """Run a witness that cosigns an appliance's checkpoints (on a host the appliance's owner does not control)."""


@witness.command("key")
@state_option
@name_option
def witness_key(state_dir: Path, name: str | None) -> None:
    """Print this witness's key (what the appliance and auditors configure); creates it at first use."""
    click.echo(_signer(state_dir, name).vkey)


@witness.command("serve")
@state_option
@name_option
@click.option("--log", "logs", multiple=True, required=True,
              help="The verifier key of a log to witness (`alertengine ledger key` on the appliance); repeatable.")
@click.option("--host", default="127.0.0.1", show_default=True, help="Listen address.")
@click.option("--port", type=click.IntRange(1, 65535), default=8090, show_default=True, help="Listen port.")
def witness_serve(state_dir: Path, name: str | None, logs: tuple[str, ...], host: str, port: int) -> None:
    """Serve POST /add-checkpoint (C2SP tlog-witness) for the given logs."""
    import uvicorn

    from ..ledger.witness import Witness
    from ..web.witness import witness_app

    try:
        keys = [VerifierKey.parse(text) for text in logs]
    except ValueError as exc:
        raise Fail(f"--log: {exc}", EXIT_USAGE) from None
    signer = _signer(state_dir, name)
    click.echo(f"witness {signer.name} serving on http://{host}:{port}/add-checkpoint")
    click.echo(f"  witness key: {signer.vkey}")
    click.echo("  logs: " + ", ".join(k.name for k in keys), nl=True)
    app = witness_app(Witness(signer, keys, state_dir / "state.json"))
    server = uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level="warning", access_log=False,
                                           log_config=None, proxy_headers=False))
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda signum, frame: None)
    server.run()


COMMANDS = (witness,)
