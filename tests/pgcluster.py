"""A private PostgreSQL cluster for tests: created in a temporary directory, on a free port of
127.0.0.1, removed when the test session ends.

Debian's server binaries (``/usr/lib/postgresql/<version>/bin``) are used; ``.ci/run`` installs the
``postgresql`` package when they are missing. PostgreSQL refuses to run as root: as root, the
cluster is made and run by the ``postgres`` system user (which the package creates).

Each test gets a schema of its own in one database (``PgCluster.fresh_url``): creating a schema
takes milliseconds, a database a third of a second.
"""

from __future__ import annotations

import glob
import itertools
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path


def server_bin() -> Path | None:
    """The directory of ``initdb`` and ``postgres``, newest version first, or None."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(p.split("/")[4]), reverse=True)
    if found:
        return Path(found[0]).parent
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PgCluster:
    """``durable``: fsync on, as in production (benchmarks); tests run without it, for speed."""

    def __init__(self, durable: bool = False) -> None:
        self.durable = durable
        self.bin = server_bin()
        if self.bin is None:
            raise RuntimeError("PostgreSQL's server programs are not installed (Debian package: postgresql)")
        self.root = Path(tempfile.mkdtemp(prefix="ae-pg-"))
        self.data = self.root / "data"
        self.port = free_port()
        self.user: str | None = None
        self.proc: subprocess.Popen | None = None
        self._names = itertools.count(1)
        self._pid = os.getpid()

    def _run_as(self) -> dict:
        if os.geteuid() != 0:
            return {}
        pw = pwd.getpwnam("postgres")
        os.chown(self.root, pw.pw_uid, pw.pw_gid)
        return {"user": pw.pw_uid, "group": pw.pw_gid, "extra_groups": []}

    def start(self) -> "PgCluster":
        as_user = self._run_as()
        subprocess.run([str(self.bin / "initdb"), "-D", str(self.data), "-U", "postgres", "-A", "trust",
                        "--locale=C", "-E", "UTF8", "--no-sync"], check=True, capture_output=True, **as_user)
        with open(self.root / "server.log", "ab") as server_log:
            self.proc = subprocess.Popen(
                [str(self.bin / "postgres"), "-D", str(self.data), "-p", str(self.port), "-k", str(self.root),
                 "-c", "listen_addresses=127.0.0.1", "-c", "max_connections=400", "-c", "shared_buffers=128MB",
                 *(() if self.durable else ("-c", "fsync=off", "-c", "full_page_writes=off"))],
                stdout=subprocess.DEVNULL, stderr=server_log, **as_user)
        deadline = time.monotonic() + 60
        while True:
            ready = subprocess.run([str(self.bin / "pg_isready"), "-h", "127.0.0.1", "-p", str(self.port)],
                                   capture_output=True)
            if ready.returncode == 0:
                break
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("PostgreSQL did not start: " + (self.root / "server.log").read_text()[-2000:])
            time.sleep(0.1)
        self.admin("CREATE DATABASE alertengine_test")
        return self

    @property
    def base_url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/alertengine_test"

    def admin(self, sql: str, dbname: str = "postgres") -> None:
        import psycopg
        with psycopg.connect(f"postgresql://postgres@127.0.0.1:{self.port}/{dbname}", autocommit=True) as conn:
            conn.execute(sql)

    def fresh_url(self, label: str = "t") -> str:
        """A URL whose connections work in a new, empty schema of their own."""
        name = f"{label}_{self._pid}_{next(self._names)}".lower()
        self.admin(f'CREATE SCHEMA "{name}"', "alertengine_test")
        return f"{self.base_url}?options=-csearch_path%3D{name}"

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        shutil.rmtree(self.root, ignore_errors=True)
