"""Ingest and the approval link, against a real ``alertengine serve`` subprocess over real HTTP.

Ingest: an Alertmanager webhook body with a real integration key opens an incident; bad keys and
malformed bodies are refused with a JSON error naming the problem and change nothing; the ledger
verifies after shutdown. Approval: a live tenant, a service whose recovery webhook is a fake
receiver on 127.0.0.1, an incident reaching PROPOSED, the approval link read from the appliance's
local notification channel (``notifications.jsonl``, and the console), the read-only preview, the
CSRF-checked confirm, exactly one signed recovery call, and a second confirm refused."""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import FIXTURES, run_cli
from tests.fakes.receiver import Receiver
from tests.serving import Appliance, running_appliance, wait_for

pytestmark = pytest.mark.slow


def alertmanager_body(name: str) -> dict[str, Any]:
    return json.loads((FIXTURES / "alertmanager" / name).read_text())


def ledger_kinds(app: Appliance, tenant: str) -> list[str]:
    return [e["kind"] for e in app.ledger(tenant)]


def verify_after_stop(app: Appliance) -> None:
    assert app.stop() == 0, app.output()
    verified = app.cli("ledger", "verify")
    assert verified.code == 0, verified.stdout + verified.stderr
    result = verified.json()
    assert result["checkpoint_size"] == result["entries_checked"], result
    replayed = app.cli("replay")
    assert replayed.code == 0, replayed.stdout + replayed.stderr


def test_alertmanager_ingest_opens_refuses_bad_keys_and_bodies_and_resolves(tmp_path: Path) -> None:
    with running_appliance(tmp_path) as app:
        tenant = app.add_tenant("payments")
        _admin_id, admin = app.add_key(tenant, "admin", "payments-admin")
        key = app.add_integration(tenant, "prometheus", by=admin)
        firing = alertmanager_body("firing-group.json")

        opened = app.ok("POST", "/ingest/alertmanager", key, json=firing)
        assert opened == {"accepted": 2, "incidents": ["INC-1"]}
        inc = app.wait_for_stage(tenant, "INC-1", "DIAGNOSED")   # no such service registered: nothing to propose
        assert inc["is_open"] and inc["source"] == "alertmanager" and inc["priority"] == "P0"
        assert inc["service_name"] == "checkout" and inc["title"] == "P95 latency 2.8s"
        # a repeat (Alertmanager re-sends groups) through the URL form of the key changes nothing
        assert app.ok("POST", f"/ingest/alertmanager/{key}", json=firing) == opened
        received = app.ledger(tenant, kind="alert.received")
        assert len(received) == 2 and {e["actor"] for e in received} == {"ingest:alertmanager"}

        # keys that are not this tenant's live ingest key: 401 with the JSON error, nothing stored
        other = app.add_tenant("other")
        other_key = app.add_integration(other, "other-prometheus")
        revoked_key = app.add_integration(tenant, "to-revoke", by=admin)
        [revoked_item] = [i for i in app.ok("GET", f"/api/tenants/{tenant}/integrations", admin)["integrations"]
                          if i["name"] == "to-revoke"]
        app.ok("DELETE", f"/api/tenants/{tenant}/integrations/{revoked_item['id']}", admin)
        size = len(app.ledger(tenant))
        for path, headers in [
            ("/ingest/alertmanager", {}),
            ("/ingest/alertmanager", {"Authorization": f"Bearer {'z' * 32}"}),
            (f"/ingest/alertmanager/{'z' * 32}", {}),
            ("/ingest/alertmanager", {"Authorization": f"Bearer {admin}"}),     # an API key is not an ingest key
            ("/ingest/alertmanager", {"Authorization": f"Basic {key}"}),
            (f"/ingest/alertmanager/{revoked_key}", {}),
        ]:
            reply = app.post(path, json=firing, headers=headers)
            assert reply.status_code == 401, (path, headers, reply.text)
            assert reply.json()["error"]["code"] == "unauthenticated" and "ingest integration key" in \
                reply.json()["error"]["message"]
        # the other tenant's key files the alert under the other tenant, never under this one
        assert app.ok("POST", f"/ingest/alertmanager/{other_key}", json=firing)["incidents"] == ["INC-1"]
        assert [i["id"] for i in app.incidents(other)] == ["INC-1"]

        # malformed bodies: 4xx, a JSON error naming the problem; a bad alert after a good one stores neither
        half_bad = copy.deepcopy(firing)
        half_bad["alerts"][0]["labels"]["alertname"] = "SomethingNew"
        half_bad["alerts"][0]["fingerprint"] = "0123456789abcdef"
        half_bad["alerts"][1]["status"] = "burning"
        wrong_label = copy.deepcopy(firing)
        wrong_label["alerts"][0]["labels"]["instance"] = 5
        no_start = copy.deepcopy(firing)
        del no_start["alerts"][1]["startsAt"]
        cases: list[tuple[dict[str, Any], int, str, str | None]] = [
            ({"json": {**firing, "version": "3"}}, 400, "bad_payload", "version"),
            ({"json": {"version": "4"}}, 400, "bad_payload", "alerts"),
            ({"json": half_bad}, 400, "bad_payload", "alerts[1].status"),
            ({"json": wrong_label}, 400, "bad_payload", "alerts[0].labels.instance"),
            ({"json": no_start}, 400, "bad_payload", "alerts[1].startsAt"),
            ({"json": [firing]}, 400, "bad_payload", "$"),
            ({"content": b'{"version": "4", "alerts": [', "headers": {"content-type": "application/json"}},
             400, "bad_json", None),
            ({"content": json.dumps(firing).encode(), "headers": {"content-type": "text/plain"}},
             415, "unsupported_media_type", None),
        ]
        for kwargs, status, code, field in cases:
            headers = {**kwargs.pop("headers", {}), "Authorization": f"Bearer {key}"}
            reply = app.post("/ingest/alertmanager", headers=headers, **kwargs)
            assert reply.status_code == status, (kwargs, reply.text)
            assert reply.headers["content-type"] == "application/json"
            error = reply.json()["error"]
            assert error["code"] == code and error["message"], error
            assert error.get("field") == field, error
        assert len(app.ledger(tenant)) == size, ledger_kinds(app, tenant)[-5:]
        assert [i["id"] for i in app.incidents(tenant)] == ["INC-1"]

        # resolved alerts resolve: one still firing keeps the incident open; the last closes it
        app.ok("POST", "/ingest/alertmanager", key, json=alertmanager_body("partly-resolved-group.json"))
        assert app.incident(tenant, "INC-1")["is_open"]
        done = alertmanager_body("partly-resolved-group.json")
        for alert in done["alerts"]:
            alert["status"] = "resolved"
            alert["endsAt"] = "2026-11-22T14:10:00Z"
        app.ok("POST", "/ingest/alertmanager", key, json=done)
        closed = app.wait_for_stage(tenant, "INC-1", "RESOLVED")
        assert closed["is_open"] is False and closed["closed_at"]
        [resolved] = app.ledger(tenant, kind="incident.resolved")
        assert resolved["actor"] == "ingest:alertmanager" and resolved["incident"] == "INC-1"
        verify_after_stop(app)


def csrf_of(page: httpx.Response) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', page.text)
    assert found, page.text
    return found.group(1)


def test_approval_link_preview_then_confirm_calls_the_receiver_once(tmp_path: Path) -> None:
    with Receiver() as receiver, Receiver() as health, running_appliance(tmp_path) as app:
        tenant = app.add_tenant("payments")
        _admin_id, admin = app.add_key(tenant, "admin", "payments-admin")
        assert app.ok("DELETE", f"/tenant/{tenant}/shadow", admin) == {"tenant": tenant, "shadow": False}
        service = app.ok("POST", f"/api/tenants/{tenant}/services", admin, 201, json={
            "name": "checkout", "health_url": f"{health.url}/health", "recovery_webhook_url": f"{receiver.url}/recover",
            "contacts": {"primary": {"name": "Ada"}}})
        receiver.secret = service["webhook_secret"]   # shown once, at creation: the receiver verifies with it
        key = app.add_integration(tenant, "prometheus", by=admin)
        app.ok("POST", "/ingest/alertmanager", key, json=alertmanager_body("firing-group.json"))
        inc = app.wait_for_stage(tenant, "INC-1", "PROPOSED")
        assert inc["action"] == "restart service" and inc["service_id"] == service["id"]

        # the local channels are logs: they say who was sent a link, never the link itself
        def proposal() -> dict[str, Any] | None:
            return next((n for n in app.notifications() if n["event"] == "proposed" and n["incident"] == "INC-1"),
                        None)
        notice = wait_for(what="the proposal in notifications.jsonl", check=proposal)
        assert notice["tenant"] == tenant and "restart service" in notice["text"] and "127.0.0.1" in notice["text"]
        assert notice["approval_links_for"] == ["primary:Ada"]
        wait_for(what="the notice on the console", check=lambda: "approval links sent to: primary:Ada" in app.output())
        assert "/action/recover/" not in app.output() + json.dumps(app.notifications())
        # no chat channel reaches Ada here: the operator mints her a link at the appliance's shell
        # (links point at public_url, which an operator sets; this serve listens on a test port)
        def approval_link(recipient: str) -> Any:
            return run_cli("approval", "link", "--data-dir", str(app.data), "--tenant", tenant, "--incident", "INC-1",
                           "--recipient", recipient, env={"ALERTENGINE_PUBLIC_URL": app.url})
        wrong = approval_link("primary:Eve")
        assert wrong.code == 2 and "the proposal asks primary:Ada" in wrong.stderr
        minted = approval_link("primary:Ada")
        assert minted.code == 0, minted.stderr
        link = minted.stdout.strip()
        assert link.startswith(f"{app.url}/action/recover/")
        requested = [e for e in app.ledger(tenant) if e["kind"] == "approval.requested" and e["data"]["channel"] == "cli"]
        assert len(requested) == 1 and requested[0]["actor"].startswith("cli:")
        token = link.rsplit("/", 1)[1]
        assert token not in json.dumps(app.ledger(tenant))   # tokens are never ledgered

        browser = httpx.Client(timeout=60.0, trust_env=False)   # the approver's browser: its own cookies
        try:
            before = len(app.ledger(tenant))
            page = browser.get(link)
            assert page.status_code == 200, page.text
            assert "Approve recovery for INC-1?" in page.text and "restart service" in page.text
            assert "127.0.0.1" in page.text and "primary:Ada" in page.text
            assert page.headers["cache-control"] == "no-store" and page.headers["referrer-policy"] == "no-referrer"
            csrf = csrf_of(page)
            assert browser.cookies.get("ae_csrf") == csrf
            # the preview is read-only: nothing executes, nothing is written
            assert len(app.ledger(tenant)) == before and app.incident(tenant, "INC-1")["stage"] == "PROPOSED"
            assert receiver.requests == []

            # a confirm that did not come from the page (no CSRF cookie) is refused and does nothing
            forged = httpx.post(f"{app.url}/action/recover/confirm", trust_env=False, timeout=60.0,
                                data={"token": token, "csrf": csrf, "decision": "approve"})
            assert forged.status_code == 403 and "CSRF" in forged.text
            assert len(app.ledger(tenant)) == before and app.incident(tenant, "INC-1")["stage"] == "PROPOSED"

            confirmed = browser.post(f"{app.url}/action/recover/confirm",
                                     data={"token": token, "csrf": csrf, "decision": "approve"})
            assert confirmed.status_code == 200 and "Approved" in confirmed.text, confirmed.text
            executed = app.wait_for_stage(tenant, "INC-1", "EXECUTED")
            assert executed["is_open"]

            [call] = receiver.requests
            assert call.path == "/recover" and call.signature_ok
            body = json.loads(call.body)
            assert body["incident"] == "INC-1" and body["tenant"] == tenant and body["service"] == "checkout"
            assert body["action"] == "restart service" and body["approved_by"] == ["link:primary:Ada"]
            assert body["idempotency_key"] == call.headers["idempotency-key"]
            assert call.headers["x-alertengine-timestamp"].isdigit()

            # the link works once: a second confirm, and the preview, say who used it
            again = browser.post(f"{app.url}/action/recover/confirm",
                                 data={"token": token, "csrf": csrf, "decision": "approve"})
            assert again.status_code == 409 and "already used by link:primary:Ada" in again.text, again.text
            reopened = browser.get(link)
            assert reopened.status_code == 409 and "already used by link:primary:Ada" in reopened.text
        finally:
            browser.close()

        assert len([r for r in receiver.requests if r.path == "/recover"]) == 1
        kinds = ledger_kinds(app, tenant)
        assert kinds.count("incident.authorized") == 1 and kinds.count("incident.executing") == 1
        assert kinds.count("incident.executed") == 1
        assert kinds.index("incident.proposed") < kinds.index("incident.authorized") < kinds.index("incident.executed")
        [authorized] = app.ledger(tenant, kind="incident.authorized")
        assert authorized["actor"] == "engineer:link:primary:Ada"
        [ran] = app.ledger(tenant, kind="incident.executed")
        assert ran["actor"] == "orchestrator" and ran["data"]["status"] == 200
        wait_for(what="the executed notice", check=lambda: any(n["event"] == "executed" for n in app.notifications()))
        assert all(r.path == "/health" for r in health.requests)
        verify_after_stop(app)
