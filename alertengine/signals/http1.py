"""HTTP/1.1 on the wire for health polls: the request a URL becomes, and an incremental reader of the answer.

Pure (no I/O): ``healthclient`` writes ``Request.wire`` to a connection and feeds what comes back
to a ``ResponseReader``. Only what a health poll needs is here: ``GET`` without a body; answers
framed by ``Content-Length``, by the chunked transfer coding or by the end of the connection.

Decisions:

* The request is built once per target version (``prepare``), not per poll: a poll writes bytes
  it already has.
* Limits hold while reading, not after: a head above MAX_HEAD_BYTES is malformed, a body above
  MAX_BODY_BYTES (declared, chunked or read to the end) is cut off the moment it is known to be.
* Lenient where real health endpoints are sloppy (bare ``\\n`` line ends, folded header lines,
  repeated identical ``Content-Length``), strict where framing is at stake (a bad or conflicting
  ``Content-Length``, a bad chunk size, a transfer coding other than chunked, a status line that
  is not HTTP/1.x). 1xx interim answers are skipped; ``101`` is malformed (we never ask to switch).
* A connection is reusable only after an answer framed by length or chunks, with nothing left
  over, from HTTP/1.1 without ``Connection: close`` (or HTTP/1.0 with ``keep-alive``); an answer
  carrying both ``Transfer-Encoding`` and ``Content-Length`` is read by its chunks and the
  connection is not reused.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from urllib.parse import quote, urlsplit

MAX_BODY_BYTES = 1024 * 1024          # bodies above this are cut off and read as bad_payload
MAX_HEAD_BYTES = 64 * 1024            # status line and headers, and separately the chunked trailers
_MAX_CHUNK_LINE = 1024

_DEFAULT_PORTS = {"http": 80, "https": 443}
_HOST_NAME = re.compile(r"[a-z0-9_.-]{1,253}")
_STATUS_LINE = re.compile(rb"HTTP/1\.([01]) ([0-9]{3})(?:[ \t][^\r\n]*)?")
# every header line: a token, a colon and a value, or a folded continuation; checked in one pass
_FIELD_LINES = re.compile(rb"(?:(?:[!#$%&'*+\-.^_`|~0-9A-Za-z]+:|[ \t])[^\r\n]*\r?\n)*")
# the only headers read; the others are checked for form and skipped
_READ = frozenset({b"content-type", b"content-encoding", b"connection", b"transfer-encoding", b"content-length"})
_HEX = re.compile(rb"[0-9A-Fa-f]{1,16}")
_HEAD_END = re.compile(rb"\r?\n\r?\n")
# what may stay as it is in a request target; anything else (spaces, non-ASCII, controls) is %-encoded
_SAFE_PATH = "/!$&'()*+,;=:@%-._~"
_SAFE_QUERY = _SAFE_PATH + "?"


class UnusableUrl(ValueError):
    """A URL no request can be made of (scheme, host, port); the message says why, never the URL."""


class AnswerError(Exception):
    """The answer cannot be read; ``status`` is its HTTP status when the head had been read."""

    def __init__(self, message: str = "", status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class Malformed(AnswerError):
    """Not HTTP/1.x as we can read it (framing, status line, headers)."""


class TooLarge(AnswerError):
    """The body is (or is declared) larger than MAX_BODY_BYTES."""


class UnsupportedCoding(AnswerError):
    """A transfer coding other than chunked."""


class ClosedUnanswered(AnswerError):
    """The connection ended before a single byte of the answer: a kept-alive connection the server
    had already closed, which the client may retry once on a fresh one (the request is a GET)."""

    def __init__(self, message: str = "", cause: OSError | None = None) -> None:
        super().__init__(message)
        self.cause = cause            # the socket error, when it was one rather than a clean close


@dataclass(frozen=True)
class Request:
    """One URL as a ready GET: where to connect and the exact bytes to send."""

    scheme: str                       # "http" | "https"
    host: str                         # lower-case ASCII name, or an IP address (no brackets)
    port: int
    ip: ipaddress.IPv4Address | ipaddress.IPv6Address | None  # the host, when it is an address
    wire: bytes                       # request line, headers and the blank line

    @property
    def origin(self) -> tuple[str, str, int]:
        return (self.scheme, self.host, self.port)


def prepare(url: str, headers: bytes) -> Request:
    """The GET of ``url`` with ``headers`` (complete ``Name: value\\r\\n`` lines); raises UnusableUrl."""
    if not isinstance(url, str) or not url:
        raise UnusableUrl("no URL")
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError as exc:                 # a bad port, a bad IPv6 literal
        raise UnusableUrl(str(exc)[:80]) from None
    scheme = parts.scheme.lower()
    if scheme not in _DEFAULT_PORTS:
        raise UnusableUrl(f"the scheme {scheme[:20]!r} is neither http nor https")
    if "@" in parts.netloc:
        raise UnusableUrl("user info in a URL is not sent; the URL policy refuses it")
    host = parts.hostname or ""
    ip: ipaddress.IPv4Address | ipaddress.IPv6Address | None
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        ip = None
        try:
            host = host.encode("idna").decode("ascii").lower().removesuffix(".")
        except UnicodeError:
            raise UnusableUrl("the host name is not a valid international name") from None
        if not _HOST_NAME.fullmatch(host):
            raise UnusableUrl("the URL has no valid host")
    if port is None:
        port = _DEFAULT_PORTS[scheme]
    if port == 0:
        raise UnusableUrl("port 0 cannot be connected to")
    host_header = f"[{host}]" if isinstance(ip, ipaddress.IPv6Address) else host
    if port != _DEFAULT_PORTS[scheme]:
        host_header += f":{port}"
    target = quote(parts.path or "/", safe=_SAFE_PATH)
    if parts.query:
        target += "?" + quote(parts.query, safe=_SAFE_QUERY)
    wire = f"GET {target} HTTP/1.1\r\nHost: {host_header}\r\n".encode("ascii") + headers + b"\r\n"
    return Request(scheme, str(ip) if ip is not None else host, port, ip, wire)


@dataclass(frozen=True)
class Response:
    """One answer as read off the wire; ``body`` is still content-coded (``content_encoding`` says how)."""

    status: int
    content_type: str
    content_encoding: str
    body: bytes
    reusable: bool                    # the connection may carry another request


# reader states
_HEAD, _LENGTH, _CHUNK_SIZE, _CHUNK_DATA, _CHUNK_END, _TRAILER, _TO_EOF, _DONE = range(8)


class ResponseReader:
    """Reads one answer from a connection's bytes as they arrive: ``feed`` returns the Response once
    it is complete (else None), ``feed_eof`` at the end of the connection; both raise AnswerError."""

    __slots__ = ("received", "_buf", "_state", "_status", "_ctype", "_cenc", "_reusable", "_left", "_body")

    def __init__(self) -> None:
        self.received = False         # any byte at all: tells a stale kept-alive connection from a bad answer
        self._buf = bytearray()
        self._state = _HEAD
        self._status: int | None = None
        self._ctype = ""
        self._cenc = ""
        self._reusable = False
        self._left = 0                # bytes of the body or of the current chunk still to come
        self._body = bytearray()

    def feed(self, data: bytes) -> Response | None:
        if data:
            self.received = True
        buf = self._buf
        buf += data
        if self._state == _HEAD:
            if not self._read_head():
                return None
        state = self._state
        if state == _LENGTH:
            if len(buf) < self._left:
                return None
            body = bytes(buf[:self._left])
            return self._done(body, leftover=len(buf) > self._left)
        if state == _TO_EOF:
            if len(buf) > MAX_BODY_BYTES:
                raise TooLarge(status=self._status)
            return None
        if state == _DONE:            # an answer without a body (204, 304)
            return self._done(b"", leftover=bool(buf))
        return self._read_chunks()

    def feed_eof(self) -> Response:
        if self._state == _TO_EOF:
            self._reusable = False
            return self._done(bytes(self._buf), leftover=False)
        if not self.received:
            raise ClosedUnanswered("the server closed the connection without answering")
        raise Malformed("the connection ended in the middle of the answer", self._status)

    # -- head ------------------------------------------------------------------------------------

    def _read_head(self) -> bool:
        """Parse the head once it is all there (skipping 1xx answers); False while it is incomplete."""
        buf = self._buf
        while True:
            end = buf.find(b"\r\n\r\n")
            size = 4
            if end < 0:
                found = _HEAD_END.search(buf) if b"\n\n" in buf or b"\n\r\n" in buf else None
                if found is None:
                    if len(buf) > MAX_HEAD_BYTES:
                        raise Malformed(f"the head is larger than {MAX_HEAD_BYTES} bytes")
                    return False
                end, size = found.start(), found.end() - found.start()
            if end > MAX_HEAD_BYTES:
                raise Malformed(f"the head is larger than {MAX_HEAD_BYTES} bytes")
            head = bytes(buf[:end])
            del buf[:end + size]
            if not self._parse_head(head):
                return True
            # a 1xx interim answer: the real one follows

    def _parse_head(self, head: bytes) -> bool:
        """Read one head; True if it was a 1xx interim answer to skip."""
        first, _, rest = head.partition(b"\n")
        match = _STATUS_LINE.fullmatch(first.rstrip(b"\r"))
        if match is None:
            raise Malformed(f"not an HTTP/1.x status line: {first[:40]!r}")
        minor, status = match.group(1) == b"1", int(match.group(2))
        if status < 100:
            raise Malformed(f"status {status} is not an HTTP status")
        fields: dict[bytes, list[bytes]] = {}
        if rest:
            rest += b"\n"
            if not _FIELD_LINES.fullmatch(rest) or rest[:1] in (b" ", b"\t"):
                bad = next((ln for ln in rest.split(b"\n") if not _FIELD_LINES.fullmatch(ln + b"\n")), rest)
                raise Malformed(f"not a header line: {bad[:40]!r}", status)
            previous: list[bytes] | None = None
            for line in rest[:-1].split(b"\n"):
                if line[:1] in (b" ", b"\t"):        # obsolete folding: continues the previous value
                    if previous is not None:
                        previous[-1] += b" " + line.strip()
                    continue
                name, _, value = line.partition(b":")
                name = name.lower()
                if name in _READ:
                    previous = fields.setdefault(name, [])
                    previous.append(value.strip(b" \t\r"))
                else:
                    previous = None
        if status < 200:
            if status == 101:
                raise Malformed("101 Switching Protocols, which a health poll never asks for", status)
            return True
        self._status = status
        self._ctype = _joined(fields.get(b"content-type"))
        self._cenc = _joined(fields.get(b"content-encoding"))
        connection = {t.strip() for t in _joined(fields.get(b"connection")).lower().split(",")}
        self._reusable = "close" not in connection if minor else "keep-alive" in connection
        transfer = fields.get(b"transfer-encoding")
        length = fields.get(b"content-length")
        if status in (204, 304):
            self._state = _DONE
        elif transfer is not None:
            codings = [t.strip() for t in _joined(transfer).lower().split(",") if t.strip()]
            if codings != ["chunked"]:
                raise UnsupportedCoding(f"unsupported transfer-encoding {_joined(transfer)[:40]!r}", status)
            if length is not None:
                self._reusable = False
            self._state = _CHUNK_SIZE
        elif length is not None:
            values = {v for item in length for v in item.split(b",")}
            value = values.pop().strip() if len(values) == 1 else b""
            if not value.isdigit():
                raise Malformed(f"a bad Content-Length {b', '.join(length)[:40]!r}", status)
            self._left = int(value)
            if self._left > MAX_BODY_BYTES:
                raise TooLarge(status=status)
            self._state = _LENGTH
        else:
            self._reusable = False
            self._state = _TO_EOF
        return False

    # -- body --------------------------------------------------------------------------------------

    def _read_chunks(self) -> Response | None:
        buf, body = self._buf, self._body
        pos = 0
        try:
            while True:
                state = self._state
                if state == _CHUNK_DATA:
                    take = min(self._left, len(buf) - pos)
                    body += buf[pos:pos + take]
                    pos += take
                    self._left -= take
                    if self._left:
                        return None
                    self._state = _CHUNK_END
                elif state == _CHUNK_END:
                    if buf[pos:pos + 1] == b"\n":
                        pos += 1
                    elif len(buf) - pos < 2:
                        return None
                    elif buf[pos:pos + 2] == b"\r\n":
                        pos += 2
                    else:
                        raise Malformed("a chunk does not end with a line break", self._status)
                    self._state = _CHUNK_SIZE
                else:                                    # a chunk size line or a trailer line
                    end = buf.find(b"\n", pos)
                    limit = _MAX_CHUNK_LINE if state == _CHUNK_SIZE else MAX_HEAD_BYTES
                    if end < 0:
                        if len(buf) - pos > limit:
                            raise Malformed("a chunk size or trailer line is too long", self._status)
                        return None
                    line = bytes(buf[pos:end]).rstrip(b"\r")
                    pos = end + 1
                    if state == _TRAILER:
                        self._left += len(line) + 2
                        if self._left > MAX_HEAD_BYTES:
                            raise Malformed("the trailers are too long", self._status)
                        if not line:
                            return self._done(bytes(body), leftover=pos < len(buf))
                        continue
                    size = line.split(b";", 1)[0].strip(b" \t")
                    if not _HEX.fullmatch(size):
                        raise Malformed(f"a bad chunk size {size[:20]!r}", self._status)
                    self._left = int(size, 16)
                    if self._left == 0:
                        self._state = _TRAILER
                    elif len(body) + self._left > MAX_BODY_BYTES:
                        raise TooLarge(status=self._status)
                    else:
                        self._state = _CHUNK_DATA
        finally:
            del buf[:pos]

    def _done(self, body: bytes, leftover: bool) -> Response:
        self._state = _DONE
        assert self._status is not None
        return Response(self._status, self._ctype, self._cenc, body, self._reusable and not leftover)


def _joined(values: list[bytes] | None) -> str:
    return ", ".join(v.decode("latin-1") for v in values) if values else ""
