"""The data path with real sockets and a real engine process: spreading, retries, drain, half-close, flow control."""

from __future__ import annotations

import asyncio
import hashlib
import random
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from websockets.asyncio.client import connect

from tests.conftest import EngineFactory, EngineProc, unit, wait_until
from tests.integration.tcp_peers import TcpServer, closed_port, echo, read_exactly, tagging

TAG = 4  # every tagging backend sends 4 bytes ("b1\r\n") first


async def tagged_pool(n: int) -> list[TcpServer]:
    return [await TcpServer(tagging(f"b{i + 1}\r\n".encode()), f"b{i + 1}").start() for i in range(n)]


async def which_backend(port: int, source: str = "127.0.0.1") -> tuple[str, asyncio.StreamWriter]:
    """Open a connection through the proxy and read the backend's tag; the writer keeps it open."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port, local_addr=(source, 0))
    tag = await read_exactly(reader, TAG)
    return tag.decode().strip(), writer


@pytest.fixture
async def pool() -> Any:
    servers: list[TcpServer] = []

    async def make(n: int) -> list[TcpServer]:
        made = await tagged_pool(n)
        servers.extend(made)
        return made

    yield make
    for server in servers:
        await server.stop()


PoolFactory = Callable[[int], Awaitable[list[TcpServer]]]


async def test_round_robin_spreads_evenly(start_engine: EngineFactory, pool: PoolFactory) -> None:
    """Round robin with weights 1,1,2 sends 4 of every 4 connections as b1 b3 b2 b3 (smooth, no bursts)."""
    b1, b2, b3 = await pool(3)
    engine = await start_engine("--backend", b1.flag, "--backend", b2.flag, "--backend", f"{b3.flag},weight=2")
    seen = []
    for _ in range(8):
        name, writer = await which_backend(engine.port)
        seen.append(name)
        writer.close()
    assert Counter(seen) == {"b1": 2, "b2": 2, "b3": 4}
    assert seen[:4].count("b3") == 2


async def test_least_conn_prefers_idle_server(start_engine: EngineFactory, pool: PoolFactory) -> None:
    """least_conn sends a new connection to the server with the fewest open ones."""
    b1, b2 = await pool(2)
    engine = await start_engine("--backend", b1.flag, "--backend", b2.flag, "--balance", "least_conn")
    held = [await which_backend(engine.port) for _ in range(4)]
    assert Counter(name for name, _ in held) == {"b1": 2, "b2": 2}
    # Close both on b1: the next two must go to b1.
    for name, writer in held:
        if name == "b1":
            writer.close()
    await wait_until(lambda: b1.open == 0, what="b1 connections closed")
    await wait_until(lambda: _active(engine, "b1", 0), what="engine sees b1 idle")
    nxt = [await which_backend(engine.port) for _ in range(2)]
    assert [name for name, _ in nxt] == ["b1", "b1"]
    for _, writer in held + nxt:
        writer.close()


async def _active(engine: EngineProc, name: str, count: int) -> bool:
    async with engine.client() as client:
        status = await client.status()
    return any(s["name"] == name and s["active"] == count for s in status["servers"])


async def test_ip_hash_is_sticky_per_client(start_engine: EngineFactory, pool: PoolFactory) -> None:
    """ip_hash keeps each client address on one server and spreads different addresses over the pool."""
    servers = await pool(4)
    engine = await start_engine(*[arg for s in servers for arg in ("--backend", s.flag)], "--balance", "ip_hash")
    placement: dict[str, set[str]] = {}
    for i in range(2, 22):
        source = f"127.0.0.{i}"
        for _ in range(3):
            name, writer = await which_backend(engine.port, source)
            placement.setdefault(source, set()).add(name)
            writer.close()
    assert all(len(names) == 1 for names in placement.values()), placement
    assert len({next(iter(names)) for names in placement.values()}) >= 3


async def test_concurrent_payloads_arrive_byte_exact(start_engine: EngineFactory) -> None:
    """200 concurrent connections moving random payloads arrive byte-exact in both directions."""
    backends = [await TcpServer(echo, f"e{i}").start() for i in range(2)]
    try:
        engine = await start_engine("--backend", backends[0].flag, "--backend", backends[1].flag)
        rng = random.Random(7)

        async def one(i: int) -> bool:
            payload = rng.randbytes(rng.randint(1, 256 * 1024))
            reader, writer = await asyncio.open_connection("127.0.0.1", engine.port)
            writer.write(payload)
            writer.write_eof()  # half-close: the echo must still come back in full
            got = await asyncio.wait_for(reader.read(), unit(30))
            writer.close()
            return hashlib.sha256(got).digest() == hashlib.sha256(payload).digest()

        results = await asyncio.gather(*(one(i) for i in range(200)))
        assert all(results)
        async with engine.client() as client:
            status = await client.status()
        assert status["totals"]["total"] == 200
        assert sum(s["total"] for s in status["servers"]) == 200
    finally:
        for backend in backends:
            await backend.stop()


async def test_websocket_echo_through_proxy(start_engine: EngineFactory, echo_backends: Any) -> None:
    """Real websockets clients exchange text and binary messages with real websockets servers through the proxy."""
    b1, b2 = await echo_backends(2)
    engine = await start_engine("--backend", b1.flag, "--backend", b2.flag)
    async with connect(f"ws://127.0.0.1:{engine.port}/chat") as ws:
        for message in ["hello", b"\x00\xff" * 5000, "x" * 100_000]:
            await ws.send(message)
            assert await asyncio.wait_for(ws.recv(), unit(5)) == message


async def test_refused_backend_is_retried_on_another(start_engine: EngineFactory, pool: PoolFactory) -> None:
    """A refused connect is retried on the next server; the client never notices; each attempt is counted."""
    (b1,) = await pool(1)
    dead = f"dead=127.0.0.1:{closed_port()}"
    engine = await start_engine("--backend", dead, "--backend", b1.flag, "--check", "none", "--max-fails", "0")
    for _ in range(4):
        name, writer = await which_backend(engine.port)
        assert name == "b1"
        writer.close()
    async with engine.client() as client:
        status = await client.status()
        events = await client.events(0)
    dead_row = next(s for s in status["servers"] if s["name"] == "dead")
    assert dead_row["connect_failures"] == 2  # round robin tried it for every other connection
    failures = [e for e in events["events"] if e["type"] == "connect_failed"]
    assert failures and failures[0]["reason"] == "connection refused"


async def test_all_backends_refuse_closes_client(start_engine: EngineFactory) -> None:
    """When every server refuses, the client is closed promptly after the attempts."""
    engine = await start_engine(
        "--backend", f"d1=127.0.0.1:{closed_port()}", "--backend", f"d2=127.0.0.1:{closed_port()}", "--check", "none"
    )
    reader, writer = await asyncio.open_connection("127.0.0.1", engine.port)
    assert await asyncio.wait_for(reader.read(), unit(5)) == b""
    writer.close()


async def test_drained_server_keeps_connections_and_gets_no_new(start_engine: EngineFactory, pool: PoolFactory) -> None:
    """A draining server's established connections keep working; new ones all go elsewhere."""
    b1, b2 = await pool(2)
    engine = await start_engine("--backend", b1.flag, "--backend", b2.flag)
    held = [await which_backend(engine.port) for _ in range(2)]
    on_b1 = next(writer for name, writer in held if name == "b1")
    async with engine.client() as client:
        server = await client.drain("b1")
        assert server["state"] == "draining" and server["active"] == 1
    for _ in range(4):
        name, writer = await which_backend(engine.port)
        assert name == "b2"
        writer.close()
    # The held connection to b1 still echoes.
    reader = on_b1.transport.get_extra_info("socket")
    assert reader is not None
    on_b1.write(b"ping")
    await on_b1.drain()
    for _, writer in held:
        writer.close()


async def test_removed_server_gets_no_new_connections(start_engine: EngineFactory, pool: PoolFactory) -> None:
    """After `remove`, a server receives no new connections."""
    b1, b2 = await pool(2)
    engine = await start_engine("--backend", b1.flag, "--backend", b2.flag, "--check", "none")
    async with engine.client() as client:
        await client.remove("b1")
    for _ in range(4):
        name, writer = await which_backend(engine.port)
        assert name == "b2"
        writer.close()
    assert b1.accepted == 0


async def _events_of(engine: EngineProc, kind: str) -> list[dict[str, Any]]:
    async with engine.client() as client:
        data = await client.events(0)
    return [e for e in data["events"] if e["type"] == kind]


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["--backend", "127.0.0.1:99999"], "--backend.address: invalid value"),
        (["--backend", "127.0.0.1:8001", "--balance", "random"], "invalid choice"),
        (["--backend", "127.0.0.1:8001", "--rise", "0"], "--rise: invalid value 0"),
        ([], "at least one server"),
    ],
)
async def test_bad_flags_exit_2_with_message(args: list[str], fragment: str, wsproxy_cli: Any) -> None:
    """A malformed flag exits with status 2 and a message naming it."""
    result = await wsproxy_cli("serve", "--listen", "127.0.0.1:0", *args)
    assert result.code == 2
    assert fragment in result.err


async def test_bad_config_file_exits_2(tmp_path: Any, wsproxy_cli: Any) -> None:
    """An unknown key in the file exits 2 naming the key and what is allowed."""
    path = tmp_path / "bad.toml"
    path.write_text('listen = "127.0.0.1:0"\n[[server]]\naddress = "127.0.0.1:8001"\ncolour = "red"\n')
    result = await wsproxy_cli("serve", "-c", str(path))
    assert result.code == 2
    assert "server[0].colour" in result.err and "unknown key" in result.err


async def test_idle_timeout_closes_only_quiet_tunnels(start_engine: EngineFactory) -> None:
    """With --idle-timeout, a tunnel with no bytes either way is closed; a chatty one stays open."""
    backend = await TcpServer(echo, "e").start()
    try:
        engine = await start_engine("--backend", backend.flag, "--idle-timeout", "0.6")
        quiet_reader, quiet = await asyncio.open_connection("127.0.0.1", engine.port)
        chatty_reader, chatty = await asyncio.open_connection("127.0.0.1", engine.port)
        loop = asyncio.get_running_loop()
        closed_at = None
        start = loop.time()
        while loop.time() - start < unit(3):
            chatty.write(b"x")
            assert await read_exactly(chatty_reader, 1) == b"x"
            if closed_at is None:
                try:
                    data = await asyncio.wait_for(quiet_reader.read(1), 0.1)
                except TimeoutError:
                    continue
                assert data == b""
                closed_at = loop.time() - start
                break
        assert closed_at is not None and 0.5 <= closed_at < 2.5
        chatty.write(b"y")
        assert await read_exactly(chatty_reader, 1) == b"y"
        events = await _events_of(engine, "close")
        assert any("idle timeout" in e["reason"] for e in events)
        quiet.close()
        chatty.close()
    finally:
        await backend.stop()
