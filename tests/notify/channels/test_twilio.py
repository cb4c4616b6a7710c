"""The Twilio client against a local fake REST API (form fields, auth, errors, retries, token
hygiene), and X-Twilio-Signature checked against twilio's own RequestValidator."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
import string
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import Any
from urllib.parse import urlencode

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from twilio.request_validator import RequestValidator

from alertengine.notify.channels.twilio import (
    Created,
    TwilioClient,
    compute_signature,
    first,
    form_pairs,
    signature_ok,
)
from tests.fakes.twilio import FakeTwilio

TO = "whatsapp:+4915112345678"
FROM = "whatsapp:+14155238886"
PHONE, CALLER_ID = "+4915112345678", "+14155238886"
STATUS_URL = "https://alerts.example.com/bot/twilio/acme/status"
TWIML = "<Response><Say>Incident INC-42.</Say></Response>"
TEMPLATE_SID = "HX" + "b" * 32
MESSAGE_SID = re.compile(r"SM[0-9a-f]{32}")
CALL_SID = re.compile(r"CA[0-9a-f]{32}")
OTHER_SID = "AC" + "0123456789abcdef" * 2
# Twilio's documented signature example ("Validating requests are coming from Twilio")
DOC_TOKEN = "12345"
DOC_URL = "https://mycompany.com/myapp.php?foo=1&bar=2"
DOC_PARAMS = {"CallSid": "CA1234567890ABCDE", "Caller": "+14158675309", "Digits": "1234",
              "From": "+14158675309", "To": "+18005551212"}
DOC_SIGNATURE = "RSOYDt4T1cUTdK1PDd93/VVr8B8="


async def create(client: TwilioClient, resource: str) -> Any:
    """One create request of ``resource`` that the fake would accept."""
    if resource == "Messages":
        return await client.send_message(TO, FROM, body="Disk full on db-1")
    return await client.create_call(PHONE, CALLER_ID, TWIML)


# --------------------------------------------------------------------------------------------
# Messages
# --------------------------------------------------------------------------------------------

async def test_session_message_posts_to_from_body_and_status_callback(client: TwilioClient, fake: FakeTwilio) -> None:
    delivery, created = await client.send_message(TO, FROM, body="Disk full on db-1", status_callback=STATUS_URL)

    assert fake.messages == [{"To": TO, "From": FROM, "Body": "Disk full on db-1", "StatusCallback": STATUS_URL}]
    assert delivery.delivered and not delivery.retryable
    assert MESSAGE_SID.fullmatch(delivery.provider_id or "")
    assert created == Created(delivery.provider_id, "queued")
    assert list(fake.created) == [delivery.provider_id]


async def test_template_message_posts_content_sid_and_variables_and_no_body(client: TwilioClient,
                                                                           fake: FakeTwilio) -> None:
    variables = json.dumps({"1": "Incident detected", "2": "INC-42", "3": "K7QM"})
    delivery, created = await client.send_message(TO, FROM, content_sid=TEMPLATE_SID, content_variables=variables,
                                                  status_callback=STATUS_URL)

    assert fake.messages == [{"To": TO, "From": FROM, "ContentSid": TEMPLATE_SID, "ContentVariables": variables,
                              "StatusCallback": STATUS_URL}]
    assert delivery.delivered and created is not None and created.sid == delivery.provider_id


async def test_message_without_status_callback_asks_for_none(client: TwilioClient, fake: FakeTwilio) -> None:
    delivery, _ = await client.send_message(TO, FROM, body="hello")

    assert delivery.delivered
    assert fake.messages == [{"To": TO, "From": FROM, "Body": "hello"}]


@pytest.mark.parametrize("kwargs", [{}, {"body": "hi", "content_sid": TEMPLATE_SID}, {"body": ""}, {"body": " \n "}],
                         ids=["neither", "both", "empty-body", "blank-body"])
async def test_message_needs_exactly_one_non_blank_body_or_template(client: TwilioClient, fake: FakeTwilio,
                                                                    kwargs: dict[str, str]) -> None:
    with pytest.raises(ValueError):
        await client.send_message(TO, FROM, **kwargs)
    assert fake.requests() == 0


@pytest.mark.parametrize(("length", "cut"), [(1599, False), (1600, False), (1601, True), (5000, True)])
async def test_body_longer_than_1600_characters_is_cut_with_an_ellipsis(client: TwilioClient, fake: FakeTwilio,
                                                                        length: int, cut: bool) -> None:
    body = "".join(string.ascii_lowercase[i % 26] for i in range(length))

    delivery, _ = await client.send_message(TO, FROM, body=body)

    sent = fake.messages[0]["Body"]
    assert delivery.delivered                       # the fake refuses bodies over 1600 characters (21617)
    assert sent == (body[:1599] + "…" if cut else body)
    assert len(sent) <= 1600


# --------------------------------------------------------------------------------------------
# Calls
# --------------------------------------------------------------------------------------------

async def test_call_posts_twiml_timeout_and_all_four_progress_events(client: TwilioClient, fake: FakeTwilio) -> None:
    delivery, created = await client.create_call(PHONE, CALLER_ID, TWIML, status_callback=STATUS_URL, ring_for=25)

    assert fake.calls == [{"To": PHONE, "From": CALLER_ID, "Twiml": TWIML, "Timeout": "25",
                           "StatusCallback": STATUS_URL, "StatusCallbackMethod": "POST",
                           "StatusCallbackEvent": ["initiated", "ringing", "answered", "completed"]}]
    assert delivery.delivered and not delivery.retryable
    assert CALL_SID.fullmatch(delivery.provider_id or "")
    assert created == Created(delivery.provider_id, "queued")


async def test_call_without_status_callback_asks_for_no_events(client: TwilioClient, fake: FakeTwilio) -> None:
    delivery, _ = await client.create_call(PHONE, CALLER_ID, TWIML)

    assert delivery.delivered
    assert fake.calls == [{"To": PHONE, "From": CALLER_ID, "Twiml": TWIML, "Timeout": "30"}]


@pytest.mark.parametrize("ring_for", [0, 4, 601])
async def test_ring_time_outside_5_to_600_seconds_is_refused(client: TwilioClient, fake: FakeTwilio,
                                                             ring_for: int) -> None:
    with pytest.raises(ValueError):
        await client.create_call(PHONE, CALLER_ID, TWIML, ring_for=ring_for)
    assert fake.requests() == 0


# --------------------------------------------------------------------------------------------
# authentication
# --------------------------------------------------------------------------------------------

async def test_requests_carry_basic_auth_of_account_sid_and_token(fake: FakeTwilio) -> None:
    seen: list[str] = []

    async def record(request: httpx.Request) -> None:
        seen.append(request.headers.get("authorization", ""))

    async with httpx.AsyncClient(event_hooks={"request": [record]}) as http:
        client = TwilioClient(fake.base_url, fake.account_sid, fake.auth_token, http)
        message, _ = await client.send_message(TO, FROM, body="hi")
        call, _ = await client.create_call(PHONE, CALLER_ID, TWIML)

    expected = "Basic " + base64.b64encode(f"{fake.account_sid}:{fake.auth_token}".encode()).decode()
    assert seen == [expected, expected]
    assert message.delivered and call.delivered and fake.unauthorized == 0


@pytest.mark.parametrize("resource", ["Messages", "Calls"])
@pytest.mark.parametrize("credentials", ["wrong-token", "other-account"])
async def test_refused_credentials_are_a_final_401(fake: FakeTwilio, http: httpx.AsyncClient, resource: str,
                                                   credentials: str) -> None:
    sid, token = (fake.account_sid, "0" * 32) if credentials == "wrong-token" else (OTHER_SID, fake.auth_token)
    client = TwilioClient(fake.base_url, sid, token, http)

    delivery, created = await create(client, resource)

    assert not delivery.delivered and not delivery.retryable and created is None
    assert "HTTP 401" in delivery.detail and "Twilio error 20003" in delivery.detail
    assert fake.unauthorized == 1 and fake.messages == fake.calls == []


# --------------------------------------------------------------------------------------------
# errors and retries
# --------------------------------------------------------------------------------------------

async def test_invalid_number_is_final_and_names_twilio_error_21211(client: TwilioClient, fake: FakeTwilio) -> None:
    delivery, created = await client.send_message("whatsapp:12345", FROM, body="hi")

    assert (delivery.delivered, delivery.retryable, delivery.retry_after, created) == (False, False, None, None)
    assert delivery.detail.startswith("Messages.create: HTTP 400")
    assert "Twilio error 21211" in delivery.detail
    assert "not a valid phone number" in delivery.detail


async def test_malformed_twiml_is_final(client: TwilioClient, fake: FakeTwilio) -> None:
    delivery, _ = await client.create_call(PHONE, CALLER_ID, "<Response><Say>unclosed</Response>")

    assert not delivery.delivered and not delivery.retryable
    assert delivery.detail.startswith("Calls.create: HTTP 400")


@pytest.mark.parametrize("resource", ["Messages", "Calls"])
@pytest.mark.parametrize(("header", "expected"), [(None, None), (7, 7.0), (0, 0.0), ("2.5", 2.5)])
async def test_429_is_retryable_and_honours_retry_after_seconds(client: TwilioClient, fake: FakeTwilio, resource: str,
                                                                header: Any, expected: float | None) -> None:
    fake.fail_next(resource, status=429, retry_after=header)

    delivery, created = await create(client, resource)

    assert not delivery.delivered and delivery.retryable and created is None
    assert delivery.retry_after == expected
    assert "HTTP 429" in delivery.detail and "Twilio error 20429" in delivery.detail


async def test_429_retry_after_as_an_http_date(client: TwilioClient, fake: FakeTwilio) -> None:
    later = datetime.now(UTC) + timedelta(seconds=120)
    fake.fail_next("Messages", status=429, retry_after=format_datetime(later, usegmt=True))
    fake.fail_next("Messages", status=429, retry_after="Wed, 21 Oct 2015 07:28:00 GMT")    # already past

    future, _ = await create(client, "Messages")
    past, _ = await create(client, "Messages")

    assert future.retryable and future.retry_after is not None and 60 < future.retry_after <= 120
    assert past.retryable and past.retry_after == 0.0


@pytest.mark.parametrize("resource", ["Messages", "Calls"])
@pytest.mark.parametrize(("status", "code"), [(500, 20500), (503, 20503)])
async def test_server_errors_are_retryable(client: TwilioClient, fake: FakeTwilio, resource: str, status: int,
                                           code: int) -> None:
    fake.fail_next(resource, status=status, code=code)

    delivery, created = await create(client, resource)

    assert not delivery.delivered and delivery.retryable and created is None and delivery.retry_after is None
    assert f"HTTP {status} (Twilio error {code})" in delivery.detail


async def test_a_proxy_error_page_is_retryable(client: TwilioClient, fake: FakeTwilio) -> None:
    fake.fail_next("Messages", status=502, body=b"<html><body>502 Bad Gateway</body></html>")

    delivery, _ = await create(client, "Messages")

    assert not delivery.delivered and delivery.retryable
    assert "HTTP 502" in delivery.detail


async def test_rfc9457_error_body_is_reported_with_its_code_and_detail(client: TwilioClient,
                                                                       fake: FakeTwilio) -> None:
    fake.fail_next("Messages", status=400, code=21211, rfc9457=True,
                   message="The 'To' number whatsapp:+4915112345678 is not a valid phone number.")

    delivery, _ = await create(client, "Messages")

    assert not delivery.delivered and not delivery.retryable
    # the number Twilio quotes is personal data: the detail (which is ledgered) never carries it
    assert delivery.detail == ("Messages.create: HTTP 400 (Twilio error 21211): "
                               "The 'To' number <number> is not a valid phone number.")


@pytest.mark.parametrize("resource", ["Messages", "Calls"])
async def test_unreachable_api_is_retryable(http: httpx.AsyncClient, dead_base_url: str, resource: str) -> None:
    client = TwilioClient(dead_base_url, OTHER_SID, "secret-token", http)

    delivery, created = await create(client, resource)

    assert not delivery.delivered and delivery.retryable and created is None and delivery.provider_id is None


# --------------------------------------------------------------------------------------------
# the auth token stays secret
# --------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("status", "rfc9457"), [(400, False), (403, False), (404, True), (429, False),
                                                 (500, False), (503, True)])
async def test_auth_token_never_appears_in_a_delivery_detail(client: TwilioClient, fake: FakeTwilio, status: int,
                                                             rfc9457: bool) -> None:
    fake.fail_next("Messages", status=status, rfc9457=rfc9457,
                   message=f"credentials {fake.account_sid}:{fake.auth_token} were refused ({fake.auth_token})")

    failed, _ = await create(client, "Messages")
    delivered, _ = await create(client, "Messages")

    assert not failed.delivered and delivered.delivered
    for delivery in (failed, delivered):
        assert fake.auth_token not in delivery.detail
    assert "<secret>" in failed.detail


async def test_auth_token_never_appears_in_repr_nor_in_a_transport_failure(http: httpx.AsyncClient,
                                                                          dead_base_url: str) -> None:
    token = "f" * 32
    client = TwilioClient(dead_base_url, OTHER_SID, token, http)

    delivery, _ = await create(client, "Calls")

    assert token not in repr(client) and token not in str(client)
    assert OTHER_SID in repr(client)
    assert token not in delivery.detail


# --------------------------------------------------------------------------------------------
# construction
# --------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("base_url", "account_sid", "token", "timeout"), [
    ("https://api.twilio.com", "AC123", "t", 10.0),                          # too short
    ("https://api.twilio.com", "XX" + "a" * 32, "t", 10.0),                  # not an account SID
    ("https://api.twilio.com", "AC" + "g" * 32, "t", 10.0),                  # not hexadecimal
    ("https://api.twilio.com", "AC" + "a" * 33, "t", 10.0),                  # too long
    ("https://api.twilio.com", None, "t", 10.0),
    ("ftp://api.twilio.com", "AC" + "a" * 32, "t", 10.0),                    # not http(s)
    ("api.twilio.com", "AC" + "a" * 32, "t", 10.0),
    ("https://api.twilio.com", "AC" + "a" * 32, "", 10.0),                   # empty token
    ("https://api.twilio.com", "AC" + "a" * 32, None, 10.0),
    ("https://api.twilio.com", "AC" + "a" * 32, "t", 0.0),
    ("https://api.twilio.com", "AC" + "a" * 32, "t", float("nan")),
])
async def test_constructor_refuses_bad_settings(http: httpx.AsyncClient, base_url: str, account_sid: Any, token: Any,
                                                timeout: float) -> None:
    with pytest.raises(ValueError):
        TwilioClient(base_url, account_sid, token, http, timeout=timeout)


async def test_empty_base_url_means_twilios_api(http: httpx.AsyncClient) -> None:
    assert TwilioClient("", OTHER_SID, "t", http).base_url == "https://api.twilio.com"
    assert TwilioClient("http://127.0.0.1:9/", OTHER_SID, "t", http).base_url == "http://127.0.0.1:9"


# --------------------------------------------------------------------------------------------
# X-Twilio-Signature
# --------------------------------------------------------------------------------------------

def test_documented_example_signature() -> None:
    assert RequestValidator(DOC_TOKEN).compute_signature(DOC_URL, DOC_PARAMS) == DOC_SIGNATURE    # the vector
    assert compute_signature(DOC_TOKEN, DOC_URL, DOC_PARAMS.items()) == DOC_SIGNATURE
    assert compute_signature(DOC_TOKEN, DOC_URL, reversed(list(DOC_PARAMS.items()))) == DOC_SIGNATURE
    assert signature_ok(DOC_TOKEN, DOC_URL, DOC_PARAMS.items(), DOC_SIGNATURE)


TEXT = st.text(st.characters(blacklist_categories=("Cs",)), max_size=24)      # anything a UTF-8 form can carry
NAMES = st.text(st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=16)
PARAMS = st.dictionaries(NAMES, TEXT, max_size=8)
HOSTS = st.from_regex(r"[a-z0-9]([a-z0-9-]{0,14}[a-z0-9])?(\.[a-z]{2,8}){1,2}", fullmatch=True)
SEGMENTS = st.text(string.ascii_letters + string.digits + "-._~%!$'()*,;=:@", min_size=1, max_size=10)
PATHS = st.lists(SEGMENTS, max_size=4).map(lambda parts: "/" + "/".join(parts))
QUERIES = st.dictionaries(st.text(string.ascii_letters, min_size=1, max_size=6), TEXT, max_size=3).map(urlencode)
DEFAULT_PORT = {"https": 443, "http": 80}


@st.composite
def urls(draw: st.DrawFn, port: bool | None = None) -> dict[str, Any]:
    """URL parts; ``port``: True = always a port, False = never, None = either."""
    scheme = draw(st.sampled_from(["https", "http"]))
    ports = [None] if port is False else [DEFAULT_PORT[scheme], 8443, 8080] if port else [None, 443, 80, 8443]
    return {"scheme": scheme, "host": draw(HOSTS), "port": draw(st.sampled_from(ports)), "path": draw(PATHS),
            "query": draw(QUERIES)}


def join(parts: dict[str, Any], port: int | None = -1) -> str:
    """The URL of ``parts``, with ``port`` instead of its own when given (None: without one)."""
    port = parts["port"] if port == -1 else port
    return f"{parts['scheme']}://{parts['host']}{'' if port is None else f':{port}'}{parts['path']}" + \
        (f"?{parts['query']}" if parts["query"] else "")


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(token=NAMES, url=urls(), params=PARAMS)
def test_signature_is_twilios_for_any_url_and_form(token: str, url: dict[str, Any], params: dict[str, str]) -> None:
    full = join(url)
    expected = RequestValidator(token).compute_signature(full, params)

    assert compute_signature(token, full, params.items()) == expected
    assert signature_ok(token, full, params.items(), expected)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(token=NAMES, url=urls(port=False), params=PARAMS)
def test_signature_over_the_url_with_or_without_the_default_port_is_accepted(token: str, url: dict[str, Any],
                                                                            params: dict[str, str]) -> None:
    bare, ported = join(url), join(url, DEFAULT_PORT[url["scheme"]])
    validator = RequestValidator(token)

    # Twilio signs one form and the appliance rebuilt the other: both directions must pass
    assert signature_ok(token, bare, params.items(), validator.compute_signature(ported, params))
    assert signature_ok(token, ported, params.items(), validator.compute_signature(bare, params))


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(token=NAMES, url=urls(), params=PARAMS.filter(bool), data=st.data())
def test_signature_is_refused_when_anything_signed_changes(token: str, url: dict[str, Any], params: dict[str, str],
                                                           data: st.DataObject) -> None:
    full = join(url)
    signature = RequestValidator(token).compute_signature(full, params)
    name = data.draw(st.sampled_from(sorted(params)))
    changed_value = {**params, name: params[name] + data.draw(st.sampled_from(["x", " ", "0"]))}
    changed_url = join({**url, "path": url["path"] + "x"})
    other_token = token + data.draw(st.sampled_from(["x", "0"]))

    assert signature_ok(token, full, params.items(), signature)
    assert not signature_ok(token, full, changed_value.items(), signature)
    assert not signature_ok(token, changed_url, params.items(), signature)
    assert not signature_ok(other_token, full, params.items(), signature)
    tampered = ("B" if signature[0] == "A" else "A") + signature[1:]
    assert not signature_ok(token, full, params.items(), tampered)


@pytest.mark.parametrize("signature", ["", None])
def test_missing_signature_is_refused(signature: str | None) -> None:
    assert not signature_ok(DOC_TOKEN, DOC_URL, DOC_PARAMS.items(), signature)


def test_empty_token_refuses_even_a_signature_made_with_it() -> None:
    made_with_empty = RequestValidator("").compute_signature(DOC_URL, DOC_PARAMS)
    assert not signature_ok("", DOC_URL, DOC_PARAMS.items(), made_with_empty)


def test_repeated_names_sign_every_value_in_order() -> None:
    pairs = [("StatusCallbackEvent", "ringing"), ("To", "+1"), ("StatusCallbackEvent", "answered")]
    # Twilio's rule: names sorted, each name's values sorted, name+value appended to the URL
    text = DOC_URL + "StatusCallbackEventansweredStatusCallbackEventringingTo+1"
    expected = base64.b64encode(hmac.new(b"12345", text.encode(), hashlib.sha1).digest()).decode()

    assert compute_signature(DOC_TOKEN, DOC_URL, pairs) == expected


def test_mixed_case_host_is_accepted_with_the_default_port_added() -> None:
    bare = "https://Alerts.Example.com/bot/twilio/acme/status"
    ported = "https://Alerts.Example.com:443/bot/twilio/acme/status"
    validator = RequestValidator(DOC_TOKEN)
    signed_with_port = validator.compute_signature(ported, DOC_PARAMS)

    assert validator.validate(bare, DOC_PARAMS, signed_with_port)
    assert signature_ok(DOC_TOKEN, bare, DOC_PARAMS.items(), signed_with_port)


# --------------------------------------------------------------------------------------------
# form bodies
# --------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("body", "pairs"), [
    (b"", []),
    (b"Digits=1&FinishedOnKey=&Body=ACK+K7QM", [("Digits", "1"), ("FinishedOnKey", ""), ("Body", "ACK K7QM")]),
    (b"Blank", [("Blank", "")]),
    (b"E=initiated&E=ringing", [("E", "initiated"), ("E", "ringing")]),
    (b"Body=%C3%A9t%C3%A9+%F0%9F%94%A5&To=%2B1", [("Body", "été 🔥"), ("To", "+1")]),
])
def test_form_pairs_keep_blank_values_and_repeats(body: bytes, pairs: list[tuple[str, str]]) -> None:
    assert form_pairs(body) == pairs


@pytest.mark.parametrize("body", [b"Body=\xff", b"\xc3(=1", "Body=été".encode("latin-1")])
def test_form_pairs_refuse_a_body_that_is_not_utf8(body: bytes) -> None:
    with pytest.raises(ValueError):
        form_pairs(body)


def test_first_keeps_each_names_first_value() -> None:
    assert dict(first([("A", "1"), ("B", ""), ("A", "2")])) == {"A": "1", "B": ""}


# --------------------------------------------------------------------------------------------
# the fake's signed callbacks verify with the appliance's check (both ends agree on the wire)
# --------------------------------------------------------------------------------------------

CALLBACKS = {
    "message_status": lambda f: f.message_status("SM" + "1" * 32, "undelivered", 63016),
    "call_status": lambda f: f.call_status("CA" + "2" * 32, "completed"),
    "inbound_whatsapp": lambda f: f.inbound_whatsapp("+4915112345678", "approve k7qm a & more",
                                                      original_replied_sid="SM" + "3" * 32, button_payload="ACK K7QM"),
    "gather": lambda f: f.gather("CA" + "4" * 32, "1", PHONE, CALLER_ID),
    "repeated": lambda f: [("StatusCallbackEvent", "ringing"), ("Blank", ""), ("StatusCallbackEvent", "answered")],
}


@pytest.mark.parametrize("form", sorted(CALLBACKS))
async def test_signed_callbacks_pass_the_appliances_check(fake: FakeTwilio, form: str) -> None:
    received: list[httpx.Request] = []

    def app(request: httpx.Request) -> httpx.Response:
        received.append(request)
        return httpx.Response(200, text="<Response/>")

    params = CALLBACKS[form](fake)
    url = "https://alerts.example.com/bot/twilio/acme/status?tenant=acme"
    async with httpx.AsyncClient(transport=httpx.MockTransport(app)) as http:
        answer = await fake.post_signed(url, params, fake.auth_token, http)

    (request,) = received
    pairs = form_pairs(request.content)
    signature = request.headers["x-twilio-signature"]
    assert answer.status_code == 200 and request.method == "POST"
    assert request.headers["content-type"].startswith("application/x-www-form-urlencoded")
    assert pairs == (list(params.items()) if isinstance(params, dict) else params)
    assert signature_ok(fake.auth_token, url, pairs, signature)
    assert not signature_ok("another-token", url, pairs, signature)
