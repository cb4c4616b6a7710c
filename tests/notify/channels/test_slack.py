"""The Slack channel against a local fake Slack: chat.postMessage / chat.update with Block Kit, the
incoming webhook, failure classification, token and webhook-secret hygiene, request signatures
(checked against slack_sdk's own verifier) and the interactivity payload reader."""

from __future__ import annotations

import json
import re
from typing import Any
from urllib.parse import parse_qs, quote, urlencode

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from slack_sdk.signature import Clock, SignatureVerifier

from alertengine.notify.channels.base import RetryPolicy, deliver_with_retries
from alertengine.notify.channels.slack import (
    SlackClient,
    compute_signature,
    parse_interaction,
    post_webhook,
    signature_ok,
)
from alertengine.notify.message import Message
from tests.fakes.slack import FakeSlack, fake_slack, signed_headers  # noqa: F401 — fixture

CHANNEL = "C0ALERTS"
TS = re.compile(r"[0-9]{10}\.[0-9]{6}")
TRICKY = "disk full on db-1 *bold* <@channel> &amp; _x_ <https://evil.example|click>"
REF = "abcdef123456"
PROPOSAL = Message("acme", "INC-42", "proposed", "P1", TRICKY, data={"service": "db-primary"},
                   buttons=[[("Approve", f"ap:{REF}:y"), ("Reject", f"ap:{REF}:n")]])
NEWS = Message("acme", "INC-7", "detected", "P2", "latency over 2 s", data={"service": "api"},
               buttons=[[("Acknowledge", "ak:INC-7"), ("Resolve", "rs:INC-7"), ("Silence 1 h", "sl:INC-7")]])
PLAIN = Message("acme", "INC-9", "recovered", "P3", "back to normal")


@pytest.fixture
def fake(fake_slack: FakeSlack) -> FakeSlack:  # noqa: F811 — the imported fixture
    return fake_slack


@pytest.fixture
def client(fake: FakeSlack, http: httpx.AsyncClient) -> SlackClient:
    return SlackClient(fake.base_url, fake.token, http)


class SleepRecorder:
    """Stands in for asyncio.sleep: records the waits instead of waiting."""

    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.delays.append(seconds)


def blocks_of(body: dict[str, Any], kind: str) -> list[dict[str, Any]]:
    return [block for block in body["blocks"] if block["type"] == kind]


# --------------------------------------------------------------------------------------------
# chat.postMessage
# --------------------------------------------------------------------------------------------

async def test_post_message_authenticates_with_the_bot_token_as_a_bearer_header_and_sends_json(
        fake: FakeSlack, client: SlackClient) -> None:
    delivery = await client.post_message(CHANNEL, PROPOSAL)
    assert delivery.delivered, delivery.detail
    (call,) = fake.requests_to("chat.postMessage")
    assert call.headers["authorization"] == f"Bearer {fake.token}"
    assert call.headers["content-type"].split(";")[0] == "application/json"
    assert "token" not in call.body
    assert fake.unauthorized == 0


async def test_post_message_text_fallback_carries_the_headline_and_the_text(
        fake: FakeSlack, client: SlackClient) -> None:
    await client.post_message(CHANNEL, PROPOSAL)
    (body,) = fake.calls_to("chat.postMessage")
    assert body["channel"] == CHANNEL
    (header,) = blocks_of(body, "header")
    first, rest = body["text"].split("\n", 1)
    assert first == header["text"]["text"]
    assert "INC-42" in first and "P1" in first
    assert rest == TRICKY


async def test_header_is_plain_text_naming_priority_and_incident(fake: FakeSlack, client: SlackClient) -> None:
    await client.post_message(CHANNEL, PROPOSAL)
    (body,) = fake.calls_to("chat.postMessage")
    assert body["blocks"][0]["type"] == "header"
    text = body["blocks"][0]["text"]
    assert text["type"] == "plain_text"
    assert "INC-42" in text["text"] and "P1" in text["text"]
    assert len(text["text"]) <= 150


async def test_section_is_plain_text_so_markup_and_mentions_are_shown_verbatim(
        fake: FakeSlack, client: SlackClient) -> None:
    await client.post_message(CHANNEL, PROPOSAL)
    (body,) = fake.calls_to("chat.postMessage")
    (section,) = blocks_of(body, "section")
    assert section["text"]["type"] == "plain_text"
    assert section["text"]["text"] == TRICKY
    assert "*bold* <@channel> &amp;" in section["text"]["text"]
    assert not any(block.get("text", {}).get("type") == "mrkdwn" for block in body["blocks"])


async def test_service_is_shown_in_a_context_block(fake: FakeSlack, client: SlackClient) -> None:
    await client.post_message(CHANNEL, PROPOSAL)
    (body,) = fake.calls_to("chat.postMessage")
    (context,) = blocks_of(body, "context")
    assert [e["text"] for e in context["elements"]] == ["Service: db-primary"]
    assert context["elements"][0]["type"] == "plain_text"


async def test_approval_buttons_carry_the_callback_data_with_unique_action_ids_and_styles(
        fake: FakeSlack, client: SlackClient) -> None:
    await client.post_message(CHANNEL, PROPOSAL)
    (body,) = fake.calls_to("chat.postMessage")
    (actions,) = blocks_of(body, "actions")
    buttons = actions["elements"]
    assert [(b["type"], b["text"], b["value"]) for b in buttons] == [
        ("button", {"type": "plain_text", "text": "Approve"}, f"ap:{REF}:y"),
        ("button", {"type": "plain_text", "text": "Reject"}, f"ap:{REF}:n"),
    ]
    assert [b.get("style") for b in buttons] == ["primary", "danger"]
    ids = [b["action_id"] for b in buttons]
    assert len(set(ids)) == len(ids) and all(ids)
    assert body["blocks"][-1] is actions


async def test_dissent_buttons_trust_each_theory_primary_and_reject_danger(
        fake: FakeSlack, client: SlackClient) -> None:
    message = Message("acme", "INC-5", "dissent", "P1", "two theories",
                      buttons=[[("Trust A", "ap:aaaaaaaaaaaa:y"), ("Trust B", "ap:bbbbbbbbbbbb:y")],
                               [("Reject", "ap:aaaaaaaaaaaa:n")]])
    assert (await client.post_message(CHANNEL, message)).delivered
    (body,) = fake.calls_to("chat.postMessage")
    (actions,) = blocks_of(body, "actions")
    assert [(b["text"]["text"], b["value"], b.get("style")) for b in actions["elements"]] == [
        ("Trust A", "ap:aaaaaaaaaaaa:y", "primary"), ("Trust B", "ap:bbbbbbbbbbbb:y", "primary"),
        ("Reject", "ap:aaaaaaaaaaaa:n", "danger")]
    assert len({b["action_id"] for b in actions["elements"]}) == 3


async def test_incident_buttons_have_no_style_and_their_own_values(fake: FakeSlack, client: SlackClient) -> None:
    assert (await client.post_message(CHANNEL, NEWS)).delivered
    (body,) = fake.calls_to("chat.postMessage")
    (actions,) = blocks_of(body, "actions")
    assert [(b["text"]["text"], b["value"], "style" in b) for b in actions["elements"]] == [
        ("Acknowledge", "ak:INC-7", False), ("Resolve", "rs:INC-7", False), ("Silence 1 h", "sl:INC-7", False)]


async def test_provider_id_is_channel_and_ts_of_the_stored_message(fake: FakeSlack, client: SlackClient) -> None:
    delivery = await client.post_message(CHANNEL, PROPOSAL)
    assert (delivery.delivered, delivery.retryable) == (True, False)
    channel, ts = delivery.provider_id.split(":")
    assert channel == CHANNEL and TS.fullmatch(ts)
    (stored,) = fake.messages_in(CHANNEL)
    assert stored["ts"] == ts
    assert "INC-42" in stored["text"] and stored["blocks"][0]["type"] == "header"


async def test_message_ts_strictly_increase(client: SlackClient) -> None:
    stamps = [(await client.post_message(CHANNEL, PLAIN)).provider_id.split(":")[1] for _ in range(5)]
    assert stamps == sorted(stamps, key=lambda s: tuple(map(int, s.split(".")))) and len(set(stamps)) == 5


async def test_posting_to_a_user_id_lands_in_the_direct_message_channel_the_answer_names(
        fake: FakeSlack, client: SlackClient) -> None:
    delivery = await client.post_message("U0ADA", PROPOSAL)
    assert delivery.delivered, delivery.detail
    channel, ts = delivery.provider_id.split(":")
    assert channel == "D0ADA"
    assert fake.message("D0ADA", ts) is not None


async def test_no_actions_block_when_the_message_has_no_buttons(fake: FakeSlack, client: SlackClient) -> None:
    assert (await client.post_message(CHANNEL, PLAIN)).delivered
    (body,) = fake.calls_to("chat.postMessage")
    assert [b["type"] for b in body["blocks"]] == ["header", "section"]


@pytest.mark.parametrize(("length", "cut"), [(1, False), (2999, False), (3000, False), (3001, True), (20_000, True)])
async def test_section_text_is_cut_to_3000_characters_with_an_ellipsis(
        fake: FakeSlack, client: SlackClient, length: int, cut: bool) -> None:
    text = "🚨" + "x" * (length - 1)
    message = Message("acme", "INC-1", "detected", "P1", text)
    delivery = await client.post_message(CHANNEL, message)
    assert delivery.delivered, delivery.detail        # the fake refuses a section over 3000 characters
    (body,) = fake.calls_to("chat.postMessage")
    sent = blocks_of(body, "section")[0]["text"]["text"]
    assert len(sent) == min(length, 3000)
    assert sent.endswith("…") is cut
    assert sent == text if not cut else sent[:-1] == text[:2999]


async def test_a_long_headline_is_cut_to_the_150_characters_of_a_header(fake: FakeSlack, client: SlackClient) -> None:
    message = Message("acme", "INC-" + "9" * 15, "e" * 200, "P1", "odd event")
    delivery = await client.post_message(CHANNEL, message)
    assert delivery.delivered, delivery.detail
    (body,) = fake.calls_to("chat.postMessage")
    assert len(blocks_of(body, "header")[0]["text"]["text"]) == 150


async def test_posts_to_other_known_channels_after_add_channel(fake: FakeSlack, client: SlackClient) -> None:
    assert not (await client.post_message("C0OPS", PLAIN)).delivered
    fake.add_channel("C0OPS")
    delivery = await client.post_message("C0OPS", PLAIN)
    assert delivery.delivered and delivery.provider_id.startswith("C0OPS:")


# --------------------------------------------------------------------------------------------
# chat.update
# --------------------------------------------------------------------------------------------

async def test_update_message_replaces_the_buttons_with_the_outcome(fake: FakeSlack, client: SlackClient) -> None:
    posted = await client.post_message(CHANNEL, PROPOSAL)
    channel, ts = posted.provider_id.split(":")
    delivery = await client.update_message(channel, ts, PROPOSAL, "Approved by ada")
    assert (delivery.delivered, delivery.provider_id) == (True, posted.provider_id)
    (body,) = fake.calls_to("chat.update")
    assert (body["channel"], body["ts"]) == (CHANNEL, ts)
    assert body["text"].endswith("\nApproved by ada") and TRICKY in body["text"]
    (stored,) = fake.messages_in(CHANNEL)
    kinds = [b["type"] for b in stored["blocks"]]
    assert "actions" not in kinds
    assert kinds == ["header", "section", "context", "context"]
    assert stored["blocks"][-1]["elements"] == [{"type": "plain_text", "text": "Approved by ada"}]
    assert f"ap:{REF}" not in json.dumps(stored)
    assert "edited" in stored


async def test_update_of_a_direct_message_uses_the_dm_channel_from_the_provider_id(
        fake: FakeSlack, client: SlackClient) -> None:
    posted = await client.post_message("U0BOB", NEWS)
    channel, ts = posted.provider_id.split(":")
    assert (await client.update_message(channel, ts, NEWS, "Acknowledged by bob")).delivered
    assert "actions" not in [b["type"] for b in fake.message("D0BOB", ts)["blocks"]]


async def test_update_of_an_unknown_message_is_final(fake: FakeSlack, client: SlackClient) -> None:
    delivery = await client.update_message(CHANNEL, "1700000000.000001", PROPOSAL, "Approved by ada")
    assert (delivery.delivered, delivery.retryable) == (False, False)
    assert delivery.detail == "chat.update: HTTP 200: message_not_found"


# --------------------------------------------------------------------------------------------
# failures and their classification
# --------------------------------------------------------------------------------------------

async def test_a_wrong_bot_token_is_invalid_auth_and_final(fake: FakeSlack, http: httpx.AsyncClient) -> None:
    other = SlackClient(fake.base_url, "xoxb-000000000000-0000000000000-wrongwrongwrong", http)
    delivery = await other.post_message(CHANNEL, PROPOSAL)
    assert (delivery.delivered, delivery.retryable) == (False, False)
    assert delivery.detail == "chat.postMessage: HTTP 200: invalid_auth"
    assert fake.unauthorized == 1 and fake.calls_to("chat.postMessage") == []


async def test_an_unknown_channel_is_channel_not_found_and_final(fake: FakeSlack, client: SlackClient) -> None:
    delivery = await client.post_message("C0NOPE", PROPOSAL)
    assert (delivery.delivered, delivery.retryable, delivery.retry_after) == (False, False, None)
    assert delivery.detail == "chat.postMessage: HTTP 200: channel_not_found"
    assert fake.messages_in("C0NOPE") == []


@pytest.mark.parametrize("error", ["not_in_channel", "is_archived", "invalid_blocks", "account_inactive",
                                   "token_revoked", "missing_scope"])
async def test_other_web_api_errors_are_final(fake: FakeSlack, client: SlackClient, error: str) -> None:
    fake.fail_next("chat.postMessage", error=error)
    delivery = await client.post_message(CHANNEL, PROPOSAL)
    assert (delivery.delivered, delivery.retryable) == (False, False)
    assert delivery.detail == f"chat.postMessage: HTTP 200: {error}"


async def test_http_429_with_retry_after_is_retryable_and_honours_the_wait(
        fake: FakeSlack, client: SlackClient) -> None:
    fake.fail_next("chat.postMessage", status=429, retry_after=7)
    delivery = await client.post_message(CHANNEL, PROPOSAL)
    assert (delivery.delivered, delivery.retryable, delivery.retry_after) == (False, True, 7.0)
    assert "429" in delivery.detail


async def test_ratelimited_error_word_is_retryable_with_retry_after(fake: FakeSlack, client: SlackClient) -> None:
    fake.fail_next("chat.postMessage", status=200, error="ratelimited", retry_after=3)
    delivery = await client.post_message(CHANNEL, PROPOSAL)
    assert (delivery.delivered, delivery.retryable, delivery.retry_after) == (False, True, 3.0)
    assert "ratelimited" in delivery.detail


@pytest.mark.parametrize("status", [500, 502, 503, 504])
async def test_server_errors_are_retryable(fake: FakeSlack, client: SlackClient, status: int) -> None:
    fake.fail_next("chat.postMessage", status=status)
    delivery = await client.post_message(CHANNEL, PROPOSAL)
    assert (delivery.delivered, delivery.retryable) == (False, True)
    assert delivery.detail == f"chat.postMessage: HTTP {status}"


@pytest.mark.parametrize("error", ["internal_error", "fatal_error", "service_unavailable", "request_timeout"])
async def test_slack_side_error_words_are_retryable(fake: FakeSlack, client: SlackClient, error: str) -> None:
    fake.fail_next("chat.update", error=error)
    posted = await client.post_message(CHANNEL, PROPOSAL)
    delivery = await client.update_message(CHANNEL, posted.provider_id.split(":")[1], PROPOSAL, "done")
    assert (delivery.delivered, delivery.retryable) == (False, True)


async def test_a_transport_error_to_a_closed_port_is_retryable(http: httpx.AsyncClient, dead_base_url: str) -> None:
    client = SlackClient(dead_base_url, "xoxb-1-2-abcdefabcdef", http)
    delivery = await client.post_message(CHANNEL, PROPOSAL)
    assert (delivery.delivered, delivery.retryable) == (False, True)
    assert delivery.detail.startswith("chat.postMessage: ConnectError")


async def test_after_a_429_the_retry_waits_at_least_retry_after_then_delivers(
        fake: FakeSlack, client: SlackClient) -> None:
    fake.fail_next("chat.postMessage", status=429, retry_after=2)
    sleep = SleepRecorder()
    delivery, attempts = await deliver_with_retries(lambda: client.post_message(CHANNEL, PROPOSAL),
                                                    RetryPolicy(attempts=3, base_delay=0.5), sleep)
    assert delivery.delivered and attempts == 2
    assert len(sleep.delays) == 1 and sleep.delays[0] >= 2
    assert len(fake.calls_to("chat.postMessage")) == 2 and len(fake.messages_in(CHANNEL)) == 1


async def test_the_bot_token_never_appears_in_a_detail_or_the_repr(
        fake: FakeSlack, client: SlackClient, http: httpx.AsyncClient, dead_base_url: str) -> None:
    details: list[str] = []
    fake.fail_next("chat.postMessage", status=429, retry_after=1)
    fake.fail_next("chat.postMessage", status=503)
    fake.fail_next("chat.postMessage", error=f"weird_{fake.token}")       # even if an answer echoed it
    fake.fail_next("chat.postMessage", error="ratelimited", retry_after=1)
    for _ in range(5):
        details.append((await client.post_message(CHANNEL, PROPOSAL)).detail)
    details.append((await client.post_message("C0NOPE", PROPOSAL)).detail)
    details.append((await client.update_message(CHANNEL, "1.000001", PROPOSAL, "x")).detail)
    details.append((await SlackClient(dead_base_url, fake.token, http).post_message(CHANNEL, PROPOSAL)).detail)
    assert len(details) == 8
    for detail in details + [repr(client)]:
        assert fake.token not in detail
        assert fake.token.split("-")[-1] not in detail
    assert "<secret>" in details[2]


@pytest.mark.parametrize(("base_url", "token", "timeout", "match"), [
    ("ftp://slack.com", "xoxb-1", 10.0, "base_url"),
    ("slack.com", "xoxb-1", 10.0, "base_url"),
    ("https://slack.com", "", 10.0, "xox"),
    ("https://slack.com", "Bearer xoxb-1", 10.0, "xox"),
    ("https://slack.com", None, 10.0, "xox"),
    ("https://slack.com", "xoxb-1", 0.0, "timeout"),
    ("https://slack.com", "xoxb-1", -1.0, "timeout"),
    ("https://slack.com", "xoxb-1", float("nan"), "timeout"),
    ("https://slack.com", "xoxb-1", float("inf"), "timeout"),
])
async def test_constructor_refuses_bad_settings(http: httpx.AsyncClient, base_url: str, token: Any,
                                                timeout: float, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        SlackClient(base_url, token, http, timeout=timeout)


async def test_constructor_defaults_to_slack_com_and_strips_a_trailing_slash(http: httpx.AsyncClient) -> None:
    assert SlackClient("", "xoxb-1", http).base_url == "https://slack.com"
    assert SlackClient("http://127.0.0.1:9/", "xoxb-1", http).base_url == "http://127.0.0.1:9"


# --------------------------------------------------------------------------------------------
# incoming webhook
# --------------------------------------------------------------------------------------------

async def test_webhook_post_answered_ok_is_delivered(fake: FakeSlack, http: httpx.AsyncClient) -> None:
    delivery = await post_webhook(http, fake.webhook_url, PLAIN)
    assert (delivery.delivered, delivery.retryable) == (True, False), delivery.detail
    (body,) = fake.calls_to("webhook")
    assert "INC-9" in body["text"] and "back to normal" in body["text"]
    (stored,) = fake.messages_in(fake.webhook_channel)
    assert stored["text"] == body["text"]


async def test_webhook_body_never_carries_buttons(fake: FakeSlack, http: httpx.AsyncClient) -> None:
    for message in (PROPOSAL, NEWS):
        assert (await post_webhook(http, fake.webhook_url, message)).delivered
    for body in fake.calls_to("webhook"):
        assert "actions" not in [b["type"] for b in body["blocks"]]
        dumped = json.dumps(body)
        assert "ap:" not in dumped and "ak:INC-7" not in dumped and '"button"' not in dumped
    assert blocks_of(fake.calls_to("webhook")[0], "section")[0]["text"] == {"type": "plain_text", "text": TRICKY,
                                                                           "emoji": True}


@pytest.mark.parametrize(("error", "status"), [("invalid_payload", 400), ("action_prohibited", 403),
                                               ("channel_not_found", 404), ("channel_is_archived", 410)])
async def test_webhook_client_errors_are_final(fake: FakeSlack, http: httpx.AsyncClient, error: str,
                                               status: int) -> None:
    fake.fail_next("webhook", error=error)
    delivery = await post_webhook(http, fake.webhook_url, PROPOSAL)
    assert (delivery.delivered, delivery.retryable) == (False, False)
    assert delivery.detail == f"incoming webhook: HTTP {status}: {error}"


async def test_webhook_with_a_wrong_secret_is_no_service_and_final(fake: FakeSlack, http: httpx.AsyncClient) -> None:
    wrong = fake.webhook_url.rsplit("/", 1)[0] + "/" + "0" * 24
    delivery = await post_webhook(http, wrong, PROPOSAL)
    assert (delivery.delivered, delivery.retryable) == (False, False)
    assert delivery.detail == "incoming webhook: HTTP 404: no_service"
    assert fake.calls_to("webhook") == []


@pytest.mark.parametrize(("status", "retry_after"), [(429, 9), (429, None), (500, None), (503, 4)])
async def test_webhook_rate_limits_and_server_errors_are_retryable(
        fake: FakeSlack, http: httpx.AsyncClient, status: int, retry_after: int | None) -> None:
    fake.fail_next("webhook", status=status, retry_after=retry_after)
    delivery = await post_webhook(http, fake.webhook_url, PROPOSAL)
    assert (delivery.delivered, delivery.retryable) == (False, True)
    expected = float(retry_after) if retry_after is not None else (1.0 if status == 429 else None)
    assert delivery.retry_after == expected
    assert delivery.detail.startswith(f"incoming webhook: HTTP {status}")


async def test_webhook_transport_error_is_retryable(http: httpx.AsyncClient, dead_base_url: str) -> None:
    delivery = await post_webhook(http, f"{dead_base_url}/services/T000/B000/secretsecret", PROPOSAL)
    assert (delivery.delivered, delivery.retryable) == (False, True)
    assert delivery.detail == "incoming webhook: ConnectError"


async def test_the_webhook_secret_never_appears_in_a_detail(fake: FakeSlack, http: httpx.AsyncClient,
                                                            dead_base_url: str) -> None:
    secret = fake.webhook_secret
    fake.fail_next("webhook", status=429, retry_after=1)
    fake.fail_next("webhook", status=503)
    fake.fail_next("webhook", error="channel_is_archived")
    fake.fail_next("webhook", error="action_prohibited")
    fake.fail_next("webhook", status=400, error="invalid_payload")
    details = [(await post_webhook(http, fake.webhook_url, PROPOSAL)).detail for _ in range(6)]
    details.append((await post_webhook(http, fake.webhook_url[:-1] + "x", PROPOSAL)).detail)
    details.append((await post_webhook(http, f"{dead_base_url}/services/T000/B000/{secret}", PROPOSAL)).detail)
    details.append((await post_webhook(http, f"ftp://hooks.example/services/T000/B000/{secret}", PROPOSAL)).detail)
    assert details[5] == "incoming webhook: ok"
    for detail in details:
        assert secret not in detail and "/services/" not in detail


# --------------------------------------------------------------------------------------------
# request signatures
# --------------------------------------------------------------------------------------------

DOC_SECRET = "8f742231b10e8888abcd99yyyzzz85a5"
DOC_TS = "1531420618"
DOC_BODY = (b"token=xyzz0WbapA4vBCDEFasx0q6G&team_id=T1DC2JH3J&team_domain=testteamnow&channel_id=G8PSS9T3V"
            b"&channel_name=foobar&user_id=U2CERLKJA&user_name=roadrunner&command=%2Fwebhook-collect&text="
            b"&response_url=https%3A%2F%2Fhooks.slack.com%2Fcommands%2FT1DC2JH3J%2F397700885554%2F96rGlfmibIGlgcZRskXaIFfN"
            b"&trigger_id=398738663015.47445629121.803a0bc887a14d10d2c447fce8b6703c")
DOC_SIGNATURE = "v0=a2114d57b48eac39b9ad189dd8316235a7b4a8d21a10bd27519666489c69b503"


class FixedClock(Clock):
    def __init__(self, now: float) -> None:
        self._now = now

    def now(self) -> float:
        return self._now


def sdk_accepts(secret: str, body: bytes, timestamp: str | None, signature: str | None, now: float) -> bool:
    """slack_sdk's verdict; its exceptions (a non-numeric timestamp, an empty secret) count as a refusal."""
    try:
        return SignatureVerifier(secret, clock=FixedClock(now)).is_valid(body, timestamp, signature)
    except (ValueError, TypeError):
        return False


def test_the_documented_signature_vector() -> None:
    assert compute_signature(DOC_SECRET, DOC_TS, DOC_BODY) == DOC_SIGNATURE
    assert signature_ok(DOC_SECRET, DOC_TS, DOC_SIGNATURE, DOC_BODY, now=float(DOC_TS))
    assert SignatureVerifier(DOC_SECRET, clock=FixedClock(float(DOC_TS))).is_valid(DOC_BODY, DOC_TS, DOC_SIGNATURE)


def test_the_fakes_signed_headers_are_accepted() -> None:
    body = FakeSlack().block_actions_body(user_id="U0ADA", value="ak:INC-7", channel_id=CHANNEL,
                                          message_ts="1700000000.000100")
    headers = signed_headers(DOC_SECRET, body, 1_700_000_000)
    assert headers["Content-Type"] == "application/x-www-form-urlencoded"
    assert signature_ok(DOC_SECRET, headers["X-Slack-Request-Timestamp"], headers["X-Slack-Signature"], body,
                        now=1_700_000_100.0)


def _flip(signature: str) -> str:
    return signature[:-1] + ("0" if signature[-1] != "0" else "1")


NOW = 1_531_420_618.0
_VALID = compute_signature(DOC_SECRET, DOC_TS, DOC_BODY)
SIGNATURE_CASES = {
    # name: (secret, timestamp, signature, body, now, verdict)
    "valid": (DOC_SECRET, DOC_TS, DOC_SIGNATURE, DOC_BODY, NOW, True),
    "valid, our clock a little ahead": (DOC_SECRET, DOC_TS, DOC_SIGNATURE, DOC_BODY, NOW + 42.5, True),
    "stale: 301 s old": (DOC_SECRET, DOC_TS, DOC_SIGNATURE, DOC_BODY, NOW + 301, False),
    "stale: 301 s in the future": (DOC_SECRET, DOC_TS, DOC_SIGNATURE, DOC_BODY, NOW - 301, False),
    "stale: a day old": (DOC_SECRET, DOC_TS, DOC_SIGNATURE, DOC_BODY, NOW + 86_400, False),
    "just past the edge": (DOC_SECRET, DOC_TS, DOC_SIGNATURE, DOC_BODY, NOW + 300.001, False),
    "exactly 300 s old": (DOC_SECRET, DOC_TS, DOC_SIGNATURE, DOC_BODY, NOW + 300, True),
    "exactly 300 s in the future": (DOC_SECRET, DOC_TS, DOC_SIGNATURE, DOC_BODY, NOW - 300, True),
    "altered body": (DOC_SECRET, DOC_TS, DOC_SIGNATURE, DOC_BODY.replace(b"roadrunner", b"coyote"), NOW, False),
    "body with a byte appended": (DOC_SECRET, DOC_TS, DOC_SIGNATURE, DOC_BODY + b"&", NOW, False),
    "altered signature": (DOC_SECRET, DOC_TS, _flip(DOC_SIGNATURE), DOC_BODY, NOW, False),
    "signature in upper case": (DOC_SECRET, DOC_TS, "v0=" + DOC_SIGNATURE[3:].upper(), DOC_BODY, NOW, False),
    "signature without its v0= prefix": (DOC_SECRET, DOC_TS, DOC_SIGNATURE[3:], DOC_BODY, NOW, False),
    "signature v1": (DOC_SECRET, DOC_TS, "v1=" + DOC_SIGNATURE[3:], DOC_BODY, NOW, False),
    "timestamp altered after signing": (DOC_SECRET, str(int(NOW) + 1), DOC_SIGNATURE, DOC_BODY, NOW, False),
    "wrong secret": ("0" * 32, DOC_TS, DOC_SIGNATURE, DOC_BODY, NOW, False),
    "non-numeric timestamp": (DOC_SECRET, "now", compute_signature(DOC_SECRET, "now", DOC_BODY), DOC_BODY, NOW,
                              False),
    "fractional timestamp": (DOC_SECRET, DOC_TS + ".5", compute_signature(DOC_SECRET, DOC_TS + ".5", DOC_BODY),
                             DOC_BODY, NOW, False),
    "empty timestamp": (DOC_SECRET, "", compute_signature(DOC_SECRET, "", DOC_BODY), DOC_BODY, NOW, False),
    "empty signature": (DOC_SECRET, DOC_TS, "", DOC_BODY, NOW, False),
    "empty body, signed": (DOC_SECRET, DOC_TS, compute_signature(DOC_SECRET, DOC_TS, b""), b"", NOW, True),
    "empty body, signature of another": (DOC_SECRET, DOC_TS, DOC_SIGNATURE, b"", NOW, False),
    "missing timestamp": (DOC_SECRET, None, DOC_SIGNATURE, DOC_BODY, NOW, False),
    "missing signature": (DOC_SECRET, DOC_TS, None, DOC_BODY, NOW, False),
    "missing both": (DOC_SECRET, None, None, DOC_BODY, NOW, False),
    "empty secret": ("", DOC_TS, compute_signature("", DOC_TS, DOC_BODY), DOC_BODY, NOW, False),
}


@pytest.mark.parametrize(("secret", "timestamp", "signature", "body", "now", "verdict"),
                         list(SIGNATURE_CASES.values()), ids=list(SIGNATURE_CASES))
def test_signature_ok_agrees_with_slack_sdks_verifier(secret: str, timestamp: str | None, signature: str | None,
                                                      body: bytes, now: float, verdict: bool) -> None:
    assert signature_ok(secret, timestamp, signature, body, now) is verdict
    assert sdk_accepts(secret, body, timestamp, signature, now) is verdict


@pytest.mark.parametrize("timestamp", [" 1531420618", "+1531420618", "1531420618 ", "0001531420618"])
def test_signature_ok_refuses_padded_timestamps_slack_never_sends(timestamp: str) -> None:
    """slack_sdk parses these with int() and accepts them; our check is stricter on purpose."""
    signature = compute_signature(DOC_SECRET, timestamp, DOC_BODY)
    assert sdk_accepts(DOC_SECRET, DOC_BODY, timestamp, signature, NOW)
    assert not signature_ok(DOC_SECRET, timestamp, signature, DOC_BODY, NOW)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(secret=st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789ABCDEF", min_size=1, max_size=64),
       body=st.text(max_size=300).map(lambda s: s.encode("utf-8")),
       sent_at=st.integers(1_000_000_000, 9_999_999_999),
       skew=st.one_of(st.integers(-400, 400), st.sampled_from([-301, -300, 300, 301]),
                      st.floats(-400, 400, allow_nan=False)),
       tamper=st.sampled_from(["none", "body", "signature", "secret", "timestamp"]))
def test_signature_ok_agrees_with_slack_sdk_on_generated_requests(secret: str, body: bytes, sent_at: int,
                                                                  skew: float, tamper: str) -> None:
    timestamp = str(sent_at)
    signature = SignatureVerifier(secret).generate_signature(timestamp=timestamp, body=body)
    assert signature is not None
    checked_body, checked_ts, checked_secret = body, timestamp, secret
    if tamper == "body":
        checked_body = body + b"x"
    elif tamper == "signature":
        signature = _flip(signature)
    elif tamper == "secret":
        checked_secret = secret + "x"
    elif tamper == "timestamp":
        checked_ts = str(sent_at + 1)
    now = sent_at + skew
    ours = signature_ok(checked_secret, checked_ts, signature, checked_body, now)
    assert ours == sdk_accepts(checked_secret, checked_body, checked_ts, signature, now)
    assert ours == (tamper == "none" and abs(now - sent_at) <= 300)


# --------------------------------------------------------------------------------------------
# interaction payloads
# --------------------------------------------------------------------------------------------

async def test_parse_interaction_reads_a_realistic_block_actions_payload(fake: FakeSlack, client: SlackClient) -> None:
    posted = await client.post_message(CHANNEL, PROPOSAL)
    ts = posted.provider_id.split(":")[1]
    body = fake.block_actions_body(user_id="U0ADA", value=f"ap:{REF}:n", channel_id=CHANNEL, message_ts=ts,
                                   user_name="ada.lovelace")
    press = parse_interaction(body)
    assert press is not None
    assert (press.user_id, press.user_name, press.team_id, press.value, press.channel_id, press.message_ts) == (
        "U0ADA", "ada.lovelace", "T000", f"ap:{REF}:n", CHANNEL, ts)


async def test_the_fake_builds_the_press_from_the_stored_button(fake: FakeSlack, client: SlackClient) -> None:
    posted = await client.post_message(CHANNEL, PROPOSAL)
    ts = posted.provider_id.split(":")[1]
    body = fake.block_actions_body(user_id="U0ADA", value=f"ap:{REF}:n", channel_id=CHANNEL, message_ts=ts)
    (raw,) = parse_qs(body.decode())["payload"]
    doc = json.loads(raw)
    (action,) = doc["actions"]
    (body_sent,) = fake.calls_to("chat.postMessage")
    (reject,) = [b for b in blocks_of(body_sent, "actions")[0]["elements"] if b["value"] == f"ap:{REF}:n"]
    assert (action["action_id"], action["text"]["text"], action["type"]) == (reject["action_id"], "Reject", "button")
    assert doc["type"] == "block_actions" and doc["container"]["is_ephemeral"] is False
    assert doc["message"]["ts"] == ts and doc["channel"] == {"id": CHANNEL, "name": "alerts"}


async def test_parse_interaction_of_a_direct_message_names_the_dm_channel(fake: FakeSlack,
                                                                         client: SlackClient) -> None:
    posted = await client.post_message("U0ADA", NEWS)
    channel, ts = posted.provider_id.split(":")
    press = parse_interaction(fake.block_actions_body(user_id="U0ADA", value="ak:INC-7", channel_id=channel,
                                                      message_ts=ts))
    assert press is not None and (press.channel_id, press.message_ts, press.value) == ("D0ADA", ts, "ak:INC-7")


def test_a_value_of_2000_characters_is_read() -> None:
    body = FakeSlack().block_actions_body(user_id="U0ADA", value="v" * 2000, channel_id=CHANNEL,
                                          message_ts="1700000000.000100")
    press = parse_interaction(body)
    assert press is not None and press.value == "v" * 2000


def _form(doc: Any) -> bytes:
    return urlencode({"payload": doc if isinstance(doc, str) else json.dumps(doc)}).encode()


def _press(**changes: Any) -> dict[str, Any]:
    body = FakeSlack().block_actions_body(user_id="U0ADA", value="ak:INC-7", channel_id=CHANNEL,
                                          message_ts="1700000000.000100")
    doc = json.loads(parse_qs(body.decode())["payload"][0])
    for key, value in changes.items():
        if value is None:
            doc.pop(key, None)
        else:
            doc[key] = value
    return doc


@pytest.mark.parametrize("kind", ["view_submission", "view_closed", "shortcut", "message_action",
                                  "block_suggestion", "interactive_message"])
def test_other_interaction_types_give_none(kind: str) -> None:
    doc = {"type": kind, "user": {"id": "U0ADA", "username": "ada", "name": "ada", "team_id": "T000"},
           "team": {"id": "T000", "domain": "x"}, "api_app_id": "A0APP", "token": "t", "trigger_id": "1.2.3"}
    if kind == "view_submission":
        doc["view"] = {"id": "V0", "type": "modal", "state": {"values": {}}}
    assert parse_interaction(_form(doc)) is None


@pytest.mark.parametrize(("body", "match"), [
    (b"\xff\xfepayload", "not form data"),
    (b'{"type": "block_actions"}', "not form data"),
    (b"payload", "not form data"),
    (b"", "no single payload field"),
    (b"foo=bar", "no single payload field"),
    (b"payload=", "no single payload field"),
    (_form(_press()) + b"&" + _form(_press()), "no single payload field"),
    (_form("{not json"), "payload is not JSON"),
    (_form("[1, 2]"), "not an object with a type"),
    (_form({"user": {"id": "U0ADA"}}), "not an object with a type"),
    (_form(_press(user=None)), r"payload\.user\.id"),
    (_form(_press(user={"name": "ada"})), r"payload\.user\.id"),
    (_form(_press(user={"id": ""})), r"payload\.user\.id"),
    (_form(_press(actions=None)), r"payload\.actions"),
    (_form(_press(actions=[])), r"payload\.actions"),
    (_form(_press(actions=["ak:INC-7"])), r"payload\.actions"),
    (_form(_press(actions=[{"action_id": "ae0", "type": "button"}])), r"payload\.actions\[0\]\.value"),
    (_form(_press(actions=[{"action_id": "ae0", "type": "button", "value": ""}])), r"payload\.actions\[0\]\.value"),
    (_form(_press(actions=[{"action_id": "ae0", "type": "button", "value": "v" * 2001}])),
     r"payload\.actions\[0\]\.value"),
    (_form(_press(actions=[{"action_id": "ae0", "type": "button", "value": 7}])), r"payload\.actions\[0\]\.value"),
    (b"&".join([b"a=1"] * 11) + b"&" + _form(_press()), "not form data"),
])
def test_malformed_interaction_bodies_raise_value_error_naming_the_problem(body: bytes, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        parse_interaction(body)


def test_percent_encoded_payload_with_plus_signs_for_spaces_is_read() -> None:
    doc = _press()
    doc["actions"][0]["value"] = "ap:abcdef123456:y"
    doc["user"]["name"] = "ada lovelace"
    body = ("payload=" + quote(json.dumps(doc), safe="").replace("%20", "+")).encode()
    press = parse_interaction(body)
    assert press is not None and press.user_name == "ada lovelace" and press.value == "ap:abcdef123456:y"


# --------------------------------------------------------------------------------------------
# the fake refuses what Slack refuses (so the deliveries above mean something)
# --------------------------------------------------------------------------------------------

async def _api(fake: FakeSlack, http: httpx.AsyncClient, method: str, body: dict[str, Any],
               token: str | None = "fake") -> dict[str, Any]:
    headers = {} if token is None else {"Authorization": f"Bearer {fake.token if token == 'fake' else token}"}
    response = await http.post(f"{fake.base_url}/api/{method}", json=body, headers=headers)
    assert response.status_code == 200
    return response.json()


def _section(text: str) -> dict[str, Any]:
    return {"type": "section", "text": {"type": "plain_text", "text": text}}


def _button(action_id: str, value: str = "v") -> dict[str, Any]:
    return {"type": "button", "action_id": action_id, "text": {"type": "plain_text", "text": "Go"}, "value": value}


async def test_fake_answers_not_authed_and_invalid_auth(fake: FakeSlack, http: httpx.AsyncClient) -> None:
    body = {"channel": CHANNEL, "text": "hi"}
    assert await _api(fake, http, "chat.postMessage", body, token=None) == {"ok": False, "error": "not_authed"}
    assert await _api(fake, http, "chat.postMessage", body, token="xoxb-nope") == {"ok": False,
                                                                                   "error": "invalid_auth"}
    assert fake.unauthorized == 2 and fake.calls_to("chat.postMessage") == []


@pytest.mark.parametrize(("blocks", "error"), [
    ([_section("x" * 3001)], "invalid_blocks"),
    ([{"type": "header", "text": {"type": "plain_text", "text": "x" * 151}}], "invalid_blocks"),
    ([{"type": "header", "text": {"type": "mrkdwn", "text": "*x*"}}], "invalid_blocks"),
    ([{"type": "section", "text": {"type": "html", "text": "x"}}], "invalid_blocks"),
    ([{"text": "no type"}], "invalid_blocks"),
    ([{"type": "actions", "elements": [_button("a"), _button("a")]}], "invalid_blocks"),
    ([{"type": "actions", "elements": [{"type": "button", "text": {"type": "plain_text", "text": "Go"}}]}],
     "invalid_blocks"),
    ([{"type": "actions", "elements": [_button("a", "v" * 2001)]}], "invalid_blocks"),
    ("not a list", "invalid_blocks_format"),
])
async def test_fake_refuses_invalid_block_kit(fake: FakeSlack, http: httpx.AsyncClient, blocks: Any,
                                              error: str) -> None:
    doc = await _api(fake, http, "chat.postMessage", {"channel": CHANNEL, "text": "hi", "blocks": blocks})
    assert (doc["ok"], doc["error"]) == (False, error)
    assert fake.messages_in(CHANNEL) == []


async def test_fake_needs_text_or_blocks(fake: FakeSlack, http: httpx.AsyncClient) -> None:
    assert await _api(fake, http, "chat.postMessage", {"channel": CHANNEL}) == {"ok": False, "error": "no_text"}
    doc = await _api(fake, http, "chat.postMessage", {"channel": CHANNEL, "blocks": [_section("only blocks")]})
    assert doc["ok"] is True and doc["channel"] == CHANNEL and TS.fullmatch(doc["ts"])
    assert doc["message"]["blocks"] == [_section("only blocks")]


@pytest.mark.parametrize(("content", "ctype", "status", "word"), [
    (b'{"text": "hi"}', "application/json", 200, "ok"),
    (b"not json", "application/json", 400, "invalid_payload"),
    (b'{"username": "x"}', "application/json", 400, "invalid_payload"),
    (b'{"text": "hi", "blocks": [{"type": "header", "text": {"type": "mrkdwn", "text": "x"}}]}',
     "application/json", 400, "invalid_blocks"),
])
async def test_fake_webhook_answers_in_plain_words(fake: FakeSlack, http: httpx.AsyncClient, content: bytes,
                                                   ctype: str, status: int, word: str) -> None:
    response = await http.post(fake.webhook_url, content=content, headers={"Content-Type": ctype})
    assert (response.status_code, response.text) == (status, word)
    assert response.headers["content-type"].startswith("text/plain")
