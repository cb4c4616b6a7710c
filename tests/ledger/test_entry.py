"""Ledger events: the writer's pre-serialised bodies are exactly the spec's canonical JSON."""

from __future__ import annotations

import json

import pytest

from alertengine.errors import LedgerInputError
from alertengine.ledger.entry import (
    MAX_BODY_BYTES,
    LedgerEvent,
    canonical,
    fingerprint,
    new_event_id,
)
from alertengine.ledger.verifier import parse_entry

CASES = [
    dict(kind="incident.detected", tenant="acme", actor="policy", reason="p95 breach"),
    dict(kind="incident.diagnosed", tenant="t-1", actor="ai:claude-x", reason="ünïcödé — \"quoted\" \\ back\nslash",
         incident="INC-1", stage="DIAGNOSED", decision="consensus", confidence=87, policy_version="sha256:0123456789ab",
         data={"z": [1, 2.5, -0.0, 1e-7, 12345678901234567890], "a": {"nested": None, "emoji": "🚨", "ctl": "\u0001"},
               "M": True, "_": "<script>_x_</script>"}),
    dict(kind="a.b", tenant="_system", actor="system", reason="", data={"big": 10 ** 30, "neg": -5, "f": 0.1 + 0.2}),
]


@pytest.mark.parametrize("fields", CASES)
def test_body_is_the_canonical_serialisation(fields: dict) -> None:
    ev = LedgerEvent(**fields)
    body = ev.body(12, "ab" * 32, 3, "cd" * 32, "2026-11-22T13:50:39.926941Z")
    obj = json.loads(body)
    assert canonical(obj) == body
    assert parse_entry(body, None)["seq"] == 12
    assert obj["event_id"] == ev.event_id and obj["data"] == json.loads(json.dumps(fields.get("data", {})))


def test_event_ids_are_unique_uuid4() -> None:
    ids = {new_event_id() for _ in range(5000)}
    assert len(ids) == 5000
    assert all(i[14] == "4" and i[19] in "89ab" for i in ids)


def test_body_size_limit_counts_utf8_bytes() -> None:
    with pytest.raises(LedgerInputError, match="exceed"):
        LedgerEvent(kind="a.b", tenant="t", actor="s", reason="r", data={"x": "é" * (MAX_BODY_BYTES // 2)})
    ok = LedgerEvent(kind="a.b", tenant="t", actor="s", reason="r", data={"x": "é" * (MAX_BODY_BYTES // 2 - 400)})
    assert len(ok.body(0, "0" * 64, 0, "0" * 64, "2026-11-22T13:50:39.926941Z")) <= MAX_BODY_BYTES


def test_fingerprint_is_stable_and_short() -> None:
    assert fingerprint("secret") == fingerprint(b"secret")
    assert fingerprint("secret").startswith("sha256:") and len(fingerprint("secret")) == 23
