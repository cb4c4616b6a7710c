"""The Telegram channel against a local fake Bot API: client, retries, token hygiene, webhook callback parsing."""

from __future__ import annotations

import json
import logging
import socket
import ssl
import statistics
import threading
import time
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Iterator

import httpx
import pytest

from alertengine.notify.channels.base import Delivery, RetryPolicy, deliver_with_retries
from alertengine.notify.channels.telegram import (
    CallbackQuery,
    TelegramClient,
    parse_callback,
    secret_token_ok,
)
from tests.fakes.telegram import NOT_MODIFIED, FakeTelegram, fake_telegram  # noqa: F401 — fixture

CHAT = -100123
BUTTONS = [[("Approve", "ap:INC42:y"), ("Reject", "ap:INC42:n")]]
KEYBOARD = {"inline_keyboard": [[{"text": "Approve", "callback_data": "ap:INC42:y"},
                                 {"text": "Reject", "callback_data": "ap:INC42:n"}]]}
# the example Update of the Telegram Bot API documentation, verbatim
PROTOCOLS_UPDATE = json.loads("""
{"update_id":900001,"callback_query":{"id":"4382bf1","from":{"id":111,"is_bot":false,"first_name":"Ann"},
 "message":{"message_id":42,"date":1760000000,"chat":{"id":-100123,"type":"supergroup","title":"ops"},
  "text":"INC-42 disk full","reply_markup":{"inline_keyboard":[[{"text":"Approve","callback_data":"ap:INC42:y"}]]}},
 "chat_instance":"-8812","data":"ap:INC42:y"}}
""")


@pytest.fixture
def fake(fake_telegram: FakeTelegram) -> FakeTelegram:  # noqa: F811 — the imported fixture
    return fake_telegram


TLS = ssl.create_default_context()      # built once: loading the CA bundle per client is the slow part


@pytest.fixture
def client(fake: FakeTelegram, http: httpx.AsyncClient) -> TelegramClient:
    return TelegramClient(fake.base_url, fake.token, http)


class SleepRecorder:
    """Stands in for asyncio.sleep: records the waits instead of waiting."""

    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.delays.append(seconds)


# --------------------------------------------------------------------------------------------
# sendMessage
# --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("chat_id", [CHAT, str(CHAT)])
async def test_send_message_with_buttons_round_trips_as_plain_text_with_an_inline_keyboard(
        fake: FakeTelegram, client: TelegramClient, chat_id: int | str) -> None:
    delivery = await client.send_message(chat_id, "INC-42 disk full", BUTTONS)
    assert delivery == Delivery(True, False, "sendMessage: sent", provider_id=f"{CHAT}:1")
    assert fake.calls == [("sendMessage", {"chat_id": chat_id, "text": "INC-42 disk full", "reply_markup": KEYBOARD})]
    assert fake.messages[(CHAT, 1)]["reply_markup"] == KEYBOARD


async def test_message_ids_in_provider_ids_increase(client: TelegramClient) -> None:
    first = await client.send_message(CHAT, "one")
    second = await client.send_message(CHAT, "two")
    assert (first.provider_id, second.provider_id) == (f"{CHAT}:1", f"{CHAT}:2")


@pytest.mark.parametrize("text", ["disk_usage_pct *critical* on <db-1>", "[link](http://x) `code` \\ &amp;",
                                  "_unclosed *markdown", "<b>unclosed html"])
async def test_formatting_characters_are_sent_verbatim_without_parse_mode(
        fake: FakeTelegram, client: TelegramClient, text: str) -> None:
    assert (await client.send_message(CHAT, text)).delivered
    (_, params), = fake.calls
    assert "parse_mode" not in params
    assert fake.messages[(CHAT, 1)]["text"] == text


@pytest.mark.parametrize(("length", "sent_length", "cut"), [
    (1, 1, False), (4096, 4096, False), (4097, 4096, True), (50_000, 4096, True),
])
async def test_text_over_4096_characters_is_cut_with_an_ellipsis(
        fake: FakeTelegram, client: TelegramClient, length: int, sent_length: int, cut: bool) -> None:
    text = ("🚨" + "x" * (length - 1))
    assert (await client.send_message(CHAT, text)).delivered
    stored = fake.messages[(CHAT, 1)]["text"]
    assert len(stored) == sent_length
    assert stored.endswith("…") is cut
    assert stored[:-1] == text[:sent_length - 1]


@pytest.mark.parametrize("text", ["", " ", "\n\t "])
async def test_blank_text_is_refused_before_sending(fake: FakeTelegram, client: TelegramClient, text: str) -> None:
    with pytest.raises(ValueError, match="empty"):
        await client.send_message(CHAT, text)
    assert fake.calls == []


@pytest.mark.parametrize(("data", "size"), [
    ("a" * 64, 64),
    ("é" * 32, 64),             # 2 bytes each: 32 characters, 64 bytes
    ("€" * 21 + "x", 64),       # 3 bytes each
    ("🚨" * 16, 64),            # 4 bytes each: 16 characters
])
async def test_callback_data_of_64_utf8_bytes_is_accepted_by_us_and_telegram(
        fake: FakeTelegram, client: TelegramClient, data: str, size: int) -> None:
    assert len(data.encode()) == size
    delivery = await client.send_message(CHAT, "pick", [[("Pick", data)]])
    assert delivery.delivered, delivery.detail
    assert fake.messages[(CHAT, 1)]["reply_markup"]["inline_keyboard"][0][0]["callback_data"] == data


@pytest.mark.parametrize(("data", "size"), [
    ("a" * 65, 65),
    ("é" * 32 + "x", 65),       # 33 characters, but 65 bytes
    ("€" * 22, 66),             # 22 characters
    ("🚨" * 16 + "a", 65),      # 17 characters
    ("", 0),
])
async def test_callback_data_outside_1_to_64_bytes_is_refused_locally_naming_the_button(
        fake: FakeTelegram, client: TelegramClient, data: str, size: int) -> None:
    buttons = [[("Approve", "ap:1:y")], [("Runbook", "rb:1"), ("Too big", data)]]
    with pytest.raises(ValueError, match=rf"'Too big' \(row 2, column 2\): callback_data is {size} UTF-8 bytes"):
        await client.send_message(CHAT, "pick", buttons)
    assert fake.calls == []


@pytest.mark.parametrize("buttons", [[[]], [[("", "x")]], [[("label",)]], [["ab"]], "ab", [[("a", 1)]]])
async def test_malformed_buttons_are_refused_locally(fake: FakeTelegram, client: TelegramClient,
                                                     buttons: Any) -> None:
    with pytest.raises(ValueError, match="button"):
        await client.send_message(CHAT, "pick", buttons)
    assert fake.calls == []


@pytest.mark.parametrize("chat_id", ["", "abc", "12a", True, 1.5, None])
async def test_invalid_chat_ids_are_refused_locally(fake: FakeTelegram, client: TelegramClient,
                                                    chat_id: Any) -> None:
    with pytest.raises(ValueError, match="chat_id"):
        await client.send_message(chat_id, "hi")
    assert fake.calls == []


# --------------------------------------------------------------------------------------------
# failures, classification and retries
# --------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("injected", "retry_after"), [
    (dict(retry_after=2), 2.0),                                         # Telegram's parameters.retry_after
    (dict(headers={"Retry-After": "3"}), 3.0),                          # only the HTTP header
    (dict(retry_after=2, headers={"Retry-After": "30"}), 2.0),          # the envelope wins
    (dict(), None),                                                     # no hint at all
])
async def test_429_is_retryable_with_the_providers_retry_after(
        fake: FakeTelegram, client: TelegramClient, injected: dict, retry_after: float | None) -> None:
    fake.fail_next("sendMessage", status=429, **injected)
    delivery = await client.send_message(CHAT, "hi")
    assert (delivery.delivered, delivery.retryable, delivery.retry_after) == (False, True, retry_after)
    assert delivery.detail.startswith("sendMessage: HTTP 429: Too Many Requests")


async def test_after_a_429_the_retry_waits_at_least_retry_after_then_delivers(
        fake: FakeTelegram, client: TelegramClient) -> None:
    fake.fail_next("sendMessage", status=429, retry_after=2)
    sleep = SleepRecorder()
    delivery, attempts = await deliver_with_retries(lambda: client.send_message(CHAT, "hi"),
                                                    RetryPolicy(attempts=3, base_delay=0.5), sleep)
    assert delivery.delivered and attempts == 2
    assert len(sleep.delays) == 1 and sleep.delays[0] >= 2
    assert len(fake.calls_to("sendMessage")) == 2


async def test_a_retry_after_beyond_max_delay_is_handed_back_instead_of_slept(
        fake: FakeTelegram, client: TelegramClient) -> None:
    fake.fail_next("sendMessage", status=429, retry_after=41)
    sleep = SleepRecorder()
    delivery, attempts = await deliver_with_retries(lambda: client.send_message(CHAT, "hi"),
                                                    RetryPolicy(attempts=5, max_delay=30), sleep)
    assert (delivery.delivered, delivery.retryable, delivery.retry_after, attempts) == (False, True, 41.0, 1)
    assert sleep.delays == []


@pytest.mark.parametrize("injected", [dict(status=500), dict(status=502, body=b"<html>502 Bad Gateway</html>"),
                                      dict(status=503)])
async def test_a_server_error_is_retried_and_then_delivers(fake: FakeTelegram, client: TelegramClient,
                                                           injected: dict) -> None:
    fake.fail_next("sendMessage", **injected)
    sleep = SleepRecorder()
    delivery, attempts = await deliver_with_retries(lambda: client.send_message(CHAT, "hi"),
                                                    RetryPolicy(attempts=3, base_delay=0.5), sleep)
    assert delivery.delivered and attempts == 2
    assert len(sleep.delays) == 1 and 0 <= sleep.delays[0] <= 0.5


async def test_retries_stop_when_the_attempts_run_out(fake: FakeTelegram, client: TelegramClient) -> None:
    for _ in range(3):
        fake.fail_next("sendMessage", status=500)
    sleep = SleepRecorder()
    delivery, attempts = await deliver_with_retries(lambda: client.send_message(CHAT, "hi"),
                                                    RetryPolicy(attempts=3, base_delay=0.5), sleep)
    assert (delivery.delivered, delivery.retryable, attempts) == (False, True, 3)
    assert len(sleep.delays) == 2 and len(fake.calls) == 3
    assert sleep.delays[0] <= 0.5 and sleep.delays[1] <= 1.0


@pytest.mark.parametrize(("status", "description"), [
    (400, "Bad Request: chat not found"),
    (403, "Forbidden: bot was blocked by the user"),
    (409, "Conflict: terminated by other getUpdates request"),
])
async def test_a_client_error_is_not_retried_and_says_why(fake: FakeTelegram, client: TelegramClient,
                                                          status: int, description: str) -> None:
    fake.fail_next("sendMessage", status=status, description=description)
    sleep = SleepRecorder()
    delivery, attempts = await deliver_with_retries(lambda: client.send_message(CHAT, "hi"), RetryPolicy(), sleep)
    assert delivery == Delivery(False, False, f"sendMessage: HTTP {status}: {description}")
    assert attempts == 1 and sleep.delays == [] and len(fake.calls) == 1


@pytest.mark.parametrize(("status", "retryable"), [
    (400, False), (401, False), (403, False), (404, False), (409, False), (429, True),
    (500, True), (502, True), (503, True), (504, True),
])
async def test_statuses_are_classified_as_retryable_or_final(fake: FakeTelegram, client: TelegramClient,
                                                             status: int, retryable: bool) -> None:
    fake.fail_next("sendMessage", status=status)
    delivery = await client.send_message(CHAT, "hi")
    assert (delivery.delivered, delivery.retryable) == (False, retryable)
    assert f"HTTP {status}" in delivery.detail


async def test_a_supergroup_migration_is_final_and_names_the_new_chat(fake: FakeTelegram,
                                                                      client: TelegramClient) -> None:
    fake.fail_next("sendMessage", status=400, body=json.dumps({
        "ok": False, "error_code": 400, "description": "Bad Request: group chat was upgraded to a supergroup chat",
        "parameters": {"migrate_to_chat_id": -1001234567890}}).encode())
    delivery = await client.send_message(CHAT, "hi")
    assert not delivery.retryable
    assert delivery.detail.endswith("supergroup chat (migrate_to_chat_id=-1001234567890)")


async def test_a_closed_port_is_a_retryable_transport_failure(dead_base_url: str, http: httpx.AsyncClient) -> None:
    client = TelegramClient(dead_base_url, "123456:SECRET-token_value", http)
    delivery = await client.send_message(CHAT, "hi")
    assert (delivery.delivered, delivery.retryable, delivery.provider_id) == (False, True, None)
    assert delivery.detail.startswith("sendMessage: ConnectError")


async def test_a_wrong_token_is_a_final_unauthorized(fake: FakeTelegram, http: httpx.AsyncClient) -> None:
    client = TelegramClient(fake.base_url + "/", "123:not-the-fakes-token", http)
    delivery = await client.send_message(CHAT, "hi")
    assert delivery == Delivery(False, False, "sendMessage: HTTP 401: Unauthorized")
    assert fake.calls == [] and fake.unauthorized == 1


# --------------------------------------------------------------------------------------------
# the token stays secret
# --------------------------------------------------------------------------------------------

class UrlQuotingTransport(httpx.AsyncHTTPTransport):
    """A real transport whose errors quote the request URL, as some proxies and transports do."""

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        try:
            return await super().handle_async_request(request)
        except httpx.TransportError as exc:
            raise type(exc)(f"{exc} while calling {request.url}", request=request) from exc


TOKEN = "987654321:AAH-very_secret-token-0123456789abcd"


@pytest.mark.parametrize("case", ["wrong token", "closed port", "url-quoting transport", "500", "400 echo"])
async def test_the_bot_token_never_appears_in_a_failure_detail(fake: FakeTelegram, dead_base_url: str,
                                                               case: str) -> None:
    base, token, transport = fake.base_url, fake.token, None
    if case == "wrong token":
        token = TOKEN
    elif case == "closed port":
        base = dead_base_url
    elif case == "url-quoting transport":
        base, transport = dead_base_url, UrlQuotingTransport()
    elif case == "500":
        fake.fail_next("sendMessage", status=500)
    elif case == "400 echo":                    # even a provider that echoes the URL back is scrubbed
        fake.fail_next("sendMessage", status=400, description=f"Bad Request: no such path /bot{token}/sendMessage")
    async with httpx.AsyncClient(transport=transport, verify=TLS) as http:
        delivery = await TelegramClient(base, token, http).send_message(CHAT, "hi")
    assert not delivery.delivered
    assert token not in delivery.detail and token.split(":")[1] not in delivery.detail
    if case in ("url-quoting transport", "400 echo"):
        assert "/bot<bot-token>/sendMessage" in delivery.detail


async def test_the_bot_token_never_appears_in_log_lines(fake: FakeTelegram, client: TelegramClient,
                                                        dead_base_url: str, http: httpx.AsyncClient,
                                                        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    fake.fail_next("sendMessage", status=500)
    await client.send_message(CHAT, "first")
    await client.send_message(CHAT, "second")
    await TelegramClient(dead_base_url, fake.token, http).send_message(CHAT, "third")
    assert "HTTP Request: POST" in caplog.text           # httpx did log the request URLs…
    assert "/bot<bot-token>/sendMessage" in caplog.text   # …with the token replaced
    assert fake.token not in caplog.text
    assert fake.token.split(":")[1] not in caplog.text


@pytest.mark.parametrize("token", ["", "has space", "a/b", "a?b", "tok\n"])
async def test_a_token_that_cannot_go_in_a_url_is_refused_without_echoing_it(http: httpx.AsyncClient,
                                                                              token: str) -> None:
    with pytest.raises(ValueError, match="bot token") as info:
        TelegramClient("https://api.telegram.org", token, http)
    assert not token or token not in str(info.value)


async def test_the_client_repr_hides_the_token(client: TelegramClient, fake: FakeTelegram) -> None:
    assert fake.token not in repr(client) and "<bot-token>" in repr(client)


# --------------------------------------------------------------------------------------------
# editMessageText, answerCallbackQuery, webhooks
# --------------------------------------------------------------------------------------------

async def test_editing_to_the_same_text_and_buttons_counts_as_delivered(fake: FakeTelegram,
                                                                        client: TelegramClient) -> None:
    sent = await client.send_message(CHAT, "INC-42 disk full", BUTTONS)
    message_id = int(sent.provider_id.split(":")[1])  # type: ignore[union-attr]
    # no injected failure: the fake itself answers 400 "message is not modified"
    delivery = await client.edit_message(CHAT, message_id, "INC-42 disk full", BUTTONS)
    assert delivery.delivered and not delivery.retryable and "not modified" in delivery.detail
    assert delivery.provider_id == f"{CHAT}:{message_id}"
    assert len(fake.calls_to("editMessageText")) == 1


async def test_editing_changes_the_text_and_without_buttons_removes_the_keyboard(fake: FakeTelegram,
                                                                                 client: TelegramClient) -> None:
    await client.send_message(CHAT, "INC-42 disk full", BUTTONS)
    delivery = await client.edit_message(CHAT, 1, "INC-42 approved by Ann")
    assert delivery == Delivery(True, False, "editMessageText: edited", provider_id=f"{CHAT}:1")
    assert fake.messages[(CHAT, 1)]["text"] == "INC-42 approved by Ann"
    assert "reply_markup" not in fake.messages[(CHAT, 1)]


@pytest.mark.parametrize(("chat_id", "message_id"), [(CHAT, 999), (-100999, 1)])
async def test_editing_a_missing_message_is_a_final_failure(client: TelegramClient, chat_id: int,
                                                            message_id: int) -> None:
    await client.send_message(CHAT, "INC-42 disk full")
    delivery = await client.edit_message(chat_id, message_id, "x")
    assert (delivery.delivered, delivery.retryable) == (False, False)
    assert delivery.detail == "editMessageText: HTTP 400: Bad Request: message to edit not found"


async def test_a_not_modified_injected_by_description_is_also_delivered(fake: FakeTelegram,
                                                                        client: TelegramClient) -> None:
    fake.fail_next("editMessageText", status=400, description=NOT_MODIFIED)
    assert (await client.edit_message(CHAT, 7, "x")).delivered


async def test_a_callback_is_answered_once(fake: FakeTelegram, client: TelegramClient) -> None:
    query_id = fake.callback_update(user_id=111, data="ap:1:y", chat_id=CHAT, message_id=1)["callback_query"]["id"]
    first = await client.answer_callback(query_id, "Approved ✓")
    again = await client.answer_callback(query_id, "Approved ✓")
    assert first == Delivery(True, False, "answerCallbackQuery: answered")
    assert (again.delivered, again.retryable) == (False, False) and "query is too old" in again.detail
    assert fake.answered == [(query_id, {"callback_query_id": query_id, "text": "Approved ✓"})]


async def test_a_long_callback_answer_is_cut_to_200_characters(fake: FakeTelegram, client: TelegramClient) -> None:
    query_id = fake.callback_update(user_id=111, data="x", chat_id=CHAT, message_id=1)["callback_query"]["id"]
    assert (await client.answer_callback(query_id, "y" * 500)).delivered
    (_, params), = fake.answered
    assert len(params["text"]) == 200 and params["text"].endswith("…")


async def test_set_webhook_sends_url_secret_and_allowed_updates(fake: FakeTelegram, client: TelegramClient) -> None:
    url = "https://appliance.example/telegram/webhook/acme"
    delivery = await client.set_webhook(url, "s3cret_TOKEN-value")
    assert delivery == Delivery(True, False, "setWebhook: Webhook was set")
    assert fake.calls == [("setWebhook", {"url": url, "secret_token": "s3cret_TOKEN-value",
                                          "allowed_updates": ["message", "callback_query"]})]
    assert fake.webhook == {"url": url, "secret_token": "s3cret_TOKEN-value",
                            "allowed_updates": ["message", "callback_query"]}
    assert await client.delete_webhook() == Delivery(True, False, "deleteWebhook: Webhook was deleted")
    assert fake.webhook is None and fake.calls[-1] == ("deleteWebhook", {})


@pytest.mark.parametrize("secret", ["", "has space", "ünïcode", "x" * 257, "semi;colon"])
async def test_an_invalid_webhook_secret_is_refused_locally_without_echoing_it(
        fake: FakeTelegram, client: TelegramClient, secret: str) -> None:
    with pytest.raises(ValueError, match="secret_token") as info:
        await client.set_webhook("https://appliance.example/hook", secret)
    assert not secret or secret not in str(info.value)
    assert fake.calls == []


# --------------------------------------------------------------------------------------------
# the webhook side: parse_callback and secret_token_ok
# --------------------------------------------------------------------------------------------

def test_the_protocols_example_update_parses_to_a_callback_query() -> None:
    assert parse_callback(PROTOCOLS_UPDATE) == CallbackQuery(
        id="4382bf1", user_id=111, user_name="Ann", chat_id=-100123, message_id=42, data="ap:INC42:y")


def _with(query_changes: dict[str, Any], drop: tuple[str, ...] = ()) -> dict[str, Any]:
    update = json.loads(json.dumps(PROTOCOLS_UPDATE))
    update["callback_query"].update(query_changes)
    for key in drop:
        del update["callback_query"][key]
    return update


@pytest.mark.parametrize(("update", "expected"), [
    (_with({"from": {"id": 5, "is_bot": False, "first_name": "Ann", "last_name": "Lee"}}), ("Ann Lee", -100123, 42)),
    (_with({"inline_message_id": "AAA"}, drop=("message",)), ("Ann", None, None)),           # inline-mode message
    (_with({"message": {"message_id": 42, "date": 0, "chat": {"id": -100123, "type": "supergroup"}}}),
     ("Ann", -100123, 42)),                                                                  # inaccessible message
    (_with({"extra_future_field": {"x": 1}}), ("Ann", -100123, 42)),                        # unknown fields ignored
])
def test_callback_variants_parse(update: dict, expected: tuple) -> None:
    query = parse_callback(update)
    assert query is not None and (query.user_name, query.chat_id, query.message_id) == expected


@pytest.mark.parametrize("update", [
    {"update_id": 1, "message": {"message_id": 1, "date": 1, "chat": {"id": 1, "type": "private"}, "text": "/start"}},
    {"update_id": 2, "edited_message": {"message_id": 1, "date": 1, "chat": {"id": 1, "type": "private"}}},
    {"update_id": 3},
    _with({"game_short_name": "tetris"}, drop=("data",)),
])
def test_updates_other_than_button_presses_are_none(update: dict) -> None:
    assert parse_callback(update) is None


@pytest.mark.parametrize(("update", "words"), [
    (None, "not a JSON object"),
    ([PROTOCOLS_UPDATE], "not a JSON object"),
    ("{}", "not a JSON object"),
    ({"callback_query": PROTOCOLS_UPDATE["callback_query"]}, "update_id"),
    ({"update_id": True, "callback_query": PROTOCOLS_UPDATE["callback_query"]}, "update_id"),
    ({"update_id": 1, "callback_query": "x"}, "callback_query is not an object"),
    (_with({"id": 4382}), "callback_query.id"),
    (_with({"id": ""}), "callback_query.id"),
    (_with({}, drop=("from",)), "callback_query.from"),
    (_with({"from": {"id": "111", "first_name": "Ann"}}), "from.id"),
    (_with({"from": {"id": True, "first_name": "Ann"}}), "from.id"),
    (_with({"from": {"id": 111}}), "first_name"),
    (_with({"message": {"message_id": 42}}), "callback_query.message"),
    (_with({"message": {"message_id": "42", "chat": {"id": 1}}}), "callback_query.message"),
    (_with({}, drop=("data",)), "neither data nor game_short_name"),
    (_with({"data": 7}), "callback_query.data"),
    (_with({"data": ""}), "callback_query.data"),
    (_with({"data": "é" * 33}), "callback_query.data"),
])
def test_malformed_updates_raise_a_clear_value_error(update: object, words: str) -> None:
    with pytest.raises(ValueError, match=words.replace(".", r"\.")):
        parse_callback(update)


@pytest.mark.parametrize(("header", "expected", "ok"), [
    ("s3cret", "s3cret", True),
    ("s3cret", "s3creT", False),
    ("s3cret ", "s3cret", False),
    ("s3cre", "s3cret", False),
    ("", "s3cret", False),
    (None, "s3cret", False),
    ("s3cret", "", False),
    ("", "", False),
    (None, "", False),
    ("ключ", "ключ", True),          # non-ASCII never raises
    ("ключ", "s3cret", False),
])
def test_the_secret_header_must_match_exactly_and_empty_never_matches(header: str | None, expected: str,
                                                                      ok: bool) -> None:
    assert secret_token_ok(header, expected) is ok


@contextmanager
def webhook_receiver(secret: str) -> Iterator[tuple[str, list[CallbackQuery]]]:
    """A minimal appliance webhook on 127.0.0.1: checks the secret header, then parses the update."""
    received: list[CallbackQuery] = []

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 — quiet
            pass

        def do_POST(self) -> None:  # noqa: N802
            body = self.rfile.read(int(self.headers["Content-Length"]))
            if not secret_token_ok(self.headers.get("X-Telegram-Bot-Api-Secret-Token"), secret):
                code = 401
            else:
                query = parse_callback(json.loads(body))
                if query is not None:
                    received.append(query)
                code = 200
            self.send_response(code)
            self.send_header("Content-Length", "0")
            self.end_headers()

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}/telegram/webhook", received
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(5)


async def test_a_button_press_reaches_the_webhook_and_is_answered(fake: FakeTelegram,
                                                                  client: TelegramClient) -> None:
    sent = await client.send_message(CHAT, "INC-42 disk full", BUTTONS)
    chat_id, message_id = (int(part) for part in sent.provider_id.split(":"))  # type: ignore[union-attr]
    with webhook_receiver("hook_secret") as (url, received):
        forged = await fake.send_callback(url, "wrong", user_id=111, data="ap:INC42:y", chat_id=chat_id,
                                          message_id=message_id)
        response = await fake.send_callback(url, "hook_secret", user_id=111, data="ap:INC42:y", chat_id=chat_id,
                                            message_id=message_id)
    assert (forged.status_code, response.status_code) == (401, 200)
    query, = received
    assert (query.user_id, query.user_name, query.chat_id, query.message_id, query.data) == (
        111, "Ann", CHAT, message_id, "ap:INC42:y")
    assert (await client.answer_callback(query.id, "Approved")).delivered


async def test_the_fake_posts_updates_only_to_loopback(fake: FakeTelegram) -> None:
    with pytest.raises(ValueError, match="loopback"):
        await fake.send_callback("https://example.com/hook", "s", user_id=1, data="x", chat_id=1, message_id=1)


# --------------------------------------------------------------------------------------------
# the fake itself speaks the wire format
# --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("encoding", ["json", "form"])
@pytest.mark.parametrize(("data", "status"), [("é" * 32, 200), ("é" * 32 + "x", 400)])
async def test_the_fake_counts_callback_data_in_bytes_in_json_and_forms(
        fake: FakeTelegram, http: httpx.AsyncClient, encoding: str, data: str, status: int) -> None:
    markup = {"inline_keyboard": [[{"text": "Pick", "callback_data": data}]]}
    url = f"{fake.base_url}/bot{fake.token}/sendMessage"
    if encoding == "json":
        response = await http.post(url, json={"chat_id": CHAT, "text": "pick", "reply_markup": markup})
    else:
        response = await http.post(url, data={"chat_id": str(CHAT), "text": "pick",
                                              "reply_markup": json.dumps(markup)})
    assert response.status_code == status
    if status == 400:
        assert response.json() == {"ok": False, "error_code": 400, "description": "Bad Request: BUTTON_DATA_INVALID"}
    assert fake.calls[0][1]["reply_markup"] == markup


@pytest.mark.parametrize(("params", "status", "description"), [
    ({"chat_id": CHAT, "text": ""}, 400, "Bad Request: message text is empty"),
    ({"chat_id": CHAT, "text": "x" * 4097}, 400, "Bad Request: message is too long"),
    ({"chat_id": CHAT, "text": "x" * 4096}, 200, None),
    ({"text": "x"}, 400, "Bad Request: chat_id is empty"),
])
async def test_the_fake_checks_send_message_text(fake: FakeTelegram, http: httpx.AsyncClient, params: dict,
                                                 status: int, description: str | None) -> None:
    response = await http.post(f"{fake.base_url}/bot{fake.token}/sendMessage", json=params)
    assert response.status_code == status
    assert response.json().get("description") == description


@pytest.mark.parametrize(("secret", "status"), [("ok_secret-1", 200), ("bad secret", 400), ("x" * 257, 400)])
async def test_the_fake_checks_the_webhook_secret(fake: FakeTelegram, http: httpx.AsyncClient, secret: str,
                                                  status: int) -> None:
    response = await http.post(f"{fake.base_url}/bot{fake.token}/setWebhook",
                               data={"url": "https://a.example/hook", "secret_token": secret,
                                     "allowed_updates": '["callback_query"]'})
    assert response.status_code == status
    assert (fake.webhook is not None) is (status == 200)


async def test_the_fake_answers_get_me_by_get_with_case_insensitive_method(fake: FakeTelegram,
                                                                           http: httpx.AsyncClient) -> None:
    response = await http.get(f"{fake.base_url}/bot{fake.token}/GETME")
    assert response.status_code == 200
    assert response.json()["result"]["is_bot"] is True
    assert fake.calls == [("getMe", {})]


async def test_the_fake_refuses_other_tokens_with_401(fake: FakeTelegram, http: httpx.AsyncClient) -> None:
    response = await http.post(f"{fake.base_url}/bot1:other/getMe")
    assert response.status_code == 401
    assert response.json() == {"ok": False, "error_code": 401, "description": "Unauthorized"}


def test_the_fake_stops_listening_when_closed() -> None:
    with FakeTelegram() as fake:
        port = int(fake.base_url.rsplit(":", 1)[1])
        assert httpx.get(f"{fake.base_url}/bot{fake.token}/getMe").status_code == 200
    with socket.socket() as sock, pytest.raises(OSError):
        sock.connect(("127.0.0.1", port))
    with pytest.raises(RuntimeError):
        fake.base_url  # noqa: B018


async def test_closing_the_fake_ends_idle_keep_alive_connections(http: httpx.AsyncClient) -> None:
    fake = FakeTelegram().start()
    client = TelegramClient(fake.base_url, fake.token, http)
    assert (await client.send_message(CHAT, "hi")).delivered         # leaves a pooled keep-alive connection
    started = time.monotonic()
    fake.close()
    assert time.monotonic() - started < 2
    after = await client.send_message(CHAT, "hi")
    assert (after.delivered, after.retryable) == (False, True)


# --------------------------------------------------------------------------------------------
# RetryPolicy
# --------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("policy", "attempt", "ceiling"), [
    (RetryPolicy(base_delay=0.5, max_delay=30), 1, 0.5),
    (RetryPolicy(base_delay=0.5, max_delay=30), 2, 1.0),
    (RetryPolicy(base_delay=0.5, max_delay=30), 4, 4.0),
    (RetryPolicy(base_delay=0.5, max_delay=30), 7, 30.0),     # 32 capped at max_delay
    (RetryPolicy(base_delay=0.5, max_delay=30), 500, 30.0),   # no overflow
    (RetryPolicy(base_delay=2.0, max_delay=5.0), 3, 5.0),
])
def test_delay_is_full_jitter_below_the_capped_exponential(policy: RetryPolicy, attempt: int,
                                                           ceiling: float) -> None:
    draws = [policy.delay(attempt, None) for _ in range(2000)]
    assert all(0 <= d <= ceiling for d in draws)
    assert min(draws) < ceiling * 0.1 and max(draws) > ceiling * 0.9     # spread over the whole range
    assert len(set(draws)) > 1900 and abs(statistics.mean(draws) - ceiling / 2) < ceiling * 0.1


@pytest.mark.parametrize(("attempt", "retry_after"), [(1, 2.0), (1, 0.0), (3, 1.0), (6, 29.0), (1, 30.0)])
def test_delay_is_never_below_retry_after(attempt: int, retry_after: float) -> None:
    policy = RetryPolicy(base_delay=0.5, max_delay=30)
    draws = [policy.delay(attempt, retry_after) for _ in range(500)]
    assert all(retry_after <= d <= max(retry_after, 30.0) for d in draws)


@pytest.mark.parametrize("retry_after", [41.0, 3600.0])
def test_a_retry_after_beyond_max_delay_is_returned_unshortened(retry_after: float) -> None:
    assert RetryPolicy(max_delay=30).delay(1, retry_after) == retry_after


def test_a_zero_base_delay_retries_at_once() -> None:
    assert RetryPolicy(base_delay=0.0).delay(3, None) == 0.0


@pytest.mark.parametrize("kwargs", [dict(attempts=0), dict(base_delay=-1), dict(base_delay=2, max_delay=1),
                                    dict(max_delay=float("inf")), dict(base_delay=float("nan"))])
def test_nonsense_retry_policies_are_refused(kwargs: dict) -> None:
    with pytest.raises(ValueError, match="RetryPolicy"):
        RetryPolicy(**kwargs)


async def test_deliver_with_retries_stops_at_once_when_delivered_or_final() -> None:
    sleep = SleepRecorder()
    results = [Delivery(False, True, "flaky"), Delivery(False, False, "final"), Delivery(True, False, "never")]

    async def send() -> Delivery:
        return results.pop(0)

    delivery, attempts = await deliver_with_retries(send, RetryPolicy(attempts=5, base_delay=0.1), sleep)
    assert (delivery.detail, attempts, len(sleep.delays)) == ("final", 2, 1)
