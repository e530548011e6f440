"""The ClientHello reader on real hellos from Python's ssl: SNI and ALPN out, whole, byte by byte, re-fragmented,
not TLS, malformed, and a mutation fuzz that only ever ends in a verdict."""

from __future__ import annotations

import random
import ssl

import pytest

from proxy_core.datapath.clienthello import ClientHelloReader, HelloError, parse_client_hello


def real_hello(server_hostname: str | None = "chat.example.com", alpn: list[str] | None = None) -> bytes:
    """The first flight of a real TLS client (Python's ssl, TLS 1.2-1.3), captured through memory BIOs."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    if alpn:
        context.set_alpn_protocols(alpn)
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = context.wrap_bio(incoming, outgoing, server_hostname=server_hostname)
    with pytest.raises(ssl.SSLWantReadError):
        tls.do_handshake()
    return outgoing.read()


def read(data: bytes, step: int | None = None) -> ClientHelloReader:
    reader = ClientHelloReader()
    if step is None:
        reader.feed(data)
    else:
        for i in range(0, len(data), step):
            if reader.feed(data[i : i + step]):
                break
    return reader


def refragment(data: bytes, size: int) -> bytes:
    """The same handshake bytes in records of at most `size` bytes (a client may split its hello)."""
    assert data[0] == 22
    length = int.from_bytes(data[3:5], "big")
    body, version = data[5 : 5 + length], data[1:3]
    out = bytearray()
    for i in range(0, len(body), size):
        chunk = body[i : i + size]
        out += bytes([22]) + version + len(chunk).to_bytes(2, "big") + chunk
    return bytes(out)


def test_real_hello_gives_sni_and_alpn() -> None:
    """A browser-like hello names its server and its protocols."""
    reader = read(real_hello("Chat.Example.com", ["h2", "http/1.1"]))
    assert reader.state == "done" and reader.hello is not None
    assert reader.hello.sni == "chat.example.com"
    assert reader.hello.alpn == ["h2", "http/1.1"]
    assert reader.hello.version == 0x0303


def test_hello_without_sni() -> None:
    """A client that names no server (an IP address target) gives sni None, not an error."""
    reader = read(real_hello(None))
    assert reader.state == "done" and reader.hello is not None and reader.hello.sni is None


@pytest.mark.parametrize("step", [1, 2, 5, 7, 100])
def test_byte_by_byte_and_in_pieces(step: int) -> None:
    """Fed in pieces of any size the verdict is the same, and comes only once the hello is whole."""
    data = real_hello("a.example.com")
    reader = ClientHelloReader()
    for i in range(0, len(data), step):
        done = reader.feed(data[i : i + step])
        assert done == (i + step >= len(data)), i
    assert reader.hello is not None and reader.hello.sni == "a.example.com"


@pytest.mark.parametrize("size", [1, 3, 64, 200])
def test_hello_split_over_records(size: int) -> None:
    """A handshake message spread over several records is put back together."""
    reader = read(refragment(real_hello("split.example.com"), size))
    assert reader.state == "done" and reader.hello is not None and reader.hello.sni == "split.example.com"


@pytest.mark.parametrize("data", [b"GET / HTTP/1.1\r\n", b"\x00", b"PRI * HTTP/2.0", b"\x80\x2e\x01"])
def test_not_tls(data: bytes) -> None:
    """Plaintext (or SSLv2) on a TLS port is said at the first byte."""
    assert read(data).state == "not_tls"


def test_incomplete_stays_waiting() -> None:
    """Every proper prefix of a hello asks for more; nothing is decided on partial data."""
    data = real_hello()
    for cut in (1, 4, 5, 6, 40, len(data) - 1):
        assert read(data[:cut]).state == "need", cut


@pytest.mark.parametrize(
    ("data", "error"),
    [
        (b"\x16\x03\x01\x00\x00", "empty handshake record"),
        (b"\x16\x02\x00\x00\x04\x01\x00\x00\x00", "not TLS"),
        (b"\x16\x03\x01\x00\x04\x02\x00\x00\x00", "not a ClientHello"),
        (b"\x16\x03\x01\x00\x04\x01\x00\x00\x00", "truncated version"),
        (b"\x16\x03\x01\x00\x05\x01\xff\xff\xff\x00", "over"),
    ],
)
def test_malformed(data: bytes, error: str) -> None:
    """TLS that is not a well-formed ClientHello is an error naming the field, never an exception."""
    reader = read(data)
    assert reader.state == "error" and reader.error is not None and error in reader.error


def test_bad_server_name_is_refused() -> None:
    """A server name that is not a DNS host name (a NUL, a slash) is an error: it would never match a route."""
    good = real_hello("abc.example.com")
    bad = good.replace(b"abc.example.com", b"abc/example.com")
    assert read(bad).state == "error"


def test_parse_body_directly_rejects_trailing_bytes() -> None:
    """Bytes after the extensions block are malformed."""
    data = real_hello()
    body = data[9 : 9 + int.from_bytes(data[6:9], "big")]
    assert parse_client_hello(body).sni == "chat.example.com"
    with pytest.raises(HelloError, match="after the extensions"):
        parse_client_hello(body + b"\x00")


def test_fuzz_mutations_end_in_a_verdict() -> None:
    """5,000 random mutations of real hellos (flips, cuts, inserts) give a state, never an exception or a hang."""
    rng = random.Random(20261207)
    seeds = [real_hello("fuzz.example.com", ["http/1.1"]), real_hello(None)]
    for _ in range(5000):
        data = bytearray(rng.choice(seeds))
        for _ in range(rng.randint(1, 4)):
            op, pos = rng.random(), rng.randrange(len(data))
            if op < 0.5:
                data[pos] = rng.randrange(256)
            elif op < 0.75:
                del data[pos : pos + rng.randint(1, 8)]
            else:
                data[pos:pos] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 8)))
        reader = read(bytes(data), step=rng.choice([1, 3, 50, 10_000]))
        assert reader.state in ("need", "done", "not_tls", "error")
        if reader.state == "done":
            assert reader.hello is not None
            assert reader.hello.sni is None or reader.hello.sni.isascii()
