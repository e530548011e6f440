"""Connecting to servers that ask for more than TCP: a PROXY header first (`send_proxy`), TLS (`tls = true`).

Used for real traffic (with the client's address in the header) and for health checks (a LOCAL / UNKNOWN
header, as HAProxy's `check-send-proxy`), so a server behind `accept-proxy` can be checked at all.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
from collections.abc import Callable
from typing import Any

from proxy_core.config import ServerConfig
from proxy_core.datapath.proxyproto import build, split_address
from proxy_core.datapath.tls import client_context

ProtocolFactory = Callable[[], asyncio.Protocol]


class UpstreamEdge:
    """How one server is reached: the PROXY header version and the TLS context, if any."""

    __slots__ = ("send_proxy", "server_hostname", "ssl")

    def __init__(self, send_proxy: str | None, context: ssl.SSLContext | None, server_hostname: str | None) -> None:
        self.send_proxy = send_proxy
        self.ssl = context
        self.server_hostname = server_hostname

    @classmethod
    def for_server(cls, config: ServerConfig) -> UpstreamEdge | None:
        """None for a plain server (the common case pays nothing); raises tls.CertProblem for a bad tls_ca."""
        if config.send_proxy is None and not config.tls:
            return None
        context = client_context(config.tls_verify, config.tls_ca) if config.tls else None
        hostname = (config.tls_sni or config.host) if config.tls else None
        return cls(config.send_proxy, context, hostname)

    def header(self, client: str | None, local: Any) -> bytes:
        """The PROXY header for a client connection ("" when this server takes none)."""
        if self.send_proxy is None:
            return b""
        destination = (local[0], local[1]) if local else None
        return build(self.send_proxy, split_address(client), destination)

    async def connect(
        self, loop: asyncio.AbstractEventLoop, factory: ProtocolFactory, host: str, port: int, header: bytes
    ) -> tuple[asyncio.BaseTransport, Any]:
        """Connect; the header goes first, in the clear, then TLS if the server speaks it."""
        if self.ssl is None:
            transport, protocol = await loop.create_connection(factory, host, port)
            if header:
                transport.write(header)  # before the relay flushes anything the client sent
            return transport, protocol
        if not header:
            return await loop.create_connection(factory, host, port, ssl=self.ssl, server_hostname=self.server_hostname)
        sock = await open_socket(loop, host, port)
        try:
            await loop.sock_sendall(sock, header)
            return await loop.create_connection(factory, sock=sock, ssl=self.ssl, server_hostname=self.server_hostname)
        except BaseException:
            sock.close()
            raise

    def check_header(self) -> bytes:
        """What a health check sends: v2 LOCAL or v1 UNKNOWN (the check speaks for no client)."""
        return build(self.send_proxy, None, None) if self.send_proxy else b""

    async def open_check(self, host: str, port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        """A stream to the server for a check: header, then TLS when the server has it."""
        loop = asyncio.get_running_loop()
        sock = await open_socket(loop, host, port)
        try:
            header = self.check_header()
            if header:
                await loop.sock_sendall(sock, header)
            return await asyncio.open_connection(
                sock=sock, ssl=self.ssl, server_hostname=self.server_hostname if self.ssl else None
            )
        except BaseException:
            sock.close()
            raise


async def open_socket(loop: asyncio.AbstractEventLoop, host: str, port: int) -> socket.socket:
    """A connected non-blocking socket to the first address of host that accepts."""
    infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    error: OSError | None = None
    for family, kind, proto, _, address in infos:
        sock = socket.socket(family, kind, proto)
        sock.setblocking(False)
        try:
            await loop.sock_connect(sock, address)
        except OSError as exc:
            sock.close()
            error = exc
            continue
        except BaseException:
            sock.close()
            raise
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return sock
    raise error or OSError(f"cannot resolve {host}")
