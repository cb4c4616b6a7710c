"""Voice calls through Twilio's Calls API: the call says the incident and asks to press 1.

The call carries its TwiML inline: ``<Gather numDigits="1">`` around a ``<Say>`` of the incident
(said twice), whose result Twilio posts to ``/bot/twilio/{tenant}/voice``; pressing 1 acknowledges
the incident as the person called (web/bots_twilio.py). A call never approves a recovery: that
needs the signed link or a chat button bound to the person. Status callbacks report the call's
progress; a call that was not answered (busy, no answer, failed) is handed back to the escalation
chain: its next step is brought forward and the person's next channel is tried
(notify/deliveries.py). The delivery itself counts as made once Twilio accepted the call."""

from __future__ import annotations

from dataclasses import dataclass
from xml.sax.saxutils import escape, quoteattr

from ..message import Message
from .base import Delivery
from .text import spoken
from .twilio import TwilioClient

RING_FOR = 30           # seconds the phone rings before Twilio gives up (no-answer)
MAX_WORDS = 1600        # escaped characters of the spoken text (said twice in at most 4,000 of TwiML)


def call_twiml(message: Message, gather_url: str | None) -> str:
    """The TwiML of the call: say, gather one digit, say it again, then goodbye."""
    words = _fitting(message)
    if gather_url is None or not message.incident:
        return f"<Response><Say>{words}</Say></Response>"
    action = quoteattr(gather_url)
    ask = "Press 1 to acknowledge."
    return (f"<Response><Gather numDigits=\"1\" timeout=\"8\" action={action} method=\"POST\">"
            f"<Say>{words} {ask}</Say><Pause length=\"1\"/><Say>{words} {ask}</Say></Gather>"
            f"<Say>Nothing was pressed. The incident is not acknowledged. Goodbye.</Say></Response>")


def _fitting(message: Message) -> str:
    """The spoken words, escaped for XML, short enough that the call's TwiML (which says them twice)
    stays under Twilio's 4,000 characters: 600 characters, or 320 when escaping made them too long
    (escaping turns one character into at most five, so 320 always fit)."""
    words = escape(spoken(message, 600))
    return words if len(words) <= MAX_WORDS else escape(spoken(message, MAX_WORDS // 5))


@dataclass
class VoiceChannel:
    client: TwilioClient
    caller_id: str              # the tenant's Twilio number, +E164
    to: str                     # the person's phone, +E164
    gather_url: str | None
    status_url: str | None
    name: str = "voice"

    async def send(self, message: Message) -> Delivery:
        result, _ = await self.client.create_call(self.to, self.caller_id, call_twiml(message, self.gather_url),
                                                  status_callback=self.status_url, ring_for=RING_FOR)
        return result
