"""Checkpoints published beyond the database: the checkpoint sink and the witnesses.

The sink appends every signed checkpoint to somewhere the database's owner does not control (a
file on another mount, syslog, an HTTP endpoint). Witnesses (C2SP tlog-witness) cosign a checkpoint
only with a consistency proof from the last one they cosigned; their cosignatures are stored,
ledgered, and carried in exported bundles. See ledger-format.md, 4.9.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sqlite3
import syslog
from dataclasses import dataclass
from typing import Any

import httpx

from ..errors import ConfigError
from ..ledger.entry import SYSTEM_TENANT, LedgerEvent
from ..ledger.merkle import MerkleTree
from ..ledger.verifier import EM_DASH, NoteError, WitnessKey, b64, verify_cosignature
from .database import Database, StoredCheckpoint, WriteTx

log = logging.getLogger("alertengine.publish")
WITNESS_KINDS = ("ledger.witnessed", "ledger.witness_failed")


# --- configuration ------------------------------------------------------------------------------

@dataclass(frozen=True)
class WitnessTarget:
    url: str            # the witness's submission prefix; the appliance POSTs to <url>/add-checkpoint
    key: WitnessKey


def parse_witnesses(text: str) -> list[WitnessTarget]:
    """``"<url> <witness key>, <url> <witness key>"`` (the ``witnesses`` setting)."""
    out = []
    for item in (part.strip() for part in text.split(",")):
        if not item:
            continue
        fields = item.split()
        if len(fields) != 2 or not fields[0].startswith(("http://", "https://")):
            raise ConfigError("witnesses", f"each witness is '<http(s) URL> <witness key>', got {item!r}")
        try:
            out.append(WitnessTarget(fields[0].rstrip("/"), WitnessKey.parse(fields[1])))
        except ValueError as exc:
            raise ConfigError("witnesses", str(exc)) from None
    return out


def check_sink(text: str) -> None:
    if text and not (text == "syslog" or text.startswith(("file:/", "http://", "https://"))):
        raise ConfigError("checkpoint_sink", "must be file:/absolute/path, syslog, or an http(s) URL")


# --- the sink -----------------------------------------------------------------------------------

def sink_local(target: str, note: str) -> None:
    """Append ``note`` to a file sink (fsync'd) or syslog; HTTP sinks are posted by ``Publisher``."""
    if target.startswith("file:"):
        fd = os.open(target[len("file:"):], os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        try:
            os.write(fd, (note + "\n").encode())
            os.fsync(fd)
        finally:
            os.close(fd)
    elif target == "syslog":
        syslog.openlog("alertengine", 0, syslog.LOG_AUTH)
        for line in note.rstrip("\n").split("\n"):
            syslog.syslog(syslog.LOG_NOTICE, f"checkpoint: {line}")


# --- witnesses ----------------------------------------------------------------------------------

class WitnessError(Exception):
    pass


def consistency_proof(conn: sqlite3.Connection, old: int, new: int) -> list[bytes]:
    if old == 0 or old == new:
        return []
    leaves = [bytes(r[0]) for r in conn.execute("SELECT leaf_hash FROM ledger WHERE seq < ? ORDER BY seq", (new,))]
    return MerkleTree(leaves).consistency_proof(old, new)


async def submit(client: httpx.AsyncClient, target: WitnessTarget, cp: StoredCheckpoint, held_size: int,
                 proof_for: Any) -> tuple[str, int, int]:
    """Ask one witness to cosign ``cp``; return (cosignature line, time, the old size used).

    ``proof_for(old)`` gives the consistency proof from ``old`` (run in a thread). A 409 naming the
    witness's own size is retried once from that size."""
    old = held_size
    for _attempt in range(2):
        proof = await asyncio.to_thread(proof_for, old)
        body = f"old {old}\n" + "".join(b64(h) + "\n" for h in proof) + "\n" + cp.note
        reply = await client.post(f"{target.url}/add-checkpoint", content=body.encode(),
                                  headers={"content-type": "text/plain; charset=utf-8"}, timeout=15.0)
        text = reply.text[:2000]
        if reply.status_code == 409 and reply.headers.get("content-type", "").startswith("text/x.tlog.size"):
            size = text.strip()
            if not size.isdigit() or int(size) == old:
                raise WitnessError(f"409 with an unusable size {size!r}")
            old = int(size)
            continue
        if reply.status_code != 200:
            raise WitnessError(f"{reply.status_code}: {text.strip()[:300]}")
        for line in text.splitlines():
            if line.startswith(EM_DASH + " "):
                try:
                    return line + "\n", verify_cosignature(cp.note + line + "\n", target.key), old
                except NoteError:
                    continue
        raise WitnessError("the answer holds no valid cosignature by the configured witness key")
    raise WitnessError("the witness's size kept changing")


def record_cosignature(target: WitnessTarget, cp: StoredCheckpoint, line: str, when: int) -> Any:
    def write(tx: WriteTx) -> None:
        tx.execute("INSERT OR REPLACE INTO cosignatures (size, witness, line, cosigned_at) VALUES (?, ?, ?, ?)",
                   (cp.size, target.key.name, line, when))
        tx.execute("INSERT INTO witness_state (witness, size, root, cosigned_at) VALUES (?, ?, ?, ?) "
                   "ON CONFLICT (witness) DO UPDATE SET size = excluded.size, root = excluded.root, "
                   "cosigned_at = excluded.cosigned_at WHERE excluded.size >= witness_state.size",
                   (target.key.name, cp.size, cp.root, when))
        tx.append(LedgerEvent(kind="ledger.witnessed", tenant=SYSTEM_TENANT, actor="system", decision="cosigned",
                              reason=f"witness {target.key.name} cosigned checkpoint {cp.size}",
                              data={"witness": target.key.name, "size": cp.size, "root": b64(cp.root),
                                    "time": when}))
    return write


def record_failure(target: WitnessTarget, cp: StoredCheckpoint, detail: str) -> Any:
    def write(tx: WriteTx) -> None:
        tx.append(LedgerEvent(kind="ledger.witness_failed", tenant=SYSTEM_TENANT, actor="system", decision="failed",
                              reason=f"witness {target.key.name} did not cosign checkpoint {cp.size}",
                              data={"witness": target.key.name, "size": cp.size, "detail": detail[:500]}))
    return write


def held_size(conn: sqlite3.Connection, witness: str) -> int:
    row = conn.execute("SELECT size FROM witness_state WHERE witness = ?", (witness,)).fetchone()
    return row[0] if row else 0


class Publisher:
    """Sends checkpoints to the sink and the witnesses; runs inside ``serve`` and for exports."""

    def __init__(self, db: Database, client: httpx.AsyncClient, sink: str, witnesses: list[WitnessTarget]) -> None:
        self.db, self.client, self.sink, self.witnesses = db, client, sink, witnesses
        self._failing: set[str] = set()
        self._posts: asyncio.Queue[str] | None = None

    # the sink: called on the writer thread after every checkpoint it signs
    def on_checkpoint(self, cp: StoredCheckpoint, loop: asyncio.AbstractEventLoop | None) -> None:
        if not self.sink:
            return
        if self.sink.startswith(("http://", "https://")):
            if loop is not None and self._posts is not None:
                loop.call_soon_threadsafe(self._posts.put_nowait, cp.note)
            return
        try:
            sink_local(self.sink, cp.note)
        except OSError as exc:
            log.error("checkpoint sink %s failed: %s", self.sink, exc)

    async def post_sink_loop(self) -> None:
        self._posts = asyncio.Queue()
        while True:
            note = await self._posts.get()
            try:
                reply = await self.client.post(self.sink, content=note.encode(),
                                               headers={"content-type": "text/plain; charset=utf-8"})
                if reply.status_code >= 300:
                    log.error("checkpoint sink answered %s", reply.status_code)
            except httpx.HTTPError as exc:
                log.error("checkpoint sink failed: %s", exc)

    def _grown(self, conn: sqlite3.Connection, since: int) -> bool:
        """Whether the ledger holds entries past ``since`` other than the witnessing's own."""
        marks = ",".join("?" * len(WITNESS_KINDS))
        return conn.execute(f"SELECT 1 FROM ledger WHERE seq >= ? AND kind NOT IN ({marks}) LIMIT 1",
                            (since, *WITNESS_KINDS)).fetchone() is not None

    async def witness(self, cp: StoredCheckpoint | None = None, *, force: bool = False) -> list[str]:
        """Ask every witness to cosign ``cp`` (default: the newest checkpoint); the lines received."""
        cp = cp or self.db.latest
        lines: list[str] = []
        if cp is None:
            return lines
        for target in self.witnesses:
            old = await self.db.read(held_size, target.key.name)
            if not force and (old >= cp.size or not await self.db.read(self._grown, old)):
                continue

            def proof_for(size: int) -> list[bytes]:
                with self.db.reader() as reader:
                    return consistency_proof(reader, size, cp.size)
            try:
                line, when, _old = await submit(self.client, target, cp, old, proof_for)
            except (WitnessError, httpx.HTTPError, OSError) as exc:
                log.warning("witness %s: %s", target.key.name, exc)
                if target.key.name not in self._failing:   # ledger the change, not every retry
                    self._failing.add(target.key.name)
                    await self.db.write(record_failure(target, cp, str(exc)))
                continue
            self._failing.discard(target.key.name)
            await self.db.write(record_cosignature(target, cp, line, when))
            lines.append(line)
        return lines

    async def witness_loop(self, interval: float) -> None:
        while True:
            await asyncio.sleep(interval)
            try:
                await self.witness()
            except Exception:  # noqa: BLE001 - the loop must go on; the next round retries
                log.exception("witnessing failed")
