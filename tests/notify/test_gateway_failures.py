"""A bad channel never breaks detection: any failure of a channel is a ledgered failed attempt, never an
error in the signal path (malformed settings are refused when saved: tests/web/test_channel_settings.py)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from alertengine.notify.channels.base import Delivery, RetryPolicy
from alertengine.notify.gateway import Gateway, JsonLinesChannel, Message
from alertengine.store import Database
from alertengine.store.modes import ModeTracker
from alertengine.tenancy.tenants import create_tenant, set_shadow


class Raising:
    name = "telegram"

    def __init__(self, exc: Exception) -> None:
        self.exc = exc
        self.calls = 0

    async def send(self, message: Message) -> Delivery:
        self.calls += 1
        raise self.exc


class Fine:
    name = "webhook"

    def __init__(self) -> None:
        self.sent: list[Message] = []

    async def send(self, message: Message) -> Delivery:
        self.sent.append(message)
        return Delivery(True, False, "ok", provider_id="42")


def _live_tenant(db: Database) -> str:
    tenant = db.write_sync(create_tenant("acme", "test")).id
    db.write_sync(set_shadow(tenant, False, "test"))
    return tenant


def _attempts(db: Database) -> list[tuple[str, dict[str, Any]]]:
    rows = db.read_conn().execute("SELECT kind, body FROM ledger WHERE kind LIKE 'notification.%' ORDER BY seq")
    return [(kind, json.loads(body)["data"]) for kind, body in rows]


@pytest.mark.parametrize("exc", [RuntimeError("boom"), ValueError("bad header value"), KeyError("chat_id"),
                                 UnicodeEncodeError("ascii", "é", 0, 1, "no")])
async def test_a_channel_that_raises_is_a_failed_attempt_and_the_fallback_still_delivers(
        db: Database, tmp_path: Path, exc: Exception) -> None:
    tenant = _live_tenant(db)
    broken, fallback = Raising(exc), Fine()
    modes = ModeTracker(db)
    gateway = Gateway(db, [JsonLinesChannel(tmp_path / "n.jsonl")], modes=modes,
                      remote=lambda t: [broken, fallback], retry=RetryPolicy(attempts=2, base_delay=0, max_delay=0))
    await gateway.notify(Message(tenant, "INC-1", "detected", "P2", "checkout is slow"))  # must not raise
    assert broken.calls == 1 and len(fallback.sent) == 1       # not retried: a raising channel is not transient
    attempts = _attempts(db)
    assert [(k, d["channel"]) for k, d in attempts] == [("notification.sent", "jsonl"),
                                                        ("notification.failed", "telegram"),
                                                        ("notification.sent", "webhook")]
    assert attempts[1][1]["detail"] == f"the channel failed: {type(exc).__name__}"
    assert modes.snapshot()["mode"] == "NORMAL"                 # one channel of two delivered


async def test_unusable_channel_settings_are_a_ledgered_failure_not_an_error(db: Database, tmp_path: Path) -> None:
    tenant = _live_tenant(db)

    def remote(t: str) -> list[Any]:
        raise ValueError("Invalid header value b'7777:abc\\n'")

    gateway = Gateway(db, [JsonLinesChannel(tmp_path / "n.jsonl")], remote=remote)
    await gateway.notify(Message(tenant, "INC-1", "detected", "P2", "checkout is slow"))  # must not raise
    kinds = [(k, d["channel"], d["detail"]) for k, d in _attempts(db)]
    assert ("notification.failed", "remote", "channel settings unusable: ValueError") in kinds
    assert ("notification.sent", "jsonl", "written") in kinds
    assert "7777" not in json.dumps(_attempts(db))             # the setting's value is never ledgered
