"""The data path: two asyncio Protocols writing into each other's transports, with flow control.

After the handshake peek there is no per-byte work: each chunk is written to the peer transport and its
length added to a counter. When a transport's write buffer passes the high-water mark it pauses reading
on the other side, so a slow reader never makes the engine buffer without bound. EOF passes on one way
while the other keeps flowing; the pair is closed once both directions are done, a reset is passed on
as a reset.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
import time
from typing import TYPE_CHECKING, Any, cast

from proxy_core.datapath.sniffer import RequestSniffer, ResponseSniffer

if TYPE_CHECKING:
    from proxy_core.datapath.clienthello import ClientHelloReader
    from proxy_core.datapath.sniffer import RequestHead, ResponseHead
    from proxy_core.datapath.switchboard import Switchboard
    from proxy_core.events import Handshake
    from proxy_core.pool import Pool
    from proxy_core.registry import Server

# Write-buffer marks per transport: 64 KiB keeps a busy pair moving (measured: bulk MB/s flat from 64 KiB
# up) while a stalled reader costs at most about this much per direction.
HIGH_WATER = 64 * 1024
LOW_WATER = 16 * 1024
# Bytes a client may send before its backend is connected; past it the client is paused.
EARLY_LIMIT = 64 * 1024


class ClientSide(asyncio.Protocol):
    """The accepted client connection; it owns the pair's bookkeeping."""

    tls: dict[str, Any] | None = None  # version, cipher, SNI: set by intake.TlsClientSide on TLS listeners

    __slots__ = (
        "address",
        "backend",
        "backend_eof",
        "bytes_in",
        "bytes_out",
        "client_eof",
        "close_reason",
        "closed",
        "closed_by",
        "conn_id",
        "connect_expired",
        "connect_task",
        "early",
        "early_size",
        "engine",
        "first_byte_at",
        "handshake",
        "head",
        "head_error",
        "idle_mark",
        "idle_since",
        "in_at_answer",
        "kind",
        "listener",
        "path",
        "pool",
        "reply",
        "request",
        "response",
        "route",
        "server",
        "started",
        "timer",
        "transport",
    )  # fmt: skip

    def __init__(self, engine: Switchboard, listener: str) -> None:
        self.engine = engine
        self.listener = listener
        self.conn_id = 0
        self.transport: asyncio.Transport | None = None
        self.backend: BackendSide | None = None
        self.server: Server | None = None
        self.pool: Pool | None = None  # chosen by a route (Switchboard.route); None: the first pool
        self.route: int | None = None  # the index of the route that matched
        self.started = 0.0
        self.address: str | None = None  # "host:port" of the client, when kept (see Switchboard.keep_peer)
        self.connect_expired = False
        self.bytes_in = 0
        self.bytes_out = 0
        self.early: list[bytes] | None = []
        self.early_size = 0
        self.client_eof = False
        self.backend_eof = False
        self.closed = False
        self.close_reason = ""
        self.closed_by = ""
        self.request: RequestSniffer | ClientHelloReader | None = None  # the reader: SNI on a passthrough
        self.response: ResponseSniffer | None = None
        self.first_byte_at = 0.0
        self.kind = "raw"
        self.path: str | None = None
        self.timer: asyncio.TimerHandle | None = None
        self.connect_task: asyncio.Task[None] | None = None
        self.idle_mark = -1
        self.idle_since = 0.0
        # bytes_in when the server last sent: equal to bytes_in when the server spoke last (no request pending)
        self.in_at_answer = 0
        self.head: RequestHead | None = None
        self.reply: ResponseHead | None = None
        # The handshake record once logged (its latency too): the close record and the access line read it.
        self.handshake: Handshake | None = None
        self.head_error: str | None = None

    # -- client events ----------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport = cast(asyncio.Transport, transport)  # uvloop's transports are not asyncio.Transport subclasses
        self.transport = transport
        self.started = time.time()
        if self.address is None and self.engine.keep_peer:  # else read from the transport when asked: ~150 B less
            self.address = _address_text(transport.get_extra_info("peername"))
        transport.set_write_buffer_limits(HIGH_WATER, LOW_WATER)
        self.engine.accepted(self)

    def data_received(self, data: bytes) -> None:
        self.bytes_in += len(data)
        backend = self.backend
        if self.request is not None:
            self._sniff_request(data)
        if backend is not None:
            backend.transport.write(data)
            return
        # The backend is not connected yet: keep the bytes (uvloop may deliver data even when paused).
        if self.early is not None:
            self.early.append(data)
            self.early_size += len(data)
            if self.early_size > EARLY_LIMIT and self.transport is not None:
                self.transport.pause_reading()

    def _sniff_request(self, data: bytes) -> None:
        request = self.request
        assert request is not None
        if not self.first_byte_at:
            self.first_byte_at = time.perf_counter()
        if not request.feed(data):
            return
        self.request = None
        self.engine.request_sniffed(self, request)

    def eof_received(self) -> bool:
        self.client_eof = True
        backend = self.backend
        if backend is not None:
            if self.backend_eof:  # both directions done; the server closed first
                self.finish("server", "server EOF")
                return True
            if backend.transport.can_write_eof():
                backend.transport.write_eof()
            self.engine.half_closed(self)
        return True

    def connection_lost(self, exc: Exception | None) -> None:
        if self.closed:
            return
        if exc is not None:
            self.finish("client", f"client reset ({_describe(exc)})", reset=True)
        else:
            self.finish("client", "client closed")

    def pause_writing(self) -> None:
        if self.backend is not None:
            self.backend.transport.pause_reading()

    def resume_writing(self) -> None:
        if self.backend is not None:
            self.backend.transport.resume_reading()

    # -- backend hand-over ------------------------------------------------------------------

    def attach(self, backend: BackendSide) -> None:
        """The backend is connected: flush what the client sent meanwhile and relay directly."""
        self.backend = backend
        transport = self.transport
        assert transport is not None
        if self.early:
            backend.transport.writelines(self.early)
        self.early = None
        if self.early_size > EARLY_LIMIT:
            transport.resume_reading()
        if self.client_eof:
            if backend.transport.can_write_eof():
                backend.transport.write_eof()
            self.engine.half_closed(self)

    def finish(self, closed_by: str, reason: str, *, reset: bool = False) -> None:
        """Close both sides once; a reset is passed on as a reset, anything else flushes then closes."""
        if self.closed:
            return
        self.closed = True
        self.closed_by = closed_by
        self.close_reason = reason
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        if self.connect_task is not None and not self.connect_task.done():
            self.connect_task.cancel()
        for transport in (self.transport, self.backend.transport if self.backend else None):
            if transport is None or transport.is_closing():
                continue
            if reset:
                _reset(transport)
            else:
                transport.close()
        self.engine.closed(self)

    @property
    def client(self) -> str:
        """The client's address as text: kept from the start when records need it, else read when asked."""
        address = self.address
        if address is None and self.transport is not None and not self.closed:
            address = _address_text(self.transport.get_extra_info("peername"))
        return address or "?"

    def describe(self, now: float) -> dict[str, Any]:
        return {
            "id": self.conn_id,
            "client": self.client,
            "server": self.server.name if self.server else None,
            "listener": self.listener,
            "started": self.started,
            "age_s": round(now - self.started, 3),
            "bytes_in": self.bytes_in,
            "bytes_out": self.bytes_out,
            "kind": self.kind,
            "path": self.path,
        }


class BackendSide(asyncio.Protocol):
    """The connection to the chosen server; it forwards to the client side and reports to it."""

    __slots__ = ("client", "transport")

    def __init__(self, client: ClientSide) -> None:
        self.client = client
        self.transport: asyncio.Transport = None  # type: ignore[assignment]

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport = cast(asyncio.Transport, transport)
        self.transport = transport
        transport.set_write_buffer_limits(HIGH_WATER, LOW_WATER)

    def data_received(self, data: bytes) -> None:
        client = self.client
        client.bytes_out += len(data)
        client.in_at_answer = client.bytes_in  # one store per chunk: tells an idle keep-alive from a request pending
        if client.response is not None:
            client.engine.response_data(client, data)
        assert client.transport is not None
        client.transport.write(data)

    def eof_received(self) -> bool:
        client = self.client
        client.backend_eof = True
        if client.client_eof:  # both directions done; the client closed first
            client.finish("client", "client EOF")
            return True
        transport = client.transport
        if transport is not None and not transport.can_write_eof():
            # TLS has no half-close to pass on: the client would wait for a close that never comes (a wss
            # client its whole close timeout). Closing flushes what is buffered, then sends close_notify.
            client.finish("server", "server EOF")
            return True
        if transport is not None:
            transport.write_eof()
        client.engine.half_closed(client)
        return True

    def connection_lost(self, exc: Exception | None) -> None:
        client = self.client
        if client.closed:
            return
        if exc is not None:
            client.finish("server", f"server reset ({_describe(exc)})", reset=True)
        else:
            client.finish("server", "server closed")

    def pause_writing(self) -> None:
        if self.client.transport is not None:
            self.client.transport.pause_reading()

    def resume_writing(self) -> None:
        if self.client.transport is not None:
            self.client.transport.resume_reading()


_LINGER_RESET = struct.pack("ii", 1, 0)


def _reset(transport: asyncio.Transport) -> None:
    """Close with a TCP reset (SO_LINGER 0), so a reset from one peer reaches the other as a reset."""
    sock = transport.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_RESET)
    transport.abort()


def _address_text(peer: tuple[Any, ...] | None) -> str | None:
    """A socket's peer as the records show it: "127.0.0.1:53412" (formatted once, shared by every record)."""
    return f"{peer[0]}:{peer[1]}" if peer else None


def _describe(exc: BaseException) -> str:
    if isinstance(exc, ConnectionResetError):
        return "connection reset"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror.lower()
    return type(exc).__name__


def set_nodelay(transport: asyncio.BaseTransport, enabled: bool) -> None:
    sock = transport.get_extra_info("socket")
    if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1 if enabled else 0)
