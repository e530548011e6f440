"""Several pools through a real engine: routing on Host and path, the default pool, the 404, per-pool actions."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from websockets.asyncio.client import connect

from proxy_core.client import ControlError
from tests.conftest import EchoBackend, EngineFactory, EngineProc, unit

Backends = Callable[[int], Awaitable[list[EchoBackend]]]


def pool_table(name: str, backends: list[EchoBackend], extra: str = "", names: list[str] | None = None) -> str:
    servers = "".join(
        f'[[pool.server]]\nname = "{(names or [b.name for b in backends])[i]}"\naddress = "{b.address}"\n'
        for i, b in enumerate(backends)
    )
    return f'[[pool]]\nname = "{name}"\n{extra}{servers}'


ROUTES = """
[[route]]
host = "chat.example.com"
pool = "chat"

[[route]]
path_prefix = "/notify"
pool = "notify"
"""


async def three_pools(
    tmp_path: Path, start_engine: EngineFactory, echo_backends: Backends, default: str | None = "api", *args: str
) -> tuple[EngineProc, list[EchoBackend]]:
    """chat (b1), notify (b2), api (b3) behind one listener, routed by Host and path; `default` takes the rest."""
    backends = await echo_backends(3)
    listener = '[[listener]]\naddress = "127.0.0.1:0"\n' + (f'default_pool = "{default}"\n' if default else "")
    text = listener + "".join(pool_table(p, [b]) for p, b in zip(("chat", "notify", "api"), backends, strict=True))
    path = tmp_path / "pools.toml"
    path.write_text(text + ROUTES)
    engine = await start_engine("-c", str(path), *args, listen=None)
    return engine, backends


async def ws_echo(port: int, host: str, path: str = "/ws") -> None:
    """One WebSocket through the engine, naming `host` in its Host header (connected to 127.0.0.1 anyway)."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=unit(5))
    sock.setblocking(False)
    async with connect(f"ws://{host}{path}", sock=sock, open_timeout=unit(5)) as ws:
        await ws.send("hello")
        assert await asyncio.wait_for(ws.recv(), unit(5)) == "hello"


async def http_get(port: int, host: str, path: str = "/") -> bytes:
    """A plain HTTP/1.1 request and everything the engine answers until it closes."""
    reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), unit(5))
    try:
        writer.write(f"GET {path} HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
        return await asyncio.wait_for(reader.read(), unit(5))
    finally:
        writer.close()


async def handshakes(engine: EngineProc) -> list[dict[str, Any]]:
    async with engine.client() as client:
        page = await client.events(since=0)
    return [e for e in page["events"] if e["type"] == "handshake"]


async def test_host_and_path_route_to_their_pools_and_the_rest_to_the_default(
    tmp_path: Path, start_engine: EngineFactory, echo_backends: Backends
) -> None:
    """Host chat.example.com goes to chat, /notify to notify, anything else to the listener's default pool."""
    engine, (b1, b2, b3) = await three_pools(tmp_path, start_engine, echo_backends)
    await ws_echo(engine.port, "chat.example.com")
    await ws_echo(engine.port, "other.example.com", "/notify/x")
    await ws_echo(engine.port, "other.example.com", "/notifyer")  # not the /notify segment: the default
    await ws_echo(engine.port, "CHAT.example.com:443", "/notify")  # host first: the first route wins
    assert (b1.accepted, b2.accepted, b3.accepted) == (2, 1, 1)
    events = [e for e in await handshakes(engine) if e["kind"] == "websocket"]
    assert [(e["pool"], e["route"], e["server"], e["status"]) for e in events] == [
        ("chat", 0, "chat/b1", 101),
        ("notify", 1, "notify/b2", 101),
        ("api", None, "api/b3", 101),
        ("chat", 0, "chat/b1", 101),
    ]
    async with engine.client() as client:
        status = await client.status()
    assert [(r["pool"], r["matched"]) for r in status["routes"]] == [("chat", 2), ("notify", 1)]
    pools = {p["name"]: p for p in status["pools"]}
    assert [pools[n]["total"] for n in ("chat", "notify", "api")] == [2, 1, 1]
    assert pools["api"]["default_for"] == [engine.listen] and pools["chat"]["default_for"] == []
    assert {s["name"]: s["pool"] for s in status["servers"]} == {
        "chat/b1": "chat",
        "notify/b2": "notify",
        "api/b3": "api",
    }
    assert status["unrouted"] == {"not_found": 0, "misdirected": 0}


async def test_no_route_and_no_default_is_a_404_touching_no_backend(
    tmp_path: Path, start_engine: EngineFactory, echo_backends: Backends
) -> None:
    """Without a default pool an unmatched request gets a short 404, is counted and logged, and no backend sees it."""
    engine, backends = await three_pools(tmp_path, start_engine, echo_backends, None)
    answer = await http_get(engine.port, "nowhere.example.com", "/x")
    assert answer.startswith(b"HTTP/1.1 404 Not Found\r\n") and b"no route for host nowhere.example.com" in answer
    await ws_echo(engine.port, "chat.example.com")  # the listener still routes what matches
    assert [b.accepted for b in backends] == [1, 0, 0]
    async with engine.client() as client:
        status = await client.status()
    assert status["unrouted"] == {"not_found": 1, "misdirected": 0}
    refused = [e for e in await handshakes(engine) if e["status"] == 404]
    assert [(e["server"], e["pool"], e["host"], e["path"]) for e in refused] == [
        (None, None, "nowhere.example.com", "/x")
    ]


async def test_raw_tcp_goes_to_the_default_pool(
    tmp_path: Path, start_engine: EngineFactory, echo_backends: Backends
) -> None:
    """Bytes that are no HTTP head are relayed to the default pool's server."""
    engine, _ = await three_pools(tmp_path, start_engine, echo_backends)
    reader, writer = await asyncio.open_connection("127.0.0.1", engine.port)
    try:
        writer.write(b"\x16\x03\x01 not http at all\r\n\r\n")
        await writer.drain()
        await asyncio.wait_for(reader.read(1), unit(5))  # the websockets server answers garbage with a 400
    finally:
        writer.close()
    events = await handshakes(engine)
    assert [(e["kind"], e["pool"], e["server"]) for e in events] == [("raw", "api", "api/b3")]


async def test_drain_weight_and_remove_in_one_pool_leave_the_other_untouched(
    tmp_path: Path, start_engine: EngineFactory, echo_backends: Backends
) -> None:
    """Actions on chat/NAME change that pool only; notify's servers keep their state, weight and connections."""
    backends = await echo_backends(4)
    text = '[[listener]]\naddress = "127.0.0.1:0"\ndefault_pool = "notify"\n'
    text += pool_table("chat", backends[:2]) + pool_table("notify", backends[2:]) + ROUTES
    (tmp_path / "p.toml").write_text(text)
    engine = await start_engine("-c", str(tmp_path / "p.toml"), listen=None)
    async with engine.client() as client:
        await client.drain("chat/b1")
        await client.set_weight("b2", 5)  # bare and unique: chat/b2
        for _ in range(2):
            await ws_echo(engine.port, "chat.example.com")
        assert (backends[0].accepted, backends[1].accepted) == (0, 2)
        await client.remove("chat/b1")
        status = await client.status()
    servers = {s["name"]: s for s in status["servers"]}
    assert set(servers) == {"chat/b2", "notify/b3", "notify/b4"}
    assert servers["chat/b2"]["weight"] == 5 and servers["chat/b2"]["share"] == 1.0
    assert [(servers[n]["state"], servers[n]["weight"], servers[n]["share"]) for n in ("notify/b3", "notify/b4")] == [
        ("up", 1, 0.5),
        ("up", 1, 0.5),
    ]


async def test_the_interlock_is_per_pool(tmp_path: Path, start_engine: EngineFactory, echo_backends: Backends) -> None:
    """Draining or removing a pool's last server is refused though other pools have servers; force does it."""
    engine, _ = await three_pools(tmp_path, start_engine, echo_backends)
    async with engine.client() as client:
        for action in (client.drain("chat/b1"), client.disable("chat/b1"), client.set_weight("chat/b1", 0)):
            with pytest.raises(ControlError) as refused:
                await action
            assert refused.value.status == 409 and "no eligible server in the pool chat" in refused.value.message
        await client.drain("chat/b1", force=True)
        assert (await client.server("chat/b1"))["state"] == "draining"
        assert (await client.server("notify/b2"))["state"] == "up"


async def test_an_ambiguous_bare_name_is_refused_naming_the_candidates(
    tmp_path: Path, start_engine: EngineFactory, echo_backends: Backends, wsproxy_cli: Any
) -> None:
    """n1 in two pools: `drain n1` is a 400 listing chat/n1 and notify/n1; `drain chat/n1` works from the CLI."""
    backends = await echo_backends(4)
    text = '[[listener]]\naddress = "127.0.0.1:0"\ndefault_pool = "chat"\n'
    text += pool_table("chat", backends[:2], names=["n1", "n2"]) + pool_table(
        "notify", backends[2:], names=["n1", "n2"]
    )
    (tmp_path / "p.toml").write_text(text)
    engine = await start_engine("-c", str(tmp_path / "p.toml"), listen=None)
    async with engine.client() as client:
        with pytest.raises(ControlError) as refused:
            await client.drain("n1")
    assert refused.value.status == 400 and "chat/n1, notify/n1" in refused.value.message
    result = await wsproxy_cli("drain", "n1", "--control", engine.control)
    assert result.code == 1 and "chat/n1, notify/n1" in result.err
    result = await wsproxy_cli("drain", "notify/n1", "--control", engine.control)
    assert result.code == 0, result.err
    async with engine.client() as client:
        assert (await client.server("notify/n1"))["state"] == "draining"
        assert (await client.server("chat/n1"))["state"] == "up"


async def test_one_pool_table_serves_like_the_single_pool(
    tmp_path: Path, start_engine: EngineFactory, echo_backends: Backends
) -> None:
    """A file with one `[[pool]]` proxies to its servers under their bare names, the pool keeping its name."""
    backends = await echo_backends(2)
    path = tmp_path / "one.toml"
    path.write_text(pool_table("chat", backends, 'balance = "round_robin"\n'))
    engine = await start_engine("-c", str(path))
    for _ in range(4):
        async with connect(f"ws://127.0.0.1:{engine.port}/ws", open_timeout=unit(5)) as ws:
            await ws.send("hello")
            assert await ws.recv() == "hello"
    assert sorted(b.accepted for b in backends) == [2, 2]
    async with engine.client() as client:
        status = await client.status()
    assert [s["name"] for s in status["servers"]] == ["b1", "b2"]
    assert [(p["name"], p["servers"], p["total"]) for p in status["pools"]] == [("chat", 2, 4)]
    assert status["routes"] == []


async def test_the_flags_pool_is_named_default(start_engine: EngineFactory, echo_backends: Backends) -> None:
    """`--backend` servers form one pool named default, answered with bare names and no routes."""
    (b1,) = await echo_backends(1)
    engine = await start_engine("--backend", b1.flag)
    async with engine.client() as client:
        status = await client.status()
    assert [(p["name"], p["default_for"]) for p in status["pools"]] == [("default", [engine.listen])]
    assert [(s["name"], s["pool"]) for s in status["servers"]] == [("b1", "default")]


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ('[[pool]]\nname = "a"\n[[pool.server]]\naddress = "127.0.0.1:8001"\n' * 2, "pool names must be unique"),
        (
            '[[pool]]\nname = "a"\n[[pool.server]]\naddress = "127.0.0.1:8001"\n[[route]]\nhost = "x"\npool = "b"\n',
            "route[0].pool: invalid value 'b'",
        ),
    ],
)
async def test_bad_pool_files_exit_2_with_message(tmp_path: Path, wsproxy_cli: Any, text: str, fragment: str) -> None:
    """A duplicate pool or a route to a missing pool: exit 2 naming what is wrong."""
    path = tmp_path / "bad.toml"
    path.write_text('listen = "127.0.0.1:0"\n' + text)
    result = await wsproxy_cli("serve", "-c", str(path))
    assert result.code == 2
    assert fragment in result.err


async def test_backend_flag_with_several_pools_exits_2(tmp_path: Path, wsproxy_cli: Any) -> None:
    """--backend cannot say which of several pools it means: exit 2 naming the flag."""
    path = tmp_path / "two.toml"
    path.write_text(
        '[[pool]]\nname = "a"\n[[pool.server]]\naddress = "127.0.0.1:8001"\n'
        '[[pool]]\nname = "b"\n[[pool.server]]\naddress = "127.0.0.1:8002"\n'
    )
    result = await wsproxy_cli("serve", "-c", str(path), "--backend", "127.0.0.1:8003")
    assert result.code == 2 and "--backend" in result.err
