"""The phone flow against a local fake Telegram Bot API: incident → message with buttons → a
stranger's tap is refused and ledgered → an allowed approver's tap runs the recovery once."""

from __future__ import annotations

import json
import time
from typing import AsyncIterator

import httpx
import pytest

from alertengine.appliance import DataDir
from alertengine.config import Config
from alertengine.incidents import engine
from alertengine.notify.channels.settings import put_channel
from alertengine.store import Database
from alertengine.web.app import create_app
from tests.fakes.receiver import Receiver
from tests.fakes.telegram import FakeTelegram, fake_telegram  # noqa: F401  (fixture)
from tests.recovery.test_approvals import Flow
from tests.waiting import async_wait_for

HOOK_SECRET = "hook-secret-0123456789"
CHAT = -100123


@pytest.fixture
async def phone(data_dir: DataDir, db: Database, fake_telegram: FakeTelegram) -> AsyncIterator[Flow]:  # noqa: F811
    config = Config(data_dir=data_dir.path, console_notifications=False)
    app = create_app(config, data_dir, db)
    transport = httpx.ASGITransport(app=app, client=("127.0.0.1", 50002))
    async with httpx.AsyncClient(transport=transport, base_url="http://appliance") as client:
        f = Flow(db, data_dir, config, client, app)
        from alertengine.tenancy.tenants import set_shadow
        db.write_sync(set_shadow(f.tenant, False, "test"))
        db.write_sync(put_channel(f.tenant, "telegram", {
            "config": {"api_base_url": fake_telegram.base_url, "default_chat_id": str(CHAT)},
            "secrets": {"bot_token": fake_telegram.token, "webhook_secret": HOOK_SECRET}},
            config.url_policy, app.state.vault, "test"))
        yield f
        await f.settle()
        await app.state.runtime.http.aclose()  # type: ignore[attr-defined]


async def tap(flow: Flow, fake: FakeTelegram, user_id: int, data: str, message_id: int,
              secret: str = HOOK_SECRET) -> httpx.Response:
    update = fake.callback_update(user_id=user_id, data=data, chat_id=CHAT, message_id=message_id)
    return await flow.client.post(f"/bot/telegram/{flow.tenant}", json=update,
                                  headers={"X-Telegram-Bot-Api-Secret-Token": secret})


async def test_buttons_from_a_stranger_are_refused_and_an_approver_runs_the_recovery(
        phone: Flow, fake_telegram: FakeTelegram) -> None:  # noqa: F811
    with Receiver() as receiver:
        receiver.secret = phone.add_service(f"{receiver.url}/recover")
        await phone.outage()
        sent = fake_telegram.calls_to("sendMessage")
        proposal = next(m for m in sent if "reply_markup" in m
                        and m["reply_markup"]["inline_keyboard"][0][0]["callback_data"].startswith("ap:"))
        approve, reject = (b["callback_data"] for b in proposal["reply_markup"]["inline_keyboard"][0])
        assert approve.startswith("ap:") and approve.endswith(":y") and len(approve.encode()) <= 64
        assert "eyJ" not in json.dumps(proposal)  # never a token in a chat message
        message_id = 1 + [m for m in sent].index(proposal)  # the fake numbers messages from 1
        stranger = await tap(phone, fake_telegram, 999, approve, message_id)
        assert stranger.json()["outcome"] == "not_an_approver"
        assert phone.incident().stage == engine.PROPOSED and "approval.refused" in phone.kinds()
        wrong = await tap(phone, fake_telegram, 111, approve, message_id, secret="not-the-secret")
        assert wrong.status_code == 401
        approved = await tap(phone, fake_telegram, 111, approve, message_id)
        assert approved.json()["outcome"] == "authorized"
        await phone.settle()
        assert len(receiver.requests) == 1 and receiver.requests[0].signature_ok
        # Telegram user 111 is the service's contact Ada: the approval counts as Ada, her chat vouching for it
        assert json.loads(receiver.requests[0].body)["approved_by"] == ["primary:Ada"]
        [authorized] = [json.loads(r[0]) for r in phone.db.read_conn().execute(
            "SELECT body FROM ledger WHERE kind = 'incident.authorized'")]
        assert authorized["data"]["vouched_by"] == "telegram:111"
        again = await tap(phone, fake_telegram, 111, approve, message_id)
        assert again.json()["outcome"] == "already_used" and len(receiver.requests) == 1
    assert phone.incident().stage == engine.EXECUTED
    answers = fake_telegram.calls_to("answerCallbackQuery")
    assert any("not an allowed approver" in a["text"] for a in answers) and any("Approved" in a["text"] for a in answers)
    assert any("approved by" in e["text"] for e in fake_telegram.calls_to("editMessageText"))
    phone.replay_clean()


async def test_telegram_flood_control_is_honoured(phone: Flow, fake_telegram: FakeTelegram) -> None:  # noqa: F811
    phone.add_service(None)
    fake_telegram.fail_next("sendMessage", status=429, retry_after=1)
    await phone.outage()
    sender = phone.app.state.runtime.sender  # type: ignore[attr-defined]

    def tried() -> list[tuple[str, int, bool, float | None]]:
        rows = phone.db.read_conn().execute("SELECT body FROM ledger WHERE kind IN ('notification.sent', "
                                            "'notification.failed') ORDER BY seq")
        return [(e["kind"], e["data"]["attempt"], e["data"]["retryable"], e["data"]["retry_after"])
                for e in (json.loads(r[0]) for r in rows) if e["data"]["channel"] == "telegram"]
    assert tried()[0] == ("notification.failed", 1, True, 1.0)
    first = phone.db.read_conn().execute("SELECT next_at FROM outbox ORDER BY id").fetchone()
    assert first[0] >= int(time.time())   # the retry waits for Telegram's retry_after

    async def retried() -> bool:
        await sender.run_due()
        return ("notification.sent", 2, False, None) in tried()
    await async_wait_for(retried)


async def test_updates_that_are_not_button_presses_are_ignored(phone: Flow) -> None:
    reply = await phone.client.post(f"/bot/telegram/{phone.tenant}", headers={"X-Telegram-Bot-Api-Secret-Token": HOOK_SECRET},
                                    json={"update_id": 1, "message": {"message_id": 5, "date": 1, "text": "hi",
                                                                      "chat": {"id": 1, "type": "private"}}})
    assert reply.status_code == 200 and reply.json()["outcome"] == "ignored"
    garbage = await phone.client.post(f"/bot/telegram/{phone.tenant}", content=b"{",
                                      headers={"X-Telegram-Bot-Api-Secret-Token": HOOK_SECRET})
    assert garbage.status_code == 400
    nobody = await phone.client.post("/bot/telegram/t_0000000000000000", json={},
                                     headers={"X-Telegram-Bot-Api-Secret-Token": HOOK_SECRET})
    assert nobody.status_code == 401


def test_set_webhook_from_the_cli(data_dir: DataDir, fake_telegram: FakeTelegram) -> None:  # noqa: F811
    from alertengine.tenancy.tenants import create_tenant
    from alertengine.tenancy.vault import SecretVault
    from tests.conftest import run_cli
    config = Config(data_dir=data_dir.path, public_url="https://ae.example.com")
    db = data_dir.open_database(config)
    try:
        tenant = db.write_sync(create_tenant("acme", "test")).id
        db.write_sync(put_channel(tenant, "telegram", {"config": {"api_base_url": fake_telegram.base_url},
                                                       "secrets": {"bot_token": fake_telegram.token}},
                                  config.url_policy, SecretVault(data_dir.secret("vault.key")), "test"))
    finally:
        db.close()
    result = run_cli("telegram", "set-webhook", "--tenant", tenant, "--data-dir", str(data_dir.path),
                     env={"ALERTENGINE_PUBLIC_URL": "https://ae.example.com"})
    assert result.code == 0, result.stderr
    [call] = fake_telegram.calls_to("setWebhook")
    assert call["url"] == f"https://ae.example.com/bot/telegram/{tenant}" and len(call["secret_token"]) >= 32
    assert fake_telegram.token not in result.stdout + result.stderr


async def test_a_person_named_as_approver_approves_with_their_own_telegram_account(
        phone: Flow, fake_telegram: FakeTelegram) -> None:  # noqa: F811
    from alertengine.incidents.detection import ServiceRef
    from alertengine.notify.people import normalise_person, put_person
    from alertengine.tenancy.services import create_service, normalise
    phone.db.write_sync(put_person(normalise_person(phone.tenant, "grace", {
        "name": "Grace", "addresses": {"telegram": "444"}}), "test"))
    with Receiver() as receiver:
        spec = normalise({"name": "checkout", "health_url": "http://127.0.0.1:9/health",
                          "recovery_webhook_url": f"{receiver.url}/recover",
                          "responders": {"primary": ["person:grace"]},
                          "approvers": {"people": ["person:grace"]}}, phone.config.url_policy)
        svc, receiver.secret = phone.db.write_sync(create_service(phone.tenant, "checkout", spec,
                                                                  phone.app.state.vault, "test"))
        phone.service = ServiceRef(phone.tenant, svc.id, "checkout")
        await phone.outage()
        sent = fake_telegram.calls_to("sendMessage")
        proposal = next(m for m in sent if "reply_markup" in m
                        and m["reply_markup"]["inline_keyboard"][0][0]["callback_data"].startswith("ap:"))
        assert proposal["chat_id"] == "444"                       # Grace's own chat: she is the responder
        approve = proposal["reply_markup"]["inline_keyboard"][0][0]["callback_data"]
        message_id = 1 + sent.index(proposal)
        # the buttons in Grace's message are hers: another Telegram user pressing them is refused
        assert (await tap(phone, fake_telegram, 111, approve, message_id)).json()["outcome"] == "not_yours"
        assert (await tap(phone, fake_telegram, 444, approve, message_id)).json()["outcome"] == "authorized"
        await phone.settle()
        assert json.loads(receiver.requests[0].body)["approved_by"] == ["person:grace"]


async def test_responders_acknowledge_silence_and_resolve_from_telegram(
        phone: Flow, fake_telegram: FakeTelegram) -> None:  # noqa: F811
    with Receiver() as receiver:
        receiver.secret = phone.add_service(f"{receiver.url}/recover")   # contact Ada: Telegram chat 111
        await phone.outage()
    sent = fake_telegram.calls_to("sendMessage")
    news = next(m for m in sent if m["text"].startswith("🔴 Incident detected"))
    assert news["chat_id"] == "111"
    codes = [b["callback_data"] for b in news["reply_markup"]["inline_keyboard"][0]]
    assert codes == ["ak:INC-1", "rs:INC-1", "sl:INC-1"]
    message_id = 1 + sent.index(news)
    stranger = await tap(phone, fake_telegram, 999, "ak:INC-1", message_id)
    assert stranger.json()["outcome"] == "not_allowed" and phone.incident().acknowledged_by is None
    assert "incident.action_refused" in phone.kinds()
    acked = await tap(phone, fake_telegram, 111, "ak:INC-1", message_id)
    assert acked.json()["outcome"] == "acknowledged"
    assert phone.incident().acknowledged_by == "engineer:telegram:111"
    assert (await tap(phone, fake_telegram, 111, "ak:INC-1", message_id)).json()["outcome"] == "already"
    silenced = await tap(phone, fake_telegram, 111, "sl:INC-1", message_id)
    assert silenced.json()["outcome"] == "silenced"
    [silence] = [json.loads(b) for (b,) in phone.db.read_conn().execute(
        "SELECT body FROM ledger WHERE kind = 'silence.created'")]
    assert silence["actor"] == "engineer:telegram:111"
    assert silence["data"]["matchers"] == [{"name": "service", "op": "=", "value": "checkout"}]
    resolved = await tap(phone, fake_telegram, 111, "rs:INC-1", message_id)
    assert resolved.json()["outcome"] == "resolved" and phone.incident().stage == engine.RESOLVED
    assert (await tap(phone, fake_telegram, 111, "rs:INC-1", message_id)).json()["outcome"] == "closed"
    edits = [e["text"] for e in fake_telegram.calls_to("editMessageText")]
    assert [e.split(" by ")[0] for e in edits] == ["INC-1: acknowledged", "INC-1: silenced for 1 h", "INC-1: resolved"]
    answers = [a["text"] for a in fake_telegram.calls_to("answerCallbackQuery")]
    assert answers[0] == "You are not one of this tenant's responders." and "Acknowledged" in answers[1]
    phone.replay_clean()
