"""A fleet of three real engine processes sharing one admin state through a real redis-server."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
from pathlib import Path
from typing import Any

from websockets.asyncio.client import connect

from tests.cluster.conftest import Fleet, RedisProc, fleet_flags
from tests.conftest import EngineFactory, EngineProc, run_cli, unit, wait_until

GONE_S = 3.0 + 1.5  # the live view's TTL plus a heartbeat and slack


async def server_of(engine: EngineProc, name: str) -> dict[str, Any] | None:
    async with engine.client() as client:
        for server in (await client.status())["servers"]:
            if server["name"] == name:
                return dict(server)
    return None


async def all_have(engines: list[EngineProc], name: str, **want: Any) -> bool:
    for engine in engines:
        server = await server_of(engine, name)
        if server is None or any(server.get(k) != v for k, v in want.items()):
            return False
    return True


async def pools(engines: list[EngineProc]) -> list[dict[str, tuple[str, int, str]]]:
    result = []
    for engine in engines:
        async with engine.client() as client:
            servers = (await client.status())["servers"]
        result.append({s["name"]: (s["address"], s["weight"], s["admin"]) for s in servers})
    return result


async def test_drain_through_one_instance_stops_new_connections_on_all_three(
    start_fleet: Fleet, echo_backends: Any
) -> None:
    """A drain through n1 is in force on n1, n2 and n3 within a second: new connections go to the other server."""
    b1, b2 = await echo_backends(2)
    engines = await start_fleet([b1, b2])
    started = time.monotonic()
    result = await run_cli("drain", "b1", "--control", engines[0].control)
    assert result.code == 0, result.err
    await wait_until(lambda: all_have(engines, "b1", admin="draining"), 1.0, what="b1 draining on all three")
    assert time.monotonic() - started < unit(1.0) + 1.0  # the CLI's own start-up is in this figure
    before = b1.accepted
    for engine in engines:
        for _ in range(2):
            async with connect(f"ws://127.0.0.1:{engine.port}/") as ws:
                await ws.send("hi")
                assert await ws.recv() == "hi"
    assert b1.accepted == before


async def test_drain_wait_sums_the_fleet_and_names_the_holders(start_fleet: Fleet, echo_backends: Any) -> None:
    """`drain --wait` through n1 waits for connections held on n2 and n3, names them, and exits 0 at zero."""
    (b1,) = await echo_backends(1)
    engines = await start_fleet([b1])
    clients = [await connect(f"ws://127.0.0.1:{e.port}/") for e in engines[1:]]
    try:
        await wait_until(lambda: _fleet_active(engines[0], "b1", 2), 3.0, what="both connections in the live views")
        proc = await asyncio.create_subprocess_exec(
            *_cli("drain", "b1", "--force", "--wait", "--timeout", "20", "--control", engines[0].control),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        assert proc.stdout is not None
        line = await _line_with(proc.stdout, "in the fleet")
        assert "n2 1" in line and "n3 1" in line and "2 connection(s)" in line
        await clients[0].close()
        line = await _line_with(proc.stdout, "in the fleet")
        assert "n3 1" in line and "n2" not in line
        await clients[1].close()
        await _line_with(proc.stdout, "drained on every live instance")
        assert await asyncio.wait_for(proc.wait(), unit(5.0)) == 0
    finally:
        for ws in clients:
            await ws.close()


async def test_add_and_weight_reach_all_three_and_survive_sigkill_of_an_instance_and_of_redis(
    start_fleet: Fleet, start_engine: EngineFactory, echo_backends: Any, redis_server: RedisProc
) -> None:
    """An add and a weight change reach all three; they survive SIGKILL of n3 (restarted, catching up on a change
    it missed before it accepts) and SIGKILL of Redis itself."""
    b1, b2, b3 = await echo_backends(3)
    engines = await start_fleet([b1, b2])
    assert (await run_cli("add", "b3", b3.address, "--control", engines[0].control)).code == 0
    result = await run_cli("weight", "b1", "7", "--wait-applied", "--control", engines[1].control)
    assert result.code == 0, result.err
    assert await all_have(engines, "b1", weight=7) and await all_have(engines, "b3")

    engines[2].proc.kill()
    await engines[2].wait_exit()
    assert (await run_cli("weight", "b2", "3", "--control", engines[0].control)).code == 0  # missed by n3
    flags = [a for b in (b1, b2) for a in ("--backend", b.flag)]
    n3 = await start_engine(*flags, *fleet_flags(redis_server, "n3"), control=engines[2].control)
    engines[2] = n3
    assert (await server_of(n3, "b2") or {}).get("weight") == 3  # at its first answer: caught up before serving

    await redis_server.stop(signal.SIGKILL)
    await redis_server.start()
    await wait_until(lambda: _fleet_ok(engines[0]), 10.0, what="n1 reconnected to redis")
    result = await run_cli("weight", "b3", "2", "--wait-applied", "--control", engines[2].control)
    assert result.code == 0, result.err
    states = await pools(engines)
    assert states[0] == states[1] == states[2]
    assert states[0]["b1"][1] == 7 and states[0]["b2"][1] == 3 and states[0]["b3"][1] == 2


async def test_redis_stopped_and_restarted_mid_run_loses_no_byte_refuses_then_takes_changes(
    start_fleet: Fleet, echo_backends: Any, redis_server: RedisProc
) -> None:
    """With traffic flowing, Redis stops: not a byte lost, fleet changes refused naming the store, --local works;
    Redis back: every instance replays, and a change reaches all three."""
    b1, b2 = await echo_backends(2)
    engines = await start_fleet([b1, b2])
    sent = received = 0
    stop = asyncio.Event()

    async def traffic() -> None:
        nonlocal sent, received
        async with connect(f"ws://127.0.0.1:{engines[1].port}/") as ws:
            while not stop.is_set():
                payload = "x" * 512
                await ws.send(payload)
                sent += len(payload)
                received += len(await ws.recv())
                await asyncio.sleep(0.005)

    task = asyncio.create_task(traffic())
    try:
        await wait_until(lambda: received > 10_000, 5.0, what="traffic flowing")
        await redis_server.stop()
        result = await run_cli("weight", "b1", "4", "--control", engines[0].control)
        assert result.code == 1
        assert f"fleet store {redis_server.url} is unreachable" in result.err and "--local" in result.err
        result = await run_cli("weight", "b2", "9", "--local", "--control", engines[0].control)
        assert result.code == 0, result.err
        assert (await server_of(engines[0], "b2") or {}).get("weight") == 9
        mark = received
        await wait_until(lambda: received > mark + 10_000, 5.0, what="traffic still flowing without redis")
        await redis_server.start()
        await wait_until(lambda: _fleet_ok(engines[1]), 10.0, what="n2 reconnected")
        result = await run_cli("weight", "b1", "5", "--wait-applied", "--control", engines[2].control)
        assert result.code == 0, result.err
        assert await all_have(engines, "b1", weight=5)
        assert not await all_have(engines, "b1", weight=4)  # the refused change was never made anywhere
    finally:
        stop.set()
        await asyncio.wait_for(task, unit(5.0))
    assert sent == received > 0


async def test_a_killed_instance_shows_gone_within_the_ttl(start_fleet: Fleet, echo_backends: Any) -> None:
    """SIGKILL n3: `wsproxy instances` shows it GONE within the TTL, and status --fleet warns it is left out."""
    (b1,) = await echo_backends(1)
    engines = await start_fleet([b1])
    out = (await run_cli("instances", "--control", engines[0].control)).out
    assert all(f"n{i}" in out for i in (1, 2, 3)) and "GONE" not in out
    engines[2].proc.kill()
    killed = time.monotonic()

    async def gone() -> bool:
        result = await run_cli("instances", "--control", engines[0].control)
        return any(line.startswith("n3") and "GONE" in line for line in result.out.splitlines())

    await wait_until(gone, GONE_S + 2.0, 0.2, "n3 shown gone")
    assert time.monotonic() - killed < unit(GONE_S) + 2.0
    result = await run_cli("status", "--fleet", "--control", engines[1].control)
    assert "instance n3 is gone" in result.out and "left out of the totals" in result.out


async def test_concurrent_changes_from_two_instances_end_in_the_same_state_everywhere(
    start_fleet: Fleet, echo_backends: Any
) -> None:
    """Weight changes fired at n1 and n2 at once, and one name added through both: one state on all three."""
    b1, b2, b3 = await echo_backends(3)
    engines = await start_fleet([b1, b2])
    async with engines[0].client() as c1, engines[1].client() as c2:
        await asyncio.gather(*(c.set_weight("b1", w) for w in range(1, 11) for c in (c1, c2)))
        answers = await asyncio.gather(c1.add("b9", b3.address), c2.add("b9", b3.address), return_exceptions=True)
    assert sum(1 for a in answers if isinstance(a, dict)) >= 1
    await wait_until(lambda: _converged(engines), 5.0, what="one state on all three")
    states = await pools(engines)
    assert "b9" in states[0] and 1 <= states[0]["b1"][1] <= 10


async def test_unreachable_at_start_serves_then_joins_and_the_password_stays_hidden(
    start_engine: EngineFactory, echo_backends: Any, tmp_path: Path
) -> None:
    """Redis down at start: the instance serves, says so loudly, refuses fleet changes; Redis up: it joins. The
    password from --cluster-password-file is in no log line, status or process title."""
    (b1,) = await echo_backends(1)
    secret = "s3cret-pass-word"
    redis = RedisProc(tmp_path, password=secret)
    password_file = tmp_path / "redis.pass"
    password_file.write_text(secret + "\n")
    engine = await start_engine(
        "--backend", b1.flag, *fleet_flags(redis, "solo"), "--cluster-password-file", str(password_file)
    )
    try:
        await engine.wait_line("fleet store .* is unreachable", 5.0, stderr=True)
        async with connect(f"ws://127.0.0.1:{engine.port}/") as ws:
            await ws.send("up")
            assert await ws.recv() == "up"
        result = await run_cli("drain", "b1", "--force", "--control", engine.control)
        assert result.code == 1 and "unreachable" in result.err
        await redis.start()
        await wait_until(lambda: _fleet_ok(engine), 10.0, what="joined once redis is up")
        assert (await run_cli("weight", "b1", "3", "--control", engine.control)).code == 0
        status = (await run_cli("status", "--json", "--control", engine.control)).out
        cmdline = Path(f"/proc/{engine.pid}/cmdline").read_bytes().decode()
        assert secret not in status + engine.output() + cmdline
    finally:
        await engine.stop()
        await redis.stop()


# -- helpers ------------------------------------------------------------------------------------------------


def _cli(*args: str) -> list[str]:
    import sys

    return [sys.executable, "-m", "proxy_core", *args]


async def _line_with(stream: asyncio.StreamReader, text: str) -> str:
    async with asyncio.timeout(unit(10.0)):
        while True:
            line = (await stream.readline()).decode()
            if not line:
                raise AssertionError(f"output ended before a line with {text!r}")
            if text in line:
                return line


async def _fleet_ok(engine: EngineProc) -> bool:
    with contextlib.suppress(Exception):
        async with engine.client() as client:
            cluster = (await client.status()).get("cluster") or {}
            return bool(cluster.get("connected"))
    return False


async def _fleet_active(engine: EngineProc, name: str, count: int) -> bool:
    async with engine.client() as client:
        fleet = await client.fleet()
    return any(s["name"] == name and s["active"] == count for s in fleet["servers"])


async def _converged(engines: list[EngineProc]) -> bool:
    states = await pools(engines)
    return all(s == states[0] for s in states)


async def test_a_drain_deadline_closes_a_client_on_two_instances_at_one_instant(
    start_fleet: Fleet, echo_backends: Any
) -> None:
    """A drain deadline is one fleet-wide instant and each client keeps its hash position in the spread window,
    so a client with connections on n1 and n2 is closed on both at once, whoever else n1 holds."""
    import zlib

    (b1,) = await echo_backends(1)
    engines = await start_fleet([b1], count=2)
    client_ip = "127.0.0.7"
    # Another client placed before ours in hash order: spaced per instance, ours would move 1.5 s on n1.
    other_ip = next(
        f"127.0.0.{i}" for i in range(8, 250) if zlib.crc32(f"127.0.0.{i}".encode()) < zlib.crc32(client_ip.encode())
    )
    ours = [await connect(f"ws://127.0.0.1:{e.port}/", local_addr=(client_ip, 0)) for e in engines]
    other = await connect(f"ws://127.0.0.1:{engines[0].port}/", local_addr=(other_ip, 0))
    try:
        result = await run_cli("drain", "b1", "--force", "--deadline", "1", "--control", engines[1].control)
        assert result.code == 0, result.err

        async def closed_at(ws: Any) -> float:
            await ws.wait_closed()
            return time.monotonic()

        async with asyncio.timeout(unit(10.0)):
            first, second = await asyncio.gather(*(closed_at(ws) for ws in ours))
        assert abs(first - second) < 0.35, f"closed {abs(first - second):.2f} s apart"
    finally:
        for ws in [*ours, other]:
            await ws.close()


async def test_a_local_change_is_this_instance_only_and_shown_as_its_override(
    start_fleet: Fleet, echo_backends: Any
) -> None:
    """`disable b2 --local` on n1 changes n1 only, shows as n1's override on n2, and a fleet change replaces it."""
    b1, b2 = await echo_backends(2)
    engines = await start_fleet([b1, b2], count=2)
    assert (await run_cli("disable", "b2", "--local", "--control", engines[0].control)).code == 0
    assert (await server_of(engines[0], "b2") or {}).get("admin") == "disabled"
    assert (await server_of(engines[1], "b2") or {}).get("admin") == "active"

    async def shown(override: bool) -> bool:
        out = (await run_cli("instances", "--control", engines[1].control)).out
        row = next(line for line in out.splitlines() if line.startswith("n1"))
        return row.rstrip().endswith("b2") == override

    await wait_until(lambda: shown(True), 3.0, 0.2, "n1's override shown on n2")
    result = await run_cli("enable", "b2", "--wait-applied", "--control", engines[1].control)
    assert result.code == 0, result.err
    assert await all_have(engines, "b2", admin="active")
    await wait_until(lambda: shown(False), 3.0, 0.2, "the override gone once the fleet set b2")


async def test_health_seen_down_by_one_instance_only_is_flagged(
    start_fleet: Fleet, start_engine: EngineFactory, echo_backends: Any, redis_server: RedisProc
) -> None:
    """n3's own checks fail on b1 while n1 and n2 see it up: status --fleet through n1 flags the disagreement."""
    (b1,) = await echo_backends(1)
    engines = await start_fleet([b1], count=2)
    # Health checks are per instance: n3 probes a path the backend does not serve, as a partition would look.
    await start_engine(
        "--backend", b1.flag, *fleet_flags(redis_server, "n3"), "--check", "http:/missing", "--fall", "1"
    )

    async def flagged() -> bool:
        result = await run_cli("status", "--fleet", "--control", engines[0].control)
        return (
            "DISAGREES" in result.out and "health of b1 disagrees (n1 sees up, n2 sees up, n3 sees down)" in result.out
        )

    await wait_until(flagged, 5.0, 0.2, "the disagreement flagged")
