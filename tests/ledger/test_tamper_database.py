"""Tamper matrix against a real database written by the appliance; verified by the real CLI."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from alertengine.appliance import DataDir
from alertengine.ledger.keys import LedgerSigner
from alertengine.ledger.verifier import b64
from tests.conftest import run_cli
from tests.ledger.tamper import open_unguarded, populate, rewrite_from


@pytest.fixture
def ledger_dir(data_dir: DataDir) -> DataDir:
    populate(data_dir)
    return data_dir


def verify(data: DataDir, *extra: str) -> tuple[int, dict]:
    result = run_cli("ledger", "verify", "--data-dir", str(data.path), *extra)
    return result.code, json.loads(result.stdout)


def test_untouched_ledger_verifies(ledger_dir: DataDir) -> None:
    code, out = verify(ledger_dir)
    assert code == 0, out
    assert out["status"] == "ok" and out["kind"] is None
    assert out["entries_checked"] == 30 and out["checkpoint_size"] == 30 and out["pinned"] is True


def test_edited_body_is_entry_modified(ledger_dir: DataDir) -> None:
    with open_unguarded(ledger_dir.db_path) as conn:
        body = bytes(conn.execute("SELECT body FROM ledger WHERE seq = 7").fetchone()[0])
        conn.execute("UPDATE ledger SET body = ? WHERE seq = 7", (body.replace(b"event 7", b"event X"),))
    code, out = verify(ledger_dir)
    assert (code, out["kind"], out["first_bad_seq"]) == (1, "ENTRY_MODIFIED", 7)


def test_edited_body_and_hash_is_chain_break_at_next(ledger_dir: DataDir) -> None:
    from alertengine.ledger.verifier import leaf_hash
    with open_unguarded(ledger_dir.db_path) as conn:
        body = bytes(conn.execute("SELECT body FROM ledger WHERE seq = 7").fetchone()[0]).replace(b"event 7", b"event X")
        conn.execute("UPDATE ledger SET body = ?, leaf_hash = ? WHERE seq = 7", (body, leaf_hash(body)))
    code, out = verify(ledger_dir)
    assert (code, out["kind"], out["first_bad_seq"]) == (1, "CHAIN_BREAK", 8)


def test_deleted_row_is_seq_gap(ledger_dir: DataDir) -> None:
    with open_unguarded(ledger_dir.db_path) as conn:
        conn.execute("DELETE FROM ledger WHERE seq = 12")
    code, out = verify(ledger_dir)
    assert (code, out["kind"], out["first_bad_seq"]) == (1, "SEQ_GAP", 12)


def test_consistently_rewritten_tail_is_root_mismatch(ledger_dir: DataDir) -> None:
    with open_unguarded(ledger_dir.db_path) as conn:
        rewrite_from(conn, 24)
    code, out = verify(ledger_dir)
    # The checkpoint at 20 still matches; the one at 30 does not: history after seq 19 was rewritten.
    assert (code, out["kind"], out["first_bad_seq"]) == (1, "ROOT_MISMATCH", 20)


def test_truncation_behind_checkpoint_is_rollback_and_serve_refuses(ledger_dir: DataDir) -> None:
    with open_unguarded(ledger_dir.db_path) as conn:
        conn.execute("DELETE FROM ledger WHERE seq >= 25")
    code, out = verify(ledger_dir)
    assert (code, out["kind"], out["first_bad_seq"]) == (1, "ROLLBACK", 25)
    served = run_cli("serve", "--data-dir", str(ledger_dir.path), "--port", "1", timeout=30)
    assert served.code != 0
    assert "ROLLBACK" in served.stderr and "Refusing to start" in served.stderr


def test_restored_old_database_copy_is_rollback(ledger_dir: DataDir, tmp_path: Path) -> None:
    """An old copy of the database (with its own older checkpoints) is caught by the checkpoint kept outside it."""
    from alertengine.config import Config
    old = tmp_path / "old.db"
    shutil.copy(ledger_dir.db_path, old)
    db = ledger_dir.open_database(Config(data_dir=ledger_dir.path, checkpoint_interval=3600))
    from tests.conftest import event
    db.append_sync(*(event(100 + i) for i in range(5)))
    db.close()
    for suffix in ("", "-wal", "-shm"):
        Path(str(ledger_dir.db_path) + suffix).unlink(missing_ok=True)
    shutil.copy(old, ledger_dir.db_path)
    code, out = verify(ledger_dir)
    assert (code, out["kind"], out["first_bad_seq"]) == (1, "ROLLBACK", 30)
    served = run_cli("serve", "--data-dir", str(ledger_dir.path), "--port", "1", timeout=30)
    assert served.code != 0 and "ROLLBACK" in served.stderr


def test_forged_checkpoint_is_sig_invalid(ledger_dir: DataDir) -> None:
    with open_unguarded(ledger_dir.db_path) as conn:
        note = conn.execute("SELECT note FROM checkpoints WHERE size = 20").fetchone()[0]
        lines = note.split("\n")
        lines[2] = b64(bytes(32))
        conn.execute("UPDATE checkpoints SET note = ? WHERE size = 20", ("\n".join(lines),))
    code, out = verify(ledger_dir)
    assert (code, out["kind"]) == (1, "SIG_INVALID")


def test_wrong_pinned_key_is_key_untrusted(ledger_dir: DataDir) -> None:
    other = LedgerSigner.from_seed(ledger_dir.signer.name, bytes(range(32)))
    code, out = verify(ledger_dir, "--vkey", other.vkey)
    assert (code, out["kind"]) == (1, "KEY_UNTRUSTED")


def test_non_canonical_bytes_with_matching_hash_are_encoding(ledger_dir: DataDir) -> None:
    from alertengine.ledger.verifier import leaf_hash
    with open_unguarded(ledger_dir.db_path) as conn:
        body = bytes(conn.execute("SELECT body FROM ledger WHERE seq = 3").fetchone()[0])
        spaced = body.replace(b'"v":1}', b'"v": 1}')
        conn.execute("UPDATE ledger SET body = ?, leaf_hash = ? WHERE seq = 3", (spaced, leaf_hash(spaced)))
    code, out = verify(ledger_dir)
    assert (code, out["kind"], out["first_bad_seq"]) == (1, "ENCODING", 3)


def test_ledger_table_refuses_update_and_delete(ledger_dir: DataDir) -> None:
    import sqlite3
    conn = sqlite3.connect(ledger_dir.db_path)
    try:
        for sql in ("UPDATE ledger SET kind = 'x.y' WHERE seq = 1", "UPDATE ledger SET body = x'00' WHERE seq = 1",
                    "DELETE FROM ledger WHERE seq = 29", "DELETE FROM checkpoints", "UPDATE checkpoints SET note = ''"):
            with pytest.raises(sqlite3.DatabaseError, match="append-only"):
                conn.execute(sql)
    finally:
        conn.close()
    code, out = verify(ledger_dir)
    assert code == 0, out


def test_verify_cannot_run_without_a_data_dir(tmp_path: Path) -> None:
    result = run_cli("ledger", "verify", "--data-dir", str(tmp_path / "missing"))
    assert result.code == 2
    assert json.loads(result.stdout)["status"] == "error"


def test_bad_vkey_argument_cannot_run(ledger_dir: DataDir) -> None:
    code, out = verify(ledger_dir, "--vkey", "not-a-key")
    assert code == 2 and out["status"] == "error"
