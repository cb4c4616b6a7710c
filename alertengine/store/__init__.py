"""The store: SQLite files (or PostgreSQL), the single writer with group commit, migrations, the appliance mode.

Owns: ``database`` (connections, the writer thread, checkpoints, rollback refusal), ``migrations``
(named schema steps), ``export`` (audit bundles read from a consistent snapshot) and ``modes``
(NORMAL / DEGRADED / EMERGENCY, ledgered on change) and ``pg`` (PostgreSQL behind the same
interface and SQL).
May import: ``alertengine.ledger`` and ``alertengine.errors``; nothing of the product above it.
"""

from .database import (
    Database,
    StoredCheckpoint,
    Where,
    WriteTx,
    connect,
    latest_checkpoint,
    open_readonly,
    verify_store,
)

__all__ = ["Database", "StoredCheckpoint", "Where", "WriteTx", "connect", "latest_checkpoint", "open_readonly",
           "verify_store"]
