"""Tenancy administration from the shell: real subprocesses on a real data directory."""

from __future__ import annotations

import json
from pathlib import Path

from alertengine.appliance import DataDir
from tests.conftest import run_cli


def cli(data: DataDir, *args: str) -> tuple[int, str, str]:
    result = run_cli(*args, "--data-dir", str(data.path))
    return result.code, result.stdout, result.stderr


def test_tenant_key_service_round_trip(data_dir: DataDir) -> None:
    code, out, err = cli(data_dir, "tenant", "add", "acme")
    assert code == 0, err
    tenant = json.loads(out)
    assert tenant["shadow"] is True
    code, out, _ = cli(data_dir, "tenant", "list")
    assert [t["name"] for t in json.loads(out)] == ["acme"]
    code, out, err = cli(data_dir, "key", "create", "--tenant", tenant["id"], "--role", "operator", "--name", "oncall")
    assert code == 0 and "not shown again" in err
    made = json.loads(out)
    assert made["secret"].startswith("ae_") and made["key"]["role"] == "operator"
    code, out, _ = cli(data_dir, "key", "list", "--tenant", tenant["id"])
    assert made["secret"] not in out and made["key"]["id"] in out
    code, out, err = cli(data_dir, "service", "add", "--tenant", tenant["id"], "--name", "checkout",
                         "--health-url", "http://127.0.0.1:8000/health/alerts", "--label", "team=payments",
                         "--webhook-url", "https://ops.example.com/recover")
    assert code == 0, err
    service = json.loads(out)
    assert service["webhook_secret"].startswith("whsec_") and service["labels"] == {"team": "payments"}
    code, out, _ = cli(data_dir, "service", "show", "--tenant", tenant["id"], service["id"])
    assert "webhook_secret\"" not in out and json.loads(out)["webhook_secret_fingerprint"].startswith("sha256:")
    code, out, _ = cli(data_dir, "service", "remove", "--tenant", tenant["id"], service["id"])
    assert code == 0
    code, out, _ = cli(data_dir, "key", "revoke", made["key"]["id"])
    assert json.loads(out)["revoked"]
    code, out, _ = cli(data_dir, "ledger", "show", "--json", "--limit", "100")
    kinds = [json.loads(line)["kind"] for line in out.splitlines()]
    assert kinds == ["tenant.created", "apikey.created", "service.created", "service.removed", "apikey.revoked"]
    assert all(json.loads(line)["actor"].startswith("cli:") for line in out.splitlines())
    assert cli(data_dir, "ledger", "verify")[0] == 0


def test_cli_errors_are_clear_and_change_nothing(data_dir: DataDir) -> None:
    code, _, err = cli(data_dir, "tenant", "show", "t_0000000000000000")
    assert code == 1 and "tenant not found" in err
    code, out, _ = cli(data_dir, "tenant", "add", "acme")
    tenant = json.loads(out)["id"]
    code, _, err = cli(data_dir, "tenant", "add", "acme")
    assert code == 2 and "already exists" in err
    code, _, err = cli(data_dir, "service", "add", "--tenant", tenant, "--name", "x",
                       "--health-url", "http://169.254.169.254/latest/meta-data/")
    assert code == 2 and "health_url" in err and "metadata" in err
    code, _, err = cli(data_dir, "key", "create", "--tenant", tenant, "--name", "no-role")
    assert code == 2 and "--role" in err
    code, _, err = cli(data_dir, "key", "create", "--admin", "--tenant", tenant, "--role", "viewer", "--name", "both")
    assert code == 2
    code, out, _ = cli(data_dir, "ledger", "show", "--json")
    assert [json.loads(line)["kind"] for line in out.splitlines()] == ["tenant.created"]


def test_ledger_fingerprint_prints_the_keyed_fingerprint_of_a_person(tmp_path: Path) -> None:
    import hashlib
    import hmac

    from alertengine.appliance import init_data_dir
    data = init_data_dir(tmp_path / "data")
    shown = run_cli("ledger", "fingerprint", "+15550001111", "--data-dir", str(data.path))
    assert shown.code == 0, shown.stderr
    key = (data.path / "fingerprint.key").read_bytes()
    assert (data.path / "fingerprint.key").stat().st_mode & 0o777 == 0o600
    assert shown.stdout.strip() == "hmac-sha256:" + hmac.new(key, b"+15550001111", hashlib.sha256).hexdigest()[:16]
