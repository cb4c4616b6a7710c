"""An insider with write access to the database file cannot make the running appliance sign a
rolled-back or rewritten ledger: it refuses, ledgers an alarm when it can, and stops writing
(EMERGENCY); `latest-checkpoint.txt` keeps the last honest checkpoint, so a restart refuses too."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from alertengine.appliance import DataDir
from alertengine.config import Config
from alertengine.errors import RollbackDetectedError, StoreError
from alertengine.ledger.verifier import open_note, parse_checkpoint
from alertengine.store import Database
from tests.conftest import event, run_cli
from tests.ledger.tamper import open_unguarded
from tests.serving import running_appliance
from tests.waiting import wait_for


def _cut_newest(path: Path, keep: int) -> None:
    """Delete every entry from ``keep`` on, and every checkpoint beyond it, as an insider would."""
    with open_unguarded(path) as conn:
        conn.execute("DELETE FROM ledger WHERE seq >= ?", (keep,))
        conn.execute("DELETE FROM checkpoints WHERE size > ?", (keep,))
        conn.execute("DELETE FROM ledger_head")


def _held_size(data: DataDir) -> int:
    return parse_checkpoint(open_note(data.checkpoint_file.read_text(), data.signer.verifier)).size


def _stored_sizes(path: Path) -> list[int]:
    with sqlite3.connect(path) as conn:
        return [r[0] for r in conn.execute("SELECT size FROM checkpoints ORDER BY size")]


def _kinds(path: Path) -> list[str]:
    with sqlite3.connect(path) as conn:
        return [r[0] for r in conn.execute("SELECT kind FROM ledger ORDER BY seq")]


@pytest.fixture
def signed(data_dir: DataDir) -> Database:
    """A running appliance store with 20 entries and a checkpoint of all of them."""
    db = data_dir.open_database(Config(data_dir=data_dir.path, checkpoint_interval=3600))
    for n in range(20):
        db.append_sync(event(n))
    assert db.checkpoint_sync("export").size == 20
    return db


def test_deleting_the_newest_entries_under_a_running_writer_is_refused(data_dir: DataDir, signed: Database) -> None:
    _cut_newest(data_dir.db_path, keep=12)
    left = _stored_sizes(data_dir.db_path)     # what the insider left (an interval checkpoint may be among it)
    with pytest.raises(StoreError):
        signed.append_sync(event(99))                   # the next write finds the ledger shorter
    assert signed.writer_failed                         # nothing more is written: the mode is EMERGENCY
    with pytest.raises(StoreError):
        signed.append_sync(event(100))
    signed.close()                                      # shutting down signs nothing smaller
    assert _held_size(data_dir) == 20
    assert _kinds(data_dir.db_path)[-1] == "ledger.rollback_detected"   # the alarm, ledgered unsigned
    assert _stored_sizes(data_dir.db_path) == left      # nothing was signed after the deletion
    with pytest.raises(RollbackDetectedError, match="ROLLBACK"):
        data_dir.open_database(Config(data_dir=data_dir.path))


def test_a_shutdown_checkpoint_after_a_deletion_is_refused(data_dir: DataDir, signed: Database) -> None:
    _cut_newest(data_dir.db_path, keep=5)
    left = _stored_sizes(data_dir.db_path)
    signed.close()                                      # the final checkpoint is where the attack landed before
    assert _held_size(data_dir) == 20
    assert _stored_sizes(data_dir.db_path) == left and all(size <= 5 for size in left)


def test_history_rewritten_and_extended_by_another_process_is_a_fork(data_dir: DataDir, signed: Database) -> None:
    _cut_newest(data_dir.db_path, keep=15)
    # the insider appends other entries through a second store without the appliance's held checkpoint
    other = Database(data_dir.db_path, signer=data_dir.signer, checkpoint_interval=3600).open()
    for n in range(8):
        other.append_sync(event(1000 + n))
    other.close()                                        # 23 entries now, checkpoint rows to match
    with pytest.raises(StoreError):
        signed.append_sync(event(99))
    assert signed.writer_failed
    signed.close()
    assert _held_size(data_dir) == 20
    with pytest.raises(RollbackDetectedError, match="FORK"):
        data_dir.open_database(Config(data_dir=data_dir.path))


def test_other_appliance_commands_appending_meanwhile_are_normal(data_dir: DataDir, signed: Database) -> None:
    other = data_dir.open_database(Config(data_dir=data_dir.path, checkpoint_interval=3600))
    other.append_sync(event(500))                         # e.g. `alertengine tenant add` while serve runs
    other.close()
    signed.append_sync(event(21))
    assert signed.checkpoint_sync("export").size == 22
    assert not signed.writer_failed
    signed.close()
    assert _held_size(data_dir) == 22


@pytest.mark.slow
def test_a_running_serve_refuses_a_rollback_and_shows_emergency(tmp_path: Path) -> None:
    with running_appliance(tmp_path) as app:
        tenant = app.add_tenant("acme")
        for n in range(5):
            app.add_key(tenant, "viewer", f"k{n}")
        size = wait_for(lambda: app.get("/healthz").json()["ledger"]["checkpoint_size"] or None,
                        what="a first checkpoint")
        cut = size - 3
        _cut_newest(app.data / "alertengine.db", keep=cut)
        reply = app.request("POST", "/api/tenants", app.admin_key, json={"name": "after"})
        assert reply.status_code == 503                    # the write is refused, not lost silently
        health = wait_for(lambda: (h := app.get("/healthz").json())["mode"] == "EMERGENCY" and h,
                          what="EMERGENCY at /healthz")
        assert health["mode"] == "EMERGENCY"
        assert app.stop() == 0
    held = (app.data / "latest-checkpoint.txt").read_text().splitlines()
    assert int(held[1]) >= size                             # never replaced by a smaller checkpoint
    verified = run_cli("ledger", "verify", "--data-dir", str(app.data))
    assert verified.code == 1 and json.loads(verified.stdout)["kind"] == "ROLLBACK"
    restarted = run_cli("serve", "--data-dir", str(app.data), "--port", "1", timeout=60)
    assert restarted.code == 1 and "ROLLBACK" in restarted.stderr
    assert "API key" not in restarted.stdout
