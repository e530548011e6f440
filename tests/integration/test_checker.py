"""Health checks against real servers on 127.0.0.1: probe outcomes and reasons, and the per-server runner."""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import socket
import struct
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any

import httpx
import pytest
from aiohttp import web
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.http11 import Request, Response

from proxy_core.checker import CheckRunner, probe
from proxy_core.checkspec import CheckConfig, CheckType
from proxy_core.health import CheckResult

# Every wait is bounded; raise WSPROXY_TESTS_TIMEOUT_FACTOR on a slow machine.
FACTOR = float(os.environ.get("WSPROXY_TESTS_TIMEOUT_FACTOR", "1"))
WAIT = 5.0 * FACTOR
HOST = "127.0.0.1"


# -- servers -----------------------------------------------------------------------------


Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


class TcpServer:
    """A raw asyncio server whose per-connection behaviour the test chooses; stop() ends every handler."""

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.port = 0
        self.arrivals: asyncio.Queue[None] = asyncio.Queue()  # one item per accepted connection
        self._server: asyncio.Server | None = None
        self._handlers: set[asyncio.Task[object]] = set()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        self.arrivals.put_nowait(None)
        try:
            await self.handler(reader, writer)
        finally:
            writer.close()
            self._handlers.discard(task)

    async def start(self) -> TcpServer:
        self._server = await asyncio.start_server(self._serve, HOST, 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def stop(self) -> None:
        assert self._server is not None
        self._server.close()
        handlers = set(self._handlers)
        for task in handlers:
            task.cancel()
        if handlers:
            await asyncio.wait(handlers, timeout=WAIT)
        await asyncio.wait_for(self._server.wait_closed(), WAIT)


@contextlib.asynccontextmanager
async def tcp_server(handler: Handler) -> AsyncIterator[TcpServer]:
    server = await TcpServer(handler).start()
    try:
        yield server
    finally:
        await server.stop()


async def hold(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Keep the connection until the client leaves."""
    await reader.read()


async def never_answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Accept and stay silent until the server stops."""
    await asyncio.Event().wait()


@pytest.fixture
async def listening() -> AsyncIterator[TcpServer]:
    """A server that accepts and holds each connection until the client leaves."""
    async with tcp_server(hold) as server:
        yield server


@pytest.fixture
async def silent() -> AsyncIterator[TcpServer]:
    """A server that accepts and never answers."""
    async with tcp_server(never_answer) as server:
        yield server


@pytest.fixture
def closed_port() -> Iterator[int]:
    """A port bound but not listening: connecting to it is refused, and nobody else can take it."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.bind((HOST, 0))
        yield sock.getsockname()[1]
    finally:
        sock.close()


@dataclass
class HttpBackend:
    """An aiohttp app recording what the checks sent it."""

    port: int
    hosts: list[str] = field(default_factory=list)
    in_flight: int = 0
    max_in_flight: int = 0
    slow_done: asyncio.Queue[None] = field(default_factory=asyncio.Queue)


@pytest.fixture
async def http_backend() -> AsyncIterator[HttpBackend]:
    """/health answers 200, /down 503, /slow 200 after 150 ms (counting overlapping requests)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind((HOST, 0))
    backend = HttpBackend(port=sock.getsockname()[1])

    async def health(request: web.Request) -> web.Response:
        backend.hosts.append(request.headers.get("Host", ""))
        return web.Response(text="ok")

    async def down(request: web.Request) -> web.Response:
        return web.Response(status=503, text="maintenance")

    async def slow(request: web.Request) -> web.Response:
        backend.in_flight += 1
        backend.max_in_flight = max(backend.max_in_flight, backend.in_flight)
        try:
            await asyncio.sleep(0.15)  # the backend's own slowness, not a wait in the test
            return web.Response(text="late")
        finally:
            backend.in_flight -= 1
            backend.slow_done.put_nowait(None)

    app = web.Application()
    app.router.add_get("/health", health)
    app.router.add_get("/down", down)
    app.router.add_get("/slow", slow)
    runner = web.AppRunner(app, handle_signals=False)
    await runner.setup()
    try:
        await web.SockSite(runner, sock).start()
        yield backend
    finally:
        await asyncio.wait_for(runner.cleanup(), WAIT)
        sock.close()


@dataclass
class WsBackend:
    port: int
    hosts: list[str] = field(default_factory=list)
    close_codes: asyncio.Queue[int | None] = field(default_factory=asyncio.Queue)


async def start_ws(*, status: HTTPStatus | None = None) -> tuple[Server, WsBackend]:
    """A websockets server; with `status`, process_request refuses every handshake with it."""
    backend = WsBackend(port=0)

    def process_request(connection: ServerConnection, request: Request) -> Response | None:
        backend.hosts.append(request.headers.get("Host", ""))
        if status is not None:
            return connection.respond(status, "refused\n")
        return None

    async def handler(ws: ServerConnection) -> None:
        await ws.wait_closed()
        backend.close_codes.put_nowait(ws.close_code)

    server = await serve(handler, HOST, 0, process_request=process_request)
    backend.port = server.sockets[0].getsockname()[1]
    return server, backend


async def stop_ws(server: Server) -> None:
    server.close()
    await asyncio.wait_for(server.wait_closed(), WAIT)


@pytest.fixture
async def ws_backend() -> AsyncIterator[WsBackend]:
    server, backend = await start_ws()
    try:
        yield backend
    finally:
        await stop_ws(server)


@pytest.fixture
async def ws_forbidden() -> AsyncIterator[WsBackend]:
    server, backend = await start_ws(status=HTTPStatus.FORBIDDEN)
    try:
        yield backend
    finally:
        await stop_ws(server)


def cfg(kind: CheckType, **kwargs: Any) -> CheckConfig:
    return CheckConfig(type=kind, **kwargs)


async def bounded_probe(check: CheckConfig, port: int, client: httpx.AsyncClient | None = None) -> CheckResult:
    return await asyncio.wait_for(probe(check, HOST, port, client=client), WAIT)


# -- probe: tcp ----------------------------------------------------------------------------


async def test_tcp_ok_against_listening_socket(listening: TcpServer) -> None:
    """A tcp check passes when the server accepts, with a measured latency."""
    result = await bounded_probe(cfg("tcp"), listening.port)
    assert result.ok and result.reason == ""
    assert result.latency_ms is not None and 0 <= result.latency_ms < WAIT * 1000


async def test_tcp_refused(closed_port: int) -> None:
    """A tcp check against a port nobody listens on fails with "connection refused"."""
    result = await bounded_probe(cfg("tcp"), closed_port)
    assert (result.ok, result.reason) == (False, "connection refused")
    assert result.latency_ms is not None


# -- probe: http ---------------------------------------------------------------------------


@pytest.fixture(params=["own-client", "shared-client"])
async def client(request: pytest.FixtureRequest) -> AsyncIterator[httpx.AsyncClient | None]:
    """Run http probes both with a client of their own and with a runner-style shared one."""
    if request.param == "own-client":
        yield None
        return
    async with httpx.AsyncClient(trust_env=False, limits=httpx.Limits(max_keepalive_connections=0)) as shared:
        yield shared


async def test_http_ok_sends_default_host(http_backend: HttpBackend, client: httpx.AsyncClient | None) -> None:
    """A 200 passes, and the Host header defaults to the server's own host:port."""
    result = await bounded_probe(cfg("http", path="/health"), http_backend.port, client)
    assert result.ok, result.reason
    assert result.latency_ms is not None
    assert http_backend.hosts == [f"{HOST}:{http_backend.port}"]


async def test_http_host_header_is_configurable(http_backend: HttpBackend) -> None:
    """check.host_header replaces the Host header while the probe still goes to the server's address."""
    result = await bounded_probe(cfg("http", path="/health", host_header="app.example"), http_backend.port)
    assert result.ok, result.reason
    assert http_backend.hosts == ["app.example"]


async def test_http_503_fails(http_backend: HttpBackend, client: httpx.AsyncClient | None) -> None:
    """A status outside expect_status fails with "HTTP 503" and still reports the latency."""
    result = await bounded_probe(cfg("http", path="/down"), http_backend.port, client)
    assert (result.ok, result.reason) == (False, "HTTP 503")
    assert result.latency_ms is not None


async def test_http_expect_status_decides(http_backend: HttpBackend) -> None:
    """expect_status is the whole rule: a 503 passes when it is listed, a 200 fails when it is not."""
    assert (await bounded_probe(cfg("http", path="/down", expect_status=frozenset({503})), http_backend.port)).ok
    result = await bounded_probe(cfg("http", path="/health", expect_status=frozenset({204})), http_backend.port)
    assert (result.ok, result.reason) == (False, "HTTP 200")


async def test_http_timeout_against_silent_server(silent: TcpServer) -> None:
    """A server that accepts but never answers fails after timeout_ms with no latency."""
    started = time.perf_counter()
    result = await bounded_probe(cfg("http", timeout_ms=200), silent.port)
    elapsed = time.perf_counter() - started
    assert result == CheckResult(ok=False, latency_ms=None, reason="timeout after 200 ms")
    assert 0.15 <= elapsed < 0.2 + WAIT / 5


async def test_http_refused(closed_port: int) -> None:
    """httpx's wrapped connect error still reads "connection refused"."""
    result = await bounded_probe(cfg("http"), closed_port)
    assert (result.ok, result.reason) == (False, "connection refused")


async def test_http_reset() -> None:
    """A server that resets the connection after reading the request gives "connection reset"."""

    async def reset(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        sock = writer.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        writer.transport.abort()

    async with tcp_server(reset) as server:
        result = await bounded_probe(cfg("http"), server.port)
    assert (result.ok, result.reason) == (False, "connection reset")


async def test_http_closed_without_answer() -> None:
    """A server that closes without answering gives "connection closed"."""

    async def hang_up(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")

    async with tcp_server(hang_up) as server:
        result = await bounded_probe(cfg("http"), server.port)
    assert (result.ok, result.reason) == (False, "connection closed")


# -- probe: websocket ----------------------------------------------------------------------


async def test_websocket_ok_then_clean_close(ws_backend: WsBackend) -> None:
    """A websocket check passes on a 101 and then closes cleanly (code 1000)."""
    result = await bounded_probe(cfg("websocket", path="/ws"), ws_backend.port)
    assert result.ok, result.reason
    assert result.latency_ms is not None
    assert await asyncio.wait_for(ws_backend.close_codes.get(), WAIT) == 1000
    assert ws_backend.hosts == [f"{HOST}:{ws_backend.port}"]


async def test_websocket_host_header(ws_backend: WsBackend) -> None:
    """check.host_header becomes the handshake's Host while the probe connects to the server's address."""
    result = await bounded_probe(cfg("websocket", host_header="chat.example:8443"), ws_backend.port)
    assert result.ok, result.reason
    assert ws_backend.hosts == ["chat.example:8443"]


async def test_websocket_refused_handshake(ws_forbidden: WsBackend) -> None:
    """A handshake answered with 403 fails with "handshake answered 403"."""
    result = await bounded_probe(cfg("websocket"), ws_forbidden.port)
    assert (result.ok, result.reason) == (False, "handshake answered 403")
    assert result.latency_ms is not None


async def test_websocket_against_plain_http(http_backend: HttpBackend) -> None:
    """An HTTP server that answers 200 to an upgrade fails with "handshake answered 200"."""
    result = await bounded_probe(cfg("websocket", path="/health"), http_backend.port)
    assert (result.ok, result.reason) == (False, "handshake answered 200")


async def test_websocket_timeout_and_refused(silent: TcpServer, closed_port: int) -> None:
    """A silent server times out after timeout_ms; a closed port is refused."""
    assert await bounded_probe(cfg("websocket", timeout_ms=200), silent.port) == CheckResult(
        ok=False, latency_ms=None, reason="timeout after 200 ms"
    )
    result = await bounded_probe(cfg("websocket"), closed_port)
    assert (result.ok, result.reason) == (False, "connection refused")


async def test_websocket_garbage_answer() -> None:
    """A server answering with something that is not HTTP fails with a short reason, never an exception."""

    async def banner(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"SSH-2.0-OpenSSH_9.6\r\n\r\n")
        await writer.drain()
        await reader.read()

    async with tcp_server(banner) as server:
        result = await bounded_probe(cfg("websocket"), server.port)
    assert (result.ok, result.reason) == (False, "invalid HTTP response")


async def test_none_probe_is_ok() -> None:
    """A "none" check probes nothing and passes."""
    assert await probe(cfg("none"), HOST, 9) == CheckResult(ok=True, latency_ms=None)


# -- runner --------------------------------------------------------------------------------


class Collector:
    """Receives runner callbacks; tests await counts instead of sleeping."""

    def __init__(self) -> None:
        self.results: dict[str, list[CheckResult]] = {}
        self._changed = asyncio.Event()

    def __call__(self, name: str, result: CheckResult) -> None:
        self.results.setdefault(name, []).append(result)
        self._changed.set()

    def count(self, name: str) -> int:
        return len(self.results.get(name, []))

    async def wait_for(self, name: str, count: int) -> list[CheckResult]:
        async with asyncio.timeout(WAIT):
            while self.count(name) < count:
                self._changed.clear()
                await self._changed.wait()
        return self.results[name]


@pytest.fixture
def collector() -> Collector:
    return Collector()


async def test_runner_calls_back_repeatedly(listening: TcpServer, collector: Collector) -> None:
    """At a 50 ms interval the runner reports result after result for a server."""
    runner = CheckRunner(cfg("tcp", interval_ms=50, timeout_ms=500), collector)
    try:
        runner.add("a", HOST, listening.port)
        assert runner.running() == {"a"}
        results = await collector.wait_for("a", 3)
        assert all(r.ok for r in results)
    finally:
        await runner.close()
    assert runner.running() == set()


async def test_runner_remove_stops_callbacks(listening: TcpServer, closed_port: int, collector: Collector) -> None:
    """After remove() a server gets no more results while the other keeps being checked."""
    runner = CheckRunner(cfg("tcp", interval_ms=50, timeout_ms=500), collector)
    try:
        runner.add("a", HOST, listening.port)
        runner.add("b", HOST, closed_port)
        await collector.wait_for("a", 1)
        await collector.wait_for("b", 1)
        runner.remove("a")
        runner.remove("unknown")  # no error
        assert runner.running() == {"b"}
        seen_a = collector.count("a")
        later_b = collector.count("b") + 3
        failures = await collector.wait_for("b", later_b)  # about 150 ms pass meanwhile
        assert collector.count("a") == seen_a
        assert all(r.reason == "connection refused" for r in failures)
    finally:
        await runner.close()


async def test_runner_never_overlaps_slow_probes(http_backend: HttpBackend, collector: Collector) -> None:
    """A probe slower than the interval delays the next one; one server never has two at once."""
    runner = CheckRunner(cfg("http", path="/slow", interval_ms=50, timeout_ms=2000), collector)
    try:
        runner.add("slow", HOST, http_backend.port)
        results = await collector.wait_for("slow", 3)
    finally:
        await runner.close()
    assert all(r.ok for r in results[:3])
    assert http_backend.max_in_flight == 1


class FixedRandom(random.Random):
    """random() returns a chosen value; uniform() records its bounds and returns their midpoint."""

    def __init__(self, first: float) -> None:
        super().__init__(0)
        self.first = first
        self.uniform_calls: list[tuple[float, float]] = []

    def random(self) -> float:
        return self.first

    def uniform(self, a: float, b: float) -> float:
        self.uniform_calls.append((a, b))
        return (a + b) / 2


async def test_runner_first_probe_waits_its_jitter(listening: TcpServer, collector: Collector) -> None:
    """The first probe waits random() * min(interval, 1 s); later spacing draws from uniform(0.9, 1.1)."""
    rng = FixedRandom(0.9)
    runner = CheckRunner(cfg("tcp", interval_ms=300, timeout_ms=500), collector, rng=rng)
    started = time.perf_counter()
    try:
        runner.add("a", HOST, listening.port)
        await collector.wait_for("a", 1)
        first_after = time.perf_counter() - started
        await collector.wait_for("a", 2)
    finally:
        await runner.close()
    assert first_after >= 0.9 * 0.3 - 0.01
    assert rng.uniform_calls and rng.uniform_calls[0] == pytest.approx((0.9, 1.1))


async def test_runner_survives_a_failing_callback(listening: TcpServer, collector: Collector) -> None:
    """A callback that raises is logged and checking goes on."""
    calls = 0

    def flaky(name: str, result: CheckResult) -> None:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise RuntimeError("handler bug")
        collector(name, result)

    runner = CheckRunner(cfg("tcp", interval_ms=50, timeout_ms=500), flaky)
    try:
        runner.add("a", HOST, listening.port)
        await collector.wait_for("a", 1)
    finally:
        await runner.close()
    assert calls >= 2


async def test_runner_readd_moves_to_new_address(listening: TcpServer, closed_port: int, collector: Collector) -> None:
    """Adding a known name again restarts its check at the new address."""
    runner = CheckRunner(cfg("tcp", interval_ms=50, timeout_ms=500), collector)
    try:
        runner.add("a", HOST, closed_port)
        await collector.wait_for("a", 1)
        runner.add("a", HOST, listening.port)
        assert runner.running() == {"a"}
        seen = collector.count("a")
        results = await collector.wait_for("a", seen + 1)
        assert results[seen].ok
    finally:
        await runner.close()


async def test_runner_none_type_checks_nothing(listening: TcpServer, collector: Collector) -> None:
    """With type "none", add() starts nothing."""
    runner = CheckRunner(cfg("none"), collector)
    runner.add("a", HOST, listening.port)
    assert runner.running() == set()
    await runner.close()


async def test_runner_close_cancels_everything(silent: TcpServer, collector: Collector) -> None:
    """close() cancels probes in flight and returns once every task has finished; add() after it is ignored."""
    runner = CheckRunner(cfg("http", interval_ms=50, timeout_ms=5000), collector, rng=FixedRandom(0.0))
    runner.add("a", HOST, silent.port)
    runner.add("b", HOST, silent.port)
    for _ in range(2):  # both probes are waiting on the silent server
        await asyncio.wait_for(silent.arrivals.get(), WAIT)
    await asyncio.wait_for(runner.close(), WAIT)
    assert runner.running() == set()
    assert collector.results == {}
    runner.add("c", HOST, silent.port)
    assert runner.running() == set()
