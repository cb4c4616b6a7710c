"""The durable outbox and its sender, driven by a fake clock: outages, Retry-After, failover to a
person's next channel and the fallback, dead letters, order per recipient, restarts, DEGRADED,
per-recipient approval links, and a broken channel that never breaks the signal path.

Expectations are written here: the number of attempts, which channel delivered, which ledger
entries exist and in which order."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest

from alertengine.appliance import DataDir
from alertengine.config import Config
from alertengine.notify import outbox
from alertengine.notify.channels.base import Delivery
from alertengine.notify.channels.remote import ChannelResolver
from alertengine.notify.channels.settings import put_channel
from alertengine.notify.gateway import Gateway, JsonLinesChannel, Message
from alertengine.notify.routes import parse_routing, put_routing
from alertengine.notify.sender import OutboxSender
from alertengine.tenancy.tenants import create_tenant, set_shadow
from alertengine.tenancy.vault import SecretVault
from tests.fakes.telegram import FakeTelegram, fake_telegram  # noqa: F401  (fixture)
from tests.notify.rig import DOWN, OK, REFUSED, START, Clock, Rig, Scripted

ONE_PERSON = """
[defaults]
receivers = ["channel:webhook"]
[[route]]
name = "ada"
receivers = ["person:ada"]
"""


async def test_a_60_second_telegram_outage_is_retried_with_backoff_and_every_attempt_is_ledgered(
        rig: Rig, config: Config, fake_telegram: FakeTelegram, tmp_path: Path) -> None:  # noqa: F811
    """The fake Telegram Bot API answers 502 for 60 s of the clock, then works again."""
    rig.db.write_sync(put_channel(rig.tenant, "telegram", {
        "config": {"api_base_url": fake_telegram.base_url, "default_chat_id": "-100"},
        "secrets": {"bot_token": fake_telegram.token}}, config.url_policy, rig.vault, "test"))
    rig.routing('[[route]]\nname = "all"\nreceivers = ["channel:telegram"]\n[defaults]\nreceivers = []\n')
    async with httpx.AsyncClient() as http:
        rig.build()
        rig.sender.resolve = ChannelResolver(rig.db, rig.vault, http, tmp_path / "notify")
        down = {"until": START + 60}

        async def attempt_when_due() -> None:
            rig.clock.now = outbox.next_due(rig.db.read_conn())
            if rig.clock.now < down["until"]:
                fake_telegram.fail_next("sendMessage", 502)
            await rig.sender.run_due()
        fake_telegram.fail_next("sendMessage", 502)
        await rig.gateway.notify(Message(rig.tenant, "INC-1", "detected", "P1", "checkout down"))
        assert rig.modes.snapshot()["mode"] == "DEGRADED"
        assert list(rig.modes.snapshot()["conditions"]) == [f"channel telegram of {rig.tenant}"]
        while outbox.next_due(rig.db.read_conn()) is not None:
            await attempt_when_due()
    [row] = rig.rows()
    assert row.state == "delivered" and row.channel == "telegram" and rig.clock.now >= START + 60
    assert [m["text"].splitlines()[-1] for m in fake_telegram.messages.values()] == ["checkout down"]   # once
    entries = rig.ledger()
    attempts = [(k, d["attempt"]) for k, d in entries if k in ("notification.sent", "notification.failed")]
    n = len(attempts)
    assert 6 <= n <= 40                            # backoff: 1 s doubling, capped at 30 s, over 60 s
    assert attempts == [("notification.failed", i) for i in range(1, n)] + [("notification.sent", n)]
    assert len(fake_telegram.calls_to("sendMessage")) == n              # every attempt reached Telegram
    assert entries[0][0] == "notification.routed"
    assert all("HTTP 502" in d["detail"] for k, d in entries if k == "notification.failed")
    assert rig.modes.snapshot()["mode"] == "NORMAL"            # its next delivery cleared the condition


async def test_backoff_waits_grow_then_cap_and_retry_after_is_honoured(rig: Rig) -> None:
    rig.routing('[[route]]\nname = "all"\nreceivers = ["channel:telegram"]\n[defaults]\nreceivers = []\n')
    telegram = Scripted("telegram", [DOWN] * 8 + [Delivery(False, True, "HTTP 429", retry_after=45.0), DOWN])
    rig.channels = {"telegram": telegram}
    rig.build()
    await rig.gateway.notify(Message(rig.tenant, "INC-1", "detected", "P1", "checkout down"))
    waits = []
    for _ in range(9):
        row = rig.rows()[0]
        waits.append(row.next_at - rig.clock.now)
        rig.clock.now = row.next_at
        await rig.sender.run_due()
    # attempt n waits a uniform time in [c/2, c], c = min(30, 2**(n-1))
    for n, wait in enumerate(waits[:8], start=1):
        ceiling = min(30.0, 2.0 ** (n - 1))
        assert ceiling / 2 - 1e-6 <= wait <= ceiling + 1e-6, (n, wait)
    assert waits[8] >= 45.0                        # the provider's Retry-After, never shortened


async def test_a_persons_next_channel_then_the_fallback_take_over(rig: Rig) -> None:
    rig.routing(ONE_PERSON)
    rig.person("ada", telegram="111", email="ada@example.com")   # e-mail is not deliverable here yet
    telegram, webhook = Scripted("telegram", [DOWN]), Scripted("webhook", [OK])
    rig.channels = {"telegram": telegram, "webhook": webhook}
    rig.build()
    await rig.gateway.notify(Message(rig.tenant, "INC-1", "detected", "P1", "checkout down"))
    await rig.run_until_settled()
    [row] = rig.rows()
    assert row.state == "delivered" and row.channel == "webhook"
    assert len(telegram.got) == 3 and len(webhook.got) == 1      # failover_after = 3 attempts per channel
    routed = rig.ledger("notification.routed")[0][1]["routing"]
    assert routed["decisions"][0]["unreachable"] == ["email: not available on this appliance yet"]
    assert routed["decisions"][0]["channels"] == ["telegram"]


async def test_a_refusal_moves_on_at_once_and_is_never_tried_again(rig: Rig) -> None:
    rig.routing(ONE_PERSON)
    rig.person("ada", telegram="111")
    telegram, webhook = Scripted("telegram", [REFUSED]), Scripted("webhook", [DOWN, OK])
    rig.channels = {"telegram": telegram, "webhook": webhook}
    rig.build()
    await rig.gateway.notify(Message(rig.tenant, "INC-1", "detected", "P1", "down"))
    await rig.run_until_settled()
    assert len(telegram.got) == 1 and len(webhook.got) == 2
    assert rig.rows()[0].state == "delivered"


async def test_a_channel_that_raises_is_a_failed_attempt_and_the_fallback_delivers(rig: Rig) -> None:
    rig.routing(ONE_PERSON)
    rig.person("ada", telegram="111")
    for exc in (RuntimeError("boom"), ValueError("bad header"), KeyError("chat_id"),
                UnicodeEncodeError("ascii", "é", 0, 1, "no")):
        rig.channels = {"telegram": Scripted("telegram", [exc]), "webhook": Scripted("webhook", [OK])}
        rig.build()
        await rig.gateway.notify(Message(rig.tenant, "INC-1", "detected", "P2", "slow"))   # must not raise
        await rig.run_until_settled()
    failed = [d["detail"] for k, d in rig.ledger("notification.failed")]
    assert failed == ["the channel failed: RuntimeError", "the channel failed: ValueError",
                      "the channel failed: KeyError", "the channel failed: UnicodeEncodeError"]
    assert [r.state for r in rig.rows()] == ["delivered"] * 4


async def test_unusable_settings_are_a_ledgered_failure_never_leaking_the_value(rig: Rig) -> None:
    rig.routing(ONE_PERSON)
    rig.person("ada", telegram="111")
    rig.build()

    def broken(tenant: str, channel: str, address: str) -> Any:
        if channel == "telegram":
            raise ValueError("Invalid header value b'7777:abc\\n'")
        return Scripted("webhook", [OK])
    rig.sender.resolve = broken
    await rig.gateway.notify(Message(rig.tenant, "INC-1", "detected", "P2", "slow"))
    await rig.run_until_settled()
    assert [(k, d["channel"], d["detail"]) for k, d in rig.ledger() if k != "notification.routed"] == [
        ("notification.failed", "telegram", "channel settings unusable: ValueError"),
        ("notification.sent", "webhook", "ok")]
    assert "7777" not in json.dumps(rig.ledger())


async def test_after_the_deadline_it_is_a_dead_letter_and_can_be_sent_again(rig: Rig) -> None:
    rig.routing('[defaults]\nretry_for = 120.0\nreceivers = []\n[[route]]\nname = "all"\nreceivers = ["channel:telegram"]\n')
    telegram = Scripted("telegram", [DOWN])
    rig.channels = {"telegram": telegram}
    rig.build()
    await rig.gateway.notify(Message(rig.tenant, "INC-1", "detected", "P1", "down"))
    await rig.run_until_settled()
    [row] = rig.rows()
    assert row.state == "dead" and rig.clock.now <= START + 120 + 1e-6
    dead = rig.ledger("notification.dead")
    assert len(dead) == 1 and dead[0][1]["outbox"] == row.id
    telegram.answers = [OK]
    again = rig.db.write_sync(outbox.retry_dead(rig.tenant, row.id, "apikey:abc", rig.clock.now, 120.0))
    assert again.state == "queued"
    await rig.run_until_settled()
    assert rig.rows()[0].state == "delivered"
    assert [k for k, _ in rig.ledger("notification.retried")] == ["notification.retried"]
    with pytest.raises(Exception, match="not a dead letter"):
        rig.db.write_sync(outbox.retry_dead(rig.tenant, row.id, "apikey:abc", rig.clock.now, 120.0))


async def test_a_recipients_messages_leave_in_order(rig: Rig) -> None:
    rig.routing(ONE_PERSON)
    rig.person("ada", telegram="111")
    telegram = Scripted("telegram", [DOWN, DOWN, OK])
    rig.channels = {"telegram": telegram}
    rig.build()
    for i, event in enumerate(("detected", "escalated", "recovered")):
        await rig.gateway.notify(Message(rig.tenant, f"INC-{i}", event, "P1", event))
    await rig.run_until_settled()
    delivered = [m.event for m, d in zip(telegram.got, [DOWN, DOWN, OK, OK, OK]) if d is OK]
    assert delivered == ["detected", "escalated", "recovered"]
    assert [m.event for m in telegram.got] == ["detected", "detected", "detected", "escalated", "recovered"]


async def test_each_recipient_gets_only_their_own_approval_link(rig: Rig) -> None:
    rig.routing('[[route]]\nname = "both"\nreceivers = ["person:ada", "person:bob"]\n')
    rig.person("ada", telegram="111")
    rig.person("bob", telegram="222")
    telegram = Scripted("telegram", [OK])
    rig.channels = {"telegram": telegram}
    rig.build()
    links = {"person:ada": "https://ae.example/action/recover/AAA", "person:bob": "https://ae.example/action/recover/BBB",
             "person:bob (trust B)": "https://ae.example/action/recover/BBB2"}
    await rig.gateway.notify(Message(rig.tenant, "INC-1", "proposed", "P1", "restart?", links=links))
    await rig.run_until_settled()
    got = {m.recipient: m.links for m in telegram.got}
    assert got == {"person:ada": {"person:ada": "https://ae.example/action/recover/AAA"},
                   "person:bob": {"person:bob": "https://ae.example/action/recover/BBB",
                                  "person:bob (trust B)": "https://ae.example/action/recover/BBB2"}}
    stored = rig.db.read_conn().execute("SELECT count(*) FROM outbox WHERE sealed IS NOT NULL").fetchone()[0]
    assert stored == 0                                          # wiped once delivered
    assert "AAA" not in json.dumps(rig.ledger("")) and "BBB" not in json.dumps(rig.ledger(""))


async def test_links_are_sealed_at_rest_while_waiting(rig: Rig) -> None:
    rig.routing(ONE_PERSON)
    rig.person("ada", telegram="111")
    rig.channels = {"telegram": Scripted("telegram", [DOWN])}
    rig.build()
    await rig.gateway.notify(Message(rig.tenant, "INC-1", "proposed", "P1", "restart?",
                                     links={"person:ada": "https://ae.example/action/recover/SECRETTOKEN"}))
    raw = rig.db.read_conn().execute("SELECT body, sealed FROM outbox").fetchone()
    assert b"SECRETTOKEN" not in bytes(raw[1]) and "SECRETTOKEN" not in raw[0]


async def test_a_restart_in_the_middle_of_a_retry_still_delivers_once(
        data_dir: DataDir, config: Config, fake_telegram: FakeTelegram) -> None:  # noqa: F811
    db = data_dir.open_database(config)
    vault = SecretVault(data_dir.secret("vault.key"))
    tenant = db.write_sync(create_tenant("acme", "test")).id
    db.write_sync(set_shadow(tenant, False, "test"))
    db.write_sync(put_channel(tenant, "telegram", {
        "config": {"api_base_url": fake_telegram.base_url, "default_chat_id": "-100"},
        "secrets": {"bot_token": fake_telegram.token}}, config.url_policy, vault, "test"))
    db.write_sync(put_routing(tenant, parse_routing(
        '[defaults]\nreceivers = []\n[[route]]\nname = "all"\nreceivers = ["channel:telegram"]\n'), "test"))
    clock = Clock()
    async with httpx.AsyncClient() as http:
        resolver = ChannelResolver(db, vault, http, data_dir.path / "notify")
        sender = OutboxSender(db, vault, resolver, clock=clock)
        gateway = Gateway(db, [], vault=vault, sender=sender, clock=clock)
        fake_telegram.fail_next("sendMessage", 502)
        fake_telegram.fail_next("sendMessage", 502)
        await gateway.notify(Message(tenant, "INC-1", "detected", "P1", "checkout down"))
        clock.now = outbox.next_due(db.read_conn())
        await sender.run_due()                                   # second attempt fails too
        assert len(fake_telegram.calls_to("sendMessage")) == 2 and fake_telegram.messages == {}  # both refused
        db.close()                                               # the process stops mid-retry
        db = data_dir.open_database(config)
        resolver = ChannelResolver(db, vault, http, data_dir.path / "notify")
        sender = OutboxSender(db, vault, resolver, clock=clock)
        assert await sender.recover() == 0
        clock.now = outbox.next_due(db.read_conn())
        assert await sender.run_due() == 1
        assert outbox.next_due(db.read_conn()) is None
        assert [m["text"].splitlines()[-1] for m in fake_telegram.messages.values()] == ["checkout down"]  # once
        kinds = [k for (k,) in db.read_conn().execute(
            "SELECT kind FROM ledger WHERE kind LIKE 'notification.%' ORDER BY seq")]
        assert kinds == ["notification.routed", "notification.failed", "notification.failed", "notification.sent"]
    db.close()


async def test_an_attempt_in_flight_at_a_crash_is_queued_again(rig: Rig) -> None:
    rig.routing(ONE_PERSON)
    rig.person("ada", telegram="111")
    rig.build()
    rig.db.write_sync(lambda tx: tx.execute("INSERT INTO outbox (tenant, recipient, event, body, state, next_at, "
                                            "deadline, created, updated) VALUES (?, 'person:ada', 'detected', ?, "
                                            "'sending', ?, ?, 'x', 'x')",
                                            (rig.tenant, json.dumps({"message": {"text": "t"}, "chain": []}),
                                             START, START + 60)))
    assert await rig.sender.recover() == 1
    assert rig.rows()[0].state == "queued"


async def test_shadow_mode_routes_and_stores_but_sends_nothing(rig: Rig) -> None:
    rig.db.write_sync(set_shadow(rig.tenant, True, "test"))
    rig.routing(ONE_PERSON)
    rig.person("ada", telegram="111")
    telegram = Scripted("telegram", [OK])
    rig.channels = {"telegram": telegram}
    rig.build()
    await rig.gateway.notify(Message(rig.tenant, "INC-1", "detected", "P1", "down"))
    await rig.run_until_settled()
    assert telegram.got == []
    [row] = rig.rows()
    assert (row.state, row.reason) == ("suppressed", "shadow mode: nothing leaves")
    [(kind, data)] = rig.ledger()
    assert kind == "notification.suppressed"
    assert [d["recipient"] for d in data["would_have"]["decisions"]] == ["person:ada"]


async def test_local_log_channels_get_a_copy_without_links(rig: Rig, tmp_path: Any) -> None:
    rig.routing(ONE_PERSON)
    rig.person("ada", telegram="111")
    rig.channels = {"telegram": Scripted("telegram", [OK])}
    rig.build()
    rig.gateway.channels = [JsonLinesChannel(tmp_path / "n.jsonl")]
    await rig.gateway.notify(Message(rig.tenant, "INC-1", "proposed", "P1", "restart?",
                                     links={"person:ada": "https://ae.example/action/recover/TOKEN1"}))
    text = (tmp_path / "n.jsonl").read_text()
    assert "TOKEN1" not in text and '"approval_links_for": ["person:ada"]' in text
