"""What happens to a connection before the relay sees it: the PROXY header, per-client limits, accept pacing.

Plain listeners without limits pay nothing here: the PROXY gate is the protocol only of listeners that
take the header, and the switchboard calls `Admission.admit` only when a limit is set.
"""

from __future__ import annotations

import asyncio
import ipaddress
import sys
import time
from typing import TYPE_CHECKING, Any, cast

from proxy_core.datapath.limits import AcceptPacer, ClientLimits
from proxy_core.datapath.proxyproto import ProxyHeaderParser
from proxy_core.datapath.relay import ClientSide
from proxy_core.datapath.tls import ListenerTls, session_info
from proxy_core.datapath.tlsdeadline import HandshakeDeadline
from proxy_core.edgeconfig import LimitsConfig, ListenerConfig

if TYPE_CHECKING:
    from proxy_core.datapath.listener import Listener
    from proxy_core.datapath.switchboard import Switchboard

# How long a TLS session may take to close cleanly (close_notify) before the socket is just closed.
TLS_SHUTDOWN_TIMEOUT_S = 10.0

# Sources refused for not being in proxy_protocol_from are logged once each, up to this many addresses.
MAX_LOGGED_SOURCES = 1024
# Bad PROXY headers are logged at most once per this interval, as a count with the last reason.
SUMMARY_INTERVAL_S = 10.0
# A refused client gets this long to send its request head, to be answered 429 rather than just closed.
REFUSAL_WAIT_S = 1.0
REFUSAL_429 = (
    b"HTTP/1.1 429 Too Many Requests\r\nContent-Type: text/plain\r\nContent-Length: 18\r\n"
    b"Retry-After: 1\r\nConnection: close\r\n\r\nToo Many Requests\n"
)
_HTTP_METHODS = (b"GET ", b"POST ", b"PUT ", b"HEAD ", b"DELETE ", b"OPTIONS ", b"PATCH ", b"CONNECT ")


class ProxyIntake:
    """One PROXY-protocol listener: who may send the header, header deadlines, counters."""

    def __init__(self, board: Switchboard, config: ListenerConfig, deadline: float) -> None:
        self.board = board
        self.listener: Listener | None = None
        self.tls: ListenerTls | None = None  # set when the listener also terminates TLS (after the header)
        self.tls_handshake_timeout = 0.0
        self.tls_deadline: HandshakeDeadline | None = None  # with tls: the handshake's head deadline
        self.networks = tuple(ipaddress.ip_network(n) for n in config.proxy_protocol_from)
        self.any_source = config.proxy_protocol_from == ("0.0.0.0/0", "::/0")
        self.deadline = deadline
        self.pending: dict[int, ProxyHeaderGate] = {}  # in order of arrival, for the deadline sweep
        self._next = 0
        self._sweep: asyncio.TimerHandle | None = None
        self.refused_sources = 0
        self.bad_headers = 0
        self.by_reason: dict[str, int] = {}
        self.logged_sources: set[str] = set()
        self._summary = Summary("bad PROXY headers")

    def gate(self) -> ProxyHeaderGate:
        return ProxyHeaderGate(self)

    def allowed(self, host: str) -> bool:
        if self.any_source:
            return True
        try:
            address = ipaddress.ip_address(host)
        except ValueError:
            return False
        return any(address in network for network in self.networks)

    def refuse_source(self, host: str) -> None:
        self.refused_sources += 1
        if host not in self.logged_sources and len(self.logged_sources) < MAX_LOGGED_SOURCES:
            self.logged_sources.add(host)
            where = self.listener.address if self.listener else "?"
            print(
                f"wsproxy: {where}: refused a connection from {host}: not in proxy_protocol_from "
                "(logged once per address)",
                file=sys.stderr,
                flush=True,
            )

    def bad_header(self, reason: str) -> None:
        self.bad_headers += 1
        self.by_reason[reason] = self.by_reason.get(reason, 0) + 1
        where = self.listener.address if self.listener else "?"
        self._summary.add(f"{where}: {reason}")

    def waiting(self, gate: ProxyHeaderGate) -> None:
        self._next += 1
        gate.key = self._next
        self.pending[gate.key] = gate
        if self._sweep is None and self.deadline > 0:
            step = min(self.deadline / 4, 0.25)
            self._sweep = asyncio.get_running_loop().call_later(step, self._sweep_pending, step)

    def _sweep_pending(self, step: float) -> None:
        """Close connections whose header is not complete at the head deadline (one timer for all)."""
        self._sweep = None
        now = time.monotonic()
        while self.pending:
            key, gate = next(iter(self.pending.items()))
            if now - gate.started < self.deadline:
                break
            del self.pending[key]
            gate.fail(f"no PROXY header within {self.deadline:g} s")
        if self.pending:
            self._sweep = asyncio.get_running_loop().call_later(step, self._sweep_pending, step)

    def stats(self) -> dict[str, Any]:
        return {"refused_sources": self.refused_sources, "bad_headers": self.bad_headers, "by_reason": self.by_reason}


class ProxyHeaderGate(asyncio.Protocol):
    """Reads the PROXY header, then hands the connection to a ClientSide carrying the header's client address."""

    __slots__ = ("intake", "key", "parser", "started", "transport")

    def __init__(self, intake: ProxyIntake) -> None:
        self.intake = intake
        self.parser: ProxyHeaderParser | None = None
        self.transport: asyncio.Transport | None = None
        self.started = 0.0
        self.key = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport = cast(asyncio.Transport, transport)
        self.transport = transport
        peer = transport.get_extra_info("peername")
        host = peer[0] if peer else ""
        if not self.intake.allowed(host):
            self.intake.refuse_source(host)
            transport.abort()
            return
        self.parser = ProxyHeaderParser()
        self.started = time.monotonic()
        self.intake.waiting(self)

    def data_received(self, data: bytes) -> None:
        parser = self.parser
        if parser is None or not parser.feed(data):
            return
        self.parser = None
        self.intake.pending.pop(self.key, None)
        transport = self.transport
        assert transport is not None
        if parser.header is None:
            self.fail(parser.error or "bad PROXY header")
            return
        source = parser.header.source
        if source is not None:
            host, port = source
            address = f"{host}:{port}"
        else:  # LOCAL or UNKNOWN: the connection speaks for itself
            peer = transport.get_extra_info("peername")
            address = f"{peer[0]}:{peer[1]}" if peer else "?"
        intake = self.intake
        listener = intake.listener
        where = listener.address if listener else "?"
        if intake.tls is not None:
            tls_client = TlsClientSide(intake.board, where)
            tls_client.address = address
            if intake.tls_deadline is not None:
                intake.tls_deadline.begin(transport, tls_client)
            _start_tls(transport, tls_client, intake.tls, intake.tls_handshake_timeout, parser.rest)
            return
        client = ClientSide(intake.board, where)
        client.address = address
        transport.set_protocol(client)
        client.connection_made(transport)
        if parser.rest and not client.closed:
            client.data_received(parser.rest)

    def fail(self, reason: str) -> None:
        """Close without touching a backend, and count why."""
        self.parser = None
        self.intake.bad_header(reason)
        if self.transport is not None:
            self.transport.abort()

    def eof_received(self) -> bool:
        if self.parser is not None:
            self.intake.pending.pop(self.key, None)
            self.fail("closed before the PROXY header was complete")
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        if self.parser is not None:
            self.intake.pending.pop(self.key, None)
            self.fail("closed before the PROXY header was complete")


def _start_tls(transport: asyncio.Transport, client: ClientSide, tls: ListenerTls, timeout: float, rest: bytes) -> None:
    """Run the TLS server side over a connection whose PROXY header was read, feeding it what followed the header.

    `loop.start_tls` cannot take bytes already read (a ClientHello often arrives in the header's segment), so
    the loop's own SSL protocol (uvloop's, or asyncio's on the stock loop) is put in place the way a TLS
    listener would, and the rest is handed to it as if just received. The client side sees connection_made
    once the handshake is done, as on a TLS listener; failures are counted by the listener's SSL object.
    """
    loop = asyncio.get_running_loop()
    protocol = _ssl_protocol_class(loop)(
        loop, client, tls.front, None, True, None, True, timeout, TLS_SHUTDOWN_TIMEOUT_S
    )
    transport.set_protocol(protocol)
    protocol.connection_made(transport)
    while rest:  # usually one round: the protocol's buffer is larger than a ClientHello
        buffer = protocol.get_buffer(len(rest))
        size = min(len(rest), len(buffer))
        buffer[:size] = rest[:size]
        protocol.buffer_updated(size)
        rest = rest[size:]


def _ssl_protocol_class(loop: asyncio.AbstractEventLoop) -> Any:
    if type(loop).__module__.startswith("uvloop"):
        import uvloop.loop

        return getattr(uvloop.loop, "SSLProtocol")  # noqa: B009  (not in uvloop's stubs)
    import asyncio.sslproto

    return asyncio.sslproto.SSLProtocol


class Summary:
    """A count of like failures, printed at most once per SUMMARY_INTERVAL_S (the first at once)."""

    def __init__(self, what: str) -> None:
        self.what = what
        self.count = 0
        self.last = ""
        self._timer: asyncio.TimerHandle | None = None
        self._quiet_until = 0.0

    def add(self, detail: str) -> None:
        self.count += 1
        self.last = detail
        now = time.monotonic()
        if now >= self._quiet_until and self._timer is None:
            self._flush()
        elif self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(self._quiet_until - now, self._flush)

    def _flush(self) -> None:
        self._timer = None
        if self.count:
            print(f"wsproxy: {self.count} {self.what} (last: {self.last})", file=sys.stderr, flush=True)
            self.count = 0
            self._quiet_until = time.monotonic() + SUMMARY_INTERVAL_S


class Admission:
    """Per-client limits and accept pacing, asked once per accepted connection (only when a limit is set)."""

    def __init__(self, board: Switchboard, config: LimitsConfig) -> None:
        self.board = board
        self.clients = (
            ClientLimits(config.max_conns_per_client, config.new_conns_per_client_per_s, config.burst)
            if config.per_client
            else None
        )
        self.pacer = AcceptPacer(config.max_accept_rate) if config.max_accept_rate else None
        self.holding = False

    def admit(self, client: ClientSide) -> bool:
        """True to go on; False when the client was refused (answered 429 or closed, never logged per attempt)."""
        now = time.monotonic()
        if self.pacer is not None:
            delay = self.pacer.take(now)
            if delay > 0 and not self.holding:
                self.hold(delay)
        if self.clients is not None:
            reason = self.clients.admit(_ip(client.address), now)
            if reason is not None:
                transport = client.transport
                assert transport is not None
                refusal = Refusal(transport)
                transport.set_protocol(refusal)
                return False
        return True

    def release(self, client: ClientSide) -> None:
        if self.clients is not None:
            self.clients.release(_ip(client.address))

    def hold(self, delay: float) -> None:
        """Stop accepting for `delay` s: newcomers wait in the kernel's backlog, nothing spins."""
        self.holding = True
        for listener in self.board.listeners:
            listener.pause()
        asyncio.get_running_loop().call_later(delay, self._release_hold)

    def _release_hold(self) -> None:
        self.holding = False
        board = self.board
        if board.paused_since is None and not board.stopped:
            for listener in board.listeners:
                listener.resume_soon()

    def stats(self, top: int = 10) -> dict[str, Any]:
        clients = self.clients
        return {
            "refused": clients.refused_total if clients else 0,
            "by_reason": dict(clients.refused_by_reason) if clients else {},
            "top_refused": [{"client": ip, "refused": n} for ip, n in clients.top_refused(top)] if clients else [],
            "accept_pauses": self.pacer.pauses if self.pacer else 0,
        }


def _ip(address: str | None) -> str:
    return address.rpartition(":")[0] if address else ""


class Refusal(asyncio.Protocol):
    """A refused client: a short 429 if it sends an HTTP request head, else just closed."""

    __slots__ = ("timer", "transport")

    def __init__(self, transport: asyncio.Transport) -> None:
        self.transport = transport
        self.timer = asyncio.get_running_loop().call_later(REFUSAL_WAIT_S, transport.abort)

    def data_received(self, data: bytes) -> None:
        self.timer.cancel()
        if data.startswith(_HTTP_METHODS):
            self.transport.write(REFUSAL_429)
        self.transport.close()

    def eof_received(self) -> bool:
        self.timer.cancel()
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.timer.cancel()


class TlsGate(asyncio.Protocol):
    """A TLS listener's first protocol: it starts the handshake itself, so the head deadline can close it."""

    __slots__ = ("address", "board", "deadline")

    def __init__(self, board: Switchboard, address: str, deadline: HandshakeDeadline) -> None:
        self.board = board
        self.address = address
        self.deadline = deadline

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport = cast(asyncio.Transport, transport)
        client = TlsClientSide(self.board, self.address)
        self.deadline.begin(transport, client)
        _start_tls(transport, client, self.deadline.tls, self.deadline.backstop, b"")


class TlsClientSide(ClientSide):
    """A client of a TLS listener: the relay's client side plus its TLS version, cipher and SNI for the logs."""

    __slots__ = ("tls", "watch", "watch_key")

    def __init__(self, board: Switchboard, listener: str) -> None:
        super().__init__(board, listener)
        self.watch: HandshakeDeadline | None = None
        self.watch_key = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """The handshake is done (the SSL protocol calls this then)."""
        if self.watch is not None:
            self.watch.done(self.watch_key)
            self.watch = None
        self.tls = session_info(transport.get_extra_info("ssl_object"))
        super().connection_made(transport)

    def eof_received(self) -> bool:
        """TLS has no half-close: the client's close_notify ends the connection (uvloop warns on True)."""
        super().eof_received()
        return False
