"""A witness (C2SP tlog-witness): cosigns a log's checkpoint only when a consistency proof shows it
extends the newest checkpoint the witness cosigned for that log.

This is the auditor's side, run on another host with ``alertengine witness serve``: its own key,
its own state (one small JSON file, replaced atomically under a lock), and the verifier keys of the
logs it watches. ``add_checkpoint`` is the whole protocol: it takes the request body and returns
the HTTP status, content type and body to answer with.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

from .keys import WitnessSigner
from .verifier import (
    NoteError,
    VerifierKey,
    open_note,
    parse_checkpoint,
    verify_consistency,
)

MAX_PROOF_LINES = 63
MAX_BODY = 64 * 1024


@dataclass(frozen=True)
class Answer:
    status: int
    content_type: str
    body: str


def _text(status: int, body: str, content_type: str = "text/plain; charset=utf-8") -> Answer:
    return Answer(status, content_type, body if body.endswith("\n") else body + "\n")


class Witness:
    def __init__(self, signer: WitnessSigner, logs: Sequence[VerifierKey], state_file: Path,
                 clock: Callable[[], float] = time.time) -> None:
        self.signer = signer
        self.logs = {key.name: key for key in logs}
        self.state_file = state_file
        self.clock = clock
        self._lock = threading.Lock()

    def _load(self) -> dict[str, dict[str, object]]:
        if not self.state_file.exists():
            return {}
        return json.loads(self.state_file.read_text(encoding="utf-8"))

    def _save(self, state: dict[str, dict[str, object]]) -> None:
        tmp = self.state_file.with_suffix(".tmp")
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(state, f, sort_keys=True)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.state_file)

    def latest(self, origin: str) -> tuple[int, bytes] | None:
        entry = self._load().get(origin)
        return None if entry is None else (int(entry["size"]), base64.b64decode(str(entry["root"])))

    def add_checkpoint(self, body: bytes) -> Answer:
        """Check and, if it extends what this witness cosigned before, cosign a checkpoint."""
        if len(body) > MAX_BODY:
            return _text(400, "request too large")
        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError:
            return _text(400, "the request is not UTF-8")
        head, sep, note = text.partition("\n\n")
        lines = head.split("\n")
        if not sep or not lines[0].startswith("old "):
            return _text(400, "expected an 'old <size>' line, proof lines, an empty line and a checkpoint")
        size_text = lines[0][4:]
        if not size_text.isdigit() or (size_text != "0" and size_text.startswith("0")) or len(size_text) > 19:
            return _text(400, "malformed old size")
        old_size = int(size_text)
        if len(lines) - 1 > MAX_PROOF_LINES:
            return _text(400, "too many consistency proof lines")
        try:
            proof = [base64.b64decode(line, validate=True) for line in lines[1:]]
        except (binascii.Error, ValueError):
            return _text(400, "malformed consistency proof line")
        if any(len(h) != 32 for h in proof):
            return _text(400, "a consistency proof hash is not 32 bytes")
        origin = note.split("\n", 1)[0]
        key = self.logs.get(origin)
        if key is None:
            return _text(404, f"unknown log {origin!r}")
        try:
            checkpoint_text = open_note(note, key)
            cp = parse_checkpoint(checkpoint_text)
        except NoteError as exc:
            return _text(403 if exc.kind in ("SIG_INVALID", "KEY_UNTRUSTED") else 400, exc.detail)
        if cp.origin != origin:
            return _text(403, "the checkpoint's origin is not the signer's log")
        if old_size > cp.size:
            return _text(400, f"old size {old_size} is larger than the checkpoint's {cp.size}")
        if old_size == 0 and proof:
            return _text(400, "a proof from size 0 must be empty")
        with self._lock:   # check and update atomically: no rollback between two requests
            state = self._load()
            held = state.get(origin)
            held_size = int(held["size"]) if held else 0
            if old_size != held_size:
                return _text(409, str(held_size), "text/x.tlog.size")
            if held is not None:
                held_root = base64.b64decode(str(held["root"]))
                if cp.size == held_size:
                    if cp.root != held_root:
                        return _text(409, f"a different root was cosigned for size {held_size}")
                elif not verify_consistency(held_size, cp.size, held_root, cp.root, proof):
                    return _text(422, f"the consistency proof from size {held_size} does not verify")
            state[origin] = {"size": cp.size, "root": base64.b64encode(cp.root).decode(),
                             "cosigned_at": int(self.clock())}
            self._save(state)
        return Answer(200, "text/plain; charset=utf-8", self.signer.cosign(checkpoint_text, int(self.clock())))
