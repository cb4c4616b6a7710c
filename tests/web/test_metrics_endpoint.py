"""``GET /metrics`` as Prometheus reads it: one document that the reference parser accepts, every
family declared once with its type, the figures of what this file stores and observes, and the
database read off the event loop.

The families and their types are written out here (FAMILIES): a metric dropped, renamed or served
twice fails a test."""

from __future__ import annotations

import asyncio
import json
import threading
from datetime import datetime, timedelta, timezone

import pytest
from prometheus_client.parser import text_string_to_metric_families

from alertengine.appliance import DataDir
from alertengine.config import Config
from alertengine.incidents.engine import Opening, open_incident
from alertengine.ledger.entry import utc_timestamp
from alertengine.telemetry import Telemetry, family
from alertengine.web.app import create_app
from alertengine.web import metrics_api
from alertengine.tenancy.tenants import create_key
from tests.web.conftest import World

# family (as the parser names it) -> type. Counters lose their _total suffix in the parser's naming.
FAMILIES = {
    # read at scrape time (served before issue 16, names and labels kept)
    "alertengine_ai_tokens": "counter",
    "alertengine_incidents_open": "gauge",
    "alertengine_ledger_entries": "gauge",
    "alertengine_mode": "gauge",
    "alertengine_notifications": "gauge",
    "alertengine_notification_attempts": "counter",
    "alertengine_stream_clients": "gauge",
    "alertengine_stream_dropped": "counter",
    "alertengine_condition": "gauge",
    # read at scrape time (new)
    "alertengine_outbox_pending": "gauge",
    "alertengine_outbox_oldest_pending_seconds": "gauge",
    "alertengine_notification_dead_letters": "gauge",
    # observed as the appliance runs (telemetry.py)
    "alertengine_writer_batch_writes": "histogram",
    "alertengine_writer_commit_seconds": "histogram",
    "alertengine_polls": "counter",
    "alertengine_poll_lateness_seconds": "histogram",
    "alertengine_breaching_polls": "counter",
    "alertengine_ingest_alerts": "counter",
    "alertengine_ingest_request_seconds": "histogram",
    "alertengine_ingest_request_alerts": "histogram",
    "alertengine_detection_latency_seconds": "histogram",
    "alertengine_deliveries": "counter",
    "alertengine_delivery_seconds": "histogram",
}


async def scrape(world: World, key: str | None = None) -> str:
    reply = await world.client.get("/metrics", headers=world.auth(key or world.admin))
    assert reply.status_code == 200, reply.text
    assert reply.headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8"
    return reply.text


def parse(text: str) -> dict[str, tuple[str, dict[tuple[tuple[str, str], ...], float]]]:
    """family -> (type, {sorted labels (with the sample's own name): value}); fails on a family twice."""
    out: dict[str, tuple[str, dict[tuple[tuple[str, str], ...], float]]] = {}
    for f in text_string_to_metric_families(text):
        assert f.name not in out, f"family {f.name} served twice"
        out[f.name] = (f.type, {(("__name__", s.name), *sorted(s.labels.items())): s.value for s in f.samples})
    return out


def declared_names(text: str) -> list[str]:
    return [line.split()[2] for line in text.splitlines() if line.startswith("# TYPE ")]


async def test_the_document_parses_and_declares_every_family_once_with_its_type(world: World) -> None:
    text = await scrape(world)
    families = parse(text)
    assert {name: kind for name, (kind, _) in families.items()} == FAMILIES
    names = declared_names(text)
    assert len(names) == len(set(names)) == len(FAMILIES)
    helps = [line.split()[2] for line in text.splitlines() if line.startswith("# HELP ")]
    assert helps == names                                     # each HELP right before its TYPE
    assert not any(line.split("{")[0].split(" ")[0].endswith("_created") for line in text.splitlines()
                   if not line.startswith("#"))               # no _created series doubling the counters


async def test_the_figures_are_those_of_what_is_stored_and_observed(world: World) -> None:
    a, b = world.tenants["a"], world.tenants["b"]
    opening = Opening(a, "health:checkout", "poller", "checkout down", "P1", None, "checkout", "restart",
                      "sha256:000000000000", "test", {})
    await world.db.write(open_incident(opening))
    queued_at = utc_timestamp(datetime.now(timezone.utc) - timedelta(seconds=300))
    body = json.dumps({"message": {"text": "t"}, "chain": [["slack", "#ops"]]})

    def outbox(tx):  # type: ignore[no-untyped-def]
        for state, recipient in (("queued", "person:x"), ("dead", "person:y"), ("dead", "person:z")):
            tx.execute("INSERT INTO outbox (tenant, recipient, event, body, state, next_at, deadline, created, "
                       "updated) VALUES (?, ?, 'detected', ?, ?, 0, 0, ?, ?)",
                       (b, recipient, body, state, queued_at, queued_at))
        tx.execute("INSERT INTO ai_exchanges (tenant, model, prompt, response, input_tokens, output_tokens, created) "
                   "VALUES (?, 'claude-x', 'p', 'r', 120, 30, ?)", (a, queued_at))
    await world.db.write(outbox)
    telemetry = world.app.state.telemetry
    telemetry.polls.labels("ok").inc(7)
    telemetry.poll_lateness.observe(0.003)
    telemetry.writer_batch.observe(12)
    telemetry.detection.labels("poller").observe(0.2)
    families = parse(await scrape(world))

    def value(family: str, name: str | None = None, **labels: str) -> float:
        samples = families[family][1]
        return samples[(("__name__", name or family), *sorted(labels.items()))]
    assert value("alertengine_incidents_open", tenant=a) == 1
    assert value("alertengine_incidents_open", tenant=b) == 0
    assert value("alertengine_ai_tokens", "alertengine_ai_tokens_total", tenant=a, model="claude-x", kind="input") == 120
    assert value("alertengine_ai_tokens", "alertengine_ai_tokens_total", tenant=a, model="claude-x", kind="output") == 30
    assert value("alertengine_outbox_pending", channel="slack") == 1
    assert 300 <= value("alertengine_outbox_oldest_pending_seconds", channel="slack") < 300 + 60
    assert value("alertengine_notification_dead_letters", tenant=b) == 2
    assert value("alertengine_notification_dead_letters", tenant=a) == 0
    assert value("alertengine_mode", mode="NORMAL") == 1 and value("alertengine_mode", mode="DEGRADED") == 0
    assert value("alertengine_polls", "alertengine_polls_total", outcome="ok") == 7
    assert value("alertengine_poll_lateness_seconds", "alertengine_poll_lateness_seconds_bucket", le="0.005") == 1
    assert value("alertengine_poll_lateness_seconds", "alertengine_poll_lateness_seconds_bucket", le="0.0025") == 0
    assert value("alertengine_writer_batch_writes", "alertengine_writer_batch_writes_count") == 1
    assert value("alertengine_detection_latency_seconds", "alertengine_detection_latency_seconds_count",
                 source="poller") == 1


async def test_label_values_are_escaped(world: World) -> None:
    await world.app.state.runtime.modes.set('channel "odd"\\ of\nnowhere', True, "test")
    families = parse(await scrape(world))
    assert families["alertengine_condition"][1] == {
        (("__name__", "alertengine_condition"), ("name", 'channel "odd"\\ of\nnowhere')): 1}


async def test_the_database_is_read_off_the_event_loop(world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    loop_thread = threading.get_ident()
    seen: list[int] = []
    real = metrics_api.document

    def spy(*args):  # type: ignore[no-untyped-def]
        seen.append(threading.get_ident())
        return real(*args)
    monkeypatch.setattr(metrics_api, "document", spy)
    await scrape(world)
    assert len(seen) == 1 and seen[0] != loop_thread
    assert asyncio.get_running_loop().is_running()


async def test_who_may_scrape(world: World) -> None:
    scrape_id, scraper = await scrape_key(world)
    await scrape(world, scraper)
    await scrape(world, world.admin)
    for label in ("a", "b"):
        for role in ("admin", "operator", "auditor", "viewer"):
            reply = await world.client.get("/metrics", headers=world.auth(world.keys[(label, role)]))
            assert reply.status_code == 403, (label, role)
            assert reply.json()["error"] == {"code": "forbidden", "message": f"role {role!r} may not metrics read"}
            assert "alertengine_" not in reply.text
    for headers in ({}, world.auth(world.revoked["a"]), {"Authorization": f"Basic {scraper}"}):
        assert (await world.client.get("/metrics", headers=headers)).status_code == 401


async def test_one_telemetry_per_appliance_from_the_database_to_the_endpoint(data_dir: DataDir, config: Config) -> None:
    """What serve does: one Telemetry, given to the database and the app; every part observes into it."""
    telemetry = Telemetry()
    db = data_dir.open_database(config, telemetry)
    try:
        for app in (create_app(config, data_dir, db, telemetry), create_app(config, data_dir, db)):
            runtime = app.state.runtime
            assert app.state.telemetry is telemetry and runtime.telemetry is telemetry
            assert db.telemetry is telemetry and runtime.sender.telemetry is telemetry
            assert runtime.detector.telemetry is telemetry
            await runtime.http.aclose()
    finally:
        db.close()


def test_a_hand_written_family_keeps_whole_numbers_whole_and_refuses_what_would_not_parse() -> None:
    assert family("alertengine_x", "gauge", "An x.\nTwo lines \\ one.", [({"a": 'q"\\\n'}, 400), ({}, 0.25)]) == [
        "# HELP alertengine_x An x.\\nTwo lines \\\\ one.", "# TYPE alertengine_x gauge",
        'alertengine_x{a="q\\"\\\\\\n"} 400', "alertengine_x 0.25"]
    assert family("alertengine_y", "counter", "None yet.", []) == ["# HELP alertengine_y None yet.",
                                                                   "# TYPE alertengine_y counter"]
    assert family("alertengine_z", "gauge", "Inf.", [({}, float("inf"))])[-1] == "alertengine_z +Inf"
    for name, kind, labels, value in (("alertengine-x", "gauge", {}, 1), ("alertengine_x", "summary", {}, 1),
                                      ("alertengine_x", "gauge", {"bad-label": "v"}, 1),
                                      ("alertengine_x", "gauge", {"__name__": "v"}, 1)):
        with pytest.raises(ValueError):
            family(name, kind, "h", [(labels, value)])
    for value in (True, "1", None):
        with pytest.raises(TypeError):
            family("alertengine_x", "gauge", "h", [({}, value)])  # type: ignore[list-item]


async def scrape_key(world: World) -> tuple[str, str]:
    """(key id, secret) of a new scrape key, made as the CLI and API make keys."""
    key, secret = await world.db.write(create_key(None, "scrape", "prometheus", "test"))
    return key.id, secret
