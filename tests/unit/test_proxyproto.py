"""The PROXY protocol parser and builder: v1 and v2 tables, incremental feeding, TLVs, and a fuzz."""

from __future__ import annotations

import random
import struct

import pytest

from proxy_core.datapath.proxyproto import (
    V2_MAX,
    V2_SIGNATURE,
    ProxyHeader,
    ProxyHeaderParser,
    build,
    build_v1,
    build_v2,
    split_address,
)

V4 = V2_SIGNATURE + b"\x21\x11\x00\x0c" + bytes([10, 0, 0, 1, 10, 0, 0, 2]) + struct.pack("!HH", 5000, 443)
V6_SRC = bytes(15) + b"\x01"
V6 = V2_SIGNATURE + b"\x21\x21\x00\x24" + V6_SRC + bytes(16) + struct.pack("!HH", 7, 8)
TLV = b"\x04\x00\x03abc" + b"\x01\x00\x08http/1.1"  # NOOP and ALPN
V4_TLV = V2_SIGNATURE + b"\x21\x11" + struct.pack("!H", 12 + len(TLV)) + V4[16:] + TLV

GOOD = [
    (
        b"PROXY TCP4 192.168.0.1 10.0.0.9 56324 443\r\n",
        ProxyHeader(1, "PROXY", ("192.168.0.1", 56324), ("10.0.0.9", 443)),
    ),
    (b"PROXY TCP6 ::1 2001:db8::2 1 65535\r\n", ProxyHeader(1, "PROXY", ("::1", 1), ("2001:db8::2", 65535))),
    (b"PROXY UNKNOWN\r\n", ProxyHeader(1, "PROXY")),
    (b"PROXY UNKNOWN ffff:f::1 ffff:f::2 65535 65535\r\n", ProxyHeader(1, "PROXY")),
    (V4, ProxyHeader(2, "PROXY", ("10.0.0.1", 5000), ("10.0.0.2", 443))),
    (V6, ProxyHeader(2, "PROXY", ("::1", 7), ("::", 8))),
    (V4_TLV, ProxyHeader(2, "PROXY", ("10.0.0.1", 5000), ("10.0.0.2", 443))),
    (V2_SIGNATURE + b"\x20\x00\x00\x00", ProxyHeader(2, "LOCAL")),
    (V2_SIGNATURE + b"\x20\x11\x00\x0c" + bytes(12), ProxyHeader(2, "LOCAL")),  # LOCAL ignores its addresses
    (V2_SIGNATURE + b"\x21\x00\x00\x00", ProxyHeader(2, "PROXY")),  # UNSPEC
    (V2_SIGNATURE + b"\x21\x31" + struct.pack("!H", 216) + bytes(216), ProxyHeader(2, "PROXY")),  # UNIX
]

BAD = [
    (b"GET / HTTP/1.1\r\n\r\n", "not a PROXY protocol header"),
    (b"\x16\x03\x01\x02\x00", "not a PROXY protocol header"),
    (b"PROXYTCP4", "not a PROXY protocol header"),
    (b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n", "not ended by CRLF"),
    (b"PROXY TCP4 " + b"1" * 120, "not ended by CRLF"),
    (b"PROXY TCP5 1.2.3.4 5.6.7.8 1 2\r\n", "TCP4|TCP6"),
    (b"PROXY TCP4 1.2.3.4 5.6.7.8 1\r\n", "TCP4|TCP6"),
    (b"PROXY TCP4 ::1 5.6.7.8 1 2\r\n", "not IPv4"),
    (b"PROXY TCP6 1.2.3.4 ::1 1 2\r\n", "not IPv6"),
    (b"PROXY TCP4 1.2.3.999 5.6.7.8 1 2\r\n", "not an IP address"),
    (b"PROXY TCP4 1.2.3.4 5.6.7.8 65536 2\r\n", "0..65535"),
    (b"PROXY TCP4 1.2.3.4 5.6.7.8 01 2\r\n", "0..65535"),
    (b"PROXY TCP4 1.2.3.4 5.6.7.8 -1 2\r\n", "0..65535"),
    (b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2 \r\n", "TCP4|TCP6"),
    (b"PROXY TCP4 1.2.3.\xff 5.6.7.8 1 2\r\n", "not ASCII"),
    (V2_SIGNATURE + b"\x11\x11\x00\x0c" + bytes(12), "version 1"),
    (V2_SIGNATURE + b"\x22\x11\x00\x0c" + bytes(12), "command 2"),
    (V2_SIGNATURE + b"\x21\x41\x00\x0c" + bytes(12), "not defined"),
    (V2_SIGNATURE + b"\x21\x12\x00\x0c" + bytes(12), "datagram"),
    (V2_SIGNATURE + b"\x21\x11\x00\x08" + bytes(8), "needs 12"),
    (V2_SIGNATURE + b"\x21\x21\x00\x0c" + bytes(12), "needs 36"),
    (V2_SIGNATURE + b"\x21\x11\xff\xff", f"at most {V2_MAX}"),
    (V2_SIGNATURE + b"\x21\x11\x00\x0e" + bytes(12) + b"\x01\x00", "cut short"),
    (V2_SIGNATURE + b"\x21\x11\x00\x10" + bytes(12) + b"\x01\x00\x05a", "past the end"),
    (b"\r\n\r\n\x00\r\nQUIT!", "not a PROXY protocol header"),
]


def _feed_bytewise(data: bytes) -> ProxyHeaderParser:
    parser = ProxyHeaderParser()
    for i in range(len(data)):
        if parser.feed(data[i : i + 1]):
            break
    return parser


@pytest.mark.parametrize(("data", "expected"), GOOD)
def test_good_headers_parse_whole_bytewise_and_with_trailing_bytes(data: bytes, expected: ProxyHeader) -> None:
    """A valid header parses the same fed whole or a byte at a time, and the bytes after it are kept."""
    whole = ProxyHeaderParser()
    assert whole.feed(data + b"GET / HTTP/1.1\r\n")
    assert whole.header == expected and whole.error is None
    assert whole.rest == b"GET / HTTP/1.1\r\n"
    bytewise = _feed_bytewise(data)
    assert bytewise.header == expected and bytewise.rest == b""


@pytest.mark.parametrize(("data", "fragment"), BAD)
def test_bad_headers_name_the_problem(data: bytes, fragment: str) -> None:
    """A malformed header is an error saying what is wrong, whole or fed a byte at a time."""
    for parser in (ProxyHeaderParser(), None):
        if parser is None:
            parser = _feed_bytewise(data + b"\r\n" * 60)
        else:
            assert parser.feed(data + b"\r\n" * 60)
        assert parser.header is None
        assert parser.error is not None and fragment in parser.error, parser.error


@pytest.mark.parametrize("data", [b"", b"P", b"PROXY TCP4 1.2.3.4", V4[:15], V4[:-1], V4_TLV[:-1], b"\r\n\r\n"])
def test_truncated_headers_wait_for_more(data: bytes) -> None:
    """A header cut short is neither good nor bad yet: the parser asks for more bytes."""
    parser = ProxyHeaderParser()
    assert not parser.feed(data)
    assert parser.header is None and parser.error is None


def test_feed_after_the_end_changes_nothing() -> None:
    """Once decided, later bytes leave the header and the rest alone (they belong to the connection)."""
    parser = ProxyHeaderParser()
    assert parser.feed(V4 + b"x")
    assert parser.feed(b"more")
    assert parser.rest == b"x" and parser.header is not None


@pytest.mark.parametrize(
    ("source", "destination", "v1", "v2_header"),
    [
        (("10.0.0.1", 5000), ("10.0.0.2", 443), b"PROXY TCP4 10.0.0.1 10.0.0.2 5000 443\r\n", V4),
        (("::1", 7), ("::", 8), b"PROXY TCP6 ::1 :: 7 8\r\n", V6),
        (None, None, b"PROXY UNKNOWN\r\n", V2_SIGNATURE + b"\x20\x00\x00\x00"),
        (("::1", 7), ("10.0.0.2", 443), b"PROXY UNKNOWN\r\n", V2_SIGNATURE + b"\x20\x00\x00\x00"),
        (("::ffff:10.0.0.1", 5000), ("10.0.0.2", 443), b"PROXY TCP4 10.0.0.1 10.0.0.2 5000 443\r\n", V4),
    ],
)
def test_builders(
    source: tuple[str, int] | None, destination: tuple[str, int] | None, v1: bytes, v2_header: bytes
) -> None:
    """v1 and v2 headers for the real client, UNKNOWN/LOCAL without addresses of one family (health checks)."""
    assert build_v1(source, destination) == v1 == build("v1", source, destination)
    assert build_v2(source, destination) == v2_header == build("v2", source, destination)


def test_built_headers_parse_back() -> None:
    """What the builders write, the parser reads back to the same addresses."""
    for version in ("v1", "v2"):
        for source, destination in ((("192.0.2.7", 1), ("198.51.100.1", 65535)), (("2001:db8::1", 80), ("::2", 81))):
            parser = ProxyHeaderParser()
            assert parser.feed(build(version, source, destination))
            assert parser.header is not None
            assert (parser.header.source, parser.header.destination) == (source, destination)


def test_split_address() -> None:
    """Record-style addresses split into (host, port); names and junk are not addresses."""
    assert split_address("10.0.0.1:80") == ("10.0.0.1", 80)
    assert split_address("::1:80") == ("::1", 80)
    assert split_address("[::1]:80") == ("::1", 80)
    assert split_address("host:80") is None and split_address(None) is None and split_address("1.2.3.4:x") is None


def test_fuzz_never_raises_and_agrees_whole_and_bytewise() -> None:
    """Random and mutated headers never raise; a verdict fed whole equals the verdict fed byte by byte."""
    rng = random.Random(1414)
    seeds = [data for data, _ in GOOD] + [data for data, _ in BAD]
    for _ in range(3000):
        data = bytearray(rng.choice(seeds))
        for _ in range(rng.randint(0, 4)):
            action = rng.random()
            if action < 0.4 and data:
                data[rng.randrange(len(data))] = rng.randrange(256)
            elif action < 0.7:
                data = data[: rng.randint(0, len(data))]
            else:
                data += bytes(rng.randrange(256) for _ in range(rng.randint(1, 40)))
        blob = bytes(data)
        whole = ProxyHeaderParser()
        done = whole.feed(blob)
        bytewise = _feed_bytewise(blob)
        assert (whole.header, whole.error is None) == (bytewise.header, bytewise.error is None), blob
        if done and whole.header is not None:
            assert blob.endswith(whole.rest)
