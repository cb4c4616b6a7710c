"""The WhatsApp channel against a local fake Twilio: free text inside the 24-hour session (the
person's own approval link, reply instructions with the code), a Content template outside it."""

from __future__ import annotations

import json
import re

import pytest

from alertengine.notify.channels.twilio import TwilioClient
from alertengine.notify.channels.whatsapp import WhatsAppChannel
from alertengine.notify.message import Message
from alertengine.notify.replies import Command, parse
from tests.fakes.twilio import FakeTwilio

PERSON = "+4915112345678"
SENDER = "+14155238886"
STATUS_URL = "https://alerts.example.com/bot/twilio/acme/status"
TEMPLATE_SID = "HX" + "c" * 32
CODE = "K7QM"
ANN_LINK = "https://alerts.example.com/action/recover/tok-ann-0001"
LINK_A = "https://alerts.example.com/action/recover/tok-ann-trust-a"
LINK_B = "https://alerts.example.com/action/recover/tok-ann-trust-b"
# the first line a person reads, per event (written here, not taken from the product)
HEADLINE = {"detected": "🔴 Incident detected · P1 · INC-42",
            "proposed": "🛠 Action recommended · P1 · INC-42",
            "dissent": "⚖️ Diagnoses disagree: your call · P1 · INC-42"}
# the replies each message tells the person to send: (verb, code, theory)
REPLIES = {"detected": {("ACK", CODE, None), ("RESOLVE", CODE, None)},
           "proposed": {("APPROVE", CODE, None), ("REJECT", CODE, None)},
           "dissent": {("APPROVE", CODE, "A"), ("APPROVE", CODE, "B"), ("REJECT", CODE, None)}}
COMMAND_VERBS = {"ACK": "acknowledge", "RESOLVE": "resolve", "APPROVE": "approve", "REJECT": "reject"}
_REPLY = re.compile(r"\b(ACK|RESOLVE|APPROVE|REJECT) ([A-Z0-9]{4})(?: ([A-Z])\b)?")


def message(event: str, **kw: object) -> Message:
    fields: dict[str, object] = {"tenant": "acme", "incident": "INC-42", "event": event, "priority": "P1",
                                 "text": "db-1: disk 97% full", "data": {"service": "orders-db"}, "code": CODE}
    if event == "proposed":
        fields.update(links={"person:ann": ANN_LINK}, refs={"person:ann": {"": "ref-ann"}},
                      buttons=[[("Approve", "ap:ref-ann:y"), ("Reject", "ap:ref-ann:n")]])
    if event == "dissent":
        fields.update(links={"person:ann (trust A)": LINK_A, "person:ann (trust B)": LINK_B},
                      refs={"person:ann": {"A": "ref-a", "B": "ref-b"}},
                      buttons=[[("Trust A", "ap:ref-a:y"), ("Trust B", "ap:ref-b:y")], [("Reject", "ap:ref-a:n")]])
    fields.update(kw)
    return Message(**fields)  # type: ignore[arg-type]


def replies_in(body: str) -> set[tuple[str, str, str | None]]:
    return {(verb, code, theory or None) for verb, code, theory in _REPLY.findall(body)}


def channel(client: TwilioClient, *, session_open: bool = True, template_sid: str | None = None,
            sender: str = f"whatsapp:{SENDER}", status_url: str | None = STATUS_URL) -> WhatsAppChannel:
    return WhatsAppChannel(client, sender, PERSON, status_url, session_open, template_sid)


# --------------------------------------------------------------------------------------------
# inside the 24-hour session: free text
# --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("event", sorted(HEADLINE))
async def test_session_message_names_the_incident_and_how_to_reply(client: TwilioClient, fake: FakeTwilio,
                                                                   event: str) -> None:
    delivery = await channel(client).send(message(event))

    (form,) = fake.messages
    body = form["Body"]
    assert (form["To"], form["From"], form["StatusCallback"]) == (f"whatsapp:{PERSON}", f"whatsapp:{SENDER}",
                                                                  STATUS_URL)
    assert "ContentSid" not in form and "ContentVariables" not in form
    assert body.splitlines()[0] == HEADLINE[event]
    assert "db-1: disk 97% full" in body and "orders-db" in body
    assert replies_in(body) == REPLIES[event]
    assert delivery.delivered and delivery.provider_id in fake.created


@pytest.mark.parametrize("event", sorted(REPLIES))
async def test_every_reply_instruction_is_a_command_the_appliance_understands(client: TwilioClient,
                                                                              fake: FakeTwilio, event: str) -> None:
    await channel(client).send(message(event))

    for verb, code, theory in replies_in(fake.messages[0]["Body"]):
        typed = " ".join(w for w in (verb, code, theory) if w)
        assert parse(typed) == Command(COMMAND_VERBS[verb], code, theory)
        assert parse(typed.lower()) == Command(COMMAND_VERBS[verb], code, theory)


async def test_proposal_carries_the_persons_own_link_and_no_button_data(client: TwilioClient,
                                                                        fake: FakeTwilio) -> None:
    await channel(client).send(message("proposed"))

    body = fake.messages[0]["Body"]
    assert ANN_LINK in body
    assert re.findall(r"https?://\S+", body) == [ANN_LINK]
    assert "ap:" not in body and "ref-ann" not in body


async def test_dissent_carries_one_link_per_theory_and_names_the_theory_beside_it(client: TwilioClient,
                                                                                   fake: FakeTwilio) -> None:
    await channel(client).send(message("dissent"))

    lines = fake.messages[0]["Body"].splitlines()
    (line_a,) = [line for line in lines if LINK_A in line]
    (line_b,) = [line for line in lines if LINK_B in line]
    assert re.search(r"\btrust a\b", line_a, re.IGNORECASE) and re.search(r"\btrust b\b", line_b, re.IGNORECASE)
    assert line_a != line_b


async def test_proposal_without_links_has_no_link_but_still_says_how_to_answer(client: TwilioClient,
                                                                                fake: FakeTwilio) -> None:
    await channel(client).send(message("proposed", links={}))

    body = fake.messages[0]["Body"]
    assert "http" not in body
    assert replies_in(body) == REPLIES["proposed"]


async def test_sender_number_without_prefix_is_sent_as_a_whatsapp_address(client: TwilioClient,
                                                                          fake: FakeTwilio) -> None:
    delivery = await channel(client, sender=SENDER).send(message("detected"))

    assert delivery.delivered
    assert (fake.messages[0]["To"], fake.messages[0]["From"]) == (f"whatsapp:{PERSON}", f"whatsapp:{SENDER}")


async def test_without_a_status_url_no_status_callback_is_asked(client: TwilioClient, fake: FakeTwilio) -> None:
    delivery = await channel(client, status_url=None).send(message("detected"))

    assert delivery.delivered and "StatusCallback" not in fake.messages[0]


async def test_a_long_incident_text_still_fits_one_whatsapp_message(client: TwilioClient, fake: FakeTwilio) -> None:
    delivery = await channel(client).send(message("detected", text="stack trace line\n" * 300))

    assert delivery.delivered                       # the fake refuses bodies over 1600 characters
    assert fake.messages[0]["Body"].startswith(HEADLINE["detected"])


async def test_a_long_proposal_keeps_the_link_and_the_reply_instructions(client: TwilioClient,
                                                                         fake: FakeTwilio) -> None:
    delivery = await channel(client).send(message("proposed", text="Theory: connection pool exhausted. " * 60))

    body = fake.messages[0]["Body"]
    assert delivery.delivered
    assert ANN_LINK in body
    assert replies_in(body) == REPLIES["proposed"]


# --------------------------------------------------------------------------------------------
# outside the session: the Content template
# --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("event", sorted(HEADLINE))
async def test_outside_the_session_the_template_goes_with_headline_incident_and_code(client: TwilioClient,
                                                                                     fake: FakeTwilio,
                                                                                     event: str) -> None:
    delivery = await channel(client, session_open=False, template_sid=TEMPLATE_SID).send(message(event))

    (form,) = fake.messages
    assert delivery.delivered
    assert "Body" not in form
    assert (form["To"], form["From"], form["ContentSid"], form["StatusCallback"]) == (
        f"whatsapp:{PERSON}", f"whatsapp:{SENDER}", TEMPLATE_SID, STATUS_URL)
    assert json.loads(form["ContentVariables"]) == {"1": HEADLINE[event], "2": "INC-42", "3": CODE}


async def test_template_variables_carry_no_approval_link(client: TwilioClient, fake: FakeTwilio) -> None:
    await channel(client, session_open=False, template_sid=TEMPLATE_SID).send(message("proposed"))

    assert ANN_LINK not in fake.messages[0]["ContentVariables"]


async def test_outside_the_session_without_a_template_the_text_is_tried_anyway(client: TwilioClient,
                                                                               fake: FakeTwilio) -> None:
    delivery = await channel(client, session_open=False).send(message("detected"))

    (form,) = fake.messages
    assert delivery.delivered and "ContentSid" not in form
    assert form["Body"].splitlines()[0] == HEADLINE["detected"]
    assert replies_in(form["Body"]) == REPLIES["detected"]


async def test_inside_the_session_the_template_is_not_used(client: TwilioClient, fake: FakeTwilio) -> None:
    await channel(client, session_open=True, template_sid=TEMPLATE_SID).send(message("proposed"))

    (form,) = fake.messages
    assert "ContentSid" not in form and ANN_LINK in form["Body"]


# --------------------------------------------------------------------------------------------
# what the outbox sees
# --------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("status", "retryable"), [(400, False), (429, True), (503, True)])
async def test_twilios_refusal_reaches_the_outbox_as_it_came(client: TwilioClient, fake: FakeTwilio, status: int,
                                                             retryable: bool) -> None:
    fake.fail_next("Messages", status=status)

    delivery = await channel(client).send(message("detected"))

    assert not delivery.delivered and delivery.retryable is retryable and delivery.provider_id is None
    assert f"HTTP {status}" in delivery.detail
