"""What an event's ``data`` may hold: the fast check by exact type never accepts what the full check
(with paths in its errors) refuses, and the verdicts below are stated here, not read from the code."""

from __future__ import annotations

import enum
import json
import math
from collections import OrderedDict
from types import MappingProxyType

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from alertengine.errors import LedgerInputError
from alertengine.ledger import entry as entry_mod
from alertengine.ledger.entry import LedgerEvent, fingerprint


class Colour(str, enum.Enum):
    RED = "red"


FP = fingerprint("123456:ABCdefGhIJKlmnoPQRstuVWXyz0123456789")

ACCEPTED = [
    {},
    {"n": 1, "f": 2.5, "b": True, "none": None, "s": "text", "big": 10 ** 40},
    {"list": [1, "two", [3.0, {"deep": None}]], "tuple": (1, 2)},
    {"api_key": FP, "token_count": 12, "password_set": True, "secret_sha256": "not-a-fingerprint-but-a-hash-field"},
    {"ordered": OrderedDict(a=1)},                       # a Mapping that is not a dict
    {"enum": Colour.RED},                                 # a str subclass
    {"nested": {"empty_list": [], "empty_map": {}}},
]

REFUSED = [  # (data, the field the error names)
    ({"rate": math.nan}, "data.rate"),
    ({"x": [1, {"rate": -math.inf}]}, "data.x[1].rate"),
    ({"api_key": "plain"}, "data.api_key"),
    ({"config": {"Authorization": "Bearer abc"}}, "data.config.Authorization"),
    ({"list": ["ok", "sk-ant-api03-abcdefghijklmnop"]}, "data.list[1]"),
    ({"ünïcode": 1}, "data"),
    ({"outer": {2: "x"}}, "data.outer"),
    ({"obj": object()}, "data.obj"),
    ({"set": {1, 2}}, "data.set"),
    ({"bytes": b"raw"}, "data.bytes"),
    ({"proxy": MappingProxyType({"password": "hunter2"})}, "data.proxy.password"),
    ({"proxy": MappingProxyType({"a": "b"})}, "data"),   # fit values, but no canonical JSON for the type
    ({"enum_secret": {"token": Colour.RED}}, "data.enum_secret.token"),
]


def event(data: object) -> LedgerEvent:
    return LedgerEvent(kind="test.event", tenant="acme", actor="test", reason="r", data=data)  # type: ignore[arg-type]


@pytest.mark.parametrize("data", ACCEPTED)
def test_fit_data_is_accepted(data: dict) -> None:
    body = event(data).body(0, "0" * 64, 0, "0" * 64, "2026-12-02T00:00:00.000000Z")
    assert json.loads(body)["data"] == json.loads(json.dumps(data))   # held as plain JSON would hold it


@pytest.mark.parametrize("data,field", REFUSED)
def test_unfit_data_is_refused_naming_where(data: dict, field: str) -> None:
    with pytest.raises(LedgerInputError) as info:
        event(data)
    assert info.value.field == field


JSONISH = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8)
    | st.sampled_from(["sk-ant-api03-abcdefghijklmnop", FP, "xoxb-1234567890-abcdefghij"]),
    lambda inner: st.lists(inner, max_size=4) | st.tuples(inner, inner)
    | st.dictionaries(st.text(max_size=6) | st.sampled_from(["token", "api_key", "n_fingerprint", "é"]), inner, max_size=4),
    max_leaves=12)


@settings(max_examples=1500, deadline=None)
@given(JSONISH)
def test_the_fast_check_agrees_with_the_full_one(value: object) -> None:
    try:
        entry_mod._check_in_full(value, "data")
        full_ok = True
    except LedgerInputError:
        full_ok = False
    if entry_mod._plainly_fine(value):
        assert full_ok, f"the fast check accepted {value!r}, which the full check refuses"
    try:
        entry_mod._check_value(value, "data")
        assert full_ok
    except LedgerInputError:
        assert not full_ok
