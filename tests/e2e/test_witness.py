"""Witnessed checkpoints end to end: an auditor's `alertengine witness serve`, an appliance
configured with it, checkpoints cosigned as the ledger grows, an exported bundle that carries the
cosignature and verifies with `--witness-key`, and a checkpoint sink on another path."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Iterator

import httpx
import pytest

from alertengine.appliance import init_data_dir
from tests.conftest import run_cli
from tests.ledger.tamper import rehash_manifest, unpack
from tests.serving import free_port, running_appliance
from tests.waiting import wait_for


@pytest.fixture
def log_key(tmp_path: Path) -> str:
    """The appliance's verifier key, from a data directory made before the witness starts."""
    init_data_dir(tmp_path / "alertengine-data")   # what a first start does: the key exists from then on
    made = run_cli("ledger", "key", "--data-dir", str(tmp_path / "alertengine-data"))
    assert made.code == 0, made.stderr
    return made.stdout.strip()


@pytest.fixture
def witness(tmp_path: Path, log_key: str) -> Iterator[tuple[str, str]]:
    state = tmp_path / "witness-state"
    key = run_cli("witness", "key", "--state", str(state), "--name", "auditor.example/w1")
    assert key.code == 0, key.stderr
    port = free_port()
    log = open(tmp_path / "witness.log", "wb")
    proc = subprocess.Popen([sys.executable, "-m", "alertengine", "witness", "serve", "--state", str(state),
                             "--log", log_key, "--port", str(port)], stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: _up(url), what="the witness answering")
        yield url, key.stdout.strip()
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        log.close()
        print((tmp_path / "witness.log").read_text())


def _up(url: str) -> bool:
    try:
        return httpx.get(f"{url}/healthz", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


@pytest.mark.slow
def test_checkpoints_are_witnessed_and_bundles_carry_the_cosignature(tmp_path: Path, witness: tuple[str, str],
                                                                      log_key: str) -> None:
    url, witness_key = witness
    sink = tmp_path / "elsewhere" / "checkpoints.log"
    sink.parent.mkdir()
    env = {"ALERTENGINE_WITNESSES": f"{url} {witness_key}", "ALERTENGINE_WITNESS_INTERVAL": "1",
           "ALERTENGINE_CHECKPOINT_SINK": f"file:{sink}"}
    with running_appliance(tmp_path, env=env) as app:
        tenant = app.add_tenant("acme")
        app.add_key(tenant, "viewer", "v")
        witnessed = wait_for(lambda: _system_kinds(app, "ledger.witnessed"), what="a ledger.witnessed entry")
        assert witnessed[0]["data"]["witness"] == "auditor.example/w1"
        assert app.stop() == 0
    bundle = tmp_path / "audit.tar.gz"
    exported = run_cli("export", "--data-dir", str(app.data), "-o", str(bundle), env=env)
    assert exported.code == 0, exported.stderr
    ok = run_cli("bundle", "verify", str(bundle), "--vkey", log_key, "--witness-key", witness_key)
    assert ok.code == 0, ok.stdout
    result = json.loads(ok.stdout)
    assert result["status"] == "ok" and [w["witness"] for w in result["witnessed"]] == ["auditor.example/w1"]
    # the same with the bundle's own verify.py
    d = unpack(bundle, tmp_path / "unpacked")
    script = subprocess.run([sys.executable, str(d / "verify.py"), str(bundle), "--vkey", log_key,
                             "--witness-key", witness_key], capture_output=True, text=True)
    assert script.returncode == 0, script.stdout + script.stderr
    # without the cosignature the witness requirement fails
    note = (d / "checkpoint.txt").read_text()
    (d / "checkpoint.txt").write_text(note[: note.index("\n\u2014 auditor.example/w1") + 1])
    rehash_manifest(d)
    missing = run_cli("bundle", "verify", str(d), "--vkey", log_key, "--witness-key", witness_key)
    assert missing.code == 1 and json.loads(missing.stdout)["kind"] == "WITNESS_MISSING"
    # the sink holds every checkpoint the appliance signed, in order, outside the data directory
    sizes = [int(n) for n in re.findall(r"(?m)^alertengine/[0-9a-f]+\n([0-9]+)\n", sink.read_text())]
    assert sizes == sorted(sizes) and len(sizes) >= 2


def _system_kinds(app, kind: str) -> list[dict]:  # type: ignore[no-untyped-def]
    shown = app.cli("ledger", "show", "--kind", kind, "--json")
    return [json.loads(line) for line in shown.stdout.splitlines() if line.strip()]


@pytest.mark.slow
def test_the_witness_refuses_a_rewritten_history(tmp_path: Path, witness: tuple[str, str], log_key: str) -> None:
    url, witness_key = witness
    env = {"ALERTENGINE_WITNESSES": f"{url} {witness_key}", "ALERTENGINE_WITNESS_INTERVAL": "1"}
    with running_appliance(tmp_path, env=env) as app:
        app.add_tenant("acme")
        wait_for(lambda: _system_kinds(app, "ledger.witnessed"), what="a first cosignature")
        assert app.stop() == 0
    # the owner rewrites the newest entries and re-signs with the appliance's own key
    from alertengine.appliance import open_data_dir
    from tests.ledger.tamper import open_unguarded, rewrite_from
    data = open_data_dir(app.data)
    with open_unguarded(data.db_path) as conn:
        size = conn.execute("SELECT count(*) FROM ledger").fetchone()[0]
        rewrite_from(conn, size - 2)
        from alertengine.ledger.verifier import RootBuilder, b64
        tree = RootBuilder()
        for (leaf,) in conn.execute("SELECT leaf_hash FROM ledger ORDER BY seq"):
            tree.add(bytes(leaf))
    forged = data.signer.sign_note(f"{data.signer.name}\n{size}\n{b64(tree.root())}\n")
    held = json.loads((tmp_path / "witness-state" / "state.json").read_text())[data.signer.name]["size"]
    reply = httpx.post(f"{url}/add-checkpoint", content=f"old {held}\n\n{forged}".encode())
    assert reply.status_code in (409, 422)   # not an extension of what it cosigned: never cosigned
