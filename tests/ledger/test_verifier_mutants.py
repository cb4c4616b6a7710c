"""The bundle verifier, one property at a time: break exactly one thing, get exactly one verdict.

Every bundle here is written from scratch into tmp_path by a small reference implementation kept in
this file (canonical JSON, RFC 9162 hashes and proofs, C2SP signed notes with the published test key
of tests/fixtures/ledger/vectors.json). Nothing is borrowed from ``alertengine.ledger`` except the
verifier under test, so a fault in the verifier cannot hide behind the same fault in a helper.

Each verdict is compared as a whole (status, kind, first_bad_seq, detail, counts, covers, root,
completeness), because the auditor reads all of it. tests/ledger/test_tamper_bundle.py runs the CLI
and the bundled verify.py side by side on exported bundles; this file calls the functions directly.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import io
import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path
from typing import Any, Callable

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from alertengine.ledger import verifier as V
from alertengine.ledger.verifier import (
    ChainChecker,
    Checkpoint,
    NoteError,
    RootBuilder,
    VerificationFailure,
    VerifierKey,
    main,
    merkle_root,
    node_hash,
    note_signer,
    open_note,
    parse_checkpoint,
    parse_entry,
    root_from_inclusion,
    split_note,
    unb64,
    verify_bundle,
    verify_consistency,
)

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "ledger"
VECTORS = json.loads((FIXTURES / "vectors.json").read_text())
NAME = VECTORS["key"]["name"]
VKEY = VECTORS["key"]["vkey"]
DASH = "\u2014"
ZERO = "0" * 64
FORMAT = "alertengine-audit-bundle/1"


# --- a reference implementation, independent of the product ------------------------------------------

def sha(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def leaf(body: bytes) -> bytes:
    return sha(b"\x00" + body)


def node(left: bytes, right: bytes) -> bytes:
    return sha(b"\x01" + left + right)


def split_point(n: int) -> int:
    k = 1
    while k * 2 < n:
        k *= 2
    return k


def mth(leaves: list[bytes]) -> bytes:
    """RFC 9162 2.1.1, recursively."""
    if not leaves:
        return sha(b"")
    if len(leaves) == 1:
        return leaves[0]
    k = split_point(len(leaves))
    return node(mth(leaves[:k]), mth(leaves[k:]))


def inclusion(m: int, leaves: list[bytes]) -> list[bytes]:
    """RFC 9162 2.1.3.1."""
    if len(leaves) == 1:
        return []
    k = split_point(len(leaves))
    if m < k:
        return inclusion(m, leaves[:k]) + [mth(leaves[k:])]
    return inclusion(m - k, leaves[k:]) + [mth(leaves[:k])]


def consistency(m: int, leaves: list[bytes]) -> list[bytes]:
    """RFC 9162 2.1.4.1."""
    def sub(m: int, d: list[bytes], complete: bool) -> list[bytes]:
        if m == len(d):
            return [] if complete else [mth(d)]
        k = split_point(len(d))
        if m <= k:
            return sub(m, d[:k], complete) + [mth(d[k:])]
        return sub(m - k, d[k:], False) + [mth(d[:k])]
    return sub(m, leaves, True)


def key_b64(public: bytes, prefix: bytes = b"\x01") -> str:
    return b64(prefix + public)


def canon(obj: dict) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode()


@dataclasses.dataclass(frozen=True)
class Key:
    name: str
    private: Ed25519PrivateKey

    @property
    def public(self) -> bytes:
        return self.private.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)

    @property
    def kid(self) -> bytes:
        return sha(self.name.encode() + b"\n\x01" + self.public)[:4]

    @property
    def vkey(self) -> str:
        return f"{self.name}+{self.kid.hex()}+{key_b64(self.public)}"

    def signature_line(self, text: str) -> str:
        return f"{DASH} {self.name} {b64(self.kid + self.private.sign(text.encode()))}\n"

    def sign(self, text: str) -> str:
        return f"{text}\n{self.signature_line(text)}"


KEY = Key(NAME, Ed25519PrivateKey.from_private_bytes(bytes.fromhex(VECTORS["key"]["ed25519_private_seed_hex"])))
ATTACKER = Key(NAME, Ed25519PrivateKey.from_private_bytes(bytes(range(32))))  # same log name, other key
STRANGER = Key("alertengine/feedfacecafebeef", Ed25519PrivateKey.from_private_bytes(bytes(range(1, 33))))


def checkpoint_text(size: int, root: bytes, origin: str = NAME) -> str:
    return f"{origin}\n{size}\n{b64(root)}\n"


def chain(contents: list[dict]) -> list[dict]:
    """Fill in seq, prev, tseq and tprev so that every chain links."""
    out, last, tenant_last = [], None, {}
    for seq, content in enumerate(contents):
        obj = dict(content)
        t = obj["tenant"]
        obj.update(seq=seq, prev=last.hex() if last else ZERO,
                   tseq=tenant_last[t][0] + 1 if t in tenant_last else 0,
                   tprev=tenant_last[t][1].hex() if t in tenant_last else ZERO)
        last = leaf(canon(obj))
        tenant_last[t] = (obj["tseq"], last)
        out.append(obj)
    return out


def content(n: int, tenant: str, **extra: Any) -> dict:
    obj = {"v": 1, "tenant": tenant, "ts": f"2026-11-22T13:50:{n % 60:02d}.000000Z",
           "event_id": f"00000000-0000-4000-8000-{n:012d}", "kind": "test.event", "incident": None, "stage": None,
           "actor": "system", "decision": None, "reason": f"event {n}", "confidence": None,
           "policy_version": None, "data": {"n": n}}
    obj.update(extra)
    return obj


VECTOR_LOG = [json.loads(e["body"]) for e in VECTORS["entries"]]
TENANTS = ("acme", "globex", "acme", "_system", "acme", "globex", "acme")


def log_of(n: int) -> list[dict]:
    return chain([content(i, TENANTS[i % len(TENANTS)]) for i in range(n)])


# --- bundles ---------------------------------------------------------------------------------------------

@dataclasses.dataclass
class Bundle:
    path: Path
    log: list[dict]
    size: int
    tenant: str | None

    def read(self, name: str) -> bytes:
        return (self.path / name).read_bytes()

    def write(self, name: str, data: bytes | str, *, rehash: bool = True) -> None:
        target = self.path / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data.encode() if isinstance(data, str) else data)
        if rehash:
            self.rehash()

    def remove(self, name: str, *, unlist: bool) -> None:
        (self.path / name).unlink()
        if unlist:
            m = self.manifest
            del m["files"][name]
            self.manifest = m

    @property
    def manifest(self) -> dict:
        return json.loads(self.read("manifest.json"))

    @manifest.setter
    def manifest(self, value: Any) -> None:
        (self.path / "manifest.json").write_text(json.dumps(value, indent=1))

    def lines(self) -> list[bytes]:
        return self.read("entries.jsonl").splitlines()

    def set_lines(self, lines: list[bytes], *, rehash: bool = True) -> None:
        self.write("entries.jsonl", b"".join(line + b"\n" for line in lines), rehash=rehash)

    def rehash(self, **scope: Any) -> None:
        m = self.manifest
        for name in m["files"]:
            if (self.path / name).is_file():
                m["files"][name] = hashlib.sha256(self.read(name)).hexdigest()
        m["scope"].update(scope)
        self.manifest = m

    def leaves(self) -> list[bytes]:
        return [leaf(canon(obj)) for obj in self.log]

    def root(self, size: int | None = None) -> bytes:
        return mth(self.leaves()[: self.size if size is None else size])

    def add_checkpoint(self, name: str, size: int, root: bytes | None = None, key: Key = KEY,
                       origin: str = NAME) -> str:
        note = key.sign(checkpoint_text(size, self.root(size) if root is None else root, origin))
        m = self.manifest
        m["files"][name] = ""
        self.manifest = m
        self.write(name, note)
        return note

    def verify(self, vkey: str | None = VKEY, held: str | None = None) -> dict:
        return verify_bundle(str(self.path), vkey, held).as_dict()


def make_bundle(d: Path, log: list[dict] | None = None, *, size: int | None = None, tenant: str | None = None,
                select: Callable[[dict], bool] | None = None, proofs: bool | None = None, head: bool = True,
                key: Key = KEY) -> Bundle:
    """A bundle that verifies: the log's entries (all, or one tenant's, or ``select``ed), a checkpoint
    of ``size`` signed by ``key``, inclusion proofs when not every entry 0..size-1 is present."""
    log = VECTOR_LOG if log is None else log
    size = len(log) if size is None else size
    d.mkdir(parents=True, exist_ok=True)
    pick = select or ((lambda o: o["tenant"] == tenant) if tenant is not None else (lambda o: True))
    chosen = [o for o in log if pick(o)]
    b = Bundle(d, log, size, tenant)
    bodies = [canon(o) for o in chosen]
    (d / "entries.jsonl").write_bytes(b"".join(body + b"\n" for body in bodies))
    (d / "checkpoint.txt").write_text(key.sign(checkpoint_text(size, b.root())))
    files = {"entries.jsonl": "", "checkpoint.txt": ""}
    if proofs if proofs is not None else tenant is not None:
        leaves = b.leaves()[:size]
        (d / "proofs.jsonl").write_text("".join(
            json.dumps({"seq": o["seq"], "path": [b64(h) for h in inclusion(o["seq"], leaves)]}) + "\n"
            for o in chosen if o["seq"] < size))
        files["proofs.jsonl"] = ""
    if tenant is not None and head:
        mine = [o for o in log[:size] if o["tenant"] == tenant]
        (d / "tenant-head.txt").write_text(key.sign(
            f"{key.name}/tenant/{tenant}\n{len(mine)}\n{b64(leaf(canon(mine[-1])))}\n"))
        files["tenant-head.txt"] = ""
    b.manifest = {
        "format": FORMAT, "origin": key.name, "vkey": key.vkey,
        "scope": {"tenant": tenant, "incident": None,
                  "from_seq": chosen[0]["seq"] if chosen else None, "to_seq": chosen[-1]["seq"] if chosen else None,
                  "from_tseq": chosen[0]["tseq"] if chosen and tenant is not None else None,
                  "to_tseq": chosen[-1]["tseq"] if chosen and tenant is not None else None},
        "checkpoint_size": size, "created": "2026-11-22T13:51:00.000000Z", "files": files}
    b.rehash()
    return b


NO_COVERS = {"from_seq": None, "to_seq": None, "from_tseq": None, "to_tseq": None}


def verdict(*, status: str = "fail", kind: str | None = None, first_bad_seq: int | None = None,
            entries_checked: int = 0, checkpoint_size: int = 0, root: str = "", pinned: bool = True,
            covers: dict | None = None, complete: bool = False, detail: str = "",
            witnessed: list | None = None) -> dict:
    return {"status": status, "kind": kind, "first_bad_seq": first_bad_seq, "entries_checked": entries_checked,
            "checkpoint_size": checkpoint_size, "root": root, "pinned": pinned,
            "covers": NO_COVERS if covers is None else covers, "complete": complete,
            "witnessed": [] if witnessed is None else witnessed, "detail": detail}


UNPINNED = ("every check passed, against the key named in the bundle's own manifest, which anyone could have "
            "written: nothing is proven until you pin the appliance's key with --vkey. ")


def covers_of(b: Bundle, chosen: list[dict] | None = None) -> dict:
    chosen = chosen if chosen is not None else [json.loads(line) for line in b.lines()]
    return {"from_seq": chosen[0]["seq"], "to_seq": chosen[-1]["seq"],
            "from_tseq": chosen[0]["tseq"] if b.tenant is not None else None,
            "to_tseq": chosen[-1]["tseq"] if b.tenant is not None else None}


def ok_verdict(b: Bundle, *, complete: bool = True, pinned: bool = True, detail: str | None = None,
               witnessed: list | None = None) -> dict:
    """Every check passed; without a pinned key that is only "unpinned" (KEY_NOT_PINNED), never "ok"."""
    n = len(b.lines())
    text = f"{n} entries verified against checkpoint {b.size}" + (
        "" if complete else "; the bundle is INCOMPLETE: it stops before the end of what it could hold")
    text = text if detail is None else detail
    return verdict(status="ok" if pinned else "unpinned", kind=None if pinned else "KEY_NOT_PINNED",
                   entries_checked=n, checkpoint_size=b.size, root=b64(b.root()), pinned=pinned,
                   covers=covers_of(b), complete=complete, detail=text if pinned else UNPINNED + text,
                   witnessed=witnessed)


def after_checkpoint(b: Bundle, kind: str, seq: int | None, detail: str, checked: int = 0, **kw: Any) -> dict:
    """A failure found once the checkpoint was read (its size and root are in the verdict)."""
    return verdict(kind=kind, first_bad_seq=seq, detail=detail, entries_checked=checked, checkpoint_size=b.size,
                   root=b64(b.root()), **kw)


def after_entries(b: Bundle, kind: str, seq: int | None, detail: str, **kw: Any) -> dict:
    """A failure found after every entry checked out (covers are in the verdict)."""
    return after_checkpoint(b, kind, seq, detail, len(b.lines()), covers=covers_of(b), **kw)


@pytest.fixture
def full(tmp_path: Path) -> Bundle:
    return make_bundle(tmp_path / "full")


@pytest.fixture
def acme(tmp_path: Path) -> Bundle:
    return make_bundle(tmp_path / "acme", tenant="acme")


# --- the reference implementation reproduces the published vectors ---------------------------------------

def test_the_reference_helpers_reproduce_the_vectors(tmp_path: Path) -> None:
    assert chain([{k: v for k, v in o.items() if k not in ("seq", "prev", "tseq", "tprev")} for o in VECTOR_LOG]) \
        == VECTOR_LOG
    assert [canon(o).decode() for o in VECTOR_LOG] == [e["body"] for e in VECTORS["entries"]]
    leaves = [leaf(canon(o)) for o in VECTOR_LOG]
    assert [h.hex() for h in leaves] == [e["leaf_hash_hex"] for e in VECTORS["entries"]]
    assert {str(n): b64(mth(leaves[:n])) for n in range(8)} == VECTORS["roots"]
    for p in VECTORS["inclusion"]:
        assert [b64(h) for h in inclusion(p["index"], leaves[: p["size"]])] == p["path"]
    for p in VECTORS["consistency"]:
        if p["old_size"] < p["new_size"]:
            assert [b64(h) for h in consistency(p["old_size"], leaves[: p["new_size"]])] == p["path"]
    assert KEY.vkey == VKEY and KEY.kid.hex() == VECTORS["key"]["key_id_hex"]
    assert KEY.sign(VECTORS["checkpoint"]["text"]) == VECTORS["checkpoint"]["signed_note"]
    # and the bundles it writes are the published sample bundles, file for file
    for fixture, tenant in (("full.tar.gz", None), ("tenant-acme.tar.gz", "acme")):
        b = make_bundle(tmp_path / fixture, tenant=tenant)
        with tarfile.open(FIXTURES / fixture) as tar:
            for member in tar.getmembers():
                data = tar.extractfile(member).read()  # type: ignore[union-attr]
                if member.name == "manifest.json":
                    assert json.loads(data) == b.manifest
                else:
                    assert data == b.read(member.name), member.name


# --- bundles that verify ---------------------------------------------------------------------------------

def test_a_global_bundle_verifies(full: Bundle) -> None:
    assert full.verify() == ok_verdict(full)
    assert ok_verdict(full)["detail"] == "7 entries verified against checkpoint 7"
    assert ok_verdict(full)["covers"] == {"from_seq": 0, "to_seq": 6, "from_tseq": None, "to_tseq": None}


def test_a_tenant_bundle_verifies(acme: Bundle) -> None:
    assert acme.verify() == ok_verdict(acme)
    assert acme.verify()["covers"] == {"from_seq": 0, "to_seq": 6, "from_tseq": 0, "to_tseq": 3}


def test_without_a_pinned_key_the_manifests_key_is_used_and_the_verdict_says_so(full: Bundle) -> None:
    assert full.verify(None) == ok_verdict(full, pinned=False)
    assert full.verify("") == ok_verdict(full, pinned=False)


@pytest.mark.parametrize("name", ["full.tar.gz", "tenant-acme.tar.gz"])
def test_the_published_tarballs_verify_like_their_unpacked_copies(tmp_path: Path, name: str) -> None:
    packed = verify_bundle(str(FIXTURES / name), VKEY).as_dict()
    with tarfile.open(FIXTURES / name) as tar:
        tar.extractall(tmp_path / "x", filter="data")
    assert packed == verify_bundle(str(tmp_path / "x"), VKEY).as_dict()
    assert packed["status"] == "ok" and packed["entries_checked"] == (7 if name == "full.tar.gz" else 4)


def _tar(b: Bundle, target: Path, *, prefix: str = "", with_dirs: bool = False) -> Path:
    with tarfile.open(target, "w:gz") as tar:
        if with_dirs:
            info = tarfile.TarInfo(prefix + "checkpoints")
            info.type = tarfile.DIRTYPE
            tar.addfile(info)
        for path in sorted(b.path.rglob("*")):
            if path.is_file():
                data = path.read_bytes()
                info = tarfile.TarInfo(prefix + path.relative_to(b.path).as_posix())
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    return target


@pytest.mark.parametrize("prefix", ["", "./"])
def test_a_tarball_with_directories_and_dot_slash_names_reads_like_the_directory(
        full: Bundle, tmp_path: Path, prefix: str) -> None:
    full.add_checkpoint("checkpoints/00000003.txt", 3)
    expected = ok_verdict(full)
    assert full.verify() == expected
    packed = _tar(full, tmp_path / "b.tar.gz", prefix=prefix, with_dirs=True)
    assert verify_bundle(str(packed), VKEY).as_dict() == expected
    with tarfile.open(packed) as tar:
        reader = V.BundleReader(str(packed))
        try:
            assert reader.names() == ["checkpoint.txt", "checkpoints/00000003.txt", "entries.jsonl", "manifest.json"]
            assert reader.read("checkpoints/00000003.txt") == full.read("checkpoints/00000003.txt")
            assert reader.read("nothing-here") is None and reader.open("nothing-here") is None
        finally:
            reader.close()
        assert len(tar.getmembers()) == 5


def test_closing_a_tarball_reader_closes_the_archive(full: Bundle, tmp_path: Path) -> None:
    reader = V.BundleReader(str(_tar(full, tmp_path / "b.tar.gz")))
    assert reader.read("manifest.json") == full.read("manifest.json")
    reader.close()
    with pytest.raises(OSError, match="closed"):
        reader.read("manifest.json")


def test_a_directory_reader_lists_nested_files_with_slashes(full: Bundle) -> None:
    full.add_checkpoint("checkpoints/00000002.txt", 2)
    reader = V.BundleReader(str(full.path))
    assert reader.names() == ["checkpoint.txt", "checkpoints/00000002.txt", "entries.jsonl", "manifest.json"]
    assert reader.read("checkpoints") is None and reader.open("checkpoints") is None
    reader.close()


def test_entries_without_a_final_newline_still_verify(full: Bundle) -> None:
    full.write("entries.jsonl", full.read("entries.jsonl").rstrip(b"\n"))
    assert full.verify() == ok_verdict(full)


def test_entries_larger_than_one_read_chunk_verify(tmp_path: Path) -> None:
    """Lines that straddle the verifier's 1 MiB read chunks."""
    log = chain([content(i, TENANTS[i % 7], data={"n": i, "pad": "x" * 50_000}) for i in range(45)])
    b = make_bundle(tmp_path / "big", log)
    assert len(b.read("entries.jsonl")) > 2 << 20
    assert b.verify() == ok_verdict(b)
    lines = b.lines()
    b.set_lines(lines[:30] + [lines[30].replace(b'"reason":"event 30"', b'"reason":"event X"')] + lines[31:])
    assert b.verify() == after_checkpoint(b, "CHAIN_BREAK", 31, "prev is not the leaf hash of the previous entry", 31)


def test_blank_lines_in_proofs_and_consistency_files_are_ignored(acme: Bundle) -> None:
    acme.write("proofs.jsonl", b"\n" + acme.read("proofs.jsonl").replace(b"\n", b"\n  \n"))
    acme.add_checkpoint("checkpoints/00000003.txt", 3)
    path = consistency(3, acme.leaves()[:7])
    m = acme.manifest
    m["files"]["consistency.jsonl"] = ""
    acme.manifest = m
    acme.write("consistency.jsonl", "\n" + json.dumps({"old_size": 3, "new_size": 7, "path": [b64(h) for h in path]})
               + "\n\n")
    assert acme.verify() == ok_verdict(acme)


# --- manifest -------------------------------------------------------------------------------------------

def test_no_manifest(full: Bundle) -> None:
    (full.path / "manifest.json").unlink()
    assert full.verify() == verdict(kind="MANIFEST_MISMATCH", detail="manifest.json is missing")


@pytest.mark.parametrize(("manifest", "detail"), [
    (b"{not json", ("manifest.json is unreadable: Expecting property name enclosed in double quotes: "
                    "line 1 column 2 (char 1)")),
    (json.dumps({"format": FORMAT, "files": {}}).encode(), "manifest.json is unreadable: 'scope'"),
    (json.dumps({"format": FORMAT, "scope": {}}).encode(), "manifest.json is unreadable: 'files'"),
    (b"[1, 2]", "manifest.json is unreadable: list indices must be integers or slices, not str"),
    (json.dumps({"scope": {}, "files": {}}).encode(), "unknown bundle format None"),
    (json.dumps({"format": "alertengine-audit-bundle/2", "scope": {}, "files": {}}).encode(),
     "unknown bundle format 'alertengine-audit-bundle/2'"),
])
def test_an_unreadable_manifest(full: Bundle, manifest: bytes, detail: str) -> None:
    full.write("manifest.json", manifest, rehash=False)
    assert full.verify() == verdict(kind="MANIFEST_MISMATCH", detail=detail)


def test_a_file_the_manifest_does_not_list(full: Bundle) -> None:
    full.write("notes.txt", "hello")
    full.write("aaa.txt", "first in order")
    assert full.verify() == verdict(kind="MANIFEST_MISMATCH", detail="aaa.txt is not listed in manifest.json")


@pytest.mark.parametrize("name", ["checkpoint.txt", "proofs.jsonl", "tenant-head.txt"])
def test_a_listed_file_that_is_missing(acme: Bundle, name: str) -> None:
    acme.remove(name, unlist=False)
    assert acme.verify() == verdict(kind="MANIFEST_MISMATCH", detail=f"{name} is listed in manifest.json but missing")


def test_a_listed_entries_file_that_is_missing(full: Bundle) -> None:
    full.remove("entries.jsonl", unlist=False)
    assert full.verify() == verdict(kind="MANIFEST_MISMATCH",
                                    detail="entries.jsonl is listed in manifest.json but missing")


@pytest.mark.parametrize("name", ["checkpoint.txt", "proofs.jsonl", "tenant-head.txt"])
def test_a_file_that_differs_from_its_manifest_hash(acme: Bundle, name: str) -> None:
    (acme.path / name).write_bytes(acme.read(name) + b"\n")
    assert acme.verify() == verdict(kind="MANIFEST_MISMATCH", detail=f"{name} does not match its manifest hash")


@pytest.mark.parametrize("name", ["entries.jsonl", "checkpoint.txt"])
def test_entries_and_checkpoint_must_both_be_listed(full: Bundle, name: str) -> None:
    full.remove(name, unlist=True)
    assert full.verify() == verdict(kind="MANIFEST_MISMATCH",
                                    detail="entries.jsonl and checkpoint.txt must both be listed")


def test_an_edited_entry_without_a_new_manifest_hash(full: Bundle) -> None:
    lines = full.lines()
    full.set_lines(lines[:5] + [lines[5].replace(b"vector entry 5", b"vector entry X")] + lines[6:], rehash=False)
    assert full.verify() == after_checkpoint(
        full, "MANIFEST_MISMATCH", 6, "entries.jsonl does not match its manifest hash; first inconsistent entry: "
        "CHAIN_BREAK at seq 6: prev is not the leaf hash of the previous entry", 6)


def test_appended_bytes_without_a_new_manifest_hash(full: Bundle) -> None:
    (full.path / "entries.jsonl").write_bytes(full.read("entries.jsonl") + b"\n")
    assert full.verify() == after_checkpoint(
        full, "MANIFEST_MISMATCH", 7, "entries.jsonl does not match its manifest hash; first inconsistent entry: "
        "ENCODING at seq 7: not JSON", 7)


def test_a_wrong_manifest_hash_for_intact_entries(full: Bundle) -> None:
    m = full.manifest
    m["files"]["entries.jsonl"] = hashlib.sha256(b"something else").hexdigest()
    full.manifest = m
    assert full.verify() == after_checkpoint(
        full, "MANIFEST_MISMATCH", None, "entries.jsonl does not match its manifest hash", 7)


def test_the_manifests_checkpoint_size_must_be_the_signed_one(full: Bundle) -> None:
    m = full.manifest
    m["checkpoint_size"] = 6
    full.manifest = m
    assert full.verify() == after_checkpoint(full, "MANIFEST_MISMATCH", None,
                                             "manifest checkpoint_size differs from the signed checkpoint")


# --- keys and the checkpoint's signature ------------------------------------------------------------------

def test_a_checkpoint_signed_by_another_key(full: Bundle) -> None:
    full.write("checkpoint.txt", ATTACKER.sign(checkpoint_text(7, full.root())))
    assert full.verify() == verdict(kind="KEY_UNTRUSTED", detail=(
        f"signed by {NAME}+{ATTACKER.kid.hex()}, not by the pinned key {NAME}+{KEY.kid.hex()}"))


def test_an_attacker_who_swaps_the_manifests_key_is_caught_only_by_a_pinned_key(tmp_path: Path) -> None:
    b = make_bundle(tmp_path / "b", key=ATTACKER)
    assert b.verify(None) == ok_verdict(b, pinned=False)
    assert b.verify(VKEY)["kind"] == "KEY_UNTRUSTED"


def test_a_forged_signature_under_the_right_key_id(full: Bundle) -> None:
    text = checkpoint_text(7, full.root())
    forged = f"{DASH} {NAME} {b64(KEY.kid + ATTACKER.private.sign(text.encode()))}\n"
    full.write("checkpoint.txt", text + "\n" + forged)
    assert full.verify() == verdict(kind="SIG_INVALID", detail="signature does not verify with the verifier key")


def test_a_valid_signature_after_a_foreign_one_is_found(full: Bundle) -> None:
    text = checkpoint_text(7, full.root())
    full.write("checkpoint.txt", text + "\n" + STRANGER.signature_line(text) + KEY.signature_line(text))
    assert full.verify() == ok_verdict(full)


def test_notes_that_are_not_utf8_are_read_with_replacement_characters(acme: Bundle) -> None:
    """An invalid byte in a signed note makes its signature fail; it does not crash the verifier."""
    good = acme.read("checkpoint.txt")
    acme.write("checkpoint.txt", good.replace(b"\n7\n", b"\n7\xff\n"))
    assert acme.verify() == verdict(kind="SIG_INVALID", detail="signature does not verify with the verifier key")
    acme.write("checkpoint.txt", good)
    acme.write("tenant-head.txt", acme.read("tenant-head.txt").replace(b"acme", b"acm\xff"))
    assert acme.verify() == after_entries(acme, "SIG_INVALID", None, "signature does not verify with the verifier key")


def test_an_earlier_checkpoint_that_is_not_utf8(full: Bundle) -> None:
    note = full.add_checkpoint("checkpoints/00000003.txt", 3).encode()
    full.write("checkpoints/00000003.txt", note.replace(b"\n3\n", b"\n3\xfe\n"))
    assert full.verify() == after_entries(full, "SIG_INVALID", None, "signature does not verify with the verifier key",
                                          complete=True)


def test_a_checkpoint_of_another_log_signed_by_the_pinned_key(full: Bundle) -> None:
    full.write("checkpoint.txt", KEY.sign(checkpoint_text(7, full.root(), origin="alertengine/0000000000000000")))
    assert full.verify() == verdict(kind="KEY_UNTRUSTED", detail=(
        f"checkpoint origin 'alertengine/0000000000000000' is not the key's log '{NAME}'"))


@pytest.mark.parametrize(("text", "detail"), [
    (f"{NAME}\n7\n", "malformed checkpoint text"),
    (f"{NAME}\nseven\n{b64(bytes(32))}\n", "malformed checkpoint size or root"),
    (f"{NAME}\n7\nnot base64!\n", "malformed checkpoint size or root"),
    (f"{NAME}\n-1\n{b64(bytes(32))}\n", "malformed checkpoint size or root"),
    (f"{NAME}\n07\n{b64(bytes(32))}\n", "malformed checkpoint size or root"),
    (f"{NAME}\n+7\n{b64(bytes(32))}\n", "malformed checkpoint size or root"),
    (f"{NAME}\n7\n{b64(bytes(31))}\n", "malformed checkpoint size or root"),
    (f"{NAME}\n7\n{b64(bytes(33))}\n", "malformed checkpoint size or root"),
    ("{name}\n7\n{root_with_junk}\n", "malformed checkpoint size or root"),
])
def test_a_validly_signed_but_malformed_checkpoint(full: Bundle, text: str, detail: str) -> None:
    root = b64(full.root())
    text = text.replace("{name}", NAME).replace("{root_with_junk}", root[:10] + "*" + root[10:])
    full.write("checkpoint.txt", KEY.sign(text))
    assert full.verify() == verdict(kind="SIG_INVALID", detail=detail)


MALFORMED_NOTES: list[tuple[str, Callable[[str, str, bytes], str], str]] = [
    ("no-block", lambda text, good, sig: "no signature block at all\n", "malformed signed note: no signature block"),
    ("no-final-newline", lambda text, good, sig: good.rstrip("\n"), "malformed signed note: no signature block"),
    ("empty-block", lambda text, good, sig: text + "\n", "signed note has no signature"),
    ("empty-text", lambda text, good, sig: "\n\n" + KEY.signature_line("\n"), "malformed checkpoint text"),
    ("hyphen", lambda text, good, sig: f"{text}\n- {NAME} {b64(sig)}\n", "malformed signature line"),
    ("no-space", lambda text, good, sig: f"{text}\n{DASH}{NAME} {b64(sig)}\n", "malformed signature line"),
    ("extra-field", lambda text, good, sig: f"{text}\n{DASH} {NAME} {b64(sig)} extra\n", "malformed signature line"),
    ("no-signature", lambda text, good, sig: f"{text}\n{DASH} {NAME}\n", "malformed signature line"),
    ("not-base64", lambda text, good, sig: f"{text}\n{DASH} {NAME} not*base64\n", "malformed signature line"),
    ("four-bytes", lambda text, good, sig: f"{text}\n{DASH} {NAME} {b64(sig[:4])}\n", "signature of the wrong length"),
    ("empty-base64", lambda text, good, sig: f"{text}\n{DASH} {NAME} \n", "signature of the wrong length"),
    ("short", lambda text, good, sig: f"{text}\n{DASH} {NAME} {b64(sig[:67])}\n",
     "signature does not verify with the verifier key"),
    ("long", lambda text, good, sig: f"{text}\n{DASH} {NAME} {b64(sig + bytes(1))}\n",
     "signature does not verify with the verifier key"),
    ("key-id-only-and-one-byte", lambda text, good, sig: f"{text}\n{DASH} {NAME} {b64(sig[:5])}\n",
     "signature does not verify with the verifier key"),
    ("truncated-then-good", lambda text, good, sig: f"{text}\n{DASH} {NAME} {b64(sig[:67])}\n"
     + KEY.signature_line(text), None),
    ("second-line-bad", lambda text, good, sig: f"{good}- junk\n", "malformed signature line"),
    ("base64-with-junk", lambda text, good, sig: f"{text}\n{DASH} {NAME} {b64(sig)[:8]}*{b64(sig)[8:]}\n",
     "malformed signature line"),
]


@pytest.mark.parametrize(("make", "detail"), [pytest.param(m, d, id=i) for i, m, d in MALFORMED_NOTES])
def test_a_malformed_signed_checkpoint(full: Bundle, make: Callable[[str, str, bytes], str],
                                      detail: str | None) -> None:
    text = checkpoint_text(7, full.root())
    good = KEY.sign(text)
    sig = base64.b64decode(good.rsplit(" ", 1)[1])
    assert len(sig) == 68
    full.write("checkpoint.txt", make(text, good, sig))
    assert full.verify() == (ok_verdict(full) if detail is None else verdict(kind="SIG_INVALID", detail=detail))


@pytest.mark.parametrize(("vkey", "message"), [
    ("nonsense", "malformed verifier key: expected <name>+<8 hex>+<base64>"),
    (f"+{KEY.kid.hex()}+{b64(b'x')}", "malformed verifier key: expected <name>+<8 hex>+<base64>"),
    (f"{NAME}+{KEY.kid.hex()}0+AAAA", "malformed verifier key: expected <name>+<8 hex>+<base64>"),
    (f"{NAME}+{KEY.kid.hex()[:7]}+AAAA", "malformed verifier key: expected <name>+<8 hex>+<base64>"),
    (f"{NAME}+{KEY.kid.hex()}", "malformed verifier key: expected <name>+<8 hex>+<base64>"),
    (f"{NAME}+zzzzzzzz+{key_b64(KEY.public)}",
     "malformed verifier key: non-hexadecimal number found in fromhex() arg at position 0"),
    (f"{NAME}+{KEY.kid.hex()}+AV*x", "malformed verifier key: Only base64 data is allowed"),
    (f"{NAME}+{KEY.kid.hex()}+{key_b64(KEY.public[:31])}",
     "malformed verifier key: not an Ed25519 (type 0x01) key"),
    (f"{NAME}+{KEY.kid.hex()}+{key_b64(KEY.public + bytes(1))}",
     "malformed verifier key: not an Ed25519 (type 0x01) key"),
    (f"{NAME}+{KEY.kid.hex()}+{key_b64(KEY.public, bytes([2]))}", "malformed verifier key: not an Ed25519 (type 0x01) key"),
    (f"{NAME}+{ATTACKER.kid.hex()}+{key_b64(KEY.public)}",
     "malformed verifier key: key id does not match name and key"),
    (f"alertengine/other+{KEY.kid.hex()}+{key_b64(KEY.public)}",
     "malformed verifier key: key id does not match name and key"),
])
def test_a_malformed_pinned_key_cannot_run(full: Bundle, vkey: str, message: str) -> None:
    with pytest.raises(ValueError) as caught:
        full.verify(vkey)
    assert str(caught.value) == message
    with pytest.raises(ValueError) as caught:
        VerifierKey.parse(vkey)
    assert str(caught.value) == message


def test_an_unpinned_bundle_without_a_key_cannot_run(full: Bundle) -> None:
    m = full.manifest
    del m["vkey"]
    full.manifest = m
    with pytest.raises(ValueError, match=r"^malformed verifier key: expected <name>\+<8 hex>\+<base64>$"):
        full.verify(None)


def test_verifier_keys_parse_print_and_verify() -> None:
    key = VerifierKey.parse("  " + VKEY + "\n")
    assert key == VerifierKey(NAME, KEY.kid, KEY.public)
    assert key.text() == VKEY
    assert V.key_id(NAME, KEY.public) == KEY.kid
    assert key.verify(b"message", KEY.private.sign(b"message")) is True
    assert key.verify(b"message", ATTACKER.private.sign(b"message")) is False
    assert key.verify(b"other", KEY.private.sign(b"message")) is False
    with pytest.raises(dataclasses.FrozenInstanceError):
        key.name = "x"  # type: ignore[misc]


def test_open_note_and_its_signer() -> None:
    text = checkpoint_text(7, bytes(32))
    key = VerifierKey.parse(VKEY)
    assert open_note(KEY.sign(text), key) == text
    assert note_signer(STRANGER.sign(text)) == STRANGER.name
    two = text + "\n" + STRANGER.signature_line(text) + ATTACKER.signature_line(text)
    assert note_signer(two) == STRANGER.name
    with pytest.raises(NoteError) as caught:
        open_note(two, key)
    untrusted = (f"signed by {STRANGER.name}+{STRANGER.kid.hex()}, {NAME}+{ATTACKER.kid.hex()}, "
                 f"not by the pinned key {NAME}+{KEY.kid.hex()}")
    assert (caught.value.kind, caught.value.detail, str(caught.value)) == ("KEY_UNTRUSTED", untrusted, untrusted)
    # the right key id under another name is not the pinned key either
    renamed = text + "\n" + f"{DASH} other {b64(KEY.kid + KEY.private.sign(text.encode()))}\n"
    with pytest.raises(NoteError) as caught:
        open_note(renamed, key)
    assert caught.value.kind == "KEY_UNTRUSTED"
    parsed_text, sigs = split_note(KEY.sign(text))
    assert parsed_text == text
    assert sigs == [(NAME, KEY.kid, KEY.private.sign(text.encode()))]


def test_parse_checkpoint_reads_origin_size_and_root_and_allows_extension_lines() -> None:
    root = sha(b"root")
    cp = parse_checkpoint(f"{NAME}\n42\n{b64(root)}\nextension line\n")
    assert cp == Checkpoint(NAME, 42, root)
    assert parse_checkpoint(f"{NAME}\n0\n{b64(root)}\n") == Checkpoint(NAME, 0, root)
    with pytest.raises(dataclasses.FrozenInstanceError):
        cp.size = 1  # type: ignore[misc]
    for bad in (f"{NAME}\n42\n{b64(root)}", "\n\n\n", f"{NAME}\n42\n"):
        with pytest.raises(NoteError):
            parse_checkpoint(bad)


def test_base64_is_strict() -> None:
    assert unb64(b64(b"\x00\xff")) == b"\x00\xff"
    with pytest.raises(ValueError):
        unb64("AA!A")
    with pytest.raises(ValueError):
        unb64("AP!8=")  # a lenient decoder would skip the "!" and return b"\x00\xff"
    assert V.b64(b"\x00\xff") == "AP8="


def test_a_verification_failure_says_where() -> None:
    assert str(VerificationFailure("SEQ_GAP", 3, "entries 3..4 are missing")) == "SEQ_GAP at seq 3: entries 3..4 are missing"
    assert str(VerificationFailure("SEQ_GAP", 0, "x")) == "SEQ_GAP at seq 0: x"
    assert str(VerificationFailure("ROOT_MISMATCH", None, "x")) == "ROOT_MISMATCH: x"
    failure = VerificationFailure("K", 1, "d")
    assert (failure.kind, failure.seq, failure.detail) == ("K", 1, "d")


# --- entries: form --------------------------------------------------------------------------------------

def body(obj: dict) -> bytes:
    return canon(obj)


ENTRY = VECTOR_LOG[3]


@pytest.mark.parametrize("field", V.REQUIRED_FIELDS)
def test_every_required_field(field: str) -> None:
    obj = {k: v for k, v in ENTRY.items() if k != field}
    with pytest.raises(VerificationFailure) as caught:
        parse_entry(canon(obj), 3)
    assert (caught.value.kind, caught.value.seq, caught.value.detail) == ("ENCODING", 3, f"missing field(s): {field}")


def test_the_required_fields_are_exactly_the_formats() -> None:
    assert V.REQUIRED_FIELDS == ("v", "seq", "prev", "tenant", "tseq", "tprev", "ts", "event_id", "kind", "incident",
                                 "stage", "actor", "decision", "reason", "confidence", "policy_version", "data")
    with pytest.raises(VerificationFailure) as caught:
        parse_entry(canon({"v": 1, "seq": 0}), None)
    assert caught.value.detail == ("missing field(s): prev, tenant, tseq, tprev, ts, event_id, kind, incident, stage, "
                                   "actor, decision, reason, confidence, policy_version, data")


@pytest.mark.parametrize(("raw", "where", "seq", "detail"), [
    (b"", 4, 4, "not JSON"),
    (b"   ", 4, 4, "not JSON"),
    (b"\xff\xfe", 4, 4, "not JSON: 'utf-8' codec can't decode byte 0xff in position 0: invalid start byte"),
    (b'{"v": 1', 4, 4, "not JSON: Expecting ',' delimiter: line 1 column 8 (char 7)"),
    (canon(ENTRY) + b" ", 4, 4, "not JSON: trailing data after the JSON object"),
    (canon(ENTRY) + b"\r", 4, 4, "not JSON: trailing data after the JSON object"),
    (canon(ENTRY) + b"{}", None, None, "not JSON: trailing data after the JSON object"),
    (b"[1, 2]", 4, 4, "entry is not a JSON object"),
    (b'"text"', 4, 4, "entry is not a JSON object"),
    (canon({**ENTRY, "v": 2}), 4, 4, "unsupported format version 2"),
    (canon({**ENTRY, "v": "1"}), 4, 4, "unsupported format version '1'"),
    (canon({**ENTRY, "v": 0}), 4, 4, "unsupported format version 0"),
    (canon({**ENTRY, "seq": -1}), 4, 4, "seq is not a non-negative integer"),
    (canon({**ENTRY, "seq": 3.0}), 4, 4, "seq is not a non-negative integer"),
    (canon({**ENTRY, "seq": True}), 4, 4, "seq is not a non-negative integer"),
    (canon({**ENTRY, "seq": "3"}), 4, 4, "seq is not a non-negative integer"),
    (canon({**ENTRY, "tseq": -1}), 4, 4, "tseq is not a non-negative integer"),
    (canon({**ENTRY, "tseq": None}), 4, 4, "tseq is not a non-negative integer"),
    (canon({**ENTRY, "data": []}), 4, 4, "data is not an object"),
    (canon({**ENTRY, "data": None}), 4, 4, "data is not an object"),
    (canon(ENTRY).replace(b'"actor":"policy",', b'"actor":"policy", '), 9, 3,
     "stored bytes are not the canonical serialisation"),
    (canon(ENTRY).replace(b'"v":1}', b'"v":1,"v":1}'), 9, 3, "stored bytes are not the canonical serialisation"),
    (json.dumps(dict(reversed(list(ENTRY.items()))), separators=(",", ":"), ensure_ascii=False).encode(), 9, 3,
     "stored bytes are not the canonical serialisation"),
    (json.dumps(ENTRY, sort_keys=True, separators=(",", ":")).encode(), 9, 3,
     "stored bytes are not the canonical serialisation"),
    (canon({**ENTRY, "data": {"x": 1}}).replace(b'{"x":1}', b'{"x":NaN}'), 9, 3,
     "stored bytes are not the canonical serialisation"),
    (canon({**ENTRY, "data": {"x": 1}}).replace(b'{"x":1}', b'{"x":Infinity}'), 9, 3,
     "stored bytes are not the canonical serialisation"),
    (canon({**ENTRY, "data": {"x": 1.0}}).replace(b'1.0', b'1.00'), 9, 3,
     "stored bytes are not the canonical serialisation"),
])
def test_an_entry_not_in_canonical_form(raw: bytes, where: int | None, seq: int | None, detail: str) -> None:
    with pytest.raises(VerificationFailure) as caught:
        parse_entry(raw, where)
    assert (caught.value.kind, caught.value.seq, caught.value.detail) == ("ENCODING", seq, detail)


@pytest.mark.parametrize("version", [b"true", b"1.0"])
def test_only_the_integer_1_is_format_version_1(version: bytes) -> None:
    raw = canon(ENTRY).replace(b'"v":1}', b'"v":' + version + b"}")
    with pytest.raises(VerificationFailure) as caught:
        parse_entry(raw, 3)
    assert (caught.value.kind, caught.value.detail) == ("ENCODING", f"unsupported format version {json.loads(version)!r}")


def test_the_canonical_form_is_accepted_unchanged() -> None:
    for obj in VECTOR_LOG:
        assert parse_entry(canon(obj), None) == obj
    weird = {**ENTRY, "seq": 0, "tseq": 0, "data": {"f": 1.5, "e": 1e-07, "big": 10**30, "s": "\u00e9\n\t\"\\",
                                                    "emoji": "\U0001f600", "ctl": "\x01", "list": [None, True, {}]}}
    assert parse_entry(canon(weird), 0) == weird


def test_the_entry_size_limit_is_64_kib() -> None:
    def sized(n: int) -> bytes:
        obj = {**ENTRY, "reason": ""}
        obj["reason"] = "r" * (n - len(canon(obj)))
        raw = canon(obj)
        assert len(raw) == n
        return raw
    assert parse_entry(sized(65_536), 7)["v"] == 1
    with pytest.raises(VerificationFailure) as caught:
        parse_entry(sized(65_537), 7)
    assert (caught.value.kind, caught.value.seq, caught.value.detail) == (
        "ENCODING", 7, "entry of 65537 bytes exceeds 65536")


def test_a_malformed_entry_in_a_bundle_reports_where_it_stands(full: Bundle) -> None:
    lines = full.lines()
    full.set_lines(lines[:2] + [b""] + lines[3:])
    assert full.verify() == after_checkpoint(full, "ENCODING", 2, "not JSON", 2)
    full.set_lines([b"[]"] + lines[1:])
    assert full.verify() == after_checkpoint(full, "ENCODING", None, "entry is not a JSON object", 0)


# --- entries: chains (the checker on its own) ---------------------------------------------------------------

def feed(checker: ChainChecker, objs: list[dict]) -> None:
    for obj in objs:
        checker.add(obj, leaf(canon(obj)))


def failure(checker: ChainChecker, objs: list[dict]) -> tuple[str, int | None, str]:
    with pytest.raises(VerificationFailure) as caught:
        feed(checker, objs)
    return caught.value.kind, caught.value.seq, caught.value.detail


LOG = VECTOR_LOG
ACME = [o for o in LOG if o["tenant"] == "acme"]


def relink(obj: dict, **changes: Any) -> dict:
    return {**obj, **changes}


def test_a_checker_follows_every_chain_and_remembers_the_ends() -> None:
    checker = ChainChecker()
    feed(checker, LOG)
    assert (checker.first, checker.last, checker.last_seq) == (LOG[0], LOG[-1], 6)
    assert checker.last_leaf == leaf(canon(LOG[-1]))
    assert checker.tenant_last == {t: (o["tseq"], leaf(canon(o))) for t, o in
                                   (("acme", LOG[6]), ("globex", LOG[5]), ("_system", LOG[3]))}
    scoped = ChainChecker(tenant_scope="acme", contiguous_seq=False)
    feed(scoped, ACME)
    assert (scoped.first, scoped.last, scoped.last_tseq) == (ACME[0], ACME[-1], 3)
    assert ChainChecker().contiguous_seq is True and ChainChecker().tenant_scope is None


@pytest.mark.parametrize(("objs", "expected"), [
    ([relink(LOG[0], prev="11" * 32)], ("CHAIN_BREAK", 0, "first entry's prev is not 64 zeros")),
    ([LOG[0], LOG[1], LOG[1]], ("CHAIN_BREAK", 1, "seq 1 does not ascend after 1")),
    ([LOG[0], LOG[2], LOG[1]], ("SEQ_GAP", 1, "entries 1..1 are missing")),
    ([LOG[0], LOG[1], relink(LOG[2], seq=0)], ("CHAIN_BREAK", 0, "seq 0 does not ascend after 1")),
    ([LOG[0], LOG[1], LOG[4]], ("SEQ_GAP", 2, "entries 2..3 are missing")),
    ([LOG[0], relink(LOG[1], prev=ZERO)], ("CHAIN_BREAK", 1, "prev is not the leaf hash of the previous entry")),
    ([LOG[0], LOG[1], relink(LOG[2], tseq=2)],
     ("TENANT_CHAIN_BREAK", 2, "tenant 'acme': expected tseq 1 linked to its previous entry")),
    ([LOG[0], LOG[1], relink(LOG[2], tprev=ZERO)],
     ("TENANT_CHAIN_BREAK", 2, "tenant 'acme': expected tseq 1 linked to its previous entry")),
    ([LOG[0], relink(LOG[1], tseq=1)],
     ("TENANT_CHAIN_BREAK", 1, "tenant 'globex': expected tseq 0 linked to its previous entry")),
    ([LOG[0], relink(LOG[1], tprev=LOG[1]["prev"])],
     ("TENANT_CHAIN_BREAK", 1, "tenant 'globex': expected tseq 0 linked to its previous entry")),
    ([relink(LOG[0], tseq=1)], ("TENANT_CHAIN_BREAK", 0, "tenant 'acme': expected tseq 0 linked to its previous entry")),
])
def test_a_global_checker_refuses(objs: list[dict], expected: tuple) -> None:
    # relinked copies keep their leaf as computed from their own (altered) bytes
    assert failure(ChainChecker(), objs) == expected


def test_a_global_checker_takes_a_later_start_as_given_but_then_follows_every_tenant() -> None:
    checker = ChainChecker()
    feed(checker, LOG[3:])  # starts at seq 3: each tenant's first entry here is taken as given
    assert checker.first == LOG[3]
    # globex's first entry in a late bundle is taken as given, whatever its tseq and tprev
    given = ChainChecker()
    feed(given, [LOG[3], LOG[4]])
    odd = relink(LOG[5], tseq=9, tprev="22" * 32, prev=leaf(canon(LOG[4])).hex())
    given.add(odd, leaf(canon(odd)))
    follow = relink(LOG[6], prev=leaf(canon(odd)).hex())
    given.add(follow, leaf(canon(follow)))  # acme continues from LOG[4]
    assert given.tenant_last["globex"] == (9, leaf(canon(odd)))
    bad = relink(LOG[6], tseq=4)
    with pytest.raises(VerificationFailure) as caught:
        feed(ChainChecker(), [LOG[3], LOG[4], LOG[5], bad])
    assert (caught.value.kind, caught.value.seq) == ("TENANT_CHAIN_BREAK", 6)
    assert caught.value.detail == "tenant 'acme': expected tseq 3 linked to its previous entry"
    not_adjacent = ChainChecker(contiguous_seq=False)
    feed(not_adjacent, [LOG[0], relink(LOG[2], prev="33" * 32)])  # prev is only checked between neighbours
    assert not_adjacent.last_seq == 2


@pytest.mark.parametrize(("objs", "expected"), [
    ([LOG[0], LOG[1]], ("SCOPE_VIOLATION", 1, "entry of tenant 'globex' in a bundle for 'acme'")),
    ([relink(ACME[0], tprev="11" * 32)], ("TENANT_CHAIN_BREAK", 0, "tenant's first entry has a non-zero tprev")),
    ([ACME[0], ACME[2]], ("TENANT_CHAIN_BREAK", 4, "tseq 2 / tprev do not follow tseq 0")),
    ([ACME[0], relink(ACME[1], tprev=ZERO)], ("TENANT_CHAIN_BREAK", 2, "tseq 1 / tprev do not follow tseq 0")),
    ([ACME[0], ACME[1], ACME[1]], ("CHAIN_BREAK", 2, "seq 2 does not ascend after 2")),
    ([ACME[0], relink(ACME[1], seq=1)], ("CHAIN_BREAK", 1, "prev is not the leaf hash of the previous entry")),
])
def test_a_tenant_checker_refuses(objs: list[dict], expected: tuple) -> None:
    assert failure(ChainChecker(tenant_scope="acme", contiguous_seq=False), objs) == expected


def test_a_tenant_checker_takes_a_later_first_entry_as_given() -> None:
    checker = ChainChecker(tenant_scope="acme", contiguous_seq=False)
    feed(checker, ACME[1:])
    assert (checker.first, checker.last_tseq) == (ACME[1], 3)
    shifted = relink(ACME[1], tprev="44" * 32)
    later = ChainChecker(tenant_scope="acme", contiguous_seq=False)
    later.add(shifted, leaf(canon(shifted)))  # tseq 1: its tprev cannot be checked here
    assert later.last_tseq == 1


# --- entries: chains, sequence and scope in a bundle ----------------------------------------------------------

def test_an_edited_entry_with_a_new_manifest_hash_breaks_the_next_link(full: Bundle) -> None:
    lines = full.lines()
    full.set_lines(lines[:2] + [lines[2].replace(b"vector entry 2", b"vector entry X")] + lines[3:])
    assert full.verify() == after_checkpoint(full, "CHAIN_BREAK", 3, "prev is not the leaf hash of the previous entry", 3)


def test_a_deleted_entry_is_a_gap_at_the_first_missing_seq(full: Bundle) -> None:
    lines = full.lines()
    full.set_lines(lines[:3] + lines[5:])
    assert full.verify() == after_checkpoint(full, "SEQ_GAP", 3, "entries 3..4 are missing", 3)


def test_swapped_entries_do_not_ascend(full: Bundle) -> None:
    lines = full.lines()
    full.set_lines(lines[:3] + [lines[4], lines[3]] + lines[5:])
    assert full.verify() == after_checkpoint(full, "SEQ_GAP", 3, "entries 3..3 are missing", 3)
    full.set_lines(lines[:4] + [lines[3]] + lines[4:])
    assert full.verify() == after_checkpoint(full, "CHAIN_BREAK", 3, "seq 3 does not ascend after 3", 4)


def test_a_rewritten_first_entry_must_start_from_zeros(full: Bundle) -> None:
    full.set_lines([canon({**LOG[0], "prev": "ab" * 32})] + full.lines()[1:])
    assert full.verify() == after_checkpoint(full, "CHAIN_BREAK", 0, "first entry's prev is not 64 zeros", 0)


def test_a_rewritten_history_with_every_link_intact_is_a_root_mismatch(tmp_path: Path) -> None:
    forged_log = chain([{**{k: v for k, v in o.items() if k not in ("seq", "prev", "tseq", "tprev")},
                         "reason": "rewritten"} for o in VECTOR_LOG])
    b = make_bundle(tmp_path / "b")
    b.set_lines([canon(o) for o in forged_log])
    assert b.verify() == after_checkpoint(b, "ROOT_MISMATCH", None,
                                          "the entries' Merkle root differs from the signed checkpoint", 7)


def test_a_broken_tenant_chain_in_a_global_bundle(full: Bundle) -> None:
    lines = full.lines()
    obj = json.loads(lines[4])
    obj["tprev"] = ZERO
    full.set_lines(lines[:4] + [canon(obj)] + lines[5:])
    assert full.verify() == after_checkpoint(
        full, "TENANT_CHAIN_BREAK", 4, "tenant 'acme': expected tseq 2 linked to its previous entry", 4)


def test_a_tenant_bundle_with_a_broken_tenant_chain(acme: Bundle) -> None:
    lines = acme.lines()
    obj = json.loads(lines[2])
    obj["tseq"] = 5
    acme.set_lines(lines[:2] + [canon(obj)] + lines[3:])
    assert acme.verify() == after_checkpoint(acme, "TENANT_CHAIN_BREAK", 4, "tseq 5 / tprev do not follow tseq 1", 2)


def test_another_tenants_entry_in_a_tenant_bundle(acme: Bundle) -> None:
    lines = acme.lines()
    acme.set_lines(lines[:1] + [canon(LOG[1])] + lines[1:])
    assert acme.verify() == after_checkpoint(acme, "SCOPE_VIOLATION", 1,
                                             "entry of tenant 'globex' in a bundle for 'acme'", 1)


def test_an_entry_beyond_the_checkpoint(tmp_path: Path) -> None:
    b = make_bundle(tmp_path / "b", log_of(9), size=7)
    assert b.verify() == after_checkpoint(b, "SCOPE_VIOLATION", 7, "entry beyond the checkpoint's size 7", 7)


def test_an_entry_exactly_at_the_checkpoint_size_is_beyond_it(tmp_path: Path) -> None:
    b = make_bundle(tmp_path / "b", log_of(8), size=7)
    assert b.verify() == after_checkpoint(b, "SCOPE_VIOLATION", 7, "entry beyond the checkpoint's size 7", 7)


def test_an_empty_bundle(full: Bundle) -> None:
    full.set_lines([])
    assert full.verify() == after_checkpoint(full, "SCOPE_VIOLATION", None, "the bundle holds no entries")


# --- entries: inclusion and the Merkle root --------------------------------------------------------------------

def test_a_global_bundle_without_proofs_must_start_at_zero(full: Bundle) -> None:
    full.set_lines(full.lines()[1:])
    assert full.verify() == after_checkpoint(
        full, "PROOF_INVALID", None,
        "bundle omits proofs.jsonl but does not hold every entry 0..N-1 of the checkpoint", 6)


def test_a_global_bundle_without_proofs_must_reach_the_checkpoint(tmp_path: Path) -> None:
    b = make_bundle(tmp_path / "b", log_of(9), size=9)
    b.set_lines(b.lines()[:8])
    assert b.verify() == after_checkpoint(
        b, "PROOF_INVALID", None, "bundle omits proofs.jsonl but does not hold every entry 0..N-1 of the checkpoint", 8)


def test_a_checkpoint_over_a_different_root(full: Bundle) -> None:
    full.write("checkpoint.txt", KEY.sign(checkpoint_text(7, sha(b"another history"))))
    assert full.verify() == verdict(kind="ROOT_MISMATCH", detail=(
        "the entries' Merkle root differs from the signed checkpoint"), entries_checked=7, checkpoint_size=7,
        root=b64(sha(b"another history")))


@pytest.mark.parametrize("size", [1, 2, 3, 4, 5, 6, 7])
def test_every_prefix_of_the_log_verifies_as_a_global_bundle(tmp_path: Path, size: int) -> None:
    b = make_bundle(tmp_path / "b", VECTOR_LOG[:size])
    assert b.verify() == ok_verdict(b)


@pytest.mark.parametrize("size", [9, 12, 16, 17, 33])
def test_longer_logs_verify_and_one_changed_leaf_does_not(tmp_path: Path, size: int) -> None:
    b = make_bundle(tmp_path / "b", log_of(size))
    assert b.verify() == ok_verdict(b)
    last = json.loads(b.lines()[-1])
    last["reason"] = "changed"
    b.set_lines(b.lines()[:-1] + [canon(last)])
    assert b.verify()["kind"] == "ROOT_MISMATCH"


def test_a_global_bundle_with_proofs_may_stop_early_and_says_so(tmp_path: Path) -> None:
    b = make_bundle(tmp_path / "b", log_of(9), size=9, select=lambda o: 2 <= o["seq"] <= 5, proofs=True)
    assert b.verify() == ok_verdict(b, complete=False)
    assert b.verify()["covers"] == {"from_seq": 2, "to_seq": 5, "from_tseq": None, "to_tseq": None}
    whole = make_bundle(tmp_path / "w", log_of(9), size=9, proofs=True)
    assert whole.verify() == ok_verdict(whole, complete=True)


@pytest.mark.parametrize("size", [1, 5, 8, 11])
def test_a_tenant_bundle_with_proofs_for_every_size(tmp_path: Path, size: int) -> None:
    b = make_bundle(tmp_path / "b", log_of(max(size, 11)), size=size, tenant="acme",
                    select=lambda o: o["tenant"] == "acme" and o["seq"] < size)
    assert b.verify() == ok_verdict(b)


def test_a_missing_inclusion_proof(acme: Bundle) -> None:
    lines = acme.read("proofs.jsonl").splitlines()
    acme.write("proofs.jsonl", b"".join(line + b"\n" for line in lines if b'"seq": 4' not in line))
    assert acme.verify() == after_checkpoint(acme, "PROOF_INVALID", 4, "no inclusion proof for this entry", 2)
    acme.write("proofs.jsonl", b"")
    assert acme.verify() == after_checkpoint(acme, "PROOF_INVALID", 0, "no inclusion proof for this entry", 0)


@pytest.mark.parametrize("change", ["short", "long", "empty"])
def test_a_malformed_inclusion_proof(acme: Bundle, change: str) -> None:
    proofs = [json.loads(line) for line in acme.read("proofs.jsonl").splitlines()]
    path = proofs[2]["path"]
    proofs[2]["path"] = {"short": path[:-1], "long": path + path[:1], "empty": []}[change]
    acme.write("proofs.jsonl", "".join(json.dumps(p) + "\n" for p in proofs))
    assert acme.verify() == after_checkpoint(acme, "PROOF_INVALID", 4, "malformed inclusion proof", 2)


def test_an_inclusion_proof_to_another_root(acme: Bundle) -> None:
    proofs = [json.loads(line) for line in acme.read("proofs.jsonl").splitlines()]
    proofs[1]["path"][0] = b64(sha(b"x"))
    acme.write("proofs.jsonl", "".join(json.dumps(p) + "\n" for p in proofs))
    assert acme.verify() == after_checkpoint(
        acme, "ROOT_MISMATCH", 2, "entry and inclusion proof do not lead to the checkpoint's root", 1)


def test_an_edited_entry_in_a_tenant_bundle_with_its_chain_repaired(acme: Bundle) -> None:
    lines = acme.lines()
    obj = json.loads(lines[3])
    obj["reason"] = "edited"
    acme.set_lines(lines[:3] + [canon(obj)])
    assert acme.verify() == after_checkpoint(
        acme, "ROOT_MISMATCH", 6, "entry and inclusion proof do not lead to the checkpoint's root", 3)


# --- scope bounds and the tenant head ---------------------------------------------------------------------------

@pytest.mark.parametrize(("key", "value", "bad"), [
    ("from_seq", 1, 0), ("to_seq", 5, 6), ("from_seq", None, 0), ("to_seq", 7, 6),
])
def test_the_manifest_scope_must_match_a_global_bundles_entries(full: Bundle, key: str, value: Any, bad: int) -> None:
    full.rehash(**{key: value})
    expected = {"from_seq": 0, "to_seq": 6, "from_tseq": None, "to_tseq": None}
    assert full.verify() == after_entries(full, "SCOPE_VIOLATION", bad,
                                          f"entries cover {key}={expected[key]}, manifest scope says {value}")


@pytest.mark.parametrize(("key", "value", "bad"), [
    ("from_seq", 2, 0), ("to_seq", 4, 6), ("from_tseq", 1, 0), ("to_tseq", 2, 6), ("to_tseq", None, 6),
])
def test_the_manifest_scope_must_match_a_tenant_bundles_entries(acme: Bundle, key: str, value: Any, bad: int) -> None:
    acme.rehash(**{key: value})
    expected = {"from_seq": 0, "to_seq": 6, "from_tseq": 0, "to_tseq": 3}
    assert acme.verify() == after_entries(acme, "SCOPE_VIOLATION", bad,
                                          f"entries cover {key}={expected[key]}, manifest scope says {value}")


def test_a_global_bundle_claiming_tenant_sequence_numbers(full: Bundle) -> None:
    full.rehash(from_tseq=0)
    assert full.verify() == after_entries(full, "SCOPE_VIOLATION", 0, "entries cover from_tseq=None, manifest scope says 0")


def test_a_tenant_bundle_without_its_head(acme: Bundle) -> None:
    acme.remove("tenant-head.txt", unlist=True)
    assert acme.verify() == after_entries(acme, "TENANT_HEAD_MISMATCH", None, "tenant bundle without tenant-head.txt")


@pytest.mark.parametrize("text", [
    f"{NAME}/tenant/globex\n4\n{{leaf}}\n",
    "alertengine/0000000000000000/tenant/acme\n4\n{leaf}\n",
    f"{NAME}/tenant/acme\n4\n{{leaf}}\nextra\n",
    f"{NAME}/tenant/acme\n4\n",
])
def test_a_tenant_head_of_another_log_or_tenant(acme: Bundle, text: str) -> None:
    acme.write("tenant-head.txt", KEY.sign(text.format(leaf=b64(leaf(canon(ACME[-1]))))))
    assert acme.verify() == after_entries(acme, "TENANT_HEAD_MISMATCH", None, "tenant head names another log or tenant")


def test_a_tenant_head_signed_by_another_key(acme: Bundle) -> None:
    acme.write("tenant-head.txt", ATTACKER.sign(f"{NAME}/tenant/acme\n4\n{b64(leaf(canon(ACME[-1])))}\n"))
    assert acme.verify() == after_entries(acme, "KEY_UNTRUSTED", None, (
        f"signed by {NAME}+{ATTACKER.kid.hex()}, not by the pinned key {NAME}+{KEY.kid.hex()}"))


def test_entries_beyond_the_signed_tenant_head(acme: Bundle) -> None:
    acme.write("tenant-head.txt", KEY.sign(f"{NAME}/tenant/acme\n3\n{b64(leaf(canon(ACME[2])))}\n"))
    assert acme.verify() == after_entries(acme, "TENANT_HEAD_MISMATCH", 6, "entries go beyond the signed tenant head")


def test_a_last_entry_that_is_not_the_signed_tenant_head(acme: Bundle) -> None:
    acme.write("tenant-head.txt", KEY.sign(f"{NAME}/tenant/acme\n4\n{b64(leaf(canon(ACME[2])))}\n"))
    assert acme.verify() == after_entries(acme, "TENANT_HEAD_MISMATCH", 6, "last entry differs from the signed tenant head")


def test_a_tenant_bundle_that_stops_before_its_head_is_incomplete(acme: Bundle) -> None:
    lines = acme.lines()
    acme.set_lines(lines[:3])
    acme.rehash(to_seq=4, to_tseq=2)
    assert acme.verify() == ok_verdict(acme, complete=False)
    assert acme.verify()["detail"] == ("3 entries verified against checkpoint 7; "
                                       "the bundle is INCOMPLETE: it stops before the end of what it could hold")


def test_a_tenant_bundle_that_starts_late_is_complete_if_it_reaches_the_head(acme: Bundle) -> None:
    lines = acme.lines()
    acme.set_lines(lines[2:])
    acme.rehash(from_seq=4, from_tseq=2)
    assert acme.verify() == ok_verdict(acme, complete=True)


def test_a_tenant_head_with_a_larger_count_than_the_bundle_reaches(acme: Bundle) -> None:
    acme.write("tenant-head.txt", KEY.sign(f"{NAME}/tenant/acme\n5\n{b64(sha(b'a later entry'))}\n"))
    assert acme.verify() == ok_verdict(acme, complete=False)


# --- consistency with earlier checkpoints ---------------------------------------------------------------------

@pytest.mark.parametrize("old", [1, 2, 3, 4, 5, 6, 7])
def test_the_bundles_own_earlier_checkpoints_must_be_prefixes(full: Bundle, old: int) -> None:
    full.add_checkpoint(f"checkpoints/{old:08d}.txt", old)
    assert full.verify() == ok_verdict(full)
    full.add_checkpoint(f"checkpoints/{old:08d}.txt", old, root=sha(b"fork"))
    assert full.verify() == after_entries(
        full, "FORK", None, f"checkpoints/{old:08d}.txt (size {old}) is not consistent with the checkpoint",
        complete=True)


def test_an_earlier_checkpoint_larger_than_the_bundles(full: Bundle) -> None:
    note = full.add_checkpoint("checkpoints/00000009.txt", 9, root=sha(b"later"))
    assert full.verify() == after_entries(full, "ROLLBACK", None,
                                          "checkpoints/00000009.txt has size 9, larger than this bundle's 7", complete=True)
    full.remove("checkpoints/00000009.txt", unlist=True)
    assert full.verify(held=note) == after_entries(
        full, "ROLLBACK", None, "held checkpoint has size 9, larger than this bundle's 7", complete=True)


def test_an_earlier_checkpoint_of_another_log(full: Bundle) -> None:
    full.add_checkpoint("checkpoints/00000003.txt", 3, origin="alertengine/0000000000000000")
    assert full.verify() == after_entries(
        full, "KEY_UNTRUSTED", None, "checkpoints/00000003.txt belongs to log 'alertengine/0000000000000000'",
        complete=True)


def test_an_earlier_checkpoint_signed_by_another_key(full: Bundle) -> None:
    full.add_checkpoint("checkpoints/00000003.txt", 3, key=ATTACKER)
    assert full.verify() == after_entries(full, "KEY_UNTRUSTED", None, (
        f"signed by {NAME}+{ATTACKER.kid.hex()}, not by the pinned key {NAME}+{KEY.kid.hex()}"), complete=True)


def test_only_txt_files_under_checkpoints_are_earlier_checkpoints(full: Bundle) -> None:
    full.add_checkpoint("checkpoints/00000003.sig", 3, root=sha(b"fork"))
    full.add_checkpoint("old/00000003.txt", 3, root=sha(b"fork"))
    full.add_checkpoint("checkpoints.txt", 3, root=sha(b"fork"))
    assert full.verify() == ok_verdict(full)


def test_earlier_checkpoints_are_all_checked_in_order(full: Bundle) -> None:
    full.add_checkpoint("checkpoints/00000002.txt", 2)
    full.add_checkpoint("checkpoints/00000004.txt", 4, root=sha(b"fork"))
    full.add_checkpoint("checkpoints/00000005.txt", 5, root=sha(b"fork"))
    assert full.verify()["detail"] == "checkpoints/00000004.txt (size 4) is not consistent with the checkpoint"


@pytest.mark.parametrize("old", [1, 3, 7])
def test_a_held_checkpoint_is_checked_like_the_bundles_own(full: Bundle, old: int) -> None:
    good = KEY.sign(checkpoint_text(old, full.root(old)))
    assert full.verify(held=good) == ok_verdict(full)
    forked = KEY.sign(checkpoint_text(old, sha(b"fork")))
    assert full.verify(held=forked) == after_entries(
        full, "FORK", None, f"held checkpoint (size {old}) is not consistent with the checkpoint", complete=True)
    foreign = KEY.sign(checkpoint_text(old, full.root(old), origin="alertengine/0000000000000000"))
    assert full.verify(held=foreign)["detail"] == "held checkpoint belongs to log 'alertengine/0000000000000000'"
    with_bad_signature = ATTACKER.sign(checkpoint_text(old, full.root(old)))
    assert full.verify(held=with_bad_signature)["kind"] == "KEY_UNTRUSTED"


def test_a_held_checkpoint_that_is_not_a_signed_note(full: Bundle) -> None:
    assert full.verify(held="just text") == after_entries(
        full, "SIG_INVALID", None, "malformed signed note: no signature block", complete=True)


def _add_consistency(b: Bundle, proofs: dict[tuple[int, int], list[bytes]]) -> None:
    m = b.manifest
    m["files"]["consistency.jsonl"] = ""
    b.manifest = m
    b.write("consistency.jsonl", "".join(json.dumps({"old_size": o, "new_size": n, "path": [b64(h) for h in p]}) + "\n"
                                         for (o, n), p in proofs.items()))


@pytest.mark.parametrize("old", [1, 2, 3, 4, 5, 6])
def test_a_tenant_bundle_proves_consistency_with_its_earlier_checkpoints(acme: Bundle, old: int) -> None:
    leaves = acme.leaves()
    acme.add_checkpoint(f"checkpoints/{old:08d}.txt", old)
    _add_consistency(acme, {(old, 7): consistency(old, leaves), (1, 2): []})
    assert acme.verify() == ok_verdict(acme)
    held = KEY.sign(checkpoint_text(old, mth(leaves[:old])))
    assert acme.verify(held=held) == ok_verdict(acme)
    _add_consistency(acme, {(old, 7): consistency(old, leaves)[:-1] + [sha(b"x")]})
    assert acme.verify() == after_entries(
        acme, "FORK", None, f"checkpoints/{old:08d}.txt (size {old}) is not consistent with the checkpoint",
        complete=True)


def test_a_tenant_bundle_without_a_consistency_proof_for_its_own_checkpoint(acme: Bundle) -> None:
    acme.add_checkpoint("checkpoints/00000003.txt", 3)
    assert acme.verify() == after_entries(acme, "FORK", None,
                                          "checkpoints/00000003.txt: no consistency proof from size 3", complete=True)
    _add_consistency(acme, {(3, 8): consistency(3, acme.leaves())})  # a proof to another size does not count
    assert acme.verify()["detail"] == "checkpoints/00000003.txt: no consistency proof from size 3"


def test_a_held_checkpoint_without_a_proof_is_reported_not_failed(acme: Bundle) -> None:
    held = KEY.sign(checkpoint_text(3, acme.root(3)))
    assert acme.verify(held=held) == ok_verdict(
        acme, detail="no consistency proof from size 3 in this bundle; held checkpoint not checked")
    forked = KEY.sign(checkpoint_text(3, sha(b"fork")))
    _add_consistency(acme, {(3, 7): consistency(3, acme.leaves())})
    assert acme.verify(held=forked)["kind"] == "FORK"


def test_the_same_size_held_checkpoint_must_be_the_same_root(acme: Bundle) -> None:
    _add_consistency(acme, {(7, 7): []})
    assert acme.verify(held=KEY.sign(checkpoint_text(7, acme.root()))) == ok_verdict(acme)
    assert acme.verify(held=KEY.sign(checkpoint_text(7, sha(b"fork"))))["kind"] == "FORK"


# --- witness cosignatures (C2SP tlog-cosignature v1) ------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Witness:
    name: str
    private: Ed25519PrivateKey

    @property
    def public(self) -> bytes:
        return self.private.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)

    @property
    def kid(self) -> bytes:
        return sha(self.name.encode() + b"\n\x04" + self.public)[:4]

    @property
    def vkey(self) -> str:
        return f"{self.name}+{self.kid.hex()}+{key_b64(self.public, bytes([4]))}"

    def cosign(self, text: str, when: int, *, signed_time: int | None = None, extra: bytes = b"",
               name: str | None = None, kid: bytes | None = None) -> str:
        message = b"cosignature/v1\ntime %d\n" % (when if signed_time is None else signed_time) + text.encode()
        raw = (self.kid if kid is None else kid) + when.to_bytes(8, "big") + self.private.sign(message) + extra
        return f"{DASH} {self.name if name is None else name} {b64(raw)}\n"


W1 = Witness("witness.example/w1", Ed25519PrivateKey.from_private_bytes(bytes([3]) * 32))
W2 = Witness("witness.example/w2", Ed25519PrivateKey.from_private_bytes(bytes([4]) * 32))
T = 1_700_000_000


def cosigned(b: Bundle, *lines: str) -> None:
    """Append cosignature lines to the bundle's checkpoint note."""
    b.write("checkpoint.txt", b.read("checkpoint.txt").decode() + "".join(lines))


def text_of(b: Bundle) -> str:
    return checkpoint_text(b.size, b.root())


def test_required_witnesses_are_reported_in_order(full: Bundle) -> None:
    text = text_of(full)
    cosigned(full, W2.cosign(text, T + 5), W1.cosign(text, T))
    assert verify_bundle(str(full.path), VKEY, None, [W1.vkey, W2.vkey]).as_dict() == ok_verdict(
        full, witnessed=[{"witness": W1.name, "time": T}, {"witness": W2.name, "time": T + 5}])
    assert full.verify() == ok_verdict(full)  # cosignatures nobody asked for change nothing


@pytest.mark.parametrize(("line", "kind", "detail"), [
    (lambda text: "", "WITNESS_MISSING", "the checkpoint carries no cosignature of the witness witness.example/w1"),
    (lambda text: W2.cosign(text, T), "WITNESS_MISSING",
     "the checkpoint carries no cosignature of the witness witness.example/w1"),
    (lambda text: W1.cosign(text, T, kid=W2.kid), "WITNESS_MISSING",
     "the checkpoint carries no cosignature of the witness witness.example/w1"),
    (lambda text: W1.cosign(text, T, name="witness.example/other"), "WITNESS_MISSING",
     "the checkpoint carries no cosignature of the witness witness.example/w1"),
    (lambda text: W1.cosign(text, T, extra=b"\x00"), "WITNESS_INVALID",
     "the cosignature of witness.example/w1 has the wrong length"),
    (lambda text: f"{DASH} {W1.name} {b64(W1.kid + T.to_bytes(8, 'big') + bytes(63))}\n", "WITNESS_INVALID",
     "the cosignature of witness.example/w1 has the wrong length"),
    (lambda text: W1.cosign(text, 1 << 63), "WITNESS_INVALID",
     "the cosignature of witness.example/w1 has an impossible time"),
    (lambda text: W1.cosign(text, T, signed_time=T + 1), "WITNESS_INVALID",
     "the cosignature of witness.example/w1 does not verify"),
    (lambda text: W1.cosign(text.replace("\n7\n", "\n8\n"), T), "WITNESS_INVALID",
     "the cosignature of witness.example/w1 does not verify"),
    (lambda text: KEY.signature_line(text).replace(NAME, W1.name), "WITNESS_MISSING",
     "the checkpoint carries no cosignature of the witness witness.example/w1"),
])
def test_a_required_witness_that_did_not_cosign(full: Bundle, line: Callable[[str], str], kind: str,
                                                detail: str) -> None:
    cosigned(full, line(text_of(full)))
    result = verify_bundle(str(full.path), VKEY, None, [W1.vkey]).as_dict()
    assert result == after_checkpoint(full, kind, None, detail)


def test_the_latest_possible_cosignature_time_is_accepted(full: Bundle) -> None:
    cosigned(full, W1.cosign(text_of(full), (1 << 63) - 1))
    result = verify_bundle(str(full.path), VKEY, None, [W1.vkey]).as_dict()
    assert result == ok_verdict(full, witnessed=[{"witness": W1.name, "time": (1 << 63) - 1}])


def test_witnesses_are_checked_before_the_manifest_size_and_reported_on_failure(full: Bundle) -> None:
    cosigned(full, W1.cosign(text_of(full), T))
    m = full.manifest
    m["checkpoint_size"] = 5
    full.manifest = m
    assert verify_bundle(str(full.path), VKEY, None, [W1.vkey]).as_dict() == after_checkpoint(
        full, "MANIFEST_MISMATCH", None, "manifest checkpoint_size differs from the signed checkpoint",
        witnessed=[{"witness": W1.name, "time": T}])
    assert verify_bundle(str(full.path), VKEY, None, [W1.vkey, W2.vkey]).as_dict() == after_checkpoint(
        full, "WITNESS_MISSING", None, "the checkpoint carries no cosignature of the witness witness.example/w2",
        witnessed=[{"witness": W1.name, "time": T}])


@pytest.mark.parametrize(("wkey", "message"), [
    ("nonsense", "malformed witness key: expected <name>+<8 hex>+<base64>"),
    (f"+{W1.kid.hex()}+{key_b64(W1.public, bytes([4]))}", "malformed witness key: expected <name>+<8 hex>+<base64>"),
    (f"{W1.name}+{W1.kid.hex()}0+AAAA", "malformed witness key: expected <name>+<8 hex>+<base64>"),
    (f"{W1.name}+{W1.kid.hex()}", "malformed witness key: expected <name>+<8 hex>+<base64>"),
    (f"{W1.name}+zzzzzzzz+{key_b64(W1.public, bytes([4]))}",
     "malformed witness key: non-hexadecimal number found in fromhex() arg at position 0"),
    (f"{W1.name}+{W1.kid.hex()}+AV*x", "malformed witness key: Only base64 data is allowed"),
    (f"{W1.name}+{W1.kid.hex()}+{key_b64(W1.public)}",
     "malformed witness key: not an Ed25519 (type 0x04) key"),
    (f"{W1.name}+{W1.kid.hex()}+{key_b64(W1.public[:31], bytes([4]))}",
     "malformed witness key: not an Ed25519 (type 0x04) key"),
    (f"{W1.name}+{W1.kid.hex()}+{key_b64(W1.public + bytes(1), bytes([4]))}",
     "malformed witness key: not an Ed25519 (type 0x04) key"),
    (f"{W1.name}+{sha(W1.name.encode() + bytes([10, 1]) + W1.public)[:4].hex()}+{key_b64(W1.public, bytes([4]))}",
     "malformed witness key: key id does not match name and key"),
    (f"{W2.name}+{W1.kid.hex()}+{key_b64(W1.public, bytes([4]))}",
     "malformed witness key: key id does not match name and key"),
])
def test_a_malformed_witness_key_cannot_run(full: Bundle, wkey: str, message: str) -> None:
    with pytest.raises(ValueError) as caught:
        verify_bundle(str(full.path), VKEY, None, [W1.vkey, wkey])
    assert str(caught.value) == message


def test_witness_keys_parse_and_print() -> None:
    key = V.WitnessKey.parse(" " + W1.vkey + "\n")
    assert key == V.WitnessKey(W1.name, W1.kid, W1.public)
    assert key.text() == W1.vkey
    assert V.cosigner_key_id(W1.name, W1.public) == W1.kid != V.key_id(W1.name, W1.public)
    assert V.cosigned_message("a\n", 7) == b"cosignature/v1\ntime 7\na\n"
    with pytest.raises(dataclasses.FrozenInstanceError):
        key.name = "x"  # type: ignore[misc]


def test_verify_cosignature_on_its_own() -> None:
    text = checkpoint_text(7, sha(b"r"))
    note = KEY.sign(text) + W1.cosign(text, T)
    assert V.verify_cosignature(note, V.WitnessKey.parse(W1.vkey)) == T
    with pytest.raises(NoteError) as caught:
        V.verify_cosignature(note, V.WitnessKey.parse(W2.vkey))
    assert (caught.value.kind, caught.value.detail) == (
        "WITNESS_MISSING", "the checkpoint carries no cosignature of the witness witness.example/w2")
    with pytest.raises(NoteError) as caught:
        V.verify_cosignature("not a note", V.WitnessKey.parse(W1.vkey))
    assert caught.value.kind == "SIG_INVALID"


def test_main_takes_repeated_witness_keys(full: Bundle, capsys: pytest.CaptureFixture[str]) -> None:
    text = text_of(full)
    cosigned(full, W1.cosign(text, T), W2.cosign(text, T + 1))
    assert main([str(full.path), "--vkey", VKEY, "--witness-key", W1.vkey, "--witness-key", W2.vkey]) == 0
    assert json.loads(capsys.readouterr().out)["witnessed"] == [{"witness": W1.name, "time": T},
                                                                {"witness": W2.name, "time": T + 1}]
    assert main([str(full.path), "--vkey", VKEY, "--witness-key", "nonsense"]) == 2
    assert json.loads(capsys.readouterr().out) == {
        "status": "error", "detail": "malformed witness key: expected <name>+<8 hex>+<base64>"}


# --- the Merkle primitives at their edges --------------------------------------------------------------------

LEAVES = [leaf(str(i).encode()) for i in range(24)]


def test_roots_of_every_size_batch_and_incremental() -> None:
    assert merkle_root([]) == sha(b"") == RootBuilder().root()
    builder = RootBuilder()
    for n, h in enumerate(LEAVES, 1):
        builder.add(h)
        assert builder.size == n
        assert merkle_root(LEAVES[:n]) == mth(LEAVES[:n]) == builder.root()
        resumed = RootBuilder(builder.size, builder.frontier)
        assert resumed.root() == builder.root() and resumed.frontier is not builder.frontier
        resumed.add(LEAVES[0])
        assert resumed.root() == mth(LEAVES[:n] + [LEAVES[0]])
    assert V.leaf_hash(b"x") == leaf(b"x") and node_hash(b"a", b"b") == node(b"a", b"b")
    with pytest.raises(AttributeError):
        builder.other = 1  # type: ignore[attr-defined]


def test_inclusion_proofs_at_their_edges() -> None:
    for size in range(1, 25):
        root = mth(LEAVES[:size])
        for i in range(size):
            path = inclusion(i, LEAVES[:size])
            assert root_from_inclusion(i, size, LEAVES[i], path) == root
            assert root_from_inclusion(i, size, LEAVES[i], path + [root]) is None  # too long
            if path:
                assert root_from_inclusion(i, size, LEAVES[i], path[:-1]) is None  # too short
                assert root_from_inclusion(i, size, LEAVES[i], path[1:] + path[:1]) != root or len(set(path)) == 1
        assert root_from_inclusion(size, size, LEAVES[0], inclusion(0, LEAVES[:size])) is None
        assert root_from_inclusion(-1, size, LEAVES[0], inclusion(0, LEAVES[:size])) is None
    assert root_from_inclusion(0, 0, LEAVES[0], []) is None
    assert root_from_inclusion(0, 1, LEAVES[0], []) == LEAVES[0]


def test_consistency_proofs_at_their_edges() -> None:
    for new in range(1, 25):
        new_root = mth(LEAVES[:new])
        for old in range(1, new + 1):
            old_root = mth(LEAVES[:old])
            path = consistency(old, LEAVES[:new])
            assert verify_consistency(old, new, old_root, new_root, path) is True, (old, new)
            assert verify_consistency(old, new, old_root, new_root, path + [old_root]) is False
            assert verify_consistency(old, new, sha(b"x"), new_root, path) is False
            assert verify_consistency(old, new, old_root, sha(b"x"), path) is False
            if path:
                assert verify_consistency(old, new, old_root, new_root, path[:-1]) is False
    root = mth(LEAVES[:4])
    assert verify_consistency(0, 4, sha(b""), root, []) is True
    assert verify_consistency(0, 4, sha(b""), root, [root]) is False
    assert verify_consistency(4, 4, root, root, []) is True
    assert verify_consistency(4, 4, root, sha(b"x"), []) is False
    assert verify_consistency(4, 4, root, root, [root]) is False
    assert verify_consistency(3, 4, mth(LEAVES[:3]), root, []) is False  # an old size that is not a power of two
    assert verify_consistency(4, 8, root, mth(LEAVES[:8]), []) is False  # a power of two still needs the rest


@pytest.mark.parametrize(("old", "new", "path"), [
    (-1, 4, []), (-1, 1, ["r"]), (5, 4, []), (8, 4, []), (2, 1, []), (2, 1, ["r"]), (-2, 1, ["r"]),
])
def test_consistency_between_impossible_sizes_is_refused(old: int, new: int, path: list[str]) -> None:
    """Sizes the bundle code never passes (it reports ROLLBACK first), where the arithmetic alone
    would accept a proof made of the old root."""
    r = mth(LEAVES[:4])
    assert verify_consistency(old, new, r, r, [r for _ in path]) is False


# --- the command line (verify.py) ------------------------------------------------------------------------------

def test_main_prints_the_verdict_and_exits_0_or_1(full: Bundle, capsys: pytest.CaptureFixture[str]) -> None:
    assert main([str(full.path), "--vkey", VKEY]) == 0
    assert json.loads(capsys.readouterr().out) == ok_verdict(full)
    held = full.path.parent / "held.txt"
    held.write_text(KEY.sign(checkpoint_text(3, sha(b"fork"))), encoding="utf-8")
    assert main([str(full.path), "--vkey", VKEY, "--checkpoint", str(held)]) == 1
    assert json.loads(capsys.readouterr().out)["kind"] == "FORK"
    held.write_text(KEY.sign(checkpoint_text(3, full.root(3))), encoding="utf-8")
    assert main([str(full.path), "--checkpoint", str(held)]) == 1  # every check passed, but nothing is pinned
    assert json.loads(capsys.readouterr().out) == ok_verdict(full, pinned=False)


@pytest.mark.parametrize("case", ["no-such-bundle", "not-a-tarball", "bad-vkey", "no-held-file"])
def test_main_exits_2_when_it_cannot_run(full: Bundle, tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                         case: str) -> None:
    junk = tmp_path / "junk.tar.gz"
    junk.write_bytes(b"not a tarball")
    args = {"no-such-bundle": [str(tmp_path / "missing.tar.gz"), "--vkey", VKEY],
            "not-a-tarball": [str(junk), "--vkey", VKEY],
            "bad-vkey": [str(full.path), "--vkey", "nonsense"],
            "no-held-file": [str(full.path), "--vkey", VKEY, "--checkpoint", str(tmp_path / "nope.txt")]}[case]
    assert main(args) == 2
    out = json.loads(capsys.readouterr().out)
    assert set(out) == {"status", "detail"} and out["status"] == "error" and out["detail"]
    if case == "bad-vkey":
        assert out["detail"] == "malformed verifier key: expected <name>+<8 hex>+<base64>"


def test_main_describes_itself(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as caught:
        main(["--help"])
    assert caught.value.code == 0
    out = " " + " ".join(capsys.readouterr().out.split()) + " "
    assert out.startswith(" usage: verify.py [-h] [--vkey VKEY] [--checkpoint CHECKPOINT] [--witness-key WITNESS_KEY] "
                          "bundle")
    for text in ("Verify an AlertEngine audit bundle offline.",
                 "the .tar.gz bundle, or a directory it was unpacked into",
                 "the appliance's verifier key you pinned (name+keyid+base64)",
                 "an earlier signed checkpoint you hold, to check consistency",
                 "a witness's key (name+keyid+base64) whose cosignature the checkpoint must carry; repeatable"):
        assert f" {text} " in out


def test_the_module_runs_as_a_standalone_script(full: Bundle, tmp_path: Path) -> None:
    """verify.py is this very file: run it by path, with nothing of AlertEngine importable."""
    script = tmp_path / "verify.py"
    script.write_bytes(Path(V.__file__).read_bytes())
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH",)}
    proc = subprocess.run([sys.executable, "-I", str(script), str(full.path), "--vkey", VKEY],
                          check=False, capture_output=True, text=True, cwd=tmp_path, env=env,
                          timeout=60)
    assert (proc.returncode, json.loads(proc.stdout)) == (0, ok_verdict(full)), proc.stderr
    lines = full.lines()
    full.set_lines(lines[:-1])
    proc = subprocess.run([sys.executable, "-I", str(script), str(full.path), "--vkey", VKEY],
                          check=False, capture_output=True, text=True, cwd=tmp_path, env=env,
                          timeout=60)
    assert proc.returncode == 1 and json.loads(proc.stdout)["kind"] == "PROOF_INVALID"


def test_extending_a_tree_whose_size_is_not_aligned_goes_leaf_by_leaf_to_the_same_root() -> None:
    """RootBuilder.extend from tree_levels: when the tree's size is not a multiple of the largest
    perfect subtree being added, the leaves are added one by one; every split gives MTH of all."""
    leaves = [sha(b"leaf %d" % i) for i in range(40)]
    for before in range(0, 20):
        for count in range(0, 21):
            builder = RootBuilder()
            for h in leaves[:before]:
                builder.add(h)
            builder.extend(V.tree_levels(b"".join(leaves[before:before + count])), count)
            assert builder.size == before + count
            assert builder.root() == mth(leaves[:before + count]), (before, count)


def test_a_tenant_bundle_without_proofs_holding_the_whole_log_verifies(tmp_path: Path) -> None:
    """Without proofs.jsonl the entries must be every entry 0..N-1 of the checkpoint: a tenant's
    bundle of a log only it wrote is that, and its root is rebuilt from them."""
    log = chain([content(i, "acme") for i in range(6)])
    b = make_bundle(tmp_path / "solo", log, tenant="acme", proofs=False)
    assert b.verify() == ok_verdict(b)


def test_a_tenant_bundle_without_proofs_of_a_shared_log_is_refused(tmp_path: Path) -> None:
    b = make_bundle(tmp_path / "shared", tenant="acme", proofs=False)
    assert b.verify() == after_checkpoint(
        b, "PROOF_INVALID", None, "bundle omits proofs.jsonl but does not hold every entry 0..N-1 of the checkpoint",
        len(b.lines()))


def test_a_tenant_bundle_without_proofs_whose_root_differs_is_refused(tmp_path: Path) -> None:
    log = chain([content(i, "acme") for i in range(6)])
    b = make_bundle(tmp_path / "solo", log, tenant="acme", proofs=False)
    b.write("checkpoint.txt", KEY.sign(checkpoint_text(6, sha(b"another history"))))
    assert b.verify() == verdict(kind="ROOT_MISMATCH", detail="the entries' Merkle root differs from the signed checkpoint",
                                 entries_checked=6, checkpoint_size=6, root=b64(sha(b"another history")))


@pytest.mark.parametrize("which", ["acme", "full"])
def test_an_unexpected_error_checking_a_line_is_raised_never_passed_over(
        which: str, acme: Bundle, full: Bundle, monkeypatch: pytest.MonkeyPatch) -> None:
    """check_lines / check_run hand back what they could not judge; the caller raises it where the
    one-pass check would have met it (an unexpected error is not a verdict, and never a pass)."""
    b = acme if which == "acme" else full
    last = b.lines()[-1]
    real = V.fast_entry_fields

    def flaky(line: bytes):  # type: ignore[no-untyped-def]
        if line == last:
            raise RuntimeError("the checker broke on this line")
        return real(line)
    monkeypatch.setattr(V, "fast_entry_fields", flaky)
    with pytest.raises(RuntimeError, match="broke on this line"):
        V.verify_bundle(str(b.path), KEY.vkey, workers=1)
