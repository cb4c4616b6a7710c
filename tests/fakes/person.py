"""A person's own channel, as a test sees it: a remote channel that delivers every message and keeps
it, links included (approval links reach only their recipients' channels, never the logs)."""

from __future__ import annotations

from dataclasses import dataclass, field

from alertengine.notify.channels.base import Delivery
from alertengine.notify.gateway import Message


@dataclass
class PersonChannel:
    name: str = "person"
    received: list[Message] = field(default_factory=list)

    async def send(self, message: Message) -> Delivery:
        self.received.append(message)
        return Delivery(True, False, "delivered to the person", provider_id=f"p{len(self.received)}")

    def links(self) -> list[str]:
        return [url for message in self.received for url in message.links.values()]

    def install(self, app: object) -> "PersonChannel":
        """Make this the only remote channel of every tenant of ``app``."""
        app.state.runtime.gateway.remote = lambda tenant: [self]  # type: ignore[attr-defined]
        return self
