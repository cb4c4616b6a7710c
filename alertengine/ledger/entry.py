"""Ledger events: what callers hand the writer, their validation, and canonical entry bytes."""

from __future__ import annotations

import datetime as _dt
import hashlib
import hmac
import json
import math
import os
import re
import secrets
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Mapping, NamedTuple

from ..errors import LedgerInputError

MAX_BODY_BYTES = 65_536
SYSTEM_TENANT = "_system"
ZERO_HASH_HEX = "0" * 64

_KIND_RE = re.compile(r"^[a-z][a-z0-9_]*(\.[a-z0-9_]+)+$")
_TENANT_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.:-]{0,63}$")
# Field names that would carry a secret; a fingerprint field is the allowed way to refer to one.
_SECRET_KEY_RE = re.compile(
    r"(secret|password|passwd|passphrase|token|api[_-]?key|private[_-]?key|authorization|routing[_-]?key|"
    r"credential|cookie|signing[_-]?key)", re.I)
_FINGERPRINT_KEY_RE = re.compile(r"(fingerprint|_sha256|_hash)$", re.I)
_FINGERPRINT_VALUE_RE = re.compile(r"^(sha256:)?[0-9a-f]{12,64}$")
# Values that look like well-known credentials, wherever they appear.
_SECRET_VALUE_RE = re.compile(
    r"(sk-ant-[A-Za-z0-9_-]{8,}|sk-[A-Za-z0-9]{20,}|xox[abposr]-[A-Za-z0-9-]{10,}|gh[pousr]_[A-Za-z0-9]{20,}|"
    r"AKIA[0-9A-Z]{16}|\b\d{6,12}:[A-Za-z0-9_-]{30,}\b|-----BEGIN [A-Z ]*PRIVATE KEY-----|"
    r"\beyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,})")


_identity_key: bytes = secrets.token_bytes(32)   # replaced by the install's key when its data directory opens


def set_identity_key(key: bytes) -> None:
    """Use the install's fingerprint key (``fingerprint.key`` in the data directory) for this process.
    One process serves one appliance, so the key is process-wide; until it is set, a random key
    stands in (fingerprints are then unlinkable, never unkeyed)."""
    global _identity_key
    if len(key) < 32:
        raise ValueError("the fingerprint key must be at least 32 bytes")
    _identity_key = bytes(key)


def identity_fingerprint(value: str) -> str:
    """How an entry refers to a person or an address — a phone number, chat id, user id, name,
    e-mail: ``hmac-sha256:<first 16 hex of HMAC-SHA256(install key, value)>``. A plain hash of such
    a low-entropy value is recovered by enumeration in seconds; without the key, this one is not.
    Someone holding the key (the operator, or an auditor it is given to) checks a value by computing
    the same HMAC (``alertengine ledger fingerprint VALUE``)."""
    mac = hmac.new(_identity_key, value.encode("utf-8", "surrogatepass"), hashlib.sha256).hexdigest()
    return "hmac-sha256:" + mac[:16]


def fingerprint(secret: str | bytes) -> str:
    """How an entry refers to a secret: ``sha256:<first 16 hex of SHA-256>``."""
    raw = secret.encode() if isinstance(secret, str) else secret
    return "sha256:" + hashlib.sha256(raw).hexdigest()[:16]


_ts_cache: tuple[int, str] = (-1, "")


def utc_timestamp(now: _dt.datetime | None = None) -> str:
    """RFC 3339 UTC with microseconds and ``Z``: ``2026-11-22T13:50:39.926941Z``."""
    global _ts_cache
    if now is not None:
        return now.astimezone(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    micros = time.time_ns() // 1000
    seconds, fraction = divmod(micros, 1_000_000)
    cached_second, prefix = _ts_cache
    if cached_second != seconds:
        prefix = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds))
        _ts_cache = (seconds, prefix)
    return f"{prefix}.{fraction:06d}Z"


_EARLIEST = _dt.datetime(1970, 1, 1, tzinfo=_dt.timezone.utc)


def is_rfc3339(value: object) -> bool:
    """An RFC 3339 time with a zone (``2026-11-22T13:50:00Z``, ``…+01:00``) between 1970 and the
    end of year 9999 in UTC: a time the appliance can compare, store and convert without overflow."""
    if not isinstance(value, str) or len(value) > 64:
        return False
    try:
        parsed = _dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
        if parsed.tzinfo is None:
            return False
        return parsed.astimezone(_dt.timezone.utc) >= _EARLIEST
    except (ValueError, OverflowError):
        return False


def normal_ts(value: str | None) -> str | None:
    """An RFC 3339 time in the ledger's own form, so that comparing text compares times."""
    if value is None:
        return None
    return utc_timestamp(_dt.datetime.fromisoformat(value.replace("Z", "+00:00")))


def canonical(obj: Mapping[str, Any]) -> bytes:
    """Canonical JSON bytes of an entry (ledger-format.md, "Entries")."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                      allow_nan=False).encode("utf-8")


@dataclass(frozen=True)
class LedgerEvent:
    """One event to append. The writer adds ``seq``, ``prev``, ``tseq``, ``tprev`` and ``ts``."""

    kind: str
    tenant: str
    actor: str
    reason: str
    incident: str | None = None
    stage: str | None = None
    decision: str | None = None
    confidence: int | None = None
    policy_version: str | None = None
    data: Mapping[str, Any] = field(default_factory=dict)
    event_id: str = field(default_factory=lambda: new_event_id())
    _parts: tuple[bytes, bytes, bytes] = field(init=False, repr=False, compare=False, default=(b"", b"", b""))

    def __post_init__(self) -> None:
        validate_event(self)
        parts = _envelope_parts(self)
        if sum(map(len, parts)) + _ENVELOPE_REST > MAX_BODY_BYTES:
            raise LedgerInputError("data", f"entry would exceed {MAX_BODY_BYTES} bytes")
        object.__setattr__(self, "_parts", parts)

    def body(self, seq: int, prev_hex: str, tseq: int, tprev_hex: str, ts: str) -> bytes:
        """The entry's canonical bytes (identical to ``canonical(obj)``, built from pre-serialised parts
        so the single writer does as little as possible)."""
        a, b, c = self._parts
        return b"".join((a, prev_hex.encode(), b, str(seq).encode(), c, tprev_hex.encode(), b'","ts":"',
                         ts.encode(), b'","tseq":', str(tseq).encode(), b',"v":1}'))


# Bytes an entry adds to its pre-serialised parts: two hashes, seq, tseq, ts and the literals.
_ENVELOPE_REST = 64 + 64 + 20 + 20 + 27 + 32
_dumps = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode
_id_pool = bytearray()
_id_lock = threading.Lock()


# Ids new_event_id made that no append has taken yet: such an id cannot be in the ledger, so the
# writer need not look it up (a random key in the event_id index: 6-26 µs of CPU per id on a
# 300,000-entry ledger whose pages were not cached; about 1 µs when they are). Taken once, and
# ChainHead.build spends every id it chains, so a retry of the same event is looked up like any
# other. Bounded: when full it is emptied, and the ids it held are then merely looked up.
_fresh_ids: set[str] = set()
_FRESH_MAX = 50_000


def new_event_id() -> str:
    """A random (version 4) UUID, drawn from a pooled buffer: os.urandom per id is slow on some VMs."""
    with _id_lock:
        if len(_id_pool) < 16:
            _id_pool.extend(os.urandom(16 * 1024))
        raw = bytes(_id_pool[:16])
        del _id_pool[:16]
        made = str(uuid.UUID(bytes=raw, version=4))
        if len(_fresh_ids) >= _FRESH_MAX:
            _fresh_ids.clear()
        _fresh_ids.add(made)
    return made


def spend_fresh(event_id: str) -> None:
    """``event_id`` is being chained: from now on it is looked up like any other (every entry is
    built by ``ChainHead.build``, which calls this)."""
    _fresh_ids.discard(event_id)


def take_fresh(event_id: str) -> bool:
    """True, once, for an id :func:`new_event_id` made in this process and no append has taken: the
    ledger cannot hold it (122 random bits). False for any other id, and for that one ever after."""
    try:
        _fresh_ids.remove(event_id)
    except KeyError:
        return False
    return True


def _envelope_parts(ev: LedgerEvent) -> tuple[bytes, bytes, bytes]:
    """Everything of the canonical body that does not depend on the entry's place in the chains.
    Keys in sorted order: actor … policy_version | prev | reason | seq | stage, tenant | tprev, ts, tseq, v."""
    d = _dumps
    try:
        a = (f'{{"actor":{d(ev.actor)},"confidence":{d(ev.confidence)},"data":{d(dict(ev.data))},'
             f'"decision":{d(ev.decision)},"event_id":{d(ev.event_id)},"incident":{d(ev.incident)},'
             f'"kind":{d(ev.kind)},"policy_version":{d(ev.policy_version)},"prev":"')
    except (ValueError, TypeError) as exc:
        raise LedgerInputError("data", f"not serialisable as canonical JSON: {exc}") from None
    b = f'","reason":{d(ev.reason)},"seq":'
    c = f',"stage":{d(ev.stage)},"tenant":{d(ev.tenant)},"tprev":"'
    return a.encode(), b.encode(), c.encode()


def validate_event(ev: LedgerEvent) -> None:
    """Refuse anything the spec forbids, before it reaches the writer."""
    if not isinstance(ev.kind, str) or not _KIND_RE.match(ev.kind):
        raise LedgerInputError("kind", f"kind must be dotted lower-case words, got {ev.kind!r}")
    if not isinstance(ev.tenant, str) or not _TENANT_RE.match(ev.tenant):
        raise LedgerInputError("tenant", "tenant must be 1-64 characters of letters, digits, _ . : -")
    if not isinstance(ev.actor, str) or not ev.actor or len(ev.actor) > 200:
        raise LedgerInputError("actor", "actor must be a non-empty string of at most 200 characters")
    if not isinstance(ev.reason, str):
        raise LedgerInputError("reason", "reason must be a string")
    for name in ("incident", "stage", "decision", "policy_version"):
        value = getattr(ev, name)
        if value is not None and not isinstance(value, str):
            raise LedgerInputError(name, f"{name} must be a string or null")
    if ev.confidence is not None and (type(ev.confidence) is not int or not 0 <= ev.confidence <= 100):
        raise LedgerInputError("confidence", "confidence must be an integer 0-100 or null")
    if not isinstance(ev.data, Mapping):
        raise LedgerInputError("data", f"data must be an object, got {type(ev.data).__name__}")
    if not isinstance(ev.event_id, str) or not 8 <= len(ev.event_id) <= 128:
        raise LedgerInputError("event_id", "event_id must be a string of 8-128 characters")
    _check_value(ev.data, "data")
    for name in ("reason", "actor", "incident", "decision"):
        value = getattr(ev, name)
        if isinstance(value, str) and _SECRET_VALUE_RE.search(value):
            raise LedgerInputError(name, f"{name} looks like it contains a credential; ledger a fingerprint instead")


def redact(value: Any) -> Any:
    """A copy of ``value`` fit for the ledger: values under secret-looking keys, and substrings that
    look like credentials, are replaced by their fingerprints. For text that arrives from outside
    (alert labels and annotations) where refusing the whole payload would lose an alert."""
    if isinstance(value, Mapping):
        out = {}
        for key, item in value.items():
            secretish = isinstance(key, str) and _SECRET_KEY_RE.search(key) and not _FINGERPRINT_KEY_RE.search(key)
            if secretish and isinstance(item, str) and not _FINGERPRINT_VALUE_RE.match(item):
                out[key] = fingerprint(item)
            else:
                out[key] = redact(item)
        return out
    if isinstance(value, (list, tuple)):
        return [redact(item) for item in value]
    if isinstance(value, str):
        return _SECRET_VALUE_RE.sub(lambda m: f"[redacted {fingerprint(m.group())}]", value)
    return value


def _check_value(value: Any, path: str) -> None:
    """Refuse what the ledger may not hold under ``path``: non-ASCII or non-text keys, NaN and
    Infinity, unsupported types, secrets under secret-looking keys, credential-looking text."""
    if not _plainly_fine(value):
        _check_in_full(value, path)   # raises with the path of what is wrong (or accepts an unusual but fit type)


_secret_keys: dict[str, bool] = {}


def _secret_key(key: str) -> bool:
    """Whether a value under ``key`` must not be text other than a fingerprint (remembered: keys repeat)."""
    found = _secret_keys.get(key)
    if found is None:
        found = bool(_SECRET_KEY_RE.search(key)) and not _FINGERPRINT_KEY_RE.search(key)
        if len(_secret_keys) < 4096:
            _secret_keys[key] = found
    return found


def _plainly_fine(value: Any) -> bool:
    """The common case of :func:`_check_in_full`, by exact type (no ABC checks) and without building
    paths: True only for what it would accept; False sends the value to it for the verdict."""
    t = type(value)
    if t is str:
        return _SECRET_VALUE_RE.search(value) is None
    if t is int or t is bool or value is None:
        return True
    if t is float:
        return math.isfinite(value)
    if t is dict:
        for key, item in value.items():
            if type(key) is not str or not key.isascii():
                return False
            if type(item) is str and _secret_key(key) and not _FINGERPRINT_VALUE_RE.match(item):
                return False
            if not _plainly_fine(item):
                return False
        return True
    if t is list or t is tuple:
        for item in value:
            if not _plainly_fine(item):
                return False
        return True
    return False


def _check_in_full(value: Any, path: str) -> None:
    if isinstance(value, Mapping):
        for key, item in value.items():
            if not isinstance(key, str) or not key.isascii():
                raise LedgerInputError(path, f"keys must be ASCII strings, got {key!r} in {path}")
            sub = f"{path}.{key}"
            if _secret_key(key):
                # a secret is text: counts (input_tokens), flags and fingerprints under such names are fine
                if isinstance(item, str) and not _FINGERPRINT_VALUE_RE.match(item):
                    raise LedgerInputError(sub, f"{sub} looks like a secret; ledger fingerprint(secret) instead")
            _check_in_full(item, sub)
    elif isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            _check_in_full(item, f"{path}[{i}]")
    elif isinstance(value, float):
        if not math.isfinite(value):
            raise LedgerInputError(path, f"{path} is {value!r}; NaN and Infinity are not allowed")
    elif isinstance(value, str):
        if _SECRET_VALUE_RE.search(value):
            raise LedgerInputError(path, f"{path} looks like it contains a credential; ledger a fingerprint instead")
    elif value is None or isinstance(value, (bool, int)):
        return
    else:
        raise LedgerInputError(path, f"{path} has unsupported type {type(value).__name__}")


class Entry(NamedTuple):
    """An entry as stored: its exact bytes and where it sits in the chains. (A named tuple: the
    writer creates one per append, and a frozen dataclass costs several times more to build.)"""

    seq: int
    tenant: str
    tseq: int
    body: bytes
    leaf_hash: bytes
    duplicate: bool = False

    def obj(self) -> dict[str, Any]:
        return json.loads(self.body)
