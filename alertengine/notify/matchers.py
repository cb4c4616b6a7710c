"""Label matchers with Prometheus Alertmanager's meaning: ``name="value"``, ``!=``, ``=~`` and ``!~``.

Decisions, following Alertmanager:

* A label the alert does not carry counts as the empty string, so ``team!="db"`` matches an alert without
  ``team`` and ``team=~".*"`` matches every alert.
* Regexes are fully anchored (``fullmatch``): ``=~"foo"`` does not match ``foobar``. They run on RE2
  (``google-re2``), Alertmanager's own regex engine: the same syntax (no backreferences or
  lookarounds) and time linear in the label's length, so no rule can stall routing however its
  pattern is written (a backtracking engine takes exponential time on ``(a*)*b``).
* Quoted values use JSON string escaping, so ``str(matcher)`` parses back to an equal matcher.

Every refusal is a :class:`FieldError` naming the field; no input, however odd, raises anything else.
"""

from __future__ import annotations

import functools
import json
import re
from dataclasses import dataclass
from dataclasses import field as dataclass_field
from typing import Any, Mapping, Sequence

import re2

from alertengine.errors import FieldError

OPS = ("=", "!=", "=~", "!~")
REGEX_OPS = ("=~", "!~")

MAX_NAME = 128
MAX_VALUE = 1024
MAX_MATCHERS = 64
# Longest matcher text read at all: a 128-character name, an operator, spaces and a value of 1024
# characters, each written as a six-character \u escape such as \u00e9, fit well within it.
MAX_TEXT = 8192

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
# The name is whatever comes before the first operator character; it is checked on its own so the
# message can say what is wrong with it.
_HEAD = re.compile(r"([^\s=!~\"]*)\s*(=~|!~|!=|=)\s*", re.DOTALL)
_BARE_FORBIDDEN = re.compile(r"[\s,\"]")
_DECODER = json.JSONDecoder(strict=True)


def _show(text: str) -> str:
    """A short, printable rendering of user input for error messages (repr escapes NUL and surrogates)."""
    return repr(text if len(text) <= 40 else text[:40] + "…")


def _bad_text(text: str) -> str | None:
    """Why ``text`` cannot be stored as a label name or value, or None."""
    if "\x00" in text:
        return "contains a NUL character"
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return "is not valid Unicode text (it contains a lone surrogate)"
    return None


_RE2_OPTIONS = re2.Options()
_RE2_OPTIONS.log_errors = False   # a refused pattern is the user's FieldError, not a line on stderr


@functools.lru_cache(maxsize=1024)
def _compile(pattern: str) -> Any:
    return re2.compile(pattern, _RE2_OPTIONS)


def _regex_problem(pattern: str) -> str | None:
    """Why ``pattern`` is not a usable regex, or None (the compiled pattern is then cached)."""
    try:
        _compile(pattern)
    except re2.error as exc:
        detail = exc.args[0].decode("utf-8", "replace") if exc.args and isinstance(exc.args[0], bytes) else str(exc)
        return f"regex {_show(pattern)} does not compile: {detail}"
    except (RecursionError, OverflowError, ValueError):
        return f"regex {_show(pattern)} does not compile: it is too deeply nested or too large"
    return None


def _name_problem(name: object) -> str | None:
    if not isinstance(name, str):
        return "the label name must be a string"
    if not name:
        return "the label name is missing"
    if len(name) > MAX_NAME:
        return f"the label name is longer than {MAX_NAME} characters"
    if not _NAME.fullmatch(name):
        return (f"label name {_show(name)} is not valid: use letters, digits and underscores, "
                "not starting with a digit")
    return None


def _problem(name: object, op: object, value: object) -> str | None:
    """The one place that says what a valid matcher is; returns why this one is not, or None."""
    problem = _name_problem(name)
    if problem:
        return problem
    if op not in OPS:
        return f"operator {_show(str(op))} is not one of =, !=, =~, !~"
    if not isinstance(value, str):
        return f"the value of {name} must be a string"
    if len(value) > MAX_VALUE:
        return f"the value of {name} is longer than {MAX_VALUE} characters"
    bad = _bad_text(value)
    if bad:
        return f"the value of {name} {bad}"
    if op in REGEX_OPS:
        return _regex_problem(value)
    return None


@dataclass(frozen=True)
class Matcher:
    """One label condition. Construct it through :func:`parse_matcher` for user input; building it directly
    with invalid parts is a programming error (ValueError)."""

    name: str
    op: str
    value: str
    _regex: Any = dataclass_field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        problem = _problem(self.name, self.op, self.value)
        if problem:
            raise ValueError(problem)
        if self.op in REGEX_OPS:
            object.__setattr__(self, "_regex", _compile(self.value))

    def matches(self, labels: Mapping[str, str]) -> bool:
        """Whether ``labels`` satisfy this matcher; a missing label counts as the empty string."""
        actual = labels.get(self.name, "")
        if self.op == "=":
            return actual == self.value
        if self.op == "!=":
            return actual != self.value
        assert self._regex is not None
        try:
            found = self._regex.fullmatch(actual) is not None
        except UnicodeEncodeError:   # a lone surrogate in a label (never from the API): match its UTF-8 repair
            found = self._regex.fullmatch(actual.encode("utf-8", "replace").decode("utf-8")) is not None
        return found if self.op == "=~" else not found

    def __str__(self) -> str:
        return f"{self.name}{self.op}{json.dumps(self.value, ensure_ascii=False)}"

    def as_data(self) -> dict[str, str]:
        return {"name": self.name, "op": self.op, "value": self.value}


def parse_matcher(text: object, field: str) -> Matcher:
    """Read one matcher: ``name="value"`` (JSON escapes), ``name=value`` (a bare word without spaces, commas
    or quotes), with any of ``=``, ``!=``, ``=~``, ``!~`` and optional spaces around the operator.

    ``name=`` is refused rather than read as the empty string: write ``name=""``."""
    if not isinstance(text, str):
        raise FieldError(field, f'must be a string like name="value", not {type(text).__name__}')
    if len(text) > MAX_TEXT:
        raise FieldError(field, f"the matcher is longer than {MAX_TEXT} characters")
    bad = _bad_text(text)
    if bad:
        raise FieldError(field, f"the matcher {bad}")
    stripped = text.strip()
    if not stripped:
        raise FieldError(field, 'the matcher is empty; expected name="value"')
    head = _HEAD.match(stripped)
    if head is None:
        raise FieldError(field, f'{_show(stripped)} is not a matcher: expected a label name, an operator '
                                '(=, !=, =~, !~) and a value, like name="value"')
    name, op, rest = head.group(1), head.group(2), stripped[head.end():]
    if not name:
        raise FieldError(field, f"{_show(stripped)} has no label name before the operator {op}")
    problem = _name_problem(name)
    if problem:
        raise FieldError(field, problem)
    if rest.startswith('"'):
        try:
            value, end = _DECODER.raw_decode(rest)
        except json.JSONDecodeError as exc:
            raise FieldError(field, f"the quoted value of {name} is not a valid JSON string: {exc.msg} "
                                    f"(at character {exc.pos + head.end()})") from None
        if rest[end:]:
            raise FieldError(field, f"unexpected text {_show(rest[end:])} after the closing quote")
    elif not rest:
        raise FieldError(field, f'the value of {name} is missing (write {name}{op}"" for the empty string)')
    elif rest.startswith("'"):
        raise FieldError(field, f"the value of {name} uses single quotes; use double quotes")
    elif rest[0] in "=~!":
        raise FieldError(field, f"the value {_show(rest)} starts with an operator character; "
                                "check the operator, or quote the value")
    elif _BARE_FORBIDDEN.search(rest):
        raise FieldError(field, f"the value {_show(rest)} must be in double quotes: an unquoted value cannot "
                                "contain spaces, commas or quotes")
    else:
        value = rest
    problem = _problem(name, op, value)
    if problem:
        raise FieldError(field, problem)
    return Matcher(name, op, value)


def _split_braces(text: str, field: str) -> list[str]:
    """Split ``{a="b", c=~"d,e"}`` (braces optional) at the commas outside double quotes."""
    body = text.strip()
    if body.startswith("{") or body.endswith("}"):
        if not (body.startswith("{") and body.endswith("}") and len(body) >= 2):
            raise FieldError(field, "unbalanced braces: write {name=\"value\", ...}")
        body = body[1:-1]
    parts: list[str] = []
    start, quoted, escaped = 0, False, False
    for i, char in enumerate(body):
        if escaped:
            escaped = False
        elif quoted and char == "\\":
            escaped = True
        elif char == '"':
            quoted = not quoted
        elif char == "," and not quoted:
            parts.append(body[start:i])
            start = i + 1
    if quoted:
        raise FieldError(field, "a quoted value is not closed")
    parts.append(body[start:])
    if len(parts) > 1 and not parts[-1].strip():
        parts.pop()  # one trailing comma, as Alertmanager allows
    if len(parts) == 1 and not parts[0].strip():
        return []
    return parts


def parse_matchers(value: object, field: str) -> tuple[Matcher, ...]:
    """Read a list of matchers from any of the three forms people write:

    * a list of matcher strings, ``["env=\\"prod\\"", "team=~\\"db|web\\""]`` (errors name ``field[i]``);
    * an object ``{name: value}`` meaning equality matchers (errors name ``field.name``);
    * one string in Alertmanager's brace form ``{env="prod", team=~"db|web"}`` (braces optional).

    At most 64 matchers. An empty list is returned as it is; callers that need a selective list (silences)
    check :func:`matches_empty`."""
    if isinstance(value, str):
        if len(value) > MAX_MATCHERS * MAX_TEXT:
            raise FieldError(field, "the matcher list is too long")
        bad = _bad_text(value)
        if bad:
            raise FieldError(field, f"the matcher list {bad}")
        parts = _split_braces(value, field)
        if len(parts) > MAX_MATCHERS:
            raise FieldError(field, f"at most {MAX_MATCHERS} matchers are allowed")
        return tuple(parse_matcher(part, f"{field}[{i}]") for i, part in enumerate(parts))
    if isinstance(value, (list, tuple)):
        if len(value) > MAX_MATCHERS:
            raise FieldError(field, f"at most {MAX_MATCHERS} matchers are allowed")
        return tuple(parse_matcher(item, f"{field}[{i}]") for i, item in enumerate(value))
    if isinstance(value, dict):
        if len(value) > MAX_MATCHERS:
            raise FieldError(field, f"at most {MAX_MATCHERS} matchers are allowed")
        found = []
        for name, wanted in value.items():
            where = f"{field}.{name}" if isinstance(name, str) and _NAME.fullmatch(name) else field
            if not isinstance(name, str):
                problem: str | None = f"label names must be strings, not {type(name).__name__}"
            elif not isinstance(wanted, str):
                problem = f"the value of {_show(name)} must be a string, not {type(wanted).__name__}"
            else:
                problem = _problem(name, "=", wanted)
            if problem:
                raise FieldError(where, problem)
            found.append(Matcher(name, "=", wanted))
        return tuple(found)
    raise FieldError(field, 'must be a list of matchers, an object {"name": "value"} or a string like '
                            '{name="value"}, not ' + type(value).__name__)


def format_matchers(matchers: Sequence[Matcher]) -> str:
    """The brace form, ``{a="b", c=~"d"}``, which :func:`parse_matchers` reads back."""
    return "{" + ", ".join(str(m) for m in matchers) + "}"


def matches_all(matchers: Sequence[Matcher], labels: Mapping[str, str]) -> bool:
    """Whether every matcher matches ``labels``; no matchers match everything."""
    return all(m.matches(labels) for m in matchers)


def matches_empty(matchers: Sequence[Matcher]) -> bool:
    """Whether the matchers match an alert lacking all their labels, i.e. would select every alert.

    Alertmanager refuses a silence for which this is true: at least one matcher must not match the empty
    string. No matchers -> True."""
    return all(m.matches({}) for m in matchers)
