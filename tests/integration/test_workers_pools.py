"""Several pools and routes with `--workers 2`: every worker routes as the single-process engine does.

The pools and routes reach the workers with every pool push; their route counters, 404s and handshake events
come back to the supervisor, so status(), /metrics and the event log read one engine.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
import trustme
from websockets.asyncio.client import ClientConnection, connect

from proxy_core.client import ControlError
from tests.conftest import EchoBackend, EngineFactory, EngineProc, unit, wait_until
from tests.integration import test_pools as pools
from tests.integration import test_pools_tls as tls

Backends = Callable[[int], Awaitable[list[EchoBackend]]]
N = 16  # connections per pool: P(all on one worker) = 2 * 2**-16
WORKERS = ("--workers", "2")


async def status(engine: EngineProc) -> dict[str, Any]:
    async with engine.client() as client:
        data: dict[str, Any] = await client.status()
    return data


async def settled(engine: EngineProc, check: Callable[[dict[str, Any]], bool], what: str) -> dict[str, Any]:
    """The status once the workers' reports (every 250 ms) make `check` true."""

    async def probe() -> dict[str, Any] | None:
        data = await status(engine)
        return data if check(data) else None

    result: dict[str, Any] = await wait_until(probe, timeout=5.0, what=what)
    return result


async def handshakes(engine: EngineProc, count: int) -> list[dict[str, Any]]:
    """The handshake events once `count` of them reached the supervisor (workers send them in batches)."""

    async def probe() -> list[dict[str, Any]] | None:
        events = await pools.handshakes(engine)
        return events if len(events) >= count else None

    events: list[dict[str, Any]] = await wait_until(probe, timeout=5.0, what=f"{count} handshake events")
    return events


async def open_ws(port: int, host: str, path: str = "/ws") -> ClientConnection:
    """A WebSocket naming `host` (connected to 127.0.0.1), checked with one echo; the caller closes it."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=unit(5))
    sock.setblocking(False)
    ws = await connect(f"ws://{host}{path}", sock=sock, open_timeout=unit(5))
    await echo(ws)
    return ws


async def echo(ws: ClientConnection) -> None:
    await ws.send("ping")
    assert await asyncio.wait_for(ws.recv(), unit(5)) == "ping"


@contextlib.asynccontextmanager
async def held(port: int, host: str, n: int, path: str = "/ws") -> AsyncIterator[list[ClientConnection]]:
    sockets = list(await asyncio.gather(*(open_ws(port, host, path) for _ in range(n))))
    try:
        yield sockets
    finally:
        for ws in sockets:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(ws.close(), unit(2))


def by_worker(events: list[dict[str, Any]]) -> set[int]:
    """The workers that took these connections (global ids are local * workers + index)."""
    return {int(e["conn"]) % 2 for e in events}


async def test_host_path_and_default_routes_in_every_worker(
    tmp_path: Path, start_engine: EngineFactory, echo_backends: Backends
) -> None:
    """Host chat.example.com to chat, /notify to notify, the rest to api, through both workers; counted once."""
    engine, (b1, b2, b3) = await pools.three_pools(tmp_path, start_engine, echo_backends, "api", *WORKERS)
    requests = [("chat.example.com", "/ws"), ("other.example.com", "/notify/x"), ("other.example.com", "/notifyer")]
    for host, path in requests:
        await asyncio.gather(*(pools.ws_echo(engine.port, host, path) for _ in range(N)))
    assert (b1.accepted, b2.accepted, b3.accepted) == (N, N, N)
    events = [e for e in await handshakes(engine, 3 * N) if e["kind"] == "websocket"]
    assert Counter((e["pool"], e["route"], e["server"], e["status"]) for e in events) == {
        ("chat", 0, "chat/b1", 101): N,
        ("notify", 1, "notify/b2", 101): N,
        ("api", None, "api/b3", 101): N,
    }
    for pool in ("chat", "notify", "api"):
        assert by_worker([e for e in events if e["pool"] == pool]) == {0, 1}, pool
    data = await settled(engine, lambda d: d["totals"]["total"] == 3 * N, "every connection reported")
    assert [r["matched"] for r in data["routes"]] == [N, N]
    assert [(r["pool"], r["host"], r["path_prefix"]) for r in data["routes"]] == [
        ("chat", "chat.example.com", None),
        ("notify", None, "/notify"),
    ]
    by_name = {p["name"]: p for p in data["pools"]}
    assert [(by_name[n]["servers"], by_name[n]["up"], by_name[n]["total"]) for n in ("chat", "notify", "api")] == [
        (1, 1, N)
    ] * 3
    assert by_name["api"]["default_for"] == [engine.listen] and by_name["chat"]["default_for"] == []
    assert {s["name"]: (s["pool"], s["total"]) for s in data["servers"]} == {
        "chat/b1": ("chat", N),
        "notify/b2": ("notify", N),
        "api/b3": ("api", N),
    }
    assert data["unrouted"] == {"not_found": 0, "misdirected": 0}
    async with engine.client() as client:
        metrics = (await client._http.get("/metrics")).text
    assert f'wsproxy_route_matched_total{{pool="chat",route="0"}} {N}.0' in metrics
    assert f'wsproxy_pool_connections_total{{pool="notify"}} {N}.0' in metrics


async def test_no_route_is_a_404_in_every_worker_counted_by_the_supervisor(
    tmp_path: Path, start_engine: EngineFactory, echo_backends: Backends
) -> None:
    """Without a default pool each worker answers an unmatched request 404; the count and the log are engine-wide."""
    engine, backends = await pools.three_pools(tmp_path, start_engine, echo_backends, None, *WORKERS)
    answers = await asyncio.gather(*(pools.http_get(engine.port, "nowhere.example.com", "/x") for _ in range(N)))
    for answer in answers:
        assert answer.startswith(b"HTTP/1.1 404 Not Found\r\n") and b"no route for host nowhere.example.com" in answer
    await pools.ws_echo(engine.port, "chat.example.com")  # what matches is still routed
    assert [b.accepted for b in backends] == [1, 0, 0]
    data = await settled(engine, lambda d: d["unrouted"]["not_found"] == N, f"{N} requests counted as 404")
    assert data["unrouted"] == {"not_found": N, "misdirected": 0}
    assert [r["matched"] for r in data["routes"]] == [1, 0]
    refused = [e for e in await handshakes(engine, N + 1) if e["status"] == 404]
    assert len(refused) == N and by_worker(refused) == {0, 1}
    assert {(e["server"], e["pool"], e["host"], e["path"]) for e in refused} == {
        (None, None, "nowhere.example.com", "/x")
    }


async def test_drain_weight_and_remove_in_one_pool_leave_the_other_untouched_with_workers(
    tmp_path: Path, start_engine: EngineFactory, echo_backends: Backends
) -> None:
    """chat/NAME actions reach every worker for chat only; notify keeps its servers, weights and connections."""
    backends = await echo_backends(4)
    b1, b2, b3, b4 = backends
    text = '[[listener]]\naddress = "127.0.0.1:0"\ndefault_pool = "notify"\n'
    text += pools.pool_table("chat", backends[:2]) + pools.pool_table("notify", backends[2:]) + pools.ROUTES
    (tmp_path / "p.toml").write_text(text)
    engine = await start_engine("-c", str(tmp_path / "p.toml"), *WORKERS, listen=None)
    async with held(engine.port, "other.example.com", N) as notify:
        assert b3.accepted + b4.accepted == N and b3.accepted and b4.accepted
        async with engine.client() as client:
            await client.drain("chat/b1")
            await client.set_weight("b2", 5)  # bare and unique: chat/b2
        async with held(engine.port, "chat.example.com", N):
            assert (b1.accepted, b2.accepted) == (0, N)
        async with engine.client() as client:
            await client.remove("chat/b1")
            with pytest.raises(ControlError) as refused:  # the interlock, per pool, with workers too
                await client.drain("chat/b2")
        assert refused.value.status == 409 and "no eligible server in the pool chat" in refused.value.message
        data = await settled(engine, lambda d: d["totals"]["active"] == N, f"{N} notify connections open")
        servers = {s["name"]: s for s in data["servers"]}
        assert set(servers) == {"chat/b2", "notify/b3", "notify/b4"}
        assert (servers["chat/b2"]["weight"], servers["chat/b2"]["share"]) == (5, 1.0)
        for name in ("notify/b3", "notify/b4"):
            assert (servers[name]["state"], servers[name]["weight"], servers[name]["share"]) == ("up", 1, 0.5)
        assert servers["notify/b3"]["active"] + servers["notify/b4"]["active"] == N
        async with engine.client() as client:  # a bare name's detail lists the connections the workers report

            async def listed() -> list[dict[str, Any]] | None:
                conns: list[dict[str, Any]] = (await client.server("b3"))["connections"]
                return conns if len(conns) == servers["notify/b3"]["active"] else None

            conns = await wait_until(listed, timeout=5.0, what="notify/b3's connections in the detail")
        assert {c["server"] for c in conns} <= {"notify/b3"}
        for ws in notify:
            await echo(ws)  # none of them was touched
        before = (b3.accepted, b4.accepted)
        async with held(engine.port, "other.example.com", N):
            assert b3.accepted > before[0] and b4.accepted > before[1]
        assert b1.accepted == 0


async def test_a_restarted_worker_routes_with_the_current_pools(
    tmp_path: Path, start_engine: EngineFactory, echo_backends: Backends
) -> None:
    """A worker killed and restarted gets the pools, routes and runtime changes in its first message."""
    backends = await echo_backends(3)
    b1, b2, b3 = backends
    text = '[[listener]]\naddress = "127.0.0.1:0"\ndefault_pool = "notify"\n'
    text += pools.pool_table("chat", backends[:2]) + pools.pool_table("notify", backends[2:]) + pools.ROUTES
    (tmp_path / "p.toml").write_text(text)
    engine = await start_engine("-c", str(tmp_path / "p.toml"), *WORKERS, listen=None)
    async with engine.client() as client:
        await client.disable("chat/b1")
    pids = [w["pid"] for w in (await status(engine))["engine"]["workers"]]
    os.kill(pids[0], signal.SIGKILL)

    await settled(engine, lambda d: d["engine"]["worker_restarts"] == 1, "the worker restarted")
    await settled(engine, lambda d: None not in [w["pid"] for w in d["engine"]["workers"]], "both workers up")
    for host in ("chat.example.com", "other.example.com"):
        await asyncio.gather(*(pools.ws_echo(engine.port, host) for _ in range(N)))
    assert (b1.accepted, b2.accepted, b3.accepted) == (0, N, N)
    events = [e for e in await handshakes(engine, 2 * N) if e["kind"] == "websocket"]
    assert by_worker([e for e in events if e["pool"] == "chat"]) == {0, 1}


ca = tls.ca  # the TLS pool tests' fixtures: a test CA and wss echo backends with their own certificates
tls_echo = tls.tls_echo


async def test_terminated_tls_routes_on_sni_and_answers_421_in_every_worker(
    tmp_path: Path, start_engine: EngineFactory, echo_backends: Backends, ca: trustme.CA
) -> None:
    """Each worker terminates TLS and routes on SNI then Host; a Host naming another site is a 421, counted once."""
    b1, b2 = await echo_backends(2)
    chat = tls._write(tmp_path / "chat", ca.issue_cert("chat.test"))
    api = tls._write(tmp_path / "api", ca.issue_cert("api.test"))
    text = (
        f'[[listener]]\naddress = "127.0.0.1:0"\ntls_cert = "{chat[0]}"\ntls_key = "{chat[1]}"\n'
        f'[[listener.certificate]]\ncert = "{api[0]}"\nkey = "{api[1]}"\n'
        + tls.pools_text([("chat", b1.address), ("api", b2.address)])
        + '[[route]]\nsni = "chat.test"\npool = "chat"\n[[route]]\nhost = "api.test"\npool = "api"\n'
    )
    (tmp_path / "tls.toml").write_text(text)
    engine = await start_engine("-c", str(tmp_path / "tls.toml"), *WORKERS, listen=None)
    for name in ("chat.test", "api.test"):
        await asyncio.gather(*(tls.wss_echo(engine.port, ca, name) for _ in range(N)))
    assert (b1.accepted, b2.accepted) == (N, N)

    async def misdirected() -> bytes:
        context = tls.client_context(ca)
        opening = asyncio.open_connection("127.0.0.1", engine.port, ssl=context, server_hostname="chat.test")
        reader, writer = await asyncio.wait_for(opening, unit(5))
        try:
            writer.write(b"GET /ws HTTP/1.1\r\nHost: api.test\r\n\r\n")
            return await asyncio.wait_for(reader.read(), unit(5))
        finally:
            writer.close()

    for answer in await asyncio.gather(*(misdirected() for _ in range(N))):
        assert answer.startswith(b"HTTP/1.1 421 Misdirected Request\r\n"), answer
    assert (b1.accepted, b2.accepted) == (N, N)
    data = await settled(engine, lambda d: d["unrouted"]["misdirected"] == N, f"{N} requests counted as 421")
    assert data["unrouted"] == {"not_found": 0, "misdirected": N}
    assert [r["matched"] for r in data["routes"]] == [N, N]
    events = await handshakes(engine, 3 * N)
    refused = [e for e in events if e["status"] == 421]
    assert len(refused) == N and by_worker(refused) == {0, 1}
    assert {(e["server"], e["host"], e["tls"]["sni"]) for e in refused} == {(None, "api.test", "chat.test")}
    routed = Counter((e["pool"], e["route"]) for e in events if e["status"] == 101)
    assert routed == {("chat", 0): N, ("api", 1): N}


async def test_passthrough_routes_on_the_client_hello_in_every_worker(
    tmp_path: Path, start_engine: EngineFactory, tls_echo: Any, ca: trustme.CA
) -> None:
    """No certificate: each worker reads the ClientHello's SNI and relays the TLS bytes to that pool's backend."""

    def with_workers(*args: str, **kwargs: Any) -> Awaitable[EngineProc]:
        return start_engine(*args, *WORKERS, **kwargs)

    engine, chat, other = await tls.passthrough(tmp_path, with_workers, tls_echo)
    for name in ("chat.test", "other.test"):
        await asyncio.gather(*(tls.wss_echo(engine.port, ca, name) for _ in range(N)))
    assert (chat.accepted, other.accepted) == (N, N)
    events = await handshakes(engine, 2 * N)
    assert Counter((e["pool"], e["route"]) for e in events) == {("chat", 1): N, ("other", None): N}
    assert by_worker([e for e in events if e["pool"] == "chat"]) == {0, 1}
    data = await settled(engine, lambda d: d["totals"]["total"] == 2 * N, "every connection reported")
    assert [r["matched"] for r in data["routes"]] == [0, N]


async def test_pools_and_routes_changed_at_runtime_reach_every_worker(
    tmp_path: Path, start_engine: EngineFactory, echo_backends: Backends
) -> None:
    """A pool, its server and a route added through the API route in both workers; the route removed, they stop.

    Runs once the runtime pool and route endpoints exist (POST /v1/pools, /v1/routes); skipped before."""
    b1, b2, b3 = await echo_backends(3)
    text = '[[listener]]\naddress = "127.0.0.1:0"\ndefault_pool = "chat"\n'
    (tmp_path / "p.toml").write_text(text + pools.pool_table("chat", [b1]) + pools.pool_table("api", [b3]))
    engine = await start_engine("-c", str(tmp_path / "p.toml"), *WORKERS, listen=None)
    async with engine.client() as client:
        try:
            await client._request("POST", "/v1/pools", body={"name": "notify", "balance": "round_robin"})
        except ControlError as exc:
            if exc.status in (404, 405):
                pytest.skip("no runtime pool endpoints in this build")
            raise
        await client.add("n2", b2.address, pool="notify")

        async def up() -> bool:
            return (await client.server("notify/n2"))["state"] == "up"

        await wait_until(up, timeout=5.0, what="notify/n2 up after its checks")
        await client._request("POST", "/v1/routes", body={"host": "notify.example.com", "pool": "notify"})
        await asyncio.gather(*(pools.ws_echo(engine.port, "notify.example.com") for _ in range(N)))
        assert (b1.accepted, b2.accepted, b3.accepted) == (0, N, 0)
        data = await settled(engine, lambda d: d["totals"]["total"] == N, "every connection reported")
        assert [(r["pool"], r["matched"]) for r in data["routes"]] == [("notify", N)]
        await client._request("DELETE", "/v1/routes/1")
        await asyncio.gather(*(pools.ws_echo(engine.port, "notify.example.com") for _ in range(N)))
        assert (b1.accepted, b2.accepted) == (N, N)
    events = [e for e in await handshakes(engine, 2 * N) if e["kind"] == "websocket"]
    assert by_worker([e for e in events if e["pool"] == "notify"]) == {0, 1}
