"""WebSocket load-generator process: raw uvloop Protocols, so the client costs as little CPU as possible.

Subcommands (each prints `START` and `STOP` around its measured window, then one `RESULT {json}` line):
- `echo`:      N connections, closed loop (send, wait for the echo, send again) -> msg/s and RTT percentiles;
- `open`:      N connections, messages at a fixed total rate (open loop) -> RTT percentiles;
- `handshake`: C workers each looping connect + upgrade + close handshake -> handshakes/s;
- `idle`:      open N connections, print `READY n`, hold them until a line arrives on stdin (no START/STOP);
- `sse`:       attach one event-stream subscriber to a unix-socket control API and read until SIGTERM;
- `churn`:     C workers each looping connect + (a PROXY header) + `GET / Connection: close` -> connections/s.

`--tls CAFILE` makes echo and handshake speak TLS (verified against CAFILE, SNI `--server-name`).
`--upgrade HOST/PATH` (repeat) makes handshake worker i name `Host: HOST` and request `/PATH` of the i-th entry
(round robin), so a proxy that routes on Host and path spreads them over its pools.

Frames the client sends are masked with the all-zero key (RFC 6455 allows any key; this one costs no XOR).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import signal
import ssl
import sys
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from backends import ws_accept, ws_frame

WS_KEY = b"dGhlIHNhbXBsZSBub25jZQ=="
WS_ACCEPT = ws_accept(WS_KEY)
# Handshakes in flight while opening a pool: enough to be quick, few enough not to overflow listen backlogs.
CONNECT_CONCURRENCY = 200
CONNECT_TIMEOUT = 10.0
DRAIN_WAIT = 1.0  # seconds to wait for replies still in flight after the window closes.
CLOSE_FRAME = ws_frame(0x8, (1000).to_bytes(2, "big"), mask=True)


def upgrade_request(host: str, port: int, path: str = "/ws") -> bytes:
    return (
        f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Key: {WS_KEY.decode()}\r\nSec-WebSocket-Version: 13\r\n\r\n"
    ).encode()


class WsConn(asyncio.Protocol):
    """Client side of one WebSocket: upgrade, then call `on_frame(conn)` per data frame received."""

    __slots__ = ("buf", "closed", "on_frame", "open", "request", "sent", "transport", "upgraded")

    def __init__(self, request: bytes, on_frame: Callable[[WsConn], None] | None = None) -> None:
        loop = asyncio.get_running_loop()
        self.request = request
        self.on_frame = on_frame
        self.transport: asyncio.Transport | None = None
        self.buf = b""
        self.upgraded = False
        self.open: asyncio.Future[None] = loop.create_future()
        self.closed: asyncio.Future[None] = loop.create_future()
        self.sent: deque[int] = deque()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's TCPTransport is not an asyncio.Transport subclass, so no isinstance check here.
        self.transport = transport  # type: ignore[assignment]
        transport.write(self.request)  # type: ignore[attr-defined]

    def data_received(self, data: bytes) -> None:
        buf = self.buf + data if self.buf else data
        if not self.upgraded:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                self.buf = buf
                return
            if not buf.startswith(b"HTTP/1.1 101"):
                self._fail(f"upgrade refused: {buf[:40]!r}")
                return
            self.upgraded = True
            self.open.set_result(None)
            buf = buf[end + 4 :]
        pos, size = 0, len(buf)
        while size - pos >= 2:
            n = buf[pos + 1] & 0x7F
            hl = 2
            if n == 126:
                if size - pos < 4:
                    break
                n, hl = int.from_bytes(buf[pos + 2 : pos + 4], "big"), 4
            elif n == 127:
                if size - pos < 10:
                    break
                n, hl = int.from_bytes(buf[pos + 2 : pos + 10], "big"), 10
            if size - pos < hl + n:
                break
            opcode = buf[pos] & 0x0F
            pos += hl + n
            if opcode == 0x8:
                if not self.closed.done():
                    self.closed.set_result(None)
                assert self.transport is not None
                self.transport.close()
                self.buf = b""
                return
            if self.on_frame is not None and opcode in (0x1, 0x2):
                self.on_frame(self)
        self.buf = buf[pos:] if pos < size else b""

    def _fail(self, why: str) -> None:
        for fut in (self.open, self.closed):
            if not fut.done():
                fut.set_exception(ConnectionError(why))
        if self.transport is not None:
            self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.open.done():
            self.open.set_exception(ConnectionError(f"lost before upgrade: {exc}"))
        if not self.closed.done():
            self.closed.set_result(None)
        self.transport = None


TLS: dict[str, Any] = {}  # ssl= and server_hostname= for every connection, set by --tls


def upgrade_requests(targets: list[str], port: int) -> list[bytes]:
    """`--upgrade HOST/PATH` entries as upgrade requests (`Host: HOST:port`, `GET /PATH`)."""
    requests = []
    for target in targets:
        host, _, path = target.partition("/")
        requests.append(upgrade_request(host, port, "/" + path))
    return requests


async def connect(
    host: str,
    port: int,
    on_frame: Callable[[WsConn], None] | None = None,
    source: str | None = None,
    request: bytes | None = None,
) -> WsConn:
    """Open and upgrade one connection (`request`: another upgrade request than `GET /ws` naming `host`)."""
    loop = asyncio.get_running_loop()
    req = request or upgrade_request(host, port)
    local = (source, 0) if source else None
    _, proto = await loop.create_connection(lambda: WsConn(req, on_frame), host, port, local_addr=local, **TLS)
    await asyncio.wait_for(proto.open, CONNECT_TIMEOUT)
    return proto


async def open_pool(
    host: str, port: int, n: int, on_frame: Callable[[WsConn], None] | None, sources: list[str]
) -> tuple[list[WsConn], int]:
    """Open n connections, at most CONNECT_CONCURRENCY at a time; returns (connections, failures)."""
    sem = asyncio.Semaphore(CONNECT_CONCURRENCY)
    conns: list[WsConn] = []
    failures = 0

    async def one(i: int) -> None:
        nonlocal failures
        async with sem:
            try:
                conns.append(await connect(host, port, on_frame, sources[i % len(sources)] if sources else None))
            except (TimeoutError, OSError):
                failures += 1

    await asyncio.gather(*(one(i) for i in range(n)))
    return conns, failures


def pct(samples: list[int], q: float) -> float | None:
    """q-quantile of nanosecond samples, in milliseconds."""
    if not samples:
        return None
    samples.sort()
    return samples[min(len(samples) - 1, int(q * len(samples)))] / 1e6


def mark(word: str) -> None:
    print(word, flush=True)


def result(**fields: Any) -> None:
    print("RESULT " + json.dumps(fields), flush=True)


def close_all(conns: list[WsConn]) -> None:
    for c in conns:
        if c.transport is not None:
            c.transport.close()


async def run_echo(a: argparse.Namespace) -> None:
    frame = ws_frame(0x2, b"x" * a.size, mask=True)
    rtts: list[int] = []
    running = False
    count = 0
    clock = time.perf_counter_ns

    def on_frame(c: WsConn) -> None:
        nonlocal count
        now = clock()
        if not running:
            return
        rtts.append(now - c.sent.popleft())
        count += 1
        c.sent.append(now)
        c.transport.write(frame)  # type: ignore[union-attr]

    conns, failures = await open_pool(a.host, a.port, a.conns, on_frame, a.source)
    if not conns:
        result(error=f"no connection opened ({failures} failed)")
        return
    mark("START")
    t0 = clock()
    running = True
    for c in conns:
        c.sent.append(clock())
        c.transport.write(frame)  # type: ignore[union-attr]
    await asyncio.sleep(a.duration)
    running = False
    elapsed = (clock() - t0) / 1e9
    mark("STOP")
    close_all(conns)
    result(
        conns=len(conns),
        connect_failures=failures,
        messages=count,
        seconds=elapsed,
        rate=count / elapsed,
        p50=pct(rtts, 0.5),
        p99=pct(rtts, 0.99),
        p999=pct(rtts, 0.999),
    )


async def run_open(a: argparse.Namespace) -> None:
    frame = ws_frame(0x2, b"x" * a.size, mask=True)
    rtts: list[int] = []
    clock = time.perf_counter_ns

    def on_frame(c: WsConn) -> None:
        if c.sent:
            rtts.append(clock() - c.sent.popleft())

    conns, failures = await open_pool(a.host, a.port, a.conns, on_frame, a.source)
    if not conns:
        result(error=f"no connection opened ({failures} failed)")
        return
    mark("START")
    interval = 1e9 / a.rate
    t0 = clock()
    end = t0 + int(a.duration * 1e9)
    due = float(t0)
    sent = 0
    while True:
        now = clock()
        if now >= end:
            break
        while due <= now:  # send everything due; the loop's timers tick in ~1 ms steps.
            c = conns[sent % len(conns)]
            c.sent.append(clock())
            c.transport.write(frame)  # type: ignore[union-attr]
            sent += 1
            due += interval
        # uvloop rounds timers to whole milliseconds, and a 0 ms sleep would spin the load core: sleep >= 1 ms and
        # send what fell due in a burst (about rate/1000 messages, each on its own connection).
        await asyncio.sleep(max(0.001, (due - clock()) / 1e9))
    elapsed = (clock() - t0) / 1e9
    deadline = time.monotonic() + DRAIN_WAIT
    while len(rtts) < sent and time.monotonic() < deadline:
        await asyncio.sleep(0.01)
    mark("STOP")
    close_all(conns)
    result(
        conns=len(conns),
        connect_failures=failures,
        sent=sent,
        received=len(rtts),
        seconds=elapsed,
        rate=sent / elapsed,
        p50=pct(rtts, 0.5),
        p99=pct(rtts, 0.99),
        p999=pct(rtts, 0.999),
        max=pct(rtts, 1.0),
    )


async def run_handshake(a: argparse.Namespace) -> None:
    clock = time.perf_counter_ns
    lat: list[int] = []
    done = 0
    errors = 0
    stop_at = 0

    requests = upgrade_requests(a.upgrade, a.port)

    async def worker(i: int) -> None:
        nonlocal done, errors
        src = a.source[i % len(a.source)] if a.source else None
        request = requests[i % len(requests)] if requests else None
        while clock() < stop_at:
            t = clock()
            try:
                c = await connect(a.host, a.port, None, src, request)
                lat.append(clock() - t)
                c.transport.write(CLOSE_FRAME)  # type: ignore[union-attr]
                await asyncio.wait_for(c.closed, CONNECT_TIMEOUT)
                done += 1
            except (TimeoutError, OSError):
                errors += 1
                await asyncio.sleep(0.01)

    mark("START")
    t0 = clock()
    stop_at = t0 + int(a.duration * 1e9)
    await asyncio.gather(*(worker(i) for i in range(a.conns)))
    elapsed = (clock() - t0) / 1e9
    mark("STOP")
    result(handshakes=done, errors=errors, seconds=elapsed, rate=done / elapsed, p50=pct(lat, 0.5), p99=pct(lat, 0.99))


async def run_idle(a: argparse.Namespace) -> None:
    t0 = time.monotonic()
    conns, failures = await open_pool(a.host, a.port, a.conns, None, a.source)
    opened = time.monotonic() - t0
    if not conns:
        result(error=f"no connection opened ({failures} failed)")
        return
    print(f"READY {len(conns)}", flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
    alive = sum(1 for c in conns if c.transport is not None)
    close_all(conns)
    result(conns=len(conns), connect_failures=failures, alive_at_end=alive, open_seconds=opened)


def _set_once(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)


async def run_sse(a: argparse.Namespace) -> None:
    loop = asyncio.get_running_loop()
    stop = loop.create_future()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, _set_once, stop)
    reader, writer = await asyncio.open_unix_connection(a.unix)
    writer.write(f"GET {a.path} HTTP/1.1\r\nHost: localhost\r\nAccept: text/event-stream\r\n\r\n".encode())
    total = 0
    print("READY", flush=True)

    async def pump() -> None:
        nonlocal total
        while chunk := await reader.read(65536):
            total += len(chunk)

    task = asyncio.ensure_future(pump())
    await asyncio.wait([task, stop], return_when=asyncio.FIRST_COMPLETED)
    task.cancel()
    writer.close()
    result(bytes=total)


CHURN_REQUEST = b"GET / HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n"


class Churn(asyncio.Protocol):
    """One short connection: optional PROXY header and the request in one write, then read until the server closes."""

    def __init__(self, first: bytes) -> None:
        self.first = first
        self.done: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self.size = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport.write(self.first)  # type: ignore[attr-defined]

    def data_received(self, data: bytes) -> None:
        self.size += len(data)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.done.done():
            self.done.set_result(self.size)


def proxy_header(version: str, src: tuple[str, int], dst: tuple[str, int]) -> bytes:
    """A PROXY v1 or v2 header (TCP over IPv4), as an L4 balancer in front would send."""
    if version == "v1":
        return f"PROXY TCP4 {src[0]} {dst[0]} {src[1]} {dst[1]}\r\n".encode()
    packed = bytes(int(x) for x in src[0].split(".")) + bytes(int(x) for x in dst[0].split("."))
    ports = src[1].to_bytes(2, "big") + dst[1].to_bytes(2, "big")
    return b"\r\n\r\n\x00\r\nQUIT\n\x21\x11\x00\x0c" + packed + ports


async def run_churn(a: argparse.Namespace) -> None:
    loop = asyncio.get_running_loop()
    clock = time.perf_counter_ns
    done = errors = 0
    stop_at = 0

    async def worker(i: int) -> None:
        nonlocal done, errors
        while clock() < stop_at:
            header = b""
            if a.proxy_header:
                header = proxy_header(
                    a.proxy_header, (f"10.0.{i % 250}.{done % 250 + 1}", 40000 + i), ("10.1.0.1", 443)
                )
            try:
                first = header + CHURN_REQUEST
                _, proto = await loop.create_connection(lambda first=first: Churn(first), a.host, a.port)
                if await asyncio.wait_for(proto.done, CONNECT_TIMEOUT):
                    done += 1
                else:
                    errors += 1
            except (TimeoutError, OSError):
                errors += 1
                await asyncio.sleep(0.01)

    mark("START")
    t0 = clock()
    stop_at = t0 + int(a.duration * 1e9)
    await asyncio.gather(*(worker(i) for i in range(a.conns)))
    elapsed = (clock() - t0) / 1e9
    mark("STOP")
    result(connections=done, errors=errors, seconds=elapsed, rate=done / elapsed)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("mode", choices=["echo", "open", "handshake", "idle", "sse", "churn"])
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--conns", type=int, default=50)
    p.add_argument("--duration", type=float, default=5.0)
    p.add_argument("--rate", type=float, default=5000.0, help="open loop: messages per second in total")
    p.add_argument("--size", type=int, default=32, help="payload bytes per message")
    p.add_argument("--source", action="append", default=[], help="client source address (repeat)")
    p.add_argument("--unix", help="sse: control socket path")
    p.add_argument("--path", default="/v1/events/stream", help="sse: path to subscribe to")
    p.add_argument("--tls", metavar="CAFILE", help="speak TLS, verifying against this CA")
    p.add_argument("--server-name", default="bench.test", help="with --tls: the SNI and the name verified")
    p.add_argument("--proxy-header", choices=["v1", "v2"], help="churn: send a PROXY header first")
    p.add_argument(
        "--upgrade", action="append", default=[], metavar="HOST/PATH", help="handshake: Host and path (repeat)"
    )
    a = p.parse_args(argv)
    if a.tls:
        context = ssl.create_default_context(cafile=a.tls)
        context.set_alpn_protocols(["http/1.1"])
        TLS.update(ssl=context, server_hostname=a.server_name)
    gc.disable()  # a collection pause would show up as proxy latency; a bounded run needs no cycle collector
    run = {
        "echo": run_echo, "open": run_open, "handshake": run_handshake, "idle": run_idle, "sse": run_sse,
        "churn": run_churn,
    }  # fmt: skip
    try:
        import uvloop

        uvloop.run(run[a.mode](a))
    except ImportError:
        asyncio.run(run[a.mode](a))
    return 0


if __name__ == "__main__":
    sys.exit(main())
