"""Real peers (Debian's Prometheus and Alertmanager) run by the end-to-end tests: started on a free
port in their own folder, waited for until ready, stopped with SIGTERM, their output kept."""

from __future__ import annotations

import os
import signal
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

from tests.serving import wait_for


@dataclass
class Peer:
    name: str
    proc: subprocess.Popen
    url: str
    log: Path

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=30)
        return self.proc.returncode


@contextmanager
def running_peer(name: str, argv: list[str], workdir: Path, port: int) -> Iterator[Peer]:
    """Run ``argv`` (listening on 127.0.0.1:``port``) until the block ends; ready when ``/-/ready`` is 200."""
    log = workdir / f"{name}.log"
    env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}
    with open(log, "wb") as out:
        proc = subprocess.Popen(argv, cwd=workdir, env=env, stdout=out, stderr=subprocess.STDOUT)
    peer = Peer(name, proc, f"http://127.0.0.1:{port}", log)
    try:
        def ready() -> bool:
            if proc.poll() is not None:
                raise AssertionError(f"{name} exited with {proc.returncode}:\n{peer.output()}")
            try:
                return httpx.get(f"{peer.url}/-/ready", timeout=2, trust_env=False).status_code == 200
            except httpx.HTTPError:
                return False
        wait_for(ready, what=f"{name} to be ready", explain=peer.output)
        yield peer
    finally:
        peer.stop()
        print(f"--- {name} output ({peer.url}) ---\n{peer.output()}")
