"""Handshake sniffer: chunking never changes the record, raw and malformed input are told apart, secrets stay out."""

from __future__ import annotations

import asyncio
import random

import aiohttp.helpers
import aiohttp.streams
import pytest

from proxy_core.datapath import sniffer as sniffer_module
from proxy_core.datapath.sniffer import (
    HEAD_LIMIT,
    MAX_VALUE_CHARS,
    RequestHead,
    RequestSniffer,
    ResponseHead,
    ResponseSniffer,
)

KEY = "dGhlIHNhbXBsZSBub25jZQ=="
COOKIE = "session=c00kie-SECRET-value"
UPGRADE = (
    b"GET /chat?room=1 HTTP/1.1\r\n"
    b"Host: example.com:8080\r\n"
    b"User-Agent: Mozilla/5.0 (X11; Linux x86_64) Chrome/120\r\n"
    b"Upgrade: websocket\r\n"
    b"Connection: Upgrade\r\n"
    b"Sec-WebSocket-Key: " + KEY.encode() + b"\r\n"
    b"Origin: http://example.com\r\n"
    b"Sec-WebSocket-Version: 13\r\n"
    b"Sec-WebSocket-Protocol: chat, superchat\r\n"
    b"Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n"
    b"Cookie: " + COOKIE.encode() + b"\r\n"
    b"\r\n"
)
UPGRADE_HEAD = RequestHead(
    kind="websocket",
    method="GET",
    path="/chat?room=1",
    host="example.com:8080",
    origin="http://example.com",
    user_agent="Mozilla/5.0 (X11; Linux x86_64) Chrome/120",
    ws_version="13",
    ws_protocol="chat, superchat",
    ws_extensions="permessage-deflate; client_max_window_bits",
    has_ws_key=True,
)
SWITCHING = (
    b"HTTP/1.1 101 Switching Protocols\r\n"
    b"Upgrade: websocket\r\n"
    b"Connection: Upgrade\r\n"
    b"Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"
    b"Sec-WebSocket-Protocol: chat\r\n"
    b"\r\n"
)
SWITCHING_HEAD = ResponseHead(status=101, reason="Switching Protocols", subprotocol="chat")
# A masked text frame "Hello" pipelined right after the head.
FRAME = b"\x81\x85\x37\xfa\x21\x3d\x7f\x9f\x4d\x51\x58"
TLS_HELLO = bytes.fromhex("16030100f5010000f10303") + bytes(range(32))

Sniffer = RequestSniffer | ResponseSniffer


def feed_chunks(sniffer: Sniffer, chunks: list[bytes]) -> list[bool]:
    """Feed chunks in order and return what each feed() answered."""
    return [sniffer.feed(chunk) for chunk in chunks]


def one_byte_at_a_time(data: bytes) -> list[bytes]:
    return [data[i : i + 1] for i in range(len(data))]


def padded_request(size: int) -> bytes:
    """A valid GET head of exactly `size` bytes, padded with header lines of at most 4 KiB."""
    head = b"GET /pad HTTP/1.1\r\nHost: a\r\n"
    fixed = len(head) + 2
    lines = []
    remaining = size - fixed
    while remaining > 0:
        take = min(remaining, 4000)
        assert take >= 8, "size leaves a pad line too short to build"
        lines.append(b"X-Pad: " + b"p" * (take - 9) + b"\r\n")
        remaining -= take
    data = head + b"".join(lines) + b"\r\n"
    assert len(data) == size
    return data


# -- requests ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "chunks",
    [
        pytest.param([UPGRADE], id="whole"),
        pytest.param(one_byte_at_a_time(UPGRADE), id="byte-at-a-time"),
        pytest.param([UPGRADE + FRAME], id="trailing-frame"),
        pytest.param([UPGRADE[:3], UPGRADE[3:-1], UPGRADE[-1:] + FRAME], id="uneven-then-frame"),
    ],
)
def test_request_record_is_independent_of_chunking(chunks: list[bytes]) -> None:
    """The same upgrade yields the same record fed whole, byte by byte, or with a pipelined frame."""
    sniffer = RequestSniffer()
    answers = feed_chunks(sniffer, chunks)
    assert answers == [False] * (len(chunks) - 1) + [True]
    assert sniffer.state == "done"
    assert sniffer.head == UPGRADE_HEAD
    assert sniffer.error is None


def test_request_every_split_point_gives_the_same_record() -> None:
    """Cutting the head in two at any byte never changes the record."""
    for cut in range(1, len(UPGRADE)):
        sniffer = RequestSniffer()
        sniffer.feed(UPGRADE[:cut])
        assert sniffer.feed(UPGRADE[cut:] + FRAME), cut
        assert sniffer.head == UPGRADE_HEAD, cut


def test_request_feed_after_finish_is_a_no_op() -> None:
    """Once finished, feeding more (even garbage) returns True and changes nothing."""
    sniffer = RequestSniffer()
    assert sniffer.feed(UPGRADE)
    assert sniffer.feed(b"\x00\xff garbage\r\n\r\n")
    assert sniffer.state == "done"
    assert sniffer.head == UPGRADE_HEAD


def test_request_record_never_holds_key_or_cookie() -> None:
    """Neither the Sec-WebSocket-Key value nor any Cookie value appears in the record's repr."""
    sniffer = RequestSniffer()
    sniffer.feed(UPGRADE)
    text = repr(sniffer.head)
    assert sniffer.head is not None and sniffer.head.has_ws_key
    assert KEY not in text
    assert "c00kie" not in text and "SECRET" not in text


def test_malformed_cookie_line_does_not_leak_into_error() -> None:
    """A Cookie line the parser rejects is reported without quoting its value."""
    sniffer = RequestSniffer()
    sniffer.feed(b"GET / HTTP/1.1\r\nHost: a\r\nCookie: " + COOKIE.encode() + b"\x00\r\n\r\n")
    assert sniffer.state == "error"
    assert sniffer.error
    assert "SECRET" not in repr(sniffer.error) and "SECRET" not in repr(sniffer.head)


@pytest.mark.parametrize(
    ("data", "kind", "method", "path", "host"),
    [
        pytest.param(UPGRADE, "websocket", "GET", "/chat?room=1", "example.com:8080", id="upgrade"),
        pytest.param(
            b"GET /ws HTTP/1.1\r\nHost: h\r\nUpgrade: WebSocket\r\nConnection: keep-alive, Upgrade\r\n\r\n",
            "websocket",
            "GET",
            "/ws",
            "h",
            id="firefox-style-connection-list",
        ),
        pytest.param(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n", "http", "GET", "/", "h", id="plain-get"),
        pytest.param(
            b"GET /ws HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\n\r\n",
            "http",
            "GET",
            "/ws",
            "h",
            id="upgrade-without-connection-upgrade",
        ),
        pytest.param(
            b"POST /ws HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n",
            "http",
            "POST",
            "/ws",
            "h",
            id="post-is-never-websocket",
        ),
        pytest.param(
            b"POST /api HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n\r\nhello",
            "http",
            "POST",
            "/api",
            "h",
            id="post-with-body",
        ),
        pytest.param(
            b"PUT /x HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
            "http",
            "PUT",
            "/x",
            "h",
            id="chunked-body",
        ),
        pytest.param(b"GET /old HTTP/1.0\r\n\r\n", "http", "GET", "/old", None, id="http-1.0-no-host"),
        pytest.param(b"GET /lf HTTP/1.1\nHost: h\n\n", "http", "GET", "/lf", "h", id="bare-lf-line-ends"),
    ],
)
def test_request_classification(data: bytes, kind: str, method: str, path: str, host: str | None) -> None:
    """An upgrade needs GET, Upgrade: websocket and Connection: upgrade; other parsable HTTP/1.x is http."""
    sniffer = RequestSniffer()
    assert sniffer.feed(data)
    assert sniffer.state == "done", sniffer.error
    assert sniffer.head is not None
    assert (sniffer.head.kind, sniffer.head.method, sniffer.head.path, sniffer.head.host) == (kind, method, path, host)


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(TLS_HELLO, id="tls-client-hello"),
        pytest.param(bytes(range(256)), id="binary"),
        pytest.param(b"\x00", id="nul-byte"),
        pytest.param(b"HELLO\n", id="text-protocol-word"),
        pytest.param(b"HELLO WORLD\r\n", id="text-protocol-line"),
        pytest.param(b"SSH-2.0-OpenSSH_9.6\r\n", id="ssh-banner"),
        pytest.param(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", id="h2-prior-knowledge"),
        pytest.param(b"GET /\r\n", id="http-0.9"),
        pytest.param(b" GET / HTTP/1.1\r\n\r\n", id="leading-space"),
        pytest.param(b"X" * 21 + b" / HTTP/1.1\r\n\r\n", id="method-too-long"),
    ],
)
def test_non_http_first_bytes_are_raw(data: bytes) -> None:
    """First bytes that are not an HTTP/1.x request line are labelled raw, with no record or error."""
    sniffer = RequestSniffer()
    assert sniffer.feed(data)
    assert (sniffer.state, sniffer.head, sniffer.error) == ("raw", None, None)


@pytest.mark.parametrize(
    ("data", "decided_after"),
    [
        pytest.param(TLS_HELLO[:1], 1, id="tls-first-byte"),
        pytest.param(b"HELLO\n", 6, id="line-end-without-space"),
        pytest.param(b"GET /\r\n", 7, id="request-line-without-version"),
    ],
)
def test_raw_is_decided_as_early_as_possible(data: bytes, decided_after: int) -> None:
    """Raw is decided at the first byte that rules out a request line, even one byte at a time."""
    sniffer = RequestSniffer()
    answers = feed_chunks(sniffer, one_byte_at_a_time(data))
    assert answers.index(True) + 1 == decided_after
    assert sniffer.state == "raw"


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(b"GET /a b HTTP/1.1\r\nHost: h\r\n\r\n", id="space-in-target"),
        pytest.param(b"GET  / HTTP/1.1\r\nHost: h\r\n\r\n", id="double-space"),
        pytest.param(b"GET / HTTP/1.1\r\nNo colon here\r\n\r\n", id="header-without-colon"),
        pytest.param(b"GET / HTTP/1.1\r\n Folded: x\r\n\r\n", id="continuation-first"),
    ],
)
def test_malformed_http_is_an_error_with_a_reason(data: bytes) -> None:
    """A request that starts like HTTP/1.x but does not parse ends in error, with the parser's reason."""
    sniffer = RequestSniffer()
    assert sniffer.feed(data)
    assert sniffer.state == "error"
    assert sniffer.head is None
    assert sniffer.error


@pytest.mark.parametrize(
    ("size", "state"),
    [(HEAD_LIMIT - 1, "done"), (HEAD_LIMIT, "done"), (HEAD_LIMIT + 1, "error")],
)
@pytest.mark.parametrize("chunking", ["whole", "byte-at-a-time", "halves"])
def test_head_limit_is_exact_whatever_the_chunking(size: int, state: str, chunking: str) -> None:
    """A head of up to HEAD_LIMIT bytes (blank line included) parses; one byte more is an error."""
    data = padded_request(size) + FRAME
    if chunking == "whole":
        chunks = [data]
    elif chunking == "halves":
        chunks = [data[: size // 2], data[size // 2 :]]
    else:
        chunks = one_byte_at_a_time(data)
    sniffer = RequestSniffer()
    answers = feed_chunks(sniffer, chunks)
    assert True in answers
    assert sniffer.state == state
    if state == "done":
        assert sniffer.head is not None and sniffer.head.path == "/pad"
    else:
        assert sniffer.error == f"head over {HEAD_LIMIT} bytes"


def test_request_line_longer_than_limit_is_an_error() -> None:
    """A request line that never ends within HEAD_LIMIT is an error, not a pending forever."""
    sniffer = RequestSniffer()
    assert not sniffer.feed(b"GET /" + b"a" * 100)
    assert sniffer.feed(b"a" * HEAD_LIMIT)
    assert sniffer.state == "error"


def test_client_text_is_escaped_and_truncated() -> None:
    """Control characters in client-sent text are escaped and long values cut to MAX_VALUE_CHARS."""
    long_ua = b"u" * 1000
    sniffer = RequestSniffer()
    sniffer.feed(b"GET /\x1b[2J HTTP/1.1\r\nHost: h\r\nUser-Agent: " + long_ua + b"\r\nOrigin: a\x9bb\tc\r\n\r\n")
    head = sniffer.head
    assert head is not None, sniffer.error
    assert head.path == "/\\x1b[2J"
    assert head.origin == "a\\x9bb\\tc"
    assert head.user_agent is not None
    assert len(head.user_agent) == MAX_VALUE_CHARS and head.user_agent.endswith("…")
    assert all(c.isprintable() for c in head.path + head.origin + head.user_agent)


def test_repeated_headers_are_joined_as_a_list() -> None:
    """Several Sec-WebSocket-Protocol lines read as one comma-separated list."""
    sniffer = RequestSniffer()
    sniffer.feed(
        b"GET / HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Protocol: a\r\nSec-WebSocket-Protocol: b\r\n\r\n"
    )
    assert sniffer.head is not None
    assert sniffer.head.ws_protocol == "a, b"
    assert sniffer.head.has_ws_key is False


# -- responses -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "chunks",
    [
        pytest.param([SWITCHING], id="whole"),
        pytest.param(one_byte_at_a_time(SWITCHING), id="byte-at-a-time"),
        pytest.param([SWITCHING + FRAME], id="trailing-frame"),
    ],
)
def test_response_record_is_independent_of_chunking(chunks: list[bytes]) -> None:
    """A 101 with a subprotocol yields the same record fed whole, byte by byte, or with a frame after it."""
    sniffer = ResponseSniffer()
    answers = feed_chunks(sniffer, chunks)
    assert answers == [False] * (len(chunks) - 1) + [True]
    assert (sniffer.state, sniffer.head, sniffer.error) == ("done", SWITCHING_HEAD, None)


@pytest.mark.parametrize(
    ("data", "head"),
    [
        pytest.param(
            b"HTTP/1.1 403 Forbidden\r\nContent-Type: text/plain\r\nContent-Length: 9\r\n\r\nForbidden",
            ResponseHead(403, "Forbidden", None),
            id="403-with-body",
        ),
        pytest.param(
            b"HTTP/1.1 400 Bad Request\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nbad\r\n0\r\n\r\n",
            ResponseHead(400, "Bad Request", None),
            id="400-chunked",
        ),
        pytest.param(
            b"HTTP/1.0 503 Service Unavailable\r\n\r\n", ResponseHead(503, "Service Unavailable", None), id="1.0"
        ),
        pytest.param(b"HTTP/1.1 200\r\nContent-Length: 0\r\n\r\n", ResponseHead(200, "", None), id="no-reason-phrase"),
        pytest.param(
            b"HTTP/1.1 101 Switching Protocols\r\n\r\n", ResponseHead(101, "Switching Protocols", None), id="101-bare"
        ),
        pytest.param(
            b"HTTP/1.1 404 Not\x1bFound\r\n\r\n", ResponseHead(404, "Not\\x1bFound", None), id="escaped-reason"
        ),
        pytest.param(b"HTTP/1.1 404 Not\x00Found\r\n\r\n", None, id="nul-in-reason"),
    ],
)
def test_response_heads(data: bytes, head: ResponseHead | None) -> None:
    """Status, reason and subprotocol are read from non-101 and 101 answers alike; bodies are ignored."""
    sniffer = ResponseSniffer()
    assert sniffer.feed(data)
    if head is None:
        assert sniffer.state == "error" and sniffer.error
    else:
        assert (sniffer.state, sniffer.head) == ("done", head)


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(b"SSH-2.0-OpenSSH_9.6\r\n", id="banner"),
        pytest.param(b"\x00\x01\x02", id="binary"),
        pytest.param(b"HTTX/1.1 200 OK\r\n\r\n", id="near-miss"),
    ],
)
def test_response_raw(data: bytes) -> None:
    """A backend that does not answer with an HTTP/ status line is raw, decided from its first bytes."""
    sniffer = ResponseSniffer()
    assert sniffer.feed(data)
    assert (sniffer.state, sniffer.head, sniffer.error) == ("raw", None, None)


def test_response_malformed_status_line_is_an_error() -> None:
    """A status line that starts with HTTP/ but does not parse is an error with a reason."""
    sniffer = ResponseSniffer()
    assert sniffer.feed(b"HTTP/1.1 abc Nope\r\n\r\n")
    assert sniffer.state == "error" and sniffer.error


@pytest.mark.parametrize(("extra", "state"), [(-1, "done"), (0, "done"), (1, "error")])
def test_response_head_limit(extra: int, state: str) -> None:
    """A response head of up to HEAD_LIMIT bytes parses; one byte more is an error."""
    start = b"HTTP/1.1 403 Forbidden\r\n"
    pad_total = HEAD_LIMIT + extra - len(start) - 2
    lines = []
    while pad_total > 0:
        take = min(pad_total, 4000)
        lines.append(b"X-Pad: " + b"p" * (take - 9) + b"\r\n")
        pad_total -= take
    data = start + b"".join(lines) + b"\r\n"
    assert len(data) == HEAD_LIMIT + extra
    sniffer = ResponseSniffer()
    feed_chunks(sniffer, [data[:100], data[100:] + b"body"])
    assert sniffer.state == state
    if state == "done":
        assert sniffer.head == ResponseHead(403, "Forbidden", None)


def test_response_feed_after_finish_is_a_no_op() -> None:
    """Once finished, feeding the response more returns True and changes nothing."""
    sniffer = ResponseSniffer()
    assert sniffer.feed(SWITCHING)
    assert sniffer.feed(b"HTTP/1.1 500 Oops\r\n\r\n")
    assert sniffer.head == SWITCHING_HEAD


def test_empty_feed_keeps_pending() -> None:
    """An empty chunk decides nothing for either side."""
    request, response = RequestSniffer(), ResponseSniffer()
    assert not request.feed(b"") and not response.feed(b"")
    assert request.state == response.state == "pending"


# -- parsers -------------------------------------------------------------------------------


def http_head(method: str = "GET", path: str = "/", host: str | None = "h", **fields: object) -> RequestHead:
    """A record of a plain (non-upgrade) request, with `fields` overriding the defaults."""
    values: dict[str, object] = {
        "kind": "http",
        "method": method,
        "path": path,
        "host": host,
        "origin": None,
        "user_agent": None,
        "ws_version": None,
        "ws_protocol": None,
        "ws_extensions": None,
        "has_ws_key": False,
    }
    values.update(fields)
    return RequestHead(**values)  # type: ignore[arg-type]


# Heads llhttp reads itself: the usual upgrades, bodies it must not wait for, obs-text values.
LLHTTP_REQUESTS = [
    pytest.param(UPGRADE + FRAME, UPGRADE_HEAD, id="upgrade-then-frame"),
    pytest.param(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n", http_head(), id="plain-get"),
    pytest.param(
        b"GET /ws HTTP/1.1\r\nHost: h\r\nUpgrade: WebSocket\r\nConnection: keep-alive, Upgrade\r\n"
        b"Sec-WebSocket-Protocol: a\r\nSec-WebSocket-Protocol: b\r\n\r\n",
        http_head(path="/ws", kind="websocket", ws_protocol="a, b"),
        id="connection-list-repeated-protocol",
    ),
    pytest.param(
        b"POST /api HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n\r\nhello", http_head("POST", "/api"), id="length-body"
    ),
    pytest.param(
        b"PUT /x HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
        http_head("PUT", "/x"),
        id="chunked-body",
    ),
    pytest.param(
        b"GET /ws HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nContent-Length: 3\r\n\r\nabc",
        http_head(path="/ws", kind="websocket"),
        id="upgrade-with-body",
    ),
    pytest.param(
        b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n\x16\x03\x01",
        http_head("CONNECT", "example.com:443", "example.com:443"),
        id="connect",
    ),
    pytest.param(b"OPTIONS * HTTP/1.1\r\nHost: h\r\n\r\n", http_head("OPTIONS", "*"), id="asterisk-form"),
    pytest.param(b"GET /old HTTP/1.0\r\n\r\n", http_head(path="/old", host=None), id="http-1.0-no-host"),
    pytest.param(
        b"GET / HTTP/1.1\r\nHost: h\r\nUser-Agent: caf\xe9\r\nCookie: \xff\r\n\r\n",
        http_head(user_agent="café"),
        id="obs-text-read-as-iso-8859-1",
    ),
]
LLHTTP_RESPONSES = [
    pytest.param(SWITCHING + FRAME, SWITCHING_HEAD, id="101-then-frame"),
    pytest.param(
        b"HTTP/1.1 403 Forbidden\r\nContent-Length: 9\r\n\r\nForbidden",
        ResponseHead(403, "Forbidden", None),
        id="length-body",
    ),
    pytest.param(
        b"HTTP/1.1 400 Bad Request\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nbad\r\n0\r\n\r\n",
        ResponseHead(400, "Bad Request", None),
        id="chunked-body",
    ),
    pytest.param(b"HTTP/1.0 503 Busy\r\n\r\n", ResponseHead(503, "Busy", None), id="1.0"),
    pytest.param(b"HTTP/1.1 200\r\n\r\n", ResponseHead(200, "", None), id="no-reason-phrase"),
    pytest.param(b"HTTP/1.1 200 Caf\xe9\r\n\r\n", ResponseHead(200, "Café", None), id="obs-text-reason"),
]


def no_fast_path(monkeypatch: pytest.MonkeyPatch) -> None:
    """Switch off the strict regex fast path, so llhttp (or the reference parsers) decide every head."""
    monkeypatch.setattr(sniffer_module, "STRICT_FAST_PATH", False)


def reference_parsers_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """websockets' parser, then h11's: the reference every faster path must agree with."""
    no_fast_path(monkeypatch)
    monkeypatch.setattr(sniffer_module, "_LLHTTP_REQUEST", None)
    monkeypatch.setattr(sniffer_module, "_LLHTTP_RESPONSE", None)


def require_llhttp(monkeypatch: pytest.MonkeyPatch) -> None:
    """llhttp must decide: reaching the websockets/h11 path fails the test."""
    if sniffer_module._LLHTTP_REQUEST is None or sniffer_module._LLHTTP_RESPONSE is None:
        pytest.skip("aiohttp runs without its C extension (llhttp)")
    no_fast_path(monkeypatch)

    def fell_back(head: bytes) -> object:
        raise AssertionError(f"llhttp did not decide {head!r}")

    monkeypatch.setattr(sniffer_module, "_parse_request_fallback", fell_back)
    monkeypatch.setattr(sniffer_module, "_parse_response_fallback", fell_back)


@pytest.fixture
def llhttp_only(monkeypatch: pytest.MonkeyPatch) -> None:
    require_llhttp(monkeypatch)


def test_llhttp_is_the_parser_when_aiohttp_has_it() -> None:
    """With aiohttp's C extension importable (and not switched off), its llhttp parsers are the sniffer's."""
    c_parser = pytest.importorskip("aiohttp._http_parser")
    if aiohttp.helpers.NO_EXTENSIONS:
        pytest.skip("AIOHTTP_NO_EXTENSIONS is set")
    assert sniffer_module._LLHTTP_REQUEST is c_parser.HttpRequestParser
    assert sniffer_module._LLHTTP_RESPONSE is c_parser.HttpResponseParser


@pytest.mark.parametrize(("data", "head"), LLHTTP_REQUESTS)
def test_llhttp_decides_usual_requests(llhttp_only: None, data: bytes, head: RequestHead) -> None:
    """The usual requests, with or without a body, are read by llhttp alone."""
    sniffer = RequestSniffer()
    assert sniffer.feed(data)
    assert (sniffer.state, sniffer.head, sniffer.error) == ("done", head, None)


@pytest.mark.parametrize(("data", "head"), LLHTTP_RESPONSES)
def test_llhttp_decides_usual_responses(llhttp_only: None, data: bytes, head: ResponseHead) -> None:
    """The usual responses, with or without a body, are read by llhttp alone."""
    sniffer = ResponseSniffer()
    assert sniffer.feed(data)
    assert (sniffer.state, sniffer.head, sniffer.error) == ("done", head, None)


# Heads llhttp refuses, or would read unlike websockets and h11: those two decide, as they always did.
OTHER_PARSER_REQUESTS = [
    pytest.param(b"GET /lf HTTP/1.1\nHost: h\n\n", http_head(path="/lf"), id="bare-lf"),
    pytest.param(b"GET /\x1b[2J HTTP/1.1\r\nHost: h\r\n\r\n", http_head(path="/\\x1b[2J"), id="control-in-target"),
    pytest.param(b"GET / HTTP/1.1\r\n\r\n", http_head(host=None), id="http-1.1-no-host"),
    pytest.param(b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", http_head(host="a, b"), id="repeated-host"),
    pytest.param(b"FOO /x HTTP/1.1\r\nHost: h\r\n\r\n", http_head("FOO", "/x"), id="unregistered-method"),
    pytest.param(b"GET / HTTP/1.2\r\nHost: h\r\n\r\n", http_head(), id="http-1.2"),
    pytest.param(b"GET / HTTP/1.1\r\nHost: h\r\nX: a\r\n b\r\n\r\n", http_head(), id="folded-line"),
    pytest.param(b"GET  / HTTP/1.1\r\nHost: h\r\n\r\n", None, id="two-spaces-before-target"),
    pytest.param(b"PUT / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: gzip\r\n\r\n", None, id="coding-not-chunked"),
    pytest.param(
        b"PUT / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", None, id="coding-then-chunked"
    ),
]
OTHER_PARSER_RESPONSES = [
    pytest.param(b"HTTP/1.1 099 Low\r\n\r\n", None, id="status-under-100"),
    pytest.param(b"HTTP/1.1 404 Not\x00Found\r\n\r\n", None, id="nul-in-reason"),
    pytest.param(b"HTTP/1.1 101 OK\r\nUpgrade  : websocket\r\n\r\n", None, id="space-before-colon"),
    pytest.param(b"HTTP/1.1 101 OK\r\nContent-Length 0X: y\r\n\r\n", None, id="space-in-name"),
    pytest.param(b"HTTP/1.1 101 OK\r\nSec-WebSocket-Protocol: \r\r\n\r\n", None, id="lone-cr"),
    pytest.param(
        b"HTTP/1.1 101 OK\r\nSec-WebSocket-Protocol: a\x01b\r\n\r\n",
        ResponseHead(101, "OK", "a\\x01b"),
        id="control-in-value",
    ),
    pytest.param(
        b"HTTP/1.1 101 OK\r\nSec-WebSocket-Protocol: a\r\n b\r\n\r\n", ResponseHead(101, "OK", "a b"), id="folded-line"
    ),
    pytest.param(b"HTTP/1.1 101 OK\nSec-WebSocket-Protocol: a\n\n", ResponseHead(101, "OK", "a"), id="bare-lf"),
    pytest.param(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n", ResponseHead(200, "OK", None), id="coding"),
]


def spy_on(monkeypatch: pytest.MonkeyPatch, name: str) -> list[bytes]:
    """Record the heads passed to sniffer_module.<name>, which still runs."""
    calls: list[bytes] = []
    real = getattr(sniffer_module, name)

    def spy(head: bytes) -> object:
        calls.append(head)
        return real(head)

    monkeypatch.setattr(sniffer_module, name, spy)
    return calls


@pytest.mark.parametrize(("data", "head"), OTHER_PARSER_REQUESTS)
def test_requests_llhttp_refuses_or_misreads_go_to_the_other_parsers(
    monkeypatch: pytest.MonkeyPatch, data: bytes, head: RequestHead | None
) -> None:
    """websockets and h11 decide these requests: recorded if either takes them, else an error with a reason."""
    no_fast_path(monkeypatch)
    calls = spy_on(monkeypatch, "_parse_request_fallback")
    sniffer = RequestSniffer()
    assert sniffer.feed(data)
    assert calls == [data]
    if head is None:
        assert sniffer.state == "error" and sniffer.error and sniffer.head is None
    else:
        assert (sniffer.state, sniffer.head, sniffer.error) == ("done", head, None)


@pytest.mark.parametrize(("data", "head"), OTHER_PARSER_RESPONSES)
def test_responses_llhttp_refuses_or_misreads_go_to_the_other_parsers(
    monkeypatch: pytest.MonkeyPatch, data: bytes, head: ResponseHead | None
) -> None:
    """websockets and h11 decide these responses, lenient llhttp (aiohttp's response mode) not."""
    no_fast_path(monkeypatch)
    calls = spy_on(monkeypatch, "_parse_response_fallback")
    sniffer = ResponseSniffer()
    assert sniffer.feed(data)
    assert calls == [data]
    if head is None:
        assert sniffer.state == "error" and sniffer.error and sniffer.head is None
    else:
        assert (sniffer.state, sniffer.head, sniffer.error) == ("done", head, None)


@pytest.mark.parametrize(
    ("cls", "data"),
    [
        pytest.param(RequestSniffer, p.values[0], id="request-" + str(p.id))
        for p in LLHTTP_REQUESTS + OTHER_PARSER_REQUESTS
    ]
    + [
        pytest.param(ResponseSniffer, p.values[0], id="response-" + str(p.id))
        for p in LLHTTP_RESPONSES + OTHER_PARSER_RESPONSES
    ],
)
def test_without_llhttp_every_record_is_the_same(
    monkeypatch: pytest.MonkeyPatch, cls: type[Sniffer], data: bytes
) -> None:
    """The reference (websockets/h11) path gives each head the outcome the fast path and llhttp give."""
    fast = cls()
    fast.feed(data)
    no_fast_path(monkeypatch)
    with_llhttp = cls()
    with_llhttp.feed(data)
    assert (fast.state, fast.head, fast.error) == (with_llhttp.state, with_llhttp.head, with_llhttp.error)
    reference_parsers_only(monkeypatch)
    without = cls()
    without.feed(data)
    assert (without.state, without.head, without.error) == (with_llhttp.state, with_llhttp.head, with_llhttp.error)


@pytest.mark.parametrize("parsers", ["strict-fast-path", "llhttp", "websockets-h11"])
def test_no_event_loop_is_created_or_needed(monkeypatch: pytest.MonkeyPatch, parsers: str) -> None:
    """Sniffing heads with bodies, upgrades and CONNECT asks asyncio for no loop and makes none."""
    if parsers == "llhttp":
        require_llhttp(monkeypatch)
    elif parsers == "websockets-h11":
        reference_parsers_only(monkeypatch)

    def no_loop(*args: object, **kwargs: object) -> None:
        raise AssertionError("an event loop was asked for")

    for module in (asyncio, asyncio.events):
        for name in ("get_event_loop", "new_event_loop", "get_running_loop"):
            monkeypatch.setattr(module, name, no_loop)
    monkeypatch.setattr(asyncio.BaseEventLoop, "__init__", no_loop)
    # The trap is live: the body reader aiohttp makes for a body (without response_with_body=False) trips it.
    with pytest.raises(AssertionError, match="event loop"):
        aiohttp.streams.StreamReader(None, 2**16)  # type: ignore[arg-type]
    with pytest.raises(AssertionError, match="event loop"):
        asyncio.new_event_loop()

    for param in LLHTTP_REQUESTS + LLHTTP_RESPONSES:
        data, head = param.values
        assert isinstance(data, bytes)
        sniffer = RequestSniffer() if isinstance(head, RequestHead) else ResponseSniffer()
        assert sniffer.feed(data)
        assert (sniffer.state, sniffer.head) == ("done", head)


# Bytes that make a head interesting to the parsers: controls, line ends, spacing, framing fields.
MUTATIONS = [
    *(bytes([b]) for b in (0x00, 0x01, 0x09, 0x0D, 0x0A, 0x1B, 0x20, 0x7F, 0x80, 0xFF)),
    b"  ",
    b"\r\n",
    b":",
    b",",
    b"/",
    b"0",
    b"HTTP/1.0",
    b"HTTP/1.2",
    b"Host: x\r\n",
    b"Host: y\r\n",
    b"Upgrade: websocket\r\n",
    b"Content-Length: 3\r\n",
    b"Content-Length: x\r\n",
    b"Transfer-Encoding: chunked\r\n",
    b"Transfer-Encoding: gzip\r\n",
    b"Sec-WebSocket-Protocol: p\r\n",
    b" folded\r\n",
    b"X : y\r\n",
]
MUTATED_BASES: list[tuple[type[Sniffer], bytes]] = [
    (RequestSniffer, UPGRADE),
    (RequestSniffer, b"POST /api HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n\r\nhello"),
    (RequestSniffer, b"PUT /x HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"),
    (ResponseSniffer, SWITCHING),
    (ResponseSniffer, b"HTTP/1.1 403 Forbidden\r\nContent-Length: 9\r\n\r\nForbidden"),
    (ResponseSniffer, b"HTTP/1.1 400 Bad Request\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"),
]


def mutate(rng: random.Random, data: bytes) -> bytes:
    """`data` with one to three bytes runs inserted, deleted or replaced, or its CRLFs made bare LFs."""
    out = bytearray(data)
    for _ in range(rng.randint(1, 3)):
        at, roll = rng.randrange(len(out) + 1), rng.random()
        if roll < 0.4:
            out[at:at] = rng.choice(MUTATIONS)
        elif roll < 0.65:
            del out[at : at + rng.randint(1, 4)]
        elif roll < 0.9:
            out[at : at + 1] = rng.choice(MUTATIONS)
        else:
            out = bytearray(bytes(out).replace(b"\r\n", b"\n", rng.choice([1, -1])))
    return bytes(out)


Outcome = tuple[str, RequestHead | ResponseHead | None, str | None]


def outcomes(cases: list[tuple[type[Sniffer], bytes]]) -> list[Outcome]:
    """What a fresh sniffer makes of each head, fed whole."""
    results: list[Outcome] = []
    for cls, data in cases:
        sniffer = cls()
        sniffer.feed(data)
        results.append((sniffer.state, sniffer.head, sniffer.error))
    return results


def test_mutated_heads_read_alike_with_and_without_llhttp(monkeypatch: pytest.MonkeyPatch) -> None:
    """A seeded differential fuzz: llhttp's outcome for every mutated head is the websockets/h11 one."""
    if sniffer_module._LLHTTP_REQUEST is None or sniffer_module._LLHTTP_RESPONSE is None:
        pytest.skip("aiohttp runs without its C extension (llhttp)")
    rng = random.Random(1729)
    cases = [(cls, mutate(rng, base)) for cls, base in (rng.choice(MUTATED_BASES) for _ in range(2000))]

    no_fast_path(monkeypatch)
    fallbacks = [spy_on(monkeypatch, "_parse_request_fallback"), spy_on(monkeypatch, "_parse_response_fallback")]
    with_llhttp = outcomes(cases)
    parsed = sum(state in ("done", "error") for state, _, _ in with_llhttp)
    by_llhttp = parsed - sum(len(calls) for calls in fallbacks)
    reference_parsers_only(monkeypatch)
    without = outcomes(cases)
    assert [(data, a, b) for (_, data), a, b in zip(cases, with_llhttp, without, strict=True) if a != b] == []
    assert by_llhttp > 300 and parsed - by_llhttp > 300  # the fuzz reaches both paths


# Mutations that keep a head near the strict grammar, so the fuzz reaches both sides of its border.
STRICT_MUTATIONS = [
    b" ",
    b"\t",
    b"\t \t",
    b"",
    b":",
    b"x",
    b"\x7f",
    b"\x80",
    b"Host: h\r\n",
    b"X-Empty:\r\n",
    b"X-Ws: \t \r\n",
    b"Content-Length: 0\r\n",
    b"Transfer-Encoding: chunked\r\n",
    b"Sec-WebSocket-Protocol:  a ,b \r\n",
    b"sec-websocket-protocol: c\r\n",
    b"UPGRADE: WebSocket\r\n",
    b"HTTP/1.0",
    b"099",
    b"600",
    b"1000",
]


def mutate_near_strict(rng: random.Random, data: bytes) -> bytes:
    """`data` with one or two small edits, mostly inside a line, so most results are still strict heads."""
    out = bytearray(data)
    for _ in range(rng.randint(1, 2)):
        at, roll = rng.randrange(len(out) + 1), rng.random()
        if roll < 0.5:
            out[at:at] = rng.choice(STRICT_MUTATIONS)
        elif roll < 0.8:
            out[at : at + 1] = rng.choice(STRICT_MUTATIONS)
        else:
            del out[at : at + rng.randint(1, 3)]
    return bytes(out)


def test_strict_fast_path_reads_mutated_heads_as_the_reference_parsers_do(monkeypatch: pytest.MonkeyPatch) -> None:
    """A seeded differential fuzz: the regex fast path's outcome for every mutated head is the websockets/h11 one,
    and it decides a good share of them itself (the usual heads)."""
    rng = random.Random(4242)
    bases: list[tuple[type[Sniffer], bytes]] = [
        *MUTATED_BASES,
        (RequestSniffer, b"GET / HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n"),
        (ResponseSniffer, b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok"),
    ]
    cases = [(cls, mutate_near_strict(rng, base)) for cls, base in (rng.choice(bases) for _ in range(3000))]

    decided = [0]
    for name in ("_strict_request_head", "_strict_response_head"):  # the first chunk's path and the framed one's
        real = getattr(sniffer_module, name)

        def counted(head: bytes, match: object, real: object = real) -> object:
            result = real(head, match)  # type: ignore[operator]
            decided[0] += result is not None
            return result

        monkeypatch.setattr(sniffer_module, name, counted)
    fast = outcomes(cases)
    reference_parsers_only(monkeypatch)
    reference = outcomes(cases)
    assert [(data, a, b) for (_, data), a, b in zip(cases, fast, reference, strict=True) if a != b] == []
    parsed = sum(state in ("done", "error") for state, _, _ in fast)
    assert decided[0] > 800 and parsed - decided[0] > 800  # the fuzz reaches both sides of the border


def test_strict_fast_path_is_linear_on_hostile_heads() -> None:
    """Heads built to make a backtracking regex explode (long runs of whitespace, colons, near-misses at the
    end) are decided at once: a guard against catastrophic backtracking, not a speed target."""
    import time

    hostile = [
        b"GET / HTTP/1.1\r\nX: " + b" \t" * 5000 + b"\x01\r\n\r\n",
        b"GET / HTTP/1.1\r\n" + b"X: a\r\n" * 2000 + b"X:\x01\r\n\r\n",
        b"HTTP/1.1 200 " + b" " * 8000 + b"\x00\r\n\r\n",
        b"GET / HTTP/1.1\r\n" + b"a" * 15000 + b"\r\n\r\n",
    ]
    for data in hostile:
        parse = sniffer_module._strict_response if data.startswith(b"HTTP") else sniffer_module._strict_request
        started = time.perf_counter()
        for _ in range(10):
            assert parse(data) is None
        assert time.perf_counter() - started < 1.0, f"{data[:40]!r}... took too long"


@pytest.mark.parametrize("fast", [True, False], ids=["strict-fast-path", "llhttp-or-reference"])
def test_repeated_values_are_one_shared_copy(monkeypatch: pytest.MonkeyPatch, fast: bool) -> None:
    """Records of many connections share one copy of each repeated value (what 9,000 held records cost)."""
    if not fast:
        no_fast_path(monkeypatch)
    first, second = RequestSniffer(), RequestSniffer()
    first.feed(bytes(bytearray(UPGRADE)))
    second.feed(bytes(bytearray(UPGRADE)))
    assert first.head is not None and second.head is not None
    for name in ("method", "path", "host", "origin", "user_agent", "ws_version", "ws_protocol", "ws_extensions"):
        assert getattr(first.head, name) is getattr(second.head, name), name
    long_path = b"/ws?token=" + b"a" * 60  # over SHARED_PATH_CHARS: likelier unique, kept as it is
    long_paths = [RequestSniffer(), RequestSniffer()]
    for sniffer in long_paths:
        sniffer.feed(b"GET " + long_path + b" HTTP/1.1\r\nHost: h\r\n\r\n")
    heads = [s.head for s in long_paths]
    assert heads[0] is not None and heads[1] is not None
    assert heads[0].path == heads[1].path and heads[0].path is not heads[1].path
    replies = [ResponseSniffer(), ResponseSniffer()]
    for reply in replies:
        reply.feed(bytes(bytearray(SWITCHING)))
    assert replies[0].head is not None and replies[1].head is not None
    assert replies[0].head.reason is replies[1].head.reason
    assert replies[0].head.subprotocol is replies[1].head.subprotocol


@pytest.mark.parametrize(
    "data",
    [
        b"ABCDEFGHIJKLMNOPQRSTU / HTTP/1.1\r\nHost: h\r\n\r\n",  # a method past MAX_METHOD_CHARS: raw, as when split
        b"GET / HTTP/1.1\r\nHost: h\r\nContent-Length: 2\r\n\r\nok",  # body framing: the parsers that judge it
        b"GET / HTTP/1.1\r\nHost: h\r\n\r\n\x81\x05hello",  # a WebSocket frame right behind the head
    ],
)
def test_first_chunk_fast_path_reads_as_the_framed_path(data: bytes) -> None:
    """The one-regex read of a whole first chunk decides exactly what the framing path decides byte by byte."""
    whole, split = RequestSniffer(), RequestSniffer()
    whole.feed(data)
    for i in range(len(data)):
        split.feed(data[i : i + 1])
    assert (whole.state, whole.head, whole.error) == (split.state, split.head, split.error)
