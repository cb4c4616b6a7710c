"""The anchor: the newest checkpoint this appliance signed or verified, held in memory and outside
the database. Every checkpoint it signs must be a consistent extension of the anchor; a database
that holds less, or other history, than the anchor commits to was rolled back or rewritten.

Someone with write access to the database file can delete the newest entries and their checkpoint
rows; the database alone then looks like a smaller, valid ledger. The anchor is what the database
cannot change: the writer's memory while it runs, and ``latest-checkpoint.txt`` (written only by
the appliance, after each signature) across restarts.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass

from ..errors import RollbackDetectedError
from ..ledger.chain import ChainHead
from ..ledger.verifier import RootBuilder, b64


@dataclass(frozen=True)
class Anchor:
    size: int
    root: bytes


def root_at(conn: sqlite3.Connection, size: int) -> bytes:
    """The Merkle root of the database's first ``size`` entries, from their stored leaf hashes."""
    tree = RootBuilder()
    for (leaf,) in conn.execute("SELECT leaf_hash FROM ledger WHERE seq < ? ORDER BY seq", (size,)):
        tree.add(bytes(leaf))
    if tree.size != size:
        raise RollbackDetectedError(f"ROLLBACK: the database holds {tree.size} of the first {size} ledger entries "
                                    "this appliance signed; entries were removed. Refusing to go on.")
    return tree.root()


def check_extends(conn: sqlite3.Connection, head: ChainHead, anchor: Anchor | None, *, reloaded: bool) -> None:
    """Raise ``RollbackDetectedError`` unless the ledger (``head``, as loaded from ``conn``) extends
    ``anchor``. Cheap in the usual case: when the head was built by this writer since the anchor
    (``reloaded`` false) it extends it by construction, and when the sizes are equal the head's own
    root answers; only a head reloaded from a database that others wrote to is re-hashed."""
    if anchor is None:
        return
    if head.size < anchor.size:
        raise RollbackDetectedError(
            f"ROLLBACK: the database holds {head.size} ledger entries but this appliance signed a checkpoint of "
            f"size {anchor.size}; entries were removed or an old copy of the database was restored. "
            "Refusing to sign or write anything more.")
    if head.size == anchor.size:
        root = head.root()
    elif not reloaded:
        return
    else:
        root = root_at(conn, anchor.size)
    if root != anchor.root:
        raise RollbackDetectedError(
            f"FORK: the database's first {anchor.size} ledger entries hash to {b64(root)}, not to the root "
            f"{b64(anchor.root)} this appliance signed; history was rewritten. Refusing to sign or write anything more.")
