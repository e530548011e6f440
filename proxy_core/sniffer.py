"""Handshake sniffer: copies of a connection's first bytes in, a handshake record for the log out.

Pure: no I/O. The relay forwards the real bytes untouched and hands copies here, once per new
connection, so this sits on the per-connection hot path and must stay cheap.

Parsing is done by real parsers, never by hand. websockets' parser (fed whole lines of a framed
head) is the fast path; whenever it refuses a head (a body, bare LF line ends, a long line, an
older websockets), h11 gets it, and only a head both refuse is an error (websockets lets through a
missing Host or control characters in the target: they are recorded, escaped). Measured on the
shared 2-core dev box (best of repeats) for a browser-like upgrade, 10 request and 4 response
headers: request + response sniff ~45 µs this way, ~75-100 µs with h11 alone; websockets' parser
itself is ~30 µs of it. A strict pre-check (a method token, then a space; an ``HTTP/1.x`` request
line) only decides "not HTTP", so raw TCP costs ~1 µs and is labelled as early as possible.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Generator
from dataclasses import dataclass
from typing import Literal, TypeVar

import h11
from websockets.http11 import Request, Response

# The largest head accepted, terminating blank line included: h11's default
# max_incomplete_event_size, so both parsers and the cap agree however the bytes are chunked.
HEAD_LIMIT = 16 * 1024
OVERSIZED = f"head over {HEAD_LIMIT} bytes"  # the error text of a head past the cap
# Longest client-sent string kept in a record; the log and dashboard show one line per handshake.
MAX_VALUE_CHARS = 256
# Longest method token the pre-check waits for; the longest registered method has 17 characters.
MAX_METHOD_CHARS = 20

SniffState = Literal["pending", "done", "raw", "error"]
_T = TypeVar("_T")

# RFC 9110 token characters: a request starts with one, then a space.
_TOKEN = re.compile(rb"[-!#$%&'*+.^_`|~0-9A-Za-z]*")
# The pre-check's idea of an HTTP/1.x request line; the parsers judge everything inside it.
_REQUEST_LINE = re.compile(rb"[-!#$%%&'*+.^_`|~0-9A-Za-z]{1,%d} [^\r\n]* HTTP/1\.[0-9]\r?\n" % MAX_METHOD_CHARS)
# End of a head, exactly as h11 frames it (CRLF or bare LF line ends).
_BLANK_LINE = re.compile(rb"\n\r?\n")
# h11 quotes the offending bytes in some messages ("Illegal header value b'...'"): cut them off.
_QUOTED_BYTES = re.compile(r"[:\s]*(?:bytearray\()?\bb['\"].*", re.DOTALL)
_STATUS_PREFIX = b"HTTP/"

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
    """A complete head both parsers refused; the message is safe to log."""


class RequestSniffer:
    """Frames and parses the client's first head; bytes fed after it are ignored."""

    __slots__ = ("_buf", "_line_ok", "_scan", "error", "head", "state")

    def __init__(self) -> None:
        self.state: SniffState = "pending"
        self.head: RequestHead | None = None
        self.error: str | None = None
        self._buf = bytearray()
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
            buf = data  # the usual case: the whole head in one chunk, no copy
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
            self._buf += buf
        self._scan = scan
        return False

    def _finish(self, state: SniffState) -> bool:
        self.state = state
        self._buf = bytearray()
        return True


class ResponseSniffer:
    """Frames and parses the backend's first head; its body and any frames after it are ignored."""

    __slots__ = ("_buf", "_scan", "error", "head", "state")

    def __init__(self) -> None:
        self.state: SniffState = "pending"
        self.head: ResponseHead | None = None
        self.error: str | None = None
        self._buf = bytearray()
        self._scan = 0

    def feed(self, data: bytes) -> bool:
        """Take the next chunk; True once the outcome is known (then further feeds do nothing)."""
        if self.state != "pending":
            return True
        if self._buf:
            self._buf += data
            buf: bytes | bytearray = self._buf
        else:
            buf = data
        if buf[: len(_STATUS_PREFIX)] != _STATUS_PREFIX[: len(buf)]:
            return self._finish("raw")
        match = _BLANK_LINE.search(buf, self._scan, HEAD_LIMIT)
        if match is None:
            if len(buf) >= HEAD_LIMIT:
                self.error = OVERSIZED
                return self._finish("error")
            if buf is not self._buf:
                self._buf += buf
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
        self._buf = bytearray()
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
    try:
        request = _run(Request.parse(_line_reader(head)))
    except Exception:  # websockets refuses more than h11 (bodies, bare LF, long lines): h11 decides
        return _parse_request_h11(head)
    return _request_head(request.method, request.path, request.headers.get_all)


def _parse_request_h11(head: bytes) -> RequestHead:
    conn = h11.Connection(h11.SERVER, max_incomplete_event_size=HEAD_LIMIT)
    conn.receive_data(head)
    try:
        event = conn.next_event()
    except h11.RemoteProtocolError as exc:
        raise _Malformed(_safe_reason(exc)) from None
    if not isinstance(event, h11.Request):  # pragma: no cover - the head is framed complete
        raise _Malformed("incomplete request head")
    fields: dict[str, list[str]] = {}
    for name, value in event.headers:
        fields.setdefault(name.decode("ascii"), []).append(value.decode("latin-1"))
    empty: list[str] = []
    return _request_head(
        event.method.decode("ascii"),
        event.target.decode("ascii"),
        lambda name: fields.get(name, empty),
    )


def _request_head(method: str, path: str, get_all: Callable[[str], list[str]]) -> RequestHead:
    websocket = (
        method == "GET" and _has_token(get_all("upgrade"), "websocket") and _has_token(get_all("connection"), "upgrade")
    )
    return RequestHead(
        kind="websocket" if websocket else "http",
        method=_clean(method),
        path=_clean(path),
        host=_joined(get_all("host")),
        origin=_joined(get_all("origin")),
        user_agent=_joined(get_all("user-agent")),
        ws_version=_joined(get_all("sec-websocket-version")),
        ws_protocol=_joined(get_all("sec-websocket-protocol")),
        ws_extensions=_joined(get_all("sec-websocket-extensions")),
        has_ws_key=bool(get_all("sec-websocket-key")),
    )


def _parse_response(head: bytes) -> ResponseHead:
    """Parse a framed status line and headers into a record; raises _Malformed."""
    try:
        # proxy=True: read the head only, never a body (and accept HTTP/1.0).
        response = _run(Response.parse(_line_reader(head), _no_body, _no_body, proxy=True))
    except Exception:  # websockets refuses more than h11 (no reason phrase, bare LF): h11 decides
        return _parse_response_h11(head)
    return ResponseHead(
        status=response.status_code,
        reason=_clean(response.reason_phrase),
        subprotocol=_joined(response.headers.get_all("sec-websocket-protocol")),
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
    protocols = [v.decode("latin-1") for n, v in event.headers if n == b"sec-websocket-protocol"]
    return ResponseHead(
        status=event.status_code,
        reason=_clean(event.reason.decode("latin-1")),
        subprotocol=_joined(protocols),
    )


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


def _has_token(values: list[str], token: str) -> bool:
    """Is `token` one of the comma-separated items (case-insensitive), e.g. Connection: keep-alive, Upgrade."""
    for value in values:
        for item in value.split(","):
            if item.strip().lower() == token:
                return True
    return False


def _joined(values: list[str]) -> str | None:
    """Repeated header lines read as one comma-separated list (RFC 9110 §5.3)."""
    if not values:
        return None
    return _clean(values[0] if len(values) == 1 else ", ".join(values))


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
