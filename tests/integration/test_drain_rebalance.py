"""Drain by client and rebalance against a real engine: keep-alive HTTP peers, WebSocket-style upgrades, and
clients each from their own loopback address."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from proxy_core.balancer import IpHash
from tests.conftest import CliResult, EngineFactory, EngineProc, unit, wait_until
from tests.integration.tcp_peers import TcpServer

HEAD_END = b"\r\n\r\n"
UPGRADE = (
    b"GET /ws HTTP/1.1\r\nHost: app\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
)


def http_node(tag: str) -> Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]:
    """A keep-alive HTTP node: `/fast` answers with its tag, `/hang` never answers, an upgrade gets 101 then echo."""

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            head = await reader.readuntil(HEAD_END)
            if b"upgrade: websocket" in head.lower():
                writer.write(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n")
                writer.write(f"X-Node: {tag}\r\n\r\n".encode())
                await writer.drain()
                while data := await reader.read(65536):
                    writer.write(data)
                    await writer.drain()
                return
            if b" /hang " in head:
                await asyncio.Event().wait()
            writer.write(f"HTTP/1.1 200 OK\r\nContent-Length: {len(tag)}\r\n\r\n{tag}".encode())
            await writer.drain()

    return handler


@dataclass(eq=False)
class Peer:
    """One client connection through the proxy, from its own source address, and when it saw EOF."""

    ip: str
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    node: str = ""
    closed_at: float | None = None
    watcher: asyncio.Task[None] | None = field(default=None, repr=False)

    async def _watch(self) -> None:
        with contextlib.suppress(ConnectionError):
            while await self.reader.read(65536):
                pass
        self.closed_at = time.monotonic()

    def watch(self) -> None:
        self.watcher = asyncio.create_task(self._watch())

    async def closed(self, timeout: float) -> float:
        assert self.watcher is not None
        await asyncio.wait_for(asyncio.shield(self.watcher), unit(timeout))
        assert self.closed_at is not None
        return self.closed_at

    async def still_open_after(self, seconds: float) -> bool:
        assert self.watcher is not None
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(self.watcher), seconds)
        return self.closed_at is None


async def connect(port: int, ip: str, request: bytes) -> Peer:
    reader, writer = await asyncio.open_connection("127.0.0.1", port, local_addr=(ip, 0))
    writer.write(request)
    await writer.drain()
    return Peer(ip, reader, writer)


async def fast(port: int, ip: str) -> Peer:
    """A keep-alive connection that made one request and got its answer: idle in the client's pool."""
    peer = await connect(port, ip, b"GET /fast HTTP/1.1\r\nHost: app\r\n\r\n")
    head = await asyncio.wait_for(peer.reader.readuntil(HEAD_END), unit(5))
    length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
    peer.node = (await peer.reader.readexactly(length)).decode()
    peer.watch()
    return peer


async def hang(port: int, ip: str) -> Peer:
    """A connection with a request pending (a long-poll)."""
    peer = await connect(port, ip, b"GET /hang HTTP/1.1\r\nHost: app\r\n\r\n")
    peer.watch()
    return peer


async def upgraded(port: int, ip: str, request: bytes = UPGRADE) -> Peer:
    """A WebSocket-style upgraded connection (101, then bytes both ways)."""
    peer = await connect(port, ip, request)
    head = await asyncio.wait_for(peer.reader.readuntil(HEAD_END), unit(5))
    peer.node = head.split(b"X-Node: ")[1].split(b"\r\n")[0].decode()
    peer.watch()
    return peer


def placements(names: list[str], ips: list[str]) -> dict[str, str]:
    """Where the engine's ip_hash ring (the same code) puts each client among `names` (weight 1 each)."""

    @dataclass
    class Srv:
        name: str
        weight: int = 1
        active: int = 0

    ring, servers = IpHash(), [Srv(n) for n in names]
    return {ip: ring.pick(servers, ip).name for ip in ips}  # type: ignore[union-attr]


IPS = [f"127.0.0.{i}" for i in range(2, 62)]


@pytest.fixture
async def nodes() -> AsyncIterator[Callable[[int], Awaitable[list[TcpServer]]]]:
    made: list[TcpServer] = []

    async def make(n: int) -> list[TcpServer]:
        for i in range(n):
            made.append(await TcpServer(http_node(f"b{i + 1}"), f"b{i + 1}").start())
        return made[-n:]

    yield make
    for server in made:
        await server.stop()


async def engine_with(start_engine: EngineFactory, tmp_path: Path, servers: list[TcpServer], toml: str) -> EngineProc:
    config = tmp_path / "wsproxy.toml"
    config.write_text(toml, encoding="utf-8")
    flags = [x for s in servers for x in ("--backend", s.flag)]
    return await start_engine("-c", str(config), "--balance", "ip_hash", "--check", "none", *flags)


async def test_draining_closes_idle_keepalive_http_but_not_pending_or_websocket(
    start_engine: EngineFactory, tmp_path: Path, nodes: Callable[[int], Awaitable[list[TcpServer]]]
) -> None:
    """Once b1 drains: an idle keep-alive HTTP connection closes; a pending request, a client with a pending one,
    and an upgraded connection stay until the deadline, where each client's connections close together."""
    servers = await nodes(2)
    engine = await engine_with(start_engine, tmp_path, servers, "[timeouts]\ndrain_spread = 1.0\n")
    on_b1 = [ip for ip, node in placements(["b1", "b2"], IPS).items() if node == "b1"]
    idle_ip, pending_ip, mixed_ip, ws_ip = on_b1[:4]
    idle = await fast(engine.port, idle_ip)
    pending = await hang(engine.port, pending_ip)
    mixed_idle, mixed_pending = await fast(engine.port, mixed_ip), await hang(engine.port, mixed_ip)
    ws, ws_pool = await upgraded(engine.port, ws_ip), await fast(engine.port, ws_ip)
    assert {idle.node, mixed_idle.node, ws.node, ws_pool.node} == {"b1"}
    await wait_until(lambda: servers[0].open == 6, unit(5), "six connections open on b1")

    async with engine.client() as client:
        await client.drain("b1", deadline_s=unit(3.0))
    drained_at = time.monotonic()
    # The idle keep-alive connections go within the quiet period (0.3 s) plus a sweep, long before the deadline.
    assert await idle.closed(2.0) - drained_at < unit(1.5)
    assert await ws_pool.closed(2.0) - drained_at < unit(1.5)
    # A pending request, a client with a pending request, and the upgraded connection are left to the deadline.
    for peer in (pending, mixed_idle, mixed_pending, ws):
        assert await peer.still_open_after(0.3), f"{peer.ip} closed before the deadline"
    times = {p: await p.closed(unit(3.0) + 3.0) for p in (pending, mixed_idle, mixed_pending, ws)}
    assert min(times.values()) - drained_at >= unit(3.0) - 0.2
    # The two connections of mixed_ip were closed in the same instant.
    assert abs(times[mixed_idle] - times[mixed_pending]) < 0.05
    for peer in (idle, pending, mixed_idle, mixed_pending, ws, ws_pool):
        peer.writer.close()


async def test_rebalance_moves_the_clients_the_ring_gives_the_returned_server(
    start_engine: EngineFactory,
    tmp_path: Path,
    nodes: Callable[[int], Awaitable[list[TcpServer]]],
    wsproxy_cli: Callable[..., Awaitable[CliResult]],
) -> None:
    """b3 disabled while 60 clients connect, then enabled: a rebalance closes exactly the clients the ring now puts
    on b3 (each client's two connections at once), at the rate asked, and they reconnect to b3."""
    servers = await nodes(3)
    engine = await engine_with(start_engine, tmp_path, servers, "[rebalance]\nmin_age_s = 0.2\n")
    async with engine.client() as client:
        await client.disable("b3")
        peers = {ip: [await upgraded(engine.port, ip), await upgraded(engine.port, ip)] for ip in IPS}
        await client.enable("b3")
        want = placements(["b1", "b2", "b3"], IPS)
        movers = {ip for ip, node in want.items() if node == "b3"}
        assert 8 <= len(movers) <= 35
        await asyncio.sleep(0.3)  # past min_age_s (0.2 s), so every client is old enough to move

        preview = await wsproxy_cli("rebalance", "--dry-run", "--control", engine.control)
        assert preview.code == 0, preview.err
        assert f"would move {len(movers)} client(s), {2 * len(movers)} connection(s)" in preview.out
        assert "b3 33%" in preview.out

        started = time.monotonic()
        wait = ("--wait", "--timeout", "30")
        result = await wsproxy_cli("rebalance", "--rate", "20", *wait, "--control", engine.control, timeout=40)
        took = time.monotonic() - started
        assert result.code == 0, result.out + result.err
        assert "balanced: every client is where the balancer places it" in result.out

    closed = {ip for ip, pair in peers.items() for p in pair if p.closed_at is not None}
    assert closed == movers
    for ip in movers:  # a client's two connections at the same instant
        a, b = peers[ip]
        assert a.closed_at is not None and b.closed_at is not None and abs(a.closed_at - b.closed_at) < 0.05
    assert took >= (len(movers) - 1) / 20 - 0.1  # at most 20 clients a second
    for ip in sorted(movers)[:5]:  # they come back where the hash places them
        again = await upgraded(engine.port, ip)
        assert again.node == "b3"
        again.writer.close()
    async with engine.client() as client:
        state = (await client.rebalance_status())["rebalance"]
        assert state["state"] == "done" and state["moved_clients"] == len(movers) and state["left_clients"] == 0
        events = [e for e in (await client.events(0))["events"] if e["type"] == "operator"]
        assert [e["action"] for e in events if e["action"].startswith("rebalance")] == ["rebalance", "rebalance-done"]
    for pair in peers.values():
        for peer in pair:
            peer.writer.close()


async def test_previews_say_what_moves_and_refuse_like_the_real_action(
    start_engine: EngineFactory,
    tmp_path: Path,
    nodes: Callable[[int], Awaitable[list[TcpServer]]],
    wsproxy_cli: Callable[..., Awaitable[CliResult]],
) -> None:
    """`--dry-run` of drain, disable, remove and weight counts connections and distinct clients, gives the shares
    after, changes nothing, and refuses what the real action would refuse."""
    servers = await nodes(2)
    engine = await engine_with(start_engine, tmp_path, servers, "")
    on_b1 = [ip for ip, node in placements(["b1", "b2"], IPS).items() if node == "b1"][:3]
    peers = [await upgraded(engine.port, ip) for ip in on_b1] + [await fast(engine.port, on_b1[0])]
    await wait_until(lambda: servers[0].open == 4, unit(5), "four connections on b1")
    ctl = ("--control", engine.control)
    refused = await wsproxy_cli("remove", "b1", "--dry-run", *ctl)
    assert refused.code == 1 and "b1 has 4 live connection(s); drain it first" in refused.err
    for action, *extra in (("drain",), ("disable",), ("remove", "--force")):
        result = await wsproxy_cli(action, "b1", "--dry-run", *extra, *ctl)
        assert result.code == 0, result.err
        assert f"dry run (nothing changed): {action} b1 moves 4 live connection(s) of 3 client(s)" in result.out
        shares = "after: b2 100%" if action == "remove" else "after: b1 0%, b2 100%"
        assert shares in result.out
    result = await wsproxy_cli("weight", "b1", "3", "--dry-run", *ctl)
    assert result.code == 0 and "b1 75%, b2 25%" in result.out and "moves 0 live connection(s)" in result.out
    async with engine.client() as client:
        status = await client.status()
        assert [s["state"] for s in status["servers"]] == ["up", "up"] and status["servers"][0]["weight"] == 1
        await client.disable("b2")
        with pytest.raises(Exception, match="would leave no eligible server"):
            await client.preview("drain", "b1")
        answer = await client._request(
            "POST", "/v1/servers/b1/drain", body={}, params={"dry_run": "true", "force": "true"}
        )
        assert answer["impact"]["connections"] == 4
        assert (await client.server("b1"))["state"] == "up"
    for peer in peers:
        peer.writer.close()


async def test_workers_close_each_clients_connections_at_one_instant(
    start_engine: EngineFactory, tmp_path: Path, nodes: Callable[[int], Awaitable[list[TcpServer]]]
) -> None:
    """With --workers 2 a client's connections land on both workers; at the drain deadline they still close in the
    same instant, and the clients are spaced over the window (the supervisor gives every worker the same offsets)."""
    servers = await nodes(2)
    config = tmp_path / "wsproxy.toml"
    config.write_text("[timeouts]\ndrain_spread = 1.5\n", encoding="utf-8")
    flags = [x for s in servers for x in ("--backend", s.flag)]
    engine = await start_engine("-c", str(config), "--balance", "ip_hash", "--check", "none", "--workers", "2", *flags)
    on_b1 = [ip for ip, node in placements(["b1", "b2"], IPS).items() if node == "b1"][:8]
    # Two clients with four connections each (on both workers) and six with one (on one worker only), so the
    # workers hold different sets of clients.
    peers = {ip: [await upgraded(engine.port, ip) for _ in range(4 if i < 2 else 1)] for i, ip in enumerate(on_b1)}
    await wait_until(lambda: servers[0].open == 14, unit(5), "14 connections open on b1")
    async with engine.client() as client:
        status = await client.status()
        assert len(status["engine"]["workers"]) == 2
        await client.drain("b1", deadline_s=0.5)
    closes = {ip: [await p.closed(unit(6)) for p in group] for ip, group in peers.items()}
    for ip, times in closes.items():
        assert max(times) - min(times) < 0.05, f"{ip}: its connections closed {max(times) - min(times):.3f} s apart"
    firsts = sorted(min(times) for times in closes.values())
    gaps = [b - a for a, b in itertools.pairwise(firsts)]
    assert min(gaps) >= 1.5 / 8 * 0.5, f"clients closed too close together: {gaps}"
    for group in peers.values():
        for peer in group:
            peer.writer.close()


async def test_rebalance_with_workers_closes_each_client_on_every_worker(
    start_engine: EngineFactory,
    tmp_path: Path,
    nodes: Callable[[int], Awaitable[list[TcpServer]]],
    wsproxy_cli: Callable[..., Awaitable[CliResult]],
) -> None:
    """With --workers 2 the supervisor plans from the workers' reports: exactly the clients the ring gives the
    returned server are moved, each client's connections (spread over both workers) at one instant."""
    servers = await nodes(3)
    config = tmp_path / "wsproxy.toml"
    config.write_text("[rebalance]\nmin_age_s = 0.2\n", encoding="utf-8")
    flags = [x for s in servers for x in ("--backend", s.flag)]
    engine = await start_engine("-c", str(config), "--balance", "ip_hash", "--check", "none", "--workers", "2", *flags)
    ips = IPS[:30]
    async with engine.client() as client:
        await client.disable("b3")
        peers = {ip: [await upgraded(engine.port, ip) for _ in range(3)] for ip in ips}
        await client.enable("b3")
    movers = {ip for ip, node in placements(["b1", "b2", "b3"], ips).items() if node == "b3"}
    assert movers
    await asyncio.sleep(0.3)  # past min_age_s
    wait = ("--wait", "--timeout", "30")
    result = await wsproxy_cli("rebalance", "--rate", "50", *wait, "--control", engine.control, timeout=40)
    assert result.code == 0, result.out + result.err
    for ip in movers:
        times = [await p.closed(unit(5)) for p in peers[ip]]
        assert max(times) - min(times) < 0.05, f"{ip}: its connections closed {max(times) - min(times):.3f} s apart"
    stayed = [p for ip, group in peers.items() if ip not in movers for p in group]
    assert all(p.closed_at is None for p in stayed)
    for group in peers.values():
        for peer in group:
            peer.writer.close()


async def test_auto_rebalance_once_the_fleet_is_quiet(
    start_engine: EngineFactory, tmp_path: Path, nodes: Callable[[int], Awaitable[list[TcpServer]]]
) -> None:
    """`[rebalance] auto`: a server that comes back starts one rebalance by itself after auto_delay_s of quiet."""
    servers = await nodes(3)
    toml = "[rebalance]\nauto = true\nauto_delay_s = 0.5\nmin_age_s = 0.2\n"
    engine = await engine_with(start_engine, tmp_path, servers, toml)
    ips = IPS[:30]
    async with engine.client() as client:
        await client.disable("b3")
        peers = {ip: await upgraded(engine.port, ip) for ip in ips}
        await client.enable("b3")
        movers = {ip for ip, node in placements(["b1", "b2", "b3"], ips).items() if node == "b3"}

        async def done() -> bool:
            state = (await client.rebalance_status())["rebalance"]
            return state is not None and state["state"] == "done"

        deadline = time.monotonic() + unit(15)
        while not await done():
            assert time.monotonic() < deadline, "no automatic rebalance finished"
            await asyncio.sleep(0.1)
        state = (await client.rebalance_status())["rebalance"]
        assert state["moved_clients"] == len(movers) and state["left_clients"] == 0
    assert {ip for ip, peer in peers.items() if peer.closed_at is not None} == movers
    for peer in peers.values():
        peer.writer.close()


FEED_UPGRADE = UPGRADE.replace(  # the route `/feed` sends it to the feed pool
    b"GET /ws ", b"GET /feed/ws "
)


async def test_rebalance_works_in_every_pool_and_leaves_a_balanced_one_alone(
    start_engine: EngineFactory, tmp_path: Path, nodes: Callable[[int], Awaitable[list[TcpServer]]]
) -> None:
    """Two pools behind one listener: feed/f3 comes back after its clients connected; a rebalance moves feed's
    clients onto it (they reconnect there) and closes nobody in chat, whose servers never changed."""
    b1, b2, b3, b4, b5 = await nodes(5)

    def servers(*pairs: tuple[str, TcpServer]) -> str:
        return "".join(f'[[pool.server]]\nname = "{n}"\naddress = "127.0.0.1:{s.port}"\n' for n, s in pairs)

    config = tmp_path / "pools.toml"
    config.write_text(
        '[[listener]]\naddress = "127.0.0.1:0"\ndefault_pool = "chat"\n[rebalance]\nmin_age_s = 0.2\n'
        '[[pool]]\nname = "chat"\nbalance = "ip_hash"\n[pool.check]\ntype = "none"\n'
        + servers(("n1", b1), ("n2", b2))
        + '[[pool]]\nname = "feed"\nbalance = "ip_hash"\n[pool.check]\ntype = "none"\n'
        + servers(("f1", b3), ("f2", b4), ("f3", b5))
        + '[[route]]\npath_prefix = "/feed"\npool = "feed"\n',
        encoding="utf-8",
    )
    engine = await start_engine("-c", str(config), listen=None)
    ips = IPS[:40]
    async with engine.client() as client:
        await client.disable("feed/f3")
        chat = {ip: await upgraded(engine.port, ip) for ip in ips}
        feed = {ip: await upgraded(engine.port, ip, FEED_UPGRADE) for ip in ips}
        assert {p.node for p in chat.values()} == {"b1", "b2"} and {p.node for p in feed.values()} == {"b3", "b4"}
        await client.enable("feed/f3")
        await asyncio.sleep(0.3)  # past min_age_s (0.2 s), so every client is old enough to move
        preview = await client.rebalance(dry_run=True)
        share = preview["impact"]["share_after"]  # of each server's own pool
        assert share["chat/n1"] == share["chat/n2"] == 0.5 and share["feed/f3"] == pytest.approx(1 / 3, abs=0.001)
        assert {(m["from"].split("/")[0], m["to"]) for m in preview["plan"]["moves"]} == {("feed", "feed/f3")}
        await client.rebalance(rate=100)

        async def done() -> dict[str, object] | None:
            state = (await client.rebalance_status())["rebalance"]
            return state if state and state["state"] != "running" else None

        state = await wait_until(done, 20, what="the rebalance to finish")
    assert state["state"] == "done", state
    moved = {ip for ip, peer in feed.items() if peer.closed_at is not None}
    assert moved and state["moved_clients"] == len(moved), state
    assert not [ip for ip, peer in chat.items() if peer.closed_at is not None], "a chat client was moved"
    for ip in sorted(moved)[:3]:  # back where the feed pool's ring places it now: the returned server
        again = await upgraded(engine.port, ip, FEED_UPGRADE)
        assert again.node == "b5"
        again.writer.close()
    for peer in (*chat.values(), *feed.values()):
        peer.writer.close()
