"""SIGKILL mid-stream: every acknowledged entry survives and the ledger still verifies."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from alertengine.appliance import DataDir
from tests.conftest import run_cli

ROOT = Path(__file__).resolve().parents[2]


def _wait_for_acks(acked: Path, at_least: int, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if acked.exists() and acked.read_text().count("\n") > at_least:
            return
        time.sleep(0.05)
    raise AssertionError("the appender never acknowledged enough entries")


@pytest.mark.slow
def test_sigkill_loses_no_acknowledged_entry(data_dir: DataDir, tmp_path: Path) -> None:
    acked_total: set[int] = set()
    for round_ in range(4):
        acked = tmp_path / f"acked-{round_}.txt"
        with open(tmp_path / f"child-{round_}.log", "wb") as log:
            child = subprocess.Popen([sys.executable, "-m", "tests.store.crash_appender", str(data_dir.path), str(acked)],
                                     cwd=ROOT, stdout=log, stderr=log)
        try:
            _wait_for_acks(acked, 300 + 200 * round_)
            time.sleep(0.1 * round_)
        finally:
            child.send_signal(signal.SIGKILL)
            child.wait(timeout=30)
        assert child.returncode == -signal.SIGKILL
        lines = acked.read_text().splitlines()
        acknowledged = {int(x) for x in lines if x.isdigit()}
        assert acknowledged, "nothing was acknowledged"
        acked_total |= acknowledged

        result = run_cli("ledger", "verify", "--data-dir", str(data_dir.path))
        out = json.loads(result.stdout)
        assert result.code == 0, out
        assert out["entries_checked"] > max(acked_total)
        import sqlite3
        conn = sqlite3.connect(f"file:{data_dir.db_path}?mode=ro", uri=True)
        try:
            present = {r[0] for r in conn.execute("SELECT seq FROM ledger")}
        finally:
            conn.close()
        missing = acked_total - present
        assert not missing, f"acknowledged entries lost after SIGKILL: {sorted(missing)[:10]}"
