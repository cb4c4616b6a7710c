"""Messages as people read them: the words every chat channel shares."""

from __future__ import annotations

import unicodedata

from ..message import Message

# Messages as people read them on a phone: plain text (no markup, so `_`, `*` or `<` in service
# names or alert text can never break formatting), the facts first.
HEADLINES = {
    "detected": "🔴 Incident detected", "proposed": "🛠 Action recommended", "escalated": "⬆️ Priority raised",
    "executed": "✅ Recovery action ran", "failed": "❌ Recovery action failed", "expired": "⌛ Approval expired",
    "recovered": "💚 Recovered", "resolved": "✔️ Resolved", "rejected": "✋ Action rejected",
    "dissent": "⚖️ Diagnoses disagree: your call", "grouped": "🗂 Group update", "summary": "🌙 Held during quiet hours",
    "silence": "🔕 Silence", "not_recovered": "❌ Recovery did not work", "updated": "🔴 Incident widened",
    "answered": "🗳 Answered",
}


def phone_text(message: Message) -> str:
    service = message.data.get("service")
    lines = [headline(message)]
    if service:
        lines.append(f"Service: {service}")
    lines.append(message.text)
    if message.event in ("proposed", "dissent") and message.buttons:
        lines.append("Approve or reject below. Only allowed approvers count; every tap is recorded.")
    return "\n".join(lines)


def headline(message: Message) -> str:
    """The first line: what happened, the priority and the incident."""
    head = f"{HEADLINES.get(message.event, message.event.capitalize())} · {message.priority}"
    return f"{head} · {message.incident}" if message.incident else head


def spoken(message: Message, limit: int = 600) -> str:
    """The message as a voice call says it: no symbols a speech engine would spell out, at most ``limit`` characters."""
    head = HEADLINES.get(message.event, message.event.capitalize())
    head = "".join(c for c in head if c.isalnum() or c in " -").strip()
    service = message.data.get("service")
    about = f", incident {message.incident}" if message.incident else ""
    words = f"AlertEngine. {head}, priority {message.priority}{about}. " + \
        (f"Service {service}. " if service else "") + message.text.replace("\n", ". ")
    # nothing a speech engine would spell out or XML cannot carry: symbols (emoji) and control characters
    words = "".join(c for c in words if unicodedata.category(c) not in ("So", "Cc", "Cs", "Co", "Cn") or c == "\n")
    return words if len(words) <= limit else words[:limit - 1].rsplit(" ", 1)[0] + "."
