"""The engine's edge: builds each listener with what it needs (TLS, the PROXY header gate), owns the admission
limits, reloads certificates and reports all of it for the status, the metrics and the dashboard.

Shared by the single-process engine and the workers; a plain listener gets the plain relay protocol.
"""

from __future__ import annotations

import socket
import time
from typing import TYPE_CHECKING, Any

from proxy_core.config import EngineConfig, format_address
from proxy_core.datapath.intake import Admission, ProxyIntake, Summary, TlsGate
from proxy_core.datapath.listener import Listener
from proxy_core.datapath.relay import ClientSide
from proxy_core.datapath.tls import CertProblem, ListenerTls
from proxy_core.datapath.tlsdeadline import HandshakeDeadline
from proxy_core.edgeconfig import ListenerConfig
from proxy_core.errors import ConfigError

if TYPE_CHECKING:
    from proxy_core.datapath.switchboard import Switchboard

# uvloop's default TLS handshake timeout is 60 s; the head deadline is the engine's own bound for a head.
DEFAULT_HANDSHAKE_TIMEOUT_S = 10.0


class Edge:
    """Per-listener TLS and PROXY state, and the admission limits of one switchboard."""

    def __init__(self, board: Switchboard, config: EngineConfig) -> None:
        self.board = board
        self.config = config
        self.tls: dict[str, ListenerTls] = {}
        self.intakes: dict[str, ProxyIntake] = {}
        self.kinds: dict[str, ListenerConfig] = {}
        limits = config.limits
        if limits.per_client or limits.max_accept_rate:
            board.admission = Admission(board, limits)
        self._tls_summary = Summary("failed TLS handshakes")

    def prepare(self, listen: ListenerConfig, reuse_port: bool = False) -> Listener:
        """A listener for these settings, certificates loaded and checked; raises ConfigError naming a bad file."""
        listener = Listener(listen.host, listen.port, reuse_port=reuse_port)
        board = self.board
        tls: ListenerTls | None = None
        handshake_timeout = self.config.timeouts.head or DEFAULT_HANDSHAKE_TIMEOUT_S
        if listen.tls:
            where = format_address(listen.host, listen.port)
            try:
                tls = ListenerTls(where, listen.certificates, time.time())
            except CertProblem as exc:
                raise ConfigError(f"listener {where}", exc.path, exc.problem) from exc
            tls.on_failure = self._tls_failed
            listener.edge_tls = tls
        deadline = HandshakeDeadline(tls, handshake_timeout) if tls is not None else None
        if listen.proxy_protocol:
            # The header comes first in plaintext; with TLS the gate starts the handshake after it.
            intake = ProxyIntake(board, listen, self.config.timeouts.head)
            intake.listener = listener
            if tls is not None and deadline is not None:
                intake.tls = tls
                intake.tls_handshake_timeout = deadline.backstop
                intake.tls_deadline = deadline
            listener.factory = intake.gate
            listener.edge_intake = intake
        elif deadline is not None:
            # The engine starts the handshake on the raw connection, so the head deadline closes and counts it.
            listener.factory = lambda: TlsGate(board, listener.address, deadline)
        else:
            listener.factory = lambda: ClientSide(board, listener.address)
        return listener

    def opened(self, listener: Listener, listen: ListenerConfig) -> None:
        """Register a listener once bound (its address has the real port)."""
        self.kinds[listener.address] = listen
        tls = listener.edge_tls
        if tls is not None:
            tls.address = listener.address
            self.tls[listener.address] = tls
        if listener.edge_intake is not None:
            self.intakes[listener.address] = listener.edge_intake

    def _tls_failed(self, address: str, reason: str) -> None:
        self._tls_summary.add(f"{address}: {reason}")

    def reload_certs(self) -> list[dict[str, Any]]:
        """Load every TLS listener's files again for new handshakes; a bad file is refused and the old set kept."""
        results = []
        now = time.time()
        for address, tls in self.tls.items():
            try:
                tls.reload(now)
            except CertProblem as exc:
                results.append({"listener": address, "ok": False, "detail": str(exc)})
                continue
            leaf = tls.certs.infos[0]
            detail = f"loaded {len(tls.certs.infos)} certificate(s), {leaf.subject}, {leaf.days_left(now):g} days left"
            results.append({"listener": address, "ok": True, "detail": detail})
        return results

    async def reload_all(self) -> list[dict[str, Any]]:
        """What `reload-certs` does: here the listeners' own reload (with workers, they are asked too)."""
        return self.reload_certs()

    def listener_status(self, address: str, now: float) -> dict[str, Any]:
        """What the status and the dashboard show of a listener beyond its connection counts."""
        listen = self.kinds.get(address)
        out: dict[str, Any] = {"tls": False, "proxy_protocol": bool(listen and listen.proxy_protocol)}
        tls = self.tls.get(address)
        if tls is not None:
            out["tls"] = True
            out.update(tls.stats(now))
        intake = self.intakes.get(address)
        if intake is not None:
            out.update(intake.stats())
        return out

    def limits_status(self) -> dict[str, Any]:
        admission = self.board.admission
        return admission.stats() if admission is not None else {"refused": 0, "top_refused": []}


async def open_listener(
    edge: Edge, listen: ListenerConfig, reuse_port: bool = False, sock: socket.socket | None = None
) -> Listener:
    """Prepare, bind (or take `sock`, already listening) and register one listener; OSError is the caller's to word."""
    listener = edge.prepare(listen, reuse_port)
    await listener.open(sock)
    edge.opened(listener, listen)
    return listener
