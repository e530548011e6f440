"""Handshake sniffer: copies of a connection's first bytes in, a handshake record for the log out.

Pure: no I/O, no event loop. The relay forwards the real bytes untouched and hands copies here, once
per new connection, so this sits on the per-connection hot path and must stay cheap.

Parsing is done by real parsers. The general path is llhttp, Node's HTTP parser, as
aiohttp (already a dependency) builds it into its C extension; websockets' parser, the fast path
before, alone cost most of the proxy's per-connection budget. llhttp gets the framed head with
``response_with_body=False``: the message is complete at the blank line whatever follows (a
Content-Length or chunked body, an upgrade, CONNECT), and aiohttp makes no body reader, the one part
that would use the protocol and the event loop, so both are ``None`` (a body reader would call
``asyncio.get_event_loop()``; for CONNECT it would touch the protocol).

llhttp does not judge alone. What it refuses goes to the previous parsers, websockets' (whole lines
of the head) then h11's, and only a head all refuse is an error, with h11's reason. llhttp (or
aiohttp's checks on it) refuses heads the record takes: bare LF line ends (h11 takes them), control
characters in the target (websockets does; recorded escaped), no Host on HTTP/1.1, a repeated Host,
an unregistered method. What llhttp would read unlike those two never reaches it or is not its to
decide: a request line without exactly one space either side of the target; in a response (where
aiohttp makes llhttp lenient) a control character, a lone CR or LF, whitespace before a field's
colon, a folded line; a status under 100; a Transfer-Encoding but a lone ``chunked`` (llhttp checks
none without a body). So every head gets the record it got before, and llhttp decides the usual ones
(a differential fuzz of 600,000 mutated heads against the websockets/h11 sniffer found no
difference). Without the C extension (not built, or AIOHTTP_NO_EXTENSIONS set) every head takes the
websockets/h11 path. aiohttp's pure-Python parser is no fallback: no faster than websockets', and it
refuses what llhttp refuses.

Measured on the shared 2-core dev box, whose load (2-5) moves every figure together, best of 5
loops of 20,000 for a browser-like upgrade (10 request headers) and its 101 (4 headers), request +
response sniff: before 44-60 µs (websockets' parser alone 41-48 µs; h11 alone 98-116 µs), now
18-23 µs, 0.39-0.41 of before in the same run (llhttp's own parse 8.4-10.6 µs of it, framing ~3.5,
the screens above ~1.5, building the records ~3); aiohttp's pure-Python parser alone 51-67 µs.

In front of llhttp sits a stricter fast path for the heads nearly every connection sends: CRLF line
ends, a token method and a visible-ASCII target, ``HTTP/1.0`` or ``1.1``, ``token: printable ASCII``
field lines and, in a request, no body framing. Inside that grammar websockets, h11 and llhttp read a
head alike, so a regex that validates the whole head (every character class disjoint from the CRLF
that ends its line: linear, whatever the bytes) and a loop over its fields give the same record at a
third of llhttp's cost; anything outside the grammar goes on to llhttp unchanged. A seeded
differential fuzz of mutated heads near the grammar's border holds it to the reference parsers'
outcome. Measured (micro-benchmark, quiet machine, 20,000 loops): the browser-like upgrade 14.7 ->
8.8 µs, its 101 9.1 -> 3.8 µs, a plain GET 10.4 -> 4.8 µs, its 200 8.2 -> 2.9 µs.

A strict pre-check (a method token, then a space; an ``HTTP/1.x`` request line) only decides "not
HTTP", so raw TCP costs ~1 µs and is labelled as early as possible.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Callable, Generator, Iterable
from dataclasses import dataclass
from typing import Literal, TypeVar

import h11
from aiohttp import http_parser as _aiohttp_http_parser
from aiohttp.http_parser import HttpParser, RawRequestMessage, RawResponseMessage
from websockets.http11 import Request, Response

# The largest head accepted, terminating blank line included: h11's default
# max_incomplete_event_size and llhttp's line and field limits here, so every parser and the cap
# agree however the bytes are chunked.
HEAD_LIMIT = 16 * 1024
OVERSIZED = f"head over {HEAD_LIMIT} bytes"  # the error text of a head past the cap
# Longest client-sent string kept in a record; the log and dashboard show one line per handshake.
MAX_VALUE_CHARS = 256
# Longest path shared between records (sys.intern); longer ones are kept as they are.
SHARED_PATH_CHARS = 64
# Longest method token the pre-check waits for; the longest registered method has 17 characters.
MAX_METHOD_CHARS = 20

SniffState = Literal["pending", "done", "raw", "error"]
_T = TypeVar("_T")
_M = TypeVar("_M", RawRequestMessage, RawResponseMessage)

# A field's values by lower-case name, None if absent: dict.get and CIMultiDictProxy.getall alike.
_GetAll = Callable[[str, None], list[str] | None]

# llhttp: aiohttp's C parsers, None when aiohttp runs without its extensions (not built, or
# AIOHTTP_NO_EXTENSIONS set). Typed as aiohttp's pure-Python classes, whose interface they share.
_LLHTTP_REQUEST: type[_aiohttp_http_parser.HttpRequestParserPy] | None = getattr(
    _aiohttp_http_parser, "HttpRequestParserC", None
)
_LLHTTP_RESPONSE: type[_aiohttp_http_parser.HttpResponseParserPy] | None = getattr(
    _aiohttp_http_parser, "HttpResponseParserC", None
)

# RFC 9110 token characters: a request starts with one, then a space.
_TOKEN = re.compile(rb"[-!#$%&'*+.^_`|~0-9A-Za-z]*")
# The pre-check's idea of an HTTP/1.x request line; the parsers judge everything inside it.
_REQUEST_LINE = re.compile(rb"[-!#$%%&'*+.^_`|~0-9A-Za-z]{1,%d} [^\r\n]* HTTP/1\.[0-9]\r?\n" % MAX_METHOD_CHARS)
# A request line llhttp may judge: one space either side of a visible-ASCII target, CRLF. llhttp
# takes two spaces before the target, which the others refuse; bare LF and control characters it
# refuses, and they go straight to the parsers that take them.
_LLHTTP_REQUEST_LINE = re.compile(rb"[-!#$%&'*+.^_`|~0-9A-Za-z]+ [\x21-\x7e]+ HTTP/1\.[0-9]\r\n")
# Bytes a line's text may hold: HTAB, SP, visible ASCII, obs-text; no control character.
_TEXT_BYTES = bytes([0x09, *range(0x20, 0x7F), *range(0x80, 0x100)])
# A header line with whitespace before its colon: in or after the name, or folded onto the line before.
_NAME_WHITESPACE = re.compile(rb"\n[^:\r\n \t]*+[ \t]")
# End of a head, exactly as h11 frames it (CRLF or bare LF line ends).
_BLANK_LINE = re.compile(rb"\n\r?\n")
# h11 quotes the offending bytes in some messages ("Illegal header value b'...'"): cut them off.
_QUOTED_BYTES = re.compile(r"[:\s]*(?:bytearray\()?\bb['\"].*", re.DOTALL)
_STATUS_PREFIX = b"HTTP/"
# The strict grammar of the fast path (see _strict_request): every class is disjoint from the CRLF that
# ends its line, so matching is linear whatever the bytes.
_TOKEN_CLASS = rb"[-!#$%&'*+.^_`|~0-9A-Za-z]"
_STRICT_FIELDS = rb"((?:" + _TOKEN_CLASS + rb"+:[\t\x20-\x7e]*\r\n)*)\r\n"
_STRICT_REQUEST = re.compile(rb"(" + _TOKEN_CLASS + rb"+) ([\x21-\x7e]+) HTTP/1\.[01]\r\n" + _STRICT_FIELDS)
_STRICT_RESPONSE = re.compile(rb"HTTP/1\.[01] ([1-5][0-9][0-9]) ([\t\x20-\x7e]*)\r\n" + _STRICT_FIELDS)
# Off in tests that must reach llhttp or the reference parsers.
STRICT_FAST_PATH = True
# The header fields a record reads, by lower-case name.
_READ_FIELDS = {
    name.encode("ascii"): name
    for name in (
        "host",
        "origin",
        "user-agent",
        "upgrade",
        "connection",
        "sec-websocket-key",
        "sec-websocket-version",
        "sec-websocket-protocol",
        "sec-websocket-extensions",
        "transfer-encoding",  # never shown: see _llhttp_read
    )
}
# The strict path's field names: those a record reads, and body framing (None), which sends a request to the
# parsers that judge it.
_STRICT_NAMES: dict[bytes, str | None] = {**_READ_FIELDS, b"transfer-encoding": None, b"content-length": None}
# A response's subprotocol lines inside the strict grammar, found in C from the line end before the first field.
_STRICT_SUBPROTOCOL = re.compile(rb"\nsec-websocket-protocol:([\t\x20-\x7e]*)\r", re.IGNORECASE)

# h11 reads a response only while a request is in flight; an upgrade one makes a 101 legal.
_PROBE_REQUEST = h11.Request(
    method="GET",
    target="/",
    headers=[("Host", "sniffer"), ("Upgrade", "websocket"), ("Connection", "Upgrade")],
)


@dataclass(slots=True)
class RequestHead:
    """What the handshake log shows of a client's request; never the key value, never cookies."""

    kind: str  # "websocket" | "http"
    method: str
    path: str
    host: str | None
    origin: str | None
    user_agent: str | None
    ws_version: str | None
    ws_protocol: str | None
    ws_extensions: str | None
    has_ws_key: bool


@dataclass(slots=True)
class ResponseHead:
    """What the handshake log shows of the backend's answer."""

    status: int
    reason: str
    subprotocol: str | None


class _Malformed(Exception):
    """A complete head every parser refused; the message is safe to log."""


class RequestSniffer:
    """Frames and parses the client's first head; bytes fed after it are ignored."""

    __slots__ = ("_buf", "_line_ok", "_scan", "error", "head", "state")

    def __init__(self) -> None:
        self.state: SniffState = "pending"
        self.head: RequestHead | None = None
        self.error: str | None = None
        self._buf: bytes | bytearray = b""  # a bytearray only once a head spans chunks (rare)
        self._line_ok = False  # the request line passed the pre-check
        self._scan = 0  # where the next search for a line end may start

    def feed(self, data: bytes) -> bool:
        """Take the next chunk; True once the outcome is known (then further feeds do nothing)."""
        if self.state != "pending":
            return True
        if self._buf:
            self._buf += data
            buf: bytes | bytearray = self._buf
        else:
            if STRICT_FAST_PATH:  # the usual case: the whole head in one chunk, inside the strict grammar
                match = _STRICT_REQUEST.match(data)
                if match is not None and match.end() <= HEAD_LIMIT and match.end(1) <= MAX_METHOD_CHARS:
                    head = _strict_request_head(data, match)
                    if head is not None:
                        self.head = head
                        self.state = "done"
                        return True
            buf = data  # no copy
        if not self._line_ok:
            end = buf.find(b"\n", self._scan, HEAD_LIMIT)
            if end < 0:
                if not _plausible_method(buf):
                    return self._finish("raw")
                return self._wait(buf, max(len(buf), 1) - 1)
            if _REQUEST_LINE.match(buf, 0, end + 1) is None:
                return self._finish("raw")
            self._line_ok = True
            self._scan = end
        match = _BLANK_LINE.search(buf, self._scan, HEAD_LIMIT)
        if match is None:
            return self._wait(buf, max(len(buf) - 2, self._scan))
        try:
            self.head = _parse_request(bytes(buf[: match.end()]))
        except _Malformed as exc:
            self.error = str(exc)
            return self._finish("error")
        return self._finish("done")

    def _wait(self, buf: bytes | bytearray, scan: int) -> bool:
        if len(buf) >= HEAD_LIMIT:
            self.error = OVERSIZED
            return self._finish("error")
        if buf is not self._buf:
            self._buf = bytearray(buf)
        self._scan = scan
        return False

    def _finish(self, state: SniffState) -> bool:
        self.state = state
        self._buf = b""
        return True


class ResponseSniffer:
    """Frames and parses the backend's first head; its body and any frames after it are ignored."""

    __slots__ = ("_buf", "_scan", "error", "head", "state")

    def __init__(self) -> None:
        self.state: SniffState = "pending"
        self.head: ResponseHead | None = None
        self.error: str | None = None
        self._buf: bytes | bytearray = b""
        self._scan = 0

    def feed(self, data: bytes) -> bool:
        """Take the next chunk; True once the outcome is known (then further feeds do nothing)."""
        if self.state != "pending":
            return True
        if self._buf:
            self._buf += data
            buf: bytes | bytearray = self._buf
        else:
            if STRICT_FAST_PATH:  # the usual case, as for requests: one regex pass over the first chunk
                match = _STRICT_RESPONSE.match(data)
                if match is not None and match.end() <= HEAD_LIMIT:
                    self.head = _strict_response_head(data, match)
                    self.state = "done"
                    return True
            buf = data
        if buf[: len(_STATUS_PREFIX)] != _STATUS_PREFIX[: len(buf)]:
            return self._finish("raw")
        match = _BLANK_LINE.search(buf, self._scan, HEAD_LIMIT)
        if match is None:
            if len(buf) >= HEAD_LIMIT:
                self.error = OVERSIZED
                return self._finish("error")
            if buf is not self._buf:
                self._buf = bytearray(buf)
            self._scan = max(len(buf) - 2, 0)
            return False
        try:
            self.head = _parse_response(bytes(buf[: match.end()]))
        except _Malformed as exc:
            self.error = str(exc)
            return self._finish("error")
        return self._finish("done")

    def _finish(self, state: SniffState) -> bool:
        self.state = state
        self._buf = b""
        return True


def _plausible_method(buf: bytes | bytearray) -> bool:
    """Could these first bytes (no line end yet) still start a request line?"""
    match = _TOKEN.match(buf, 0, MAX_METHOD_CHARS + 1)
    n = match.end() if match else 0
    if n > MAX_METHOD_CHARS:
        return False
    if n == len(buf):
        return True
    return n > 0 and buf[n] == 0x20


def _parse_request(head: bytes) -> RequestHead:
    """Parse a framed head (blank line included) into a record; raises _Malformed."""
    if STRICT_FAST_PATH:
        strict = _strict_request(head)
        if strict is not None:
            return strict
    if _LLHTTP_REQUEST is not None and _LLHTTP_REQUEST_LINE.match(head) is not None:
        read = _llhttp_read(_LLHTTP_REQUEST, head)
        if read is not None:
            message, get = read
            return _request_head(message.method, message.path, get)
    return _parse_request_fallback(head)


def _strict_request(head: bytes) -> RequestHead | None:
    """The record of a head inside the strict grammar every parser reads alike; None for any other.

    CRLF line ends, a token method, one space either side of a visible-ASCII target, HTTP/1.0 or 1.1,
    ``token: printable ASCII`` field lines, no body framing (Content-Length or Transfer-Encoding go to
    the parsers that judge them). Two C regex passes (the second finds only the fields a record reads) and a
    loop over those: a third of llhttp's cost.
    """
    match = _STRICT_REQUEST.fullmatch(head)
    return None if match is None else _strict_request_head(head, match)


def _strict_request_head(data: bytes, match: re.Match[bytes]) -> RequestHead | None:
    """The record from a strict match at the start of `data` (the head ends where the match does); None when the
    head frames a body (the parsers that judge body framing decide it).

    The sniffer matches the first chunk directly (no framing search, no copy, one regex pass); a head framed
    first is matched whole. Both read the same bytes: in the strict grammar no line holds a CR or LF, so the
    first blank line is where the match ends."""
    head = data
    fields: dict[str, list[str]] = {}
    # Inside the grammar a field line is `token:value` and holds no CR or LF: splitting at CRLF then at the first
    # colon reads what the regex did, in C (measured 2.4 against 2.9 µs for 5 fields, 7.1 against 11.2 for 14).
    for line in head[match.start(3) : match.end(3) - 2].split(b"\r\n") if match.end(3) > match.start(3) else ():
        raw_name, _, raw_value = line.partition(b":")
        name = _STRICT_NAMES.get(raw_name.lower(), "")
        if not name:
            if name is None:  # Content-Length or Transfer-Encoding
                return None
            continue
        value = raw_value.strip(b" \t").decode("ascii")
        values = fields.get(name)
        if values is None:
            fields[name] = [value]
        else:
            values.append(value)
    return _request_head(match.group(1).decode("ascii"), match.group(2).decode("ascii"), fields.get)


def _strict_response(head: bytes) -> ResponseHead | None:
    """The record of a response head inside the strict grammar every parser reads alike; None for any other.

    A status line ``HTTP/1.x NNN reason`` (100-599, printable ASCII reason) and strict field lines, as
    for requests; a response's body framing is not the record's concern (no parser reads it here).
    """
    match = _STRICT_RESPONSE.fullmatch(head)
    return None if match is None else _strict_response_head(head, match)


def _strict_response_head(data: bytes, match: re.Match[bytes]) -> ResponseHead:
    """The record from a strict match at the start of `data`; what follows the match (a body, frames) is not read."""
    subprotocol = [
        v.strip(b" \t").decode("ascii") for v in _STRICT_SUBPROTOCOL.findall(data, match.start(3) - 1, match.end())
    ]
    return _response_head(int(match.group(1)), _clean(match.group(2).decode("ascii")), _joined(subprotocol))


def _parse_request_fallback(head: bytes) -> RequestHead:
    """websockets', else h11's reading of a head llhttp refused (or is not there to read)."""
    try:
        request = _run(Request.parse(_line_reader(head)))
    except Exception:  # websockets refuses more than h11 (bodies, bare LF, long lines): h11 decides
        return _parse_request_h11(head)
    get_all = request.headers.get_all
    return _request_head(request.method, request.path, lambda name, _: get_all(name) or None)


def _parse_request_h11(head: bytes) -> RequestHead:
    conn = h11.Connection(h11.SERVER, max_incomplete_event_size=HEAD_LIMIT)
    conn.receive_data(head)
    try:
        event = conn.next_event()
    except h11.RemoteProtocolError as exc:
        raise _Malformed(_safe_reason(exc)) from None
    if not isinstance(event, h11.Request):  # pragma: no cover - the head is framed complete
        raise _Malformed("incomplete request head")
    fields = _fields(event.headers)
    return _request_head(event.method.decode("ascii"), event.target.decode("ascii"), fields.get)


def _request_head(method: str, path: str, get: _GetAll) -> RequestHead:
    upgrade, connection = get("upgrade", None), get("connection", None)
    websocket = method == "GET" and _has_token(upgrade, "websocket") and _has_token(connection, "upgrade")
    return RequestHead(  # by position, in field order: ~0.4 µs less than by keyword
        "websocket" if websocket else "http",
        sys.intern(_clean(method)),
        _shared_path(path),
        _shared_joined(get("host", None)),
        _shared_joined(get("origin", None)),
        _shared_joined(get("user-agent", None)),
        _shared_joined(get("sec-websocket-version", None)),
        _shared_joined(get("sec-websocket-protocol", None)),
        _shared_joined(get("sec-websocket-extensions", None)),
        get("sec-websocket-key", None) is not None,
    )


def _shared_path(path: str) -> str:
    """A short path shared like the other values: a WebSocket fleet's clients mostly ask for the same endpoint
    ("/ws", "/socket.io/?EIO=4&transport=websocket"), and each held connection's record keeps its path (52 bytes
    for "/ws" alone). A long one is likelier unique (a token in the query) and stays a copy of its own."""
    path = _clean(path)
    return sys.intern(path) if len(path) <= SHARED_PATH_CHARS else path


def _response_head(status: int, reason: str, subprotocol: str | None) -> ResponseHead:
    return ResponseHead(status, sys.intern(reason), _shared(subprotocol))


def _shared_joined(values: list[str] | None) -> str | None:
    """_shared(_joined(values)) in one call: six per request head."""
    if not values:
        return None
    text = values[0] if len(values) == 1 else ", ".join(values)
    if len(text) > MAX_VALUE_CHARS or not text.isprintable():
        text = _clean(text)
    return sys.intern(text)


def _shared(text: str | None) -> str | None:
    """One copy of each value many connections repeat (host, user agent, reason...), however many records
    hold it: the records of 9,000 held connections in the event ring otherwise keep 9,000 copies of each.
    sys.intern's table holds no reference, so a value no record holds any more is freed."""
    return None if text is None else sys.intern(text)


def _parse_response(head: bytes) -> ResponseHead:
    """Parse a framed status line and headers into a record; raises _Malformed."""
    if STRICT_FAST_PATH:
        strict = _strict_response(head)
        if strict is not None:
            return strict
    if _LLHTTP_RESPONSE is not None and _llhttp_reads_strictly(head):
        read = _llhttp_read(_LLHTTP_RESPONSE, head)
        if read is not None and read[0].code >= 100:  # llhttp takes 000-099 too, the others refuse
            message, get = read
            return _response_head(
                message.code, _clean(_iso_8859_1(message.reason)), _joined(get("sec-websocket-protocol", None))
            )
    return _parse_response_fallback(head)


def _parse_response_fallback(head: bytes) -> ResponseHead:
    """websockets', else h11's reading of a head llhttp refused (or is not there to read)."""
    try:
        # proxy=True: read the head only, never a body (and accept HTTP/1.0).
        response = _run(Response.parse(_line_reader(head), _no_body, _no_body, proxy=True))
    except Exception:  # websockets refuses more than h11 (no reason phrase, bare LF): h11 decides
        return _parse_response_h11(head)
    return _response_head(
        response.status_code,
        _clean(response.reason_phrase),
        _joined(response.headers.get_all("sec-websocket-protocol") or None),
    )


def _parse_response_h11(head: bytes) -> ResponseHead:
    conn = h11.Connection(h11.CLIENT, max_incomplete_event_size=HEAD_LIMIT)
    conn.send(_PROBE_REQUEST)
    conn.receive_data(head)
    try:
        event = conn.next_event()
    except h11.RemoteProtocolError as exc:
        raise _Malformed(_safe_reason(exc)) from None
    if not isinstance(event, h11.Response | h11.InformationalResponse):  # pragma: no cover
        raise _Malformed("incomplete response head")
    return _response_head(
        event.status_code,
        _clean(event.reason.decode("latin-1")),
        _joined(_fields(event.headers).get("sec-websocket-protocol")),
    )


def _fields(headers: Iterable[tuple[bytes, bytes]]) -> dict[str, list[str]]:
    """The fields a record reads from (name, value) pairs, by lower-case name; values read ISO-8859-1."""
    fields: dict[str, list[str]] = {}
    for raw_name, raw_value in headers:
        name = _READ_FIELDS.get(raw_name.lower())
        if name is not None:
            values = fields.get(name)
            if values is None:
                fields[name] = [raw_value.decode("latin-1")]
            else:
                values.append(raw_value.decode("latin-1"))
    return fields


def _llhttp_read(parser_class: type[HttpParser[_M]], head: bytes) -> tuple[_M, _GetAll] | None:
    """llhttp's message for a framed head and its field lookup; None if llhttp refuses it or must not decide.

    Reading no body, llhttp never checks a Transfer-Encoding; h11 takes one ``chunked`` alone and
    refuses any other, so a head with any other goes to the parsers that refuse it.
    """
    # response_with_body=False: llhttp reports the message at the end of the head and aiohttp makes
    # no body reader, the one part of it that needs the protocol and an event loop (both None here).
    parser = parser_class(
        None,
        None,
        HEAD_LIMIT,
        max_line_size=HEAD_LIMIT,
        max_headers=HEAD_LIMIT,
        max_field_size=HEAD_LIMIT,
        response_with_body=False,
    )
    try:
        messages = parser.feed_data(head)[0]
    except Exception:  # llhttp (or aiohttp's checks on its reading) refused it: the other parsers decide
        return None
    if not messages:  # pragma: no cover - a framed head always makes a message
        return None
    message = messages[0][0]
    # aiohttp's text is UTF-8 (surrogateescape), the others' ISO-8859-1: alike for ASCII.
    get: _GetAll = message.headers.getall if head.isascii() else _fields(message.raw_headers).get
    codings = get("transfer-encoding", None)
    if codings is not None and (len(codings) > 1 or codings[0].lower() != "chunked"):
        return None
    return message, get


def _llhttp_reads_strictly(head: bytes) -> bool:
    """Does aiohttp's lenient llhttp response mode read this head as strict parsers do?

    Lenient, llhttp takes control characters, a CR without LF, a LF without CR (h11 does, websockets
    not), whitespace after some field names and lines folded onto the one before; all go elsewhere.
    """
    # Text bytes deleted, what is left is line ends and controls: CRLF pairs alone if strict.
    return len(head.translate(None, _TEXT_BYTES)) == 2 * head.count(b"\r\n") and _NAME_WHITESPACE.search(head) is None


def _iso_8859_1(text: str) -> str:
    """aiohttp's text (UTF-8, surrogateescape) as the others read it: ISO-8859-1."""
    return text if text.isascii() else text.encode("utf-8", "surrogateescape").decode("latin-1")


def _run(parser: Generator[None, None, _T]) -> _T:
    """Drive a websockets generator parser over a complete head; it must not ask for more."""
    try:
        next(parser)
    except StopIteration as stop:
        result: _T = stop.value
        return result
    parser.close()
    raise EOFError("parser wanted more than the framed head")


def _line_reader(head: bytes) -> Callable[[int, type[Exception]], Generator[None, None, bytes]]:
    """websockets' read_line over a framed head: lines with their LF, its line limit enforced."""
    lines = iter(head.split(b"\n"))

    def read_line(limit: int, too_long: type[Exception]) -> Generator[None, None, bytes]:
        yield from ()
        line = next(lines, None)
        if line is None:
            raise EOFError("no more lines in the head")
        if len(line) >= limit:
            raise too_long(f"line over {limit} bytes")
        return line + b"\n"

    return read_line


def _no_body(*_: object) -> Generator[None, None, bytes]:
    """Never called with proxy=True; a body is not part of a handshake record."""
    yield from ()
    raise EOFError("the sniffer reads heads only")


def _has_token(values: list[str] | None, token: str) -> bool:
    """Is `token` one of the comma-separated items (case-insensitive), e.g. Connection: keep-alive, Upgrade."""
    for value in values or ():
        if value.lower() == token:  # the usual case: the token alone
            return True
        for item in value.split(","):
            if item.strip().lower() == token:
                return True
    return False


def _joined(values: list[str] | None) -> str | None:
    """Repeated header lines read as one comma-separated list (RFC 9110 §5.3)."""
    if not values:
        return None
    text = values[0] if len(values) == 1 else ", ".join(values)
    if len(text) <= MAX_VALUE_CHARS and text.isprintable():
        return text  # _clean's usual case, without the call
    return _clean(text)


def _clean(text: str) -> str:
    """Client-sent text made safe to show: control characters escaped, length capped."""
    if len(text) <= MAX_VALUE_CHARS and text.isprintable():
        return text  # the usual case, checked in C
    text = "".join(
        c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in text[: MAX_VALUE_CHARS + 1]
    )
    if len(text) > MAX_VALUE_CHARS:
        text = text[: MAX_VALUE_CHARS - 1] + "…"
    return text


def _safe_reason(exc: Exception) -> str:
    """h11's message without any client bytes it quotes (a bad Cookie line must not leak)."""
    return _clean(_QUOTED_BYTES.sub("", str(exc)) or type(exc).__name__)
