"""Signed outbound webhooks: the signature contract, the README's receiver example, and delivery against a real receiver."""

from __future__ import annotations

import ast
import email.utils
import hashlib
import hmac
import itertools
import math
import sys
import time
import unicodedata
from types import MappingProxyType
from typing import Any, AsyncIterator, Callable, Iterator

import httpx
import pytest

from alertengine import __version__
from alertengine.net.webhooks import (
    EXCERPT_CHARS,
    RECEIVER_EXAMPLE,
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    DeliveryResult,
    canonical_body,
    post_signed,
    sign,
    verify,
)
from tests.fakes.receiver import Receiver, Reply, closed_port_url

SECRET = "whsec_3f9a1c0e7b2d4f68a1b2c3d4"
BODY = canonical_body({"event": "service.recovered", "service": "checkout", "incident": 42})
PAYLOAD = {"event": "service.recovered", "service": "checkout", "incident": 42, "note": "naïve ✓"}
ZEROS = "v1=" + "0" * 64


class RecordingSleep:
    """Stands in for asyncio.sleep: records every delay and returns at once."""

    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, delay: float) -> None:
        self.delays.append(delay)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with Receiver(secret=SECRET) as running:
        yield running


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(trust_env=False) as http_client:
        yield http_client


@pytest.fixture
def sleep() -> RecordingSleep:
    return RecordingSleep()


async def deliver(client: httpx.AsyncClient, url: str, sleep: RecordingSleep, **kw: Any) -> DeliveryResult:
    kw.setdefault("idempotency_key", "evt-0001")
    return await post_signed(client, url, SECRET, PAYLOAD, sleep=sleep, **kw)


def texts(result: DeliveryResult) -> str:
    return " | ".join([result.detail, *(a.error or "" for a in result.attempts)])


# --------------------------------------------------------------------------------------------
# The signature contract, checked by verify() and by the README's stand-alone example alike
# --------------------------------------------------------------------------------------------

def example_function() -> Callable[..., bool]:
    namespace: dict[str, Any] = {}
    exec(RECEIVER_EXAMPLE, namespace)  # noqa: S102 — the README's code, run as a receiver would
    return namespace["verify_alertengine"]


def check_with_verify(secret: str, timestamp: str | None, signature: str | None, body: bytes) -> bool:
    return verify(secret, timestamp, signature, body)


def check_with_example(secret: str, timestamp: str | None, signature: str | None, body: bytes) -> bool:
    headers = {name: value for name, value in ((TIMESTAMP_HEADER, timestamp), (SIGNATURE_HEADER, signature))
               if value is not None}
    return example_function()(secret, headers, body)


def signed(offset: int = 0, secret: str = SECRET, body: bytes = BODY) -> tuple[str, str]:
    timestamp = int(time.time()) + offset
    return str(timestamp), sign(secret, timestamp, body)


Headers = tuple[str | None, str | None, bytes]

# Each case turns one (timestamp, signature) pair, made with SECRET over BODY just now, into what arrives.
SIGNATURE_CASES = [
    pytest.param(lambda ts, sig: (ts, sig, BODY), True, id="good"),
    pytest.param(lambda ts, sig: (*signed(secret="whsec_someone_else"), BODY), False, id="wrong-secret"),
    pytest.param(lambda ts, sig: (ts, sig, BODY.replace(b"42", b"43")), False, id="tampered-body"),
    pytest.param(lambda ts, sig: (ts, sig, BODY + b" "), False, id="body-with-trailing-space"),
    pytest.param(lambda ts, sig: (str(int(ts) + 1), sig, BODY), False, id="timestamp-changed"),
    pytest.param(lambda ts, sig: (*signed(-290), BODY), True, id="timestamp-old-but-within-tolerance"),
    pytest.param(lambda ts, sig: (*signed(-400), BODY), False, id="timestamp-too-old"),
    pytest.param(lambda ts, sig: (*signed(+400), BODY), False, id="timestamp-too-new"),
    pytest.param(lambda ts, sig: (*signed(-86400 * 365), BODY), False, id="timestamp-a-year-old"),
    pytest.param(lambda ts, sig: (ts, f"{ZEROS},{sig}", BODY), True, id="rotation-second-value-matches"),
    pytest.param(lambda ts, sig: (ts, f"{sig}, {ZEROS}", BODY), True, id="rotation-first-value-matches"),
    pytest.param(lambda ts, sig: (ts, f"{ZEROS},{ZEROS}", BODY), False, id="rotation-no-value-matches"),
    pytest.param(lambda ts, sig: (ts, "v2=" + sig[3:], BODY), False, id="unknown-scheme"),
    pytest.param(lambda ts, sig: (ts, sig[3:], BODY), False, id="hex-without-scheme"),
    pytest.param(lambda ts, sig: (ts, sig.upper(), BODY), False, id="upper-case"),
    pytest.param(lambda ts, sig: (ts + "x", sig, BODY), False, id="timestamp-not-a-number"),
    pytest.param(lambda ts, sig: (None, sig, BODY), False, id="missing-timestamp"),
    pytest.param(lambda ts, sig: (ts, None, BODY), False, id="missing-signature"),
    pytest.param(lambda ts, sig: (ts, "", BODY), False, id="empty-signature"),
    pytest.param(lambda ts, sig: (ts, "v1=ünïcode", BODY), False, id="non-ascii-signature"),
]


@pytest.mark.parametrize("check", [check_with_verify, check_with_example], ids=["verify", "readme-example"])
@pytest.mark.parametrize(("arrives", "valid"), SIGNATURE_CASES)
def test_signature_is_accepted_only_when_secret_body_and_fresh_timestamp_match(
        check: Callable[..., bool], arrives: Callable[[str, str], Headers], valid: bool) -> None:
    timestamp, signature, body = arrives(*signed())
    assert check(SECRET, timestamp, signature, body) is valid


def test_sign_is_hex_hmac_sha256_of_timestamp_dot_body() -> None:
    expected = hmac.new(b"whsec_test", b'1700000000.{"a":1}', hashlib.sha256).hexdigest()
    assert sign("whsec_test", 1700000000, b'{"a":1}') == f"v1={expected}"


@pytest.mark.parametrize(("now", "tolerance", "valid"), [
    (1300.0, 300, True), (1300.5, 300, False), (700.0, 300, True), (699.0, 300, False),
    (1010.0, 10, True), (1011.0, 10, False), (1000.0, 0, True), (1001.0, 0, False),
])
def test_verify_refuses_timestamps_beyond_the_tolerance(now: float, tolerance: int, valid: bool) -> None:
    assert verify(SECRET, "1000", sign(SECRET, 1000, BODY), BODY, now=now, tolerance=tolerance) is valid


def test_verify_never_accepts_an_empty_secret() -> None:
    timestamp, _ = signed()
    assert not verify("", timestamp, "v1=" + sign("x", int(timestamp), BODY)[3:], BODY)


def test_receiver_example_is_ten_lines_of_standard_library_python() -> None:
    assert len(RECEIVER_EXAMPLE.rstrip("\n").splitlines()) <= 10
    imported = set()
    for node in ast.walk(ast.parse(RECEIVER_EXAMPLE)):
        if isinstance(node, ast.Import):
            imported.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            imported.add((node.module or "").split(".")[0])
    assert imported and imported <= sys.stdlib_module_names


@pytest.mark.parametrize(("payload", "expected"), [
    ({"b": 1, "a": [1, 2]}, b'{"a":[1,2],"b":1}'),
    ({"z": {"y": None, "x": True}}, b'{"z":{"x":true,"y":null}}'),
    ({"name": "naïve ✓"}, b'{"name":"na\\u00efve \\u2713"}'),
    (MappingProxyType({"inner": MappingProxyType({"k": 1.5})}), b'{"inner":{"k":1.5}}'),
    ({}, b"{}"),
])
def test_canonical_body_is_compact_sorted_ascii_json(payload: Any, expected: bytes) -> None:
    assert canonical_body(payload) == expected


@pytest.mark.parametrize("payload", [
    {"x": math.nan}, {"x": math.inf}, {"x": {1, 2}}, {"x": object()}, ["not", "a", "mapping"],
], ids=["nan", "inf", "set", "object", "list"])
def test_canonical_body_refuses_what_json_cannot_carry(payload: Any) -> None:
    with pytest.raises(ValueError):
        canonical_body(payload)


# --------------------------------------------------------------------------------------------
# Delivery against a real receiver
# --------------------------------------------------------------------------------------------

async def test_delivers_on_first_try_with_a_signature_the_receiver_verifies(
        receiver: Receiver, client: httpx.AsyncClient, sleep: RecordingSleep) -> None:
    result = await deliver(client, f"{receiver.url}/hook", sleep, idempotency_key="evt-42")

    assert result.delivered and result.final_status == 200
    assert [(a.number, a.status, a.error) for a in result.attempts] == [(1, 200, None)]
    assert result.detail == "delivered: HTTP 200 OK on attempt 1 of 3"
    assert sleep.delays == []
    [request] = receiver.requests
    assert request.signature_ok and request.path == "/hook"
    assert request.body == canonical_body(PAYLOAD)
    assert request.headers["content-type"] == "application/json"
    assert request.headers["user-agent"] == f"AlertEngine/{__version__}"
    assert request.headers["idempotency-key"] == "evt-42"
    # the README's stand-alone check accepts the request exactly as it arrived
    assert example_function()(SECRET, httpx.Headers(request.headers), request.body)


async def test_receiver_flags_a_signature_made_with_another_secret(
        receiver: Receiver, client: httpx.AsyncClient, sleep: RecordingSleep) -> None:
    receiver.secret = "whsec_rotated_away"
    await deliver(client, receiver.url, sleep)
    assert [r.signature_ok for r in receiver.requests] == [False]


async def test_retry_resends_the_same_body_and_key_with_a_fresh_timestamp_and_signature(
        receiver: Receiver, client: httpx.AsyncClient, sleep: RecordingSleep) -> None:
    receiver.script(500, 200)
    clock = itertools.count(int(time.time()), 10).__next__   # every reading ten seconds later

    result = await deliver(client, receiver.url, sleep, clock=clock, base_delay=0.5)

    assert result.delivered and result.final_status == 200
    assert [a.status for a in result.attempts] == [500, 200]
    assert result.detail == "delivered: HTTP 200 OK on attempt 2 of 3"
    first, second = receiver.requests
    assert first.signature_ok and second.signature_ok
    assert first.body == second.body == canonical_body(PAYLOAD)
    assert first.headers["idempotency-key"] == second.headers["idempotency-key"] == "evt-0001"
    assert first.headers["x-alertengine-timestamp"] != second.headers["x-alertengine-timestamp"]
    assert first.headers["x-alertengine-signature"] != second.headers["x-alertengine-signature"]
    assert len(sleep.delays) == 1 and 0.0 <= sleep.delays[0] <= 0.5


@pytest.mark.parametrize("failure", [500, 502, 503, 504, 429, "close"])
async def test_transient_failures_are_retried_until_delivered(
        receiver: Receiver, client: httpx.AsyncClient, sleep: RecordingSleep, failure: int | str) -> None:
    receiver.script(failure, failure, 204)
    result = await deliver(client, receiver.url, sleep)
    assert result.delivered and result.final_status == 204
    assert len(result.attempts) == len(receiver.requests) == 3
    assert all(a.error for a in result.attempts[:2])
    assert len(sleep.delays) == 2


@pytest.mark.parametrize(("retry_after", "min_delay", "parsed"), [
    (lambda now: "1", 1.0, 1.0),
    (lambda now: "7", 7.0, 7.0),
    (lambda now: email.utils.formatdate(now + 5, usegmt=True), 5.0, 5.0),
    (lambda now: email.utils.formatdate(now - 60, usegmt=True), 0.0, 0.0),
    (lambda now: "soon", 0.0, None),
], ids=["seconds-1", "seconds-7", "http-date-ahead", "http-date-past", "unreadable"])
async def test_retry_after_is_honoured_as_a_minimum_delay(
        receiver: Receiver, client: httpx.AsyncClient, sleep: RecordingSleep,
        retry_after: Callable[[float], str], min_delay: float, parsed: float | None) -> None:
    now = float(int(time.time()))
    receiver.script((429, {"Retry-After": retry_after(now)}), 200)

    result = await deliver(client, receiver.url, sleep, clock=lambda: now, base_delay=0.5)

    assert result.delivered and len(result.attempts) == 2
    assert result.attempts[0].status == 429 and result.attempts[0].retry_after == parsed
    [delay] = sleep.delays
    assert min_delay <= delay <= max(min_delay, 0.5)


async def test_retry_after_beyond_max_delay_gives_up_at_once(
        receiver: Receiver, client: httpx.AsyncClient, sleep: RecordingSleep) -> None:
    receiver.script((503, {"Retry-After": "3600"}))
    result = await deliver(client, receiver.url, sleep, max_delay=30.0)

    assert not result.delivered and result.final_status == 503
    assert len(result.attempts) == len(receiver.requests) == 1
    assert sleep.delays == []
    assert "retry after 3600 s" in result.detail and "max_delay 30 s" in result.detail
    assert "gave up after 1 attempt of 3" in result.detail


@pytest.mark.parametrize(("reply", "words"), [
    ((400, {}, b'{"error":"bad payload"}'), ["HTTP 400 Bad Request", "bad payload", "not retried"]),
    ((401, {}, b""), ["HTTP 401 Unauthorized", "not retried"]),
    ((404, {}, b"no such hook"), ["HTTP 404 Not Found", "not retried"]),
    ((422, {}, b"{}"), ["HTTP 422", "not retried"]),
    ((302, {"Location": "/elsewhere"}, b""), ["HTTP 302 Found", "redirects are not followed", "not retried"]),
    ((307, {"Location": "/elsewhere"}, b""), ["HTTP 307", "redirects are not followed"]),
    ((301, {"Location": "http://127.0.0.1:9/x"}, b""), ["HTTP 301", "redirects are not followed"]),
], ids=["400", "401", "404", "422", "302", "307", "301-to-another-host"])
async def test_refusals_and_redirects_are_final_after_one_attempt(
        receiver: Receiver, client: httpx.AsyncClient, sleep: RecordingSleep,
        reply: tuple[int, dict[str, str], bytes], words: list[str]) -> None:
    receiver.script(reply)
    result = await deliver(client, f"{receiver.url}/hook", sleep)

    assert not result.delivered and result.final_status == reply[0]
    assert len(result.attempts) == 1 and sleep.delays == []
    assert [r.path for r in receiver.requests] == ["/hook"]   # a redirect is never followed
    for word in words:
        assert word in result.detail


async def test_timeouts_are_retried_then_reported(
        receiver: Receiver, client: httpx.AsyncClient, sleep: RecordingSleep) -> None:
    receiver.script("timeout", "timeout", "timeout")
    started = time.monotonic()
    result = await deliver(client, receiver.url, sleep, timeout=0.3)

    assert time.monotonic() - started < 3.0
    assert not result.delivered and result.final_status is None
    assert [(a.status, a.error) for a in result.attempts] == [(None, "no complete answer within 0.3 s")] * 3
    assert all(250 <= a.duration_ms < 1500 for a in result.attempts)
    assert len(receiver.requests) == 3 and len(sleep.delays) == 2
    assert result.detail == "not delivered after 3 attempts; last: no complete answer within 0.3 s"


async def test_connection_refused_is_retried_with_full_jitter_backoff(
        client: httpx.AsyncClient, sleep: RecordingSleep) -> None:
    result = await deliver(client, closed_port_url(), sleep, base_delay=0.5, max_delay=0.8)

    assert not result.delivered and result.final_status is None
    assert [a.number for a in result.attempts] == [1, 2, 3]
    assert all(a.status is None and (a.error or "").startswith("cannot connect") for a in result.attempts)
    assert result.detail.startswith("not delivered after 3 attempts; last: cannot connect")
    first, second = sleep.delays
    assert 0.0 <= first <= 0.5 and 0.0 <= second <= 0.8   # min(max_delay, base · 2^(n-1))


async def test_an_unusable_url_is_not_retried(client: httpx.AsyncClient, sleep: RecordingSleep) -> None:
    result = await deliver(client, f"ftp://127.0.0.1/{SECRET}", sleep)
    assert not result.delivered and len(result.attempts) == 1 and sleep.delays == []
    assert "unusable URL" in result.detail and SECRET not in repr(result)


SECRET_ECHO = b"you sent secret=" + SECRET.encode()


@pytest.mark.parametrize("replies", [
    [(400, {}, SECRET_ECHO)],
    [(500, {}, SECRET_ECHO)] * 3,
    [(429, {"Retry-After": "99999"}, SECRET_ECHO)],
    [(302, {"Location": f"/x?{SECRET}"}, SECRET_ECHO)],
    [(500, {}, b"x" * (EXCERPT_CHARS - 10) + SECRET.encode())] * 3,   # would be cut mid-secret
    [(500, {}, ("\x1b[0m" + SECRET + "\x00").encode())] * 3,
], ids=["400", "500", "429-give-up", "302", "secret-at-excerpt-edge", "secret-among-controls"])
async def test_the_secret_never_reaches_a_detail_or_an_attempt_error(
        receiver: Receiver, client: httpx.AsyncClient, sleep: RecordingSleep,
        replies: list[tuple[int, dict[str, str], bytes]]) -> None:
    receiver.script(*replies)
    result = await deliver(client, f"{receiver.url}/hook", sleep)
    assert not result.delivered
    assert SECRET[:10] not in repr(result)
    assert "[redacted]" in texts(result)


@pytest.mark.parametrize("reply", [
    Reply(500, body=b"A" * 4096, endless=True),
    Reply(500, body=b"A" * (4 * 1024 * 1024)),
    Reply(500, body="first\r\nsecond\x00\x07\x1b[31mred\x7f\u202eevil\u2028end\ttab".encode()),
    Reply(500, body=bytes(range(256)) * 4),
], ids=["endless", "4-MiB", "control-characters", "binary"])
async def test_response_bodies_are_cut_to_a_clean_excerpt(
        receiver: Receiver, client: httpx.AsyncClient, sleep: RecordingSleep, reply: Reply) -> None:
    receiver.script(reply)
    result = await deliver(client, receiver.url, sleep, attempts=1, timeout=3.0)

    [attempt] = result.attempts
    assert attempt.status == 500 and attempt.duration_ms < 2000   # an endless body would have timed out
    excerpt = (attempt.error or "").removeprefix("HTTP 500 Internal Server Error: ")
    assert 0 < len(excerpt) <= EXCERPT_CHARS
    for text in (result.detail, attempt.error or ""):
        assert not any(unicodedata.category(ch)[0] == "C" or ch in "\u2028\u2029" for ch in text)


async def test_control_characters_become_single_spaces_in_the_excerpt(
        receiver: Receiver, client: httpx.AsyncClient, sleep: RecordingSleep) -> None:
    receiver.script((400, {}, b"first\r\n\r\nsecond\x00third"))
    result = await deliver(client, receiver.url, sleep)
    assert result.attempts[0].error == "HTTP 400 Bad Request: first second third"


@pytest.mark.parametrize("overrides", [
    {"attempts": 0}, {"attempts": -1}, {"attempts": 1.5}, {"base_delay": -0.1}, {"max_delay": math.nan},
    {"timeout": 0}, {"timeout": math.inf}, {"idempotency_key": ""}, {"idempotency_key": "has space"},
    {"idempotency_key": "evt\r\nX-Injected: 1"}, {"idempotency_key": "k" * 256},
], ids=lambda o: "-".join(f"{k}={v!r}"[:24] for k, v in o.items()))
async def test_programming_errors_raise_value_error_before_anything_is_sent(
        receiver: Receiver, client: httpx.AsyncClient, sleep: RecordingSleep, overrides: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        await deliver(client, receiver.url, sleep, **overrides)
    assert receiver.requests == []


@pytest.mark.parametrize(("secret", "payload"), [("", PAYLOAD), (SECRET, {"x": math.nan})], ids=["secret", "payload"])
async def test_an_empty_secret_or_a_non_json_payload_raises_value_error(
        receiver: Receiver, client: httpx.AsyncClient, secret: str, payload: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        await post_signed(client, receiver.url, secret, payload, idempotency_key="evt-1")
    assert receiver.requests == []
