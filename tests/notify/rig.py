"""A tenant with Telegram and webhook settings, a vault, a fake clock, and channels whose answers a
test scripts: the rig the outbox, routing and grouping tests drive (fixture ``rig``)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import pytest

from alertengine.appliance import DataDir
from alertengine.config import Config
from alertengine.notify import outbox
from alertengine.notify.channels.base import Delivery
from alertengine.notify.channels.settings import put_channel
from alertengine.notify.gateway import Gateway, Message
from alertengine.notify.people import normalise_person, put_person
from alertengine.notify.routes import parse_routing, put_routing
from alertengine.notify.sender import OutboxSender
from alertengine.store import Database
from alertengine.store.modes import ModeTracker
from alertengine.telemetry import Telemetry
from alertengine.tenancy.tenants import create_tenant, set_shadow
from alertengine.tenancy.vault import SecretVault

START = 1_800_000_000.0
BOT = "123456:" + "A" * 35


class Clock:
    def __init__(self) -> None:
        self.now = START

    def __call__(self) -> float:
        return self.now


@dataclass
class Scripted:
    """A channel whose answers the test scripts: a list of Deliveries (the last one repeats)."""

    name: str
    answers: list[Delivery | Exception]
    got: list[Message] = field(default_factory=list)

    async def send(self, message: Message) -> Delivery:
        self.got.append(message)
        answer = self.answers[0] if len(self.answers) == 1 else self.answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer


OK = Delivery(True, False, "ok", provider_id="m1")
DOWN = Delivery(False, True, "HTTP 502")
REFUSED = Delivery(False, False, "HTTP 400: chat not found")


@dataclass
class Rig:
    db: Database
    vault: SecretVault
    clock: Clock
    tenant: str
    modes: ModeTracker
    channels: dict[str, Any] = field(default_factory=dict)
    sender: OutboxSender | None = None
    gateway: Gateway | None = None

    def resolve(self, tenant: str, channel: str, address: str) -> Any:
        return self.channels.get(channel)

    def build(self, telemetry: Telemetry | None = None) -> "Rig":
        self.sender = OutboxSender(self.db, self.vault, self.resolve, modes=self.modes, clock=self.clock,
                                   base_delay=1.0, max_delay=30.0, telemetry=telemetry)
        self.gateway = Gateway(self.db, [], self.modes, vault=self.vault, sender=self.sender, clock=self.clock)
        return self

    def routing(self, text: str) -> None:
        self.db.write_sync(put_routing(self.tenant, parse_routing(text), "test"))

    def person(self, pid: str, **addresses: str) -> None:
        self.db.write_sync(put_person(normalise_person(self.tenant, pid, {"name": pid.title(), "addresses": addresses}),
                                      "test"))

    async def run_until_settled(self, limit: int = 500) -> None:
        """Advance the fake clock to each next due time and run the sender, until nothing is pending."""
        assert self.sender is not None
        for _ in range(limit):
            await self.sender.run_due()
            upcoming = outbox.next_due(self.db.read_conn())
            if upcoming is None:
                return
            self.clock.now = max(self.clock.now, upcoming)
        raise AssertionError("the outbox never settled")

    def rows(self) -> list[outbox.Outgoing]:
        return list(reversed(outbox.listing(self.db.read_conn(), self.tenant, limit=1000)))

    def ledger(self, prefix: str = "notification.") -> list[tuple[str, dict[str, Any]]]:
        return [(k, json.loads(b)["data"]) for k, b in self.db.read_conn().execute(
            "SELECT kind, body FROM ledger WHERE tenant = ? AND kind LIKE ? ORDER BY seq", (self.tenant, prefix + "%"))]


@pytest.fixture
def rig(db: Database, data_dir: DataDir, config: Config) -> Rig:
    tenant = db.write_sync(create_tenant("acme", "test")).id
    db.write_sync(set_shadow(tenant, False, "test"))
    vault = SecretVault(data_dir.secret("vault.key"))
    # channel settings make telegram and webhook available to routing; the Scripted senders answer
    db.write_sync(put_channel(tenant, "telegram", {"config": {"default_chat_id": "-100"}, "secrets": {"bot_token": BOT}},
                              config.url_policy, vault, "test"))
    db.write_sync(put_channel(tenant, "webhook", {"config": {"url": "https://hooks.example.com/x"},
                                                  "secrets": {"signing_secret": "s" * 32}},
                              config.url_policy, vault, "test"))
    return Rig(db, vault, Clock(), tenant, ModeTracker(db))
