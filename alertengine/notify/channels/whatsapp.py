"""WhatsApp through Twilio's Messages API: one message per person, with their own approval link
and the incident's reply code; delivery reported by Twilio's status callbacks.

WhatsApp's 24-hour rule: a business may send free-form messages to a person only within 24 hours
of that person's last message to it (the *session*). Outside it, only pre-approved templates go
through; Twilio accepts a free-form message and then reports it failed (error 63016). So:

* The appliance remembers when each person last wrote to it (every verified inbound message).
* Inside the session the message is free text: the facts, the approval link (proposals; only in
  that person's message) and how to answer (``ACK K7QM``, ``APPROVE K7QM-2``; notify/replies.py).
* Outside it, when the tenant set ``whatsapp_template_sid`` (a Twilio Content template, ``HX…``),
  the template goes instead, with the variables ``1`` = the headline, ``2`` = the incident id and
  ``3`` = the reply code: answering it opens the session, and later messages are free text again.
  Without a template the free-form message is tried anyway; when Twilio reports it failed, the
  outbox moves on to the person's next channel (notify/deliveries.py).
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass

from ..message import Message
from .base import Delivery
from .text import phone_text
from .twilio import MAX_BODY, TwilioClient

SESSION_SECONDS = 24 * 3600


def whatsapp_text(message: Message, limit: int = MAX_BODY) -> str:
    """Plain text (WhatsApp would render ``*`` and ``_`` as formatting, so none is added). The link
    and how to answer always fit: a long incident text is cut instead."""
    tail = []
    for label, link in message.links.items():
        choice = label.partition(" (")[2].rstrip(")")
        tail.append(f"{choice[:1].upper() + choice[1:] + ': ' if choice else 'Approve: '}{link}")
    code = message.code
    if code and message.event in ("proposed", "dissent") and message.data.get("proposal"):
        code = f"{code}-{message.data['proposal']}"     # names the proposal, not only the incident
    if code and message.event in ("proposed", "dissent"):
        choices = sorted({c for refs in message.refs.values() for c in refs if c})
        approve = " or ".join(f"APPROVE {code} {c}" for c in choices) if choices else f"APPROVE {code}"
        tail.append(f"Reply {approve} to approve, REJECT {code} to reject.")
    elif code and message.incident:
        tail.append(f"Reply ACK {code} to acknowledge, RESOLVE {code} to resolve.")
    end = "\n".join(tail)
    head = phone_text(dataclasses.replace(message, buttons=[]))   # no buttons on WhatsApp: say so nowhere
    room = limit - len(end) - 1
    if len(head) > room:
        head = head[:max(room - 1, 0)] + "…"
    return f"{head}\n{end}" if end else head


@dataclass
class WhatsAppChannel:
    client: TwilioClient
    sender: str                     # the tenant's WhatsApp sender, whatsapp:+E164
    to: str                         # the person's number, +E164
    status_url: str | None          # where Twilio reports delivery (signed callbacks)
    session_open: bool              # the person wrote to us within 24 hours
    template_sid: str | None = None
    name: str = "whatsapp"

    async def send(self, message: Message) -> Delivery:
        to = f"whatsapp:{self.to}"
        sender = self.sender if self.sender.startswith("whatsapp:") else f"whatsapp:{self.sender}"
        if not self.session_open and self.template_sid:
            variables = json.dumps({"1": phone_text(message).split("\n", 1)[0], "2": message.incident or "-",
                                    "3": message.code or "-"}, ensure_ascii=False)
            result, _ = await self.client.send_message(to, sender, content_sid=self.template_sid,
                                                       content_variables=variables, status_callback=self.status_url)
        else:
            result, _ = await self.client.send_message(to, sender, body=whatsapp_text(message),
                                                       status_callback=self.status_url)
        return result
