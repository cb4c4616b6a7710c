"""The JSON schema of the routing document (``routes.py``): what each key may hold."""

from __future__ import annotations

from .people import ID_PATTERN
from .vocabulary import (
              CATEGORIES,
              EVENTS,
              PRIORITY_SEVERITY,
              RECEIVER_PATTERN,
              SEVERITIES,
)

_SECONDS = {"type": "number", "minimum": 0, "maximum": 7 * 86_400}
_STRINGS = {"type": "array", "maxItems": 64, "items": {"type": "string", "minLength": 1, "maxLength": 256}}
_RECEIVERS = {"type": "array", "maxItems": 64, "uniqueItems": True,
              "items": {"type": "string", "pattern": RECEIVER_PATTERN}}
_GROUPING = {"group_by": {"type": "array", "maxItems": 32, "items": {"type": "string", "maxLength": 128}},
             "group_wait": _SECONDS, "group_interval": _SECONDS, "repeat_interval": _SECONDS}
MATCH = {
    "type": "object", "additionalProperties": False,
    "properties": {
        "severity": {"type": "array", "items": {"type": "string", "enum": list(SEVERITIES)}},
        "priority": {"type": "array", "items": {"type": "string", "enum": list(PRIORITY_SEVERITY)}},
        "category": {"type": "array", "items": {"type": "string", "enum": list(CATEGORIES)}},
        "event": {"type": "array", "items": {"type": "string", "enum": list(EVENTS)}},
        "source": _STRINGS, "service": _STRINGS, "keywords": _STRINGS,
        "labels": {"description": "matchers: ['team=\"payments\"', 'env=~\"prod.*\"'] or {team = \"payments\"}"},
    },
}
QUIET = {
    "type": "object", "additionalProperties": False,
    "properties": {
        "start": {"type": "string", "maxLength": 5}, "end": {"type": "string", "maxLength": 5},
        "time_zone": {"type": "string", "maxLength": 64},
        "windows": {"type": "array", "maxItems": 16, "items": {"type": "object"},
                    "description": "recurring windows (times, weekdays, days_of_month, months, location)"},
        "suppress_below": {"type": "string", "enum": list(SEVERITIES)},
        "then": {"type": "string", "enum": ["deliver", "summary", "drop"],
                 "description": "what happens to what was held back when the window ends"},
    },
}
ROUTE = {
    "type": "object", "additionalProperties": False, "required": ["name", "receivers"],
    "properties": {
        "name": {"type": "string", "pattern": ID_PATTERN},
        "match": MATCH, "receivers": _RECEIVERS, "continue": {"type": "boolean"},
        "rate_limit": {"type": "integer", "minimum": 0, "maximum": 1_000_000},
        "rate_window": {"type": "number", "minimum": 1, "maximum": 7 * 86_400},
        "escalate_after": {"type": "integer", "minimum": 0, "maximum": 1_000_000},
        "escalate_to": {"type": "string", "enum": list(SEVERITIES)},
        "quiet_hours": QUIET, **_GROUPING,
        "escalation": {"type": "string", "maxLength": 64, "description": "the chain to follow, or none"},
    },
}
ROUTING_SCHEMA = {
    "type": "object", "additionalProperties": False,
    "properties": {
        "defaults": {"type": "object", "additionalProperties": False, "properties": {
            "receivers": _RECEIVERS, "retry_for": {"type": "number", "minimum": 10, "maximum": 7 * 86_400},
            "failover_after": {"type": "integer", "minimum": 1, "maximum": 100}, **_GROUPING,
            "escalation": {"type": "string", "maxLength": 64}}},
        "escalation": {"type": "object", "description": "named escalation chains (chains.py)"},
        "route": {"type": "array", "maxItems": 500, "items": ROUTE},
        "inhibit": {"type": "array", "maxItems": 200, "items": {
            "type": "object", "additionalProperties": False, "required": ["source", "target"],
            "properties": {"name": {"type": "string", "pattern": ID_PATTERN}, "source": {}, "target": {},
                           "equal": {"type": "array", "maxItems": 32,
                                     "items": {"type": "string", "maxLength": 128}}}}},
    },
}
