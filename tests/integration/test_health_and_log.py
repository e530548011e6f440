"""Health checks against real backend processes that die and come back, and the handshake log of real clients."""

from __future__ import annotations

import asyncio
import http
import json
import sys
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
from websockets.asyncio.client import connect
from websockets.asyncio.server import Request, Response, ServerConnection, serve
from websockets.exceptions import InvalidStatus

from tests.conftest import EngineFactory, EngineProc, child_env, unit, wait_until
from tests.integration.tcp_peers import TcpServer, closed_port, echo


class BackendProcess:
    """`python -m tui.demo_backend` as its own process: killed with SIGKILL and restarted on the same port."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.port = closed_port()
        self.proc: asyncio.subprocess.Process | None = None

    @property
    def flag(self) -> str:
        return f"{self.name}=127.0.0.1:{self.port}"

    async def start(self) -> None:
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "tui.demo_backend", "--name", self.name, "--port", str(self.port),
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=child_env(),
        )  # fmt: skip
        assert self.proc.stdout is not None and self.proc.stderr is not None
        line = await asyncio.wait_for(self.proc.stdout.readline(), unit(10))
        if b"demo backend" not in line:
            await self.proc.wait()
            raise AssertionError((await self.proc.stderr.read()).decode()[-2000:])

    async def kill(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            self.proc.kill()
            await self.proc.wait()


@pytest.fixture
async def backend_processes() -> AsyncIterator[list[BackendProcess]]:
    procs = [BackendProcess(f"n{i + 1}") for i in range(2)]
    try:
        yield procs
    finally:
        for proc in procs:
            await proc.kill()


async def server_row(engine: EngineProc, name: str) -> dict[str, Any]:
    async with engine.client() as client:
        status = await client.status()
    return next(s for s in status["servers"] if s["name"] == name)


@pytest.mark.parametrize("check", ["tcp", "http:/health", "websocket:/ws"])
async def test_dead_backend_detected_and_revived(
    check: str, start_engine: EngineFactory, backend_processes: list[BackendProcess]
) -> None:
    """A killed backend goes down within fall x interval + timeout (+ jitter) and comes back after `rise` passes."""
    n1, n2 = backend_processes
    await n1.start()
    await n2.start()
    interval_ms, fall, rise, timeout_ms = 150, 3, 2, 300
    engine = await start_engine(
        "--backend", n1.flag, "--backend", n2.flag, "--check", check, "--check-interval", str(interval_ms),
        "--fall", str(fall), "--rise", str(rise), "--check-timeout", str(timeout_ms), "--max-fails", "0",
    )  # fmt: skip
    await wait_until(lambda: _checked(engine, "n1"), what="a first passing check")
    await n1.kill()
    killed = time.monotonic()
    row = await wait_until(lambda: _state(engine, "n1", "down"), timeout=5, what="n1 marked down")
    detected = time.monotonic() - killed
    budget = (fall * interval_ms * 1.1 + timeout_ms) / 1000 + 0.5  # jitter 10 % and polling slack
    assert detected <= unit(budget), f"down after {detected:.2f} s, budget {budget:.2f} s"
    assert row["health"]["fall_count"] >= fall
    assert row["health"]["last_failure"] in ("connection refused", "connection reset")
    # New connections avoid it.
    for _ in range(3):
        async with connect(f"ws://127.0.0.1:{engine.port}/ws") as ws:
            await ws.send("who")
            assert (await asyncio.wait_for(ws.recv(), unit(5))).startswith("n2:")
    await n1.start()
    row = await wait_until(lambda: _state(engine, "n1", "up"), timeout=5, what="n1 back up")
    assert row["health"]["rise_count"] >= rise
    detail = await _detail(engine, "n1")
    assert [(h["from"], h["to"]) for h in detail["history"]][-2:] == [("up", "down"), ("down", "up")]
    assert "consecutive failures" in detail["history"][-2]["reason"]


async def _checked(engine: EngineProc, name: str) -> bool:
    return (await server_row(engine, name))["health"]["last_result"] == "ok"


async def _state(engine: EngineProc, name: str, state: str) -> dict[str, Any] | None:
    row = await server_row(engine, name)
    return row if row["state"] == state else None


async def _detail(engine: EngineProc, name: str) -> dict[str, Any]:
    async with engine.client() as client:
        return await client.server(name)


async def test_http_check_reports_status(start_engine: EngineFactory) -> None:
    """An http check answered 503 marks the server down with the reason `HTTP 503`."""
    healthy = True

    def health(connection: ServerConnection, request: Request) -> Response | None:
        status = http.HTTPStatus.OK if healthy else http.HTTPStatus.SERVICE_UNAVAILABLE
        return connection.respond(status, "health\n")

    async with serve(lambda ws: ws.wait_closed(), "127.0.0.1", 0, process_request=health) as server:
        port = server.sockets[0].getsockname()[1]
        engine = await start_engine(
            "--backend", f"h=127.0.0.1:{port}", "--backend", f"other=127.0.0.1:{closed_port()}",
            "--check", "http:/health", "--check-interval", "100", "--fall", "2",
        )  # fmt: skip
        await wait_until(lambda: _checked(engine, "h"), what="h passing")
        healthy = False
        row = await wait_until(lambda: _state(engine, "h", "down"), what="h down on 503")
        assert row["health"]["last_failure"] == "HTTP 503"


async def handshakes(engine: EngineProc, count: int) -> list[dict[str, Any]]:
    async def enough() -> list[dict[str, Any]] | None:
        async with engine.client() as client:
            events = (await client.events(0))["events"]
        found = [e for e in events if e["type"] == "handshake"]
        return found if len(found) >= count else None

    result: list[dict[str, Any]] = await wait_until(enough, what=f"{count} handshake records")
    return result


async def test_handshake_log_records(start_engine: EngineFactory, backend_processes: list[BackendProcess]) -> None:
    """The log records a 101 with subprotocol, a refused upgrade (403), a plain HTTP request; never the key."""
    n1, _ = backend_processes
    await n1.start()
    engine = await start_engine("--backend", n1.flag)
    async with connect(
        f"ws://127.0.0.1:{engine.port}/ws?room=1",
        subprotocols=["chat.v1"],  # type: ignore[list-item]
        origin="http://example.test",  # type: ignore[arg-type]
        additional_headers={"Cookie": "session=SECRET-COOKIE"},
    ) as ws:
        await ws.send("hi")
        await asyncio.wait_for(ws.recv(), unit(5))
    with pytest.raises(InvalidStatus):
        async with connect(f"ws://127.0.0.1:{engine.port}/forbidden"):
            pass
    reader, writer = await asyncio.open_connection("127.0.0.1", engine.port)
    writer.write(b"GET /page HTTP/1.1\r\nHost: demo\r\nConnection: close\r\n\r\n")
    body = await asyncio.wait_for(reader.read(), unit(5))
    assert body.startswith(b"HTTP/1.1 200")
    writer.close()
    ok, refused, plain = await handshakes(engine, 3)
    assert (ok["kind"], ok["status"], ok["path"], ok["subprotocol"]) == ("websocket", 101, "/ws?room=1", "chat.v1")
    assert ok["ws_protocol"] == "chat.v1" and ok["origin"] == "http://example.test" and ok["ws_version"] == "13"
    assert ok["latency_ms"] is not None and ok["server"] == "n1"
    assert (refused["kind"], refused["status"]) == ("websocket", 403)
    assert (plain["kind"], plain["method"], plain["status"], plain["host"]) == ("http", "GET", 200, "demo")
    async with engine.client() as client:
        everything = json.dumps(await client.events(0))
    assert "SECRET-COOKIE" not in everything and "Sec-WebSocket-Key" not in everything


async def test_close_records_say_who_and_why(start_engine: EngineFactory) -> None:
    """Close records give duration, bytes and who closed: the client, the server, or the proxy's head deadline."""

    async def hang_up(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        data = await reader.read(100)
        writer.write(data)
        await writer.drain()

    backend = await TcpServer(hang_up, "x").start()
    try:
        engine = await start_engine("--backend", backend.flag)
        reader, writer = await asyncio.open_connection("127.0.0.1", engine.port)
        writer.write(b"\x16\x03\x01raw-bytes")
        assert await asyncio.wait_for(reader.read(), unit(5)) == b"\x16\x03\x01raw-bytes"
        writer.close()
        reader, writer = await asyncio.open_connection("127.0.0.1", engine.port)
        writer.write(b"\x00bye")
        await asyncio.wait_for(reader.read(4), unit(5))
        writer.close()

        async def closes() -> list[dict[str, Any]] | None:
            async with engine.client() as client:
                events = (await client.events(0))["events"]
            found = [e for e in events if e["type"] == "close"]
            return found if len(found) >= 2 else None

        first, _ = await wait_until(closes, what="two close records")
        assert first["closed_by"] == "server" and first["bytes_in"] == 12 and first["bytes_out"] == 12
        assert first["kind"] == "raw" and first["duration_s"] >= 0
    finally:
        await backend.stop()


async def test_access_log_lines(start_engine: EngineFactory, tmp_path: Any) -> None:
    """--access-log writes one JSON line per closed connection, like HAProxy's tcplog."""
    backend = await TcpServer(echo, "e").start()
    log = tmp_path / "access.jsonl"
    try:
        engine = await start_engine("--backend", backend.flag, "--access-log", str(log))
        for _ in range(3):
            reader, writer = await asyncio.open_connection("127.0.0.1", engine.port)
            writer.write(b"GET /x HTTP/1.1\r\nHost: a\r\n\r\n")
            await asyncio.wait_for(reader.readexactly(10), unit(5))
            writer.close()
        await wait_until(lambda: log.exists() and len(log.read_text().splitlines()) == 3, what="3 log lines")
        records = [json.loads(line) for line in log.read_text().splitlines()]
        assert {r["path"] for r in records} == {"/x"} and all(r["type"] == "close" for r in records)
    finally:
        await backend.stop()
