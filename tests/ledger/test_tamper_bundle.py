"""Tamper matrix for exported bundles: `alertengine bundle verify` and the bundled verify.py agree."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from alertengine.ledger.entry import canonical
from alertengine.ledger.keys import LedgerSigner
from alertengine.ledger.verifier import b64, leaf_hash
from tests.conftest import run_cli
from tests.ledger.tamper import edit_line, populate, rehash_manifest, unpack


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """One populated appliance and its global, tenant and incident bundles (exported by the CLI)."""
    from alertengine.appliance import init_data_dir
    root = tmp_path_factory.mktemp("bundles")
    data = init_data_dir(root / "data")
    populate(data)
    out = {"data": data, "root": root}
    for name, args in (("global", ()), ("acme", ("--tenant", "acme")), ("incident", ("--incident", "INC-1"))):
        res = run_cli("export", "--data-dir", str(data.path), "-o", str(root / f"{name}.tar.gz"), *args)
        assert res.code == 0, res.stderr
        out[name] = root / f"{name}.tar.gz"
        out[name + "_summary"] = res.json()
    return out


def both_verdicts(bundle: Path, vkey: str | None, *extra: str) -> tuple[int, dict]:
    """Verify with the CLI and with the bundle's own verify.py; they must agree exactly."""
    cli_args = ["bundle", "verify", str(bundle)] + (["--vkey", vkey] if vkey else []) + list(extra)
    cli = run_cli(*cli_args)
    script = (bundle / "verify.py") if bundle.is_dir() else None
    if script is None:
        d = unpack(bundle, bundle.parent / (bundle.name + ".unpacked"))
        script = d / "verify.py"
    standalone = subprocess.run([sys.executable, str(script), str(bundle)] + (["--vkey", vkey] if vkey else []) + list(extra),
                                capture_output=True, text=True, cwd=script.parent, timeout=120)
    assert cli.code == standalone.returncode, (cli.stdout, standalone.stdout, standalone.stderr)
    assert json.loads(cli.stdout) == json.loads(standalone.stdout)
    return cli.code, json.loads(cli.stdout)


@pytest.fixture
def vkey(exported: dict) -> str:
    return exported["data"].signer.vkey


@pytest.mark.parametrize("name,entries,tseq", [("global", 31, None), ("acme", 11, (0, 10)), ("incident", 12, (0, 11))])
def test_exported_bundles_verify(exported: dict, vkey: str, name: str, entries: int, tseq: tuple | None) -> None:
    code, out = both_verdicts(exported[name], vkey)
    assert code == 0, out
    assert out["status"] == "ok" and out["complete"] is True and out["pinned"] is True
    assert out["entries_checked"] == entries
    if tseq:
        assert (out["covers"]["from_tseq"], out["covers"]["to_tseq"]) == tseq


def test_export_is_ledgered_and_vkey_printed(exported: dict, vkey: str) -> None:
    summary = exported["global_summary"]
    assert summary["vkey"] == vkey
    lines = unpack(exported["global"], exported["root"] / "g").joinpath("entries.jsonl").read_bytes().splitlines()
    assert json.loads(lines[-1])["kind"] == "ledger.exported"


def test_unpinned_verification_never_reports_success(exported: dict) -> None:
    code, out = both_verdicts(exported["global"], None)
    assert code == 1 and out["status"] == "unpinned" and out["kind"] == "KEY_NOT_PINNED"
    assert out["pinned"] is False and "pin the appliance's key" in out["detail"]


def test_an_unpinned_bundle_signed_by_any_key_is_not_ok(exported: dict, tmp_path: Path) -> None:
    """A bundle re-signed by an attacker, with the attacker's key in its manifest, is internally
    consistent: without a pinned key that must not read as verified."""
    d = _resigned_by_an_attacker(exported, tmp_path)
    code, out = both_verdicts(d, None)
    assert code == 1 and out["status"] != "ok" and out["pinned"] is False, out


def _copy(exported: dict, name: str, tmp_path: Path) -> Path:
    return unpack(exported[name], tmp_path / name)


def _resigned_by_an_attacker(exported: dict, tmp_path: Path) -> Path:
    """The global bundle with its checkpoint re-signed by another key, which the manifest names."""
    d = _copy(exported, "global", tmp_path)
    attacker = LedgerSigner.from_seed(exported["data"].signer.name, bytes(range(32)))
    text = (d / "checkpoint.txt").read_text().split("\n\n")[0] + "\n"
    (d / "checkpoint.txt").write_text(attacker.sign_note(text))
    manifest = json.loads((d / "manifest.json").read_text())
    manifest["vkey"] = attacker.vkey
    (d / "manifest.json").write_text(json.dumps(manifest))
    rehash_manifest(d)
    return d


def test_edit_without_manifest_is_manifest_mismatch(exported: dict, vkey: str, tmp_path: Path) -> None:
    d = _copy(exported, "global", tmp_path)
    lines = edit_line(d, 5, b"")
    edit_line(d, 5, lines[5].replace(b"event 5", b"event X"))
    code, out = both_verdicts(d, vkey)
    assert (code, out["kind"]) == (1, "MANIFEST_MISMATCH")
    assert out["first_bad_seq"] == 6  # the deeper checks still point at where history changed


def test_edited_entry_is_chain_break(exported: dict, vkey: str, tmp_path: Path) -> None:
    d = _copy(exported, "global", tmp_path)
    lines = (d / "entries.jsonl").read_bytes().splitlines()
    edit_line(d, 5, lines[5].replace(b"event 5", b"event X"))
    rehash_manifest(d)
    code, out = both_verdicts(d, vkey)
    assert (code, out["kind"], out["first_bad_seq"]) == (1, "CHAIN_BREAK", 6)


def test_edited_last_entry_is_root_mismatch(exported: dict, vkey: str, tmp_path: Path) -> None:
    d = _copy(exported, "global", tmp_path)
    lines = (d / "entries.jsonl").read_bytes().splitlines()
    edit_line(d, len(lines) - 1, lines[-1].replace(b"audit bundle exported", b"nothing to see here"))
    rehash_manifest(d)
    code, out = both_verdicts(d, vkey)
    assert (code, out["kind"]) == (1, "ROOT_MISMATCH")


def test_deleted_entry_is_seq_gap(exported: dict, vkey: str, tmp_path: Path) -> None:
    d = _copy(exported, "global", tmp_path)
    edit_line(d, 9, None)
    rehash_manifest(d)
    code, out = both_verdicts(d, vkey)
    assert (code, out["kind"], out["first_bad_seq"]) == (1, "SEQ_GAP", 9)


def test_forged_checkpoint_is_sig_invalid(exported: dict, vkey: str, tmp_path: Path) -> None:
    d = _copy(exported, "global", tmp_path)
    note = (d / "checkpoint.txt").read_text().split("\n")
    note[2] = b64(bytes(32))
    (d / "checkpoint.txt").write_text("\n".join(note))
    rehash_manifest(d)
    code, out = both_verdicts(d, vkey)
    assert (code, out["kind"]) == (1, "SIG_INVALID")


def test_wrong_pinned_key_is_key_untrusted(exported: dict) -> None:
    other = LedgerSigner.from_seed(exported["data"].signer.name, bytes(range(32)))
    code, out = both_verdicts(exported["acme"], other.vkey)
    assert (code, out["kind"]) == (1, "KEY_UNTRUSTED")


def test_bundle_resigned_with_attacker_key_is_key_untrusted(exported: dict, vkey: str, tmp_path: Path) -> None:
    """An attacker rewrites history, re-signs with their own key and swaps the manifest's vkey."""
    d = _resigned_by_an_attacker(exported, tmp_path)
    code, out = both_verdicts(d, vkey)
    assert (code, out["kind"]) == (1, "KEY_UNTRUSTED")


def test_tenant_bundle_without_last_entry_is_incomplete(exported: dict, vkey: str, tmp_path: Path) -> None:
    d = _copy(exported, "acme", tmp_path)
    lines = edit_line(d, -1, None)
    last = json.loads(lines[-2])
    rehash_manifest(d, to_seq=last["seq"], to_tseq=last["tseq"])
    code, out = both_verdicts(d, vkey)
    assert code == 0 and out["status"] == "ok"
    assert out["complete"] is False
    assert "INCOMPLETE" in out["detail"]


def test_other_tenants_entry_injected_is_scope_violation(exported: dict, vkey: str, tmp_path: Path) -> None:
    g = _copy(exported, "global", tmp_path)
    globex = next(line for line in (g / "entries.jsonl").read_bytes().splitlines() if b'"tenant":"globex"' in line)
    d = _copy(exported, "acme", tmp_path)
    lines = (d / "entries.jsonl").read_bytes().splitlines()
    seq = json.loads(globex)["seq"]
    position = next(i for i, line in enumerate(lines) if json.loads(line)["seq"] > seq)
    lines.insert(position, globex)
    (d / "entries.jsonl").write_bytes(b"".join(line + b"\n" for line in lines))
    rehash_manifest(d)
    code, out = both_verdicts(d, vkey)
    assert (code, out["kind"], out["first_bad_seq"]) == (1, "SCOPE_VIOLATION", seq)


def test_tenant_bundle_edited_entry_fails_its_proof(exported: dict, vkey: str, tmp_path: Path) -> None:
    d = _copy(exported, "acme", tmp_path)
    lines = (d / "entries.jsonl").read_bytes().splitlines()
    obj = json.loads(lines[3])
    obj["reason"] = "edited"
    edit_line(d, 3, canonical(obj))
    rehash_manifest(d)
    code, out = both_verdicts(d, vkey)
    assert (code, out["kind"], out["first_bad_seq"]) == (1, "ROOT_MISMATCH", obj["seq"])


def test_tenant_head_mismatch(exported: dict, vkey: str, tmp_path: Path) -> None:
    d = _copy(exported, "acme", tmp_path)
    signer = exported["data"].signer
    head = (d / "tenant-head.txt").read_text().split("\n")
    (d / "tenant-head.txt").write_text(signer.sign_note(f"{head[0]}\n{head[1]}\n{b64(leaf_hash(b'x'))}\n"))
    rehash_manifest(d)
    code, out = both_verdicts(d, vkey)
    assert (code, out["kind"]) == (1, "TENANT_HEAD_MISMATCH")


def test_held_checkpoint_larger_is_rollback_and_foreign_is_fork(exported: dict, vkey: str, tmp_path: Path) -> None:
    signer = exported["data"].signer
    cp = (unpack(exported["global"], tmp_path / "g") / "checkpoint.txt").read_text().split("\n")
    larger = tmp_path / "larger.txt"
    larger.write_text(signer.sign_note(f"{cp[0]}\n{int(cp[1]) + 5}\n{cp[2]}\n"))
    code, out = both_verdicts(exported["global"], vkey, "--checkpoint", str(larger))
    assert (code, out["kind"]) == (1, "ROLLBACK")
    forked = tmp_path / "forked.txt"
    forked.write_text(signer.sign_note(f"{cp[0]}\n5\n{b64(bytes(32))}\n"))
    code, out = both_verdicts(exported["global"], vkey, "--checkpoint", str(forked))
    assert (code, out["kind"]) == (1, "FORK")
    good = tmp_path / "good.txt"
    good.write_text((tmp_path / "g" / "checkpoint.txt").read_text())
    code, out = both_verdicts(exported["global"], vkey, "--checkpoint", str(good))
    assert code == 0, out


def test_unreadable_bundle_cannot_run(tmp_path: Path, vkey: str) -> None:
    junk = tmp_path / "junk.tar.gz"
    junk.write_bytes(b"not a tarball")
    result = run_cli("bundle", "verify", str(junk), "--vkey", vkey)
    assert result.code == 2 and json.loads(result.stdout)["status"] == "error"


def test_global_bundle_follows_tenant_chains(exported: dict, vkey: str, tmp_path: Path) -> None:
    d = _copy(exported, "global", tmp_path)
    lines = (d / "entries.jsonl").read_bytes().splitlines()
    obj = json.loads(lines[7])
    obj["tprev"] = "ab" * 32
    edit_line(d, 7, canonical(obj))
    rehash_manifest(d)
    code, out = both_verdicts(d, vkey)
    assert (code, out["kind"], out["first_bad_seq"]) == (1, "TENANT_CHAIN_BREAK", 7)
