"""A listening socket that can stop accepting and resume without closing: the kernel keeps queueing meanwhile.

asyncio and uvloop servers cannot pause, and closing one refuses clients. So the engine owns the
listening socket and serves a duplicate of it: pausing closes only the duplicate (the socket keeps
listening and the backlog keeps filling), resuming serves a fresh duplicate. That is how the engine
stops accepting at its connection cap or on EMFILE without spinning and without refusing anyone.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
from collections.abc import Callable
from typing import Any

from proxy_core.config import format_address

BACKLOG = 1024


class Listener:
    """One `host:port` the engine accepts on."""

    def __init__(
        self,
        host: str,
        port: int,
        factory: Callable[[], asyncio.Protocol] = asyncio.Protocol,
        backlog: int = BACKLOG,
        reuse_port: bool = False,
    ) -> None:
        self.host = host
        self.port = port
        self.factory = factory
        self.backlog = backlog
        self.reuse_port = reuse_port  # workers share the port; the kernel spreads connections over them
        self.sock: socket.socket | None = None
        self.server: asyncio.AbstractServer | None = None
        self.address = format_address(host, port)
        self._resuming: asyncio.Task[None] | None = None
        self.ssl: ssl.SSLContext | None = None  # TLS termination (proxy_core.datapath.edge sets it up)
        self.ssl_handshake_timeout: float | None = None
        self.edge_tls: Any = None  # the listener's proxy_core.datapath.tls.ListenerTls, if TLS
        self.edge_intake: Any = None  # its proxy_core.datapath.intake.ProxyIntake, if it takes the PROXY header

    async def open(self, sock: socket.socket | None = None) -> None:
        """Bind and listen (raises OSError), or take a socket already listening; then start serving."""
        if sock is None:
            sock = await self._bind()
        sock.setblocking(False)
        self.sock = sock
        bound = sock.getsockname()
        self.address = format_address(bound[0], bound[1])
        await self.resume()

    async def _bind(self) -> socket.socket:
        infos = await asyncio.get_running_loop().getaddrinfo(
            self.host, self.port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )
        family, _, _, _, sockaddr = infos[0]
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if self.reuse_port:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            sock.bind(sockaddr)
            sock.listen(self.backlog)
        except OSError:
            sock.close()
            raise
        return sock

    @property
    def serving(self) -> bool:
        return self.server is not None

    async def resume(self) -> None:
        if self.server is not None or self.sock is None:
            return
        tls: dict[str, Any] = {}
        if self.ssl is not None:
            tls = {"ssl": self.ssl, "ssl_handshake_timeout": self.ssl_handshake_timeout}
        self.server = await asyncio.get_running_loop().create_server(
            self.factory, sock=self.sock.dup(), backlog=self.backlog, **tls
        )

    def resume_soon(self) -> None:
        """Resume from a synchronous callback; one resume at a time."""
        if self.server is None and self.sock is not None and (self._resuming is None or self._resuming.done()):
            self._resuming = asyncio.ensure_future(self.resume())

    def pause(self) -> None:
        """Stop accepting; connections wait in the kernel's backlog until resume()."""
        if self.server is not None:
            self.server.close()
            self.server = None

    def close(self) -> None:
        """Stop accepting for good: the socket closes, new connections are refused."""
        self.pause()
        if self.sock is not None:
            self.sock.close()
            self.sock = None
