"""The floor: the least a TCP relay on uvloop can do per connection, to tell uvloop's and the kernel's share of
wsproxy's per-connection cost from wsproxy's own.

Per connection: a Protocol for the client, one task running `loop.create_connection` to the next backend (round
robin), bytes that come before the backend is connected kept and flushed with `writelines`, then one
`transport.write` to the peer per chunk; pause/resume reading on the other side for flow control; EOF passed on
with `write_eof`, both closed once both directions are done or either side is lost. No counters, no records, no
checks, no timeouts: what any relay on uvloop pays (accept, connect, two transports, the writes, two closes).
Runs on uvloop (`--asyncio` for the stock loop). Prints `READY` once listening; stops on SIGTERM or SIGINT.
"""

from __future__ import annotations

import asyncio
import itertools
import sys
from collections.abc import Iterator
from typing import cast

from naive_proxy import run_relay, until_signalled

HIGH_WATER, LOW_WATER = 64 * 1024, 16 * 1024  # as wsproxy's relay


class Backend(asyncio.Protocol):
    __slots__ = ("client", "transport")

    def __init__(self, client: Client) -> None:
        self.client = client
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        self.transport.set_write_buffer_limits(HIGH_WATER, LOW_WATER)

    def data_received(self, data: bytes) -> None:
        peer = self.client.transport
        if peer is not None and not peer.is_closing():
            peer.write(data)

    def eof_received(self) -> bool:
        self.client.eof_from_backend()
        return True

    def connection_lost(self, exc: Exception | None) -> None:
        self.client.close()

    def pause_writing(self) -> None:
        if self.client.transport is not None:
            self.client.transport.pause_reading()

    def resume_writing(self) -> None:
        if self.client.transport is not None:
            self.client.transport.resume_reading()


class Client(asyncio.Protocol):
    __slots__ = ("backend", "backend_eof", "client_eof", "early", "transport")

    backends: Iterator[tuple[str, int]] = iter(())

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.backend: Backend | None = None
        self.early: list[bytes] | None = []
        self.client_eof = self.backend_eof = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        self.transport.set_write_buffer_limits(HIGH_WATER, LOW_WATER)
        asyncio.get_running_loop().create_task(self.connect())

    async def connect(self) -> None:
        host, port = next(self.backends)
        try:
            transport, backend = await asyncio.get_running_loop().create_connection(lambda: Backend(self), host, port)
        except OSError:
            self.close()
            return
        if self.transport is None or self.transport.is_closing():
            transport.close()
            return
        self.backend = backend
        if self.early:
            cast(asyncio.Transport, transport).writelines(self.early)
        self.early = None
        if self.client_eof:
            self._send_eof(backend.transport)

    def data_received(self, data: bytes) -> None:
        backend = self.backend
        if backend is not None and backend.transport is not None:
            if not backend.transport.is_closing():
                backend.transport.write(data)
        elif self.early is not None:
            self.early.append(data)

    def eof_received(self) -> bool:
        self.client_eof = True
        if self.backend_eof:
            self.close()
        elif self.backend is not None:
            self._send_eof(self.backend.transport)
        return True

    def eof_from_backend(self) -> None:
        self.backend_eof = True
        if self.client_eof:
            self.close()
        else:
            self._send_eof(self.transport)

    def connection_lost(self, exc: Exception | None) -> None:
        self.close()

    def pause_writing(self) -> None:
        if self.backend is not None and self.backend.transport is not None:
            self.backend.transport.pause_reading()

    def resume_writing(self) -> None:
        if self.backend is not None and self.backend.transport is not None:
            self.backend.transport.resume_reading()

    @staticmethod
    def _send_eof(transport: asyncio.Transport | None) -> None:
        if transport is not None and not transport.is_closing() and transport.can_write_eof():
            transport.write_eof()

    def close(self) -> None:
        for transport in (self.transport, self.backend.transport if self.backend else None):
            if transport is not None and not transport.is_closing():
                transport.close()


async def serve(listen: tuple[str, int], backends: list[tuple[str, int]]) -> None:
    Client.backends = itertools.cycle(backends)
    loop = asyncio.get_running_loop()
    await until_signalled(await loop.create_server(Client, listen[0], listen[1], backlog=4096, reuse_address=True))


def main(argv: list[str] | None = None) -> int:
    return run_relay(serve, (__doc__ or "").splitlines()[0], argv)


if __name__ == "__main__":
    sys.exit(main())
