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
    # a proposal's approval references, per recipient key: {theory label, or "" without a dissent: ref};
    # each recipient's buttons carry only their own (recovery/orchestrator.py binds them to that person)
    refs: dict[str, dict[str, str]] = field(default_factory=dict)
    code: str = ""          # the incident's reply code (notify/replies.py), for channels without buttons


def approval_buttons(refs: dict[str, str]) -> list[list[tuple[str, str]]]:
    """Chat buttons for one recipient's approval references: Approve / Reject, or with a dissent one
    "Trust <theory>" per theory and Reject. Button data is ``ap:<ref>:y|n``, never a token."""
    if not refs:
        return []
    if set(refs) == {""}:
        return [[("Approve", f"ap:{refs['']}:y"), ("Reject", f"ap:{refs['']}:n")]]
    labels = sorted(k for k in refs if k)
    return [[(f"Trust {c}", f"ap:{refs[c]}:y") for c in labels], [("Reject", f"ap:{refs[labels[0]]}:n")]]
