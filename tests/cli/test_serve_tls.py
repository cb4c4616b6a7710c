"""``serve`` over HTTPS (the operator's certificate, or a self-signed one made at first start), and
which client address it believes behind a reverse proxy."""

from __future__ import annotations

import hashlib
import json
import sqlite3
import ssl
import subprocess
from pathlib import Path

import httpx
import pytest

from tests.conftest import run_cli
from tests.serving import free_port, start_server, stop, trusting
from tests.waiting import wait_for


@pytest.mark.slow
def test_a_self_signed_certificate_is_made_once_and_served(tmp_path: Path) -> None:
    data = tmp_path / "data"
    cert = data / "tls" / "cert.pem"
    server = start_server(tmp_path, "--data-dir", str(data), env={"ALERTENGINE_TLS_SELF_SIGNED": "true"}, verify=cert)
    try:
        out = server.output()
        assert f"serving on https://127.0.0.1:{server.port}" in out
        assert f"TLS certificate: {cert}  (self-signed: pin it)" in out
        fingerprint = out.split("TLS certificate SHA-256: ")[1].split()[0]
        assert (data / "tls" / "key.pem").stat().st_mode & 0o777 == 0o600
        assert httpx.get(f"{server.url}/healthz", verify=trusting(cert)).json()["status"] == "ok"
        with pytest.raises(httpx.ConnectError):      # not trusted without pinning it
            httpx.get(f"{server.url}/healthz")
        with pytest.raises(httpx.HTTPError):          # plain HTTP is not served on the TLS port
            httpx.get(f"http://127.0.0.1:{server.port}/healthz")
        der = ssl.PEM_cert_to_DER_cert(cert.read_text())
        assert fingerprint == ":".join(f"{b:02X}" for b in hashlib.sha256(der).digest())
    finally:
        assert stop(server) == 0, server.output()
    again = start_server(tmp_path, "--data-dir", str(data), env={"ALERTENGINE_TLS_SELF_SIGNED": "true"}, verify=cert)
    try:
        assert f"TLS certificate SHA-256: {fingerprint}" in again.output()  # the same pair, reused
    finally:
        assert stop(again) == 0


@pytest.mark.slow
def test_the_operators_certificate_is_served(tmp_path: Path) -> None:
    cert, key = tmp_path / "c.pem", tmp_path / "k.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                    "-keyout", str(key), "-out", str(cert), "-days", "2", "-subj", "/CN=appliance.test",
                    "-addext", "subjectAltName=IP:127.0.0.1"], check=True, capture_output=True)
    server = start_server(tmp_path, "--data-dir", str(tmp_path / "data"), verify=cert,
                          env={"ALERTENGINE_TLS_CERT_FILE": str(cert), "ALERTENGINE_TLS_KEY_FILE": str(key)})
    try:
        assert f"TLS certificate: {cert}\n" in server.output()
        assert httpx.get(f"{server.url}/healthz", verify=trusting(cert)).status_code == 200
    finally:
        assert stop(server) == 0


@pytest.mark.parametrize("env, message", [
    ({"ALERTENGINE_TLS_CERT_FILE": "/nonexistent/c.pem"}, "tls_cert_file and tls_key_file go together"),
    ({"ALERTENGINE_TLS_CERT_FILE": "/nonexistent/c.pem", "ALERTENGINE_TLS_KEY_FILE": "/nonexistent/k.pem"},
     "cannot use /nonexistent/c.pem"),
    ({"ALERTENGINE_TRUSTED_PROXIES": "10.0.0.0/8, proxy.example"}, "'proxy.example' is not an IP address or CIDR"),
])
def test_bad_tls_or_proxy_settings_are_a_clear_error(tmp_path: Path, env: dict[str, str], message: str) -> None:
    result = run_cli("serve", "--data-dir", str(tmp_path / "data"), "--port", str(free_port()), env=env, timeout=60)
    assert result.code in (1, 2) and message in result.stderr
    assert "API key" not in result.stdout and "Traceback" not in result.stderr
    # nothing minted: a later start with good settings still shows the appliance admin key once
    db = tmp_path / "data" / "alertengine.db"
    if db.exists():
        with sqlite3.connect(db) as conn:
            assert conn.execute("SELECT count(*) FROM api_keys").fetchone()[0] == 0


def _throttled_address(tmp_path: Path, env: dict[str, str]) -> str:
    """The client address the appliance ledgers for a burst of failed authentications that all claim,
    in X-Forwarded-For, to come from 203.0.113.7."""
    tmp_path.mkdir()
    data = tmp_path / "data"
    server = start_server(tmp_path, "--data-dir", str(data), env=env)
    try:
        with httpx.Client(base_url=server.url, timeout=60) as client:
            for _ in range(7):
                reply = client.get("/api/tenants", headers={"Authorization": "Bearer ae_000000000000_" + "x" * 43,
                                                            "X-Forwarded-For": "203.0.113.7"})
                assert reply.status_code == 401
    finally:
        assert stop(server) == 0, server.output()
    shown = run_cli("ledger", "show", "--data-dir", str(data), "--kind", "auth.failures", "--json")
    [entry] = wait_for(lambda: [json.loads(line) for line in shown.stdout.splitlines() if line.strip()])
    return entry["data"]["address"]


@pytest.mark.slow
def test_forwarded_headers_are_ignored_unless_the_proxy_is_trusted(tmp_path: Path) -> None:
    assert _throttled_address(tmp_path / "untrusted", {}) == "127.0.0.1"
    assert _throttled_address(tmp_path / "trusted", {"ALERTENGINE_TRUSTED_PROXIES": "127.0.0.1/32"}) == "203.0.113.7"
