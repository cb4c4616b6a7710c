"""The fake Messages API speaks the wire format the real anthropic SDK expects: tool_use answers,
429 with retry-after, 529 overloaded, 500, answers slower than the timeout, refusals, bad keys."""

from __future__ import annotations

import time
from typing import Any, AsyncIterator, Iterator

import anthropic
import httpx
import pytest

from tests.fakes.anthropic import (
    FakeAnthropic,
    Hang,
    Malformed,
    Refusal,
    Status,
    Text,
    ToolUse,
)

MODEL = "claude-fast-test"
TRIAGE_TOOL = {"name": "triage", "description": "Report a diagnosis.",
               "input_schema": {"type": "object", "properties": {"category": {"type": "string"}},
                                "required": ["category"]}}
DIAGNOSIS = {"root_cause": "connection pool exhausted", "category": "database", "confidence": 80}


@pytest.fixture
def fake() -> Iterator[FakeAnthropic]:
    with FakeAnthropic() as server:
        yield server


def make_client(fake: FakeAnthropic, *, api_key: str | None = None, max_retries: int = 0,
                timeout: float = 2.0) -> anthropic.AsyncAnthropic:
    return anthropic.AsyncAnthropic(api_key=api_key or fake.api_key, base_url=fake.base_url,
                                    max_retries=max_retries, timeout=timeout)


@pytest.fixture
async def client(fake: FakeAnthropic) -> AsyncIterator[anthropic.AsyncAnthropic]:
    async with make_client(fake) as sdk:
        yield sdk


async def triage(client: anthropic.AsyncAnthropic, model: str = MODEL) -> Any:
    return await client.messages.create(
        model=model, max_tokens=1024, system="You triage incidents.",
        messages=[{"role": "user", "content": "checkout is slow"}],
        tools=[TRIAGE_TOOL], tool_choice={"type": "tool", "name": "triage"})


async def test_tool_use_answer_is_parsed_by_the_sdk(fake: FakeAnthropic, client: anthropic.AsyncAnthropic) -> None:
    fake.answer(MODEL, ToolUse(DIAGNOSIS, usage=(412, 57)))
    message = await triage(client)
    assert message.stop_reason == "tool_use"
    assert message.model == MODEL
    [block] = message.content
    assert block.type == "tool_use" and block.name == "triage" and block.id.startswith("toolu_")
    assert block.input == DIAGNOSIS
    assert (message.usage.input_tokens, message.usage.output_tokens) == (412, 57)


async def test_requests_are_recorded_with_lower_case_headers_and_body(
        fake: FakeAnthropic, client: anthropic.AsyncAnthropic) -> None:
    fake.answer(MODEL, ToolUse(DIAGNOSIS))
    await triage(client)
    [request] = fake.requests
    headers = request["headers"]
    # SDK 0.x sends x-api-key (the API reference); the installed 2.x sends the key as a bearer token.
    assert fake.api_key in (headers.get("x-api-key"), headers.get("authorization", "").removeprefix("Bearer "))
    assert headers["anthropic-version"]
    assert request["body"]["tool_choice"] == {"type": "tool", "name": "triage"}
    assert request["body"]["messages"] == [{"role": "user", "content": "checkout is slow"}]
    assert "checkout is slow" in fake.wire_text()
    assert fake.requests_for(MODEL) == [request]


@pytest.mark.parametrize(("reply", "error", "status", "error_type"), [
    (Status(429, retry_after_ms=10), anthropic.RateLimitError, 429, "rate_limit_error"),
    (Status(529), anthropic.OverloadedError, 529, "overloaded_error"),
    (Status(500), anthropic.InternalServerError, 500, "api_error"),
])
async def test_error_statuses_raise_the_sdk_exception_with_the_documented_body(
        fake: FakeAnthropic, client: anthropic.AsyncAnthropic, reply: Status, error: type[Exception], status: int,
        error_type: str) -> None:
    fake.answer(MODEL, reply)
    with pytest.raises(error) as caught:
        await triage(client)
    exc = caught.value
    assert isinstance(exc, anthropic.APIStatusError) and exc.status_code == status
    assert exc.body["type"] == "error" and exc.body["error"]["type"] == error_type
    assert exc.request_id is not None and exc.request_id.startswith("req_")


async def test_rate_limit_carries_retry_after_headers(fake: FakeAnthropic, client: anthropic.AsyncAnthropic) -> None:
    fake.answer(MODEL, Status(429, retry_after_ms=10))
    with pytest.raises(anthropic.RateLimitError) as caught:
        await triage(client)
    headers = caught.value.response.headers
    assert headers["retry-after-ms"] == "10"
    assert headers["retry-after"] == "1"


async def test_a_reply_slower_than_the_timeout_raises_api_timeout_error(fake: FakeAnthropic) -> None:
    fake.answer(MODEL, Hang(5))
    started = time.monotonic()
    async with make_client(fake, timeout=0.3) as client:
        with pytest.raises(anthropic.APITimeoutError):
            await triage(client)
    assert time.monotonic() - started < 3


async def test_a_hang_within_the_timeout_still_answers(fake: FakeAnthropic, client: anthropic.AsyncAnthropic) -> None:
    fake.answer(MODEL, Hang(0.1, then=ToolUse(DIAGNOSIS)))
    message = await triage(client)
    assert message.content[0].input == DIAGNOSIS


async def test_a_wrong_api_key_is_an_authentication_error(fake: FakeAnthropic) -> None:
    fake.answer(MODEL, ToolUse(DIAGNOSIS))
    async with make_client(fake, api_key="sk-ant-api03-wrong") as client:
        with pytest.raises(anthropic.AuthenticationError) as caught:
            await triage(client)
    assert caught.value.status_code == 401
    assert fake.pending(MODEL) == 1  # a refused request does not use up the script


@pytest.mark.parametrize(("reply", "stop_reason", "text"), [
    (Refusal(), "refusal", "I can't help with that request."),
    (Text("I think it is the database."), "end_turn", "I think it is the database."),
])
async def test_text_only_answers_carry_their_stop_reason(
        fake: FakeAnthropic, client: anthropic.AsyncAnthropic, reply: Refusal | Text, stop_reason: str,
        text: str) -> None:
    fake.answer(MODEL, reply)
    message = await triage(client)
    assert message.stop_reason == stop_reason
    assert [(b.type, b.text) for b in message.content] == [("text", text)]


async def test_malformed_tool_input_is_delivered_as_is(fake: FakeAnthropic, client: anthropic.AsyncAnthropic) -> None:
    fake.answer(MODEL, Malformed({"category": 7, "confidence": "very"}))
    message = await triage(client)
    assert message.stop_reason == "tool_use"
    assert message.content[0].input == {"category": 7, "confidence": "very"}


async def test_sdk_retries_a_rate_limit_then_succeeds(fake: FakeAnthropic) -> None:
    fake.answer(MODEL, Status(429, retry_after_ms=10), ToolUse(DIAGNOSIS))
    started = time.monotonic()
    async with make_client(fake, max_retries=2) as client:
        message = await triage(client)
    assert message.content[0].input == DIAGNOSIS
    assert time.monotonic() - started < 1.5  # waited the 10 ms asked for, not the SDK's back-off
    assert len(fake.requests) == 2
    assert fake.requests[1]["headers"]["x-stainless-retry-count"] == "1"


async def test_scripts_are_per_model_and_fall_back_to_the_default() -> None:
    with FakeAnthropic(default=ToolUse({"category": "unknown"})) as fake:
        fake.answer("claude-strong-test", ToolUse(DIAGNOSIS))
        async with make_client(fake) as client:
            fast = await triage(client, MODEL)
            strong = await triage(client, "claude-strong-test")
            again = await triage(client, "claude-strong-test")
    assert fast.content[0].input == {"category": "unknown"}
    assert strong.content[0].input == DIAGNOSIS
    assert again.content[0].input == {"category": "unknown"}


async def test_an_empty_script_without_a_default_is_a_server_error(client: anthropic.AsyncAnthropic) -> None:
    with pytest.raises(anthropic.InternalServerError):
        await triage(client)


@pytest.mark.parametrize(("change", "message"), [
    ({"max_tokens": 0}, "max_tokens"),
    ({"messages": []}, "messages"),
    ({"tool_choice": {"type": "tool", "name": "other"}}, "tool_choice.name"),
])
async def test_requests_the_real_api_would_refuse_are_bad_requests(
        fake: FakeAnthropic, change: dict[str, Any], message: str) -> None:
    body = {"model": MODEL, "max_tokens": 64, "messages": [{"role": "user", "content": "hi"}],
            "tools": [TRIAGE_TOOL], "tool_choice": {"type": "tool", "name": "triage"}, **change}
    headers = {"x-api-key": fake.api_key, "anthropic-version": "2023-06-01"}
    async with httpx.AsyncClient(base_url=fake.base_url) as http:
        reply = await http.post("/v1/messages", json=body, headers=headers)
    assert reply.status_code == 400
    doc = reply.json()
    assert doc["type"] == "error" and doc["error"]["type"] == "invalid_request_error"
    assert message in doc["error"]["message"]
    assert reply.headers["request-id"] == doc["request_id"]


def test_closing_while_a_request_hangs_returns_promptly() -> None:
    fake = FakeAnthropic(default=ToolUse(DIAGNOSIS)).start()
    fake.answer(MODEL, Hang(30))
    body = {"model": MODEL, "max_tokens": 64, "messages": [{"role": "user", "content": "hi"}], "tools": [TRIAGE_TOOL]}
    headers = {"x-api-key": fake.api_key, "anthropic-version": "2023-06-01"}
    with httpx.Client(base_url=fake.base_url, timeout=0.2) as http:
        with pytest.raises(httpx.ReadTimeout):
            http.post("/v1/messages", json=body, headers=headers)
    started = time.monotonic()
    fake.close()
    assert time.monotonic() - started < 2
