"""The appliance's data directory: install id, ledger key, per-install secrets, and the database."""

from __future__ import annotations

import json
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from . import __version__
from .config import Config
from .errors import ConfigError
from .ledger.entry import SYSTEM_TENANT, LedgerEvent, set_identity_key, utc_timestamp
from .ledger.keys import LedgerSigner, write_private_file
from .store import Database
from .store.publish import sink_local
from .telemetry import Telemetry

DB_FILE = "alertengine.db"
INSTALL_FILE = "install.json"
LEDGER_KEY_FILE = "ledger.key"
CHECKPOINT_FILE = "latest-checkpoint.txt"
# Per-install secrets, 32 random bytes each, mode 0600: approval-token signing, secrets-at-rest, and
# the key of the ledger's fingerprints of people and addresses (ledger-format.md, 1.3).
SECRET_FILES = ("token.key", "vault.key", "fingerprint.key")
FINGERPRINT_KEY = "fingerprint.key"


@dataclass(frozen=True)
class DataDir:
    path: Path
    install_id: str
    signer: LedgerSigner
    created: bool

    @property
    def db_path(self) -> Path:
        return self.path / DB_FILE

    @property
    def checkpoint_file(self) -> Path:
        return self.path / CHECKPOINT_FILE

    def secret(self, name: str) -> bytes:
        return (self.path / name).read_bytes()

    def open_database(self, config: Config, telemetry: Telemetry | None = None) -> Database:
        """The database, migrated and open. ``telemetry``: the running appliance's (``serve``), for
        the writer to observe its batches into; commands run without one."""
        key_file = self.path / FINGERPRINT_KEY
        if not key_file.exists():   # an install made before the key existed gets one now
            write_private_file(key_file, secrets.token_bytes(32))
        set_identity_key(key_file.read_bytes())
        db = Database(config.database_url or self.db_path, signer=self.signer, checkpoint_interval=config.checkpoint_interval,
                      checkpoint_file=self.checkpoint_file, batch_max=config.writer_batch_max, telemetry=telemetry)
        if config.checkpoint_sink and not config.checkpoint_sink.startswith(("http://", "https://")):
            sink = config.checkpoint_sink   # every process that signs (serve, CLI commands) appends to it
            db.on_checkpoint = lambda cp: sink_local(sink, cp.note)
        return db.open()


def log_name(install_id: str) -> str:
    return f"alertengine/{install_id}"


def init_data_dir(path: Path) -> DataDir:
    """Create (first start) or open the data directory. Never overwrites an existing secret."""
    created = not (path / INSTALL_FILE).exists()
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    if created:
        install = {"install_id": secrets.token_hex(8), "created": utc_timestamp(), "version": __version__}
        write_private_file(path / INSTALL_FILE, json.dumps(install, indent=1).encode())
    install_id = read_install_id(path)
    signer = LedgerSigner.load_or_create(path / LEDGER_KEY_FILE, log_name(install_id))
    for name in SECRET_FILES:
        if not (path / name).exists():
            write_private_file(path / name, secrets.token_bytes(32))
    return DataDir(path, install_id, signer, created)


def open_data_dir(path: Path) -> DataDir:
    """Open an existing data directory (commands other than ``serve`` never create one)."""
    if not (path / INSTALL_FILE).exists() or not (path / LEDGER_KEY_FILE).exists():
        raise ConfigError("data_dir", f"{path} is not an AlertEngine data directory (run `alertengine serve` "
                                      "once to create it, or pass --data-dir)")
    install_id = read_install_id(path)
    return DataDir(path, install_id, LedgerSigner.load_or_create(path / LEDGER_KEY_FILE, log_name(install_id)), False)


def read_install_id(path: Path) -> str:
    try:
        install_id = json.loads((path / INSTALL_FILE).read_text())["install_id"]
    except (OSError, ValueError, KeyError) as exc:
        raise ConfigError("data_dir", f"{path / INSTALL_FILE} is unreadable: {exc}") from None
    if not (isinstance(install_id, str) and len(install_id) == 16 and all(c in "0123456789abcdef" for c in install_id)):
        raise ConfigError("data_dir", f"{path / INSTALL_FILE} holds a malformed install id")
    return install_id


def startup_events(data: DataDir) -> list[LedgerEvent]:
    events = []
    if data.created:
        events.append(LedgerEvent(kind="appliance.initialized", tenant=SYSTEM_TENANT, actor="system",
                                  reason="data directory created; ledger key generated",
                                  data={"install_id": data.install_id, "vkey": data.signer.vkey}))
    events.append(LedgerEvent(kind="appliance.started", tenant=SYSTEM_TENANT, actor="system",
                              reason=f"AlertEngine {__version__} started",
                              data={"version": __version__, "pid": os.getpid()}))
    return events
