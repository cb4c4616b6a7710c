"""A small JSON Schema (2020-12 subset) validator: the request schemas the API publishes are the
ones it enforces, and a failure names the offending field."""

from __future__ import annotations

import functools
import math
import json
import re
from typing import Any

from .errors import FieldError

Schema = dict[str, Any]
_TYPES: dict[str, tuple[type, ...]] = {
    "object": (dict,), "array": (list,), "string": (str,), "boolean": (bool,), "null": (type(None),),
    "integer": (int,), "number": (int, float),
}


class SchemaError(FieldError):
    pass


def _type_ok(value: Any, name: str) -> bool:
    if isinstance(value, bool) and name in ("integer", "number"):
        return False
    if name == "number" and isinstance(value, float) and not math.isfinite(value):
        return False
    return isinstance(value, _TYPES[name])


@functools.lru_cache(maxsize=512)
def _pattern(source: str) -> re.Pattern[str]:
    r"""A schema pattern with JSON Schema's (ECMA-262) meaning of ``$``: the end of the text.

    Python's ``$`` also matches before a final newline, so ``^[0-9]+$`` would accept ``"42\n"``:
    a pasted line break would pass validation. Every unescaped ``$`` outside a character class
    becomes ``\Z``."""
    out, i, in_class = [], 0, False
    while i < len(source):
        ch = source[i]
        if ch == "\\":
            out.append(source[i:i + 2])
            i += 2
            continue
        if ch == "[":
            in_class = True
        elif ch == "]":
            in_class = False
        out.append("\\Z" if ch == "$" and not in_class else ch)
        i += 1
    return re.compile("".join(out))


def validate(schema: Schema, value: Any, field: str = "") -> Any:
    """Check ``value`` against ``schema``; raise SchemaError naming the first bad field."""
    types = schema.get("type")
    if types is not None:
        names = [types] if isinstance(types, str) else list(types)
        if not any(_type_ok(value, n) for n in names):
            raise SchemaError(field, f"must be of type {' or '.join(names)}")
    if "enum" in schema and value not in schema["enum"]:
        raise SchemaError(field, f"must be one of {', '.join(map(str, schema['enum']))}")
    if isinstance(value, str):
        if len(value) < schema.get("minLength", 0):
            raise SchemaError(field, f"must be at least {schema['minLength']} characters")
        if "maxLength" in schema and len(value) > schema["maxLength"]:
            raise SchemaError(field, f"must be at most {schema['maxLength']} characters")
        if "pattern" in schema and not _pattern(schema["pattern"]).search(value):
            raise SchemaError(field, f"does not match the pattern {schema['pattern']}")
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        if "minimum" in schema and value < schema["minimum"]:
            raise SchemaError(field, f"must be at least {schema['minimum']}")
        if "maximum" in schema and value > schema["maximum"]:
            raise SchemaError(field, f"must be at most {schema['maximum']}")
    elif isinstance(value, list):
        if "maxItems" in schema and len(value) > schema["maxItems"]:
            raise SchemaError(field, f"must have at most {schema['maxItems']} items")
        if "minItems" in schema and len(value) < schema["minItems"]:
            raise SchemaError(field, f"must have at least {schema['minItems']} item(s)")
        if "items" in schema:
            for i, item in enumerate(value):
                validate(schema["items"], item, f"{field}[{i}]")
        if schema.get("uniqueItems"):
            seen: set[str] = set()
            for i, item in enumerate(value):
                key = json.dumps(item, sort_keys=True)
                if key in seen:
                    raise SchemaError(f"{field}[{i}]", "repeats an earlier item")
                seen.add(key)
    elif isinstance(value, dict):
        for name in schema.get("required", ()):
            if name not in value:
                raise SchemaError(_join(field, name), "is required")
        if "maxProperties" in schema and len(value) > schema["maxProperties"]:
            raise SchemaError(field, f"must have at most {schema['maxProperties']} properties")
        props = schema.get("properties", {})
        extra = schema.get("additionalProperties", True)
        for name, item in value.items():
            sub = _join(field, name)
            if name in props:
                validate(props[name], item, sub)
            elif extra is False:
                raise SchemaError(sub, "is not a known field")
            elif isinstance(extra, dict):
                validate(extra, item, sub)
    return value


def _join(field: str, name: str) -> str:
    return f"{field}.{name}" if field else name
