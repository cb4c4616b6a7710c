"""Verification of the live ledger database (``alertengine ledger verify``), as ledger-format.md describes.

The entries are checked in chunks of consecutive ``seq``. Each chunk's entries are checked on their
own (stored hash, canonical form, ``prev`` and tenant links inside the chunk), in worker processes
when the ledger is large; the parent then stitches the chunks together in order (links across
chunk boundaries, the Merkle tree, every checkpoint's root) and reports the failure with the
smallest ``seq`` — exactly what a one-pass check would report.
"""

from __future__ import annotations

import bisect
import concurrent.futures
import hashlib
import multiprocessing
import os
import sqlite3
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from .verifier import (
    ZERO_HASH_HEX,
    NoteError,
    Result,
    RootBuilder,
    VerificationFailure,
    VerifierKey,
    b64,
    entry_fields,
    fast_entry_fields,
    open_note,
    parse_checkpoint,
    parse_entry,
    tree_levels,
)

CHUNK = 32_768             # a power of two, so that each chunk's tree joins the whole one as perfect subtrees
PARALLEL_FROM = 4 * CHUNK  # smaller ledgers are checked in this process
_sha256 = hashlib.sha256


@dataclass
class ChunkResult:
    lo: int
    count: int = 0                      # entries that passed every check inside the chunk
    levels: list[bytes] = field(default_factory=lambda: [b""])  # tree_levels of their leaf hashes
    first_prev: str | None = None       # the first entry's prev (checked by the parent)
    tenant_first: dict[str, tuple[int, int, str]] = field(default_factory=dict)  # tenant -> (seq, tseq, tprev)
    tenant_last: dict[str, tuple[int, bytes]] = field(default_factory=dict)      # tenant -> (tseq, leaf)
    failure: tuple[str, int, str] | None = None


Connect = Callable[[str], Any]


def sqlite_readonly(db_path: str) -> sqlite3.Connection:
    return sqlite3.connect(f"file:{db_path}?mode=ro", uri=True)


def check_chunk(db_path: str, lo: int, hi: int, connect: Connect = sqlite_readonly) -> ChunkResult:
    """Check entries with ``lo <= seq < hi`` on their own. Runs in a worker process."""
    conn = connect(db_path)
    try:
        return _check_rows(conn.execute("SELECT seq, tenant, tseq, body, leaf_hash FROM ledger "
                                        "WHERE seq >= ? AND seq < ? ORDER BY seq", (lo, hi)), lo, hi)
    finally:
        conn.close()


def _check_rows(rows: sqlite3.Cursor, lo: int, hi: int) -> ChunkResult:
    out = ChunkResult(lo)
    leaves: list[bytes] = []
    expected = lo
    prev_hex: str | None = None
    tenant_first = out.tenant_first
    tenant_last: dict[str, tuple[int, bytes, str]] = {}
    try:
        for seq, tenant, tseq, body, stored in rows:
            if seq != expected:
                raise VerificationFailure("SEQ_GAP", expected, f"entries {expected}..{seq - 1} are missing")
            leaf = _sha256(b"\x00" + body).digest()
            if leaf != stored:
                raise VerificationFailure("ENTRY_MODIFIED", seq, "the entry's bytes do not match its stored leaf hash")
            b_seq, b_tenant, b_tseq, prev, tprev = fast_entry_fields(body) or entry_fields(parse_entry(body, seq))
            if b_seq != seq or b_tenant != tenant or b_tseq != tseq:
                raise VerificationFailure("ENTRY_MODIFIED", seq, "the entry's indexed columns disagree with its bytes")
            if prev_hex is None:
                out.first_prev = prev
            elif prev != prev_hex:
                raise VerificationFailure("CHAIN_BREAK", seq, "prev is not the leaf hash of the previous entry")
            prev_hex = leaf.hex()
            last = tenant_last.get(tenant)
            if last is None:
                tenant_first[tenant] = (seq, tseq, tprev)
            elif tseq != last[0] + 1 or tprev != last[2]:
                raise VerificationFailure("TENANT_CHAIN_BREAK", seq,
                                          f"tenant {tenant!r}: expected tseq {last[0] + 1} linked to its previous entry")
            tenant_last[tenant] = (tseq, leaf, prev_hex)
            leaves.append(leaf)
            expected += 1
        if expected < hi:
            raise VerificationFailure("SEQ_GAP", expected, f"entries {expected}..{hi - 1} are missing")
    except VerificationFailure as f:
        out.failure = (f.kind, f.seq if f.seq is not None else expected, f.detail)
    out.count = expected - lo
    out.levels = tree_levels(b"".join(leaves))
    out.tenant_last = {t: v[:2] for t, v in tenant_last.items()}
    return out


def verify_database(db_path: Path | str, vkey: VerifierKey, *, pinned: bool = True,
                    external_checkpoint: Path | None = None, held_checkpoint: str | None = None,
                    workers: int | None = None, connect: Connect = sqlite_readonly) -> Result:
    """Verify every entry and every stored checkpoint of a live database (read-only).

    ``external_checkpoint`` is the appliance's copy of its newest checkpoint kept outside the
    database, so that restoring an old database file is seen as a rollback. ``workers`` processes
    check large ledgers in parallel (default: the number of CPUs, at most 4). ``connect`` opens a
    read-only connection to ``db_path`` (picklable: the workers call it too); the default reads an
    SQLite file, the store's ``connect`` also a PostgreSQL URL.
    """
    res = Result(pinned=pinned)
    conn = connect(str(db_path))
    try:
        _verify(str(db_path), conn, vkey, external_checkpoint, held_checkpoint, res, workers, connect)
    except VerificationFailure as f:
        res.fail(f.kind, f.seq, f.detail)
    except NoteError as e:
        res.fail(e.kind, None, e.detail)
    finally:
        conn.close()
    return res


def _verify(db_path: str, conn: sqlite3.Connection, vkey: VerifierKey, external: Path | None, held: str | None,
            res: Result, workers: int | None, connect: Connect = sqlite_readonly) -> None:
    conn.execute("BEGIN")  # one read snapshot for the checkpoints and the row count
    checkpoints: dict[int, bytes] = {}
    for size, note in conn.execute("SELECT size, note FROM checkpoints ORDER BY size"):
        cp = parse_checkpoint(_open(note, vkey, f"checkpoint {size}"))
        if cp.origin != vkey.name or cp.size != size:
            raise VerificationFailure("SIG_INVALID", None, f"stored checkpoint {size} names another log or size")
        checkpoints[cp.size] = cp.root
    newest = max(checkpoints, default=0)
    if external is not None and external.exists():
        ext = parse_checkpoint(_open(external.read_text(encoding="utf-8"), vkey, str(external)))
        if ext.size in checkpoints and checkpoints[ext.size] != ext.root:
            raise VerificationFailure("FORK", None, f"{external} and the database sign different roots for size {ext.size}")
        checkpoints[ext.size] = ext.root
        newest = max(newest, ext.size)
    held_cp = parse_checkpoint(_open(held, vkey, "the held checkpoint")) if held else None
    if held_cp is not None:
        if held_cp.size in checkpoints and checkpoints[held_cp.size] != held_cp.root:
            raise VerificationFailure("FORK", None, f"the held checkpoint of size {held_cp.size} differs from the "
                                                    "one this ledger signed for that size")
        checkpoints[held_cp.size] = held_cp.root
    res.checkpoint_size = newest
    if newest in checkpoints:
        res.root = b64(checkpoints[newest])
    top = conn.execute("SELECT max(seq) FROM ledger").fetchone()[0]
    end = top + 1 if top is not None else 0

    stitch = _Stitcher(checkpoints, held_cp.size if held_cp else None)
    ranges = [(lo, min(lo + CHUNK, end)) for lo in range(0, end, CHUNK)]
    if end < PARALLEL_FROM or workers == 1:
        for lo, hi in ranges:
            cur = conn.execute("SELECT seq, tenant, tseq, body, leaf_hash FROM ledger WHERE seq >= ? AND seq < ? "
                               "ORDER BY seq", (lo, hi))
            stitch.add(_check_rows(cur, lo, hi))
    else:
        n = workers or min(os.cpu_count() or 1, 4)
        ctx = multiprocessing.get_context("spawn")
        with concurrent.futures.ProcessPoolExecutor(max_workers=n, mp_context=ctx) as pool:
            futures = [pool.submit(check_chunk, db_path, lo, hi, connect) for lo, hi in ranges]
            try:
                for fut in futures:
                    stitch.add(fut.result())
            finally:
                for fut in futures:
                    fut.cancel()
    conn.execute("COMMIT")
    expected = stitch.tree.size
    res.entries_checked = expected
    if expected < newest:
        raise VerificationFailure(
            "ROLLBACK", expected, f"the database holds {expected} entries but a checkpoint of size {newest} was signed")
    if held_cp is not None and held_cp.size > expected:
        raise VerificationFailure("ROLLBACK", expected,
                                  f"the held checkpoint has size {held_cp.size}, the database only {expected} entries")
    res.covers = {"from_seq": 0 if expected else None, "to_seq": expected - 1 if expected else None,
                  "from_tseq": None, "to_tseq": None}
    res.complete = True
    unsigned = expected - stitch.good_size
    res.detail = f"{expected} entries and {len(checkpoints)} checkpoints verified" + (
        f"; {unsigned} newest entries are chained but not yet under a signed checkpoint" if unsigned else "")


class _Stitcher:
    """Joins chunk results in seq order: boundary links, the tree, checkpoint roots."""

    def __init__(self, checkpoints: dict[int, bytes], held_size: int | None) -> None:
        self.checkpoints = checkpoints
        self.sizes = sorted(checkpoints)
        self.held_size = held_size
        self.tree = RootBuilder()
        self.last_leaf: bytes | None = None
        self.tenant_last: dict[str, tuple[int, bytes]] = {}
        self.good_size = 0  # entries [0, good_size) are under a checkpoint whose root matched

    def add(self, chunk: ChunkResult) -> None:
        # Candidate failures in this chunk; the one with the smallest seq is what a one-pass check meets first.
        candidates: list[tuple[int, str, str]] = []
        if chunk.failure is not None:
            kind, seq, detail = chunk.failure
            candidates.append((seq, kind, detail))
        if chunk.count:
            want = self.last_leaf.hex() if self.last_leaf is not None else ZERO_HASH_HEX
            if chunk.first_prev != want:
                candidates.append((chunk.lo, "CHAIN_BREAK", "prev is not the leaf hash of the previous entry"
                                   if chunk.lo else "first entry's prev is not 64 zeros"))
            for tenant, (seq, tseq, tprev) in chunk.tenant_first.items():
                last = self.tenant_last.get(tenant)
                exp_tseq, exp_tprev = (last[0] + 1, last[1].hex()) if last else (0, ZERO_HASH_HEX)
                if tseq != exp_tseq or tprev != exp_tprev:
                    candidates.append((seq, "TENANT_CHAIN_BREAK",
                                       f"tenant {tenant!r}: expected tseq {exp_tseq} linked to its previous entry"))
        first = min(candidates) if candidates else None
        usable = chunk.count if first is None else first[0] - chunk.lo
        tree = self.tree
        base = tree.size   # == chunk.lo
        for size in self.sizes[bisect.bisect_right(self.sizes, base):bisect.bisect_right(self.sizes, base + usable)]:
            at = RootBuilder(tree.size, tree.frontier)
            at.extend(chunk.levels, size - base)
            if at.root() != self.checkpoints[size]:
                if size == self.held_size:
                    raise VerificationFailure("FORK", None, f"the held checkpoint of size {size} is not in this ledger")
                raise VerificationFailure(
                    "ROOT_MISMATCH", self.good_size,
                    f"entries 0..{size - 1} do not hash to the checkpoint of size {size}"
                    + (f"; history after seq {self.good_size - 1} was rewritten" if self.good_size else ""))
            self.good_size = size
        tree.extend(chunk.levels, usable)
        if first is not None:
            raise VerificationFailure(first[1], first[0], first[2])
        if usable:
            self.last_leaf = chunk.levels[0][32 * usable - 32:32 * usable]
        self.tenant_last.update(chunk.tenant_last)


def _open(note: str, vkey: VerifierKey, label: str) -> str:
    try:
        return open_note(note, vkey)
    except NoteError as e:
        raise NoteError(e.kind, f"{label}: {e.detail}") from None
