"""The body check's fast walk (no paths) must flag every document the full check refuses; the
full check then names the field. Hostile shapes are generated, and written out by hand."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from alertengine.web.body import MAX_DEPTH, _check_with_paths, _unsafe, check_json
from alertengine.web.routing import ApiError

LEAF = st.one_of(st.none(), st.booleans(), st.integers(min_value=-(2 ** 70), max_value=2 ** 70),
                 st.floats(allow_nan=False), st.text(), st.sampled_from(["\ud800", "a\udfffb", "é"]))
DOC = st.recursive(LEAF, lambda kids: st.one_of(st.lists(kids, max_size=4),
                                                st.dictionaries(st.one_of(st.text(max_size=5), st.just("\udc80")),
                                                                kids, max_size=4)), max_leaves=30)


def refused(doc: object) -> bool:
    try:
        _check_with_paths(doc)
    except ApiError:
        return True
    return False


@settings(max_examples=400)
@given(DOC)
def test_the_fast_walk_flags_whatever_the_full_check_refuses(doc) -> None:  # type: ignore[no-untyped-def]
    if refused(doc):
        assert _unsafe(doc)
    with pytest.raises(ApiError) if refused(doc) else _nothing():
        check_json(doc)


def nest(depth: int, leaf: object = 1) -> object:
    doc: object = leaf
    for _ in range(depth):
        doc = [doc]
    return doc


@pytest.mark.parametrize("doc,bad", [
    (nest(MAX_DEPTH), False), (nest(MAX_DEPTH + 1), True), (nest(MAX_DEPTH, []), False),
    ({"a": 2 ** 63 - 1}, False), ({"a": 2 ** 63}, True), ({"a": -(2 ** 63)}, False), ({"a": -(2 ** 63) - 1}, True),
    ({"a": float("inf")}, True), ([1e308], False), ({"k\ud800": 1}, True), (["ok", "x\udfff"], True),
    ({"a": True}, False), ("é" * 10, False),
])
def test_by_hand(doc: object, bad: bool) -> None:
    if bad:
        with pytest.raises(ApiError):
            check_json(doc)
    else:
        check_json(doc)


class _nothing:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> bool:
        return False
