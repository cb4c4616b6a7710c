"""What the channel tests share: a plain HTTP client, an address where nothing listens, and a
Twilio client talking to the local fake Twilio."""

from __future__ import annotations

import socket
from typing import AsyncIterator

import httpx
import pytest

from alertengine.notify.channels.twilio import TwilioClient
from tests.fakes.twilio import FakeTwilio, fake_twilio  # noqa: F401 — fixture


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient() as client:
        yield client


@pytest.fixture
def dead_base_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"  # nothing listens there any more


@pytest.fixture
def fake(fake_twilio: FakeTwilio) -> FakeTwilio:  # noqa: F811 — the imported fixture
    return fake_twilio


@pytest.fixture
def client(fake: FakeTwilio, http: httpx.AsyncClient) -> TwilioClient:
    return TwilioClient(fake.base_url, fake.account_sid, fake.auth_token, http)
