"""The verifier's fast check of an entry's form agrees with the full parse on every body.

``fast_entry_fields`` may decline any body (the full ``parse_entry`` then decides), but a body it
accepts must be one ``parse_entry`` accepts, with the same fields. The dangerous direction is
accepting too much: bodies that are not the canonical serialisation are built here by hand.
"""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from alertengine.ledger.verifier import VerificationFailure, fast_entry_fields, parse_entry

ZERO = "0" * 64


def body(data: object = None, **fields: object) -> dict:
    entry = {"actor": "policy", "confidence": None, "data": {"n": 1} if data is None else data, "decision": None,
             "event_id": "0e0f2c1a-6c51-4a55-9d3e-4f1f6f0b2a10", "incident": "INC-7", "kind": "incident.detected",
             "policy_version": "p1", "prev": ZERO, "reason": "p95 above 2 s", "seq": 12, "stage": "DETECTED",
             "tenant": "acme", "tprev": ZERO, "ts": "2026-11-30T03:14:07.123456Z", "tseq": 3, "v": 1}
    entry.update(fields)
    return entry


def canonical(obj: dict) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode()


def full(raw: bytes) -> tuple | None:
    try:
        obj = parse_entry(raw, None)
    except VerificationFailure:
        return None
    return obj["seq"], obj["tenant"], obj["tseq"], obj["prev"], obj["tprev"]


def test_the_common_entry_takes_the_fast_path_with_the_same_fields() -> None:
    raw = canonical(body())
    assert fast_entry_fields(raw) == full(raw) == (12, "acme", 3, ZERO, ZERO)


# Each is not the canonical serialisation (or not an entry): the fast check must never accept it.
NOT_CANONICAL = [
    canonical(body()).replace(b'"n":1', b'"n": 1'),                       # a space
    canonical(body({"b": 1, "a": 2})).replace(b'"a":2,"b":1', b'"b":1,"a":2'),   # data keys out of order
    canonical(body({"a": 1})).replace(b'"a":1', b'"a":1,"a":1'),          # a key twice
    canonical(body({"x": 1.5})).replace(b"1.5", b"1.50"),                  # a trailing zero
    canonical(body({"x": 1.5})).replace(b"1.5", b"1.5e0"),                 # an exponent
    canonical(body({"x": 100000.0})).replace(b"100000.0", b"1e5"),
    canonical(body({"x": 1})).replace(b'"x":1', b'"x":01'),               # a leading zero
    canonical(body({"x": 1})).replace(b'"x":1', b'"x":-0'),
    canonical(body({"x": 0.5})).replace(b"0.5", b".5"),
    canonical(body({"x": 0.0001})).replace(b"0.0001", b"0.00010"),
    canonical(body({"x": 1e-05})).replace(b"1e-05", b"0.00001"),          # repr writes 1e-05
    canonical(body({"x": 1e16})).replace(b"1e+16", b"10000000000000000.0"),
    canonical(body({"x": 0.1 + 0.2})).replace(b"0.30000000000000004", b"0.3000000000000000444"),
    canonical(body({"x": "é"})).replace("é".encode(), b"\\u00e9"),        # an escape ensure_ascii=False never writes
    canonical(body(reason="a/b")).replace(b"a/b", b"a\\/b"),
    canonical(body(v=1)).replace(b'"v":1}', b'"v":1.0}'),                 # not version 1
    canonical(body(seq=12)).replace(b'"seq":12', b'"seq":-12'),
    canonical(body()) + b" ",                                              # trailing data
    canonical(body()).replace(b'"actor":"policy",', b""),                  # a field missing
    canonical(body()).replace(b'"kind"', b'"Kind"'),
    canonical(body(reason="a\tb")).replace(b"\\t", b"\t"),               # raw control characters in a string
    canonical(body(reason="a\x1fb")).replace(b"\\u001f", b"\x1f"),
    canonical(body({"s": "a\nb"})).replace(b"\\n", b"\n"),
    canonical(body(data={"n": {"deep": 1}})).replace(b'"deep":1', b'"deep":1,"deep":2'),
]


@pytest.mark.parametrize("raw", NOT_CANONICAL, ids=range(len(NOT_CANONICAL)))
def test_a_body_that_is_not_canonical_never_takes_the_fast_path(raw: bytes) -> None:
    assert full(raw) is None, "the case itself must be one the full check refuses"
    assert fast_entry_fields(raw) is None


def test_an_oversized_body_is_left_to_the_full_check() -> None:
    raw = canonical(body({"s": "x" * 70_000}))
    assert fast_entry_fields(raw) is None and full(raw) is None


SCALARS = st.one_of(st.none(), st.booleans(), st.integers(-10**18, 10**18),
                    st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=12))


@settings(max_examples=2000, deadline=None)
@given(st.dictionaries(st.text(max_size=6), SCALARS, max_size=6), st.text(max_size=10),
       st.one_of(st.none(), st.integers(0, 100), st.text(max_size=4)), st.integers(0, 10**12))
def test_whatever_the_fast_path_accepts_the_full_check_accepts_alike(data: dict, reason: str, confidence: object,
                                                                     seq: int) -> None:
    raw = canonical(body(data, reason=reason, confidence=confidence, seq=seq))
    fast = fast_entry_fields(raw)
    assert full(raw) == (seq, "acme", 3, ZERO, ZERO)
    if fast is not None:
        assert fast == (seq, "acme", 3, ZERO, ZERO)
    # the same body with its data keys reversed is canonical only if it has at most one key
    if len(data) > 1:
        flipped = raw.replace(canonical(data)[1:-1], json.dumps(dict(reversed(sorted(data.items()))),
                                                                 separators=(",", ":"), ensure_ascii=False,
                                                                 allow_nan=False).encode()[1:-1])
        if flipped != raw:
            assert full(flipped) is None
            assert fast_entry_fields(flipped) is None


def test_most_entries_do_take_the_fast_path() -> None:
    """The fast path is not dead code: flat data of plain values is recognised."""
    samples = [body({"p95_ms": 2847.3, "service": "checkout", "n": 3}), body({"ok": True, "why": None}),
               body({}, confidence=70), body({"x": 0.0001, "y": 1234567890123.5, "z": -42})]
    for sample in samples:
        raw = canonical(sample)
        assert fast_entry_fields(raw) is not None and fast_entry_fields(raw) == full(raw)
