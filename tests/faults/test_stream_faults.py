"""Fault matrix, streams: half-close, slow readers, slowloris, garbage, stalled subscribers and SIGTERM."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import sys
from typing import Any

import pytest
from websockets.asyncio.client import connect

from tests.conftest import EngineFactory, unit, wait_until
from tests.integration.tcp_peers import TcpServer, echo, read_exactly, rss_kib
from tests.integration.test_data_path import TAG, PoolFactory, _events_of
from tests.integration.test_health_and_log import handshakes


async def test_half_close_both_directions(start_engine: EngineFactory) -> None:
    """EOF passes on one way while the other direction keeps flowing (nginx stream_proxy_half_close.t)."""
    got_eof = asyncio.Event()

    async def late_talker(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        data = await reader.read()  # until the client's EOF arrives
        got_eof.set()
        writer.write(b"after-eof:" + data)
        await writer.drain()
        writer.write_eof()

    backend = await TcpServer(late_talker, "h").start()
    try:
        engine = await start_engine("--backend", backend.flag)
        reader, writer = await asyncio.open_connection("127.0.0.1", engine.port)
        writer.write(b"hello")
        writer.write_eof()
        await asyncio.wait_for(got_eof.wait(), unit(5))
        assert await asyncio.wait_for(reader.read(), unit(5)) == b"after-eof:hello"
        writer.close()
    finally:
        await backend.stop()


async def test_server_half_close_client_keeps_sending(start_engine: EngineFactory) -> None:
    """The backend's EOF reaches the client, and the client can still send to the backend afterwards."""
    received = asyncio.Queue[bytes]()

    async def early_closer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"bye")
        writer.write_eof()
        await received.put(await reader.read())

    backend = await TcpServer(early_closer, "h").start()
    try:
        engine = await start_engine("--backend", backend.flag)
        reader, writer = await asyncio.open_connection("127.0.0.1", engine.port)
        assert await asyncio.wait_for(reader.read(), unit(5)) == b"bye"
        writer.write(b"still here")
        writer.write_eof()
        assert await asyncio.wait_for(received.get(), unit(5)) == b"still here"
        writer.close()
    finally:
        await backend.stop()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
async def test_slow_reader_keeps_memory_bounded(start_engine: EngineFactory) -> None:
    """A backend pushing 64 MiB to a client that does not read: engine RSS grows < 8 MiB and the backend blocks."""
    pushed = 0
    chunk = os.urandom(64 * 1024)
    blocked = asyncio.Event()

    async def pusher(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal pushed
        while pushed < 64 * 1024 * 1024:
            writer.write(chunk)
            try:
                await asyncio.wait_for(writer.drain(), 0.5)
            except TimeoutError:
                blocked.set()
                await writer.drain()
            pushed += len(chunk)

    backend = await TcpServer(pusher, "p").start()
    try:
        engine = await start_engine("--backend", backend.flag, "--check", "none")
        before = rss_kib(engine.pid)
        sock = socket.create_connection(("127.0.0.1", engine.port))
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
        try:
            await asyncio.wait_for(blocked.wait(), unit(20))
            assert pushed < 32 * 1024 * 1024  # kernel buffers plus the engine's bounded buffers
            growth = rss_kib(engine.pid) - before
            assert growth < 8 * 1024, f"engine grew {growth} KiB"
        finally:
            sock.close()
    finally:
        await backend.stop()


async def test_garbage_is_proxied_raw_and_next_websocket_works(start_engine: EngineFactory, echo_backends: Any) -> None:
    """Binary garbage is relayed unchanged as raw TCP and logged as raw; a WebSocket right after works."""
    raw_backend = await TcpServer(echo, "raw").start()
    try:
        engine = await start_engine("--backend", raw_backend.flag)
        reader, writer = await asyncio.open_connection("127.0.0.1", engine.port)
        garbage = bytes(range(256)) * 4
        writer.write(garbage)
        assert await read_exactly(reader, len(garbage)) == garbage
        writer.close()
        async with engine.client() as client:
            events = await wait_until(
                lambda: _events_of(engine, "handshake"), what="a handshake record for the raw connection"
            )
        assert events[0]["kind"] == "raw" and events[0]["status"] is None
        del client
    finally:
        await raw_backend.stop()
    (b1,) = await echo_backends(1)
    engine2 = await start_engine("--backend", b1.flag)
    async with connect(f"ws://127.0.0.1:{engine2.port}/") as ws:
        await ws.send("ok")
        assert await asyncio.wait_for(ws.recv(), unit(5)) == "ok"


async def test_graceful_shutdown_on_sigterm(start_engine: EngineFactory, pool: PoolFactory) -> None:
    """SIGTERM: listeners close at once, a live connection keeps working through the grace, exit 0."""
    (b1,) = await pool(1)
    engine = await start_engine("--backend", b1.flag, "--shutdown-grace", "2")
    reader, writer = await asyncio.open_connection("127.0.0.1", engine.port)
    assert await read_exactly(reader, TAG) == b"b1\r\n"
    engine.proc.terminate()
    await engine.wait_line("stopping", timeout=5)
    with pytest.raises(OSError):
        await asyncio.open_connection("127.0.0.1", engine.port)
    writer.write(b"still")
    assert await read_exactly(reader, 5) == b"still"
    assert await engine.wait_exit(10) == 0
    assert await asyncio.wait_for(reader.read(), unit(5)) == b""
    writer.close()


async def test_slowloris_head_closed_at_deadline(
    start_engine: EngineFactory, tmp_path: Any, echo_backends: Any
) -> None:
    """A client trickling its head is closed at the head deadline; a finished WebSocket left idle stays open."""
    (b1,) = await echo_backends(1)
    config = tmp_path / "short-head.toml"
    config.write_text("[timeouts]\nhead = 0.5\n")
    engine = await start_engine("-c", str(config), "--backend", b1.flag)
    async with connect(f"ws://127.0.0.1:{engine.port}/ws") as ws:
        reader, writer = await asyncio.open_connection("127.0.0.1", engine.port)
        loop = asyncio.get_running_loop()
        start = loop.time()
        closed_after = None
        for char in b"GET /slow HTTP/1.1\r\nHost: a\r\n":
            writer.write(bytes([char]))
            try:
                data = await asyncio.wait_for(reader.read(1), 0.1)
            except TimeoutError:
                continue
            assert data == b""
            closed_after = loop.time() - start
            break
        assert closed_after is not None and 0.4 <= closed_after < unit(2.0)
        writer.close()
        await asyncio.sleep(0.6)  # past the head deadline: the finished WebSocket must not be touched
        await ws.send("still open")
        assert await asyncio.wait_for(ws.recv(), unit(5)) == "still open"
    found = await handshakes(engine, 2)
    slow = next(h for h in found if h["error"])
    assert "head not complete within 0.5 s" in slow["error"]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
async def test_event_flood_with_stalled_subscriber_keeps_memory_flat(start_engine: EngineFactory) -> None:
    """Thousands of connections while an event-stream subscriber never reads: engine memory stays flat."""
    backend = await TcpServer(echo, "e").start()
    try:
        engine = await start_engine("--backend", backend.flag, "--check", "none")
        # A subscriber that connects to the stream and never reads a byte.
        sub_reader, sub_writer = await asyncio.open_unix_connection(engine.control)
        sub_writer.write(b"GET /v1/events/stream?since=0 HTTP/1.1\r\nHost: x\r\n\r\n")

        async def churn(n: int) -> None:
            for _ in range(n):
                reader, writer = await asyncio.open_connection("127.0.0.1", engine.port)
                writer.write(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
                await reader.readexactly(4)
                writer.close()

        await churn(3000)  # fills the ring buffer and the subscriber's queue
        before = rss_kib(engine.pid)
        await churn(3000)
        growth = rss_kib(engine.pid) - before
        assert growth < 4 * 1024, f"engine grew {growth} KiB with a stalled subscriber"
        async with engine.client() as client:
            status = await client.status()
        assert status["totals"]["total"] == 6000
        sub_writer.close()
        with contextlib.suppress(Exception):
            await sub_writer.wait_closed()
        del sub_reader
    finally:
        await backend.stop()
