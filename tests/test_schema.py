"""The request validator: patterns mean what JSON Schema says, so a trailing newline never slips through."""

from __future__ import annotations

import pytest

from alertengine.schema import SchemaError, validate

# (pattern, value, accepted) — ECMA-262 semantics: "$" is the end of the text, not "before a final newline"
CASES = [
    (r"^[0-9]{1,20}$", "12345", True),
    (r"^[0-9]{1,20}$", "12345\n", False),
    (r"^[0-9]{1,20}$", "\n12345", False),
    (r"^-?[0-9]{1,20}$", "-42", True),
    (r"^[A-Za-z0-9_-]{1,256}$", "tg-hook-secret-123", True),
    (r"^[A-Za-z0-9_-]{1,256}$", "tg-hook-secret-123\n", False),
    (r"^[$a]+$", "$a$", True),           # "$" inside a character class is a literal
    (r"^price\$$", "price$", True),      # an escaped "$" is a literal
    (r"^price\$$", "price$\n", False),
    (r"abc", "xxabcxx", True),           # unanchored patterns search, as JSON Schema says
    (r"^(whatsapp:)?\+[1-9][0-9]{6,14}$", "whatsapp:+4915112345678", True),
    (r"^(whatsapp:)?\+[1-9][0-9]{6,14}$", "+4915112345678\n", False),
]


@pytest.mark.parametrize("pattern, value, accepted", CASES)
def test_patterns_anchor_at_the_very_end(pattern: str, value: str, accepted: bool) -> None:
    schema = {"type": "string", "pattern": pattern}
    if accepted:
        assert validate(schema, value, "f") == value
    else:
        with pytest.raises(SchemaError) as err:
            validate(schema, value, "f")
        assert err.value.field == "f"
