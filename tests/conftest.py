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


@pytest.fixture
def config(data_dir: DataDir) -> Config:
    return Config(data_dir=data_dir.path, checkpoint_interval=0.2)


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
    full_env.update(env or {})
    proc = subprocess.run([sys.executable, "-m", "alertengine", *args], capture_output=True, text=True,
                          cwd=cwd, env=full_env, timeout=timeout)
    return CliResult(proc.returncode, proc.stdout, proc.stderr)
