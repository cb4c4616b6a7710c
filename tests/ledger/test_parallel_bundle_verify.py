"""Offline bundle verification in worker processes gives exactly the one-process verdicts.

``verify_bundle`` checks entries.jsonl ``chunk`` lines at a time, in ``workers`` processes for large
bundles, and stitches the chunks together in order. Each case below is verified in this process
(``workers=1``) and with two worker processes, with chunks small enough that the tampering sits
inside, at or across chunk boundaries; the verdicts must be identical as a whole and must be the
one written here. The last tests run the bundled ``verify.py`` as a script on a bundle large enough
for it to start worker processes on its own.
"""

from __future__ import annotations

import base64
import hashlib
import json
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from alertengine.ledger import verifier
from alertengine.ledger.verifier import verify_bundle
from tests.ledger.tamper import populate, unpack

CHUNK = 64   # lines per chunk here: chunks hold seq 0..63, 64..127, 128..191, ...
FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "ledger"


def canonical(obj: dict) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode()


def leaf(body: bytes) -> bytes:
    return hashlib.sha256(b"\x00" + body).digest()


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> dict:
    from alertengine.appliance import init_data_dir
    from alertengine.config import Config
    from alertengine.store.export import export_bundle

    root = tmp_path_factory.mktemp("parallel")
    data = init_data_dir(root / "data")
    populate(data, total=300, checkpoint_at=100)
    db = data.open_database(Config(data_dir=data.path))
    try:
        export_bundle(db, root / "full.tar.gz")
    finally:
        db.close()
    return {"bundle": root / "full.tar.gz", "vkey": data.signer.vkey}


@pytest.fixture
def bundle(exported: dict, tmp_path: Path) -> Path:
    return unpack(exported["bundle"], tmp_path / "bundle")


def lines_of(d: Path) -> list[bytes]:
    return (d / "entries.jsonl").read_bytes().split(b"\n")[:-1]


def write(d: Path, lines: list[bytes], *, rehash: bool = True, final_newline: bool = True) -> None:
    data = b"\n".join(lines) + (b"\n" if final_newline and lines else b"")
    (d / "entries.jsonl").write_bytes(data)
    if rehash:
        manifest = json.loads((d / "manifest.json").read_text())
        manifest["files"]["entries.jsonl"] = hashlib.sha256(data).hexdigest()
        (d / "manifest.json").write_text(json.dumps(manifest))


def reworded(line: bytes) -> bytes:
    """The same entry with another reason: still canonical, but no longer what its successor links to."""
    obj = json.loads(line)
    obj["reason"] = "rewritten"
    return canonical(obj)


def relinked(line: bytes) -> bytes:
    obj = json.loads(line)
    obj["prev"] = "ab" * 32
    return canonical(obj)


def spaced(line: bytes) -> bytes:
    """Not canonical any more (a space after the first colon)."""
    return line.replace(b":", b": ", 1)


def verdicts(d: Path, vkey: str) -> dict:
    one = verify_bundle(str(d), vkey, workers=1, chunk=CHUNK).as_dict()
    two = verify_bundle(str(d), vkey, workers=2, chunk=CHUNK).as_dict()
    assert two == one
    return one


def test_the_intact_bundle_verifies_the_same_in_workers(bundle: Path, exported: dict) -> None:
    lines = lines_of(bundle)
    assert len(lines) > 4 * CHUNK
    out = verdicts(bundle, exported["vkey"])
    assert (out["status"], out["kind"], out["entries_checked"]) == ("ok", None, len(lines))
    assert out["covers"]["to_seq"] == len(lines) - 1 and out["complete"] is True


@pytest.mark.parametrize("edit,kind,seq", [
    ("reworded", "CHAIN_BREAK", 101),      # entry 100 (middle of chunk 1) changed: entry 101 no longer links
    ("spaced", "ENCODING", 100),           # entry 100 no longer canonical
    ("relinked", "CHAIN_BREAK", 100),      # entry 100 names another prev
])
def test_an_entry_tampered_inside_a_middle_chunk(bundle: Path, exported: dict, edit: str, kind: str, seq: int) -> None:
    lines = lines_of(bundle)
    lines[100] = {"reworded": reworded, "spaced": spaced, "relinked": relinked}[edit](lines[100])
    write(bundle, lines)
    out = verdicts(bundle, exported["vkey"])
    assert (out["status"], out["kind"], out["first_bad_seq"], out["entries_checked"]) == ("fail", kind, seq, seq)


@pytest.mark.parametrize("index,edit,kind,seq", [
    (127, "reworded", "CHAIN_BREAK", 128),   # the last entry of chunk 1: the first of chunk 2 no longer links
    (128, "relinked", "CHAIN_BREAK", 128),   # the first entry of chunk 2 names another prev
    (128, "spaced", "ENCODING", 128),
])
def test_a_link_broken_across_a_chunk_boundary(bundle: Path, exported: dict, index: int, edit: str, kind: str,
                                               seq: int) -> None:
    lines = lines_of(bundle)
    lines[index] = {"reworded": reworded, "spaced": spaced, "relinked": relinked}[edit](lines[index])
    write(bundle, lines)
    out = verdicts(bundle, exported["vkey"])
    assert (out["kind"], out["first_bad_seq"]) == (kind, seq)


@pytest.mark.parametrize("first,second,kind,seq", [
    ((70, "spaced"), (200, "relinked"), "ENCODING", 70),
    ((70, "relinked"), (200, "spaced"), "CHAIN_BREAK", 70),
    ((63, "reworded"), (64, "spaced"), "ENCODING", 64),   # entry 64's form is checked before its link to 63
])
def test_of_two_bad_entries_in_different_chunks_the_earlier_is_reported(
        bundle: Path, exported: dict, first: tuple, second: tuple, kind: str, seq: int) -> None:
    edits = {"reworded": reworded, "spaced": spaced, "relinked": relinked}
    lines = lines_of(bundle)
    for index, edit in (first, second):
        lines[index] = edits[edit](lines[index])
    write(bundle, lines)
    out = verdicts(bundle, exported["vkey"])
    assert (out["kind"], out["first_bad_seq"]) == (kind, seq)


def test_a_tenant_chain_broken_in_a_later_chunk(bundle: Path, exported: dict) -> None:
    """Entry 150 claims another tenant link; every prev after it is recomputed so that only the tenant chain breaks."""
    lines = lines_of(bundle)
    prev = None
    for i, line in enumerate(lines):
        obj = json.loads(line)
        if i == 150:
            obj["tprev"] = "cd" * 32
        if prev is not None:
            obj["prev"] = prev.hex()
        lines[i] = canonical(obj)
        prev = leaf(lines[i])
    write(bundle, lines)
    out = verdicts(bundle, exported["vkey"])
    assert (out["kind"], out["first_bad_seq"]) == ("TENANT_CHAIN_BREAK", 150)


def test_a_file_truncated_inside_a_line(bundle: Path, exported: dict) -> None:
    lines = lines_of(bundle)
    write(bundle, lines[:150] + [lines[150][:40]], final_newline=False)
    out = verdicts(bundle, exported["vkey"])
    assert (out["kind"], out["first_bad_seq"], out["entries_checked"]) == ("ENCODING", 150, 150)


def test_a_file_truncated_at_a_chunk_boundary(bundle: Path, exported: dict) -> None:
    lines = lines_of(bundle)
    write(bundle, lines[:3 * CHUNK])
    out = verdicts(bundle, exported["vkey"])
    assert (out["kind"], out["first_bad_seq"], out["entries_checked"]) == ("PROOF_INVALID", None, 3 * CHUNK)


def test_a_truncated_file_without_its_manifest_hash(bundle: Path, exported: dict) -> None:
    lines = lines_of(bundle)
    write(bundle, lines[:150] + [lines[150][:40]], rehash=False, final_newline=False)
    out = verdicts(bundle, exported["vkey"])
    assert (out["kind"], out["first_bad_seq"]) == ("MANIFEST_MISMATCH", 150)
    assert "first inconsistent entry: ENCODING at seq 150" in out["detail"]


def test_an_earlier_checkpoint_is_checked_against_the_stitched_tree(bundle: Path, exported: dict) -> None:
    names = json.loads((bundle / "manifest.json").read_text())["files"]
    assert any(n.startswith("checkpoints/") for n in names), "the export should carry its earlier checkpoint"
    out = verdicts(bundle, exported["vkey"])
    assert out["status"] == "ok"


# --- the bundled verify.py, run as a script, on a bundle that takes the parallel path by itself ------------

def _sign(text: str, name: str, seed: bytes) -> str:
    key = Ed25519PrivateKey.from_private_bytes(seed)
    public = key.public_key().public_bytes_raw()
    key_id = hashlib.sha256(name.encode() + b"\n\x01" + public).digest()[:4]
    sig = base64.b64encode(key_id + key.sign(text.encode())).decode()
    return f"{text}\n\u2014 {name} {sig}\n"


def _mth(leaves: list[bytes]) -> bytes:
    level = leaves
    while len(level) > 1:
        nxt = [hashlib.sha256(b"\x01" + level[i] + level[i + 1]).digest() for i in range(0, len(level) - 1, 2)]
        level = nxt + ([level[-1]] if len(level) % 2 else [])
    return level[0]


@pytest.fixture(scope="module")
def large(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A global bundle directory of PARALLEL_FROM + 1000 entries, written from scratch and signed with the
    published test key, and a copy of verify.py kept outside it."""
    key = json.loads((FIXTURES / "vectors.json").read_text())["key"]
    n = verifier.PARALLEL_FROM + 1000
    root = tmp_path_factory.mktemp("large")
    d = root / "bundle"
    d.mkdir()
    lines, leaves, tenant_last = [], [], {}
    prev = "0" * 64
    for seq in range(n):
        tenant = f"t{seq % 5}"
        tseq, tprev = tenant_last.get(tenant, (-1, "0" * 64))
        body = canonical({"actor": "system", "confidence": None, "data": {"n": seq, "ratio": 0.25}, "decision": None,
                          "event_id": f"event-{seq:08d}", "incident": None, "kind": "test.event", "policy_version": None,
                          "prev": prev, "reason": f"entry {seq}", "seq": seq, "stage": None, "tenant": tenant,
                          "tprev": tprev, "ts": "2026-01-01T00:00:00.000000Z", "tseq": tseq + 1, "v": 1})
        lines.append(body)
        leaves.append(leaf(body))
        prev = leaves[-1].hex()
        tenant_last[tenant] = (tseq + 1, prev)
    checkpoint = _sign(f"{key['name']}\n{n}\n{base64.b64encode(_mth(leaves)).decode()}\n", key["name"],
                       bytes.fromhex(key["ed25519_private_seed_hex"]))
    (d / "checkpoint.txt").write_text(checkpoint, encoding="utf-8")
    (d / "manifest.json").write_text(json.dumps({
        "format": "alertengine-audit-bundle/1", "vkey": key["vkey"], "checkpoint_size": n,
        "scope": {"tenant": None, "incident": None, "from_seq": 0, "to_seq": n - 1, "from_tseq": None, "to_tseq": None},
        "files": {"checkpoint.txt": hashlib.sha256(checkpoint.encode()).hexdigest(), "entries.jsonl": ""}}))
    write(d, lines)
    tool = root / "tool"
    tool.mkdir()
    (tool / "verify.py").write_bytes(Path(verifier.__file__).read_bytes())
    return {"dir": d, "lines": lines, "vkey": key["vkey"], "script": tool / "verify.py", "n": n}


def _standalone(large: dict) -> tuple[int, dict]:
    proc = subprocess.run([sys.executable, str(large["script"]), str(large["dir"]), "--vkey", large["vkey"]],
                          capture_output=True, text=True, cwd=large["script"].parent, timeout=600)
    assert proc.stderr == "", proc.stderr
    return proc.returncode, json.loads(proc.stdout)


def test_the_standalone_script_verifies_a_large_bundle_in_workers(large: dict) -> None:
    code, out = _standalone(large)
    assert code == 0 and out["status"] == "ok" and out["entries_checked"] == large["n"], out
    assert out == verify_bundle(str(large["dir"]), large["vkey"], workers=1).as_dict()


def test_the_standalone_script_reports_the_first_of_two_bad_entries(large: dict) -> None:
    lines = list(large["lines"])
    lines[70_000] = reworded(lines[70_000])    # a later chunk: CHAIN_BREAK at 70,001
    lines[90_000] = spaced(lines[90_000])      # later still: ENCODING at 90,000
    write(large["dir"], lines)
    try:
        code, out = _standalone(large)
        assert (code, out["kind"], out["first_bad_seq"]) == (1, "CHAIN_BREAK", 70_001)
        assert out == verify_bundle(str(large["dir"]), large["vkey"], workers=1).as_dict()
    finally:
        write(large["dir"], large["lines"])


def test_a_tarball_reads_its_small_files_while_it_is_listed(exported: dict) -> None:
    reader = verifier.BundleReader(str(exported["bundle"]))
    try:
        with tarfile.open(exported["bundle"]) as tar:
            for name in ("manifest.json", "checkpoint.txt", "verify.py"):
                member = tar.extractfile(name)
                assert member is not None and reader.read(name) == member.read()
        assert reader.read("entries.jsonl") == reader.read("entries.jsonl") != b""
    finally:
        reader.close()
    with pytest.raises(OSError, match="closed"):
        reader.read("manifest.json")


class _FailingPool:
    """Stands in for the worker pool: its workers die, at submit or while they run a chunk."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        self.submitted = 0

    def submit(self, fn, *args):  # type: ignore[no-untyped-def]
        from concurrent.futures import Future
        from concurrent.futures.process import BrokenProcessPool
        self.submitted += 1
        if self.submitted % 2:
            raise BrokenProcessPool("the pool broke before this chunk was handed over")
        future: Future = Future()
        future.set_exception(BrokenProcessPool("a worker died running this chunk"))
        return future

    def shutdown(self, wait: bool = True, cancel_futures: bool = False) -> None:
        pass


@pytest.mark.parametrize("tamper", [False, True])
def test_when_the_workers_die_this_process_checks_their_chunks(
        bundle: Path, exported: dict, monkeypatch: pytest.MonkeyPatch, tamper: bool) -> None:
    if tamper:
        lines = lines_of(bundle)
        lines[150] = reworded(lines[150])
        write(bundle, lines)
    expected = verify_bundle(str(bundle), exported["vkey"], workers=1, chunk=CHUNK).as_dict()
    assert (expected["status"], expected["kind"]) == (("fail", "CHAIN_BREAK") if tamper else ("ok", None))
    monkeypatch.setattr(verifier, "ProcessPoolExecutor", _FailingPool)
    assert verify_bundle(str(bundle), exported["vkey"], workers=2, chunk=CHUNK).as_dict() == expected
