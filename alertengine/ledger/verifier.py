"""Standalone verifier for AlertEngine ledgers and audit bundles (ledger format version 1, ledger-format.md).

This file is copied verbatim into every audit bundle as ``verify.py``: it needs only the Python
standard library and ``cryptography``, and imports nothing from AlertEngine. The appliance's own
``alertengine bundle verify`` and ``alertengine ledger verify`` use the same functions, so the
bundled script and the appliance always give the same verdicts.

Usage::

    python3 verify.py BUNDLE.tar.gz --vkey 'alertengine/<id>+<keyid>+<base64>' [--checkpoint OLD.txt] [--witness-key WKEY]

Exit status: 0 verified, 1 not verified (a failure, or no --vkey pinned), 2 could not run.
"""

from __future__ import annotations

import argparse
import base64
import collections
import hashlib
import io
import itertools
import json
import multiprocessing
import os
import re
import sys
import tarfile
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from typing import IO, Callable, Iterator, Sequence

FORMAT = "alertengine-audit-bundle/1"
ZERO_HASH_HEX = "0" * 64
MAX_BODY_BYTES = 65_536
REQUIRED_FIELDS = (
    "v", "seq", "prev", "tenant", "tseq", "tprev", "ts", "event_id", "kind", "incident",
    "stage", "actor", "decision", "reason", "confidence", "policy_version", "data",
)
EM_DASH = "\u2014"
CHUNK_LINES = 16_384          # entries.jsonl lines handed to a worker at a time (a power of two)
PARALLEL_FROM = 100_000       # smaller bundles are checked in this process
MEMORY_MEMBER_BYTES = 16 << 20  # tar members up to this size are kept in memory when the bundle is listed
_sha256 = hashlib.sha256


# --------------------------------------------------------------------------------------------
# Hashing (RFC 9162 section 2)

def leaf_hash(body: bytes) -> bytes:
    """SHA-256(0x00 || body)."""
    return _sha256(b"\x00" + body).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """SHA-256(0x01 || left || right)."""
    return _sha256(b"\x01" + left + right).digest()


def merkle_root(leaves: Sequence[bytes]) -> bytes:
    """Merkle Tree Hash of a list of leaf hashes (RFC 9162 2.1.1), bottom-up.

    Pairing adjacent nodes level by level and carrying an unpaired last node up unchanged gives
    exactly the left-balanced tree of the RFC.
    """
    if not leaves:
        return _sha256(b"").digest()
    level = list(leaves)
    while len(level) > 1:
        nxt = [_sha256(b"\x01" + level[i] + level[i + 1]).digest() for i in range(0, len(level) - 1, 2)]
        if len(level) % 2:
            nxt.append(level[-1])
        level = nxt
    return level[0]


class RootBuilder:
    """Incremental Merkle Tree Hash: the roots of perfect subtrees along the right edge."""

    __slots__ = ("size", "frontier")

    def __init__(self, size: int = 0, frontier: list[bytes] | None = None) -> None:
        self.size = size
        self.frontier: list[bytes] = list(frontier or [])

    def add(self, leaf: bytes) -> None:
        h = leaf
        n = self.size
        frontier = self.frontier
        while n & 1:
            h = _sha256(b"\x01" + frontier.pop() + h).digest()
            n >>= 1
        frontier.append(h)
        self.size += 1

    def root(self) -> bytes:
        if not self.frontier:
            return _sha256(b"").digest()
        h = self.frontier[-1]
        for left in reversed(self.frontier[:-1]):
            h = _sha256(b"\x01" + left + h).digest()
        return h

    def extend(self, levels: Sequence[bytes], count: int) -> None:
        """Add the first ``count`` leaves of ``levels`` (from ``tree_levels``): as whole perfect subtrees
        when the tree's size is a multiple of the largest one's size, else leaf by leaf."""
        top = count.bit_length() - 1
        if count and self.size & ((1 << top) - 1):
            leaves = levels[0]
            for i in range(count):
                self._push(leaves[32 * i:32 * i + 32], 0)
            return
        offset = 0
        for height in range(top, -1, -1):
            if count >> height & 1:
                i = (offset >> height) * 32
                self._push(levels[height][i:i + 32], height)
                offset += 1 << height

    def _push(self, h: bytes, height: int) -> None:
        """Add a perfect subtree of 2**height leaves; the size must be a multiple of that."""
        n = self.size >> height
        frontier = self.frontier
        while n & 1:
            h = _sha256(b"\x01" + frontier.pop() + h).digest()
            n >>= 1
        frontier.append(h)
        self.size += 1 << height


def tree_levels(leaves: bytes) -> list[bytes]:
    """The roots of the perfect subtrees over concatenated 32-byte leaf hashes, level by level: level
    h holds, for each i < n >> h, the root of leaves [i * 2**h, (i + 1) * 2**h); level 0 is ``leaves``."""
    levels = [leaves]
    level = leaves
    while len(level) >= 64:
        level = b"".join([_sha256(b"\x01" + level[i:i + 64]).digest() for i in range(0, len(level) - 63, 64)])
        levels.append(level)
    return levels


def root_from_inclusion(index: int, size: int, leaf: bytes, path: Sequence[bytes]) -> bytes | None:
    """RFC 9162 2.1.3.2: the root implied by an inclusion proof, or None if the proof is malformed."""
    if index < 0 or index >= size:
        return None
    fn, sn, r = index, size - 1, leaf
    for p in path:
        if sn == 0:
            return None
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            if not fn & 1:
                while not fn & 1 and fn != 0:
                    fn >>= 1
                    sn >>= 1
        else:
            r = node_hash(r, p)
        fn >>= 1
        sn >>= 1
    return r if sn == 0 else None


def verify_consistency(old_size: int, new_size: int, old_root: bytes, new_root: bytes,
                       path: Sequence[bytes]) -> bool:
    """RFC 9162 2.1.4.2."""
    if old_size < 0 or old_size > new_size:
        return False
    if old_size == new_size:
        return not path and old_root == new_root
    if old_size == 0:
        return not path
    path = list(path)
    if old_size & (old_size - 1) == 0:
        path = [old_root] + path
    if not path:
        return False
    fn, sn = old_size - 1, new_size - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    fr = sr = path[0]
    for c in path[1:]:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            fr = node_hash(c, fr)
            sr = node_hash(c, sr)
            if not fn & 1:
                while not fn & 1 and fn != 0:
                    fn >>= 1
                    sn >>= 1
        else:
            sr = node_hash(sr, c)
        fn >>= 1
        sn >>= 1
    return sn == 0 and fr == old_root and sr == new_root


# --------------------------------------------------------------------------------------------
# Keys and signed notes (C2SP signed-note, Go's golang.org/x/mod/sumdb/note)

class NoteError(Exception):
    """A signed note that does not verify; ``kind`` is SIG_INVALID or KEY_UNTRUSTED."""

    def __init__(self, kind: str, detail: str) -> None:
        super().__init__(detail)
        self.kind = kind
        self.detail = detail


def key_id(name: str, public_key: bytes) -> bytes:
    return _sha256(name.encode() + b"\n\x01" + public_key).digest()[:4]


def _parse_vkey(text: str, what: str, key_type: int, id_of: Callable[[str, bytes], bytes]) -> tuple[str, bytes, bytes]:
    """``<name>+<8 hex key id>+<base64(type byte || 32-byte Ed25519 key)>`` as (name, key id, key)."""
    parts = text.strip().split("+", 2)
    if len(parts) != 3 or not parts[0] or len(parts[1]) != 8:
        raise ValueError(f"malformed {what}: expected <name>+<8 hex>+<base64>")
    name, hex_id, encoded = parts
    try:
        kid = bytes.fromhex(hex_id)
        raw = base64.b64decode(encoded, validate=True)
    except ValueError as exc:
        raise ValueError(f"malformed {what}: {exc}") from None
    if len(raw) != 33 or raw[0] != key_type:
        raise ValueError(f"malformed {what}: not an Ed25519 (type 0x{key_type:02x}) key")
    if id_of(name, raw[1:]) != kid:
        raise ValueError(f"malformed {what}: key id does not match name and key")
    return name, kid, raw[1:]


@dataclass(frozen=True)
class VerifierKey:
    name: str
    key_id: bytes
    public_key: bytes

    @classmethod
    def parse(cls, text: str) -> "VerifierKey":
        return cls(*_parse_vkey(text, "verifier key", 0x01, key_id))

    def text(self) -> str:
        encoded = base64.b64encode(b"\x01" + self.public_key).decode()
        return f"{self.name}+{self.key_id.hex()}+{encoded}"

    def verify(self, message: bytes, signature: bytes) -> bool:
        from cryptography.exceptions import InvalidSignature
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

        try:
            Ed25519PublicKey.from_public_bytes(self.public_key).verify(signature, message)
            return True
        except InvalidSignature:
            return False


def split_note(note: str) -> tuple[str, list[tuple[str, bytes, bytes]]]:
    """Split a signed note into its text and its (name, key id, signature) lines."""
    sep = note.rfind("\n\n")
    if sep < 0 or not note.endswith("\n"):
        raise NoteError("SIG_INVALID", "malformed signed note: no signature block")
    text = note[: sep + 1]
    sigs = []
    for line in note[sep + 2:].splitlines():
        if not line.startswith(EM_DASH + " "):
            raise NoteError("SIG_INVALID", "malformed signature line")
        try:
            name, b64 = line[2:].split(" ")
            raw = base64.b64decode(b64, validate=True)
        except ValueError:
            raise NoteError("SIG_INVALID", "malformed signature line") from None
        if len(raw) < 5:
            raise NoteError("SIG_INVALID", "signature of the wrong length")
        sigs.append((name, raw[:4], raw[4:]))   # other signers' algorithms may differ in length
    if not sigs:
        raise NoteError("SIG_INVALID", "signed note has no signature")
    return text, sigs


def open_note(note: str, vkey: VerifierKey) -> str:
    """Return the note's text if ``vkey`` signed it; raise NoteError otherwise."""
    text, sigs = split_note(note)
    known = False
    for name, kid, sig in sigs:
        if name == vkey.name and kid == vkey.key_id:
            known = True
            if len(sig) == 64 and vkey.verify(text.encode(), sig):
                return text
    if known:
        raise NoteError("SIG_INVALID", "signature does not verify with the verifier key")
    names = ", ".join(f"{n}+{k.hex()}" for n, k, _ in sigs)
    raise NoteError("KEY_UNTRUSTED", f"signed by {names}, not by the pinned key {vkey.name}+{vkey.key_id.hex()}")


# --------------------------------------------------------------------------------------------
# Witness cosignatures (C2SP tlog-cosignature, version 1: Ed25519, signature type 0x04)

COSIGNATURE_TYPE = 0x04


def cosigner_key_id(name: str, public_key: bytes) -> bytes:
    return _sha256(name.encode() + b"\n\x04" + public_key).digest()[:4]


def cosigned_message(text: str, timestamp: int) -> bytes:
    """What a witness signs: ``cosignature/v1``, ``time <t>``, then the checkpoint's text."""
    return f"cosignature/v1\ntime {timestamp}\n".encode() + text.encode()


@dataclass(frozen=True)
class WitnessKey:
    """A witness's verifier key: ``<name>+<8 hex key id>+<base64(0x04 || Ed25519 public key)>``."""

    name: str
    key_id: bytes
    public_key: bytes

    @classmethod
    def parse(cls, text: str) -> "WitnessKey":
        return cls(*_parse_vkey(text, "witness key", COSIGNATURE_TYPE, cosigner_key_id))

    def text(self) -> str:
        return f"{self.name}+{self.key_id.hex()}+{base64.b64encode(bytes([COSIGNATURE_TYPE]) + self.public_key).decode()}"


def verify_cosignature(note: str, wkey: WitnessKey) -> int:
    """The time (POSIX seconds) of ``wkey``'s valid cosignature on ``note``; NoteError with kind
    WITNESS_MISSING when it has none, WITNESS_INVALID when the one it has does not verify."""
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    text, sigs = split_note(note)
    for name, kid, sig in sigs:
        if name != wkey.name or kid != wkey.key_id:
            continue
        if len(sig) != 72:
            raise NoteError("WITNESS_INVALID", f"the cosignature of {wkey.name} has the wrong length")
        timestamp = int.from_bytes(sig[:8], "big")
        if timestamp >= 1 << 63:
            raise NoteError("WITNESS_INVALID", f"the cosignature of {wkey.name} has an impossible time")
        try:
            Ed25519PublicKey.from_public_bytes(wkey.public_key).verify(sig[8:], cosigned_message(text, timestamp))
        except InvalidSignature:
            raise NoteError("WITNESS_INVALID", f"the cosignature of {wkey.name} does not verify") from None
        return timestamp
    raise NoteError("WITNESS_MISSING", f"the checkpoint carries no cosignature of the witness {wkey.name}")


def note_signer(note: str) -> str:
    """Name of the first signer of a note (used only when no key is pinned)."""
    return split_note(note)[1][0][0]


@dataclass(frozen=True)
class Checkpoint:
    origin: str
    size: int
    root: bytes


def parse_checkpoint(text: str) -> Checkpoint:
    lines = text.split("\n")
    if len(lines) < 4 or lines[-1] != "":
        raise NoteError("SIG_INVALID", "malformed checkpoint text")
    try:
        size = int(lines[1])
        root = base64.b64decode(lines[2], validate=True)
    except ValueError:
        raise NoteError("SIG_INVALID", "malformed checkpoint size or root") from None
    if size < 0 or len(root) != 32 or str(size) != lines[1]:
        raise NoteError("SIG_INVALID", "malformed checkpoint size or root")
    return Checkpoint(lines[0], size, root)


def b64(h: bytes) -> str:
    return base64.b64encode(h).decode()


def unb64(s: str) -> bytes:
    return base64.b64decode(s, validate=True)


# --------------------------------------------------------------------------------------------
# Entry checks shared by bundle and live verification

class VerificationFailure(Exception):
    def __init__(self, kind: str, seq: int | None, detail: str) -> None:
        super().__init__(f"{kind} at seq {seq}: {detail}" if seq is not None else f"{kind}: {detail}")
        self.kind = kind
        self.seq = seq
        self.detail = detail


def _make_canonical_dumps() -> "Callable[[object], str]":
    """json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False),
    through the C encoder built once when this Python has it (it is the hot path of verification)."""
    encoder = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    c_make_encoder = getattr(json.encoder, "c_make_encoder", None)
    if c_make_encoder is not None:
        try:
            fast = c_make_encoder(None, encoder.default, json.encoder.encode_basestring, None, ":", ",",
                                  True, False, False)
            if "".join(fast({"b": [1.5, None, "\u00e9\n"], "a": True}, 0)) == encoder.encode(
                    {"b": [1.5, None, "\u00e9\n"], "a": True}):
                return lambda obj: "".join(fast(obj, 0))
        except (TypeError, ValueError):
            pass
    return encoder.encode


_canonical_dumps = _make_canonical_dumps()
_scan_once = json.JSONDecoder().scan_once


def parse_entry(body: bytes, where: int | None) -> dict:
    """Parse one stored entry and check its form (ENCODING on any deviation)."""
    if len(body) > MAX_BODY_BYTES:
        raise VerificationFailure("ENCODING", where, f"entry of {len(body)} bytes exceeds {MAX_BODY_BYTES}")
    try:
        text = body.decode("utf-8")
        obj, end = _scan_once(text, 0)
        if end != len(text):
            raise ValueError("trailing data after the JSON object")
    except StopIteration:
        raise VerificationFailure("ENCODING", where, "not JSON") from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise VerificationFailure("ENCODING", where, f"not JSON: {exc}") from None
    if not isinstance(obj, dict):
        raise VerificationFailure("ENCODING", where, "entry is not a JSON object")
    missing = [f for f in REQUIRED_FIELDS if f not in obj]
    if missing:
        raise VerificationFailure("ENCODING", where, f"missing field(s): {', '.join(missing)}")
    if type(obj["v"]) is not int or obj["v"] != 1:   # true and 1.0 are canonical JSON too, and not version 1
        raise VerificationFailure("ENCODING", where, f"unsupported format version {obj['v']!r}")
    for f in ("seq", "tseq"):
        if type(obj[f]) is not int or obj[f] < 0:
            raise VerificationFailure("ENCODING", where, f"{f} is not a non-negative integer")
    if not isinstance(obj["data"], dict):
        raise VerificationFailure("ENCODING", where, "data is not an object")
    # Re-serialising also catches duplicate keys (the parse keeps one), NaN/Infinity (refused
    # here) and any whitespace or escaping that differs from the canonical form.
    try:
        canon = _canonical_dumps(obj)
    except ValueError:
        canon = None
    if canon is None or canon.encode("utf-8") != body:
        raise VerificationFailure("ENCODING", obj["seq"], "stored bytes are not the canonical serialisation")
    return obj


# The fast path of the entry check. A body without backslashes and control characters whose text
# matches _FAST_ENTRY is canonical exactly when its data members are sorted: its strings need no
# escapes, its integers are short and in plain form, its floats are positional with at most 15
# significant digits, no needless zero and a magnitude from 1e-4 to 1e15 (so repr() writes them so:
# such a decimal is the only one of at most 15 digits that reads back as its binary64 value), and
# the top level has the seventeen members in sorted order. Such a body is one that parse_entry
# accepts, with the same values; every other body goes through parse_entry itself.
_NOT_FAST = bytes(range(32)) + b"\\"
_S = r'"[^"]*"'
_V = r'(?:"[^"]*"|0|-?[1-9][0-9]{0,17}|null|true|false)'
_N = r'(0|[1-9][0-9]{0,17})'
_DV = (r'(?:"[^"]*"|0(?=[,}])|-?[1-9][0-9]{0,17}(?=[,}])|null|true|false'
       r'|-?(?=[0-9.]{3,16}[,}])(?:[1-9][0-9]*\.(?:0|[0-9]*[1-9])|0\.0{0,3}[1-9](?:[0-9]*[1-9])?))')
_FAST_ENTRY = re.compile(
    rf'\{{"actor":{_V},"confidence":{_V},"data":(\{{(?:{_S}:{_DV}(?:,{_S}:{_DV})*)?\}}),"decision":{_V},'
    rf'"event_id":{_V},"incident":{_V},"kind":{_V},"policy_version":{_V},"prev":"([^"]*)","reason":{_V},'
    rf'"seq":{_N},"stage":{_V},"tenant":"([^"]*)","tprev":"([^"]*)","ts":{_V},"tseq":{_N},"v":1\}}')
_FAST_KEY = re.compile(r'"([^"]*)":(?:"[^"]*"|[^,}]*)')   # a data member, read as its key
_key_orders: dict[tuple, bool] = {}


def fast_entry_fields(body: bytes) -> tuple | None:
    """(seq, tenant, tseq, prev, tprev) of a body that parse_entry accepts, found without parsing it,
    or None when the body is not of the common form this recognises (parse_entry decides then)."""
    if len(body) > MAX_BODY_BYTES or len(body.translate(None, _NOT_FAST)) != len(body):
        return None
    try:
        m = _FAST_ENTRY.fullmatch(body.decode("utf-8"))
    except UnicodeDecodeError:
        return None
    if m is None:
        return None
    data, prev, seq, tenant, tprev, tseq = m.groups()
    keys = tuple(_FAST_KEY.findall(data))
    ordered = _key_orders.get(keys)
    if ordered is None:   # strictly ascending: sorted, and no key twice
        ordered = list(keys) == sorted(set(keys))
        if len(_key_orders) < 4096:
            _key_orders[keys] = ordered
    if not ordered:
        return None
    return int(seq), tenant, int(tseq), prev, tprev


def entry_fields(obj: dict) -> tuple:
    """(seq, tenant, tseq, prev, tprev) of a parsed entry."""
    return obj["seq"], obj["tenant"], obj["tseq"], obj["prev"], obj["tprev"]


def check_lines(lines: Sequence[bytes]) -> tuple:
    """The per-entry part of bundle verification for consecutive lines of entries.jsonl: form and
    leaf hash. Runs in a worker process for large bundles, so it depends on nothing but the lines.

    Returns (seqs, tenants, tseqs, prevs, tprevs, leaves, failure): the fields of the entries up
    to the first bad one, their leaf hashes concatenated, and that entry's failure as
    (kind, seq, detail) — seq -1 standing for "one more than the seq of the line before the
    first" — or the exception it raised; failure is None when every line passed."""
    seqs: list[int] = []
    tenants: list = []
    tseqs: list[int] = []
    prevs: list = []
    tprevs: list = []
    leaves: list[bytes] = []
    failure: tuple | BaseException | None = None
    where = -1
    try:
        for line in lines:
            seq, tenant, tseq, prev, tprev = fast_entry_fields(line) or entry_fields(parse_entry(line, where))
            seqs.append(seq)
            tenants.append(tenant)
            tseqs.append(tseq)
            prevs.append(prev)
            tprevs.append(tprev)
            leaves.append(_sha256(b"\x00" + line).digest())
            where = seq + 1
    except VerificationFailure as exc:
        failure = (exc.kind, exc.seq, exc.detail)
    except Exception as exc:   # raised where the one-pass check would meet it
        failure = exc
    return seqs, tenants, tseqs, prevs, tprevs, b"".join(leaves), failure


class ChainChecker:
    """Checks seq order, prev links and per-tenant chains, entry by entry.

    A tenant bundle (``tenant_scope``) holds one tenant's contiguous tseq range. In a global bundle
    every tenant's chain is followed too; a bundle that starts after seq 0 takes each tenant's first
    entry in it as given."""

    def __init__(self, tenant_scope: str | None = None, contiguous_seq: bool = True) -> None:
        self.tenant_scope = tenant_scope
        self.contiguous_seq = contiguous_seq
        self.last_seq: int | None = None
        self.last_leaf: bytes | None = None
        self.last_tseq: int | None = None
        self.tenant_last: dict[str, tuple[int, bytes]] = {}
        self.first: dict | None = None
        self.last: dict | None = None

    def add(self, obj: dict, leaf: bytes) -> None:
        seq = obj["seq"]
        if self.tenant_scope is not None and obj["tenant"] != self.tenant_scope:
            raise VerificationFailure("SCOPE_VIOLATION", seq,
                                      f"entry of tenant {obj['tenant']!r} in a bundle for {self.tenant_scope!r}")
        if self.last_seq is None:
            if seq == 0 and obj["prev"] != ZERO_HASH_HEX:
                raise VerificationFailure("CHAIN_BREAK", seq, "first entry's prev is not 64 zeros")
        else:
            if seq <= self.last_seq:
                raise VerificationFailure("CHAIN_BREAK", seq, f"seq {seq} does not ascend after {self.last_seq}")
            if seq != self.last_seq + 1 and self.contiguous_seq:
                raise VerificationFailure("SEQ_GAP", self.last_seq + 1, f"entries {self.last_seq + 1}..{seq - 1} are missing")
            if seq == self.last_seq + 1 and obj["prev"] != self.last_leaf.hex():
                raise VerificationFailure("CHAIN_BREAK", seq, "prev is not the leaf hash of the previous entry")
        if self.tenant_scope is not None:
            tseq = obj["tseq"]
            if self.last_tseq is None:
                if tseq == 0 and obj["tprev"] != ZERO_HASH_HEX:
                    raise VerificationFailure("TENANT_CHAIN_BREAK", seq, "tenant's first entry has a non-zero tprev")
            elif tseq != self.last_tseq + 1 or obj["tprev"] != self.last_leaf.hex():
                raise VerificationFailure("TENANT_CHAIN_BREAK", seq, f"tseq {tseq} / tprev do not follow tseq {self.last_tseq}")
            self.last_tseq = tseq
        else:
            t = obj["tenant"]
            prior = self.tenant_last.get(t)
            exp_tseq, exp_tprev = (prior[0] + 1, prior[1].hex()) if prior else (0, ZERO_HASH_HEX)
            from_genesis = (self.first["seq"] if self.first is not None else seq) == 0
            if (prior is not None or from_genesis) and (obj["tseq"] != exp_tseq or obj["tprev"] != exp_tprev):
                raise VerificationFailure("TENANT_CHAIN_BREAK", seq,
                                          f"tenant {t!r}: expected tseq {exp_tseq} linked to its previous entry")
            self.tenant_last[t] = (obj["tseq"], leaf)
        self.last_seq = seq
        self.last_leaf = leaf
        if self.first is None:
            self.first = obj
        self.last = obj


def check_run(lines: Sequence[bytes], start: int, size: int) -> tuple:
    """Check consecutive entries.jsonl lines of a global bundle without proofs (its ``start``-th line
    first, ``size`` the checkpoint's) on their own: form, leaf hashes, and every link that does not
    reach before the first line. Runs in a worker process for large bundles.

    What the lines' own links cannot decide is left to ``ChainChecker.add`` in the caller, which
    follows the whole file: the first line (seq, prev, its tenant link) and each other line that
    is the first of its tenant here (its tenant link). Returns (specials, count, last, tenant_last,
    full, levels, failure): those lines as (index, seq, tenant, tseq, prev, tprev), in order; how
    many lines passed; the last one's (seq, tseq); each tenant's last (tseq, leaf); whether every
    seq equals its line's position; ``tree_levels`` of the leaf hashes; the first failure met here
    as in ``check_lines``. A ChainChecker that checks the specials, in the state the lines before
    each would have left it, finds what one that checked every line would find."""
    specials: list[tuple] = []
    tenant_last: dict = {}
    leaves: list[bytes] = []
    failure: tuple | BaseException | None = None
    full = True
    last_seq, last_hex, last_tseq, where = -1, "", -1, -1
    try:
        for i, line in enumerate(lines):
            seq, tenant, tseq, prev, tprev = fast_entry_fields(line) or entry_fields(parse_entry(line, where))
            if seq >= size:
                raise VerificationFailure("SCOPE_VIOLATION", seq, f"entry beyond the checkpoint's size {size}")
            leaf = _sha256(b"\x00" + line).digest()
            leaf_hex = leaf.hex()
            if i == 0:
                specials.append((i, seq, tenant, tseq, prev, tprev))
            else:   # ChainChecker.add, the previous entry being the previous line
                if seq <= last_seq:
                    raise VerificationFailure("CHAIN_BREAK", seq, f"seq {seq} does not ascend after {last_seq}")
                if seq != last_seq + 1:
                    raise VerificationFailure("SEQ_GAP", last_seq + 1, f"entries {last_seq + 1}..{seq - 1} are missing")
                if prev != last_hex:
                    raise VerificationFailure("CHAIN_BREAK", seq, "prev is not the leaf hash of the previous entry")
                prior = tenant_last.get(tenant)
                if prior is None:
                    specials.append((i, seq, tenant, tseq, prev, tprev))
                elif tseq != prior[0] + 1 or tprev != prior[2]:
                    raise VerificationFailure("TENANT_CHAIN_BREAK", seq,
                                              f"tenant {tenant!r}: expected tseq {prior[0] + 1} linked to its previous entry")
            tenant_last[tenant] = (tseq, leaf, leaf_hex)
            if seq != start + i:
                full = False
            leaves.append(leaf)
            last_seq, last_hex, last_tseq, where = seq, leaf_hex, tseq, seq + 1
    except VerificationFailure as exc:
        failure = (exc.kind, exc.seq, exc.detail)
    except Exception as exc:   # raised where the one-pass check would meet it
        failure = exc
    return (specials, len(leaves), (last_seq, last_tseq), {t: v[:2] for t, v in tenant_last.items()}, full,
            tree_levels(b"".join(leaves)), failure)


def _stitch_run(checker: ChainChecker, run: tuple, res: Result) -> None:
    """Follow one ``check_run`` result with the checker: its specials, then its failure, then its state."""
    specials, count, (last_seq, last_tseq), tenant_last, _full, levels, failure = run
    checked = res.entries_checked
    for i, seq, tenant, tseq, prev, tprev in specials:
        res.entries_checked = checked + i
        if i:   # the line before, already checked against this one: as if the checker had just added it
            checker.last_seq, checker.last_leaf = seq - 1, levels[0][32 * i - 32:32 * i]
        checker.add({"seq": seq, "tenant": tenant, "tseq": tseq, "prev": prev, "tprev": tprev},
                    levels[0][32 * i:32 * i + 32])
    res.entries_checked = checked + count
    _raise_failure(checker, failure)
    if count:
        checker.last_seq, checker.last_leaf = last_seq, levels[0][32 * count - 32:32 * count]
        checker.tenant_last.update(tenant_last)
        checker.last = {"seq": last_seq, "tseq": last_tseq}


def _runs_root(runs: Sequence[tuple[Sequence[bytes], int]], size: int) -> bytes:
    """MTH of the first ``size`` leaves of consecutive runs of (``tree_levels``, number of leaves)."""
    tree = RootBuilder()
    for levels, count in runs:
        if tree.size >= size:
            break
        tree.extend(levels, min(count, size - tree.size))
    return tree.root()


def _raise_failure(checker: ChainChecker, failure: tuple | BaseException | None) -> None:
    """Raise the failure that ``check_lines`` or ``check_run`` met, if any."""
    if isinstance(failure, tuple):
        kind, seq, detail = failure
        if seq == -1:   # the first line: where parse_entry would have been told the entry sits
            seq = checker.last_seq + 1 if checker.last_seq is not None else None
        raise VerificationFailure(kind, seq, detail)
    if failure is not None:
        raise failure


# --------------------------------------------------------------------------------------------
# Bundle verification

@dataclass
class Result:
    status: str = "ok"
    kind: str | None = None
    first_bad_seq: int | None = None
    entries_checked: int = 0
    checkpoint_size: int = 0
    root: str = ""
    pinned: bool = True
    covers: dict = field(default_factory=lambda: {"from_seq": None, "to_seq": None, "from_tseq": None, "to_tseq": None})
    complete: bool = False
    detail: str = ""
    witnessed: list = field(default_factory=list)   # [{"witness": name, "time": POSIX seconds}]

    def fail(self, kind: str, seq: int | None, detail: str) -> "Result":
        self.status, self.kind, self.first_bad_seq, self.detail = "fail", kind, seq, detail
        return self

    def as_dict(self) -> dict:
        return {"status": self.status, "kind": self.kind, "first_bad_seq": self.first_bad_seq,
                "entries_checked": self.entries_checked, "checkpoint_size": self.checkpoint_size,
                "root": self.root, "pinned": self.pinned, "covers": self.covers,
                "complete": self.complete, "witnessed": self.witnessed, "detail": self.detail}


class BundleReader:
    """Reads a bundle from a .tar.gz file or an unpacked directory."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._tar: tarfile.TarFile | None = None
        self._members: dict[str, tarfile.TarInfo] = {}
        if os.path.isdir(path):
            return
        self._cache: dict[str, bytes] = {}
        self._tar = tarfile.open(path, "r:*")
        # Listing a compressed tarball decompresses all of it: the small files are kept on the way,
        # so that reading them later does not decompress it again from the start.
        while True:
            m = self._tar.next()
            if m is None:
                break
            if m.isfile():
                name = os.path.normpath(m.name).lstrip("./") or m.name
                self._members[name] = m
                self._cache.pop(name, None)
                if m.size <= MEMORY_MEMBER_BYTES:
                    data = self._tar.extractfile(m)
                    if data is not None:
                        self._cache[name] = data.read()

    def names(self) -> list[str]:
        if self._tar is None:
            out = []
            for root, _dirs, files in os.walk(self.path):
                for f in files:
                    out.append(os.path.relpath(os.path.join(root, f), self.path).replace(os.sep, "/"))
            return sorted(out)
        return sorted(self._members)

    def open(self, name: str) -> IO[bytes] | None:
        if self._tar is None:
            p = os.path.join(self.path, name)
            return open(p, "rb") if os.path.isfile(p) else None
        m = self._members.get(name)
        if m is not None and name in self._cache and not self._tar.closed:
            return io.BytesIO(self._cache[name])
        return self._tar.extractfile(m) if m is not None else None

    def read(self, name: str) -> bytes | None:
        f = self.open(name)
        if f is None:
            return None
        with f:
            return f.read()

    def close(self) -> None:
        if self._tar is not None:
            self._tar.close()
            self._cache.clear()


def _line_batches(f: IO[bytes], digest: "hashlib._Hash", chunk: int) -> Iterator[list[bytes]]:
    """The lines of ``f`` (split at line feeds; a final empty line is not one) in lists of ``chunk``,
    every byte read also going into ``digest``."""
    pending = b""
    batch: list[bytes] = []
    while True:
        block = f.read(1 << 20)
        if not block:
            break
        digest.update(block)
        parts = (pending + block).split(b"\n")
        pending = parts.pop()
        batch += parts
        while len(batch) >= chunk:
            yield batch[:chunk]
            del batch[:chunk]
    if pending:
        batch.append(pending)
    if batch:
        yield batch


def _cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def _look_ahead(batches: Iterator[list[bytes]], lines: int) -> tuple[Iterator[list[bytes]], bool]:
    """The same batches, and whether they hold at least ``lines`` lines (reading no further than that)."""
    head, seen = [], 0
    for batch in batches:
        head.append(batch)
        seen += len(batch)
        if seen >= lines:
            return itertools.chain(head, batches), True
    return iter(head), False


def _checked_batches(batches: Iterator[list[bytes]], workers: int, run: tuple[int, int] | None) -> Iterator[tuple]:
    """``check_lines`` of each batch, or with ``run`` = (checkpoint size, lines per batch) ``check_run``,
    in order: here, or in ``workers`` processes while the batches that follow are read (and in this
    process again should the pool fail)."""
    tasks = ((check_lines, (batch,)) if run is None else (check_run, (batch, k * run[1], run[0]))
             for k, batch in enumerate(batches))
    pool = None
    if workers > 1:
        try:
            pool = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"))
        except (OSError, ImportError, NotImplementedError):   # no process support here
            pool = None
    if pool is None:
        for fn, args in tasks:
            yield check_lines(*args) if fn is check_lines else check_run(*args)
        return
    pending: collections.deque = collections.deque()
    try:
        for fn, args in tasks:
            try:
                pending.append((fn, args, pool.submit(fn, *args)))
            except BrokenProcessPool:
                pending.append((fn, args, None))
            if len(pending) > 2 * workers:
                yield _task_result(*pending.popleft())
        while pending:
            yield _task_result(*pending.popleft())
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def _task_result(fn: Callable[..., tuple], args: tuple, future: Future | None) -> tuple:
    try:
        if future is not None:
            return future.result()
    except BrokenProcessPool:   # a worker died (killed, out of memory): do its share here
        pass
    return fn(*args)


def verify_bundle(path: str, vkey_text: str | None, held_checkpoint: str | None = None,
                  witness_keys: Sequence[str] = (), *, workers: int | None = None,
                  chunk: int = CHUNK_LINES) -> Result:
    """Verify an audit bundle (ledger-format.md, "Verification"). Raises ValueError/OSError if it cannot run.

    Success is ``"ok"`` only against a pinned key: without ``vkey_text`` every check still runs
    (against the key the bundle's own manifest names) but the status is ``"unpinned"``, since
    anyone could have written that manifest. Each of ``witness_keys`` must have cosigned the
    bundle's checkpoint.

    The entries are parsed and hashed ``chunk`` lines at a time, in ``workers`` processes
    (default: one per CPU, at most 4, when entries.jsonl holds at least PARALLEL_FROM lines; 1:
    in this process), while this process follows the chains and the tree in order: the verdict
    is the same either way."""
    witnesses = [WitnessKey.parse(k) for k in witness_keys]
    res = Result()
    reader = BundleReader(path)
    try:
        _verify_bundle(reader, vkey_text, held_checkpoint, res, witnesses, workers, max(1, chunk))
        if res.status == "ok" and not res.pinned:
            res.fail("KEY_NOT_PINNED", None, "every check passed, against the key named in the bundle's own "
                     "manifest, which anyone could have written: nothing is proven until you pin the appliance's "
                     "key with --vkey. " + res.detail)
            res.status = "unpinned"
        return res
    except VerificationFailure as f:
        return res.fail(f.kind, f.seq, f.detail)
    except NoteError as e:
        return res.fail(e.kind, None, e.detail)
    finally:
        reader.close()


def _verify_bundle(reader: BundleReader, vkey_text: str | None, held: str | None, res: Result,
                   witnesses: Sequence[WitnessKey] = (), workers: int | None = None,
                   chunk: int = CHUNK_LINES) -> Result:
    raw_manifest = reader.read("manifest.json")
    if raw_manifest is None:
        return res.fail("MANIFEST_MISMATCH", None, "manifest.json is missing")
    try:
        manifest = json.loads(raw_manifest)
        scope = manifest["scope"]
        files: dict[str, str] = manifest["files"]
        if manifest.get("format") != FORMAT:
            return res.fail("MANIFEST_MISMATCH", None, f"unknown bundle format {manifest.get('format')!r}")
    except (ValueError, KeyError, TypeError) as exc:
        return res.fail("MANIFEST_MISMATCH", None, f"manifest.json is unreadable: {exc}")

    # 1. every file against the manifest (entries.jsonl is hashed while it streams, below)
    present = set(reader.names()) - {"manifest.json"}
    for name in sorted(present - set(files)):
        return res.fail("MANIFEST_MISMATCH", None, f"{name} is not listed in manifest.json")
    for name, want in sorted(files.items()):
        if name == "entries.jsonl":
            if name not in present:
                return res.fail("MANIFEST_MISMATCH", None, f"{name} is listed in manifest.json but missing")
            continue
        data = reader.read(name)
        if data is None:
            return res.fail("MANIFEST_MISMATCH", None, f"{name} is listed in manifest.json but missing")
        if _sha256(data).hexdigest() != want:
            return res.fail("MANIFEST_MISMATCH", None, f"{name} does not match its manifest hash")
    if "entries.jsonl" not in files or "checkpoint.txt" not in files:
        return res.fail("MANIFEST_MISMATCH", None, "entries.jsonl and checkpoint.txt must both be listed")

    # 2. the checkpoint's signature
    if vkey_text:
        vkey = VerifierKey.parse(vkey_text)
    else:
        res.pinned = False
        vkey = VerifierKey.parse(manifest.get("vkey", ""))
    note = (reader.read("checkpoint.txt") or b"").decode("utf-8", "replace")
    cp = parse_checkpoint(open_note(note, vkey))
    if cp.origin != vkey.name:
        return res.fail("KEY_UNTRUSTED", None, f"checkpoint origin {cp.origin!r} is not the key's log {vkey.name!r}")
    res.checkpoint_size, res.root = cp.size, b64(cp.root)
    for witness in witnesses:   # each required witness cosigned this very checkpoint
        res.witnessed.append({"witness": witness.name, "time": verify_cosignature(note, witness)})
    if manifest.get("checkpoint_size") != cp.size:
        return res.fail("MANIFEST_MISMATCH", None, "manifest checkpoint_size differs from the signed checkpoint")

    tenant = scope.get("tenant")
    proofs: dict[int, list[bytes]] = {}
    raw_proofs = reader.read("proofs.jsonl")
    if raw_proofs is not None:
        for line in raw_proofs.splitlines():
            if line.strip():
                p = json.loads(line)
                proofs[int(p["seq"])] = [unb64(h) for h in p["path"]]

    # 3. + 4. entries: form, chains, inclusion
    checker = ChainChecker(tenant_scope=tenant, contiguous_seq=tenant is None)
    add = checker.add
    leaves = bytearray()   # in the order of the file, when there are no proofs and no runs
    digest = _sha256()
    f = reader.open("entries.jsonl")
    entry_failure: VerificationFailure | None = None
    full = True
    batches = _line_batches(f, digest, chunk)
    if workers is None:
        batches, enough = _look_ahead(batches, PARALLEL_FROM)
        workers = min(_cpus(), 4) if enough else 1
    stitched = tenant is None and raw_proofs is None   # a global bundle whose tree is rebuilt here
    runs: list[tuple[list[bytes], int]] = []            # (tree levels, leaves) of each batch, in order
    results = _checked_batches(batches, workers, (cp.size, chunk) if stitched else None)
    try:
        for result in results:
            if stitched:
                _stitch_run(checker, result, res)
                full = full and result[4]
                runs.append((result[5], result[1]))
                continue
            seqs, tenants, tseqs, prevs, tprevs, batch_leaves, failure = result
            i = 0
            try:
                for i, seq in enumerate(seqs):
                    if seq >= cp.size:
                        raise VerificationFailure("SCOPE_VIOLATION", seq, f"entry beyond the checkpoint's size {cp.size}")
                    leaf = batch_leaves[32 * i:32 * i + 32]
                    add({"seq": seq, "tenant": tenants[i], "tseq": tseqs[i], "prev": prevs[i], "tprev": tprevs[i]}, leaf)
                    if raw_proofs is not None and seq in proofs:
                        implied = root_from_inclusion(seq, cp.size, leaf, proofs[seq])
                        if implied is None:
                            raise VerificationFailure("PROOF_INVALID", seq, "malformed inclusion proof")
                        if implied != cp.root:
                            raise VerificationFailure("ROOT_MISMATCH", seq,
                                                      "entry and inclusion proof do not lead to the checkpoint's root")
                    elif raw_proofs is not None:
                        raise VerificationFailure("PROOF_INVALID", seq, "no inclusion proof for this entry")
                    elif seq != len(leaves) // 32 + i:
                        full = False
            except VerificationFailure:
                res.entries_checked += i   # the entries before the failing one
                raise
            res.entries_checked += len(seqs)
            if raw_proofs is None:
                leaves += batch_leaves
            _raise_failure(checker, failure)
    except VerificationFailure as exc:
        entry_failure = exc
    finally:
        results.close()
        for _ in iter(lambda: f.read(1 << 20), b""):
            digest.update(_)
        f.close()
    if digest.hexdigest() != files["entries.jsonl"]:
        seq = entry_failure.seq if entry_failure else None
        extra = f"; first inconsistent entry: {entry_failure}" if entry_failure else ""
        return res.fail("MANIFEST_MISMATCH", seq, "entries.jsonl does not match its manifest hash" + extra)
    if entry_failure:
        raise entry_failure
    if checker.first is None:
        return res.fail("SCOPE_VIOLATION", None, "the bundle holds no entries")
    if leaves:
        runs.append((tree_levels(bytes(leaves)), len(leaves) // 32))
    count = sum(n for _, n in runs)
    if raw_proofs is None:
        if not full or count != cp.size:
            return res.fail("PROOF_INVALID", None,
                            "bundle omits proofs.jsonl but does not hold every entry 0..N-1 of the checkpoint")
        if _runs_root(runs, count) != cp.root:
            return res.fail("ROOT_MISMATCH", None, "the entries' Merkle root differs from the signed checkpoint")

    first, last = checker.first, checker.last
    res.covers = {"from_seq": first["seq"], "to_seq": last["seq"],
                  "from_tseq": first["tseq"] if tenant is not None else None,
                  "to_tseq": last["tseq"] if tenant is not None else None}

    # 5. scope bounds and the tenant head
    for key in ("from_seq", "to_seq", "from_tseq", "to_tseq"):
        if scope.get(key) != res.covers[key]:
            bad = first["seq"] if key.startswith("from") else last["seq"]
            return res.fail("SCOPE_VIOLATION", bad,
                            f"entries cover {key}={res.covers[key]}, manifest scope says {scope.get(key)}")
    if tenant is None:
        res.complete = last["seq"] == cp.size - 1
    else:
        head_note = reader.read("tenant-head.txt")
        if head_note is None:
            return res.fail("TENANT_HEAD_MISMATCH", None, "tenant bundle without tenant-head.txt")
        head_text = open_note(head_note.decode("utf-8", "replace"), vkey)
        hl = head_text.split("\n")
        if len(hl) != 4 or hl[0] != f"{vkey.name}/tenant/{tenant}":
            return res.fail("TENANT_HEAD_MISMATCH", None, "tenant head names another log or tenant")
        count, head_leaf = int(hl[1]), unb64(hl[2])
        if last["tseq"] > count - 1:
            return res.fail("TENANT_HEAD_MISMATCH", last["seq"], "entries go beyond the signed tenant head")
        if last["tseq"] == count - 1 and checker.last_leaf != head_leaf:
            return res.fail("TENANT_HEAD_MISMATCH", last["seq"], "last entry differs from the signed tenant head")
        res.complete = last["tseq"] == count - 1

    # 6. consistency with earlier checkpoints: the bundle's own, and one the auditor holds
    older = _bundle_checkpoints(reader, files)
    if held:
        older.append(("held checkpoint", held))
    for label, old_note in older:
        old = parse_checkpoint(open_note(old_note, vkey))
        if old.origin != cp.origin:
            return res.fail("KEY_UNTRUSTED", None, f"{label} belongs to log {old.origin!r}")
        if old.size > cp.size:
            return res.fail("ROLLBACK", None, f"{label} has size {old.size}, larger than this bundle's {cp.size}")
        if raw_proofs is None:
            ok = _runs_root(runs, old.size) == old.root
        else:
            path = _consistency_paths(reader).get((old.size, cp.size))
            if path is None:
                if label == "held checkpoint":
                    res.detail = f"no consistency proof from size {old.size} in this bundle; held checkpoint not checked"
                    continue
                return res.fail("FORK", None, f"{label}: no consistency proof from size {old.size}")
            ok = verify_consistency(old.size, cp.size, old.root, cp.root, path)
        if not ok:
            return res.fail("FORK", None, f"{label} (size {old.size}) is not consistent with the checkpoint")
    if not res.detail:
        res.detail = f"{res.entries_checked} entries verified against checkpoint {cp.size}" + (
            "" if res.complete else "; the bundle is INCOMPLETE: it stops before the end of what it could hold")
    return res


def _bundle_checkpoints(reader: BundleReader, files: dict[str, str]) -> list[tuple[str, str]]:
    out = []
    for name in sorted(files):
        if name.startswith("checkpoints/") and name.endswith(".txt"):
            out.append((name, (reader.read(name) or b"").decode("utf-8", "replace")))
    return out


def _consistency_paths(reader: BundleReader) -> dict[tuple[int, int], list[bytes]]:
    raw = reader.read("consistency.jsonl") or b""
    out = {}
    for line in raw.splitlines():
        if line.strip():
            p = json.loads(line)
            out[(int(p["old_size"]), int(p["new_size"]))] = [unb64(h) for h in p["path"]]
    return out


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="verify.py", description="Verify an AlertEngine audit bundle offline.")
    ap.add_argument("bundle", help="the .tar.gz bundle, or a directory it was unpacked into")
    ap.add_argument("--vkey", help="the appliance's verifier key you pinned (name+keyid+base64)")
    ap.add_argument("--checkpoint", help="an earlier signed checkpoint you hold, to check consistency")
    ap.add_argument("--witness-key", action="append", default=[],
                    help="a witness's key (name+keyid+base64) whose cosignature the checkpoint must carry; repeatable")
    args = ap.parse_args(argv)
    try:
        held = None
        if args.checkpoint:
            with open(args.checkpoint, encoding="utf-8") as f:
                held = f.read()
        result = verify_bundle(args.bundle, args.vkey, held, args.witness_key)
    except (OSError, ValueError, tarfile.TarError) as exc:
        print(json.dumps({"status": "error", "detail": str(exc)}))
        return 2
    print(json.dumps(result.as_dict()))
    return 0 if result.status == "ok" else 1


if __name__ == "__main__":
    sys.exit(main())
