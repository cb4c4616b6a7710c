"""docs/ledger-format.md against the code, so that the normative document and the implementation
cannot drift apart silently.

The document marks what these tests read:

- ``<!-- vector: NAME -->`` right before a fenced code block: a value of the worked example
  (section 8), recomputed here from ``tests/fixtures/ledger/vectors.json`` with the product's code;
- ``<!-- table: NAME -->`` right before a table: lists the code must agree with (entry members,
  canonical JSON examples, bundle files, manifest and scope members, result members, error codes);
- ``<!-- cli: NAME -->`` right before a fenced block: a command line whose options must be the
  real ones.
"""

from __future__ import annotations

import ast
import base64
import contextlib
import hashlib
import io
import json
import re
import tarfile
from pathlib import Path

import pytest

from alertengine.appliance import (
    CHECKPOINT_FILE,
    DB_FILE,
    INSTALL_FILE,
    LEDGER_KEY_FILE,
    init_data_dir,
)
from alertengine.config import Config, _validated
from alertengine.errors import ConfigError
from alertengine.ledger import entry as entry_module
from alertengine.ledger import verifier as verifier_module
from alertengine.ledger.entry import (
    MAX_BODY_BYTES,
    SYSTEM_TENANT,
    LedgerEvent,
    canonical,
    fingerprint,
    redact,
)
from alertengine.ledger.keys import LedgerSigner
from alertengine.ledger.merkle import MerkleTree
from alertengine.ledger.verifier import (
    EM_DASH,
    FORMAT,
    REQUIRED_FIELDS,
    ZERO_HASH_HEX,
    Result,
    RootBuilder,
    VerificationFailure,
    b64,
    key_id,
    leaf_hash,
    merkle_root,
    node_hash,
    parse_entry,
    root_from_inclusion,
    split_note,
    verify_bundle,
    verify_consistency,
)
from alertengine.store import export as export_module
from tests.conftest import VECTORS, event

ROOT = Path(__file__).resolve().parents[2]
DOC_PATH = ROOT / "docs" / "ledger-format.md"
PACKAGE = ROOT / "alertengine"


# --------------------------------------------------------------------------------------------
# Reading the document

def _doc() -> str:
    return DOC_PATH.read_text(encoding="utf-8")


def _marked_blocks(text: str, marker: str) -> dict[str, str]:
    """``<!-- marker: NAME -->`` + fenced block -> {NAME: the block's lines, each ending in a newline}."""
    out: dict[str, str] = {}
    pattern = re.compile(rf"^[ \t]*<!-- {marker}: ([\w.-]+) -->\n([ \t]*)```[\w-]*\n(.*?)^\2```[ \t]*$",
                         re.S | re.M)
    for m in pattern.finditer(text):
        name, indent, body = m.group(1), m.group(2), m.group(3)
        assert name not in out, f"{marker} {name!r} appears twice in the document"
        lines = body.split("\n")[:-1]
        out[name] = "".join((line[len(indent):] if line.startswith(indent) else line) + "\n" for line in lines)
    return out


def _tables(text: str) -> dict[str, list[list[str]]]:
    """``<!-- table: NAME -->`` + markdown table -> {NAME: rows of cells, header and rule left out}."""
    out: dict[str, list[list[str]]] = {}
    lines = text.split("\n")
    for i, line in enumerate(lines):
        m = re.fullmatch(r"<!-- table: ([\w.-]+) -->", line.strip())
        if not m:
            continue
        raw = []
        j = i + 1
        while j < len(lines) and lines[j].startswith("|"):
            raw.append(lines[j].strip())
            j += 1
        assert len(raw) > 2 and re.fullmatch(r"\|[-:| ]+\|", raw[1]), f"table {m.group(1)!r} is not a markdown table"
        out[m.group(1)] = [[c.strip() for c in row.strip("|").split(" | ")] for row in raw[2:]]
    return out


def _span(cell: str) -> str:
    """The text of a cell that is one code span."""
    assert cell.startswith("`") and cell.endswith("`") and cell.count("`") == 2, f"not one code span: {cell!r}"
    return cell[1:-1]


@pytest.fixture(scope="module")
def doc() -> str:
    return _doc()


@pytest.fixture(scope="module")
def blocks(doc: str) -> dict[str, str]:
    return _marked_blocks(doc, "vector")


@pytest.fixture(scope="module")
def tables(doc: str) -> dict[str, list[list[str]]]:
    return _tables(doc)


@pytest.fixture(scope="module")
def signer(vectors: dict) -> LedgerSigner:
    key = vectors["key"]
    return LedgerSigner.from_seed(key["name"], bytes.fromhex(key["ed25519_private_seed_hex"]))


def _leaves(vectors: dict) -> list[bytes]:
    return [leaf_hash(e["body"].encode("utf-8")) for e in vectors["entries"]]


def _one_line(block: str) -> str:
    assert block.endswith("\n") and block.count("\n") == 1, f"expected one line, got {block!r}"
    return block[:-1]


def test_the_parsers_find_what_they_look_for() -> None:
    sample = ("x\n<!-- vector: a -->\n```text\none\n\ntwo\n```\n\n   <!-- vector: b -->\n   ```json\n   {}\n   ```\n"
              "<!-- table: t -->\n| a | b |\n|---|---|\n| `x` | yes |\n| `y` | no |\n\nafter\n")
    assert _marked_blocks(sample, "vector") == {"a": "one\n\ntwo\n", "b": "{}\n"}
    assert _tables(sample) == {"t": [["`x`", "yes"], ["`y`", "no"]]}


# --------------------------------------------------------------------------------------------
# Section 8: the worked example, value by value

EXPECTED_VECTORS = {
    "key-name", "public-key", "key-id-input", "key-id-digest", "vkey",
    "entry-1-body", "entry-1-length", "entry-1-reason-utf8", "entry-1-sha256", "entry-1-leaf-hash",
    "leaf-hashes", "roots", "inclusion-1-7", "consistency-3-7", "consistency-4-7",
    "checkpoint-7-text", "checkpoint-7-note", "checkpoint-7-signature", "tenant-head-acme",
    "result-tenant-acme", "tamper-entry-2",
}


def test_every_worked_example_value_is_marked(blocks: dict[str, str]) -> None:
    assert set(blocks) == EXPECTED_VECTORS


def test_the_test_key(blocks: dict[str, str], vectors: dict, signer: LedgerSigner, doc: str) -> None:
    key = vectors["key"]
    assert key["ed25519_private_seed_hex"] in doc
    name = _one_line(blocks["key-name"])
    assert name == signer.name == key["name"]
    pub = signer.public_key
    assert _one_line(blocks["public-key"]) == pub.hex() == key["public_hex"]
    material = bytes.fromhex(_one_line(blocks["key-id-input"]))
    assert material == name.encode() + b"\x0a" + b"\x01" + pub
    digest = _one_line(blocks["key-id-digest"])
    assert digest == hashlib.sha256(material).hexdigest()
    assert key_id(name, pub).hex() == digest[:8] == key["key_id_hex"]
    assert f"the key id `{digest[:8]}`" in doc
    assert _one_line(blocks["vkey"]) == signer.vkey == key["vkey"]
    encoded = base64.b64encode(b"\x01" + pub).decode()
    assert signer.vkey == f"{name}+{digest[:8]}+{encoded}"


def test_entry_1_bytes_and_hashes(blocks: dict[str, str], vectors: dict) -> None:
    stored = vectors["entries"][1]["body"].encode("utf-8")
    body = _one_line(blocks["entry-1-body"]).encode("utf-8")
    assert body == stored
    obj = parse_entry(body, None)
    assert obj["seq"] == 1 and obj["tseq"] == 0 and obj["tprev"] == ZERO_HASH_HEX
    assert obj["prev"] == vectors["entries"][0]["leaf_hash_hex"]
    assert canonical(obj) == body
    # the writer, given the same event and place in the chains, produces exactly these bytes
    event_fields = {k: obj[k] for k in ("kind", "tenant", "actor", "reason", "incident", "stage", "decision",
                                        "confidence", "policy_version", "data", "event_id")}
    assert LedgerEvent(**event_fields).body(obj["seq"], obj["prev"], obj["tseq"], obj["tprev"], obj["ts"]) == body
    assert int(_one_line(blocks["entry-1-length"])) == len(body)
    assert _one_line(blocks["entry-1-reason-utf8"]) == obj["reason"].encode("utf-8").hex()
    assert _one_line(blocks["entry-1-sha256"]) == hashlib.sha256(body).hexdigest()
    leaf = _one_line(blocks["entry-1-leaf-hash"])
    assert leaf == leaf_hash(body).hex() == hashlib.sha256(b"\x00" + body).hexdigest()
    assert leaf == vectors["entries"][1]["leaf_hash_hex"] == json.loads(vectors["entries"][2]["body"])["prev"]


def test_leaf_hashes(blocks: dict[str, str], vectors: dict) -> None:
    expected = "".join(f"{i} {e['leaf_hash_hex']}\n" for i, e in enumerate(vectors["entries"]))
    computed = "".join(f"{i} {h.hex()}\n" for i, h in enumerate(_leaves(vectors)))
    assert blocks["leaf-hashes"] == expected == computed


def test_roots_of_every_size(blocks: dict[str, str], vectors: dict) -> None:
    leaves = _leaves(vectors)
    tree = MerkleTree(leaves)
    lines = blocks["roots"].splitlines()
    assert len(lines) == len(leaves) + 1
    for n, line in enumerate(lines):
        size, root_b64, root_hex = line.split(" ")
        assert int(size) == n
        root = merkle_root(leaves[:n])
        builder = RootBuilder()
        for leaf in leaves[:n]:
            builder.add(leaf)
        assert root == tree.root(n) == builder.root()
        assert root_b64 == b64(root) == vectors["roots"][str(n)]
        assert root_hex == root.hex()
    assert lines[0].split(" ")[2] == hashlib.sha256(b"").hexdigest()
    assert lines[1].split(" ")[2] == leaves[0].hex()
    assert lines[2].split(" ")[2] == node_hash(leaves[0], leaves[1]).hex() == \
        hashlib.sha256(b"\x01" + leaves[0] + leaves[1]).hexdigest()


def test_inclusion_proof_of_entry_1(blocks: dict[str, str], vectors: dict) -> None:
    leaves = _leaves(vectors)
    path = [base64.b64decode(h) for h in blocks["inclusion-1-7"].splitlines()]
    assert path == MerkleTree(leaves).inclusion_proof(1, 7)
    assert {"index": 1, "size": 7, "path": [b64(h) for h in path]} in vectors["inclusion"]
    assert root_from_inclusion(1, 7, leaves[1], path) == merkle_root(leaves)
    # the walk the document describes: size-2 root, then size-4 root, then size-7 root
    assert path[0] == leaves[0]
    r2 = node_hash(path[0], leaves[1])
    r4 = node_hash(r2, path[1])
    assert (r2, r4, node_hash(r4, path[2])) == (merkle_root(leaves[:2]), merkle_root(leaves[:4]), merkle_root(leaves))
    assert path[1] == merkle_root(leaves[2:4]) and path[2] == merkle_root(leaves[4:7])


@pytest.mark.parametrize("old", [3, 4])
def test_consistency_proofs(blocks: dict[str, str], vectors: dict, old: int) -> None:
    leaves = _leaves(vectors)
    path = [base64.b64decode(h) for h in blocks[f"consistency-{old}-7"].splitlines()]
    assert path == MerkleTree(leaves).consistency_proof(old, 7)
    assert {"old_size": old, "new_size": 7, "path": [b64(h) for h in path]} in vectors["consistency"]
    assert verify_consistency(old, 7, merkle_root(leaves[:old]), merkle_root(leaves), path)
    assert not verify_consistency(old, 7, merkle_root(leaves[:old - 1]), merkle_root(leaves), path)


def test_checkpoint_of_size_7(blocks: dict[str, str], vectors: dict, signer: LedgerSigner) -> None:
    text = f"{signer.name}\n7\n{b64(merkle_root(_leaves(vectors)))}\n"
    assert blocks["checkpoint-7-text"] == text == vectors["checkpoint"]["text"]
    note = signer.sign_note(text)
    assert blocks["checkpoint-7-note"] == note == vectors["checkpoint"]["signed_note"]
    assert (VECTORS / "checkpoint-7.txt").read_text(encoding="utf-8") == note
    assert note == text + "\n" + EM_DASH + " " + signer.name + " " + note.rsplit(" ", 1)[1]
    opened, sigs = split_note(note)
    assert opened == text and len(sigs) == 1
    name, kid, sig = sigs[0]
    assert name == signer.name
    assert blocks["checkpoint-7-signature"] == f"{kid.hex()}\n{sig.hex()}\n"
    assert kid == key_id(signer.name, signer.public_key)
    assert signer.verifier.verify(text.encode("utf-8"), sig)


def test_tenant_head_of_acme(blocks: dict[str, str], vectors: dict, signer: LedgerSigner) -> None:
    leaves = _leaves(vectors)
    acme = [i for i, e in enumerate(vectors["entries"]) if json.loads(e["body"])["tenant"] == "acme"]
    assert acme == [0, 2, 4, 6]
    note = signer.sign_note(f"{signer.name}/tenant/acme\n{len(acme)}\n{b64(leaves[acme[-1]])}\n")
    assert blocks["tenant-head-acme"] == note
    with tarfile.open(VECTORS / "tenant-acme.tar.gz") as tar:
        member = tar.extractfile("tenant-head.txt")
        assert member is not None
        assert member.read().decode("utf-8") == note


def test_result_of_the_tenant_bundle(blocks: dict[str, str], vectors: dict) -> None:
    result = verify_bundle(str(VECTORS / "tenant-acme.tar.gz"), vectors["key"]["vkey"]).as_dict()
    assert _one_line(blocks["result-tenant-acme"]) == json.dumps(result)
    assert result["status"] == "ok" and result["complete"] is True


def _unpack(bundle: Path, dest: Path) -> Path:
    with tarfile.open(bundle) as tar:
        tar.extractall(dest, filter="data")
    return dest


def test_tampering_with_entry_2(blocks: dict[str, str], vectors: dict, tmp_path: Path, doc: str) -> None:
    assert "If `vector entry 2` is changed to `vector entry X`" in doc
    lines = blocks["tamper-entry-2"].splitlines()
    assert [line.split(" ")[0] for line in lines] == ["full.tar.gz", "tenant-acme.tar.gz"]
    for line in lines:
        name, kind, seq = line.split(" ")
        for rehash in (True, False):
            d = _unpack(VECTORS / name, tmp_path / f"{name}-{rehash}")
            entries = (d / "entries.jsonl").read_bytes()
            changed = entries.replace(b'"vector entry 2 ', b'"vector entry X ')
            assert changed.count(b"vector entry X") == 1
            assert parse_entry(next(ln for ln in changed.split(b"\n") if b"entry X" in ln), None)["seq"] == 2
            (d / "entries.jsonl").write_bytes(changed)
            if rehash:
                manifest = json.loads((d / "manifest.json").read_text())
                manifest["files"]["entries.jsonl"] = hashlib.sha256(changed).hexdigest()
                (d / "manifest.json").write_text(json.dumps(manifest))
            result = verify_bundle(str(d), vectors["key"]["vkey"])
            assert (result.status, result.kind, result.first_bad_seq) == \
                ("fail", kind if rehash else "MANIFEST_MISMATCH", int(seq)), result.as_dict()


# --------------------------------------------------------------------------------------------
# Section 1: entry members and canonical bytes

def test_entry_members_are_the_required_fields(tables: dict, vectors: dict) -> None:
    members = [_span(row[0]) for row in tables["entry-fields"]]
    assert members == sorted(REQUIRED_FIELDS)
    assert len(members) == len(REQUIRED_FIELDS) == 17
    body_keys = list(json.loads(vectors["entries"][0]["body"]))
    assert members == body_keys
    ev = LedgerEvent(kind="a.b", tenant="acme", actor="system", reason="r")
    assert list(json.loads(ev.body(0, ZERO_HASH_HEX, 0, ZERO_HASH_HEX, "2026-11-22T13:50:00.000000Z"))) == members


def test_canonical_examples(tables: dict, vectors: dict) -> None:
    rows = tables["canonical-examples"]
    verdicts = [row[1] for row in rows]
    assert set(verdicts) == {"yes", "no"} and verdicts.count("yes") >= 10 and verdicts.count("no") >= 10
    template = vectors["entries"][0]["body"]
    original_data = '"data":{"error_rate":0.19,"n":0,"p95_ms":2847.3}'
    assert template.count(original_data) == 1
    for row in rows:
        text, verdict = _span(row[0]), row[1]
        body = template.replace(original_data, '"data":' + text).encode("utf-8")
        try:
            writer_form = canonical(json.loads(text))
        except ValueError:
            writer_form = None
        if verdict == "yes":
            assert writer_form == text.encode("utf-8"), text
            assert parse_entry(body, None)["data"] == json.loads(text), text
        else:
            assert writer_form != text.encode("utf-8"), text
            with pytest.raises(VerificationFailure) as failure:
                parse_entry(body, None)
            assert failure.value.kind == "ENCODING", text


def test_writer_rules_named_in_the_document(doc: str) -> None:
    assert f"{MAX_BODY_BYTES:,} bytes" in doc
    assert f"`{SYSTEM_TENANT}`" in doc
    assert f"`{entry_module._KIND_RE.pattern}`" in doc
    assert f"`{entry_module._TENANT_RE.pattern}`" in doc
    assert f"`{entry_module._FINGERPRINT_VALUE_RE.pattern}`" in doc
    assert ZERO_HASH_HEX == "0" * 64 and "64 `0` characters" in doc
    secret = "correct horse battery staple"
    assert fingerprint(secret) == "sha256:" + hashlib.sha256(secret.encode()).hexdigest()[:16]
    assert "`sha256:` followed by the first 16 hex digits" in doc
    redacted = redact("deploy with sk-ant-" + "a1" * 12)
    assert re.fullmatch(r"deploy with \[redacted sha256:[0-9a-f]{16}\]", redacted)
    assert "`[redacted sha256:<16 hex digits>]`" in doc
    assert redact({"api_key": "hunter2hunter2"}) == {"api_key": fingerprint("hunter2hunter2")}
    stamp = entry_module.utc_timestamp()
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z", stamp) and len(stamp) == 27
    assert "exactly 27 characters" in doc and "`YYYY-MM-DDTHH:MM:SS.ffffffZ`" in doc


# --------------------------------------------------------------------------------------------
# Section 4: keys, notes, checkpoints

def test_key_and_note_constants(doc: str) -> None:
    assert EM_DASH == "\u2014" and "U+2014" in doc
    assert f"bytes `{EM_DASH.encode('utf-8').hex(' ').upper()}`" in doc
    for name in (LEDGER_KEY_FILE, CHECKPOINT_FILE, INSTALL_FILE, DB_FILE):
        assert f"`{name}`" in doc, name
    assert f"`{CHECKPOINT_FILE}.tmp`" in doc
    assert "`alertengine/<install-id>`" in doc or "alertengine/<install-id>\n" in doc


def test_checkpoint_interval_as_documented(doc: str) -> None:
    assert Config().checkpoint_interval == 1.0
    assert "1.0 seconds by default, allowed from 0.05 to\n3600" in doc
    for ok in (0.05, 3600):
        _validated(Config(checkpoint_interval=ok))
    for bad in (0.049, 3600.5):
        with pytest.raises(ConfigError):
            _validated(Config(checkpoint_interval=bad))


# --------------------------------------------------------------------------------------------
# Section 6: error codes, found in the code

RAISERS = {"VerificationFailure", "NoteError", "fail"}
CODE_RE = re.compile(r"[A-Z][A-Z0-9]*(_[A-Z0-9]+)*")


def _callee(call: ast.Call) -> str | None:
    if isinstance(call.func, ast.Name):
        return call.func.id
    if isinstance(call.func, ast.Attribute):
        return call.func.attr
    return None


def _functions(tree: ast.Module) -> dict[str, list[ast.AST]]:
    """Top-level functions by name, methods by name and by ``Class.method``, classes by name (all methods)."""
    out: dict[str, list[ast.AST]] = {}
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            out.setdefault(node.name, []).append(node)
        elif isinstance(node, ast.ClassDef):
            out.setdefault(node.name, []).append(node)
            for item in node.body:
                if isinstance(item, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    out.setdefault(item.name, []).append(item)
    return out


def _codes_in(node: ast.AST) -> set[str]:
    codes = set()
    for call in ast.walk(node):
        if isinstance(call, ast.Call) and _callee(call) in RAISERS and call.args:
            first = call.args[0]
            if isinstance(first, ast.Constant) and isinstance(first.value, str):
                codes.add(first.value)
    return codes


def _reachable_codes(tree: ast.Module, start: set[str]) -> set[str]:
    funcs = _functions(tree)
    seen: set[str] = set()
    todo = [s for s in start if s in funcs]
    codes: set[str] = set()
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        for node in funcs[name]:
            codes |= _codes_in(node)
            for call in ast.walk(node):
                if isinstance(call, ast.Call) and _callee(call) in funcs:
                    todo.append(_callee(call))  # type: ignore[arg-type]
    return codes


def _upper_constants(tree: ast.Module) -> set[str]:
    """Every all-capitals string constant, except SQL passed straight to ``execute``."""
    sql = {call.args[0].value for call in ast.walk(tree)
           if isinstance(call, ast.Call) and _callee(call) == "execute" and call.args
           and isinstance(call.args[0], ast.Constant)}
    return {n.value for n in ast.walk(tree) if isinstance(n, ast.Constant) and isinstance(n.value, str)
            and CODE_RE.fullmatch(n.value) and len(n.value) > 2 and n.value not in sql}


def bundle_codes() -> set[str]:
    tree = ast.parse((PACKAGE / "ledger" / "verifier.py").read_text(encoding="utf-8"))
    codes = _reachable_codes(tree, {"verify_bundle"})
    # nothing the module spells as a code is raised some other way, out of the scanner's sight
    assert codes == _upper_constants(tree)
    return codes


def live_codes() -> set[str]:
    verifier_tree = ast.parse((PACKAGE / "ledger" / "verifier.py").read_text(encoding="utf-8"))
    audit_tree = ast.parse((PACKAGE / "ledger" / "audit.py").read_text(encoding="utf-8"))
    imported = {alias.name for node in ast.walk(audit_tree)
                if isinstance(node, ast.ImportFrom) and node.module == "verifier" for alias in node.names}
    assert {"parse_entry", "open_note", "parse_checkpoint"} <= imported
    own = _upper_constants(audit_tree)
    assert _codes_in(audit_tree) <= own
    return own | _reachable_codes(verifier_tree, imported)


def _code_table(tables: dict) -> dict[str, tuple[str, str]]:
    rows = tables["error-codes"]
    out = {}
    for row in rows:
        assert len(row) == 4 and row[1] in ("yes", "no") and row[2] in ("yes", "no"), row
        code = _span(row[0])
        assert code not in out, f"{code} listed twice"
        out[code] = (row[1], row[2])
    return out


def test_the_scanners_see_the_known_codes() -> None:
    assert {"MANIFEST_MISMATCH", "SIG_INVALID", "KEY_UNTRUSTED", "ENCODING", "CHAIN_BREAK", "ROOT_MISMATCH",
            "TENANT_HEAD_MISMATCH", "FORK", "ROLLBACK"} <= bundle_codes()
    assert {"ENTRY_MODIFIED", "SEQ_GAP", "SIG_INVALID", "KEY_UNTRUSTED", "ENCODING", "ROLLBACK"} <= live_codes()
    assert "ENTRY_MODIFIED" not in bundle_codes() and "MANIFEST_MISMATCH" not in live_codes()


def test_every_error_code_is_documented_where_it_can_occur(tables: dict) -> None:
    table = _code_table(tables)
    assert set(table) == bundle_codes() | live_codes()
    assert {c for c, (bundle, _) in table.items() if bundle == "yes"} == bundle_codes()
    assert {c for c, (_, live) in table.items() if live == "yes"} == live_codes()


def test_every_error_code_is_explained_in_the_verification_steps(doc: str) -> None:
    steps = doc.split("### 6.2", 1)[1].split("### 6.3", 1)[0]
    for code in bundle_codes():
        assert f"`{code}`" in steps, code
    live = doc.split("### 6.6", 1)[1].split("\n## ", 1)[0]
    for code in live_codes():
        assert f"`{code}`" in live, code


def test_result_members(tables: dict) -> None:
    documented = [_span(row[0]) for row in tables["result-keys"]]
    result = Result()
    assert documented == list(result.as_dict())
    assert [_span(row[0]) for row in tables["scope-keys"]][2:] == list(result.covers)


def test_exit_statuses(vectors: dict, tmp_path: Path, doc: str) -> None:
    assert ("status 0 when the bundle verifies, 1 when it fails or no key was pinned, and 2 when the\n"
            "verification could not run") in doc
    assert '`{"status": "error", "detail": <message>}`' in doc
    vkey = vectors["key"]["vkey"]
    bad = _unpack(VECTORS / "full.tar.gz", tmp_path / "bad")
    (bad / "checkpoint.txt").write_text("tampered\n")
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        codes = [verifier_module.main([str(VECTORS / "full.tar.gz"), "--vkey", vkey]),
                 verifier_module.main([str(bad), "--vkey", vkey]),
                 verifier_module.main([str(tmp_path / "missing.tar.gz"), "--vkey", vkey])]
    assert codes == [0, 1, 2]
    printed = [json.loads(line) for line in out.getvalue().splitlines()]
    assert [p["status"] for p in printed] == ["ok", "fail", "error"]
    assert list(printed[2]) == ["status", "detail"]


# --------------------------------------------------------------------------------------------
# Section 7: the command lines

def _verify_py_options() -> set[str]:
    out = io.StringIO()
    with contextlib.redirect_stdout(out), pytest.raises(SystemExit):
        verifier_module.main(["--help"])
    return set(re.findall(r"(?<![\w-])--[a-z][a-z-]*", out.getvalue())) - {"--help"}


def test_command_lines_use_the_real_options(doc: str) -> None:
    from alertengine.cli.ledger import bundle, ledger

    cli = _marked_blocks(doc, "cli")
    assert set(cli) == {"verify.py", "bundle-verify"}
    standalone = _one_line(cli["verify.py"])
    assert standalone.startswith("python3 verify.py BUNDLE ")
    options = _verify_py_options()
    assert options == {"--vkey", "--checkpoint", "--witness-key"}
    assert set(re.findall(r"--[a-z-]+", standalone)) == options
    # the usage line in verify.py's own docstring shows the same command
    usage = (verifier_module.__doc__ or "").split("Usage::", 1)[1]
    assert "python3 verify.py BUNDLE" in usage and set(re.findall(r"--[a-z-]+", usage)) == options

    appliance = _one_line(cli["bundle-verify"])
    assert appliance.startswith("alertengine bundle verify BUNDLE ")
    command = bundle.commands["verify"]
    click_opts = {o for p in command.params for o in getattr(p, "opts", []) if o.startswith("--")}
    assert set(re.findall(r"--[a-z-]+", appliance)) == click_opts
    live_opts = {o for p in ledger.commands["verify"].params for o in getattr(p, "opts", []) if o.startswith("--")}
    assert {"--vkey", "--checkpoint"} <= live_opts
    assert "`alertengine ledger verify [--vkey KEY] [--checkpoint\nOLD.txt]`" in doc
    assert "`alertengine ledger key`" in doc


# --------------------------------------------------------------------------------------------
# Section 5: bundle files and the manifest

def _template(name: str) -> str:
    """A documented file name with its placeholder as ``{}``: ``checkpoints/<size>.txt`` -> ``checkpoints/{}.txt``."""
    return re.sub(r"<[^>]+>", "{}", name)


def _matches(template: str, name: str) -> bool:
    return re.fullmatch(".+".join(re.escape(part) for part in template.split("{}")), name) is not None


def exporter_file_names() -> set[str]:
    """Every name ``export_bundle`` assigns in its ``files`` mapping, f-string fields as ``{}``."""
    tree = ast.parse((PACKAGE / "store" / "export.py").read_text(encoding="utf-8"))
    func = next(n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "export_bundle")
    names = set()
    for node in ast.walk(func):
        if not isinstance(node, ast.Assign):
            continue
        for target in node.targets:
            if isinstance(target, ast.Subscript) and isinstance(target.value, ast.Name) and target.value.id == "files":
                key = target.slice
                if isinstance(key, ast.Constant) and isinstance(key.value, str):
                    names.add(key.value)
                elif isinstance(key, ast.JoinedStr):
                    names.add("".join(v.value if isinstance(v, ast.Constant) else "{}" for v in key.values))
                else:
                    raise AssertionError(f"files[...] with a key the test cannot read: {ast.dump(key)}")
    return names


def _documented_files(tables: dict) -> list[str]:
    return [_template(_span(row[0])) for row in tables["bundle-files"]]


def test_bundle_files_are_exactly_what_the_exporter_writes(tables: dict) -> None:
    documented = _documented_files(tables)
    assert len(documented) == len(set(documented))
    written = exporter_file_names()
    assert {"manifest.json", "entries.jsonl", "checkpoint.txt", "verify.py"} <= written
    assert set(documented) == written


def test_manifest_and_scope_members_of_the_sample_bundles(tables: dict) -> None:
    manifest_keys = [_span(row[0]) for row in tables["manifest-keys"]]
    scope_keys = [_span(row[0]) for row in tables["scope-keys"]]
    for name in ("full.tar.gz", "tenant-acme.tar.gz"):
        with tarfile.open(VECTORS / name) as tar:
            f = tar.extractfile("manifest.json")
            assert f is not None
            manifest = json.loads(f.read())
        assert list(manifest) == manifest_keys
        assert list(manifest["scope"]) == scope_keys
        assert manifest["format"] == FORMAT


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A real appliance's bundles: global (full), then tenant and incident ones that carry the
    first export's checkpoint and a consistency proof from it."""
    root = tmp_path_factory.mktemp("format-doc")
    data = init_data_dir(root / "data")
    db = data.open_database(Config(data_dir=data.path, checkpoint_interval=3600))
    try:
        for n in range(12):
            tenant = ("acme", "globex", SYSTEM_TENANT)[n % 3]
            db.append_sync(event(n, tenant, incident="INC-7" if tenant == "acme" and n > 2 else None))
        out = {"vkey": data.signer.vkey}
        out["global"] = export_module.export_bundle(db, root / "global.tar.gz").path
        db.append_sync(event(99, "globex"))
        out["tenant"] = export_module.export_bundle(db, root / "tenant.tar.gz", tenant="globex").path
        out["incident"] = export_module.export_bundle(db, root / "incident.tar.gz", incident="INC-7").path
    finally:
        db.close()
    return out  # type: ignore[return-value]


def _members(bundle: Path) -> dict[str, bytes]:
    with tarfile.open(bundle) as tar:
        out = {}
        for m in tar.getmembers():
            assert m.isfile(), m.name
            f = tar.extractfile(m)
            assert f is not None
            out[m.name] = f.read()
        assert tar.getnames()[0] == "manifest.json"
        assert tar.getnames()[1:] == sorted(tar.getnames()[1:])
    return out


def test_exported_bundles_hold_only_documented_files(exported: dict, tables: dict, doc: str) -> None:
    documented = _documented_files(tables)
    used: set[str] = set()
    for kind in ("global", "tenant", "incident"):
        members = _members(exported[kind])
        for name in members:
            hits = [t for t in documented if _matches(t, name)]
            assert hits, f"{kind} bundle holds {name}, which the document does not name"
            used.update(hits)
            if name.startswith("checkpoints/"):
                assert re.fullmatch(r"checkpoints/\d{12}\.txt", name), name
                size = int(name[len("checkpoints/"):-len(".txt")])
                assert members[name].decode().split("\n")[1] == str(size)
        result = verify_bundle(str(exported[kind]), exported["vkey"])
        assert result.status == "ok" and result.complete, result.as_dict()
        assert members["ledger-format.md"] == DOC_PATH.read_bytes()
    assert used == set(documented), f"no exported bundle showed {set(documented) - used}"


def test_exported_manifests_and_proof_lines(exported: dict, tables: dict, doc: str) -> None:
    manifest_keys = [_span(row[0]) for row in tables["manifest-keys"]]
    scope_keys = [_span(row[0]) for row in tables["scope-keys"]]
    assert f"`{FORMAT}`" in doc
    for kind in ("global", "tenant", "incident"):
        members = _members(exported[kind])
        manifest = json.loads(members["manifest.json"])
        assert list(manifest) == manifest_keys
        assert list(manifest["scope"]) == scope_keys
        assert manifest["format"] == FORMAT
        assert manifest["vkey"] == exported["vkey"] and manifest["origin"] == exported["vkey"].split("+")[0]
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z", manifest["created"])
        assert set(manifest["files"]) == set(members) - {"manifest.json"}
        for name, digest in manifest["files"].items():
            assert digest == hashlib.sha256(members[name]).hexdigest()
        entries = members["entries.jsonl"].split(b"\n")
        assert entries[-1] == b"" and all(entries[:-1])
        assert json.loads(entries[-2])["kind"] == "ledger.exported"
        if "proofs.jsonl" in members:
            for line in members["proofs.jsonl"].decode().splitlines():
                assert list(json.loads(line)) == ["seq", "path"]
        if "consistency.jsonl" in members:
            for line in members["consistency.jsonl"].decode().splitlines():
                assert list(json.loads(line)) == ["old_size", "new_size", "path"]
    assert '`{"seq": <seq>, "path": [<base64 hash>, ...]}`' in doc
    assert '`{"old_size": <size>, "new_size": N, "path": [<base64\nhash>, ...]}`' in doc
    assert f"it takes the {export_module.EARLIER_CHECKPOINTS + 1} largest" in doc
    tenant_manifest = json.loads(_members(exported["tenant"])["manifest.json"])
    assert tenant_manifest["scope"]["tenant"] == "globex" and tenant_manifest["scope"]["from_tseq"] is not None
    incident_manifest = json.loads(_members(exported["incident"])["manifest.json"])
    assert incident_manifest["scope"]["incident"] == "INC-7" and incident_manifest["scope"]["tenant"] == "acme"
    global_members = _members(exported["global"])
    assert "proofs.jsonl" not in global_members and "tenant-head.txt" not in global_members


# --------------------------------------------------------------------------------------------
# The document stands alone

def test_the_document_names_no_path_outside_the_repository(doc: str) -> None:
    assert not re.search(r"/work/|\.\./|(^|[^\w.])shared/|spec/ledger", doc)
    assert not re.search(r"(?<![\w/])/(home|tmp|root|usr|etc)/", doc)


def test_the_packaged_copy_is_this_document() -> None:
    packaged = PACKAGE / "ledger" / "ledger-format.md"
    assert packaged.read_bytes() == DOC_PATH.read_bytes()
    assert export_module.format_document() == DOC_PATH.read_bytes()

