"""Escalation chains as the routing document states them: ordered steps, each a delay from the
start of the incident and whom to tell then, repeated N times, with acknowledgement reminders.

    [escalation.default]          # what every incident follows unless its route names another
    steps = [
      { after = 180.0, receivers = ["responders"], prefer = "voice" },   # call the primary
      { after = 300.0, receivers = ["responders:secondary"] },           # then the secondary
    ]
    repeat = 0                    # run the steps again this many times (each round as long as the last step's after)
    remind_after = 0.0            # seconds after an acknowledgement to remind, while still open (0: never)

Without an ``[escalation.default]`` the built-in one above (the product's promise: a voice call to
the primary after 180 s without acknowledgement or approval, the secondary after 300 s) applies.
A route says ``escalation = "<name>"`` or ``escalation = "none"``; ``[defaults] escalation`` names
the chain of routes that say nothing."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from ..errors import FieldError
from ..schema import validate

PREFERRABLE = ("voice", "telegram", "slack", "whatsapp", "email", "webhook")
STEP = {
    "type": "object", "additionalProperties": False, "required": ["after", "receivers"],
    "properties": {
        "after": {"type": "number", "minimum": 0, "maximum": 7 * 86_400,
                  "description": "seconds after the incident opened (or this round began)"},
        "receivers": {"type": "array", "minItems": 1, "maxItems": 32, "uniqueItems": True,
                      "items": {"type": "string", "maxLength": 80}},
        "prefer": {"type": "string", "enum": list(PREFERRABLE),
                   "description": "try this channel of each person first (a call: voice)"},
        "note": {"type": "string", "maxLength": 200},
    },
}
CHAIN = {
    "type": "object", "additionalProperties": False, "required": ["steps"],
    "properties": {"steps": {"type": "array", "minItems": 1, "maxItems": 20, "items": STEP},
                   "repeat": {"type": "integer", "minimum": 0, "maximum": 10},
                   "remind_after": {"type": "number", "minimum": 0, "maximum": 7 * 86_400}},
}
CHAINS = {"type": "object", "maxProperties": 50, "additionalProperties": CHAIN}


@dataclass(frozen=True)
class Step:
    after: float
    receivers: tuple[str, ...]
    prefer: str | None
    note: str


@dataclass(frozen=True)
class Chain:
    name: str
    steps: tuple[Step, ...]
    repeat: int
    remind_after: float

    @property
    def round_length(self) -> float:
        return self.steps[-1].after


BUILT_IN = Chain("default", (Step(180.0, ("responders",), "voice", "call the primary"),
                             Step(300.0, ("responders:secondary",), None, "tell the secondary")), 0, 0.0)


def parse_chains(doc: Any, receiver_pattern: str, field: str = "escalation") -> dict[str, Chain]:
    """The named chains of a routing document (plus the built-in default unless it names its own)."""
    validate(CHAINS, doc, field)
    receiver = re.compile(receiver_pattern)
    out: dict[str, Chain] = {"default": BUILT_IN}
    for name, chain in doc.items():
        if not re.fullmatch(r"[a-z0-9][a-z0-9_.-]{0,63}", name) or name == "none":
            raise FieldError(f"{field}.{name}", "a chain name is 1-64 of a-z, 0-9, '_', '.', '-' (and not 'none')")
        steps = []
        for i, step in enumerate(chain["steps"]):
            where = f"{field}.{name}.steps[{i}]"
            for j, r in enumerate(step["receivers"]):
                if not receiver.fullmatch(r):
                    raise FieldError(f"{where}.receivers[{j}]", f"{r!r} is not a receiver")
            if steps and step["after"] <= steps[-1].after:
                raise FieldError(f"{where}.after", "each step comes after the one before")
            steps.append(Step(float(step["after"]), tuple(step["receivers"]), step.get("prefer"),
                              step.get("note", "")))
        if chain.get("repeat", 0) and steps[-1].after <= 0:
            raise FieldError(f"{field}.{name}.repeat", "a repeating chain's last step needs after > 0")
        out[name] = Chain(name, tuple(steps), int(chain.get("repeat", 0)), float(chain.get("remind_after", 0.0)))
    return out
