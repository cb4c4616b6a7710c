"""Helpers that alter a real ledger database or bundle the way an attacker would."""

from __future__ import annotations

import contextlib
import hashlib
import json
import sqlite3
import tarfile
from pathlib import Path
from typing import Iterator

from alertengine.appliance import DataDir
from alertengine.config import Config
from alertengine.ledger.entry import canonical
from alertengine.ledger.verifier import leaf_hash
from tests.conftest import event

TENANTS = ("acme", "globex", "_system")


def populate(data: DataDir, total: int = 30, checkpoint_at: int = 20) -> None:
    """``total`` entries over three tenants, acme's in incident INC-1; checkpoints at
    ``checkpoint_at`` and, at close, at ``total``."""
    db = data.open_database(Config(data_dir=data.path, checkpoint_interval=3600))
    try:
        for n in range(total):
            tenant = TENANTS[n % 3]
            db.append_sync(event(n, tenant, incident="INC-1" if tenant == "acme" else None))
            if n + 1 == checkpoint_at:
                db.checkpoint_sync("export")
    finally:
        db.close()


@contextlib.contextmanager
def open_unguarded(path: Path) -> Iterator[sqlite3.Connection]:
    """A connection with the append-only triggers dropped, as an attacker with file access would."""
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        for trig in ("ledger_no_update", "ledger_no_delete", "checkpoints_no_update", "checkpoints_no_delete"):
            conn.execute(f"DROP TRIGGER IF EXISTS {trig}")
        yield conn
    finally:
        conn.close()


def rewrite_from(conn: sqlite3.Connection, start: int) -> None:
    """Rewrite every entry from ``start`` on, keeping all chains and stored hashes consistent."""
    rows = conn.execute("SELECT seq, body FROM ledger ORDER BY seq").fetchall()
    leaves: dict[int, bytes] = {}
    tenant_last: dict[str, bytes] = {}
    for seq, body in rows:
        obj = json.loads(body)
        if seq >= start:
            obj["reason"] = f"rewritten {seq}"
            obj["prev"] = leaves[seq - 1].hex() if seq else "0" * 64
            obj["tprev"] = tenant_last[obj["tenant"]].hex() if obj["tenant"] in tenant_last else "0" * 64
            body = canonical(obj)
            conn.execute("UPDATE ledger SET body = ?, leaf_hash = ? WHERE seq = ?", (body, leaf_hash(body), seq))
        leaves[seq] = leaf_hash(bytes(body))
        tenant_last[obj["tenant"]] = leaves[seq]


def unpack(bundle: Path, dest: Path) -> Path:
    with tarfile.open(bundle) as tar:
        tar.extractall(dest, filter="data")
    return dest


def rehash_manifest(d: Path, **scope: object) -> None:
    manifest = json.loads((d / "manifest.json").read_text())
    for name in manifest["files"]:
        manifest["files"][name] = hashlib.sha256((d / name).read_bytes()).hexdigest()
    manifest["scope"].update(scope)
    (d / "manifest.json").write_text(json.dumps(manifest))


def edit_line(d: Path, index: int, new: bytes | None) -> list[bytes]:
    """Replace (or with None, delete) line ``index`` of entries.jsonl; returns the original lines."""
    lines = (d / "entries.jsonl").read_bytes().splitlines()
    original = list(lines)
    if new is None:
        del lines[index]
    else:
        lines[index] = new
    (d / "entries.jsonl").write_bytes(b"".join(line + b"\n" for line in lines))
    return original
