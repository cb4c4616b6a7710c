"""``alertengine serve`` and ``alertengine check-config``."""

from __future__ import annotations

import fcntl
import gc
import json
import logging
import os
import signal
import socket
import sqlite3
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import click

from .. import __version__
from ..appliance import init_data_dir, startup_events
from ..config import Config, describe, load_config, read_file
from ..errors import ConfigError, RollbackDetectedError
from ..ledger.entry import utc_timestamp
from ..store import pg
from ..telemetry import Telemetry
from ..web.tls import tls_files
from .common import EXIT_FAIL, Fail, data_dir_option, load_settings

# --- logging ----------------------------------------------------------------------------------
# One line per event worth reading, on standard error (standard output carries the banner and the
# console notifications). The appliance logs warnings and errors, and at info what happens once
# (start, stop); what happens per poll or per request is in /metrics, not the log.

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
# httpx logs every request at INFO (each health poll, each webhook), with its full URL, which may
# carry a bot token; httpcore logs its connection steps at DEBUG. Their warnings are still shown.
QUIET = ("httpx", "httpcore")


class JsonLines(logging.Formatter):
    """One JSON object per line: ``ts`` (RFC 3339 UTC), ``level``, ``logger``, ``message``, and
    ``exc`` (the traceback text) when there is one. Nothing else of the record (no args, no
    extras), so a JSON line never holds more than the text line would; ASCII-escaped, so a message
    with a newline or any odd character is still one line."""

    def format(self, record: logging.LogRecord) -> str:
        line = {"ts": utc_timestamp(datetime.fromtimestamp(record.created, timezone.utc)),
                "level": record.levelname.lower(), "logger": record.name, "message": record.getMessage()}
        if record.exc_info:
            line["exc"] = self.formatException(record.exc_info)
        elif record.exc_text:
            line["exc"] = record.exc_text
        if record.stack_info:
            line["stack"] = self.formatStack(record.stack_info)
        return json.dumps(line)


def setup_logging(config: Config) -> None:
    """The process's logging for ``serve``: ``log_level``, ``log_format`` (text or json) on stderr.
    Like ``basicConfig`` (which it uses), it leaves logging that is already set up alone."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonLines() if config.log_format == "json" else logging.Formatter(TEXT_FORMAT))
    logging.basicConfig(level=config.log_level.upper(), handlers=[handler])
    for name in QUIET:
        logging.getLogger(name).setLevel(logging.WARNING)
    logging.captureWarnings(True)   # a Python warning is a log line too, in the same format


# --- serve ------------------------------------------------------------------------------------

@click.command()
@data_dir_option
@click.option("--host", default=None, help="Listen address (default 127.0.0.1).")
@click.option("--port", type=int, default=None, help="Listen port (default 8080).")
@click.pass_context
def serve(ctx: click.Context, data_dir: Path | None, host: str | None, port: int | None) -> None:
    """Run the appliance. Works with no configuration: creates the data directory and keys."""
    from ..web.app import create_app

    config = load_settings(ctx, data_dir=data_dir, host=host, port=port)
    setup_logging(config)
    # Listen first: a port in use must fail before anything is created or minted (an admin key
    # printed by a process that then dies is a secret shown for nothing).
    listener = _listen(config.host, config.port)
    try:
        data = init_data_dir(config.data_dir)
        lock = _lock_data_dir(data.path)
    except BaseException:
        listener.close()
        raise
    try:
        tls = tls_files(config, data.path)   # before an admin key is minted: a bad certificate fails first
    except ConfigError as exc:
        listener.close()
        lock.close()
        raise Fail(f"configuration error: {exc}", EXIT_FAIL) from None
    # The appliance's one Telemetry: made before the database, whose writer observes into it.
    telemetry = Telemetry()
    try:
        db = data.open_database(config, telemetry)
    except RollbackDetectedError as exc:
        listener.close()
        lock.close()
        raise Fail(str(exc), EXIT_FAIL) from None
    except sqlite3.Error as exc:   # PostgreSQL unreachable, refused, or not a database we can use
        listener.close()
        lock.close()
        raise Fail(f"cannot open the store {pg.redacted(config.database_url) or data.db_path}: {exc}",
                   EXIT_FAIL) from None
    if config.database_url:
        try:
            _serve_node(config, data, db, telemetry, tls, listener)
        finally:
            listener.close()
            db.close()
            lock.close()
        return
    try:
        db.append_sync(*startup_events(data))
        from ..tenancy.tenants import ensure_admin_key
        admin_secret = db.write_sync(ensure_admin_key())
        click.echo(f"AlertEngine {__version__} serving on {config.base_url}")
        if tls is not None:
            click.echo(f"  TLS certificate: {tls.cert}" + ("  (self-signed: pin it)" if tls.self_signed else ""))
            click.echo(f"  TLS certificate SHA-256: {tls.fingerprint}")
        click.echo(f"  data directory: {data.path.resolve()}" + ("  (created)" if data.created else ""))
        click.echo(f"  ledger verifier key: {data.signer.vkey}")
        click.echo(f"  ledger entries: {db.ledger_size}")
        if admin_secret:
            click.echo(f"  appliance admin API key (shown once, store it now): {admin_secret}")
        sys.stdout.flush()
        app = create_app(config, data, db, telemetry)
        server = _server(config, app, tls)
        # uvicorn shuts down gracefully on SIGINT/SIGTERM, then re-raises the signal to the handler
        # it found. With these no-op handlers a clean shutdown (final checkpoint signed) exits 0.
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda signum, frame: None)
        tune_collector()
        server.run(sockets=[listener])
    finally:
        listener.close()
        db.close()
        lock.close()


def _server(config: Config, app: Any, tls: Any) -> Any:
    import uvicorn
    # Forwarded headers are believed only from the proxies the operator listed: by default none,
    # so a client cannot choose the address the authentication slow-down counts it under.
    return uvicorn.Server(uvicorn.Config(
        app, host=config.host, port=config.port, log_level=config.log_level, access_log=False, lifespan="on",
        # h11, not httptools: uvicorn's httptools protocol puts no bound on a request's URL and
        # headers (an unauthenticated client could fill memory); h11 refuses more than 16 KiB.
        http="h11",
        log_config=None, proxy_headers=bool(config.proxies), forwarded_allow_ips=config.proxies or None,
        ssl_certfile=str(tls.cert) if tls else None, ssl_keyfile=str(tls.key) if tls else None))


def _serve_node(config: Config, data: Any, db: Any, telemetry: Telemetry, tls: Any, listener: socket.socket) -> None:
    """One node of several sharing a PostgreSQL database: a follower until it takes the leader
    lease, then the appliance (web/node.py). Exits 75 when it loses the lease."""
    from ..store.lease import Lease
    from ..web.node import EXIT_LOST_LEASE, NodeApp

    lease = Lease(config.database_url, config.node, config.own_url, ttl=config.lease_ttl)
    db.lease = lease
    click.echo(f"AlertEngine {__version__} serving on {config.base_url}")
    click.echo(f"  node {config.node} ({config.own_url}), store {pg.redacted(config.database_url)}")
    click.echo(f"  data directory: {data.path.resolve()}" + ("  (created)" if data.created else ""))
    click.echo(f"  ledger verifier key: {data.signer.vkey}")
    click.echo("  follows until it holds the leader lease")
    sys.stdout.flush()
    node = NodeApp(config, data, db, lease, telemetry, echo=lambda line: (click.echo(line), sys.stdout.flush()))
    server = _server(config, node, tls)
    node.stop = lambda: setattr(server, "should_exit", True)
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda signum, frame: None)
    tune_collector()
    server.run(sockets=[listener])
    if node.lost is not None:
        raise Fail(f"this node stopped: it lost the leader lease ({node.lost}); start it again to follow",
                   EXIT_LOST_LEASE)


# Objects allocated (net) before the cyclic collector's youngest generation is scanned; Python's
# default is 700. Ingest allocates a few hundred objects per alert: at 700 the collector ran 1,573
# times for 40,000 alerts and took 1.04 s (middle and oldest generations 47 ms a pass, with the
# event loop stopped meanwhile); at 20,000, 11 young passes took 0.08 s in all (scripts/bench/ingest.py).
GC_YOUNG_THRESHOLD = 20_000


def tune_collector() -> None:
    """Once the appliance has started: what start-up built lives as long as the process, so it is
    moved out of the collector's sight (``gc.freeze``), and the young generation is scanned every
    GC_YOUNG_THRESHOLD allocations instead of every 700. Reference counting still frees nearly
    everything at once; only reference cycles wait a little longer."""
    gc.collect()
    gc.freeze()
    _young, middle, old = gc.get_threshold()
    gc.set_threshold(GC_YOUNG_THRESHOLD, middle, old)


def _listen(host: str, port: int) -> socket.socket:
    """The listening socket, bound before anything else happens; a clear error if it cannot be."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise Fail(f"cannot listen on {host}:{port}: {exc.strerror}", EXIT_FAIL) from None
    family = infos[0][0]
    try:
        listener = socket.create_server((host, port), family=family, backlog=2048)
    except OSError as exc:
        raise Fail(f"cannot listen on {host}:{port}: {exc.strerror or exc}", EXIT_FAIL) from None
    # Answers go out at once: asyncio turns Nagle's algorithm off only on sockets that name their
    # protocol, which create_server's do not, and a keep-alive client then waits out its delayed
    # ACK (~40 ms) for the second half of every response. Accepted sockets inherit the option.
    listener.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    listener.set_inheritable(True)
    return listener


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

@click.command("check-config")
@click.argument("file", type=click.Path(path_type=Path, dir_okay=False), required=False)
@click.option("--list", "list_settings", is_flag=True, help="List every setting with its default and help.")
@click.option("--policy", "policy_file", type=click.Path(path_type=Path, dir_okay=False, exists=True), default=None,
              help="Validate a detection policy (TOML) instead, and print its version.")
@click.pass_context
def check_config(ctx: click.Context, file: Path | None, list_settings: bool, policy_file: Path | None) -> None:
    """Validate a config file (and ALERTENGINE_* variables), or a policy file; name the bad key."""
    if policy_file is not None:
        from ..incidents.policy import PolicyError, parse_policy
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


COMMANDS = (serve, check_config)
