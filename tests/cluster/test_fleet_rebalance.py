"""A rebalance through one instance of three, planned from the fleet's totals; and `[rebalance] auto` in a fleet."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections import Counter
from pathlib import Path
from typing import Any

import redis.asyncio as aioredis
from websockets.asyncio.client import connect
from websockets.exceptions import WebSocketException

from tests.cluster.conftest import Fleet, RedisProc
from tests.conftest import EngineProc, run_cli, unit, wait_until
from tests.integration.test_drain_rebalance import placements

CLIENTS_PER_INSTANCE = 12


class Clients:
    """WebSocket clients, each from its own loopback address through one instance, reconnecting when closed."""

    def __init__(self) -> None:
        self.closes: Counter[str] = Counter()  # instance -> connections closed by the proxy
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    def start(self, engine: EngineProc, instance: str, ips: list[str]) -> None:
        for ip in ips:
            self._tasks.append(asyncio.create_task(self._run(engine.port, instance, ip)))

    async def _run(self, port: int, instance: str, ip: str) -> None:
        while not self._stop.is_set():
            with contextlib.suppress(OSError, WebSocketException, TimeoutError):
                async with connect(f"ws://127.0.0.1:{port}/", local_addr=(ip, 0), open_timeout=unit(5)) as ws:
                    closed = asyncio.ensure_future(ws.wait_closed())
                    stop = asyncio.ensure_future(self._stop.wait())
                    await asyncio.wait({closed, stop}, return_when=asyncio.FIRST_COMPLETED)
                    stop.cancel()
                    if closed.done():
                        self.closes[instance] += 1
                    else:
                        closed.cancel()
            await asyncio.sleep(0.05)

    async def stop(self) -> None:
        self._stop.set()
        await asyncio.wait_for(asyncio.gather(*self._tasks, return_exceptions=True), unit(10))


def ips_for(index: int) -> list[str]:
    return [f"127.0.{index + 1}.{k}" for k in range(2, 2 + CLIENTS_PER_INSTANCE)]


async def fleet_totals(engine: EngineProc) -> dict[str, int]:
    async with engine.client() as client:
        fleet = await client.fleet()
    return {s["name"]: s["active"] for s in fleet["servers"]}


def toml(tmp_path: Path, text: str) -> str:
    path = tmp_path / "fleet.toml"
    path.write_text(text, encoding="utf-8")
    return str(path)


async def test_a_rebalance_through_one_instance_balances_the_fleet_each_moving_its_share(
    start_fleet: Fleet, echo_backends: Any, tmp_path: Path
) -> None:
    """b3 back empty on all three: `rebalance --wait` through n1 plans from the fleet's totals, each instance
    closes exactly its share (a third of each surplus), the result is summed, and the servers end 12/12/12."""
    b1, b2, b3 = await echo_backends(3)
    config = toml(tmp_path, "[rebalance]\nmin_age_s = 0.3\n")
    engines = await start_fleet([b1, b2, b3], "-c", config, "--balance", "least_conn")
    assert (await run_cli("disable", "b3", "--wait-applied", "--control", engines[0].control)).code == 0
    clients = Clients()
    try:
        for i, engine in enumerate(engines):
            clients.start(engine, f"n{i + 1}", ips_for(i))
        await wait_until(
            lambda: _totals_are(engines[0], {"b1": 18, "b2": 18, "b3": 0}), 10, 0.1, "36 clients in the live views"
        )
        assert (await run_cli("enable", "b3", "--wait-applied", "--control", engines[1].control)).code == 0
        await wait_until(lambda: _totals_are(engines[0], {"b1": 18, "b2": 18, "b3": 0}), 5, 0.1, "b3 in the views")
        await asyncio.sleep(0.5)  # past min_age_s

        dry = await run_cli("rebalance", "--dry-run", "--control", engines[0].control)
        assert dry.code == 0, dry.err
        assert "would move 12 connection(s)" in dry.out and "b1 -> b3: 6" in dry.out and "b2 -> b3: 6" in dry.out
        for name in ("n1", "n2", "n3"):
            assert f"{name} moves 2 off b1, 2 off b2" in dry.out, dry.out
        assert clients.closes == Counter()  # a dry run moves nobody

        result = await run_cli(
            "rebalance", "--rate", "30", "--wait", "--timeout", "30", "--control", engines[0].control
        )
        assert result.code == 0, result.out + result.err
        assert "balanced" in result.out
        async with engines[2].client() as client:
            state = (await client.rebalance_status())["rebalance"]
        assert state["moved_connections"] == 12 and set(state["instances"]) == {"n1", "n2", "n3"}
        assert all(part["moved_connections"] == 4 for part in state["instances"].values()), state
        await wait_until(
            lambda: _totals_are(engines[0], {"b1": 12, "b2": 12, "b3": 12}), 10, 0.1, "12/12/12 fleet-wide"
        )
        assert clients.closes == Counter({"n1": 4, "n2": 4, "n3": 4})  # no instance moved more than its share
    finally:
        await clients.stop()


async def test_a_fleet_already_balanced_moves_nobody_though_each_instance_is_lopsided(
    start_fleet: Fleet, echo_backends: Any, tmp_path: Path
) -> None:
    """n1 holds its clients on b1 and n2 on b2 (each lopsided, the fleet even): a rebalance moves no one, where
    n1 alone, planning from its own counts, would move two of its six."""
    b1, b2 = await echo_backends(2)
    config = toml(tmp_path, "[rebalance]\nmin_age_s = 0.3\n")
    engines = await start_fleet([b1, b2], "-c", config, "--balance", "least_conn", count=2)
    clients = Clients()
    try:
        assert (await run_cli("disable", "b2", "--local", "--control", engines[0].control)).code == 0
        assert (await run_cli("disable", "b1", "--local", "--control", engines[1].control)).code == 0
        clients.start(engines[0], "n1", ips_for(0)[:6])
        clients.start(engines[1], "n2", ips_for(1)[:6])
        await wait_until(lambda: _totals_are(engines[0], {"b1": 6, "b2": 6}), 10, 0.1, "6 and 6 in the views")
        for i, name in ((0, "b2"), (1, "b1")):
            assert (await run_cli("enable", name, "--local", "--control", engines[i].control)).code == 0
        await asyncio.sleep(0.5)  # past min_age_s: age is not why nobody moves
        result = await run_cli("rebalance", "--wait", "--timeout", "20", "--control", engines[0].control)
        assert result.code == 0, result.out + result.err
        local = await run_cli("rebalance", "--local", "--dry-run", "--control", engines[0].control)
        assert "would move 2 client(s)" in local.out  # n1 alone, by its own counts: to within one of 3/3
        assert clients.closes == Counter()
    finally:
        await clients.stop()


async def test_auto_rebalance_in_a_fleet_starts_once_for_all_three(
    start_fleet: Fleet, echo_backends: Any, redis_server: RedisProc, tmp_path: Path
) -> None:
    """`[rebalance] auto` on all three: b3 coming back starts one fleet rebalance (one stream entry, the lock),
    not three fighting; the fleet ends balanced and each instance closed its share."""
    b1, b2, b3 = await echo_backends(3)
    config = toml(tmp_path, "[rebalance]\nauto = true\nauto_delay_s = 0.5\nmin_age_s = 0.3\nrate = 30\n")
    engines = await start_fleet([b1, b2, b3], "-c", config, "--balance", "least_conn")
    assert (await run_cli("disable", "b3", "--wait-applied", "--control", engines[0].control)).code == 0
    clients = Clients()
    try:
        for i, engine in enumerate(engines):
            clients.start(engine, f"n{i + 1}", ips_for(i))
        await wait_until(lambda: _totals_are(engines[0], {"b1": 18, "b2": 18, "b3": 0}), 10, 0.1, "36 clients")
        assert (await run_cli("enable", "b3", "--control", engines[1].control)).code == 0
        await wait_until(lambda: _totals_are(engines[0], {"b1": 12, "b2": 12, "b3": 12}), 20, 0.1, "balanced by auto")
        await asyncio.sleep(2.0)  # every instance's auto wait has passed: a second rebalance would show now
        assert await _rebalance_entries(redis_server) == 1
        assert clients.closes == Counter({"n1": 4, "n2": 4, "n3": 4})
    finally:
        await clients.stop()


async def _totals_are(engine: EngineProc, want: dict[str, int]) -> bool:
    return await fleet_totals(engine) == want


async def _rebalance_entries(redis: RedisProc) -> int:
    client = aioredis.Redis(host="127.0.0.1", port=redis.port, decode_responses=True, socket_timeout=2)
    try:
        entries = await client.xrange("wsproxy:changes")
    finally:
        await client.aclose()
    return sum(1 for _id, fields in entries if json.loads(fields["c"])["op"] == "rebalance")


async def test_an_ip_hash_fleet_rebalance_with_workers_moves_exactly_what_the_ring_places_elsewhere(
    start_fleet: Fleet, echo_backends: Any, tmp_path: Path
) -> None:
    """ip_hash, two instances with --workers 2: each supervisor moves, from its workers' reports, exactly its
    clients that the ring now gives the returned b3, and they land there."""
    b1, b2, b3 = await echo_backends(3)
    config = toml(tmp_path, "[rebalance]\nmin_age_s = 0.3\n")
    engines = await start_fleet([b1, b2, b3], "-c", config, "--balance", "ip_hash", "--workers", "2", count=2)
    assert (await run_cli("disable", "b3", "--wait-applied", "--control", engines[0].control)).code == 0
    ring = {i: placements(["b1", "b2", "b3"], ips_for(i)) for i in range(2)}
    movers = {f"n{i + 1}": sum(1 for node in ring[i].values() if node == "b3") for i in range(2)}
    assert all(movers.values())
    clients = Clients()
    try:
        for i, engine in enumerate(engines):
            clients.start(engine, f"n{i + 1}", ips_for(i))
        await wait_until(lambda: _fleet_sum(engines[0], 24), 10, 0.1, "24 clients in the live views")
        assert (await run_cli("enable", "b3", "--wait-applied", "--control", engines[1].control)).code == 0
        await asyncio.sleep(0.5)
        dry = await run_cli("rebalance", "--dry-run", "--control", engines[0].control)
        assert "the ring places elsewhere" in dry.out and f"would move {movers['n1']} client(s)" in dry.out
        result = await run_cli(
            "rebalance", "--rate", "30", "--wait", "--timeout", "30", "--control", engines[1].control
        )
        assert result.code == 0, result.out + result.err
        want_b3 = sum(movers.values())
        await wait_until(lambda: _b3_is(engines[0], want_b3), 10, 0.1, "the movers on b3")
        assert clients.closes == Counter(movers)
    finally:
        await clients.stop()


async def _b3_is(engine: EngineProc, want: int) -> bool:
    return (await fleet_totals(engine)).get("b3") == want


async def _fleet_sum(engine: EngineProc, want: int) -> bool:
    return sum((await fleet_totals(engine)).values()) == want
