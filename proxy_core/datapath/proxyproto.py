"""The PROXY protocol (v1 text and v2 binary, haproxy.org/download/2.6/doc/proxy-protocol.txt): parse and build.

Pure code: bytes in, a header (or an error) and the bytes after it out, fed incrementally. TLVs of v2 are
walked to check that they stay inside the header, then skipped: nothing in them changes what the engine does.
"""

from __future__ import annotations

import ipaddress
import socket
import struct
from dataclasses import dataclass

V1_PREFIX = b"PROXY "
V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"
V1_MAX = 107  # the spec's longest v1 line, CRLF included ("PROXY UNKNOWN" + two IPv6 addresses and ports)
V2_FIXED = 16  # signature, version/command, family/protocol, length
# A v2 header may announce up to 64 KiB of TLVs; real senders (HAProxy, AWS NLB, GCP) send well under 1 KiB.
# Past this a header is refused, so a sender cannot make a connection hold 64 KiB before it is judged.
V2_MAX = 4096
_V2_ADDRESS_LENGTH = {0x1: 12, 0x2: 36, 0x3: 216}  # INET, INET6, UNIX address blocks


class ProxyHeaderError(ValueError):
    """The bytes are not a valid PROXY header; the text says what is wrong."""


@dataclass(frozen=True, slots=True)
class ProxyHeader:
    """A parsed header; `source` is None when the sender gave no usable address (LOCAL, UNKNOWN, UNIX)."""

    version: int
    command: str  # "PROXY" | "LOCAL"
    source: tuple[str, int] | None = None
    destination: tuple[str, int] | None = None


class ProxyHeaderParser:
    """Feed bytes until `feed` returns True; then `header` (or `error`) and `rest`, the bytes after the header."""

    __slots__ = ("buffer", "error", "header", "rest")

    def __init__(self) -> None:
        self.buffer = b""
        self.header: ProxyHeader | None = None
        self.error: str | None = None
        self.rest = b""

    def feed(self, data: bytes) -> bool:
        """True once the header is complete or known to be bad; later calls change nothing."""
        if self.header is not None or self.error is not None:
            return True
        buffer = self.buffer + data
        try:
            result = parse(buffer)
        except ProxyHeaderError as exc:
            self.error = str(exc)
            self.buffer = b""
            return True
        if result is None:
            self.buffer = buffer
            return False
        self.header, used = result
        self.rest = buffer[used:]
        self.buffer = b""
        return True


def parse(data: bytes) -> tuple[ProxyHeader, int] | None:
    """A complete header and its length, None when more bytes are needed; raises ProxyHeaderError."""
    if data[:1] == b"P":
        if not V1_PREFIX.startswith(data[:6]):
            raise ProxyHeaderError("not a PROXY protocol header")
        return _parse_v1(data) if len(data) >= len(V1_PREFIX) else None
    if data[:1] == b"\r":
        if not V2_SIGNATURE.startswith(data[:12]):
            raise ProxyHeaderError("not a PROXY protocol header")
        return _parse_v2(data) if len(data) >= V2_FIXED else None
    if not data:
        return None
    raise ProxyHeaderError("not a PROXY protocol header")


def _parse_v1(data: bytes) -> tuple[ProxyHeader, int] | None:
    newline = data.find(b"\n", 0, V1_MAX)
    if newline < 0:
        if len(data) >= V1_MAX:
            raise ProxyHeaderError(f"PROXY v1 line not ended by CRLF within {V1_MAX} bytes")
        return None
    end = newline - 1
    if data[end : end + 1] != b"\r":
        raise ProxyHeaderError(f"PROXY v1 line not ended by CRLF within {V1_MAX} bytes")
    try:
        words = data[:end].decode("ascii").split(" ")
    except UnicodeDecodeError:
        raise ProxyHeaderError("PROXY v1 line is not ASCII") from None
    if len(words) >= 2 and words[1] == "UNKNOWN":
        return ProxyHeader(1, "PROXY"), end + 2
    if len(words) != 6 or words[1] not in ("TCP4", "TCP6"):
        raise ProxyHeaderError("PROXY v1 line is not 'PROXY TCP4|TCP6 SRC DST SPORT DPORT' or 'PROXY UNKNOWN'")
    version = 4 if words[1] == "TCP4" else 6
    source = (_v1_address(words[2], version), _v1_port(words[4]))
    destination = (_v1_address(words[3], version), _v1_port(words[5]))
    return ProxyHeader(1, "PROXY", source, destination), end + 2


def _v1_address(text: str, version: int) -> str:
    """The address normalised; inet_pton/inet_ntop rather than ipaddress: 0.2 against 1.5 µs each (per connection)."""
    family = socket.AF_INET if version == 4 else socket.AF_INET6
    try:
        return socket.inet_ntop(family, socket.inet_pton(family, text))
    except (OSError, ValueError):
        other = socket.AF_INET6 if version == 4 else socket.AF_INET
        try:
            socket.inet_pton(other, text)
        except (OSError, ValueError):
            raise ProxyHeaderError(f"PROXY v1 address {text[:45]!r} is not an IP address") from None
        raise ProxyHeaderError(f"PROXY v1 address {text!r} is not IPv{version}") from None


def _v1_port(text: str) -> int:
    if not text.isdigit() or len(text) > 5 or int(text) > 65535 or (len(text) > 1 and text[0] == "0"):
        raise ProxyHeaderError(f"PROXY v1 port {text[:8]!r} is not in 0..65535")
    return int(text)


def _parse_v2(data: bytes) -> tuple[ProxyHeader, int] | None:
    version_command, family_protocol, length = data[12], data[13], struct.unpack_from("!H", data, 14)[0]
    if version_command >> 4 != 2:
        raise ProxyHeaderError(f"PROXY v2 version {version_command >> 4} (only 2 exists)")
    command = version_command & 0xF
    if command not in (0, 1):
        raise ProxyHeaderError(f"PROXY v2 command {command} (0 LOCAL and 1 PROXY exist)")
    total = V2_FIXED + length
    if total > V2_MAX:
        raise ProxyHeaderError(f"PROXY v2 header of {total} bytes (at most {V2_MAX} accepted)")
    if len(data) < total:
        return None
    if command == 0:  # LOCAL: the sender's own connection (a health check); addresses are the socket's
        return ProxyHeader(2, "LOCAL"), total
    family, protocol = family_protocol >> 4, family_protocol & 0xF
    if family > 3 or protocol > 2:
        raise ProxyHeaderError(f"PROXY v2 address family/protocol 0x{family_protocol:02x} is not defined")
    if protocol == 2:
        raise ProxyHeaderError("PROXY v2 header for a datagram connection on a stream listener")
    needed = _V2_ADDRESS_LENGTH.get(family, 0)
    if length < needed:
        raise ProxyHeaderError(f"PROXY v2 address block of {length} bytes (family needs {needed})")
    _check_tlvs(data, V2_FIXED + needed, total)
    block = data[V2_FIXED : V2_FIXED + needed]
    if family == 1:
        sport, dport = struct.unpack_from("!HH", block, 8)
        source = (socket.inet_ntop(socket.AF_INET, block[0:4]), sport)
        destination = (socket.inet_ntop(socket.AF_INET, block[4:8]), dport)
        return ProxyHeader(2, "PROXY", source, destination), total
    if family == 2:
        sport, dport = struct.unpack_from("!HH", block, 32)
        source = (socket.inet_ntop(socket.AF_INET6, block[0:16]), sport)
        destination = (socket.inet_ntop(socket.AF_INET6, block[16:32]), dport)
        return ProxyHeader(2, "PROXY", source, destination), total
    return ProxyHeader(2, "PROXY"), total  # UNSPEC or UNIX: no address the engine can use


def _check_tlvs(data: bytes, start: int, end: int) -> None:
    """Each TLV (type, 16-bit length, value) must end inside the header; their contents are skipped."""
    at = start
    while at < end:
        if end - at < 3:
            raise ProxyHeaderError(f"PROXY v2 TLV header cut short at byte {at}")
        at += 3 + struct.unpack_from("!H", data, at + 1)[0]
        if at > end:
            raise ProxyHeaderError("PROXY v2 TLV runs past the end of the header")


def split_address(text: str | None) -> tuple[str, int] | None:
    """ "10.0.0.1:5000" or "::1:5000" (as the records write addresses) into (host, port); None if not an IP."""
    if not text:
        return None
    host, _, port = text.rpartition(":")
    host = host.strip("[]")
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return None
    return (host, int(port)) if port.isdigit() else None


def _same_family(source: tuple[str, int] | None, destination: tuple[str, int] | None) -> int:
    """4 or 6 when both are addresses of that family, else 0 (the header then says UNKNOWN / LOCAL)."""
    if source is None or destination is None:
        return 0
    a, b = ipaddress.ip_address(source[0]), ipaddress.ip_address(destination[0])
    if a.version != b.version:
        if a.version == 6 and a.ipv4_mapped is not None and b.version == 4:  # type: ignore[union-attr]
            return 4
        return 0
    return a.version


def _v4(host: str) -> ipaddress.IPv4Address:
    address = ipaddress.ip_address(host)
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    assert isinstance(address, ipaddress.IPv4Address)
    return address


def build_v1(source: tuple[str, int] | None, destination: tuple[str, int] | None) -> bytes:
    """A v1 line for a proxied connection; "PROXY UNKNOWN" without two addresses of one family (health checks)."""
    family = _same_family(source, destination)
    if family == 0 or source is None or destination is None:
        return b"PROXY UNKNOWN\r\n"
    if family == 4:
        src, dst = str(_v4(source[0])), str(_v4(destination[0]))
    else:
        src, dst = str(ipaddress.ip_address(source[0])), str(ipaddress.ip_address(destination[0]))
    return f"PROXY TCP{family} {src} {dst} {source[1]} {destination[1]}\r\n".encode("ascii")


def build_v2(source: tuple[str, int] | None, destination: tuple[str, int] | None) -> bytes:
    """A v2 header for a proxied connection; LOCAL without two addresses of one family (as HAProxy's checks)."""
    family = _same_family(source, destination)
    if family == 0 or source is None or destination is None:
        return V2_SIGNATURE + b"\x20\x00\x00\x00"
    if family == 4:
        block = _v4(source[0]).packed + _v4(destination[0]).packed
        return V2_SIGNATURE + b"\x21\x11\x00\x0c" + block + struct.pack("!HH", source[1], destination[1])
    block = ipaddress.IPv6Address(source[0]).packed + ipaddress.IPv6Address(destination[0]).packed
    return V2_SIGNATURE + b"\x21\x21\x00\x24" + block + struct.pack("!HH", source[1], destination[1])


def build(version: str, source: tuple[str, int] | None, destination: tuple[str, int] | None) -> bytes:
    """`send_proxy = "v1" | "v2"`."""
    return build_v1(source, destination) if version == "v1" else build_v2(source, destination)
