"""Routing as a new user sets it up, against a real ``alertengine serve`` and a fake Telegram Bot API:
"page the checkout on-call engineer for critical alerts, tell the payments channel about the rest,
nothing below critical at night, and mute the nightly batch window".

People, a team, the routing rules, a silence and the Telegram channel are set through the API; a
dry run shows what will happen; then Alertmanager alerts arrive at the ingest endpoint: the
critical one reaches the engineer's own chat (through a Telegram outage), the warning is held by
quiet hours, the batch alert is silenced (its incident still opens), and the ledger verifies."""

from __future__ import annotations

import copy
import json
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import FIXTURES
from tests.fakes.telegram import FakeTelegram, fake_telegram  # noqa: F401  (fixture)
from tests.serving import running_appliance, wait_for

pytestmark = pytest.mark.slow
ENGINEER_CHAT, TEAM_CHAT = "5550001", "-1005550002"


def _alert(severity: str, service: str, name: str, fingerprint: str) -> dict[str, Any]:
    body = json.loads((FIXTURES / "alertmanager" / "firing-group.json").read_text())
    body = copy.deepcopy(body)
    body["alerts"] = [body["alerts"][0]]
    alert = body["alerts"][0]
    alert["labels"] = {"alertname": name, "service": service, "severity": severity, "team": "payments"}
    alert["annotations"] = {"summary": f"{name} on {service}"}
    alert["fingerprint"] = fingerprint
    body["commonLabels"] = dict(alert["labels"])
    return body


def _night_around_now() -> tuple[str, str]:
    """A quiet window that contains this moment (UTC), far from its edges."""
    now = datetime.now(timezone.utc)
    return (now - timedelta(hours=2)).strftime("%H:%M"), (now + timedelta(hours=2)).strftime("%H:%M")


def test_the_router_pages_the_engineer_holds_the_rest_at_night_and_mutes_the_batch(
        tmp_path: Path, fake_telegram: FakeTelegram) -> None:  # noqa: F811
    start, end = _night_around_now()
    with running_appliance(tmp_path) as app:
        tenant = app.add_tenant("payments")
        _id, admin = app.add_key(tenant, "admin", "payments-admin")
        _id, operator = app.add_key(tenant, "operator", "on-call")
        ingest = app.add_integration(tenant, "prometheus", by=admin)
        app.ok("DELETE", f"/tenant/{tenant}/shadow", admin)
        app.ok("PUT", f"/api/tenants/{tenant}/notifications/channels/telegram", admin, json={
            "config": {"api_base_url": fake_telegram.base_url, "default_chat_id": TEAM_CHAT},
            "secrets": {"bot_token": fake_telegram.token}})
        app.ok("PUT", f"/api/tenants/{tenant}/people/ada", admin, json={
            "name": "Ada", "time_zone": "Europe/Berlin", "addresses": {"telegram": ENGINEER_CHAT}})
        app.ok("PUT", f"/api/tenants/{tenant}/teams/checkout-oncall", admin, json={"name": "Checkout on-call",
                                                                                 "members": ["ada"]})
        routing = app.ok("PUT", f"/api/tenants/{tenant}/routes", admin, json={"toml": f"""
[defaults]
receivers = ["channel:telegram"]

[[route]]
name = "page-checkout-oncall"
match = {{ severity = ["critical"], service = ["checkout"] }}
receivers = ["team:checkout-oncall"]

[[route]]
name = "payments-channel"
match = {{ labels = ['team="payments"'] }}
receivers = ["channel:telegram"]
quiet_hours = {{ start = "{start}", end = "{end}", time_zone = "UTC", suppress_below = "critical" }}
"""})
        assert [r["name"] for r in routing["rules"]] == ["page-checkout-oncall", "payments-channel"]
        ends = (datetime.now(timezone.utc) + timedelta(hours=3)).strftime("%Y-%m-%dT%H:%M:%SZ")
        silence = app.ok("POST", f"/api/tenants/{tenant}/silences", operator, 201, json={
            "matchers": ['service="batch"'], "ends_at": ends, "comment": "nightly batch window"})
        assert silence["state"] == "active" and silence["created_by"].startswith("apikey:")

        # the dry run says what will happen, and sends nothing
        critical = app.ok("POST", f"/api/tenants/{tenant}/route/test", admin,
                          json={"severity": "critical", "service": "checkout", "labels": {"team": "payments"}})
        assert [(d["recipient"], d["outcome"], d["channels"]) for d in critical["decisions"]] == [
            ("person:ada", "send", ["telegram"])]
        warning = app.ok("POST", f"/api/tenants/{tenant}/route/test", admin,
                         json={"severity": "medium", "service": "ledger", "labels": {"team": "payments"}})
        assert [(d["recipient"], d["outcome"]) for d in warning["decisions"]] == [("channel:telegram", "held")]
        batch = app.ok("POST", f"/api/tenants/{tenant}/route/test", admin,
                       json={"severity": "critical", "service": "batch", "labels": {"team": "payments"}})
        assert batch["silenced_by"] == [silence["id"]]
        assert {d["outcome"] for d in batch["decisions"]} == {"silenced"}
        # the silence notice went to the team chat (default route: nobody else named)
        wait_for(lambda: any("nightly batch window" in m["text"] for m in fake_telegram.messages.values()),
                 what="the silence notice",
                 explain=lambda: app.get(f"/api/tenants/{tenant}/notifications", admin).text)
        assert fake_telegram.calls_to("sendMessage")[0]["chat_id"] == TEAM_CHAT

        # a Telegram outage as the page goes out: it arrives once Telegram answers again
        fake_telegram.fail_next("sendMessage", 502)
        fake_telegram.fail_next("sendMessage", 502)
        app.ok("POST", "/ingest/alertmanager", ingest, json=_alert("critical", "checkout", "CheckoutDown", "fp-1"))
        app.ok("POST", "/ingest/alertmanager", ingest, json=_alert("warning", "ledger", "LedgerSlow", "fp-2"))
        app.ok("POST", "/ingest/alertmanager", ingest, json=_alert("critical", "batch", "BatchLate", "fp-3"))

        def to(chat: str) -> list[str]:
            return [m["text"] for m in fake_telegram.messages.values() if str(m["chat"]["id"]) == chat]
        wait_for(lambda: any("CheckoutDown on checkout" in t for t in to(ENGINEER_CHAT)), what="the page to Ada")
        incidents = {i["title"]: i for i in app.incidents(tenant)}
        assert set(incidents) == {"CheckoutDown on checkout", "LedgerSlow on ledger", "BatchLate on batch"}
        assert all(i["is_open"] for i in incidents.values())          # a silence never stops policy

        def rows() -> dict[tuple[str, str], dict[str, Any]]:
            found = app.ok("GET", f"/api/tenants/{tenant}/notifications", admin, params={"limit": 1000})
            return {(r["incident"], r["event"]): r for r in found["notifications"]}
        page_key = (incidents["CheckoutDown on checkout"]["id"], "detected")
        # the fake has the message; the appliance records the delivery right after: wait for that
        by_incident = wait_for(lambda: (found := rows()) and found[page_key]["state"] == "delivered" and found,
                               what="the page to be recorded as delivered")
        page = by_incident[page_key]
        assert (page["recipient"], page["state"], page["channel"]) == ("person:ada", "delivered", "telegram")
        assert page["attempts"] == 3                                   # two refused, the third delivered
        held = by_incident[(incidents["LedgerSlow on ledger"]["id"], "detected")]
        assert (held["recipient"], held["state"]) == ("channel:telegram", "held")
        muted = by_incident[(incidents["BatchLate on batch"]["id"], "detected")]
        assert muted["state"] == "suppressed" and muted["reason"].startswith("silenced:")
        assert not any("LedgerSlow" in t or "BatchLate" in t for t in to(TEAM_CHAT) + to(ENGINEER_CHAT))

        kinds = [e["kind"] for e in app.ledger(tenant)]
        for kind in ("person.created", "team.created", "routing.changed", "silence.created", "notification.routed",
                     "notification.failed", "notification.sent"):
            assert kind in kinds, kind
        failed = [e for e in app.ledger(tenant, kind="notification.failed")]
        assert [e["data"]["attempt"] for e in failed][:2] == [1, 2]
        stats = {s["rule"]: s for s in app.ok("GET", f"/api/tenants/{tenant}/route/stats", admin)["rules"]}
        assert stats["page-checkout-oncall"]["sent"] >= 1 and stats["payments-channel"]["held"] >= 1
        metrics = app.get("/metrics", app.admin_key).text
        assert f'alertengine_notifications{{tenant="{tenant}",state="held"}}' in metrics

        shown = app.cli("route", "show", "--tenant", tenant)
        assert shown.code == 0 and "page-checkout-oncall" in shown.stdout and "below critical" in shown.stdout
        assert app.stop() == 0, app.output()
        verified = app.cli("ledger", "verify")
        assert verified.code == 0, verified.stdout + verified.stderr
