"""The store: SQLite files, the single writer with group commit, migrations, the appliance mode.

Owns: ``database`` (connections, the writer thread, checkpoints, rollback refusal), ``migrations``
(named schema steps), ``export`` (audit bundles read from a consistent snapshot) and ``modes``
(NORMAL / DEGRADED / EMERGENCY, ledgered on change).
May import: ``alertengine.ledger`` and ``alertengine.errors``; nothing of the product above it.
"""

from .database import (
    Database,
    StoredCheckpoint,
    Where,
    WriteTx,
    connect,
    latest_checkpoint,
)

__all__ = ["Database", "StoredCheckpoint", "Where", "WriteTx", "connect", "latest_checkpoint"]
