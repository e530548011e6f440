"""Raw TCP peers for data-path tests: an echo server, a tagging server, a half-close peer and a pusher."""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import socket
from collections.abc import Awaitable, Callable

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


class TcpServer:
    """A loopback asyncio server whose handler decides the behaviour; counts accepted connections."""

    def __init__(self, handler: Handler, name: str = "t") -> None:
        self.handler = handler
        self.name = name
        self.server: asyncio.Server | None = None
        self.port = 0
        self.accepted = 0
        self.open = 0
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def flag(self) -> str:
        return f"{self.name}=127.0.0.1:{self.port}"

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        self.open += 1
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            await self.handler(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            self.open -= 1
            self._tasks.discard(task)
            writer.close()

    async def start(self) -> TcpServer:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", self.port)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
            for task in list(self._tasks):
                task.cancel()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.server.wait_closed(), 5)
            self.server = None


async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Echo every byte; on EOF, echo what is left and close."""
    while data := await reader.read(65536):
        writer.write(data)
        await writer.drain()


def tagging(tag: bytes) -> Handler:
    """Send `tag` first, then echo: tells a test which backend a connection reached."""

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(tag)
        await echo(reader, writer)

    return handler


def closed_port() -> int:
    """A loopback port nothing listens on, below the ephemeral range so no outgoing connection takes it
    meanwhile (a test may start a server on it later, after a restart)."""
    low = 32768
    with contextlib.suppress(OSError, ValueError), open("/proc/sys/net/ipv4/ip_local_port_range") as ports:
        low = int(ports.read().split()[0])
    rng = random.Random()
    for _ in range(100):
        port = rng.randrange(max(1025, low - 12000), low)
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise AssertionError("no free port below the ephemeral range")


async def read_exactly(reader: asyncio.StreamReader, n: int, timeout: float = 5.0) -> bytes:
    return await asyncio.wait_for(reader.readexactly(n), timeout)


def rss_kib(pid: int) -> int:
    """Resident memory of a process, from /proc."""
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError(f"no VmRSS for pid {pid}")


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time of a process, from /proc."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def socket_from(source: str, port: int) -> socket.socket:
    """A blocking socket from this loopback source address (a client of its own), connected to the engine."""
    sock = socket.socket()
    sock.settimeout(5.0)
    sock.bind((source, 0))
    sock.connect(("127.0.0.1", port))
    return sock


async def open_from(source: str, port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """An asyncio stream from this loopback source address to the engine."""
    sock = socket.socket()
    sock.bind((source, 0))
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port))
    return await asyncio.open_connection(sock=sock)
