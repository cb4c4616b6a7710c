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
        """Make this every channel of every tenant of ``app``: each tenant gets a Telegram setting
        (so routing has a channel to use) and the outbox hands every delivery to this person."""
        from alertengine.notify.channels.settings import put_channel
        state = app.state  # type: ignore[attr-defined]
        for (tenant,) in state.db.read_conn().execute("SELECT id FROM tenants"):
            state.db.write_sync(put_channel(tenant, "telegram", {
                "config": {"default_chat_id": "-100"},
                "secrets": {"bot_token": "123456:" + "A" * 35}}, state.config.url_policy, state.vault, "test"))
        state.runtime.sender.resolve = lambda tenant, channel, address: self
        return self
