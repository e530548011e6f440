"""The server name (SNI) and ALPN of a TLS ClientHello, read without decrypting anything.

A TLS passthrough listener routes on the name the client asks for (nginx's `ssl_preread`, HAProxy's
`req.ssl_sni`) and relays the encrypted bytes untouched. Pure code: bytes in, a verdict out; the caller keeps the
bytes it fed and forwards them all once the verdict is in.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

RECORD_HEADER = 5
CONTENT_HANDSHAKE = 22
HANDSHAKE_CLIENT_HELLO = 1
EXT_SERVER_NAME = 0
EXT_ALPN = 16
NAME_TYPE_HOST = 0
# A ClientHello with post-quantum key shares is about 1.8 KiB; 16 KiB is one whole TLS record and more than any
# client sends. Past it the connection is not a ClientHello we will read.
MAX_HELLO = 16 * 1024
# DNS names: letters, digits, hyphens and underscores in dot-separated labels (RFC 6066: no trailing dot, ASCII).
_LABEL = rb"[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?"
_HOSTNAME = re.compile(rb"^(?=.{1,253}$)" + _LABEL + rb"(?:\." + _LABEL + rb")*$")


class HelloError(ValueError):
    """The bytes are TLS but not a well-formed ClientHello (the reason says where)."""


@dataclass
class ClientHello:
    """What a ClientHello says about where it wants to go."""

    sni: str | None = None  # lower-cased host name, None when the client sent none
    alpn: list[str] = field(default_factory=list)
    version: int = 0  # legacy_version of the hello (0x0303 for TLS 1.2 and 1.3)


class ClientHelloReader:
    """Feed the first bytes of a connection until `state` is not "need".

    States: "need" (feed more), "done" (`hello` is set), "not_tls" (the first byte is not a TLS handshake record:
    plaintext on a TLS port), "error" (`error` says what is wrong). Handshake messages split over several records
    are put back together; the bytes fed are never changed and must all be forwarded by the caller."""

    def __init__(self) -> None:
        self.state = "need"
        self.hello: ClientHello | None = None
        self.error: str | None = None
        self._buffer = bytearray()
        self._handshake = bytearray()
        self._offset = 0  # how much of _buffer has been taken into _handshake

    def feed(self, data: bytes) -> bool:
        """Take more bytes; True once there is a verdict."""
        if self.state != "need":
            return True
        self._buffer += data
        try:
            self._advance()
        except HelloError as exc:
            self.state, self.error = "error", str(exc)
        return self.state != "need"

    def _advance(self) -> None:
        buffer = self._buffer
        if buffer and buffer[0] != CONTENT_HANDSHAKE:
            self.state = "not_tls"
            return
        while len(buffer) - self._offset >= RECORD_HEADER:
            start = self._offset
            if buffer[start] != CONTENT_HANDSHAKE:
                raise HelloError(f"record type {buffer[start]} inside the ClientHello")
            if buffer[start + 1] != 3:
                raise HelloError(f"record version {buffer[start + 1]}.{buffer[start + 2]} is not TLS")
            length = int.from_bytes(buffer[start + 3 : start + 5], "big")
            if length == 0:
                raise HelloError("empty handshake record")
            if len(buffer) - start - RECORD_HEADER < length:
                break
            self._handshake += buffer[start + RECORD_HEADER : start + RECORD_HEADER + length]
            self._offset = start + RECORD_HEADER + length
            if len(self._handshake) > MAX_HELLO + 4:
                raise HelloError(f"ClientHello over {MAX_HELLO} bytes")
            if self._try_parse():
                return
        if len(buffer) > MAX_HELLO + RECORD_HEADER * 4:
            raise HelloError(f"ClientHello over {MAX_HELLO} bytes")

    def _try_parse(self) -> bool:
        message = self._handshake
        if len(message) < 4:
            return False
        if message[0] != HANDSHAKE_CLIENT_HELLO:
            raise HelloError(f"handshake type {message[0]} is not a ClientHello")
        length = int.from_bytes(message[1:4], "big")
        if length > MAX_HELLO:
            raise HelloError(f"ClientHello of {length} bytes is over {MAX_HELLO}")
        if len(message) - 4 < length:
            return False
        self.hello = parse_client_hello(bytes(message[4 : 4 + length]))
        self.state = "done"
        return True


class _Cursor:
    """Bounds-checked reads over one message; any overrun is a HelloError naming the field."""

    __slots__ = ("data", "pos")

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def take(self, n: int, what: str) -> bytes:
        end = self.pos + n
        if end > len(self.data):
            raise HelloError(f"truncated {what}")
        chunk = self.data[self.pos : end]
        self.pos = end
        return chunk

    def number(self, size: int, what: str) -> int:
        return int.from_bytes(self.take(size, what), "big")

    def vector(self, size: int, what: str) -> bytes:
        return self.take(self.number(size, f"{what} length"), what)

    @property
    def left(self) -> int:
        return len(self.data) - self.pos


def parse_client_hello(body: bytes) -> ClientHello:
    """The body of a ClientHello handshake message (after its 4-byte header)."""
    cursor = _Cursor(body)
    hello = ClientHello(version=cursor.number(2, "version"))
    cursor.take(32, "random")
    cursor.vector(1, "session id")
    suites = cursor.vector(2, "cipher suites")
    if not suites or len(suites) % 2:
        raise HelloError("cipher suites list empty or odd")
    cursor.vector(1, "compression methods")
    if not cursor.left:
        return hello  # no extensions at all (SSL 3 style): no SNI
    extensions = _Cursor(cursor.vector(2, "extensions"))
    if cursor.left:
        raise HelloError("bytes after the extensions")
    seen: set[int] = set()
    while extensions.left:
        kind = extensions.number(2, "extension type")
        data = extensions.vector(2, f"extension {kind}")
        if kind in seen:
            raise HelloError(f"extension {kind} twice")
        seen.add(kind)
        if kind == EXT_SERVER_NAME:
            hello.sni = _server_name(data)
        elif kind == EXT_ALPN:
            hello.alpn = _alpn(data)
    return hello


def _server_name(data: bytes) -> str | None:
    names = _Cursor(_Cursor(data).vector(2, "server name list"))
    host: str | None = None
    while names.left:
        name_type = names.number(1, "server name type")
        name = names.vector(2, "server name")
        if name_type != NAME_TYPE_HOST or host is not None:
            continue  # RFC 6066: one host_name; other types are unknown and ignored
        if not _HOSTNAME.match(name):
            raise HelloError("server name is not a DNS host name")
        host = name.decode("ascii").lower()
    return host


def _alpn(data: bytes) -> list[str]:
    protocols = _Cursor(_Cursor(data).vector(2, "ALPN list"))
    out: list[str] = []
    while protocols.left:
        name = protocols.vector(1, "ALPN protocol")
        if not name:
            raise HelloError("empty ALPN protocol name")
        out.append(name.decode("latin-1"))
    return out
