"""Fast benchmark backends: one uvloop asyncio.Protocol serving HTTP/1.1 keep-alive and WebSocket echo.

Run as `python bench/backends.py --port P1 --port P2 ...`: one process listens on every port (the backends share
one pinned core with the load generators, so more processes would only add context switches). It prints `READY`
once every port is listening and serves until SIGTERM or SIGINT.

Paths:
- any request:              200 with a 13-byte body (keep-alive unless the request says `Connection: close`);
- `GET /bulk`:              200 with a 1 MiB body;
- `Upgrade: websocket`:     101, then every data frame is echoed and a close frame is answered and the TCP closed.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
import signal
import sys

BULK_SIZE = 1 << 20  # 1 MiB body for the bulk scenario.
SMALL_BODY = b"Hello, world!"
WS_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC11B85"
MAX_HEAD = 16 * 1024  # a request head longer than this is garbage: drop the connection.


def _response(body: bytes, close: bool) -> bytes:
    conn = b"close" if close else b"keep-alive"
    return (
        b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: "
        + str(len(body)).encode()
        + b"\r\nConnection: "
        + conn
        + b"\r\n\r\n"
        + body
    )


SMALL_KA = _response(SMALL_BODY, close=False)
SMALL_CLOSE = _response(SMALL_BODY, close=True)
BULK_KA = _response(b"x" * BULK_SIZE, close=False)
BULK_CLOSE = _response(b"x" * BULK_SIZE, close=True)
_ACCEPT_CACHE: dict[bytes, bytes] = {}


def ws_accept(key: bytes) -> bytes:
    """Sec-WebSocket-Accept for a key (cached: the load generators reuse a few keys)."""
    acc = _ACCEPT_CACHE.get(key)
    if acc is None:
        acc = base64.b64encode(hashlib.sha1(key + WS_GUID).digest())
        if len(_ACCEPT_CACHE) < 1024:
            _ACCEPT_CACHE[key] = acc
    return acc


def _header(head: bytes, name: bytes) -> bytes | None:
    """Value of header `name` (lower-case) in a raw request head, or None."""
    for line in head.split(b"\r\n")[1:]:
        k, sep, v = line.partition(b":")
        if sep and k.strip().lower() == name:
            return v.strip()
    return None


def _unmask(payload: bytes, mask: bytes) -> bytes:
    if mask == b"\0\0\0\0":
        return payload
    n = len(payload)
    key = (mask * (n // 4 + 1))[:n]
    return (int.from_bytes(payload, "little") ^ int.from_bytes(key, "little")).to_bytes(n, "little")


def ws_frame(opcode: int, payload: bytes, mask: bool = False) -> bytes:
    """One final WebSocket frame; masked frames use the all-zero key (valid, and free to apply)."""
    n = len(payload)
    b1 = 0x80 if mask else 0
    if n < 126:
        head = bytes((0x80 | opcode, b1 | n))
    elif n < 65536:
        head = bytes((0x80 | opcode, b1 | 126)) + n.to_bytes(2, "big")
    else:
        head = bytes((0x80 | opcode, b1 | 127)) + n.to_bytes(8, "big")
    return head + (b"\0\0\0\0" if mask else b"") + payload


class BackendProtocol(asyncio.Protocol):
    """HTTP keep-alive responder that switches to a WebSocket echo after an Upgrade."""

    __slots__ = ("buf", "transport", "ws")

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.buf = b""
        self.ws = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        if self.ws:
            self._ws_data(data)
            return
        buf = self.buf + data if self.buf else data
        t = self.transport
        assert t is not None
        while True:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                if len(buf) > MAX_HEAD:
                    t.close()
                    return
                self.buf = buf
                return
            head = buf[:end]
            buf = buf[end + 4 :]
            low = head.lower()
            if b"upgrade: websocket" in low:
                key = _header(head, b"sec-websocket-key") or b""
                t.write(
                    b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                    b"Sec-WebSocket-Accept: " + ws_accept(key) + b"\r\n\r\n"
                )
                self.ws = True
                self.buf = b""
                if buf:
                    self._ws_data(buf)
                return
            close = b"connection: close" in low
            if head.startswith(b"GET /bulk"):
                t.write(BULK_CLOSE if close else BULK_KA)
            else:
                t.write(SMALL_CLOSE if close else SMALL_KA)
            if close:
                t.close()
                self.buf = b""
                return
            if not buf:
                self.buf = b""
                return

    def _ws_data(self, data: bytes) -> None:
        buf = self.buf + data if self.buf else data
        t = self.transport
        assert t is not None
        pos = 0
        size = len(buf)
        out: list[bytes] = []
        while size - pos >= 2:
            b0 = buf[pos]
            b1 = buf[pos + 1]
            n = b1 & 0x7F
            hl = 2
            if n == 126:
                if size - pos < 4:
                    break
                n = int.from_bytes(buf[pos + 2 : pos + 4], "big")
                hl = 4
            elif n == 127:
                if size - pos < 10:
                    break
                n = int.from_bytes(buf[pos + 2 : pos + 10], "big")
                hl = 10
            masked = b1 & 0x80
            if masked:
                hl += 4
            if size - pos < hl + n:
                break
            payload = buf[pos + hl : pos + hl + n]
            if masked:
                payload = _unmask(payload, buf[pos + hl - 4 : pos + hl])
            pos += hl + n
            opcode = b0 & 0x0F
            if opcode == 0x8:  # close: answer it and end the connection.
                out.append(ws_frame(0x8, payload[:2]))
                t.write(b"".join(out))
                t.close()
                self.buf = b""
                return
            if opcode == 0x9:  # ping
                out.append(ws_frame(0xA, payload))
            elif opcode != 0xA:
                out.append(bytes((b0,)) + ws_frame(opcode, payload)[1:])
        self.buf = buf[pos:] if pos < size else b""
        if out:
            t.write(out[0] if len(out) == 1 else b"".join(out))

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None


def _set_once(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)


async def serve(ports: list[int], host: str) -> None:
    """Listen on every port and serve until SIGTERM/SIGINT."""
    loop = asyncio.get_running_loop()
    servers = [await loop.create_server(BackendProtocol, host, p, backlog=4096, reuse_address=True) for p in ports]
    stop = loop.create_future()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, _set_once, stop)
    print("READY", flush=True)
    await stop
    for s in servers:
        s.close()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--port", type=int, action="append", required=True)
    p.add_argument("--host", default="127.0.0.1")
    args = p.parse_args(argv)
    try:
        import uvloop

        uvloop.run(serve(args.port, args.host))
    except ImportError:
        asyncio.run(serve(args.port, args.host))
    return 0


if __name__ == "__main__":
    sys.exit(main())
