"""Fleet fixtures: a real redis-server on a free loopback port in the test's tmp dir, and three engines on it.

Redis runs with an fsync'd append-only file so a SIGKILL of it loses no acknowledged change, as a production
store would be set up. It is stopped by PID at teardown, like every engine.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import signal
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from tests.conftest import EchoBackend, EngineFactory, EngineProc, unit, wait_until

REDIS_BIN = shutil.which("redis-server") or "/usr/bin/redis-server"
REDIS_START_S = 5.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class RedisProc:
    """One redis-server child on 127.0.0.1:port, restartable on the same port with the same data dir."""

    def __init__(self, tmp: Path, password: str | None = None) -> None:
        self.port = free_port()
        self.dir = tmp / "redis"
        self.dir.mkdir(exist_ok=True)
        self.password = password
        self.proc: asyncio.subprocess.Process | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    async def start(self) -> None:
        args = [
            REDIS_BIN, "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.dir), "--save", "",
            "--appendonly", "yes", "--appendfsync", "always", "--daemonize", "no",
        ]  # fmt: skip
        if self.password:
            args += ["--requirepass", self.password]
        self.proc = await asyncio.create_subprocess_exec(
            *args, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE
        )
        client = aioredis.Redis(host="127.0.0.1", port=self.port, password=self.password, socket_timeout=0.5)

        async def ready() -> bool:
            try:
                return bool(await client.ping())
            except Exception:
                return False

        try:
            await wait_until(ready, REDIS_START_S, 0.05, "redis-server to answer PING")
        finally:
            await client.aclose()

    async def stop(self, sig: signal.Signals = signal.SIGTERM) -> None:
        if self.proc is not None and self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(sig)
            try:
                await asyncio.wait_for(self.proc.wait(), unit(5.0))
            except TimeoutError:
                self.proc.kill()
                await self.proc.wait()
        self.proc = None


@pytest.fixture
async def redis_server(tmp_path: Path) -> AsyncIterator[RedisProc]:
    server = RedisProc(tmp_path)
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


Fleet = Callable[..., Awaitable[list[EngineProc]]]


def fleet_flags(redis: RedisProc, name: str) -> list[str]:
    return ["--cluster", redis.url, "--instance", name]


@pytest.fixture
def start_fleet(start_engine: EngineFactory, redis_server: RedisProc) -> Fleet:
    """`await start_fleet(backends)` -> three engines n1..n3 on the fleet, each with its own state file."""

    async def start(backends: list[EchoBackend], *extra: str, count: int = 3) -> list[EngineProc]:
        flags = [arg for b in backends for arg in ("--backend", b.flag)]
        engines = []
        for i in range(count):
            engines.append(await start_engine(*flags, *fleet_flags(redis_server, f"n{i + 1}"), *extra))
        return engines

    return start
