"""The voice channel: the call's TwiML (say the incident, gather one digit, escaped text) and the
call it places through a local fake Twilio; what a speech engine is given to say."""

from __future__ import annotations

import unicodedata
import xml.etree.ElementTree as ET

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from alertengine.notify.channels.text import spoken
from alertengine.notify.channels.twilio import TwilioClient
from alertengine.notify.channels.voice import VoiceChannel, call_twiml
from alertengine.notify.message import Message
from tests.fakes.twilio import FakeTwilio

PERSON = "+4915112345678"
CALLER_ID = "+14155238886"
GATHER_URL = "https://alerts.example.com/bot/twilio/acme/voice"
STATUS_URL = "https://alerts.example.com/bot/twilio/acme/status"
# what the call says first, per event: the headline's words without its emoji (written here)
SPOKEN_HEAD = {"detected": "Incident detected", "proposed": "Action recommended", "escalated": "Priority raised",
               "executed": "Recovery action ran", "failed": "Recovery action failed", "recovered": "Recovered",
               "resolved": "Resolved", "dissent": "Diagnoses disagree your call", "silence": "Silence"}
# characters a speech engine would spell out or that are not speech: symbols, emoji joiners and selectors
NOT_SPEECH = {"So", "Sk", "Mn", "Me", "Cf", "Co", "Cn"}
# what XML 1.0 can carry at all: no C0 controls but tab, newline and carriage return; no surrogates
XML_TEXT = st.text(st.characters(blacklist_categories=("Cc", "Cs", "Cn")), min_size=1, max_size=200)
# what a call says verbatim: no symbols (emoji), controls, private-use or unassigned characters
SPOKEN_TEXT = st.text(st.characters(blacklist_categories=("Cc", "Cs", "Cn", "Co", "So")), min_size=1, max_size=200)


def message(text: str = "db-1: disk 97% full", **kw: object) -> Message:
    fields: dict[str, object] = {"tenant": "acme", "incident": "INC-42", "event": "detected", "priority": "P1",
                                 "text": text, "data": {"service": "orders-db"}, "code": "K7QM"}
    fields.update(kw)
    return Message(**fields)  # type: ignore[arg-type]


def says(element: ET.Element) -> list[str]:
    return [say.text or "" for say in element.iter("Say")]


# --------------------------------------------------------------------------------------------
# the TwiML
# --------------------------------------------------------------------------------------------

def test_call_gathers_one_digit_posted_to_the_gather_url() -> None:
    root = ET.fromstring(call_twiml(message(), GATHER_URL))

    assert root.tag == "Response"
    (gather,) = root.findall("Gather")
    assert (gather.get("numDigits"), gather.get("action"), gather.get("method")) == ("1", GATHER_URL, "POST")
    inside = says(gather)
    assert inside and all("INC-42" in s and "Press 1" in s for s in inside)
    assert "db-1: disk 97% full" in inside[0]


def test_nothing_pressed_ends_the_call_with_words_after_the_gather() -> None:
    root = ET.fromstring(call_twiml(message(), GATHER_URL))

    children = [child.tag for child in root]
    assert children[0] == "Gather" and children[-1] == "Say"
    assert "Press 1" not in (root[-1].text or "")


@pytest.mark.parametrize(("gather_url", "incident"), [(None, "INC-42"), (GATHER_URL, "")],
                         ids=["no-gather-url", "no-incident"])
def test_no_gather_without_a_gather_url_or_an_incident(gather_url: str | None, incident: str) -> None:
    root = ET.fromstring(call_twiml(message(incident=incident), gather_url))

    assert root.tag == "Response" and root.find(".//Gather") is None
    (said,) = says(root)
    assert "db-1: disk 97% full" in said and "Press 1" not in said


def test_xml_characters_in_the_incident_text_are_escaped() -> None:
    text = 'disk <db-1> at 97% & rising; "quoted" \'single\' ]]> <!-- --> &amp;'

    root = ET.fromstring(call_twiml(message(text), GATHER_URL))

    assert all(text in s for s in says(root.find("Gather")))     # round-trips character for character
    assert len(list(root.iter())) == 6                           # Response, Gather, Say, Pause, Say, Say: no more


def test_xml_characters_in_the_gather_url_are_escaped() -> None:
    url = 'https://alerts.example.com/bot/twilio/acme/voice?a=1&b="2"&c=<3>'

    gather = ET.fromstring(call_twiml(message(), url)).find("Gather")

    assert gather is not None and gather.get("action") == url


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(text=SPOKEN_TEXT, service=SPOKEN_TEXT, incident=st.from_regex(r"INC-[0-9]{1,6}", fullmatch=True))
def test_any_incident_text_round_trips_through_the_twiml(text: str, service: str, incident: str) -> None:
    root = ET.fromstring(call_twiml(message(text, incident=incident, data={"service": service}), GATHER_URL))

    inside = says(root.find("Gather"))
    assert len(inside) == 2
    assert all(text in s and f"incident {incident}" in s and service in s for s in inside)


def test_control_characters_in_the_incident_text_do_not_break_the_twiml() -> None:
    twiml = call_twiml(message("\x1b[31mERROR\x1b[0m disk full\x00"), GATHER_URL)

    root = ET.fromstring(twiml)
    assert "disk full" in says(root.find("Gather"))[0]


async def test_a_call_about_text_full_of_xml_characters_is_still_placed(client: TwilioClient,
                                                                        fake: FakeTwilio) -> None:
    voice = VoiceChannel(client, CALLER_ID, PERSON, GATHER_URL, STATUS_URL)

    text = "&&& " * 200                         # an edge case: each & is 5 characters in XML, said twice

    delivery = await voice.send(message(text))

    assert delivery.delivered, delivery.detail


# --------------------------------------------------------------------------------------------
# what is spoken
# --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("event", sorted(SPOKEN_HEAD))
def test_spoken_words_name_the_event_without_emoji(event: str) -> None:
    words = spoken(message(event=event))

    assert SPOKEN_HEAD[event] in words
    assert "priority P1" in words and "incident INC-42" in words and "orders-db" in words
    assert not [c for c in words if unicodedata.category(c) in NOT_SPEECH]


def test_spoken_words_turn_lines_into_sentences() -> None:
    words = spoken(message("disk full\nwrites failing"))

    assert "\n" not in words and "disk full. writes failing" in words


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(text=st.text(st.characters(blacklist_categories=("Cc", "Cs", "Cn", "Co", "So")), min_size=1, max_size=2000),
       limit=st.integers(min_value=80, max_value=800))
def test_spoken_words_stay_within_the_limit(text: str, limit: int) -> None:
    words = spoken(message(text), limit=limit)

    assert len(words) <= limit
    assert words.startswith("AlertEngine. Incident detected")
    if text.replace("\n", ". ") not in words:
        assert words.endswith(".")                  # a cut is marked


def test_spoken_words_are_600_characters_at_most_by_default() -> None:
    words = spoken(message("word " * 400))

    assert len(words) <= 600 and words.endswith(".")
    assert not words.endswith(" .")                 # cut between words


# --------------------------------------------------------------------------------------------
# the call
# --------------------------------------------------------------------------------------------

async def test_call_goes_to_the_person_from_the_tenants_number_with_progress_callbacks(client: TwilioClient,
                                                                                      fake: FakeTwilio) -> None:
    delivery = await VoiceChannel(client, CALLER_ID, PERSON, GATHER_URL, STATUS_URL).send(message())

    (form,) = fake.calls
    assert {k: v for k, v in form.items() if k != "Twiml"} == {
        "To": PERSON, "From": CALLER_ID, "Timeout": "30", "StatusCallback": STATUS_URL,
        "StatusCallbackMethod": "POST", "StatusCallbackEvent": ["initiated", "ringing", "answered", "completed"]}
    gather = ET.fromstring(form["Twiml"]).find("Gather")
    assert gather is not None and gather.get("action") == GATHER_URL
    assert delivery.delivered and delivery.provider_id in fake.created
    assert delivery.provider_id.startswith("CA")


async def test_call_without_callback_urls_only_says_the_incident(client: TwilioClient, fake: FakeTwilio) -> None:
    delivery = await VoiceChannel(client, CALLER_ID, PERSON, None, None).send(message())

    (form,) = fake.calls
    assert delivery.delivered
    assert "StatusCallback" not in form and "StatusCallbackEvent" not in form
    assert ET.fromstring(form["Twiml"]).find(".//Gather") is None


@pytest.mark.parametrize(("status", "retryable"), [(400, False), (429, True), (500, True)])
async def test_a_refused_call_reaches_the_outbox_as_it_came(client: TwilioClient, fake: FakeTwilio, status: int,
                                                            retryable: bool) -> None:
    fake.fail_next("Calls", status=status)

    delivery = await VoiceChannel(client, CALLER_ID, PERSON, GATHER_URL, STATUS_URL).send(message())

    assert not delivery.delivered and delivery.retryable is retryable
    assert f"HTTP {status}" in delivery.detail
