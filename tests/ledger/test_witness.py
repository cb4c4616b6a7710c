"""The witness (C2SP tlog-witness / tlog-cosignature v1): it cosigns only checkpoints that extend the
newest one it cosigned, answers each protocol case with its status, and its cosignatures verify
by the spec's own recipe (checked here with `cryptography` directly, not with the product's code)."""

from __future__ import annotations

import base64
import hashlib
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from alertengine.ledger.keys import LedgerSigner, WitnessSigner
from alertengine.ledger.merkle import MerkleTree
from alertengine.ledger.verifier import NoteError, WitnessKey, verify_cosignature
from alertengine.ledger.witness import Witness

EM = "\u2014"
LOG = LedgerSigner("alertengine/00000000000000aa", Ed25519PrivateKey.from_private_bytes(b"\x01" * 32))
OTHER = LedgerSigner("alertengine/00000000000000aa", Ed25519PrivateKey.from_private_bytes(b"\x02" * 32))
LEAVES = [hashlib.sha256(b"\x00" + bytes([n])).digest() for n in range(40)]
TREE = MerkleTree(LEAVES)


def checkpoint(size: int, signer: LedgerSigner = LOG, root: bytes | None = None) -> str:
    root = TREE.root(size) if root is None else root
    return signer.sign_note(f"{signer.name}\n{size}\n{base64.b64encode(root).decode()}\n")


def request(old: int, note: str, proof: list[bytes] | None = None) -> bytes:
    if proof is None:
        proof = TREE.consistency_proof(old, int(note.split("\n")[1])) if old else []
    return (f"old {old}\n" + "".join(base64.b64encode(h).decode() + "\n" for h in proof) + "\n" + note).encode()


@pytest.fixture
def witness(tmp_path: Path) -> Witness:
    signer = WitnessSigner("witness.example/w1", Ed25519PrivateKey.from_private_bytes(b"\x03" * 32))
    return Witness(signer, [LOG.verifier], tmp_path / "state.json", clock=lambda: 1_700_000_000)


def spec_verify(note: str, line: str, public_key: bytes, name: str) -> int:
    """tlog-cosignature v1, from the specification: key id, timestamp, signed message."""
    assert line.startswith(f"{EM} {name} ") and line.endswith("\n")
    raw = base64.b64decode(line.split(" ")[2])
    assert raw[:4] == hashlib.sha256(name.encode() + b"\n\x04" + public_key).digest()[:4]
    timestamp = int.from_bytes(raw[4:12], "big")
    body = note[: note.rindex("\n\n") + 1]
    Ed25519PublicKey.from_public_bytes(public_key).verify(raw[12:], b"cosignature/v1\ntime %d\n" % timestamp + body.encode())
    return timestamp


def test_first_checkpoint_is_cosigned_and_the_cosignature_follows_the_spec(witness: Witness) -> None:
    note = checkpoint(10)
    answer = witness.add_checkpoint(request(0, note))
    assert answer.status == 200
    public = witness.signer.public_key
    assert spec_verify(note, answer.body, public, "witness.example/w1") == 1_700_000_000
    assert verify_cosignature(note + answer.body, WitnessKey.parse(witness.signer.vkey)) == 1_700_000_000
    assert witness.latest(LOG.name) == (10, TREE.root(10))


# (old size sent, new size, a change to the request, the status expected) after the witness holds size 10
CASES = [
    ("extends with a proof", 10, 20, None, 200),
    ("same size, same root", 10, 10, None, 200),
    ("stale old size", 0, 20, None, 409),
    ("old size ahead of the witness", 15, 20, None, 409),
    ("old size above the checkpoint", 30, 20, None, 400),
    ("wrong proof", 10, 20, "bad-proof", 422),
    ("no proof", 10, 20, "no-proof", 422),
    ("same size, another root", 10, 10, "other-root", 409),
    ("a smaller checkpoint (rollback)", 10, 5, None, 400),
    ("signed by another key", 10, 20, "other-key", 403),
    ("unknown log", 10, 20, "unknown-log", 404),
    ("malformed old line", 10, 20, "bad-old", 400),
    ("malformed proof line", 10, 20, "bad-proof-line", 400),
]


@pytest.mark.parametrize("name, old, new, change, status", CASES, ids=[c[0] for c in CASES])
def test_the_protocol_answers(witness: Witness, name: str, old: int, new: int, change: str | None, status: int) -> None:
    assert witness.add_checkpoint(request(0, checkpoint(10))).status == 200
    note = checkpoint(new, OTHER if change == "other-key" else LOG,
                      root=hashlib.sha256(b"forged").digest() if change == "other-root" else None)
    if change == "unknown-log":
        note = LedgerSigner("alertengine/ffffffffffffffff", LOG.private_key).sign_note(
            f"alertengine/ffffffffffffffff\n{new}\n{base64.b64encode(TREE.root(new)).decode()}\n")
    proof = None
    if change == "bad-proof":
        proof = [hashlib.sha256(b"x").digest()] * len(TREE.consistency_proof(10, new))
    elif change == "no-proof":
        proof = []
    body = request(old, note, proof) if old <= new else request(old, note, [])
    if change == "bad-old":
        body = body.replace(b"old ", b"old 0", 1)
    elif change == "bad-proof-line":
        body = body.replace(b"\n", b"\nnot base64!\n", 1)
    answer = witness.add_checkpoint(body)
    assert answer.status == status, answer.body
    if status == 409 and name.startswith(("stale", "old size ahead")):
        assert answer.content_type == "text/x.tlog.size" and answer.body == "10\n"
    expected = (20, TREE.root(20)) if status == 200 and new == 20 else (10, TREE.root(10))
    assert witness.latest(LOG.name) == expected   # refused requests change nothing


def test_state_survives_a_restart(witness: Witness, tmp_path: Path) -> None:
    witness.add_checkpoint(request(0, checkpoint(10)))
    again = Witness(witness.signer, [LOG.verifier], tmp_path / "state.json")
    assert again.add_checkpoint(request(0, checkpoint(12))).status == 409
    assert again.add_checkpoint(request(10, checkpoint(12))).status == 200


@pytest.mark.parametrize("tamper", ["signature", "time", "key-id"])
def test_a_tampered_cosignature_does_not_verify(witness: Witness, tamper: str) -> None:
    note = checkpoint(10)
    line = witness.add_checkpoint(request(0, note)).body
    raw = bytearray(base64.b64decode(line.split(" ")[2]))
    raw[{"signature": 40, "time": 11, "key-id": 0}[tamper]] ^= 1
    bad = f"{EM} witness.example/w1 {base64.b64encode(bytes(raw)).decode()}\n"
    with pytest.raises(NoteError) as err:
        verify_cosignature(note + bad, WitnessKey.parse(witness.signer.vkey))
    assert err.value.kind == ("WITNESS_MISSING" if tamper == "key-id" else "WITNESS_INVALID")
