"""Verification of the live ledger database (``alertengine ledger verify``), spec/ledger.md §5."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from .verifier import (ChainChecker, NoteError, Result, RootBuilder, VerificationFailure, VerifierKey, b64,
                       leaf_hash, open_note, parse_checkpoint, parse_entry)


def verify_database(conn: sqlite3.Connection, vkey: VerifierKey, *, pinned: bool = True,
                    external_checkpoint: Path | None = None, held_checkpoint: str | None = None) -> Result:
    """Verify every entry and every stored checkpoint of a live database.

    ``external_checkpoint`` is the appliance's copy of its newest checkpoint kept outside the
    database, so that restoring an old database file is seen as a rollback.
    """
    res = Result(pinned=pinned)
    try:
        _verify(conn, vkey, external_checkpoint, held_checkpoint, res)
    except VerificationFailure as f:
        res.fail(f.kind, f.seq, f.detail)
    except NoteError as e:
        res.fail(e.kind, None, e.detail)
    return res


def _verify(conn: sqlite3.Connection, vkey: VerifierKey, external: Path | None, held: str | None,
            res: Result) -> None:
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

    checker = ChainChecker()
    tree = RootBuilder()
    good_size = 0  # entries [0, good_size) are covered by a checkpoint whose root matched
    res.checkpoint_size = newest
    if newest in checkpoints:
        res.root = b64(checkpoints[newest])
    expected = 0
    cur = conn.execute("SELECT seq, tenant, tseq, body, leaf_hash FROM ledger ORDER BY seq")
    while True:
        rows = cur.fetchmany(4096)
        if not rows:
            break
        for seq, tenant, tseq, body, stored in rows:
            if seq != expected:
                raise VerificationFailure("SEQ_GAP", expected, f"entries {expected}..{seq - 1} are missing")
            leaf = leaf_hash(body)
            if leaf != stored:
                raise VerificationFailure("ENTRY_MODIFIED", seq, "the entry's bytes do not match its stored leaf hash")
            obj = parse_entry(body, seq)
            if obj["seq"] != seq or obj["tenant"] != tenant or obj["tseq"] != tseq:
                raise VerificationFailure("ENTRY_MODIFIED", seq, "the entry's indexed columns disagree with its bytes")
            checker.add(obj, leaf, track_tenants=True)
            tree.add(leaf)
            expected += 1
            root = checkpoints.get(expected)
            if root is not None:
                if tree.root() != root:
                    raise VerificationFailure(
                        "ROOT_MISMATCH", good_size,
                        f"entries 0..{expected - 1} do not hash to the checkpoint of size {expected}; history after "
                        f"seq {good_size - 1} was rewritten" if good_size else
                        f"entries 0..{expected - 1} do not hash to the checkpoint of size {expected}")
                good_size = expected
            if held_cp is not None and held_cp.size == expected and tree.root() != held_cp.root:
                raise VerificationFailure("FORK", None, f"the held checkpoint of size {held_cp.size} is not in this ledger")
            res.entries_checked += 1
    if expected < newest:
        raise VerificationFailure(
            "ROLLBACK", expected, f"the database holds {expected} entries but a checkpoint of size {newest} was signed")
    if held_cp is not None and held_cp.size > expected:
        raise VerificationFailure("ROLLBACK", expected,
                                  f"the held checkpoint has size {held_cp.size}, the database only {expected} entries")
    res.covers = {"from_seq": 0 if expected else None, "to_seq": expected - 1 if expected else None,
                  "from_tseq": None, "to_tseq": None}
    res.complete = True
    unsigned = expected - good_size
    res.detail = f"{expected} entries and {len(checkpoints)} checkpoints verified" + (
        f"; {unsigned} newest entries are chained but not yet under a signed checkpoint" if unsigned else "")


def _open(note: str, vkey: VerifierKey, label: str) -> str:
    try:
        return open_note(note, vkey)
    except NoteError as e:
        raise NoteError(e.kind, f"{label}: {e.detail}") from None
