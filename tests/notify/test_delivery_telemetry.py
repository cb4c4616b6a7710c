"""What the sender tells the appliance's telemetry (attempts by channel and outcome, the time from
the outbox to delivery), the one log line of a dead letter, and the outbox as /metrics reads it at
scrape time (pending depth and oldest age by channel, dead letters by tenant).

Expectations are written here: counts of attempts the scripted channels answer, and figures of
rows this file stores."""

from __future__ import annotations

import json
import logging
from datetime import datetime, timedelta, timezone

import pytest
from prometheus_client.parser import text_string_to_metric_families

from alertengine.ledger.entry import utc_timestamp
from alertengine.notify.gateway import Message
from alertengine.notify.sender import metrics_lines
from alertengine.telemetry import Telemetry
from alertengine.tenancy.tenants import create_tenant
from tests.conftest import sqlite_only
from tests.notify.rig import DOWN, OK, Rig, Scripted

ADA = """
[defaults]
receivers = []
[[route]]
name = "ada"
receivers = ["person:ada"]
"""
ADA_THEN_WEBHOOK = ADA.replace("receivers = []", 'receivers = ["channel:webhook"]')


def sample(t: Telemetry, name: str, **labels: str) -> float | None:
    return t.registry.get_sample_value(name, labels)


async def test_every_attempt_is_counted_by_channel_and_outcome(rig: Rig) -> None:
    rig.routing(ADA_THEN_WEBHOOK)
    rig.person("ada", telegram="111")
    # the first message: three failures on telegram, then the fallback webhook; the second: telegram
    rig.channels = {"telegram": Scripted("telegram", [DOWN, DOWN, DOWN, OK]), "webhook": Scripted("webhook", [OK])}
    t = Telemetry()
    rig.build(t)
    await rig.gateway.notify(Message(rig.tenant, "INC-1", "detected", "P1", "checkout down"))
    await rig.gateway.notify(Message(rig.tenant, "INC-2", "detected", "P1", "search down"))
    await rig.run_until_settled()
    assert [(r.state, r.channel) for r in rig.rows()] == [("delivered", "webhook"), ("delivered", "telegram")]
    assert sample(t, "alertengine_deliveries_total", channel="telegram", outcome="failed") == 3
    assert sample(t, "alertengine_deliveries_total", channel="telegram", outcome="delivered") == 1
    assert sample(t, "alertengine_deliveries_total", channel="webhook", outcome="delivered") == 1
    assert sample(t, "alertengine_deliveries_total", channel="webhook", outcome="failed") is None
    assert sample(t, "alertengine_delivery_seconds_count", channel="webhook") == 1
    assert sample(t, "alertengine_delivery_seconds_count", channel="telegram") == 1
    # the sender's own tally (alertengine_notification_attempts_total) agrees
    assert dict(rig.sender.attempts) == {("telegram", "failed"): 3, ("telegram", "delivered"): 1,
                                         ("webhook", "delivered"): 1}


async def test_delivery_time_runs_from_entering_the_outbox(rig: Rig) -> None:
    rig.routing(ADA)
    rig.person("ada", telegram="111")
    rig.channels = {"telegram": Scripted("telegram", [DOWN])}
    t = Telemetry()
    rig.build(t)
    await rig.gateway.notify(Message(rig.tenant, "INC-1", "detected", "P1", "checkout down"))
    await rig.sender.run_due()          # one failed attempt: no delivery time yet
    assert sample(t, "alertengine_delivery_seconds_count", channel="telegram") is None
    queued_at = datetime.now(timezone.utc) - timedelta(seconds=90)   # as if queued a minute and a half ago
    rig.db.write_sync(lambda tx: tx.execute("UPDATE outbox SET created = ?", (utc_timestamp(queued_at),)))
    rig.channels["telegram"].answers = [OK]
    await rig.run_until_settled()
    assert sample(t, "alertengine_delivery_seconds_count", channel="telegram") == 1
    assert sample(t, "alertengine_delivery_seconds_bucket", channel="telegram", le="60.0") == 0
    assert sample(t, "alertengine_delivery_seconds_bucket", channel="telegram", le="+Inf") == 1
    assert 90 <= sample(t, "alertengine_delivery_seconds_sum", channel="telegram") < 90 + 60


async def test_a_dead_letter_is_one_warning_naming_the_row_not_the_person(
        rig: Rig, caplog: pytest.LogCaptureFixture) -> None:
    rig.routing('[defaults]\nretry_for = 120.0\nreceivers = []\n[[route]]\nname = "ada"\nreceivers = ["person:ada"]\n')
    rig.person("ada", telegram="111")
    rig.channels = {"telegram": Scripted("telegram", [DOWN])}
    rig.build()
    await rig.gateway.notify(Message(rig.tenant, "INC-1", "detected", "P1", "checkout down"))
    with caplog.at_level(logging.INFO, logger="alertengine.outbox"):
        await rig.run_until_settled()
    [row] = rig.rows()
    assert row.state == "dead"
    dead = [r for r in caplog.records if r.name == "alertengine.outbox" and "dead letter" in r.getMessage()]
    assert len(dead) == 1 and dead[0].levelno == logging.WARNING
    message = dead[0].getMessage()
    assert message.startswith(f"notification {row.id} (detected) of tenant {rig.tenant} is a dead letter: ")
    assert "HTTP 502" in message and "ada" not in message.lower() and "111" not in message


# --- scrape time ---------------------------------------------------------------------------------

NOW = datetime(2026, 3, 1, 12, 0, 0, tzinfo=timezone.utc)
CHAIN = [["webhook", "https://hooks.example.com/x"], ["telegram", "111"]]


def store(rig: Rig, tenant: str, state: str, age: float, *, channel_index: int = 0, channel: str | None = None,
          recipient: str = "person:x") -> None:
    body = json.dumps({"message": {"text": "t"}, "chain": CHAIN})
    created = utc_timestamp(NOW - timedelta(seconds=age))
    rig.db.write_sync(lambda tx: tx.execute(
        "INSERT INTO outbox (tenant, recipient, event, body, state, next_at, deadline, created, updated, "
        "channel_index, channel) VALUES (?, ?, 'detected', ?, ?, 0, 0, ?, ?, ?, ?)",
        (tenant, recipient, body, state, created, created, channel_index, channel)))


def families(lines: list[str]) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
    out: dict[str, dict[tuple[tuple[str, str], ...], float]] = {}
    for f in text_string_to_metric_families("\n".join(lines) + "\n"):
        assert f.name not in out, f"{f.name} twice"
        out[f.name] = {tuple(sorted(s.labels.items())): s.value for s in f.samples}
    return out


def test_the_outbox_at_scrape_time(rig: Rig) -> None:
    other = rig.db.write_sync(create_tenant("quiet", "test")).id
    a = rig.tenant
    store(rig, a, "queued", 120)                                   # next on webhook (index 0)
    store(rig, a, "queued", 30, recipient="person:y")              # webhook too
    store(rig, a, "queued", 45, channel_index=1, recipient="person:z")         # failed over: telegram
    store(rig, a, "queued", 10, channel_index=2, recipient="person:w")         # chain wrapped: webhook
    store(rig, a, "sending", 5, channel="telegram", recipient="person:v")      # in flight on telegram
    store(rig, a, "held", 3600, recipient="person:u")              # quiet hours: waits on purpose
    store(rig, a, "dead", 7200, recipient="person:t")
    store(rig, a, "dead", 7000, recipient="person:s")
    store(rig, a, "delivered", 9000, recipient="person:r")
    lines = metrics_lines({("slack", "delivered"): 4}, rig.db.read_conn(), [a, other], NOW.timestamp())
    got = families(lines)
    assert got["alertengine_outbox_pending"] == {
        (("channel", "webhook"),): 3, (("channel", "telegram"),): 2, (("channel", "slack"),): 0}
    assert got["alertengine_outbox_oldest_pending_seconds"] == {
        (("channel", "webhook"),): 120.0, (("channel", "telegram"),): 45.0, (("channel", "slack"),): 0.0}
    assert got["alertengine_notification_dead_letters"] == {(("tenant", a),): 2, (("tenant", other),): 0}
    assert got["alertengine_notification_attempts"] == {(("channel", "slack"), ("outcome", "delivered")): 4}
    assert got["alertengine_notifications"] == {
        (("state", "queued"), ("tenant", a)): 4, (("state", "sending"), ("tenant", a)): 1,
        (("state", "held"), ("tenant", a)): 1, (("state", "dead"), ("tenant", a)): 2,
        (("state", "delivered"), ("tenant", a)): 1}


def test_an_empty_outbox_still_declares_its_families(rig: Rig) -> None:
    got = families(metrics_lines({}, rig.db.read_conn(), [rig.tenant], NOW.timestamp()))
    assert got == {"alertengine_notifications": {}, "alertengine_notification_attempts": {},
                   "alertengine_outbox_pending": {}, "alertengine_outbox_oldest_pending_seconds": {},
                   "alertengine_notification_dead_letters": {(("tenant", rig.tenant),): 0}}


@sqlite_only   # SQLite's planner; PostgreSQL chooses its own plan by table statistics
def test_the_pending_query_reads_the_partial_index_not_the_whole_outbox(rig: Rig) -> None:
    from alertengine.notify.sender import _PENDING_BY_CHANNEL
    plan = " ".join(str(r[-1]) for r in rig.db.read_conn().execute("EXPLAIN QUERY PLAN " + _PENDING_BY_CHANNEL))
    assert "outbox_pending" in plan, plan
