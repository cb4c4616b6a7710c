"""WhatsApp, voice and Slack end to end, in process, against local fake Twilio and Slack servers:
an incident reaches Ada on WhatsApp, escalates to a call she acknowledges by pressing 1, and Bob
approves the recovery from Slack. Every callback is signed with the vendors' own libraries."""

from __future__ import annotations

import json
from typing import Any, AsyncIterator

import httpx
import pytest

from alertengine.appliance import DataDir
from alertengine.config import Config
from alertengine.incidents import engine
from alertengine.notify.channels.settings import put_channel
from alertengine.notify.people import normalise_person, put_person
from alertengine.store import Database
from alertengine.tenancy.services import create_service, normalise
from alertengine.tenancy.tenants import set_shadow
from alertengine.web.app import create_app
from tests.fakes.receiver import Receiver
from tests.fakes.slack import FakeSlack, fake_slack, signed_headers  # noqa: F401  (fixture)
from tests.fakes.twilio import FakeTwilio, fake_twilio  # noqa: F401  (fixture)
from tests.notify.rig import START, Clock
from tests.recovery.test_approvals import Flow

PUBLIC = "https://alerts.example.com"
ACCOUNT = "AC" + "0123456789abcdef" * 2
WA_FROM = "+14155238886"
CALLER = "+14155550100"
ADA = "+15550000001"
SIGNING = "8f742231b10e8888abcd99yyyzzz85a5"


class Chats(Flow):
    twilio: FakeTwilio
    slack: FakeSlack
    clock: Clock
    receiver: Receiver

    @property
    def sender(self) -> Any:
        return self.app.state.runtime.sender  # type: ignore[attr-defined]

    async def twilio_post(self, path: str, form: dict[str, str], *, token: str | None = None,
                          tamper: dict[str, str] | None = None) -> httpx.Response:
        """POST ``form`` as Twilio would, signed over the public URL (then changed by ``tamper``)."""
        from twilio.request_validator import RequestValidator
        url = f"{PUBLIC}/bot/twilio/{self.tenant}/{path}"
        signature = RequestValidator(token or self.twilio.auth_token).compute_signature(url, form)
        return await self.client.post(f"/bot/twilio/{self.tenant}/{path}", data={**form, **(tamper or {})},
                                      headers={"X-Twilio-Signature": signature})

    async def slack_press(self, user_id: str, value: str, message: dict[str, Any], *, secret: str = SIGNING,
                          at: float | None = None) -> httpx.Response:
        body = self.slack.block_actions_body(user_id=user_id, value=value, channel_id=message["channel"],
                                             message_ts=message["ts"])
        stamp = str(int(at if at is not None else self.clock.now))
        return await self.client.post(f"/bot/slack/{self.tenant}", content=body,
                                      headers=signed_headers(secret, body, stamp))

    async def run(self, seconds: float = 0.0) -> None:
        self.clock.now += seconds
        await self.sender.run_due()

    def ledger(self, kind: str) -> list[dict[str, Any]]:
        rows = self.db.read_conn().execute("SELECT body FROM ledger WHERE tenant = ? AND kind = ? ORDER BY seq",
                                           (self.tenant, kind))
        return [json.loads(r[0]) for r in rows]


def _sent(fake: FakeTwilio, prefix: str) -> list[dict[str, Any]]:
    """The messages (SM) or calls (CA) Twilio accepted: the request's form and the SID answered
    (no failure is injected in these tests, so the n-th request is the n-th resource created)."""
    forms = fake.messages if prefix == "SM" else fake.calls
    sids = [sid for sid in list(fake.created) if sid.startswith(prefix)]
    return [{**form, "sid": sid} for form, sid in zip(list(forms), sids)]


def _said(reply: httpx.Response) -> str:
    """What a TwiML answer tells the person (its <Message> or <Say>)."""
    from xml.etree import ElementTree
    return " ".join(e.text or "" for e in ElementTree.fromstring(reply.content) if e.tag in ("Message", "Say"))


def _labels(message: dict[str, Any]) -> dict[str, str]:
    """A Slack message's buttons: label -> value."""
    return {e["text"]["text"]: e["value"] for b in message.get("blocks", []) if b["type"] == "actions"
            for e in b["elements"]}


@pytest.fixture
async def chats(data_dir: DataDir, db: Database, fake_twilio: FakeTwilio,  # noqa: F811
                fake_slack: FakeSlack) -> AsyncIterator[Chats]:  # noqa: F811
    config = Config(data_dir=data_dir.path, console_notifications=False, public_url=PUBLIC)
    app = create_app(config, data_dir, db)
    clock = Clock()
    runtime = app.state.runtime  # type: ignore[attr-defined]
    runtime.sender.clock = runtime.gateway.clock = runtime.sender.resolve.clock = clock
    app.state.clock = clock  # type: ignore[attr-defined]
    transport = httpx.ASGITransport(app=app, client=("127.0.0.1", 50003))
    async with httpx.AsyncClient(transport=transport, base_url="http://appliance") as client:
        f = Chats(db, data_dir, config, client, app)
        f.twilio, f.slack, f.clock = fake_twilio, fake_slack, clock
        db.write_sync(set_shadow(f.tenant, False, "test"))
        vault = app.state.vault  # type: ignore[attr-defined]
        db.write_sync(put_channel(f.tenant, "twilio", {
            "config": {"api_base_url": fake_twilio.base_url, "account_sid": fake_twilio.account_sid,
                       "whatsapp_from": f"whatsapp:{WA_FROM}", "from_number": CALLER},
            "secrets": {"auth_token": fake_twilio.auth_token}}, config.url_policy, vault, "test"))
        db.write_sync(put_channel(f.tenant, "slack", {
            "config": {"api_base_url": fake_slack.base_url, "channel": "C0ALERTS"},
            "secrets": {"bot_token": fake_slack.token, "signing_secret": SIGNING}}, config.url_policy, vault, "test"))
        db.write_sync(put_person(normalise_person(f.tenant, "ada", {
            "name": "Ada", "addresses": {"whatsapp": ADA, "voice": ADA}, "channels": ["whatsapp", "voice"]}), "test"))
        db.write_sync(put_person(normalise_person(f.tenant, "bob", {
            "name": "Bob", "addresses": {"slack": "U0BOB"}}), "test"))
        with Receiver() as receiver:
            spec = normalise({"name": "checkout", "health_url": "http://127.0.0.1:9/health",
                              "recovery_webhook_url": f"{receiver.url}/recover",
                              "responders": {"primary": ["person:ada", "person:bob"]}}, config.url_policy)
            svc, receiver.secret = db.write_sync(create_service(f.tenant, "checkout", spec, vault, "test"))
            from alertengine.incidents.detection import ServiceRef
            f.service = ServiceRef(f.tenant, svc.id, "checkout")
            f.receiver = receiver
            yield f
            await f.settle()
        await runtime.http.aclose()


async def test_whatsapp_then_a_call_acknowledged_by_keypress_then_bob_approves_from_slack(chats: Chats) -> None:
    await chats.outage()
    # Ada hears on WhatsApp: the incident, then the proposal with her own link and reply code
    to_ada = [m for m in _sent(chats.twilio, 'SM') if m["To"] == f"whatsapp:{ADA}"]
    assert [m["From"] for m in to_ada] == [f"whatsapp:{WA_FROM}"] * len(to_ada) and len(to_ada) >= 2
    assert "Incident detected" in to_ada[0]["Body"] and "Reply ACK " in to_ada[0]["Body"]
    proposal = next(m for m in to_ada if "Action recommended" in m["Body"])
    assert f"{PUBLIC}/action/recover/" in proposal["Body"] and "APPROVE " in proposal["Body"]
    assert proposal["StatusCallback"] == f"{PUBLIC}/bot/twilio/{chats.tenant}/status"
    # Bob hears on Slack, in a direct message, with buttons that are his
    posted = chats.slack.calls_to("chat.postMessage")
    assert {p["channel"] for p in posted} == {"U0BOB"} and "eyJ" not in json.dumps(posted)   # no token in Slack
    slack_proposal = next(m for m in chats.slack.messages_in("U0BOB") if "Approve" in _labels(m))
    slack_proposal["channel"] = "D0BOB"          # Slack's direct-message channel with Bob
    approve = _labels(slack_proposal)["Approve"]
    assert approve.startswith("ap:")

    # Twilio reports delivery: ledgered once per status, never backwards
    sid = proposal["sid"]
    for status in ("sent", "delivered", "read", "sent"):
        reply = await chats.twilio_post("status", chats.twilio.message_status(sid, status))
        assert reply.status_code == 200, reply.text
    statuses = [e["decision"] for e in chats.ledger("notification.status") if e["data"]["provider_id"] == sid]
    assert statuses == ["sent", "delivered", "read"]

    # nobody answered: 180 s later the chain calls Ada first (voice preferred)
    await chats.run(181)
    [call] = _sent(chats.twilio, 'CA')
    assert call["To"] == ADA and call["From"] == CALLER
    assert f'action="{PUBLIC}/bot/twilio/{chats.tenant}/voice"' in call["Twiml"]
    assert "Press 1" in call["Twiml"] and call["StatusCallback"] == f"{PUBLIC}/bot/twilio/{chats.tenant}/status"
    # pressing 2 does nothing; a forged keypress is refused; pressing 1 acknowledges as Ada's phone
    two = await chats.twilio_post("voice", chats.twilio.gather(call["sid"], "2", to=ADA, from_=CALLER))
    assert "Not acknowledged" in _said(two) and chats.incident().acknowledged_by is None
    forged = await chats.twilio_post("voice", chats.twilio.gather(call["sid"], "2", to=ADA, from_=CALLER),
                                     tamper={"Digits": "1"})
    assert forged.status_code == 401 and chats.incident().acknowledged_by is None
    one = await chats.twilio_post("voice", chats.twilio.gather(call["sid"], "1", to=ADA, from_=CALLER))
    assert one.status_code == 200 and one.headers["content-type"].startswith("text/xml")
    assert "Acknowledged" in _said(one) and chats.incident().acknowledged_by == f"engineer:voice:{ADA}"
    await chats.run(200)
    assert len(_sent(chats.twilio, 'CA')) == 1       # acknowledged: the chain stops, nobody else is called
    assert chats.ledger("escalation.stopped")

    # a Slack user the tenant does not know cannot use Bob's buttons; a stale signature is refused
    stranger = await chats.slack_press("U0EVE", approve, slack_proposal)
    assert stranger.json()["outcome"] == "not_yours" and chats.incident().stage == engine.PROPOSED
    stale = await chats.slack_press("U0BOB", approve, slack_proposal, at=chats.clock.now - 301)
    assert stale.status_code == 401
    # Bob approves: the recovery runs once, approved by person:bob, vouched for by Slack
    ok = await chats.slack_press("U0BOB", approve, slack_proposal)
    assert ok.json()["outcome"] == "authorized", ok.text
    await chats.settle()
    assert [json.loads(r.body)["approved_by"] for r in chats.receiver.requests] == [["person:bob"]]
    [authorized] = chats.ledger("incident.authorized")
    assert authorized["actor"] == "engineer:person:bob" and authorized["data"]["vouched_by"] == "slack:U0BOB"
    again = await chats.slack_press("U0BOB", approve, slack_proposal)
    assert again.json()["outcome"] == "already_used" and len(chats.receiver.requests) == 1
    # the Slack message now says who approved, without buttons
    [update] = chats.slack.calls_to("chat.update")
    assert (update["channel"], update["ts"]) == ("D0BOB", slack_proposal["ts"]) and "approved by" in update["text"]
    assert not any(b["type"] == "actions" for b in update["blocks"])
    chats.replay_clean()


async def test_an_unanswered_call_hands_back_to_the_chain_and_tries_the_next_channel(chats: Chats) -> None:
    await chats.outage()
    before = len(_sent(chats.twilio, 'SM'))
    await chats.run(181)
    [call] = _sent(chats.twilio, 'CA')
    reply = await chats.twilio_post("status", chats.twilio.call_status(call["sid"], "no-answer", to=ADA, from_=CALLER))
    assert reply.status_code == 200
    [hastened] = chats.ledger("escalation.hastened")
    assert hastened["data"]["status"] == "no-answer"
    await chats.run()
    # Ada gets the escalation on her next channel (WhatsApp) ...
    assert len(_sent(chats.twilio, 'SM')) == before + 1
    assert _sent(chats.twilio, 'SM')[-1]["To"] == f"whatsapp:{ADA}" and "No answer yet" in _sent(chats.twilio, 'SM')[-1]["Body"]
    # ... and the chain's next step (the secondary: nobody here) came due at once instead of at 300 s
    assert any(e["data"]["step"] == 2 for e in chats.ledger("escalation.step"))


async def test_whatsapp_replies_acknowledge_and_approve_only_for_the_person_they_came_from(chats: Chats) -> None:
    await chats.outage()
    body = next(m["Body"] for m in _sent(chats.twilio, 'SM') if "Reply ACK " in m["Body"])
    code = body.split("Reply ACK ", 1)[1].split()[0]
    unknown = await chats.twilio_post("inbound", chats.twilio.inbound_whatsapp("+15559999999", f"ack {code}"))
    assert "not one of the responders" in _said(unknown) and chats.incident().acknowledged_by is None
    wrong = await chats.twilio_post("inbound", chats.twilio.inbound_whatsapp(ADA, "ACK ZZZZ"))
    assert "No incident has the code ZZZZ" in _said(wrong)
    chatter = await chats.twilio_post("inbound", chats.twilio.inbound_whatsapp(ADA, "what is going on?"))
    assert "Reply ACK <code>" in _said(chatter)
    acked = await chats.twilio_post("inbound", chats.twilio.inbound_whatsapp(ADA, f"  ack {code.lower()} "))
    assert "Acknowledged INC-1" in _said(acked) and chats.incident().acknowledged_by == f"engineer:whatsapp:{ADA}"
    unnamed = await chats.twilio_post("inbound", chats.twilio.inbound_whatsapp(ADA, f"APPROVE {code}"))
    assert f"reply APPROVE {code}-1" in _said(unnamed) and chats.receiver.requests == []
    old = await chats.twilio_post("inbound", chats.twilio.inbound_whatsapp(ADA, f"APPROVE {code}-2"))
    assert "no longer open" in _said(old) and chats.incident().stage == engine.PROPOSED
    proposal = next(m["Body"] for m in _sent(chats.twilio, "SM") if "Reply APPROVE " in m["Body"])
    assert f"Reply APPROVE {code}-1 to approve, REJECT {code}-1 to reject." in proposal
    approved = await chats.twilio_post("inbound", chats.twilio.inbound_whatsapp(ADA, f"APPROVE {code}-1"))
    assert "Approved" in _said(approved), approved.text
    await chats.settle()
    assert [json.loads(r.body)["approved_by"] for r in chats.receiver.requests] == [["person:ada"]]
    [authorized] = chats.ledger("incident.authorized")
    assert authorized["actor"] == "engineer:person:ada" and authorized["data"]["vouched_by"] == f"whatsapp:{ADA}"


async def test_a_reply_quoting_our_message_needs_no_code_and_a_conflicting_one_does_nothing(chats: Chats) -> None:
    await chats.outage()
    first = next(m for m in _sent(chats.twilio, 'SM') if "Reply ACK " in m["Body"])
    # the delivery of the quoted message was recorded when Twilio accepted it
    other = await chats.twilio_post("inbound", chats.twilio.inbound_whatsapp(
        ADA, "ACK AAAA", original_replied_sid=first["sid"]))
    assert "No incident has the code AAAA" in _said(other) and chats.incident().acknowledged_by is None
    quoted = await chats.twilio_post("inbound", chats.twilio.inbound_whatsapp(
        ADA, "ack", original_replied_sid=first["sid"]))
    assert "Acknowledged INC-1" in _said(quoted)


async def test_callbacks_with_a_wrong_signature_or_for_another_tenant_are_refused(chats: Chats) -> None:
    await chats.outage()
    sid = _sent(chats.twilio, 'SM')[0]["sid"]
    wrong_token = await chats.twilio_post("status", chats.twilio.message_status(sid, "failed", "63016"),
                                          token="f" * 32)
    assert wrong_token.status_code == 401 and wrong_token.json()["error"]["code"] == "unauthenticated"
    altered = await chats.twilio_post("status", chats.twilio.message_status(sid, "delivered"),
                                      tamper={"MessageStatus": "failed"})
    assert altered.status_code == 401
    nobody = await chats.client.post("/bot/twilio/t_0000000000000000/status", data={"MessageSid": sid},
                                     headers={"X-Twilio-Signature": "x"})
    assert nobody.status_code == 401
    assert chats.ledger("notification.status") == []


async def test_a_failed_whatsapp_message_is_ledgered_with_twilios_code_and_moves_on(chats: Chats) -> None:
    await chats.outage()
    first = _sent(chats.twilio, 'SM')[0]
    reply = await chats.twilio_post("status", chats.twilio.message_status(first["sid"], "undelivered", "63016"))
    assert reply.status_code == 200
    [status] = [e for e in chats.ledger("notification.status") if e["data"]["provider_id"] == first["sid"]]
    assert status["decision"] == "undelivered" and status["data"]["error_code"] == "63016"
    calls = len(_sent(chats.twilio, 'CA'))
    await chats.run()
    assert len(_sent(chats.twilio, 'CA')) == calls + 1     # Ada's next channel: a call


async def test_shadow_mode_sends_nothing_to_twilio_or_slack(chats: Chats) -> None:
    chats.db.write_sync(set_shadow(chats.tenant, True, "test"))
    await chats.outage()
    await chats.run(400)
    assert chats.twilio.requests() == 0 and chats.slack.calls_to("chat.postMessage") == []
    assert chats.ledger("notification.suppressed")
    assert START  # the clock started where the rig's does


async def test_two_people_approve_from_two_channels_and_one_person_never_counts_twice(chats: Chats) -> None:
    from alertengine.incidents.policy import put_policy
    chats.db.write_sync(put_policy(chats.tenant, "[approvals]\nrequired = 2\n", "test"))
    await chats.outage()
    body = next(m["Body"] for m in _sent(chats.twilio, "SM") if "APPROVE " in m["Body"])
    code = body.split("Reply APPROVE ", 1)[1].split()[0]
    link = next(line for line in body.splitlines() if "/action/recover/" in line).split(": ", 1)[1]
    # Ada approves by reply; her link is the same approval, so it cannot count a second time
    first = await chats.twilio_post("inbound", chats.twilio.inbound_whatsapp(ADA, f"APPROVE {code}"))
    assert "one more person must approve" in _said(first)
    again = await chats.confirm(link.rsplit("/", 1)[1])
    assert chats.incident().stage == engine.PROPOSED and again.status_code in (200, 409)
    assert chats.receiver.requests == []
    slack_proposal = next(m for m in chats.slack.messages_in("U0BOB") if "Approve" in _labels(m))
    assert "Acknowledge" in _labels(slack_proposal)
    slack_proposal["channel"] = "D0BOB"
    second = await chats.slack_press("U0BOB", _labels(slack_proposal)["Approve"], slack_proposal)
    assert second.json()["outcome"] == "authorized"
    await chats.settle()
    assert [sorted(json.loads(r.body)["approved_by"]) for r in chats.receiver.requests] == [["person:ada", "person:bob"]]



async def test_odd_callbacks_get_clear_4xx_answers_and_change_nothing(chats: Chats) -> None:
    await chats.outage()
    before = len(chats.ledger("notification.status"))
    # signed, but naming neither a message nor a call
    neither = await chats.twilio_post("status", {"AccountSid": chats.twilio.account_sid, "MessageStatus": "sent"})
    assert neither.status_code == 400 and "MessageSid or a CallSid" in neither.json()["error"]["message"]
    # a status Twilio may add one day, and a SID we never sent: accepted, nothing recorded
    new = await chats.twilio_post("status", chats.twilio.message_status("SM" + "0" * 32, "teleported"))
    unknown = await chats.twilio_post("status", chats.twilio.message_status("SM" + "0" * 32, "delivered"))
    assert new.json()["outcome"] == "ignored" and unknown.json()["outcome"] == "unknown"
    # a WhatsApp message from something that is not a phone number, and one full of odd characters
    odd = await chats.twilio_post("inbound", chats.twilio.inbound_whatsapp(ADA, "ACK \U0001F600\u202e" + "9" * 400))
    assert odd.status_code == 200 and "Reply ACK <code>" in _said(odd)
    not_utf8 = await chats.client.post(f"/bot/twilio/{chats.tenant}/inbound", content=b"Body=%FF",
                                       headers={"Content-Type": "application/x-www-form-urlencoded",
                                                "X-Twilio-Signature": "x"})
    assert not_utf8.status_code == 401
    # Slack: signed, but not an interaction
    body = b"payload=not-json"
    garbage = await chats.client.post(f"/bot/slack/{chats.tenant}", content=body,
                                      headers=signed_headers(SIGNING, body, str(int(chats.clock.now))))
    assert garbage.status_code == 400 and "payload is not JSON" in garbage.json()["error"]["message"]
    huge = await chats.client.post(f"/bot/slack/{chats.tenant}", content=b"x" * (65 * 1024))
    assert huge.status_code == 413
    assert len(chats.ledger("notification.status")) == before and chats.incident().acknowledged_by is None
    chats.replay_clean()


async def test_going_into_shadow_mode_stops_what_was_still_to_leave(chats: Chats) -> None:
    await chats.outage()
    await chats.run(181)
    [call] = _sent(chats.twilio, "CA")
    chats.db.write_sync(set_shadow(chats.tenant, True, "test"))
    requests = chats.twilio.requests()
    # an unanswered call is ledgered, and nothing is sent again; the call's keypress answer is silent
    reply = await chats.twilio_post("status", chats.twilio.call_status(call["sid"], "no-answer", to=ADA, from_=CALLER))
    assert reply.status_code == 200 and chats.ledger("notification.status")[-1]["decision"] == "no-answer"
    pressed = await chats.twilio_post("voice", chats.twilio.gather(call["sid"], "1", to=ADA, from_=CALLER))
    assert _said(pressed) == ""
    await chats.run(400)
    assert chats.twilio.requests() == requests and chats.slack.calls_to("chat.update") == []
    assert all(state != "queued" for (state,) in chats.db.read_conn().execute("SELECT state FROM outbox"))


async def test_a_late_report_on_a_closed_incident_sends_nothing_again(chats: Chats) -> None:
    await chats.outage()
    await chats.run(181)
    [call] = _sent(chats.twilio, "CA")
    messages = len(_sent(chats.twilio, "SM"))
    body = next(m["Body"] for m in _sent(chats.twilio, "SM") if "Reply ACK " in m["Body"])
    code = body.split("Reply ACK ", 1)[1].split()[0]
    resolved = await chats.twilio_post("inbound", chats.twilio.inbound_whatsapp(ADA, f"RESOLVE {code}"))
    assert "Resolved INC-1" in _said(resolved)
    await chats.twilio_post("status", chats.twilio.call_status(call["sid"], "no-answer", to=ADA, from_=CALLER))
    await chats.run()
    assert len(_sent(chats.twilio, "SM")) == messages and chats.ledger("escalation.hastened") == []


async def test_a_first_of_two_approvals_leaves_the_buttons_for_the_second(chats: Chats) -> None:
    from alertengine.incidents.policy import put_policy
    chats.db.write_sync(put_policy(chats.tenant, "[approvals]\nrequired = 2\n", "test"))
    await chats.outage()
    slack_proposal = next(m for m in chats.slack.messages_in("U0BOB") if "Approve" in _labels(m))
    slack_proposal["channel"] = "D0BOB"
    first = await chats.slack_press("U0BOB", _labels(slack_proposal)["Approve"], slack_proposal)
    assert first.json()["outcome"] == "waiting" and chats.slack.calls_to("chat.update") == []


async def test_a_quoted_proposal_is_approved_by_a_bare_reply_and_other_messages_approve_nothing(
        chats: Chats) -> None:
    await chats.outage()
    news = next(m for m in _sent(chats.twilio, "SM") if "Incident detected" in m["Body"])
    proposal = next(m for m in _sent(chats.twilio, "SM") if "Reply APPROVE " in m["Body"])
    nothing = await chats.twilio_post("inbound", chats.twilio.inbound_whatsapp(
        ADA, "approve", original_replied_sid=news["sid"]))
    assert "did not ask you to approve" in _said(nothing) and chats.incident().stage == engine.PROPOSED
    approved = await chats.twilio_post("inbound", chats.twilio.inbound_whatsapp(
        ADA, "approve", original_replied_sid=proposal["sid"]))
    assert "Approved" in _said(approved)
    await chats.settle()
    assert [json.loads(r.body)["approved_by"] for r in chats.receiver.requests] == [["person:ada"]]


async def test_signed_but_odd_slack_ids_and_deep_nesting_are_400(chats: Chats) -> None:
    from urllib.parse import urlencode
    for payload in ('{"type": "block_actions", "user": {"id": "U\\ud800"}, "actions": [{"value": "ak:INC-1"}]}',
                    "[" * 5000 + "]" * 5000):
        body = urlencode({"payload": payload}).encode()
        reply = await chats.client.post(f"/bot/slack/{chats.tenant}", content=body,
                                        headers=signed_headers(SIGNING, body, str(int(chats.clock.now))))
        assert reply.status_code == 400, reply.text

