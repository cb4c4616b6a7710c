"""The spec's test vectors: hashes, roots, proofs, the signed checkpoint and both sample bundles."""

from __future__ import annotations

import base64
import hashlib
import json
import tarfile
from pathlib import Path

import pytest

from alertengine.ledger.keys import LedgerSigner
from alertengine.ledger.merkle import MerkleTree
from alertengine.ledger.verifier import (
    RootBuilder,
    VerifierKey,
    b64,
    leaf_hash,
    merkle_root,
    open_note,
    parse_entry,
    root_from_inclusion,
    verify_bundle,
    verify_consistency,
)
from tests.conftest import VECTORS


def _leaves(vectors: dict) -> list[bytes]:
    return [bytes.fromhex(e["leaf_hash_hex"]) for e in vectors["entries"]]


def test_every_leaf_hash_matches(vectors: dict) -> None:
    for e in vectors["entries"]:
        assert leaf_hash(e["body"].encode("utf-8")).hex() == e["leaf_hash_hex"]


def test_entries_are_canonical(vectors: dict) -> None:
    for e in vectors["entries"]:
        assert parse_entry(e["body"].encode("utf-8"), None)["v"] == 1


def test_every_root_batch_incremental_and_tree(vectors: dict) -> None:
    leaves = _leaves(vectors)
    tree = MerkleTree(leaves)
    for size, root in vectors["roots"].items():
        n = int(size)
        builder = RootBuilder()
        for leaf in leaves[:n]:
            builder.add(leaf)
        assert b64(merkle_root(leaves[:n])) == root
        assert b64(builder.root()) == root
        assert b64(tree.root(n)) == root


def test_every_inclusion_proof(vectors: dict) -> None:
    leaves = _leaves(vectors)
    tree = MerkleTree(leaves)
    for p in vectors["inclusion"]:
        path = [b64(h) for h in tree.inclusion_proof(p["index"], p["size"])]
        assert path == p["path"]
        root = root_from_inclusion(p["index"], p["size"], leaves[p["index"]], [base64.b64decode(h) for h in p["path"]])
        assert b64(root) == vectors["roots"][str(p["size"])]


def test_every_consistency_proof(vectors: dict) -> None:
    leaves = _leaves(vectors)
    tree = MerkleTree(leaves)
    for p in vectors["consistency"]:
        assert [b64(h) for h in tree.consistency_proof(p["old_size"], p["new_size"])] == p["path"]
        old = base64.b64decode(vectors["roots"][str(p["old_size"])])
        new = base64.b64decode(vectors["roots"][str(p["new_size"])])
        assert verify_consistency(p["old_size"], p["new_size"], old, new, [base64.b64decode(h) for h in p["path"]])


def test_proofs_agree_with_definition_for_many_sizes() -> None:
    leaves = [leaf_hash(str(i).encode()) for i in range(40)]
    tree = MerkleTree(leaves)
    for size in range(1, 41):
        root = merkle_root(leaves[:size])
        for i in range(size):
            assert root_from_inclusion(i, size, leaves[i], tree.inclusion_proof(i, size)) == root
        for old in range(1, size + 1):
            assert verify_consistency(old, size, merkle_root(leaves[:old]), root, tree.consistency_proof(old, size))
        if size > 1:
            assert not verify_consistency(1, size, leaf_hash(b"other"), root, tree.consistency_proof(1, size))
            assert root_from_inclusion(0, size, leaf_hash(b"other"), tree.inclusion_proof(0, size)) != root


def test_checkpoint_signature_and_key(vectors: dict) -> None:
    key = vectors["key"]
    signer = LedgerSigner.from_seed(key["name"], bytes.fromhex(key["ed25519_private_seed_hex"]))
    assert signer.vkey == key["vkey"]
    assert signer.verifier.key_id.hex() == key["key_id_hex"]
    assert signer.sign_note(vectors["checkpoint"]["text"]) == vectors["checkpoint"]["signed_note"]
    assert (VECTORS / "checkpoint-7.txt").read_text() == vectors["checkpoint"]["signed_note"]
    assert open_note(vectors["checkpoint"]["signed_note"], VerifierKey.parse(key["vkey"])) == vectors["checkpoint"]["text"]


@pytest.mark.parametrize("bundle,entries,complete", [("full.tar.gz", 7, True), ("tenant-acme.tar.gz", 4, True)])
def test_sample_bundles_verify(vectors: dict, bundle: str, entries: int, complete: bool) -> None:
    result = verify_bundle(str(VECTORS / bundle), vectors["key"]["vkey"]).as_dict()
    assert result["status"] == "ok", result
    assert result["entries_checked"] == entries
    assert result["complete"] is complete
    assert result["pinned"] is True
    assert result["root"] == vectors["roots"]["7"]


def _unpack(bundle: Path, dest: Path) -> Path:
    with tarfile.open(bundle) as tar:
        tar.extractall(dest, filter="data")
    return dest


@pytest.mark.parametrize("bundle", ["full.tar.gz", "tenant-acme.tar.gz"])
def test_every_one_byte_change_to_an_entry_fails(vectors: dict, tmp_path: Path, bundle: str) -> None:
    """Flip each byte of entries.jsonl, with the manifest re-hashed so that only the deep checks can catch it."""
    d = _unpack(VECTORS / bundle, tmp_path / "b")
    original = (d / "entries.jsonl").read_bytes()
    manifest = json.loads((d / "manifest.json").read_text())
    vkey = vectors["key"]["vkey"]
    kinds = set()
    for i in range(len(original)):
        changed = bytearray(original)
        changed[i] = ord("x") if changed[i] != ord("x") else ord("y")
        (d / "entries.jsonl").write_bytes(bytes(changed))
        manifest["files"]["entries.jsonl"] = hashlib.sha256(changed).hexdigest()
        (d / "manifest.json").write_text(json.dumps(manifest))
        result = verify_bundle(str(d), vkey)
        assert result.status == "fail", f"byte {i} changed and the bundle still verified"
        kinds.add(result.kind)
    assert kinds <= {"ENCODING", "CHAIN_BREAK", "TENANT_CHAIN_BREAK", "ROOT_MISMATCH", "SCOPE_VIOLATION",
                     "SEQ_GAP", "PROOF_INVALID", "TENANT_HEAD_MISMATCH"}, kinds
