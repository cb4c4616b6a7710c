"""HTTP/1.1 on the wire for health polls: the request each URL becomes, and reading answers fed in pieces."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from alertengine.signals.http1 import (MAX_BODY_BYTES, MAX_HEAD_BYTES, AnswerError, ClosedUnanswered, Malformed,
                                       Response, ResponseReader, TooLarge, UnsupportedCoding, UnusableUrl, prepare)

HEADERS = b"User-Agent: t\r\n"


# --------------------------------------------------------------------------------------------
# prepare: URL -> request
# --------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("url", "origin", "request_line", "host"), [
    ("http://svc.example.test/health", ("http", "svc.example.test", 80), "GET /health", "svc.example.test"),
    ("http://svc.example.test:8080/health/alerts?x=1&y=2#frag", ("http", "svc.example.test", 8080),
     "GET /health/alerts?x=1&y=2", "svc.example.test:8080"),
    ("https://Svc.Example.Test", ("https", "svc.example.test", 443), "GET /", "svc.example.test"),
    ("https://svc.example.test:443/h", ("https", "svc.example.test", 443), "GET /h", "svc.example.test"),
    ("http://127.0.0.1:9000/h", ("http", "127.0.0.1", 9000), "GET /h", "127.0.0.1:9000"),
    ("http://[::1]:9000/h", ("http", "::1", 9000), "GET /h", "[::1]:9000"),
    ("http://[2001:DB8::1]/h", ("http", "2001:db8::1", 80), "GET /h", "[2001:db8::1]"),
    # spaces and non-ASCII are %-encoded, existing escapes are kept
    ("http://svc.example.test/a b/é?q=a b&r=%2F", ("http", "svc.example.test", 80),
     "GET /a%20b/%C3%A9?q=a%20b&r=%2F", "svc.example.test"),
    ("http://bücher.example/h", ("http", "xn--bcher-kva.example", 80), "GET /h", "xn--bcher-kva.example"),
    ("http://svc.example.test./h", ("http", "svc.example.test", 80), "GET /h", "svc.example.test"),
])
def test_a_url_becomes_one_get_with_its_host_header(url: str, origin: tuple, request_line: str, host: str) -> None:
    request = prepare(url, HEADERS)
    assert request.origin == origin
    assert request.wire == f"{request_line} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: t\r\n\r\n".encode()
    assert (request.ip is not None) == (origin[1][0].isdigit() or ":" in origin[1])


@pytest.mark.parametrize(("url", "words"), [
    ("ftp://svc.example.test/h", "neither http nor https"),
    ("svc.example.test/h", "neither http nor https"),
    ("http:///h", "no valid host"),
    ("http://user:pw@svc.example.test/h", "user info"),
    ("http://svc.example.test:99999/h", "out of range"),
    ("http://svc.example.test:0/h", "port 0"),
    ("http://svc.exa$mple.test/h", "no valid host"),
    ("http://[::1/h", "IPv6"),
    ("", "no URL"),
])
def test_unusable_urls_are_refused_with_a_reason(url: str, words: str) -> None:
    with pytest.raises(UnusableUrl, match=words):
        prepare(url, HEADERS)


# --------------------------------------------------------------------------------------------
# ResponseReader
# --------------------------------------------------------------------------------------------

def read(raw: bytes, eof: bool = False) -> Response:
    reader = ResponseReader()
    response = reader.feed(raw)
    if response is None and eof:
        response = reader.feed_eof()
    assert response is not None, "the answer was not complete"
    return response


def read_in_pieces(raw: bytes, cuts: list[int], eof: bool = False) -> Response | None:
    reader = ResponseReader()
    start = 0
    for cut in sorted(set(cuts)) + [len(raw)]:
        response = reader.feed(raw[start:cut])
        start = cut
        if response is not None:
            return response
    return reader.feed_eof() if eof else None


JSON_HEAD = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
CHUNKED = (b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
           b"5;name=value\r\n{\"a\":\r\n3\r\n 1}\r\n0\r\nX-Trailer: t\r\n\r\n")


def test_a_content_length_answer_is_read_and_the_connection_is_reusable() -> None:
    response = read(JSON_HEAD + b"Content-Length: 8\r\n\r\n{\"a\": 1}")
    assert response == Response(200, "application/json", "", b'{"a": 1}', reusable=True)


def test_a_chunked_answer_is_read_with_extensions_and_trailers() -> None:
    assert read(CHUNKED) == Response(200, "application/json", "", b'{"a": 1}', reusable=True)


@pytest.mark.parametrize("raw", [JSON_HEAD + b"Content-Length: 8\r\n\r\n{\"a\": 1}", CHUNKED,
                                 b"HTTP/1.1 100 Continue\r\n\r\n" + JSON_HEAD + b"Content-Length: 8\r\n\r\n{\"a\": 1}"])
def test_an_answer_split_at_every_byte_reads_the_same(raw: bytes) -> None:
    whole = read(raw)
    for cut in range(1, len(raw)):
        assert read_in_pieces(raw, [cut]) == whole, cut
    assert read_in_pieces(raw, list(range(len(raw)))) == whole


def test_an_answer_without_length_is_read_to_the_end_and_not_reused() -> None:
    reader = ResponseReader()
    assert reader.feed(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nall of it") is None
    assert reader.feed(b", and more") is None
    assert reader.feed_eof() == Response(200, "text/plain", "", b"all of it, and more", reusable=False)


@pytest.mark.parametrize(("raw", "reusable"), [
    (b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", True),
    (b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok", False),
    (b"HTTP/1.1 200 OK\r\nConnection: Keep-Alive, Close\r\nContent-Length: 2\r\n\r\nok", False),
    (b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok", False),
    (b"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 2\r\n\r\nok", True),
    (b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokEXTRA", False),       # bytes beyond the answer
    (b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n", False),
])
def test_a_connection_is_reused_only_after_a_clean_answer(raw: bytes, reusable: bool) -> None:
    response = read(raw)
    assert response.body == b"ok"
    assert response.reusable is reusable


def test_bare_line_feeds_folded_headers_and_repeated_equal_lengths_are_read() -> None:
    raw = (b"HTTP/1.1 200 OK\nContent-Type: text/plain;\n charset=utf-8\nContent-Length: 2\nContent-Length: 2\n\nok")
    assert read(raw) == Response(200, "text/plain; charset=utf-8", "", b"ok", reusable=True)


@pytest.mark.parametrize("status", [204, 304])
def test_answers_that_carry_no_body_complete_at_their_head(status: int) -> None:
    response = read(f"HTTP/1.1 {status} X\r\nContent-Length: 10\r\n\r\n".encode())
    assert (response.status, response.body, response.reusable) == (status, b"", True)


def test_interim_answers_are_skipped_and_switching_protocols_is_malformed() -> None:
    raw = b"HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\nHTTP/1.1 503 Unavailable\r\nContent-Length: 0\r\n\r\n"
    assert read(raw).status == 503
    with pytest.raises(Malformed, match="101"):
        read(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n")


def test_the_content_encoding_is_passed_on_undecoded() -> None:
    response = read(b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Length: 3\r\n\r\nabc")
    assert (response.content_encoding, response.body) == ("gzip", b"abc")


@pytest.mark.parametrize(("raw", "error", "words"), [
    (b"HTTP/2 200\r\n\r\n", Malformed, "status line"),
    (b"ICY 200 OK\r\n\r\n", Malformed, "status line"),
    (b"HTTP/1.1 20 OK\r\n\r\n", Malformed, "status line"),
    (b"HTTP/1.1 099 Odd\r\n\r\n", Malformed, "not an HTTP status"),
    (b"HTTP/1.1 200 OK\r\nno colon here\r\n\r\n", Malformed, "header line"),
    (b"HTTP/1.1 200 OK\r\nContent-Length : 2\r\n\r\nok", Malformed, "header line"),
    (b"HTTP/1.1 200 OK\r\n folded first\r\n\r\n", Malformed, "header line"),
    (b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nok", Malformed, "Content-Length"),
    (b"HTTP/1.1 200 OK\r\nContent-Length: -2\r\n\r\nok", Malformed, "Content-Length"),
    (b"HTTP/1.1 200 OK\r\nContent-Length: 0x10\r\n\r\nok", Malformed, "Content-Length"),
    (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", UnsupportedCoding, "gzip, chunked"),
    (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", Malformed, "chunk size"),
    (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nokXX", Malformed, "line break"),
    (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + b"1" * 2000, Malformed, "too long"),
    (b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % (MAX_BODY_BYTES + 1), TooLarge, ""),
    (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n%x\r\n" % (MAX_BODY_BYTES + 1), TooLarge, ""),
    (b"HTTP/1.1 200 OK\r\n" + b"X-Big: " + b"a" * MAX_HEAD_BYTES, Malformed, "head is larger"),
])
def test_answers_that_cannot_be_read_say_why(raw: bytes, error: type[AnswerError], words: str) -> None:
    with pytest.raises(error, match=words or None):
        read(raw)


def test_too_large_is_known_with_the_status_as_soon_as_it_is_declared() -> None:
    reader = ResponseReader()
    with pytest.raises(TooLarge) as caught:
        reader.feed(b"HTTP/1.1 503 Busy\r\nContent-Length: %d\r\n\r\n" % (10 * MAX_BODY_BYTES))
    assert caught.value.status == 503


def test_a_body_read_to_the_end_is_cut_off_past_the_cap() -> None:
    reader = ResponseReader()
    reader.feed(b"HTTP/1.1 200 OK\r\n\r\n")
    reader.feed(b" " * MAX_BODY_BYTES)
    with pytest.raises(TooLarge):
        reader.feed(b" ")


def test_a_chunked_body_is_cut_off_past_the_cap_across_chunks() -> None:
    reader = ResponseReader()
    half = MAX_BODY_BYTES // 2 + 1
    reader.feed(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
    reader.feed(b"%x\r\n" % half + b"a" * half + b"\r\n")
    with pytest.raises(TooLarge):
        reader.feed(b"%x\r\n" % half)


def test_the_end_of_the_connection_before_any_byte_is_told_apart_from_a_cut_answer() -> None:
    with pytest.raises(ClosedUnanswered):
        ResponseReader().feed_eof()
    reader = ResponseReader()
    reader.feed(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nhalf")
    with pytest.raises(Malformed, match="middle"):
        reader.feed_eof()


@settings(max_examples=400, deadline=None)
@given(raw=st.one_of(
    st.binary(max_size=400),
    st.sampled_from([CHUNKED, JSON_HEAD + b"Content-Length: 8\r\n\r\n{\"a\": 1}",
                     b"HTTP/1.0 200 OK\r\n\r\nbody"]).flatmap(
        lambda whole: st.tuples(st.integers(0, len(whole)), st.binary(max_size=6)).map(
            lambda cut: whole[:cut[0]] + cut[1] + whole[cut[0]:]))),
    cuts=st.lists(st.integers(0, 420), max_size=6), eof=st.booleans())
def test_any_bytes_in_any_pieces_read_as_an_answer_or_an_answer_error(raw: bytes, cuts: list[int], eof: bool) -> None:
    try:
        response = read_in_pieces(raw, [c for c in cuts if c <= len(raw)], eof=eof)
    except AnswerError:
        return
    if response is not None:
        assert 100 <= response.status <= 999
        assert len(response.body) <= MAX_BODY_BYTES
