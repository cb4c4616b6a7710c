"""Shared fixtures: real data directories and databases under tmp_path, and a CLI runner."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import pytest

from alertengine.appliance import DataDir, init_data_dir
from alertengine.config import Config
from alertengine.ledger.entry import LedgerEvent
from alertengine.store import Database

from .pgcluster import PgCluster, server_bin

FIXTURES = Path(__file__).resolve().parent / "fixtures"
VECTORS = FIXTURES / "ledger"

# The appliance's code never reads the database on an event loop's thread (issue 16): in every
# in-process test, a read there raises instead of quietly stalling the loop.
Database.strict_loop = True


@pytest.fixture(scope="session")
def vectors() -> dict:
    return json.loads((VECTORS / "vectors.json").read_text())


@pytest.fixture
def data_dir(tmp_path: Path) -> DataDir:
    return init_data_dir(tmp_path / "data")


# The store the tests run on. The tests of the store, the ledger and the engine that take the
# ``db`` or ``config`` fixture run twice, on an SQLite file and on PostgreSQL (a private cluster
# for the session, a schema per test); the others on SQLite. ALERTENGINE_TEST_STORE=postgresql
# (or =sqlite) runs every such test on that store alone.
TEST_STORE = os.environ.get("ALERTENGINE_TEST_STORE", "")
BOTH_STORES = ("tests/store/", "tests/ledger/", "tests/incidents/")

# For a test of SQLite's own mechanics (its pages, its files), which has no PostgreSQL counterpart.
sqlite_only = pytest.mark.sqlite_only


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "store_url" not in metafunc.fixturenames:
        return
    where = str(metafunc.definition.path).replace(os.sep, "/")
    if TEST_STORE:
        metafunc.parametrize("store_url", [TEST_STORE], indirect=True)
    elif any(part in where for part in BOTH_STORES):
        metafunc.parametrize("store_url", ["sqlite", "postgresql"], indirect=True)


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[PgCluster]:
    if server_bin() is None:
        pytest.skip("PostgreSQL's server programs are not installed (Debian package: postgresql)")
    cluster = PgCluster().start()
    yield cluster
    cluster.stop()


# The store of the running test, which the commands it runs (``run_cli``) are pointed at too.
_TEST_STORE_URL = {"url": ""}


@pytest.fixture
def store_url(request: pytest.FixtureRequest) -> Iterator[str]:
    """"" (SQLite in the data directory), or a fresh PostgreSQL schema's URL."""
    backend = getattr(request, "param", "sqlite")
    if backend != "postgresql":
        yield ""
        return
    if request.node.get_closest_marker("sqlite_only"):
        pytest.skip("SQLite's own mechanics")
    url = request.getfixturevalue("pg_cluster").fresh_url()
    _TEST_STORE_URL["url"] = url
    try:
        yield url
    finally:
        _TEST_STORE_URL["url"] = ""


@pytest.fixture
def config(data_dir: DataDir, store_url: str) -> Config:
    return Config(data_dir=data_dir.path, checkpoint_interval=0.2, database_url=store_url)


@pytest.fixture
def db(data_dir: DataDir, config: Config) -> Iterator[Database]:
    database = data_dir.open_database(config)
    yield database
    database.close()


def event(n: int, tenant: str = "acme", **kw: object) -> LedgerEvent:
    fields = dict(kind="test.event", tenant=tenant, actor="system", reason=f"event {n}", data={"n": n})
    fields.update(kw)
    return LedgerEvent(**fields)  # type: ignore[arg-type]


@dataclass
class CliResult:
    code: int
    stdout: str
    stderr: str

    def json(self) -> dict:
        return json.loads(self.stdout)


def run_cli(*args: str, cwd: Path | None = None, env: dict | None = None, timeout: float = 120) -> CliResult:
    """Run ``alertengine`` as a real subprocess."""
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("ALERTENGINE_")}
    if _TEST_STORE_URL["url"]:
        full_env["ALERTENGINE_DATABASE_URL"] = _TEST_STORE_URL["url"]
    full_env.update(env or {})
    proc = subprocess.run([sys.executable, "-m", "alertengine", *args], capture_output=True, text=True,
                          cwd=cwd, env=full_env, timeout=timeout)
    return CliResult(proc.returncode, proc.stdout, proc.stderr)
