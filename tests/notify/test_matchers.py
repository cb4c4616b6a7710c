"""Label matchers: Alertmanager's meaning (missing label = "", anchored regexes), the three input forms,
JSON-escaped round trips, and a FieldError naming the field for every refusal, whatever the input."""

from __future__ import annotations

import pytest

from alertengine.errors import FieldError
from alertengine.notify.matchers import (OPS, Matcher, format_matchers, matches_all, matches_empty, parse_matcher,
                                         parse_matchers)

# (matcher, labels, expected): every operator against a present, a different, an empty and an absent label.
MATCHES = [
    ('env="prod"', {"env": "prod"}, True),
    ('env="prod"', {"env": "dev"}, False),
    ('env="prod"', {"env": ""}, False),
    ('env="prod"', {}, False),
    ('env="prod"', {"env": "prod", "team": "db"}, True),
    ('env="prod"', {"ENV": "prod"}, False),
    ('env=""', {}, True),
    ('env=""', {"env": ""}, True),
    ('env=""', {"env": "prod"}, False),
    ('env!="prod"', {"env": "prod"}, False),
    ('env!="prod"', {"env": "dev"}, True),
    ('env!="prod"', {"env": ""}, True),
    ('env!="prod"', {}, True),
    ('env!=""', {}, False),
    ('env!=""', {"env": "x"}, True),
    ('env=~"prod|staging"', {"env": "prod"}, True),
    ('env=~"prod|staging"', {"env": "staging"}, True),
    ('env=~"prod|staging"', {"env": "dev"}, False),
    ('env=~"prod|staging"', {"env": "production"}, False),
    ('env=~"prod|staging"', {}, False),
    ('env=~"foo"', {"env": "foobar"}, False),
    ('env=~"foo"', {"env": "xfoo"}, False),
    ('env=~"foo"', {"env": "foo"}, True),
    ('env=~"fo+"', {"env": "fooo"}, True),
    ('env=~".*"', {}, True),
    ('env=~".*"', {"env": "anything"}, True),
    ('env=~".+"', {}, False),
    ('env=~".+"', {"env": ""}, False),
    ('env=~".+"', {"env": "x"}, True),
    ('env=~"a.c"', {"env": "a\nc"}, False),
    ('env!~"prod"', {"env": "prod"}, False),
    ('env!~"prod"', {"env": "production"}, True),
    ('env!~"prod"', {"env": ""}, True),
    ('env!~"prod"', {}, True),
    ('env!~".*"', {}, False),
    ('env!~".+"', {}, True),
    ('env!~".+"', {"env": "x"}, False),
]


@pytest.mark.parametrize("text,labels,expected", MATCHES)
def test_each_operator_against_present_absent_and_empty_labels(text: str, labels: dict[str, str],
                                                              expected: bool) -> None:
    assert parse_matcher(text, "m").matches(labels) is expected


# (text, name, op, value)
PARSED = [
    ('a="b"', "a", "=", "b"),
    ('a = "b"', "a", "=", "b"),
    ('  a=b  ', "a", "=", "b"),
    ("a=b", "a", "=", "b"),
    ('a!="b"', "a", "!=", "b"),
    ('a != b', "a", "!=", "b"),
    ('a=~"x.*"', "a", "=~", "x.*"),
    ("a=~x.*", "a", "=~", "x.*"),
    ('a !~ "x|y"', "a", "!~", "x|y"),
    ('a=""', "a", "=", ""),
    ('_a9="v"', "_a9", "=", "v"),
    ('a="b c, d"', "a", "=", "b c, d"),
    ('a="q\\"uote"', "a", "=", 'q"uote'),
    ('a="back\\\\slash"', "a", "=", "back\\slash"),
    ('a="line\\nbreak"', "a", "=", "line\nbreak"),
    ('a="tab\\there"', "a", "=", "tab\there"),
    ('a="\\u00e9t\\u00e9"', "a", "=", "été"),
    ('a="été"', "a", "=", "été"),
    ("a=été", "a", "=", "été"),
    ('a="\\ud83d\\ude00"', "a", "=", "\U0001F600"),
    ('a="{x=y}"', "a", "=", "{x=y}"),
    ('a=~"\\\\d+"', "a", "=~", "\\d+"),
    ("n" * 128 + '="v"', "n" * 128, "=", "v"),
    ('a="' + "v" * 1024 + '"', "a", "=", "v" * 1024),
]


@pytest.mark.parametrize("text,name,op,value", PARSED)
def test_parse_matcher_reads_every_written_form(text: str, name: str, op: str, value: str) -> None:
    m = parse_matcher(text, "m")
    assert (m.name, m.op, m.value) == (name, op, value)


# (matcher parts, its text): the text is JSON-escaped and parses back to the same matcher.
ROUND_TRIPS = [
    (("a", "=", "b"), 'a="b"'),
    (("a", "!=", ""), 'a!=""'),
    (("a", "=", 'q"x'), 'a="q\\"x"'),
    (("a", "=", "back\\slash"), 'a="back\\\\slash"'),
    (("a", "=", "two\nlines"), 'a="two\\nlines"'),
    (("a", "=", "b, c"), 'a="b, c"'),
    (("a", "=~", "x\\.y|z"), 'a=~"x\\\\.y|z"'),
    (("a", "!~", '"quoted"'), 'a!~"\\"quoted\\""'),
    (("a", "=", "été"), 'a="été"'),
    (("a", "=", "\x01"), 'a="\\u0001"'),
]


@pytest.mark.parametrize("parts,text", ROUND_TRIPS)
def test_str_is_json_escaped_and_round_trips(parts: tuple[str, str, str], text: str) -> None:
    m = Matcher(*parts)
    assert str(m) == text
    back = parse_matcher(text, "m")
    assert (back.name, back.op, back.value) == parts
    assert back == m


def test_as_data() -> None:
    assert parse_matcher('team=~"db|web"', "m").as_data() == {"name": "team", "op": "=~", "value": "db|web"}
    assert OPS == ("=", "!=", "=~", "!~")


# (text, a word the message must contain): each is refused, naming the field it was given.
PARSE_ERRORS = [
    ("", "empty"),
    ("   ", "empty"),
    ("a", "not a matcher"),
    ("just words", "not a matcher"),
    ('a~="b"', "not a matcher"),
    ('="b"', "no label name"),
    ('9a="b"', "label name"),
    ('a-b="c"', "label name"),
    ('é="c"', "label name"),
    ("n" * 129 + '="v"', "longer than 128"),
    ("a=", "missing"),
    ("a=~", "missing"),
    ('a="b', "JSON string"),
    ('a="\\x41"', "JSON string"),
    ('a="raw\nnewline"', "JSON string"),
    ('a="b"c', "after the closing quote"),
    ('a="b" "c"', "after the closing quote"),
    ("a=b c", "double quotes"),
    ("a=b,c", "double quotes"),
    ('a=b"c', "double quotes"),
    ("a='b'", "single quotes"),
    ("a==b", "operator character"),
    ('a=="b"', "operator character"),
    ("a=~~b", "operator character"),
    ('a="' + "v" * 1025 + '"', "longer than 1024"),
    ('a=~"(' + "v" * 1023 + ')"', "longer than 1024"),
    ('a=~"("', "regex"),
    ('a=~"[a-"', "regex"),
    ('a!~"*x"', "regex"),
    ('a=~"a{1001}"', "repetition"),          # RE2 caps a counted repeat at 1000
    ('a=~"(a)\\1"', "escape"),               # RE2 has no backreferences (Alertmanager's syntax)
    ('a=~"(?=a)"', "regex"),                 # nor lookarounds
    ('a="\\u0000"', "NUL"),
    ('a="\\ud800"', "surrogate"),
]


def test_regexes_take_time_linear_in_the_label() -> None:
    """A pattern that makes a backtracking engine take exponential time: RE2 answers at once."""
    import time
    matcher = parse_matcher('a=~"(a*)*b"', "m")
    started = time.process_time()
    assert not matcher.matches({"a": "a" * 100_000 + "c"})
    assert time.process_time() - started < 5.0   # a backtracking engine would not finish this year


@pytest.mark.parametrize("text,word", PARSE_ERRORS)
def test_parse_errors_name_the_field_and_say_what_is_wrong(text: str, word: str) -> None:
    with pytest.raises(FieldError) as caught:
        parse_matcher(text, "silence.matchers[0]")
    assert caught.value.field == "silence.matchers[0]"
    assert word.lower() in caught.value.message.lower()


ODD_INPUTS: list[object] = [
    None, 5, 1.5, True, b'a="b"', ["a=b"], {"a": "b"}, [["a=b"]],
    "\ud800", 'a="\ud800"', "a=\udfff", "\ud800=b", "\x00", "a=b\x00", 'a="\x00"', "\x00a=b",
    "x" * 10240, 'a="' + "x" * 10240 + '"', "a=" + "x" * 10240, "a" * 10240 + "=b", "=" * 10240,
    '"' * 10240, "\\" * 10240, "{" * 10240, 'a=~"' + "(" * 1000 + '"', "a=~" + "(" * 600,
    "a=\u2028", "\u200b=b", "a=b\ufeff c",
]


@pytest.mark.parametrize("value", ODD_INPUTS, ids=range(len(ODD_INPUTS)))
def test_odd_input_to_parse_matcher_is_a_field_error(value: object) -> None:
    with pytest.raises(FieldError) as caught:
        parse_matcher(value, "f")
    assert caught.value.field == "f"


# (value, expected matchers as (name, op, value))
FORMS = [
    (['a="b"', "c!=d", 'e=~"f.*"'], [("a", "=", "b"), ("c", "!=", "d"), ("e", "=~", "f.*")]),
    (("a=b",), [("a", "=", "b")]),
    ([], []),
    ({"env": "prod", "team": "db, web"}, [("env", "=", "prod"), ("team", "=", "db, web")]),
    ({}, []),
    ('{a="b", c=~"d.*"}', [("a", "=", "b"), ("c", "=~", "d.*")]),
    ('{a="x,y", b=~"1,2|3", c="z"}', [("a", "=", "x,y"), ("b", "=~", "1,2|3"), ("c", "=", "z")]),
    ('{a="q\\",r", b="s"}', [("a", "=", 'q",r'), ("b", "=", "s")]),
    ('{a="ends\\\\", b="t"}', [("a", "=", "ends\\"), ("b", "=", "t")]),
    ('{a="{b}"}', [("a", "=", "{b}")]),
    ("{a=b,c!=d}", [("a", "=", "b"), ("c", "!=", "d")]),
    ('{a="b",}', [("a", "=", "b")]),
    ('  { a = "b" , c =~ "d" }  ', [("a", "=", "b"), ("c", "=~", "d")]),
    ('a="b", c="d"', [("a", "=", "b"), ("c", "=", "d")]),
    ("{}", []),
    ("", []),
]


@pytest.mark.parametrize("value,expected", FORMS)
def test_parse_matchers_reads_lists_objects_and_the_brace_form(value: object,
                                                               expected: list[tuple[str, str, str]]) -> None:
    assert [(m.name, m.op, m.value) for m in parse_matchers(value, "m")] == expected


def test_format_matchers_writes_the_brace_form() -> None:
    matchers = (Matcher("a", "=", 'x",y'), Matcher("b", "=~", "1|2"))
    assert format_matchers(matchers) == '{a="x\\",y", b=~"1|2"}'
    assert parse_matchers('{a="x\\",y", b=~"1|2"}', "m") == matchers


# (value, field named by the error)
LIST_ERRORS: list[tuple[object, str]] = [
    (None, "m"), (5, "m"), (True, "m"), (1.5, "m"), ({"a=b"}, "m"), (b"a=b", "m"),
    (["a=b", "c=d", "9=x"], "m[2]"),
    (["a=b", None], "m[1]"),
    ([["a=b"]], "m[0]"),
    ([{"a": "b"}], "m[0]"),
    (["a=b"] * 65, "m"),
    ("{a=b, 9=x}", "m[1]"),
    ("{a=b,,c=d}", "m[1]"),
    ('{a="b}', "m"),
    ("{a=b", "m"),
    ("a=b}", "m"),
    ('{a="b", c=~"("}', "m[1]"),
    (",".join(["a=b"] * 65), "m"),
    ({"a": 1}, "m.a"),
    ({"a": None}, "m.a"),
    ({"a": ["b"]}, "m.a"),
    ({"a": "\ud800"}, "m.a"),
    ({"a": "x" * 1025}, "m.a"),
    ({1: "b"}, "m"),
    ({None: "b"}, "m"),
    ({"9a": "b"}, "m"),
    ({"\ud800": "b"}, "m"),
    ({"": "b"}, "m"),
    ({f"l{i}": "v" for i in range(65)}, "m"),
    ("\ud800", "m"),
    ("{a=\x00}", "m"),
    ("x" * 10240, "m[0]"),
    ("{" + "a=b," * 20000 + "}", "m"),
]


@pytest.mark.parametrize("value,field", LIST_ERRORS, ids=range(len(LIST_ERRORS)))
def test_parse_matchers_errors_name_the_item(value: object, field: str) -> None:
    with pytest.raises(FieldError) as caught:
        parse_matchers(value, "m")
    assert caught.value.field == field


def test_at_most_64_matchers() -> None:
    assert len(parse_matchers([f"l{i}=v" for i in range(64)], "m")) == 64
    assert len(parse_matchers({f"l{i}": "v" for i in range(64)}, "m")) == 64


# (matchers, labels, expected)
ALL = [
    ([], {}, True),
    ([], {"a": "1"}, True),
    (['a="1"', 'b="2"'], {"a": "1", "b": "2"}, True),
    (['a="1"', 'b="2"'], {"a": "1"}, False),
    (['a="1"', 'b!="2"'], {"a": "1"}, True),
    (['a=~"1|2"', 'b!~"x.*"'], {"a": "2", "b": "y"}, True),
    (['a=~"1|2"', 'b!~"x.*"'], {"a": "2", "b": "xy"}, False),
]


@pytest.mark.parametrize("texts,labels,expected", ALL)
def test_matches_all(texts: list[str], labels: dict[str, str], expected: bool) -> None:
    assert matches_all(parse_matchers(texts, "m"), labels) is expected


# (matchers, whether they match an alert lacking all their labels, i.e. every alert)
EMPTY = [
    ([], True),
    (['a=""'], True),
    (['a!="x"'], True),
    (['a=~".*"'], True),
    (['a=~"x*"'], True),
    (['a!~".+"'], True),
    (['a=~".*"', 'b!="y"'], True),
    (['a="x"'], False),
    (['a!=""'], False),
    (['a=~".+"'], False),
    (['a!~".*"'], False),
    (['a=""', 'b="x"'], False),
    (['a!="x"', 'b=~"y|"', 'c=~"z+"'], False),
]


@pytest.mark.parametrize("texts,expected", EMPTY)
def test_matches_empty(texts: list[str], expected: bool) -> None:
    assert matches_empty(parse_matchers(texts, "m")) is expected


@pytest.mark.parametrize("parts", [("a", "==", "b"), ("9", "=", "b"), ("a", "=~", "("), ("a", "=", 5)])
def test_building_an_invalid_matcher_directly_is_a_programming_error(parts: tuple) -> None:
    with pytest.raises(ValueError):
        Matcher(*parts)


def test_matchers_are_values() -> None:
    assert parse_matcher('a=~"x"', "m") == parse_matcher("a =~ x", "m")
    assert len({parse_matcher('a=~"x"', "m"), parse_matcher("a=~x", "m")}) == 1
    with pytest.raises(AttributeError):
        parse_matcher("a=b", "m").value = "c"  # type: ignore[misc]
