"""`wsproxy serve --workers 2` as real processes: spread, drain/weight/remove everywhere, restart, SIGTERM."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import InvalidHandshake

from tests.conftest import EchoBackend, EngineProc, unit, wait_until

Backends = Callable[[int], Awaitable[list[EchoBackend]]]
Start = Callable[..., Awaitable[EngineProc]]
HELD = 24  # enough that both workers get some: P(all on one) = 2 * 2**-24


@pytest.fixture
async def workers(start_engine: Start, echo_backends: Backends) -> tuple[EngineProc, list[EchoBackend]]:
    """A 2-worker engine in front of echo backends b1 and b2."""
    backends = await echo_backends(2)
    engine = await start_engine("--workers", "2", "--shutdown-grace", "1", *(f"--backend={b.flag}" for b in backends))
    return engine, backends


@contextlib.asynccontextmanager
async def held(engine: EngineProc, n: int) -> AsyncIterator[list[ClientConnection]]:
    """`n` open WebSockets through the engine, each checked with one echo; closed on exit."""
    sockets = await asyncio.gather(*(open_ws(engine) for _ in range(n)))
    try:
        yield list(sockets)
    finally:
        for ws in sockets:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(ws.close(), unit(2.0))


async def open_ws(engine: EngineProc) -> ClientConnection:
    ws = await asyncio.wait_for(connect(f"ws://127.0.0.1:{engine.port}/"), unit(5.0))
    await echo(ws)
    return ws


async def echo(ws: ClientConnection) -> None:
    await ws.send("ping")
    assert await asyncio.wait_for(ws.recv(), unit(5.0)) == "ping"


async def status(engine: EngineProc) -> dict[str, Any]:
    async with engine.client() as client:
        result: dict[str, Any] = await client.status()
        return result


async def settled(engine: EngineProc, active: int) -> dict[str, Any]:
    """The status once the workers' reports show `active` connections."""

    async def check() -> dict[str, Any] | None:
        data = await status(engine)
        return data if data["totals"]["active"] == active else None

    result: dict[str, Any] = await wait_until(check, timeout=5.0, what=f"{active} active connections")
    return result


def server(data: dict[str, Any], name: str) -> dict[str, Any]:
    return next(s for s in data["servers"] if s["name"] == name)


async def events_of(engine: EngineProc, action: str) -> list[dict[str, Any]]:
    async with engine.client() as client:
        events = (await client.events(0))["events"]
    return [e for e in events if e["type"] == "operator" and e["action"] == action]


async def test_connections_spread_over_workers_and_status_sums(workers: tuple[EngineProc, list[EchoBackend]]) -> None:
    engine, _ = workers
    async with held(engine, HELD) as sockets:
        data = await settled(engine, HELD)
        pool = data["engine"]["workers"]
        assert len(pool) == 2 and len({w["pid"] for w in pool}) == 2 and engine.pid not in {w["pid"] for w in pool}
        assert all(w["active"] > 0 for w in pool), pool
        totals = data["totals"]
        assert sum(w["active"] for w in pool) == totals["active"] == HELD
        assert sum(w["total"] for w in pool) == totals["total"]
        for key in ("active", "total", "bytes_in", "bytes_out", "handshakes"):
            assert sum(s[key] for s in data["servers"]) == totals[key], key
        assert data["listeners"][0]["active"] == HELD
        # The detail lists every open connection, ids unique engine-wide, from both workers; close one by id.
        async with engine.client() as client:

            async def listed() -> list[dict[str, Any]] | None:
                conns = (await client.server("b1"))["connections"]
                return conns if len(conns) == server(data, "b1")["active"] else None

            conns = await wait_until(listed, timeout=5.0, what="b1's connections in the detail")
            assert len({c["id"] for c in conns}) == len(conns)
            await client.close_connection(conns[0]["id"])
        await settled(engine, HELD - 1)
        assert sum(1 for ws in sockets if ws.close_code is not None or ws.state.name != "OPEN") <= 1


async def test_drain_reaches_every_worker(workers: tuple[EngineProc, list[EchoBackend]]) -> None:
    engine, (b1, b2) = workers
    async with held(engine, HELD) as sockets:
        data = await settled(engine, HELD)
        on_b1 = server(data, "b1")["active"]
        assert on_b1 > 0
        async with engine.client() as client:
            await client.drain("b1")
        accepted = b1.accepted
        async with held(engine, HELD):  # through both workers: none of them picks b1 any more
            assert b1.accepted == accepted
            for ws in sockets:
                await echo(ws)  # the held ones keep working
        async with engine.client() as client:
            await client.drain("b1", deadline_s=0.2)
        await wait_until(lambda: not b1.connections, timeout=8.0, what="b1's connections closed at the deadline")
        after = await settled(engine, HELD - on_b1)
        assert server(after, "b1")["active"] == 0 and server(after, "b2")["active"] == HELD - on_b1
        await wait_until(lambda: events_of(engine, "drained"), timeout=3.0, what="the drained event")
        assert b2.accepted >= HELD


async def test_weight_and_remove_apply_in_every_worker(workers: tuple[EngineProc, list[EchoBackend]]) -> None:
    engine, (b1, b2) = workers
    async with engine.client() as client:
        await client.set_weight("b1", 0)
    async with held(engine, HELD):
        assert b1.accepted == 0 and b2.accepted == HELD
    async with engine.client() as client:
        await client.set_weight("b1", 1)
    async with held(engine, HELD) as sockets:
        await wait_until(lambda: b1.connections and b2.connections, timeout=5.0, what="both backends used")
        async with engine.client() as client:
            await client.remove("b2", force=True)
        await wait_until(lambda: not b2.connections, timeout=5.0, what="b2's connections closed by the removal")
        accepted = b2.accepted
        async with held(engine, HELD):
            assert b2.accepted == accepted
        assert any(ws.close_code is None for ws in sockets)


async def test_killed_worker_is_restarted_and_traffic_flows(workers: tuple[EngineProc, list[EchoBackend]]) -> None:
    engine, _ = workers
    async with held(engine, HELD) as sockets:
        data = await settled(engine, HELD)
        before = [w["pid"] for w in data["engine"]["workers"]]
        total_before = data["totals"]["total"]
        os.kill(before[0], signal.SIGKILL)
        served = 0
        loop = asyncio.get_running_loop()
        deadline = loop.time() + unit(10.0)
        new: list[int] = []
        while loop.time() < deadline:  # new connections keep being served while the worker comes back
            # A connection queued in the killed worker's backlog is lost with it (inherent to SO_REUSEPORT).
            with contextlib.suppress(OSError, asyncio.TimeoutError, InvalidHandshake):
                ws = await open_ws(engine)
                served += 1
                await ws.close()
            data = await status(engine)
            new = [w["pid"] for w in data["engine"]["workers"]]
            if new[0] not in (None, before[0]) and served >= 10:
                break
        assert new[0] not in (None, before[0]) and new[1] == before[1], (before, new)
        assert served >= 10
        assert data["engine"]["worker_restarts"] == 1

        async def counted() -> bool:  # the dead worker's counts are kept; reports lag by up to 250 ms
            return bool((await status(engine))["totals"]["total"] >= total_before + served)

        await wait_until(counted, timeout=3.0, what="totals counting every connection")
        restarted = await wait_until(lambda: events_of(engine, "worker-restarted"), timeout=3.0, what="the event")
        assert str(before[0]) in restarted[0]["detail"] and "SIGKILL" in restarted[0]["detail"]
        survivors = [ws for ws in sockets if ws.close_code is None]
        assert survivors
        for ws in survivors[:3]:
            with contextlib.suppress(Exception):  # the killed worker's ones may still be noticing
                await echo(ws)


async def test_sigterm_drains_every_worker_and_exits_0(workers: tuple[EngineProc, list[EchoBackend]]) -> None:
    engine, _ = workers
    async with held(engine, HELD) as sockets:
        data = await settled(engine, HELD)
        pids = [w["pid"] for w in data["engine"]["workers"]]
        engine.proc.send_signal(signal.SIGTERM)
        assert await engine.wait_exit(timeout=8.0) == 0
        for ws in sockets:
            await asyncio.wait_for(ws.wait_closed(), unit(2.0))
        assert all(ws.close_code is not None for ws in sockets)
    for pid in pids:
        await wait_until(lambda pid=pid: not _alive(pid), timeout=3.0, what=f"worker {pid} gone")
    with pytest.raises(OSError):
        await asyncio.wait_for(asyncio.open_connection("127.0.0.1", engine.port), unit(2.0))
    assert any("wsproxy stopped" in line for line in engine.stdout_lines)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with contextlib.suppress(OSError), open(f"/proc/{pid}/stat") as stat:
        return stat.read().split(") ")[-1][0] != "Z"
    return False


@pytest.mark.parametrize("value", ["0", "x", "257"])
async def test_bad_workers_value_exits_2(value: str, wsproxy_cli: Any) -> None:
    result = await wsproxy_cli("serve", "--backend", "127.0.0.1:9", "--workers", value)
    assert result.code == 2 and "--workers" in result.err


async def test_head_deadline_enforced_in_every_worker(
    start_engine: Start, echo_backends: Backends, tmp_path: Any
) -> None:
    """Slowloris clients spread over both workers are closed at the head deadline, whichever worker has them."""
    (b1,) = await echo_backends(1)
    config = tmp_path / "short-head.toml"
    config.write_text("[timeouts]\nhead = 0.5\n")
    engine = await start_engine("-c", str(config), "--workers", "2", "--backend", b1.flag)
    loop = asyncio.get_running_loop()
    started = loop.time()
    pairs = [await asyncio.open_connection("127.0.0.1", engine.port) for _ in range(HELD)]
    for _, writer in pairs:
        writer.write(b"GET /slow HTTP/1.1\r\nHost: a\r\n")  # never finished
    try:
        for reader, _ in pairs:
            assert await asyncio.wait_for(reader.read(), unit(3.0)) == b""
        assert loop.time() - started >= 0.45
    finally:
        for _, writer in pairs:
            writer.close()

    async def none_active() -> bool:
        async with engine.client() as client:
            return bool((await client.status())["totals"]["active"] == 0)

    await wait_until(none_active, what="every worker to report no active connection")


async def test_workers_share_one_access_log_in_whole_lines(
    start_engine: Start, echo_backends: Backends, tmp_path: Any
) -> None:
    """Both workers append to the same access log: every line is one whole JSON record, none lost."""
    (b1,) = await echo_backends(1)
    log = tmp_path / "access.jsonl"
    engine = await start_engine("--workers", "2", "--backend", b1.flag, "--access-log", str(log))
    async with held(engine, HELD):
        pass

    def records() -> list[dict[str, Any]] | None:
        lines = log.read_text().splitlines() if log.exists() else []
        return [json.loads(line) for line in lines] if len(lines) >= HELD else None

    found = await wait_until(records, what=f"{HELD} access log lines")
    assert len(found) == HELD and {r["type"] for r in found} == {"close"}
    assert len({r["conn"] for r in found}) == HELD  # ids are unique across workers


async def test_unopenable_access_log_exits_2_naming_it(wsproxy_cli: Any, tmp_path: Any) -> None:
    for workers in ("1", "2"):
        path = tmp_path / "no-such-dir" / "access.jsonl"
        result = await wsproxy_cli(
            "serve", "--listen", "127.0.0.1:0", "--backend", "127.0.0.1:9", "--workers", workers,
            "--access-log", str(path), "--control", str(tmp_path / f"w{workers}.sock"),
        )  # fmt: skip
        assert result.code == 2 and "access_log" in result.err and str(path) in result.err, result.err
