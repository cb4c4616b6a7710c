"""Audit bundle export (docs/ledger-format.md, "Audit bundles"): entries, signed checkpoint, proofs, verifier, manifest."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import sqlite3
import tarfile
import tempfile
import time
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Callable

from ..errors import ExportError
from ..ledger.entry import SYSTEM_TENANT, LedgerEvent, utc_timestamp
from ..ledger.merkle import MerkleTree
from ..ledger.verifier import FORMAT, b64
from .database import Database, StoredCheckpoint, Where

# Earlier checkpoints shipped with consistency proofs: those signed at exports and shutdowns,
# which are the ones an auditor is likely to hold already.
EARLIER_CHECKPOINTS = 32

VERIFY_MD = """\
# Verifying this AlertEngine audit bundle

This bundle follows the AlertEngine ledger format, version 1, described in `ledger-format.md`
beside this file (the normative document: entries, chains, tree, checkpoints, bundles). You need the
appliance's verifier key, obtained from the appliance's operator through a channel you trust
(`alertengine ledger key` prints it), and Python 3 with the `cryptography` package.

    pip install cryptography
    python3 verify.py {bundle} --vkey '{vkey}'

(verify the key above against the one you pinned: the manifest's copy is not signed.)

Optionally add `--checkpoint OLD.txt` with a checkpoint you received earlier, to prove that the
log you hold is an extension of the one you saw then (`ROLLBACK` / `FORK` otherwise).

`verify.py` prints one JSON object. `"status": "ok"` means every entry is the byte-exact original,
chained, and included in the Merkle tree whose root this appliance signed. `"complete": false`
means the bundle verified but stops before the end of what it could hold (entries were left out
at its end). On failure, `kind` names the check and `first_bad_seq` the first altered entry.
Exit status: 0 verified, 1 failed, 2 could not run.

Scope of this bundle: {scope}
Checkpoint: size {size}, root {root}
"""


@dataclass(frozen=True)
class ExportSummary:
    path: Path
    entries: int
    checkpoint_size: int
    root: str
    scope: dict
    seconds: float


def verifier_source() -> bytes:
    return resources.files("alertengine.ledger").joinpath("verifier.py").read_bytes()


def format_document() -> bytes:
    """The normative format document (docs/ledger-format.md), shipped beside verify.py."""
    return resources.files("alertengine.ledger").joinpath("ledger-format.md").read_bytes()


def export_bundle(db: Database, out: Path, *, tenant: str | None = None, incident: str | None = None,
                  since: str | None = None, until: str | None = None, actor: str = "system",
                  progress: Callable[[int, int], None] | None = None,
                  cosign: Callable[[StoredCheckpoint], list[str]] | None = None) -> ExportSummary:
    """Write an audit bundle to ``out`` atomically (a temporary file renamed at the end). ``cosign``
    asks the configured witnesses to cosign the bundle's checkpoint; their lines are appended to
    ``checkpoint.txt`` (ledger-format.md, 4.9)."""
    started = time.perf_counter()
    signer = db.signer
    if signer is None:
        raise ExportError("the database has no ledger key to sign with")
    with db.reader() as conn:
        if incident is not None:
            tenant = _incident_tenant(conn, incident, tenant)
        elif tenant is not None and not conn.execute("SELECT 1 FROM ledger WHERE tenant = ? LIMIT 1", (tenant,)).fetchone():
            raise ExportError(f"tenant {tenant!r} has no ledger entries")
    scope_text = {"tenant": tenant, "incident": incident, "since": since, "until": until}
    # The export is itself ledgered, in the chain of what it exports (so it is the bundle's last entry).
    db.append_sync(LedgerEvent(kind="ledger.exported", tenant=tenant or SYSTEM_TENANT, actor=actor, incident=incident,
                               reason="audit bundle exported", data={"scope": scope_text}))
    cp = db.checkpoint_sync("export")
    assert cp is not None
    n = cp.size
    with db.reader() as conn:
        rows_sql, params, scope = _select(conn, n, tenant, incident, since, until)
        full = tenant is None and scope["from_seq"] == 0 and scope["to_seq"] == n - 1
        earlier = [c for c in _earlier_checkpoints(conn) if c[0] < n]
        tree = None
        if not full or earlier:
            tree = MerkleTree([bytes(r[0]) for r in conn.execute("SELECT leaf_hash FROM ledger WHERE seq < ? ORDER BY seq", (n,))])
            if tree.root() != cp.root:
                raise ExportError("the database's entries do not match its signed checkpoint; run `alertengine ledger verify`")
        files: dict[str, bytes | Path] = {}
        tmpdir = Path(tempfile.mkdtemp(prefix="alertengine-export-", dir=out.parent if out.parent.exists() else None))
        try:
            entries_path = tmpdir / "entries.jsonl"
            proofs_path = tmpdir / "proofs.jsonl"
            count = 0
            total = scope["to_seq"] - scope["from_seq"] + 1 if tenant is None else scope["to_tseq"] - scope["from_tseq"] + 1
            with open(entries_path, "wb") as ef, (open(proofs_path, "wb") if not full else _NullFile()) as pf:
                cur = conn.execute(rows_sql, params)
                while True:
                    rows = cur.fetchmany(8192)
                    if not rows:
                        break
                    ef.write(b"\n".join(bytes(r[1]) for r in rows) + b"\n")
                    if not full:
                        assert tree is not None
                        pf.write("".join(json.dumps({"seq": r[0], "path": [b64(h) for h in tree.inclusion_proof(r[0], n)]}) + "\n"
                                         for r in rows).encode())
                    count += len(rows)
                    if progress:
                        progress(count, total)
            files["entries.jsonl"] = entries_path
            cosignatures = cosign(cp) if cosign is not None else []
            files["checkpoint.txt"] = (cp.note + "".join(cosignatures)).encode()
            if not full:
                files["proofs.jsonl"] = proofs_path
            if tenant is not None:
                head_count, head_leaf = _tenant_head(conn, tenant, n)
                files["tenant-head.txt"] = signer.sign_note(
                    f"{signer.name}/tenant/{tenant}\n{head_count}\n{b64(head_leaf)}\n").encode()
            if earlier:
                assert tree is not None
                lines = []
                for size, note in earlier:
                    files[f"checkpoints/{size:012d}.txt"] = note.encode()
                    lines.append(json.dumps({"old_size": size, "new_size": n,
                                             "path": [b64(h) for h in tree.consistency_proof(size, n)]}))
                files["consistency.jsonl"] = ("\n".join(lines) + "\n").encode()
            scope_desc = json.dumps(scope)
            files["verify.py"] = verifier_source()
            files["ledger-format.md"] = format_document()
            files["VERIFY.md"] = VERIFY_MD.format(bundle=out.name, vkey=signer.vkey, scope=scope_desc,
                                                  size=n, root=b64(cp.root)).encode()
            manifest = {"format": FORMAT, "origin": signer.name, "vkey": signer.vkey, "scope": scope,
                        "checkpoint_size": n, "created": utc_timestamp(),
                        "files": {name: _sha256(v) for name, v in files.items()}}
            files["manifest.json"] = json.dumps(manifest, indent=1).encode()
            _write_tar(out, files)
        finally:
            for p in tmpdir.iterdir():
                p.unlink()
            tmpdir.rmdir()
    return ExportSummary(out, count, n, b64(cp.root), scope, time.perf_counter() - started)


def _incident_tenant(conn: sqlite3.Connection, incident: str, tenant: str | None) -> str:
    tenants = [r[0] for r in conn.execute("SELECT DISTINCT tenant FROM ledger WHERE incident = ?", (incident,))]
    if tenant is not None:
        if tenant not in tenants:
            raise ExportError(f"incident {incident!r} has no entries for tenant {tenant!r}")
        return tenant
    if not tenants:
        raise ExportError(f"incident {incident!r} has no ledger entries")
    if len(tenants) > 1:
        raise ExportError(f"incident {incident!r} exists in several tenants; name one with --tenant")
    return tenants[0]


def _select(conn: sqlite3.Connection, n: int, tenant: str | None, incident: str | None,
            since: str | None, until: str | None) -> tuple[str, tuple, dict]:
    """The SQL for the exported rows, and the bundle's scope."""
    where = Where().add("seq < ?", n).eq("tenant", tenant).eq("incident", incident)
    where.add("ts >= ?", since or None).add("ts < ?", until or None)
    lo, hi = conn.execute("SELECT min(seq), max(seq) FROM ledger" + where.sql(), where.params).fetchone()
    if lo is None:
        raise ExportError("no ledger entries in the requested scope")
    scope = {"tenant": tenant, "incident": incident, "from_seq": lo, "to_seq": hi, "from_tseq": None, "to_tseq": None}
    if tenant is None:
        return "SELECT seq, body, leaf_hash FROM ledger WHERE seq BETWEEN ? AND ? ORDER BY seq", (lo, hi), scope
    # A tenant (or incident) bundle is the contiguous tseq range of the tenant between those entries.
    tlo = conn.execute("SELECT tseq FROM ledger WHERE seq = ?", (lo,)).fetchone()[0]
    thi = conn.execute("SELECT tseq FROM ledger WHERE seq = ?", (hi,)).fetchone()[0]
    scope.update(from_tseq=tlo, to_tseq=thi)
    return ("SELECT seq, body, leaf_hash FROM ledger WHERE tenant = ? AND tseq BETWEEN ? AND ? ORDER BY tseq",
            (tenant, tlo, thi), scope)


def _tenant_head(conn: sqlite3.Connection, tenant: str, n: int) -> tuple[int, bytes]:
    tseq, leaf = conn.execute("SELECT tseq, leaf_hash FROM ledger WHERE tenant = ? AND seq < ? "
                              "ORDER BY seq DESC LIMIT 1", (tenant, n)).fetchone()
    return tseq + 1, bytes(leaf)


def _earlier_checkpoints(conn: sqlite3.Connection) -> list[tuple[int, str]]:
    rows = conn.execute("SELECT size, note FROM checkpoints WHERE reason IN ('export', 'shutdown') AND size > 0 "
                        "ORDER BY size DESC LIMIT ?", (EARLIER_CHECKPOINTS + 1,)).fetchall()
    return sorted(rows)


def _sha256(value: bytes | Path) -> str:
    if isinstance(value, bytes):
        return hashlib.sha256(value).hexdigest()
    h = hashlib.sha256()
    with open(value, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _write_tar(out: Path, files: dict[str, bytes | Path]) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", dir=out.parent)
    try:
        with os.fdopen(fd, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", compresslevel=3, mtime=0) as gz, \
                tarfile.open(fileobj=gz, mode="w", format=tarfile.PAX_FORMAT) as tar:
            order = ["manifest.json"] + sorted(k for k in files if k != "manifest.json")
            for name in order:
                value = files[name]
                info = tarfile.TarInfo(name)
                info.mode = 0o644
                info.mtime = int(time.time())
                if isinstance(value, bytes):
                    info.size = len(value)
                    tar.addfile(info, io.BytesIO(value))
                else:
                    info.size = value.stat().st_size
                    with open(value, "rb") as f:
                        tar.addfile(info, f)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, out)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


class _NullFile:
    def __enter__(self) -> "_NullFile":
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def write(self, data: bytes) -> int:
        return len(data)
