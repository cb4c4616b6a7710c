"""The command line as a user runs it: real subprocesses, real files, a real server."""

from __future__ import annotations

import json
import re
import signal
from pathlib import Path

import click
import httpx
import pytest

from alertengine import __version__
from alertengine.cli import cli
from tests.conftest import run_cli
from tests.serving import free_port, start_server, stop

ROOT = Path(__file__).resolve().parents[2]


def test_version() -> None:
    result = run_cli("--version")
    assert result.code == 0 and __version__ in result.stdout


def _walk(group: click.Group, prefix: str = "") -> list[tuple[str, click.Command]]:
    out = []
    for name, command in group.commands.items():
        out.append((prefix + name, command))
        if isinstance(command, click.Group):
            out.extend(_walk(command, prefix + name + " "))
    return out


def test_every_command_and_option_is_documented() -> None:
    for name, command in _walk(cli):
        assert command.help and command.help.strip(), f"`alertengine {name}` has no help text"
        for param in command.params:
            if isinstance(param, click.Option):
                assert param.help, f"`alertengine {name} {param.opts[0]}` has no help text"


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_serve_with_no_configuration_then_clean_shutdown(tmp_path: Path, sig: int) -> None:
    server = start_server(tmp_path)
    try:
        health = httpx.get(server.url + "/healthz").json()
        data = tmp_path / "alertengine-data"
        assert health["status"] == "ok" and health["ledger"]["size"] >= 2
        assert (data / "ledger.key").stat().st_mode & 0o777 == 0o600
        assert (data / "install.json").stat().st_mode & 0o777 == 0o600
        assert (data / "token.key").stat().st_mode & 0o777 == 0o600
        missing = httpx.get(server.url + "/no-such-page")
        assert missing.status_code == 404 and missing.json()["error"]["code"] == "not_found"
        admin_key = re.search(r"appliance admin API key \(shown once, store it now\): (\S+)", server.output())
        assert admin_key, server.output()
        auth = {"Authorization": f"Bearer {admin_key.group(1)}"}
        created = httpx.post(server.url + "/api/tenants", json={"name": "acme"}, headers=auth)
        assert created.status_code == 201 and created.json()["shadow"] is True
        assert httpx.get(server.url + "/api/tenants").status_code == 401
    finally:
        code = stop(server, sig)
    out = server.output()
    assert code == 0, out
    vkey = run_cli("ledger", "key", "--data-dir", str(data)).stdout.strip()
    assert f"ledger verifier key: {vkey}" in out and server.url in out
    verified = run_cli("ledger", "verify", "--data-dir", str(data))
    result = verified.json()
    assert verified.code == 0, result
    # the final checkpoint signed at shutdown covers the `appliance.stopped` entry
    assert result["checkpoint_size"] == result["entries_checked"]
    shown = run_cli("ledger", "show", "--data-dir", str(data), "--json")
    kinds = [json.loads(line)["kind"] for line in shown.stdout.splitlines()]
    assert kinds == ["appliance.initialized", "appliance.started", "apikey.created", "tenant.created",
                     "appliance.stopped"]


@pytest.mark.slow
def test_restart_keeps_identity_and_second_server_is_refused(tmp_path: Path) -> None:
    data = tmp_path / "d"
    first = start_server(tmp_path, "--data-dir", str(data))
    try:
        install = httpx.get(first.url + "/healthz").json()["install_id"]
        second = run_cli("serve", "--data-dir", str(data), "--port", str(free_port()), timeout=30)
        assert second.code != 0 and "already using" in second.stderr
    finally:
        assert stop(first) == 0
    again = start_server(tmp_path, env={"ALERTENGINE_DATA_DIR": str(data)})
    try:
        health = httpx.get(again.url + "/healthz").json()
        assert health["install_id"] == install
    finally:
        assert stop(again) == 0
    assert "(created)" not in again.output()
    assert "admin API key" in first.output() and "admin API key" not in again.output()


def test_config_file_and_environment_precedence(tmp_path: Path) -> None:
    cfg = tmp_path / "alertengine.toml"
    cfg.write_text('port = 9000\nlog_level = "warning"\ncheckpoint_interval = 2.5\n')
    ok = run_cli("check-config", str(cfg))
    assert ok.code == 0 and "valid" in ok.stdout
    from alertengine.config import load_config
    conf = load_config(cfg, environ={"ALERTENGINE_PORT": "9100"})
    assert (conf.port, conf.log_level, conf.checkpoint_interval) == (9100, "warning", 2.5)


@pytest.mark.parametrize("text,key", [
    ('prot = 9000\n', "prot"),
    ('port = "eighty"\n', "port"),
    ('port = 70000\n', "port"),
    ('log_level = "loud"\n', "log_level"),
    ('[server]\nport = 1\n', "server"),
])
def test_check_config_names_the_bad_key(tmp_path: Path, text: str, key: str) -> None:
    cfg = tmp_path / "bad.toml"
    cfg.write_text(text)
    result = run_cli("check-config", str(cfg))
    assert result.code == 1
    assert key in result.stderr


def test_check_config_rejects_bad_toml_and_bad_env(tmp_path: Path) -> None:
    cfg = tmp_path / "broken.toml"
    cfg.write_text("port = = 1\n")
    result = run_cli("check-config", str(cfg))
    assert result.code == 1 and "not valid TOML" in result.stderr
    result = run_cli("check-config", env={"ALERTENGINE_CHECKPOINT_INTERVAL": "often"}, cwd=tmp_path)
    assert result.code == 1 and "checkpoint_interval" in result.stderr


def test_commands_on_a_missing_data_dir_fail_clearly(tmp_path: Path) -> None:
    for args in (["ledger", "key"], ["ledger", "show"], ["export"], ["replay"]):
        result = run_cli(*args, "--data-dir", str(tmp_path / "nowhere"))
        assert result.code == 2, args
        assert "not an AlertEngine data directory" in result.stderr
    assert not (tmp_path / "nowhere").exists()


def test_ledger_show_filters_and_replay_folds(data_dir, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from tests.ledger.tamper import populate
    populate(data_dir)
    d = str(data_dir.path)
    shown = run_cli("ledger", "show", "--data-dir", d, "--tenant", "acme", "--json", "--limit", "100")
    rows = [json.loads(line) for line in shown.stdout.splitlines()]
    assert len(rows) == 10 and {r["tenant"] for r in rows} == {"acme"}
    table = run_cli("ledger", "show", "--data-dir", d, "--kind", "test.*", "--limit", "3")
    assert table.code == 0 and len(table.stdout.splitlines()) == 4 and "test.event" in table.stdout
    replayed = run_cli("replay", "--data-dir", d, "--json")
    report = json.loads(replayed.stdout)
    assert replayed.code == 0
    assert report["entries_folded"] == 30
    [incident] = report["incidents"]
    assert (incident["tenant"], incident["incident"], incident["entries"]) == ("acme", "INC-1", 10)


def test_export_scopes_and_errors(data_dir, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from tests.ledger.tamper import populate
    populate(data_dir)
    d = str(data_dir.path)
    unknown = run_cli("export", "--data-dir", d, "--tenant", "nobody", "-o", str(tmp_path / "x.tar.gz"))
    assert unknown.code == 1 and "nobody" in unknown.stderr and not (tmp_path / "x.tar.gz").exists()
    bad_time = run_cli("export", "--data-dir", d, "--since", "yesterday", "-o", str(tmp_path / "y.tar.gz"))
    assert bad_time.code == 2 and "RFC 3339" in bad_time.stderr
    future = run_cli("export", "--data-dir", d, "--since", "2999-01-01T00:00:00Z", "-o", str(tmp_path / "z.tar.gz"))
    assert future.code == 1 and "no ledger entries" in future.stderr
    ranged = run_cli("export", "--data-dir", d, "--since", "2000-01-01T00:00:00Z", "-o", str(tmp_path / "r.tar.gz"))
    assert ranged.code == 0, ranged.stderr
    verdict = run_cli("bundle", "verify", str(tmp_path / "r.tar.gz"), "--vkey", data_dir.signer.vkey)
    assert verdict.code == 0, verdict.stdout
    verified = run_cli("ledger", "verify", "--data-dir", d)
    assert verified.code == 0, verified.stdout


@pytest.mark.parametrize("text,ok,words", [
    ("[thresholds]\np95_ms = 1200.0\n", True, "version sha256:"),
    ("[thresholds]\np95 = 1200\n", False, "thresholds.p95"),
    ("[detection]\nbreaches_to_open = 0\n", False, "detection.breaches_to_open"),
    ("[priority.signal]\nlatency = \"P9\"\n", False, "priority.signal.latency"),
    ("[services.checkout]\naction = \"restart pool\"\nerror_rate = 2.0\n", False, "services.checkout.error_rate"),
    ("not toml = = 1", False, "not valid TOML"),
])
def test_check_config_validates_a_policy(tmp_path: Path, text: str, ok: bool, words: str) -> None:
    policy = tmp_path / "policy.toml"
    policy.write_text(text)
    result = run_cli("check-config", "--policy", str(policy))
    assert result.code == (0 if ok else 1)
    assert words in (result.stdout if ok else result.stderr)


def test_the_default_policy_is_valid_and_documented() -> None:
    from alertengine.incidents.policy import DEFAULT_POLICY, DEFAULT_POLICY_TOML
    assert DEFAULT_POLICY.version.startswith("sha256:") and len(DEFAULT_POLICY.version) == 19
    assert "breaches_to_open = 3" in DEFAULT_POLICY_TOML


def test_the_entry_point_runs_as_a_plain_script_as_the_binary_runs_it() -> None:
    """PyInstaller runs alertengine/__main__.py as a script, not as a module of the package."""
    import subprocess
    import sys
    root = Path(__file__).resolve().parents[2]
    proc = subprocess.run([sys.executable, str(root / "alertengine" / "__main__.py"), "--version"],
                          capture_output=True, text=True, timeout=60, cwd=root.parent)
    assert proc.returncode == 0, proc.stderr
    assert __version__ in proc.stdout
