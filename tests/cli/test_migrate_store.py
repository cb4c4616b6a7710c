"""``alertengine migrate-store --to postgresql://…``: an SQLite appliance's data copied into
PostgreSQL in one transaction, verified there with the appliance's key, and the appliance then
running on it; refused (and nothing changed) into a database that already holds a ledger, while
``serve`` runs, or to something that is not a PostgreSQL URL."""

from __future__ import annotations

import fcntl
import json
from pathlib import Path

import psycopg

from alertengine.appliance import DataDir
from alertengine.config import Config
from alertengine.tenancy.tenants import create_integration, create_tenant
from tests.conftest import event, run_cli
from tests.pgcluster import PgCluster


def sqlite_appliance(data_dir: DataDir) -> tuple[int, str]:
    """A few tenants, keys and entries in the SQLite store; returns (ledger size, checkpoint root)."""
    db = data_dir.open_database(Config(data_dir=data_dir.path, checkpoint_interval=3600))
    try:
        acme = db.write_sync(create_tenant("acme", "test")).id
        db.write_sync(create_tenant("globex", "test"))
        db.write_sync(create_integration(acme, "am", "test"))
        db.append_sync(*(event(n, tenant=acme) for n in range(25)))
        cp = db.checkpoint_sync("test")
        assert cp is not None
        return db.ledger_size, cp.note
    finally:
        db.close()


def count(url: str, table: str) -> int:
    with psycopg.connect(url, autocommit=True) as conn:
        return conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0]


def test_the_data_is_copied_verified_and_the_appliance_runs_on_it(data_dir: DataDir, pg_cluster: PgCluster) -> None:
    size, _note = sqlite_appliance(data_dir)
    url = pg_cluster.fresh_url("mig")
    before = run_cli("ledger", "verify", "--data-dir", str(data_dir.path))
    assert before.code == 0

    done = run_cli("migrate-store", "--to", url, "--data-dir", str(data_dir.path))
    assert done.code == 0, done.stderr
    report = done.json()
    assert report["status"] == "ok" and report["ledger_size"] == size == 2 + 1 + 25
    assert report["tables"]["tenants"] == 2 and report["tables"]["ledger"] == size
    assert report["root"] == before.json()["root"]
    assert count(url, "ledger") == size and count(url, "tenants") == 2 and count(url, "integration_keys") == 1

    on_pg = {"ALERTENGINE_DATABASE_URL": url}
    after = run_cli("ledger", "verify", "--data-dir", str(data_dir.path), env=on_pg)
    assert after.code == 0, after.stdout + after.stderr
    assert (after.json()["entries_checked"], after.json()["root"]) == (size, before.json()["root"])
    # the appliance goes on writing there: ids continue after the copied ones
    added = run_cli("tenant", "add", "initech", "--data-dir", str(data_dir.path), env=on_pg)
    assert added.code == 0, added.stderr
    listed = run_cli("tenant", "list", "--data-dir", str(data_dir.path), env=on_pg)
    assert sorted(t["name"] for t in listed.json()) == ["acme", "globex", "initech"]
    assert run_cli("ledger", "verify", "--data-dir", str(data_dir.path), env=on_pg).json()["entries_checked"] == size + 1


def test_a_database_that_already_holds_a_ledger_is_refused_and_left_as_it_was(data_dir: DataDir,
                                                                           pg_cluster: PgCluster) -> None:
    sqlite_appliance(data_dir)
    url = pg_cluster.fresh_url("mig")
    assert run_cli("migrate-store", "--to", url, "--data-dir", str(data_dir.path)).code == 0
    entries = count(url, "ledger")
    again = run_cli("migrate-store", "--to", url, "--data-dir", str(data_dir.path))
    assert again.code == 1
    assert "already holds a ledger" in again.stderr and "nothing was changed" in again.stderr
    assert count(url, "ledger") == entries and count(url, "tenants") == 2


def test_refused_while_serve_runs_or_without_a_postgresql_url(data_dir: DataDir, pg_cluster: PgCluster) -> None:
    sqlite_appliance(data_dir)
    url = pg_cluster.fresh_url("mig")
    with open(data_dir.path / "serve.lock", "a+") as held:   # as a running serve holds it
        fcntl.flock(held.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        busy = run_cli("migrate-store", "--to", url, "--data-dir", str(data_dir.path))
    assert busy.code == 2 and "serve` is running" in busy.stderr
    wrong = run_cli("migrate-store", "--to", "sqlite:///tmp/x.db", "--data-dir", str(data_dir.path))
    assert wrong.code == 2 and "postgresql://" in wrong.stderr
    with psycopg.connect(url, autocommit=True) as conn:   # nothing was made in the target
        assert conn.execute("SELECT count(*) FROM information_schema.tables "
                            "WHERE table_schema = current_schema()").fetchone()[0] == 0


def test_an_unreachable_database_is_a_clear_error(data_dir: DataDir) -> None:
    sqlite_appliance(data_dir)
    gone = run_cli("migrate-store", "--to", "postgresql://nobody:secret@127.0.0.1:1/none", "--data-dir",
                   str(data_dir.path))
    assert gone.code == 1 and "nothing was changed" in gone.stderr
    assert "secret" not in gone.stderr and "Traceback" not in gone.stderr
    json.dumps(gone.stderr)   # printable


def test_the_data_dir_must_hold_an_sqlite_store(tmp_path: Path, pg_cluster: PgCluster) -> None:
    from alertengine.appliance import init_data_dir
    empty = init_data_dir(tmp_path / "fresh")
    missing = run_cli("migrate-store", "--to", pg_cluster.fresh_url("mig"), "--data-dir", str(empty.path))
    assert missing.code == 2 and "no SQLite store" in missing.stderr
