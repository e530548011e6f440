"""Per-client limits and accept pacing with real sockets from two source addresses (127.0.0.2, 127.0.0.3)."""

from __future__ import annotations

import asyncio
import socket
import time

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from tests.conftest import EngineFactory, EngineProc, unit, wait_until
from tests.integration.tcp_peers import TcpServer, cpu_seconds, echo, open_from

pytestmark = pytest.mark.asyncio
HEAVY, LIGHT = "127.0.0.2", "127.0.0.3"
REQUEST = b"GET /ws HTTP/1.1\r\nHost: x\r\n\r\n"


async def _echoes(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
    writer.write(b"ping")
    return await asyncio.wait_for(reader.readexactly(4), unit(5)) == b"ping"


async def _limits(engine: EngineProc) -> dict[str, object]:
    async with engine.client() as client:
        limits: dict[str, object] = (await client.status())["limits"]
        return limits


async def test_max_conns_per_client_refuses_only_that_client(start_engine: EngineFactory) -> None:
    """At its cap a client is refused before any backend (429 to HTTP, closed otherwise); another is not."""
    backend = await TcpServer(echo).start()
    try:
        engine = await start_engine("--backend", backend.flag, "--check", "none", "--max-conns-per-client", "2")
        held = [await open_from(HEAVY, engine.port) for _ in range(2)]
        for reader, writer in held:
            assert await _echoes(reader, writer)
        reader, writer = await open_from(HEAVY, engine.port)
        writer.write(REQUEST)
        answer = await asyncio.wait_for(reader.read(), unit(5))
        assert answer.startswith(b"HTTP/1.1 429 Too Many Requests\r\n"), answer
        reader, writer = await open_from(HEAVY, engine.port)
        writer.write(b"\x00raw protocol")
        assert await asyncio.wait_for(reader.read(), unit(5)) == b""  # not HTTP: just closed
        light = await open_from(LIGHT, engine.port)
        assert await _echoes(*light)
        assert backend.accepted == 3
        held[0][1].close()  # a place frees up once one closes
        await wait_until(lambda: backend.open == 2, what="the closed connection to leave the backend")
        again = await open_from(HEAVY, engine.port)
        await wait_until(lambda: _echoes(*again), what="the client admitted again after a close")
        limits = await _limits(engine)
        assert limits["refused"] == 2
        assert limits["top_refused"] == [{"client": HEAVY, "refused": 2}]
        async with engine.client() as client:
            metrics = (await client._http.get("/metrics")).text
        assert "wsproxy_limit_refused_total 2.0" in metrics
        assert not any(HEAVY in line for line in engine.stderr_lines), engine.output()  # never logged per attempt
    finally:
        await backend.stop()


async def test_new_connection_rate_per_client(start_engine: EngineFactory, echo_backends: object) -> None:
    """A token bucket per client: its burst passes, the next WebSocket gets 429; the other address is unaffected."""
    (backend,) = await echo_backends(1)  # type: ignore[operator]
    engine = await start_engine("--backend", backend.flag, "--new-conns-per-client", "0.5/2")
    sockets = []
    for _ in range(2):
        _, writer = await open_from(HEAVY, engine.port)
        sockets.append(writer)
    sock = socket.socket()
    sock.bind((HEAVY, 0))
    sock.connect(("127.0.0.1", engine.port))
    with pytest.raises(InvalidStatus) as info:
        await connect(f"ws://127.0.0.1:{engine.port}/ws", sock=sock, open_timeout=unit(5))
    assert info.value.response.status_code == 429
    for _ in range(2):
        sock = socket.socket()
        sock.bind((LIGHT, 0))
        sock.connect(("127.0.0.1", engine.port))
        async with connect(f"ws://127.0.0.1:{engine.port}/ws", sock=sock, open_timeout=unit(5)) as ws:
            await ws.send("ok")
            assert await asyncio.wait_for(ws.recv(), unit(5)) == "ok"
    limits = await _limits(engine)
    assert limits["refused"] == 1 and limits["by_reason"] == {
        "too many connections": 0,
        "too many new connections per second": 1,
    }
    for writer in sockets:
        writer.close()


async def test_max_accept_rate_paces_a_storm_without_spinning(start_engine: EngineFactory) -> None:
    """60 clients at once under max_accept_rate 40/s are all served, over about a second, the CPU idle meanwhile."""
    backend = await TcpServer(echo).start()
    try:
        engine = await start_engine("--backend", backend.flag, "--check", "none", "--max-accept-rate", "40")
        cpu_before, started = cpu_seconds(engine.pid), time.monotonic()
        clients = await asyncio.gather(*(open_from(HEAVY if i % 2 else LIGHT, engine.port) for i in range(60)))
        results = await asyncio.gather(*(_echoes(r, w) for r, w in clients))
        elapsed = time.monotonic() - started
        cpu = cpu_seconds(engine.pid) - cpu_before
        assert all(results)
        # 60 at 40/s with a burst of 4: about 1.4 s; never all in one instant
        assert elapsed >= 0.9, elapsed
        assert cpu < 0.5 * elapsed, (cpu, elapsed)
        assert (await _limits(engine))["accept_pauses"] >= 5
        for _, writer in clients:
            writer.close()
    finally:
        await backend.stop()
