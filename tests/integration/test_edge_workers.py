"""The edge with `--workers 2` as real processes: TLS, PROXY and limit counters summed over the workers, reloads
reaching every worker, per-client limits exact across workers (the reuseport BPF), accept pacing engine-wide."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import trustme
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import InvalidStatus

from tests.conftest import EchoBackend, EngineFactory, EngineProc, unit, wait_until
from tests.integration.tcp_peers import TcpServer, echo, open_from, socket_from
from tests.integration.test_edge_tls import _client_context, _write, slow_handshakes

pytestmark = pytest.mark.asyncio
HEAVY, LIGHT = "127.0.0.2", "127.0.0.3"
SPREAD = 16  # new connections per check: P(all on one worker) = 2 * 2**-16


@pytest.fixture
def ca() -> trustme.CA:
    return trustme.CA()


async def _ws_from(source: str, port: int) -> ClientConnection | int:
    """A WebSocket from this source address, checked with one echo; or the HTTP status it was refused with."""
    try:
        ws = await connect(f"ws://127.0.0.1:{port}/ws", sock=socket_from(source, port), open_timeout=unit(5))
    except InvalidStatus as exc:
        return exc.response.status_code
    await ws.send("ping")
    assert await asyncio.wait_for(ws.recv(), unit(5)) == "ping"
    return ws


async def _status(engine: EngineProc) -> dict[str, Any]:
    async with engine.client() as client:
        data: dict[str, Any] = await client.status()
        return data


async def _metrics(engine: EngineProc) -> str:
    async with engine.client() as client:
        return str((await client._http.get("/metrics")).text)


def _by_address(status: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {item["address"]: item for item in status["listeners"]}


async def _edge_engine(
    start_engine: EngineFactory, tmp_path: Path, backend: EchoBackend, ca: trustme.CA, limits: str
) -> tuple[EngineProc, str, str, str]:
    """--workers 2 with a TLS, a PROXY (from HEAVY only) and a plain listener; their addresses."""
    cert, key = _write(tmp_path / "a", ca.issue_cert("a.test", "old.test"))
    config = tmp_path / "wsproxy.toml"
    config.write_text(
        f'[[listener]]\naddress = "127.0.0.1:0"\ntls_cert = "{cert}"\ntls_key = "{key}"\n\n'
        f'[[listener]]\naddress = "127.0.0.1:0"\nproxy_protocol = true\nproxy_protocol_from = ["{HEAVY}"]\n\n'
        f'[[listener]]\naddress = "127.0.0.1:0"\n\n[limits]\n{limits}\n'
    )
    engine = await start_engine("-c", str(config), "--workers", "2", "--backend", backend.flag, listen=None)
    tls, proxy, plain = [item["address"] for item in (await _status(engine))["listeners"]]
    return engine, tls, proxy, plain


def _port(address: str) -> int:
    return int(address.rsplit(":", 1)[1])


async def test_edge_counters_are_summed_over_the_workers(
    start_engine: EngineFactory, echo_backends: Callable[..., Any], tmp_path: Path, ca: trustme.CA
) -> None:
    """Failed TLS handshakes, bad PROXY headers, refused sources and limit refusals from both workers add up in
    status, /metrics and the dashboard's data, and survive a worker's restart."""
    (backend,) = await echo_backends(1)
    engine, tls, proxy, plain = await _edge_engine(start_engine, tmp_path, backend, ca, "max_conns_per_client = 1")
    listeners = _by_address(await _status(engine))
    assert listeners[tls]["tls"] is True and "a.test" in listeners[tls]["names"] and listeners[tls]["days_left"] > 300
    assert listeners[proxy]["proxy_protocol"] is True
    for _ in range(SPREAD):  # plaintext on the TLS port, each a new 4-tuple: both workers see some
        reader, writer = await asyncio.open_connection("127.0.0.1", _port(tls))
        writer.write(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
        with contextlib.suppress(ConnectionError):
            await asyncio.wait_for(reader.read(), unit(5))
        writer.close()
    for source, data in [(LIGHT, b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r\n")] * 4 + [(HEAVY, b"GARBAGE\r\n\r\n")] * 6:
        reader, writer = await open_from(source, _port(proxy))
        writer.write(data)
        with contextlib.suppress(ConnectionError):
            await asyncio.wait_for(reader.read(), unit(5))
        writer.close()
    results = [await _ws_from(HEAVY, _port(plain)) for _ in range(8)]
    admitted = [r for r in results if not isinstance(r, int)]
    assert all(r == 429 for r in results if isinstance(r, int))
    refused = len(results) - len(admitted)

    async def counted() -> dict[str, Any] | None:
        data = await _status(engine)
        by = _by_address(data)
        done = by[tls]["handshake_failures"] >= SPREAD and by[proxy]["bad_headers"] >= 6
        return data if done and by[proxy]["refused_sources"] >= 4 and data["limits"]["refused"] >= refused else None

    data = await wait_until(counted, what="every worker's edge counters in the status")
    by = _by_address(data)
    assert by[tls]["handshake_failures"] == SPREAD
    assert by[tls]["failures_by_reason"] == {"plaintext HTTP on a TLS port": SPREAD}
    assert (by[proxy]["bad_headers"], by[proxy]["refused_sources"]) == (6, 4)
    assert data["limits"]["refused"] == refused
    assert data["limits"]["top_refused"] == [{"client": HEAVY, "refused": refused}]
    metrics = await _metrics(engine)
    assert f'wsproxy_listener_tls_handshake_failures_total{{listener="{tls}"}} {SPREAD}.0' in metrics
    assert f'wsproxy_listener_proxy_header_failures_total{{listener="{proxy}"}} 6.0' in metrics
    assert f"wsproxy_limit_refused_total {refused}.0" in metrics
    for ws in admitted:
        await ws.close()
    pid = data["engine"]["workers"][0]["pid"]
    os.kill(pid, signal.SIGKILL)  # a dead worker's counts stay in the engine's totals

    async def restarted() -> dict[str, Any] | None:
        now = await _status(engine)
        pids = [w["pid"] for w in now["engine"]["workers"]]
        return now if pid not in pids and None not in pids and now["engine"]["worker_restarts"] == 1 else None

    after = _by_address(await wait_until(restarted, timeout=10, what="worker 0 restarted"))
    assert after[tls]["handshake_failures"] == SPREAD and after[proxy]["bad_headers"] == 6


async def _served_names(port: int, ca: trustme.CA) -> set[str]:
    """The DNS names of the certificate served to SPREAD new handshakes (new 4-tuples: both workers answer)."""
    seen: set[str] = set()
    for _ in range(SPREAD):
        _, writer = await asyncio.wait_for(
            asyncio.open_connection("127.0.0.1", port, ssl=_client_context(ca), server_hostname="a.test"), unit(5)
        )
        seen.add(" ".join(v for _, v in writer.get_extra_info("peercert")["subjectAltName"]))
        writer.close()
    return seen


async def test_reload_certs_reaches_every_worker_and_a_bad_file_changes_nothing(
    start_engine: EngineFactory,
    echo_backends: Callable[..., Any],
    tmp_path: Path,
    ca: trustme.CA,
    wsproxy_cli: Callable[..., Any],
) -> None:
    """reload-certs and SIGHUP: every worker serves the new files to new handshakes while a live wss connection
    keeps going; a bad file is refused with the reason before any worker is touched."""
    (backend,) = await echo_backends(1)
    cert, key = _write(tmp_path / "a", ca.issue_cert("a.test", "old.test"))
    config = tmp_path / "wsproxy.toml"
    config.write_text(f'[[listener]]\naddress = "127.0.0.1:0"\ntls_cert = "{cert}"\ntls_key = "{key}"\n')
    engine = await start_engine("-c", str(config), "--workers", "2", "--backend", backend.flag, listen=None)
    assert await _served_names(engine.port, ca) == {"a.test old.test"}
    live = await connect(f"wss://a.test:{engine.port}/ws", ssl=_client_context(ca), host="127.0.0.1")
    try:
        _write(tmp_path / "a", ca.issue_cert("a.test", "new.test"))
        result = await wsproxy_cli("reload-certs", "--control", engine.control)
        assert result.code == 0 and "loaded 1 certificate" in result.out and "in 2 worker(s)" in result.out, result
        assert await _served_names(engine.port, ca) == {"a.test new.test"}
        await live.send("still here")
        assert await asyncio.wait_for(live.recv(), unit(5)) == "still here"
        cert.write_text("not a certificate\n")
        result = await wsproxy_cli("reload-certs", "--control", engine.control)
        assert result.code == 1 and "is not a PEM certificate" in result.err and str(cert) in result.err, result
        assert await _served_names(engine.port, ca) == {"a.test new.test"}  # no worker changed
        _write(tmp_path / "a", ca.issue_cert("a.test", "hup.test"))
        os.kill(engine.pid, signal.SIGHUP)
        await engine.wait_line("SIGHUP: .* reloaded", 5)
        assert await _served_names(engine.port, ca) == {"a.test hup.test"}
        await live.send("after two reloads")
        assert await asyncio.wait_for(live.recv(), unit(5)) == "after two reloads"
        status = await _status(engine)
        assert status["listeners"][0]["reloads"] == 2 and "a.test" in status["listeners"][0]["names"]
    finally:
        await live.close()


async def _attempts(source: str, port: int, n: int) -> tuple[list[ClientConnection], list[int]]:
    """`n` WebSockets from `source`: those accepted (open) and the statuses of those refused."""
    results = [await _ws_from(source, port) for _ in range(n)]
    return [r for r in results if not isinstance(r, int)], [r for r in results if isinstance(r, int)]


async def test_per_client_limit_is_exact_across_workers_and_restarts(
    start_engine: EngineFactory, echo_backends: Callable[..., Any]
) -> None:
    """max_conns_per_client 3 with two workers: from one address exactly 3 of 6 WebSockets are accepted and the rest
    get 429, another address has its own 3; after a worker restart a client is still counted on one worker."""
    (backend,) = await echo_backends(1)
    engine = await start_engine("--workers", "2", "--backend", backend.flag, "--max-conns-per-client", "3")
    held: list[ClientConnection] = []
    try:
        for source in (HEAVY, LIGHT):
            accepted, refused = await _attempts(source, engine.port, 6)
            held.extend(accepted)
            assert (len(accepted), refused) == (3, [429] * 3), source

        async def reported() -> dict[str, Any] | None:
            now = await _status(engine)
            return now if now["limits"]["refused"] >= 6 and now["totals"]["active"] == 6 else None

        data = await wait_until(reported, what="both workers' refusals and connections reported")
        tops = {item["client"]: item["refused"] for item in data["limits"]["top_refused"]}
        assert data["limits"]["refused"] == 6 and tops == {HEAVY: 3, LIGHT: 3}
        assert sorted(w["active"] for w in data["engine"]["workers"]) == [3, 3]  # one client per worker
        victim = data["engine"]["workers"][0]["pid"]
        os.kill(victim, signal.SIGKILL)  # its client's connections go with it; the other's stay on the survivor

        async def restarted() -> bool:
            pids = [w["pid"] for w in (await _status(engine))["engine"]["workers"]]
            return victim not in pids and None not in pids

        await wait_until(restarted, timeout=10, what="worker 0 restarted")
        again = {source: await _attempts(source, engine.port, 4) for source in (HEAVY, LIGHT)}
        for accepted, _ in again.values():
            held.extend(accepted)
        counts = sorted(len(accepted) for accepted, _ in again.values())
        assert counts == [0, 3], again  # the survivor's client is still full; the dead worker's has its 3 again
    finally:
        for ws in held:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(ws.close(), unit(2))


def _has_ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as sock:
            sock.bind(("::1", 0))
    except OSError:
        return False
    return True


@pytest.mark.skipif(not _has_ipv6_loopback(), reason="no IPv6 loopback")
async def test_per_client_limit_is_exact_for_an_ipv6_client(
    start_engine: EngineFactory, echo_backends: Callable[..., Any]
) -> None:
    """On an IPv6 listener the program reads the IPv6 source: 2 of 8 WebSockets from ::1 at max 2, not 2 per worker."""
    (backend,) = await echo_backends(1)
    engine = await start_engine(
        "--workers", "2", "--backend", backend.flag, "--max-conns-per-client", "2", listen="[::1]:0"
    )
    held: list[ClientConnection] = []
    try:
        for _ in range(8):
            try:
                held.append(await connect(f"ws://[::1]:{engine.port}/ws", open_timeout=unit(5)))
            except InvalidStatus as exc:
                assert exc.response.status_code == 429
        assert len(held) == 2
    finally:
        for ws in held:
            await ws.close()


async def test_max_accept_rate_is_engine_wide_with_workers(start_engine: EngineFactory) -> None:
    """60 clients at once under max_accept_rate 40/s with two workers: all served and counted, paced over more
    than a second (each worker takes rate/2), the pauses of both workers summed."""
    backend = await TcpServer(echo).start()
    try:
        engine = await start_engine(
            "--workers", "2", "--backend", backend.flag, "--check", "none", "--max-accept-rate", "40"
        )
        started = time.monotonic()
        clients = await asyncio.gather(*(open_from(HEAVY if i % 2 else LIGHT, engine.port) for i in range(60)))
        for _, writer in clients:
            writer.write(b"ping")
        results = await asyncio.gather(*(asyncio.wait_for(r.readexactly(4), unit(10)) for r, _ in clients))
        elapsed = time.monotonic() - started
        assert results == [b"ping"] * 60
        assert elapsed >= 1.2, elapsed  # 60 at 40/s with a burst of 2 per worker: about 1.4 s at the least

        async def counted() -> dict[str, Any] | None:
            now = await _status(engine)
            return now if now["totals"]["total"] >= 60 else None

        data = await wait_until(counted, what="60 connections counted over both workers")
        assert data["totals"]["total"] == 60 and data["listeners"][0]["total"] == 60
        assert data["limits"]["accept_pauses"] >= 5
        for _, writer in clients:
            writer.close()
    finally:
        await backend.stop()


async def test_a_slow_handshake_is_closed_and_counted_in_a_worker(
    start_engine: EngineFactory, echo_backends: Callable[..., Any], tmp_path: Path, ca: trustme.CA
) -> None:
    """A worker closes a TLS handshake not done by `timeouts.head`; the supervisor shows it as a "timeout"."""
    (backend,) = await echo_backends(1)
    cert, key = _write(tmp_path / "a", ca.issue_cert("a.test"))
    config = tmp_path / "wsproxy.toml"
    config.write_text(
        f'[[listener]]\naddress = "127.0.0.1:0"\ntls_cert = "{cert}"\ntls_key = "{key}"\n\n[timeouts]\nhead = 0.5\n'
    )
    engine = await start_engine("-c", str(config), "--workers", "2", "--backend", backend.flag, listen=None)
    await slow_handshakes(engine.port, engine)
