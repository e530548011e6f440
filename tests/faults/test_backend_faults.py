"""Fault matrix, backend side: resets, refusals, silent backends, flapping checks, SIGKILL of the engine."""

from __future__ import annotations

import asyncio
import http
import os
import signal
import socket
import struct
import time
from typing import Any

from websockets.asyncio.server import Request, Response, ServerConnection, serve

from tests.conftest import EngineFactory, EngineProc, unit, wait_until
from tests.integration.tcp_peers import TcpServer, closed_port, echo, read_exactly


async def status_of(engine: EngineProc) -> dict[str, Any]:
    async with engine.client() as client:
        return await client.status()


async def row(engine: EngineProc, name: str) -> dict[str, Any]:
    return next(s for s in (await status_of(engine))["servers"] if s["name"] == name)


async def events_of(engine: EngineProc, kind: str) -> list[dict[str, Any]]:
    async with engine.client() as client:
        return [e for e in (await client.events(0))["events"] if e["type"] == kind]


async def test_backend_eof_mid_stream_gives_client_eof(start_engine: EngineFactory) -> None:
    """A backend that closes mid-stream: the client sees EOF at once and the close record says the server closed."""

    async def close_after_one(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(await reader.read(5))
        await writer.drain()

    backend = await TcpServer(close_after_one, "c").start()
    try:
        engine = await start_engine("--backend", backend.flag, "--check", "none")
        reader, writer = await asyncio.open_connection("127.0.0.1", engine.port)
        writer.write(b"\x00abcd")
        assert await asyncio.wait_for(reader.read(), unit(2)) == b"\x00abcd"
        writer.close()
        closes = await wait_until(lambda: events_of(engine, "close"), what="a close record")
        assert closes[0]["closed_by"] == "server"
        await wait_until(lambda: _active_zero(engine), what="both descriptors freed")
    finally:
        await backend.stop()


async def _active_zero(engine: EngineProc) -> bool:
    return bool((await status_of(engine))["totals"]["active"] == 0)


async def test_backend_reset_mid_stream_gives_client_reset(start_engine: EngineFactory) -> None:
    """A backend that resets mid-stream: the client gets a reset too (not a clean EOF), and it is logged."""

    async def reset_after_one(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(5)
        sock = writer.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        writer.transport.abort()

    backend = await TcpServer(reset_after_one, "r").start()
    try:
        engine = await start_engine("--backend", backend.flag, "--check", "none")
        reader, writer = await asyncio.open_connection("127.0.0.1", engine.port)
        writer.write(b"\x00abcd")
        try:
            data = await asyncio.wait_for(reader.read(), unit(2))
        except ConnectionResetError:
            data = None
        assert data is None, "expected a reset, got a clean EOF"
        writer.close()
        closes = await wait_until(lambda: events_of(engine, "close"), what="a close record")
        assert closes[0]["closed_by"] == "server" and "reset" in closes[0]["reason"]
    finally:
        await backend.stop()


async def test_all_refuse_closes_client_within_connect_timeout(start_engine: EngineFactory) -> None:
    """Every server refuses: the client is closed within the connect timeout plus 100 ms; passive failures mark down."""
    engine = await start_engine(
        "--backend", f"d1=127.0.0.1:{closed_port()}", "--backend", f"d2=127.0.0.1:{closed_port()}",
        "--check", "none", "--connect-timeout", "0.5", "--max-fails", "2",
    )  # fmt: skip
    for _ in range(2):
        start = time.monotonic()
        reader, writer = await asyncio.open_connection("127.0.0.1", engine.port)
        assert await asyncio.wait_for(reader.read(), unit(2)) == b""
        assert time.monotonic() - start < 0.5 + 0.1 + 0.2  # plus loopback and polling slack
        writer.close()
    servers = (await status_of(engine))["servers"]
    assert all(s["state"] == "down" and s["connect_failures"] == 2 for s in servers)


async def test_connect_that_hangs_times_out_and_the_next_server_takes_the_client(start_engine: EngineFactory) -> None:
    """A server whose accept queue is full (SYNs dropped): the attempt times out at the connect timeout, within
    the sweep's step, and the client is relayed by the next server."""
    full = socket.socket()
    filler: list[socket.socket] = []
    backend = await TcpServer(echo, "ok").start()
    try:
        full.bind(("127.0.0.1", 0))
        full.listen(0)  # never accepted: one connection fills the queue, the kernel drops further SYNs
        for _ in range(3):
            sock = socket.socket()
            sock.setblocking(False)
            sock.connect_ex(full.getsockname())
            filler.append(sock)
        engine = await start_engine(
            "--backend", f"hang=127.0.0.1:{full.getsockname()[1]}", "--backend", backend.flag,
            "--check", "none", "--connect-timeout", "0.3", "--retries", "1",
        )  # fmt: skip
        for _ in range(2):  # round robin: one of the two starts on the hanging server
            start = time.monotonic()
            reader, writer = await asyncio.open_connection("127.0.0.1", engine.port)
            writer.write(b"ping")
            assert await asyncio.wait_for(read_exactly(reader, 4), unit(3)) == b"ping"
            elapsed = time.monotonic() - start
            writer.close()
        failures = await events_of(engine, "connect_failed")
        assert [(e["server"], e["reason"]) for e in failures] == [("hang", "timeout after 300 ms")]
        assert (await row(engine, "hang"))["connect_failures"] == 1
        assert elapsed < unit(2)
    finally:
        for sock in filler:
            sock.close()
        full.close()
        await backend.stop()


async def test_connect_timeout_is_kept_to_within_the_sweep_step(start_engine: EngineFactory) -> None:
    """With every server hanging, the client is closed after the attempts' timeouts: not before the first
    deadline, and not much after the last one (one sweep, at most CONNECT_SWEEP_MAX_S late)."""
    full = socket.socket()
    filler: list[socket.socket] = []
    try:
        full.bind(("127.0.0.1", 0))
        full.listen(0)
        for _ in range(3):
            sock = socket.socket()
            sock.setblocking(False)
            sock.connect_ex(full.getsockname())
            filler.append(sock)
        engine = await start_engine(
            "--backend", f"hang=127.0.0.1:{full.getsockname()[1]}",
            "--check", "none", "--connect-timeout", "0.4", "--retries", "0",
        )  # fmt: skip
        start = time.monotonic()
        reader, writer = await asyncio.open_connection("127.0.0.1", engine.port)
        assert await asyncio.wait_for(reader.read(), unit(3)) == b""
        elapsed = time.monotonic() - start
        writer.close()
        assert 0.4 <= elapsed < 0.4 + 0.1 + unit(0.4)  # the step, plus loopback and scheduling slack
        failures = await events_of(engine, "connect_failed")
        assert [e["reason"] for e in failures] == ["timeout after 400 ms"]
    finally:
        for sock in filler:
            sock.close()
        full.close()


async def test_silent_backend_marked_down_and_waiting_client_closed(start_engine: EngineFactory) -> None:
    """A backend that accepts and never answers: the http check times out and marks it down; the idle timeout
    closes a client left waiting on it."""

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()  # never answers

    backend = await TcpServer(silent, "s").start()
    try:
        engine = await start_engine(
            "--backend", backend.flag, "--check", "http:/health", "--check-interval", "100",
            "--check-timeout", "150", "--fall", "2", "--idle-timeout", "0.5",
        )  # fmt: skip
        reader, writer = await asyncio.open_connection("127.0.0.1", engine.port)
        writer.write(b"GET /ws HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n")
        down = await wait_until(lambda: _state(engine, "s", "down"), timeout=3, what="s down")
        assert down["health"]["last_failure"] == "timeout after 150 ms"
        assert await asyncio.wait_for(reader.read(), unit(2)) == b""
        writer.close()
    finally:
        await backend.stop()


async def _state(engine: EngineProc, name: str, state: str) -> dict[str, Any] | None:
    found = await row(engine, name)
    return found if found["state"] == state else None


async def test_half_close_timeout_closes_the_pair(start_engine: EngineFactory, tmp_path: Any) -> None:
    """One side sent EOF and the other never does: the pair is closed by the half-close timeout."""
    config = tmp_path / "half.toml"
    config.write_text("[timeouts]\nhalf_close = 0.5\n")

    async def never_closes(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()  # reads the client's EOF, then keeps its side open forever
        await asyncio.sleep(30)

    backend = await TcpServer(never_closes, "n").start()
    try:
        engine = await start_engine("-c", str(config), "--backend", backend.flag, "--check", "none")
        reader, writer = await asyncio.open_connection("127.0.0.1", engine.port)
        writer.write(b"\x00x")
        writer.write_eof()
        start = time.monotonic()
        assert await asyncio.wait_for(reader.read(), unit(2)) == b""
        assert 0.4 <= time.monotonic() - start < 1.5
        closes = await wait_until(lambda: events_of(engine, "close"), what="a close record")
        assert "half-close timeout" in closes[0]["reason"]
    finally:
        await backend.stop()


async def test_flapping_check_does_not_flap(start_engine: EngineFactory) -> None:
    """Every other check failing with rise 2 / fall 2: the state never changes and no state events flood."""
    answers = 0

    def alternate(connection: ServerConnection, request: Request) -> Response | None:
        nonlocal answers
        answers += 1
        status = http.HTTPStatus.OK if answers % 2 else http.HTTPStatus.SERVICE_UNAVAILABLE
        return connection.respond(status, "flap\n")

    async with serve(lambda ws: ws.wait_closed(), "127.0.0.1", 0, process_request=alternate) as server:
        port = server.sockets[0].getsockname()[1]
        engine = await start_engine(
            "--backend", f"f=127.0.0.1:{port}", "--check", "http:/health", "--check-interval", "50",
            "--rise", "2", "--fall", "2",
        )  # fmt: skip
        await wait_until(lambda: answers >= 12, timeout=5, what="a dozen checks")
        states = [e for e in await events_of(engine, "state") if e["server"] == "f"]
        assert [e["new"] for e in states] == ["up"]  # only the start
        assert (await row(engine, "f"))["state"] == "up"


async def test_sigkill_and_restart_keeps_runtime_changes(start_engine: EngineFactory, tmp_path: Any) -> None:
    """A server added, one drained and one reweighted before a SIGKILL are all as they were after a restart."""
    backends = [await TcpServer(echo, f"b{i}").start() for i in range(1, 4)]
    state = tmp_path / "state.json"
    try:
        flags = ["--backend", backends[0].flag, "--backend", backends[1].flag, "--state-file", str(state)]
        engine = await start_engine(*flags, control=tmp_path / "one.sock")
        async with engine.client() as client:
            await client.add("b3", f"127.0.0.1:{backends[2].port}", weight=2)
            await client.drain("b1", deadline_s=3600)
            await client.set_weight("b2", 7)
        os.kill(engine.pid, signal.SIGKILL)
        await engine.wait_exit()
        again = await start_engine(*flags, control=tmp_path / "two.sock")
        servers = {s["name"]: s for s in (await status_of(again))["servers"]}
        assert set(servers) == {"b1", "b2", "b3"}
        assert servers["b1"]["state"] == "draining" and servers["b1"]["drain"]["deadline"] is not None
        assert servers["b2"]["weight"] == 7
        assert servers["b3"]["weight"] == 2 and servers["b3"]["address"] == f"127.0.0.1:{backends[2].port}"
    finally:
        for backend in backends:
            await backend.stop()


async def test_corrupt_state_file_is_set_aside(start_engine: EngineFactory, tmp_path: Any) -> None:
    """A corrupt state file is reported loudly and kept aside; the engine starts from the configuration."""
    backend = await TcpServer(echo, "b1").start()
    state = tmp_path / "state.json"
    state.write_text('{"version": 1, "servers": [{"name": "../x"')
    try:
        engine = await start_engine("--backend", backend.flag, "--state-file", str(state))
        assert [s["name"] for s in (await status_of(engine))["servers"]] == ["b1"]
        await engine.wait_line("state file .* is unreadable", stderr=True)
        assert list(tmp_path.glob("state.json.corrupt-*"))
        reader, writer = await asyncio.open_connection("127.0.0.1", engine.port)
        writer.write(b"\x00ping")
        assert await read_exactly(reader, 5) == b"\x00ping"
        writer.close()
    finally:
        await backend.stop()
