"""``serve`` on a port it cannot have fails before it creates or mints anything."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from tests.conftest import run_cli


@pytest.mark.slow
def test_serve_on_a_port_in_use_fails_before_minting_an_admin_key(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        data = tmp_path / "data"
        result = run_cli("serve", "--data-dir", str(data), "--port", str(port), timeout=60)
    assert result.code == 1
    assert f"cannot listen on 127.0.0.1:{port}" in result.stderr
    assert "Address already in use" in result.stderr
    assert "API key" not in result.stdout + result.stderr  # nothing minted, nothing shown
    assert not data.exists()  # nothing created either


@pytest.mark.slow
def test_serve_on_an_unknown_host_name_is_a_clear_error(tmp_path: Path) -> None:
    result = run_cli("serve", "--data-dir", str(tmp_path / "data"), "--host", "no-such-host.invalid", timeout=60)
    assert result.code == 1
    assert "cannot listen on no-such-host.invalid:" in result.stderr
    assert "Traceback" not in result.stderr
