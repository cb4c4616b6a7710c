"""What a model must answer (the forced ``triage`` tool), and the validation of what it did answer."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..errors import FieldError
from ..schema import validate

CATEGORIES = ("database", "network", "memory", "cpu", "external_api", "code_deploy", "config", "unknown")
TOOL_NAME = "triage"
_TEXTS = {"type": "array", "maxItems": 10, "items": {"type": "string", "maxLength": 500}}
TRIAGE_SCHEMA: dict[str, Any] = {
    "type": "object", "additionalProperties": False,
    "required": ["root_cause", "category", "confidence", "suggested_action", "evidence", "logs_to_check"],
    "properties": {
        "root_cause": {"type": "string", "minLength": 1, "maxLength": 1000,
                       "description": "the most likely root cause, in one or two plain sentences"},
        "category": {"type": "string", "enum": list(CATEGORIES)},
        "confidence": {"type": "integer", "minimum": 0, "maximum": 100},
        "suggested_action": {"type": ["string", "null"],
                             "description": "one of the allowed actions listed in the context, or null"},
        "evidence": _TEXTS,
        "logs_to_check": _TEXTS,
    },
}
TRIAGE_TOOL = {"name": TOOL_NAME, "description": "Report your diagnosis of the incident. This is your only output.",
               "input_schema": TRIAGE_SCHEMA}


@dataclass(frozen=True)
class Theory:
    root_cause: str
    category: str
    confidence: int
    suggested_action: str | None
    evidence: tuple[str, ...] = ()
    logs_to_check: tuple[str, ...] = ()
    source: str = ""                 # ai:<model> or system
    dropped_action: str | None = None  # a suggestion outside the policy's actions, discarded

    def as_data(self, label: str | None = None) -> dict[str, Any]:
        out: dict[str, Any] = {"root_cause": self.root_cause, "category": self.category,
                               "confidence": self.confidence, "suggested_action": self.suggested_action,
                               "evidence": list(self.evidence), "logs_to_check": list(self.logs_to_check),
                               "source": self.source}
        if label is not None:
            out["label"] = label
        return out


class InvalidAnswerError(FieldError):
    """A model's tool input that breaks the triage schema: the whole answer is discarded."""


def read_theory(tool_input: Any, allowed_actions: list[str], source: str) -> Theory:
    """Validate a triage tool input. A suggested action outside ``allowed_actions`` is dropped (and
    remembered); anything else off-schema raises InvalidAnswerError."""
    try:
        validate(TRIAGE_SCHEMA, tool_input)
    except FieldError as exc:
        raise InvalidAnswerError(exc.field, exc.message) from None
    action = tool_input["suggested_action"]
    dropped = None
    if action is not None and action not in allowed_actions:
        dropped, action = action, None
    return Theory(tool_input["root_cause"], tool_input["category"], tool_input["confidence"], action,
                  tuple(tool_input["evidence"]), tuple(tool_input["logs_to_check"]), source, dropped)


@dataclass(frozen=True)
class Diagnosis:
    """The council's verdict. ``decision``: consensus, dissent, split, single_model or heuristic."""

    decision: str
    actor: str
    confidence: int
    theories: tuple[Theory, ...]
    reason: str
    models: tuple[str, ...] = ()
    notes: tuple[str, ...] = field(default_factory=tuple)

    @property
    def lead(self) -> Theory:
        return self.theories[0]
