"""A real ``alertengine serve`` for end-to-end tests: started with ``tests.cli.test_cli.start_server``,
driven over real HTTP on 127.0.0.1 and with the real command line, stopped (and its output shown
on failure) whatever happens.

``running_appliance(tmp_path)`` is a context manager yielding an ``Appliance``: its URL, its data
directory, the appliance-admin key it printed at first start, an HTTP client, and helpers to call
the API, run ``alertengine`` commands on its data directory, read its local notification channel
and wait for conditions with a generous deadline (never fixed sleeps)."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import socket
import ssl
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import httpx

from tests.conftest import CliResult, run_cli
from tests.waiting import DEADLINE, wait_for

T = TypeVar("T")
ADMIN_KEY_RE = re.compile(r"appliance admin API key \(shown once, store it now\): (\S+)")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    def __init__(self, proc: subprocess.Popen, port: int, log: Path, scheme: str = "http") -> None:
        self.proc, self.port, self.log, self.scheme = proc, port, log, scheme

    @property
    def url(self) -> str:
        return f"{self.scheme}://127.0.0.1:{self.port}"

    def output(self) -> str:
        return self.log.read_text()


def trusting(verify: Path | bool) -> ssl.SSLContext | bool:
    """What httpx's ``verify`` takes: a context trusting exactly ``verify`` when it is a certificate."""
    return ssl.create_default_context(cafile=str(verify)) if isinstance(verify, Path) else verify


def start_server(cwd: Path, *args: str, env: dict | None = None, verify: Path | bool = False) -> Server:
    """``alertengine serve`` on a free port, once ``/healthz`` answers. With ``verify`` (the
    certificate to trust, or True for the system's) it is reached over HTTPS."""
    port = free_port()
    log = cwd / f"serve-{port}.log"
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("ALERTENGINE_")}
    full_env.update(env or {})
    with open(log, "wb") as f:
        proc = subprocess.Popen([sys.executable, "-m", "alertengine", "serve", "--port", str(port), *args],
                                cwd=cwd, env=full_env, stdout=f, stderr=subprocess.STDOUT)
    server = Server(proc, port, log, "https" if verify else "http")

    def up() -> bool:
        if proc.poll() is not None:
            raise AssertionError(f"serve exited early:\n{log.read_text()}")
        if isinstance(verify, Path) and not verify.exists():
            return False  # the certificate is made at start-up: not there yet
        try:
            return httpx.get(f"{server.url}/healthz", timeout=5, verify=trusting(verify)).status_code == 200
        except httpx.HTTPError:
            return False

    try:
        wait_for(up, what="serve answering /healthz", explain=lambda: log.read_text())
    except AssertionError:
        proc.kill()
        proc.wait(timeout=30)
        raise
    return server


def stop(server: Server, sig: int = signal.SIGTERM) -> int:
    server.proc.send_signal(sig)
    return server.proc.wait(timeout=30)


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def client_from(address: str) -> httpx.Client:
    """An HTTP client whose connections come from ``address``, another loopback address such as
    127.0.0.2 (Linux routes all of 127.0.0.0/8 to the loopback interface). The appliance slows
    repeated authentication failures per client address: a test that sends many refused requests
    on purpose can spread them over addresses instead of waiting out the growing delays."""
    return httpx.Client(transport=httpx.HTTPTransport(local_address=address), timeout=60.0, trust_env=False)


@dataclass
class Appliance:
    server: Server
    data: Path
    admin_key: str
    client: httpx.Client
    exit_code: int | None = None
    _stopped: bool = field(default=False, repr=False)

    @property
    def url(self) -> str:
        return self.server.url

    def output(self) -> str:
        return self.server.output()

    # --- HTTP --------------------------------------------------------------------------------
    def request(self, method: str, path: str, key: str | None = None, *, via: httpx.Client | None = None,
                **kw: Any) -> httpx.Response:
        """One call; ``via`` sends it with another client (e.g. one from ``client_from``)."""
        headers = dict(kw.pop("headers", None) or {})
        if key is not None:
            headers.update(bearer(key))
        return (via or self.client).request(method, self.url + path, headers=headers, **kw)

    def get(self, path: str, key: str | None = None, **kw: Any) -> httpx.Response:
        return self.request("GET", path, key, **kw)

    def post(self, path: str, key: str | None = None, **kw: Any) -> httpx.Response:
        return self.request("POST", path, key, **kw)

    def delete(self, path: str, key: str | None = None, **kw: Any) -> httpx.Response:
        return self.request("DELETE", path, key, **kw)

    def ok(self, method: str, path: str, key: str | None = None, status: int = 200, **kw: Any) -> Any:
        """A call that must succeed with ``status``; its JSON body."""
        reply = self.request(method, path, key, **kw)
        assert reply.status_code == status, f"{method} {path}: {reply.status_code} {reply.text}"
        return reply.json()

    # --- the tenancy API, as a user drives it ---------------------------------------------------
    def add_tenant(self, name: str) -> str:
        return self.ok("POST", "/api/tenants", self.admin_key, 201, json={"name": name})["id"]

    def add_key(self, tenant: str, role: str, name: str, by: str | None = None) -> tuple[str, str]:
        """(key id, secret) of a new key of ``role`` in ``tenant``, made by ``by`` (default: the admin key)."""
        made = self.ok("POST", f"/api/tenants/{tenant}/keys", by or self.admin_key, 201,
                       json={"role": role, "name": name})
        return made["key"]["id"], made["secret"]

    def add_integration(self, tenant: str, name: str, by: str | None = None) -> str:
        made = self.ok("POST", f"/api/tenants/{tenant}/integrations", by or self.admin_key, 201, json={"name": name})
        return made["key"]

    def incident(self, tenant: str, incident: str, key: str | None = None) -> dict[str, Any]:
        return self.ok("GET", f"/api/tenants/{tenant}/incidents/{incident}", key or self.admin_key)

    def incidents(self, tenant: str, key: str | None = None) -> list[dict[str, Any]]:
        return self.ok("GET", f"/api/tenants/{tenant}/incidents", key or self.admin_key)["incidents"]

    def ledger(self, tenant: str, key: str | None = None, **params: Any) -> list[dict[str, Any]]:
        """Every entry of the tenant's ledger (or those matching ``params``), oldest first, page by page."""
        entries: list[dict[str, Any]] = []
        after = -1
        while True:
            page = self.ok("GET", f"/api/tenants/{tenant}/ledger", key or self.admin_key,
                           params={**params, "after": after, "limit": 1000})
            entries.extend(page["entries"])
            if page["next_after"] is None:
                return entries
            after = page["next_after"]

    def wait_for_stage(self, tenant: str, incident: str, stage: str, timeout: float = DEADLINE) -> dict[str, Any]:
        def probe() -> dict[str, Any] | None:
            reply = self.get(f"/api/tenants/{tenant}/incidents/{incident}", self.admin_key)
            return reply.json() if reply.status_code == 200 and reply.json()["stage"] == stage else None
        return wait_for(probe, timeout, what=f"{incident} to reach {stage}",
                        explain=lambda: self.get(f"/api/tenants/{tenant}/incidents", self.admin_key).text)

    # --- the command line and the local channels ----------------------------------------------
    def cli(self, *args: str) -> CliResult:
        """``alertengine <args> --data-dir <this appliance's data directory>`` as a real subprocess."""
        return run_cli(*args, "--data-dir", str(self.data))

    def notifications(self) -> list[dict[str, Any]]:
        """What the local JSON-lines channel (``<data dir>/notifications.jsonl``) holds, in order."""
        path = self.data / "notifications.jsonl"
        if not path.exists():
            return []
        return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]

    # --- stopping ---------------------------------------------------------------------------
    def stop(self) -> int:
        """Stop serve with SIGTERM (a clean shutdown: final checkpoint, exit 0); kill it if it hangs."""
        if not self._stopped:
            self._stopped = True
            try:
                self.exit_code = stop(self.server, signal.SIGTERM)
            except subprocess.TimeoutExpired:
                self.server.proc.kill()
                self.exit_code = self.server.proc.wait(timeout=30)
                raise AssertionError(f"serve did not stop within 30 s of SIGTERM:\n{self.output()}") from None
        assert self.exit_code is not None
        return self.exit_code


@contextlib.contextmanager
def running_appliance(workdir: Path, env: dict[str, str] | None = None) -> Iterator[Appliance]:
    """A real ``alertengine serve`` on a free port of 127.0.0.1 with its own data directory under
    ``workdir``; always stopped afterwards, its output printed (pytest shows it when a test fails)."""
    data = workdir / "alertengine-data"
    server = start_server(workdir, "--data-dir", str(data), env=env)
    client = httpx.Client(timeout=60.0, trust_env=False)
    appliance = None
    try:
        found = ADMIN_KEY_RE.findall(server.output())
        assert len(found) == 1, f"the admin key is printed exactly once at first start:\n{server.output()}"
        appliance = Appliance(server, data, found[0], client)
        yield appliance
    finally:
        client.close()
        try:
            if appliance is not None:
                appliance.stop()
            elif server.proc.poll() is None:
                stop(server)
        finally:
            if server.proc.poll() is None:
                server.proc.kill()
                server.proc.wait(timeout=30)
            print(f"--- alertengine serve output ({server.url}) ---\n{server.output()}")
