"""The PROXY protocol with real sockets: v1/v2 headers from an allowed source (127.0.0.2) and a refused one
(127.0.0.3), garbage, truncated and slow headers, and `send_proxy` to servers and on their health checks."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from pathlib import Path

import pytest
from websockets.asyncio.client import connect

from proxy_core.datapath.proxyproto import ProxyHeaderParser, build_v1, build_v2
from tests.conftest import EngineFactory, EngineProc, unit, wait_until
from tests.integration.tcp_peers import TcpServer, echo, open_from, socket_from

pytestmark = pytest.mark.asyncio
ALLOWED, REFUSED = "127.0.0.2", "127.0.0.3"


async def _closed(reader: asyncio.StreamReader) -> bool:
    """The engine closed the connection without a byte (a reset when our bytes were still unread)."""
    try:
        return await asyncio.wait_for(reader.read(), unit(5)) == b""
    except ConnectionResetError:
        return True


async def _proxy_engine(start_engine: EngineFactory, tmp_path: Path, *args: str) -> EngineProc:
    config = tmp_path / "wsproxy.toml"
    config.write_text(
        '[[listener]]\naddress = "127.0.0.1:0"\nproxy_protocol = true\n'
        f'proxy_protocol_from = ["{ALLOWED}"]\n\n[timeouts]\nhead = 0.5\n'
    )
    return await start_engine("-c", str(config), "--access-log", "access.jsonl", *args, listen=None)


async def _listener(engine: EngineProc) -> dict[str, object]:
    async with engine.client() as client:
        listener: dict[str, object] = (await client.status())["listeners"][0]
        return listener


async def test_v1_and_v2_headers_make_the_header_address_the_client(
    start_engine: EngineFactory, echo_backends: Callable[..., object], tmp_path: Path
) -> None:
    """Through a PROXY listener the header's address is the client in the handshake log, live list and access log."""
    (backend,) = await echo_backends(1)  # type: ignore[operator]
    engine = await _proxy_engine(start_engine, tmp_path, "--backend", backend.flag)
    headers = {
        "203.0.113.7:4242": build_v1(("203.0.113.7", 4242), ("127.0.0.1", engine.port)),
        "198.51.100.9:5555": build_v2(("198.51.100.9", 5555), ("127.0.0.1", engine.port)),
    }
    async with engine.client() as client:
        for client_address, header in headers.items():
            sock = socket_from(ALLOWED, engine.port)
            sock.sendall(header)
            async with connect(f"ws://127.0.0.1:{engine.port}/ws", sock=sock, open_timeout=unit(5)) as ws:
                await ws.send("hi")
                assert await asyncio.wait_for(ws.recv(), unit(5)) == "hi"
                detail = await client.server(backend.name)
                assert [c["client"] for c in detail["connections"]] == [client_address]

        async def handshakes() -> list[str]:
            events = (await client.events())["events"]
            return [e["client"] for e in events if e["type"] == "handshake"]

        assert await wait_until(lambda: _two(handshakes), what="two handshake records") == list(headers)
    access = tmp_path / "access.jsonl"
    await wait_until(lambda: access.exists() and len(access.read_text().splitlines()) == 2, what="two access lines")
    assert [json.loads(line)["client"] for line in access.read_text().splitlines()] == list(headers)


async def _two(read: Callable[[], object]) -> list[str] | None:
    found = await read()  # type: ignore[misc]
    return found if len(found) >= 2 else None


async def test_refused_source_is_closed_and_logged_once(start_engine: EngineFactory, tmp_path: Path) -> None:
    """A connection from outside proxy_protocol_from is closed before any backend; its address is logged once."""
    backend = await TcpServer(echo).start()
    try:
        engine = await _proxy_engine(start_engine, tmp_path, "--backend", backend.flag, "--check", "none")
        for _ in range(3):
            reader, writer = await open_from(REFUSED, engine.port)
            writer.write(build_v1(("203.0.113.7", 1), ("127.0.0.1", engine.port)) + b"hello")
            assert await _closed(reader)
            writer.close()
        listener = await wait_until(lambda: _counted(engine, "refused_sources", 3), what="3 refusals")
        assert listener["bad_headers"] == 0
        assert sum(REFUSED in line for line in engine.stderr_lines) == 1, engine.output()
        assert backend.accepted == 0
    finally:
        await backend.stop()


async def _counted(engine: EngineProc, key: str, count: int) -> dict[str, object] | None:
    listener = await _listener(engine)
    return listener if listener[key] == count else None


async def test_garbage_truncated_and_slow_headers_never_reach_a_backend(
    start_engine: EngineFactory, tmp_path: Path
) -> None:
    """A missing, malformed, truncated or too slow header closes the connection, is counted, touches no backend."""
    backend = await TcpServer(echo).start()
    try:
        engine = await _proxy_engine(start_engine, tmp_path, "--backend", backend.flag, "--check", "none")
        cases = [
            b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",  # no header at all
            b"PROXY TCP4 1.2.3.999 5.6.7.8 1 2\r\nhello",  # malformed
            b"\r\n\r\n\x00\r\nQUIT\n\x21\x11\xff\xff",  # v2 announcing 64 KiB
        ]
        for data in cases:
            reader, writer = await open_from(ALLOWED, engine.port)
            writer.write(data)
            assert await _closed(reader)
            writer.close()
        reader, writer = await open_from(ALLOWED, engine.port)  # truncated, then the client gives up
        writer.write(b"PROXY TCP4 1.2.3.4 ")
        await writer.drain()
        writer.close()
        reader, writer = await open_from(ALLOWED, engine.port)  # slow: half a header, then nothing
        writer.write(b"PROXY TCP4 1.2.3.4 ")
        assert await _closed(reader)  # at the 0.5 s head deadline
        writer.close()
        listener = await wait_until(lambda: _counted(engine, "bad_headers", 5), what="5 bad headers")
        reasons = listener["by_reason"]
        assert isinstance(reasons, dict)
        assert reasons["no PROXY header within 0.5 s"] == 1
        assert reasons["closed before the PROXY header was complete"] == 1
        assert backend.accepted == 0
        reader, writer = await open_from(ALLOWED, engine.port)  # and a good one still works
        writer.write(build_v2(("192.0.2.1", 9), ("127.0.0.1", engine.port)) + b"ping")
        assert await asyncio.wait_for(reader.readexactly(4), unit(5)) == b"ping"
        writer.close()
        assert backend.accepted == 1
        async with engine.client() as client:
            metrics = (await client._http.get("/metrics")).text
        assert "wsproxy_listener_proxy_header_failures_total" in metrics
    finally:
        await backend.stop()


class Recorder:
    """A backend that records every connection's bytes until EOF, then answers "ok"."""

    def __init__(self) -> None:
        self.received: list[bytes] = []
        self.server = TcpServer(self._handle)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        data = await asyncio.wait_for(reader.read(), unit(5))
        self.received.append(data)
        writer.write(b"ok")
        await writer.drain()


@pytest.mark.parametrize("version", ["v1", "v2"])
async def test_send_proxy_to_the_server_and_on_its_checks(start_engine: EngineFactory, version: str) -> None:
    """`send_proxy` puts the real client's address before its bytes, and checks send a LOCAL/UNKNOWN header."""
    recorder = Recorder()
    await recorder.server.start()
    try:
        engine = await start_engine("--backend", f"rec=127.0.0.1:{recorder.server.port},send_proxy={version}")
        await wait_until(lambda: recorder.received, what="a health check reaching the server")
        check = ProxyHeaderParser()
        assert check.feed(recorder.received[0]) and check.header is not None and check.rest == b""
        assert check.header.source is None  # v1 UNKNOWN, v2 LOCAL: the check speaks for no client
        assert check.header.command == ("LOCAL" if version == "v2" else "PROXY")
        reader, writer = await open_from(ALLOWED, engine.port)
        local_port = writer.get_extra_info("sockname")[1]
        writer.write(b"hello")
        writer.write_eof()
        assert await asyncio.wait_for(reader.read(), unit(5)) == b"ok"
        writer.close()
        data = [d for d in recorder.received if d.endswith(b"hello")]
        assert len(data) == 1
        parser = ProxyHeaderParser()
        assert parser.feed(data[0]) and parser.header is not None
        assert parser.header.source == (ALLOWED, local_port)
        assert parser.header.destination == ("127.0.0.1", engine.port)
        assert parser.rest == b"hello"
    finally:
        await recorder.server.stop()


async def test_a_plain_listener_relays_header_bytes_as_they_are(start_engine: EngineFactory) -> None:
    """On a plain listener a PROXY header is just bytes: relayed unchanged to the server (no gate there)."""
    backend = await TcpServer(echo).start()
    try:
        engine = await start_engine("--backend", backend.flag, "--check", "none")
        reader, writer = await asyncio.open_connection("127.0.0.1", engine.port)
        data = build_v1(("203.0.113.7", 1), ("127.0.0.1", 2)) + b"after"
        writer.write(data)
        assert await asyncio.wait_for(reader.readexactly(len(data)), unit(5)) == data
        writer.close()
    finally:
        await backend.stop()
