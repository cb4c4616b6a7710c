"""WhatsApp, voice and Slack against a real ``alertengine serve`` and local fake Twilio and Slack
servers: an alert reaches Ada on WhatsApp, Twilio reports it read, the chain calls her after a few
seconds, she presses 1, and Bob, told on Slack, approves the recovery with his own button."""

from __future__ import annotations

import copy
import json
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from twilio.request_validator import RequestValidator

from tests.conftest import FIXTURES
from tests.fakes.receiver import Receiver
from tests.fakes.slack import FakeSlack, fake_slack, signed_headers  # noqa: F401  (fixture)
from tests.fakes.twilio import FakeTwilio, fake_twilio  # noqa: F401  (fixture)
from tests.serving import running_appliance, wait_for

pytestmark = pytest.mark.slow
ADA, CALLER, WA_FROM = "+15550000001", "+14155550100", "+14155238886"
SIGNING = "8f742231b10e8888abcd99yyyzzz85a5"


def _sent(fake: FakeTwilio, prefix: str) -> list[dict[str, Any]]:
    """The messages (SM) or calls (CA) Twilio accepted: the request's form and the SID answered
    (no failure is injected in these tests, so the n-th request is the n-th resource created)."""
    forms = fake.messages if prefix == "SM" else fake.calls
    sids = [sid for sid in list(fake.created) if sid.startswith(prefix)]
    return [{**form, "sid": sid} for form, sid in zip(list(forms), sids)]


def _alert() -> dict[str, Any]:
    body = copy.deepcopy(json.loads((FIXTURES / "alertmanager" / "firing-group.json").read_text()))
    alert = body["alerts"][0]
    alert["labels"] = {"alertname": "CheckoutDown", "service": "checkout", "severity": "critical"}
    alert["annotations"] = {"summary": "CheckoutDown on checkout"}
    body["alerts"] = [alert]
    return body


def test_whatsapp_then_a_call_acknowledged_by_keypress_and_an_approval_from_slack(
        tmp_path: Path, fake_twilio: FakeTwilio, fake_slack: FakeSlack) -> None:  # noqa: F811
    with running_appliance(tmp_path) as app, Receiver() as receiver:
        tenant = app.add_tenant("payments")
        _id, admin = app.add_key(tenant, "admin", "payments-admin")
        ingest = app.add_integration(tenant, "prometheus", by=admin)
        app.ok("DELETE", f"/tenant/{tenant}/shadow", admin)
        app.ok("PUT", f"/api/tenants/{tenant}/notifications/channels/twilio", admin, json={
            "config": {"api_base_url": fake_twilio.base_url, "account_sid": fake_twilio.account_sid,
                       "whatsapp_from": f"whatsapp:{WA_FROM}", "from_number": CALLER},
            "secrets": {"auth_token": fake_twilio.auth_token}})
        app.ok("PUT", f"/api/tenants/{tenant}/notifications/channels/slack", admin, json={
            "config": {"api_base_url": fake_slack.base_url},
            "secrets": {"bot_token": fake_slack.token, "signing_secret": SIGNING}})
        app.ok("PUT", f"/api/tenants/{tenant}/people/ada", admin, json={
            "name": "Ada", "addresses": {"whatsapp": ADA, "voice": ADA}, "channels": ["whatsapp", "voice"]})
        app.ok("PUT", f"/api/tenants/{tenant}/people/bob", admin, json={"name": "Bob", "addresses": {"slack": "U0BOB"}})
        created = app.ok("POST", f"/api/tenants/{tenant}/services", admin, 201, json={
            "name": "checkout", "health_url": "http://127.0.0.1:9/health",
            "recovery_webhook_url": f"{receiver.url}/recover",
            "responders": {"primary": ["person:ada", "person:bob"]}})
        receiver.secret = created["webhook_secret"]
        app.ok("PUT", f"/api/tenants/{tenant}/routes", admin, json={"toml": """
[[route]]
name = "responders"
receivers = ["responders"]
escalation = "quick"

[escalation.quick]
steps = [{ after = 4.0, receivers = ["responders"], prefer = "voice" }]
"""})
        app.ok("POST", "/ingest/alertmanager", ingest, json=_alert())

        first = wait_for(lambda: next((m for m in _sent(fake_twilio, 'SM') if m["To"] == f"whatsapp:{ADA}"), None),
                         what="Ada's WhatsApp message")
        assert "CheckoutDown" in first["Body"] and "Reply ACK " in first["Body"]
        token = fake_twilio.auth_token

        def twilio(path: str, form: dict[str, str]) -> httpx.Response:
            url = f"{app.url}/bot/twilio/{tenant}/{path}"
            signature = RequestValidator(token).compute_signature(url, form)
            return httpx.post(url, data=form, headers={"X-Twilio-Signature": signature}, timeout=30)
        for status in ("sent", "delivered", "read"):
            assert twilio("status", fake_twilio.message_status(first["sid"], status)).status_code == 200
        read = [e["decision"] for e in app.ledger(tenant, kind="notification.status")]
        assert read == ["sent", "delivered", "read"]

        call = wait_for(lambda: next(iter(_sent(fake_twilio, 'CA')), None), what="the call to Ada")
        assert call["To"] == ADA and "Press 1" in call["Twiml"]
        pressed = twilio("voice", fake_twilio.gather(call["sid"], "1", to=ADA, from_=CALLER))
        assert pressed.status_code == 200 and "Acknowledged" in pressed.text, pressed.text
        incident = app.incidents(tenant)[0]["id"]
        assert app.incident(tenant, incident)["acknowledged_by"] == f"engineer:voice:{ADA}"

        # Bob's Slack message about the proposal carries his own Approve button
        def bobs_proposal() -> dict[str, Any] | None:
            return next((m for m in fake_slack.messages_in("U0BOB") for b in m.get("blocks", [])
                         if b["type"] == "actions" and any(e["text"]["text"] == "Approve" for e in b["elements"])),
                        None)
        posted = wait_for(bobs_proposal, what="Bob's Slack proposal")
        approve = next(e["value"] for b in posted["blocks"] if b["type"] == "actions" for e in b["elements"]
                       if e["text"]["text"] == "Approve")
        body = fake_slack.block_actions_body(user_id="U0BOB", value=approve, channel_id="D0BOB", message_ts=posted["ts"])
        answer = httpx.post(f"{app.url}/bot/slack/{tenant}", content=body, timeout=30,
                            headers=signed_headers(SIGNING, body, str(int(time.time()))))
        assert answer.status_code == 200 and answer.json()["outcome"] == "authorized", answer.text
        wait_for(lambda: receiver.requests, what="the recovery webhook")
        assert json.loads(receiver.requests[0].body)["approved_by"] == ["person:bob"]
        assert app.stop() == 0
        verified = app.cli("ledger", "verify")
        assert verified.code == 0, verified.stdout + verified.stderr
