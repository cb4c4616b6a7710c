"""A notification about an incident, as every stage hands it to the gateway."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Message:
    """A notification about an incident, in plain words."""

    tenant: str
    incident: str
    event: str              # detected | proposed | recovered | resolved | escalated | ...
    priority: str
    text: str
    recipient: str = "on-call"
    data: dict[str, Any] = field(default_factory=dict)
    links: dict[str, str] = field(default_factory=dict)  # recipient -> approval link (tokens: never ledgered or logged)
    buttons: list[list[tuple[str, str]]] = field(default_factory=list)  # chat buttons: (label, callback data)
