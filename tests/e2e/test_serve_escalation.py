"""A short real escalation chain against ``alertengine serve`` and the fake Telegram Bot API: nobody
answers the first incident, so its primary and then its secondary are told at the chain's seconds;
the second incident is acknowledged from Telegram at once, so nobody is chased about it."""

from __future__ import annotations

import copy
import json
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import FIXTURES
from tests.fakes.telegram import FakeTelegram, fake_telegram  # noqa: F401  (fixture)
from tests.serving import running_appliance, wait_for

pytestmark = pytest.mark.slow
PRIMARY, SECONDARY, HOOK = 5550001, 5550002, "hook-secret-for-tests"


def _alert(name: str, service: str, fingerprint: str) -> dict[str, Any]:
    body = copy.deepcopy(json.loads((FIXTURES / "alertmanager" / "firing-group.json").read_text()))
    alert = body["alerts"][0]
    alert["labels"] = {"alertname": name, "service": service, "severity": "critical"}
    alert["annotations"] = {"summary": f"{name} on {service}"}
    alert["fingerprint"] = fingerprint
    body["alerts"] = [alert]
    return body


def test_a_real_chain_calls_in_order_and_an_acknowledgement_from_telegram_stops_it(
        tmp_path: Path, fake_telegram: FakeTelegram) -> None:  # noqa: F811
    with running_appliance(tmp_path) as app:
        tenant = app.add_tenant("payments")
        _id, admin = app.add_key(tenant, "admin", "payments-admin")
        ingest = app.add_integration(tenant, "prometheus", by=admin)
        app.ok("DELETE", f"/tenant/{tenant}/shadow", admin)
        app.ok("PUT", f"/api/tenants/{tenant}/notifications/channels/telegram", admin, json={
            "config": {"api_base_url": fake_telegram.base_url, "default_chat_id": "-100"},
            "secrets": {"bot_token": fake_telegram.token, "webhook_secret": HOOK}})
        for name in ("checkout", "ledger"):
            app.ok("POST", f"/api/tenants/{tenant}/services", admin, 201, json={
                "name": name, "health_url": "http://127.0.0.1:9/health",
                "contacts": {"primary": {"name": "Ada", "telegram_chat_id": str(PRIMARY)},
                             "secondary": {"name": "Grace", "telegram_chat_id": str(SECONDARY)}}})
        app.ok("PUT", f"/api/tenants/{tenant}/routes", admin, json={"toml": """
[[route]]
name = "responders"
receivers = ["responders"]
escalation = "quick"

[escalation.quick]
steps = [{ after = 8.0, receivers = ["responders"], prefer = "voice" },
         { after = 12.0, receivers = ["responders:secondary"] }]
"""})
        started = time.monotonic()
        app.ok("POST", "/ingest/alertmanager", ingest, json=_alert("CheckoutDown", "checkout", "e-1"))
        app.ok("POST", "/ingest/alertmanager", ingest, json=_alert("LedgerDown", "ledger", "e-2"))

        def texts(chat: int) -> list[str]:
            return [m["text"] for m in fake_telegram.messages.values() if m["chat"]["id"] == chat]
        # acknowledge the ledger incident from Telegram, on its first message to Ada
        news = wait_for(lambda: next(((k, m) for k, m in fake_telegram.messages.items()
                                      if "LedgerDown" in m["text"] and m["chat"]["id"] == PRIMARY), None),
                        what="the ledger incident's first message")
        (chat, message_id), _message = news
        ledger_inc = next(i["id"] for i in app.incidents(tenant) if i["service_name"] == "ledger")
        update = fake_telegram.callback_update(user_id=PRIMARY, data=f"ak:{ledger_inc}", chat_id=chat,
                                               message_id=message_id, first_name="Ada")
        acked = httpx.post(f"{app.url}/bot/telegram/{tenant}", json=update,
                           headers={"X-Telegram-Bot-Api-Secret-Token": HOOK}, timeout=30)
        assert acked.status_code == 200 and acked.json()["outcome"] == "acknowledged", acked.text
        assert time.monotonic() - started < 8.0, "too slow to acknowledge before the first step"

        wait_for(lambda: any("Escalation step 2 of 2" in t for t in texts(SECONDARY)), what="the secondary's page")
        checkout = next(i["id"] for i in app.incidents(tenant) if i["service_name"] == "checkout")
        steps = [e for e in app.ledger(tenant, kind="escalation.step")]
        assert [(e["incident"], e["data"]["step"]) for e in steps] == [(checkout, 1), (checkout, 2)]
        escalations = [e for e in app.ledger(tenant, kind="escalation.started")]
        assert {e["incident"] for e in escalations} == {checkout, ledger_inc}
        assert any("Escalation step 1 of 2" in t and checkout in t for t in texts(PRIMARY))
        assert not any("Escalation" in t and ledger_inc in t for t in texts(PRIMARY) + texts(SECONDARY))
        stopped = [e for e in app.ledger(tenant, kind="escalation.stopped")]
        assert [(e["incident"], e["decision"]) for e in stopped] == [(ledger_inc, "stopped")]
        assert app.incident(tenant, ledger_inc)["acknowledged_by"] == f"engineer:telegram:{PRIMARY}"
        assert any(e["text"].startswith(f"{ledger_inc}: acknowledged by Ada")
                   for e in fake_telegram.calls_to("editMessageText"))
        assert app.stop() == 0
        verified = app.cli("ledger", "verify")
        assert verified.code == 0, verified.stdout + verified.stderr
