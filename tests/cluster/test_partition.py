"""One instance cut off from Redis (a relay that black-holes its traffic) while the others go on changing things."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
from websockets.asyncio.client import connect

from proxy_core.cluster.rebalancing import STALE_S
from tests.cluster.conftest import RedisProc, fleet_flags
from tests.cluster.relay import Relay
from tests.cluster.test_cluster import pools, server_of
from tests.conftest import EngineFactory, EngineProc, run_cli, unit, wait_until


@pytest.fixture
async def relay(redis_server: RedisProc) -> AsyncIterator[Relay]:
    relay = Relay(redis_server.port)
    await relay.start()
    try:
        yield relay
    finally:
        await relay.stop()


async def cluster_of(engine: EngineProc) -> dict[str, Any]:
    async with engine.client() as client:
        return dict((await client.status())["cluster"])


async def operator_details(engine: EngineProc, since: int) -> list[str]:
    async with engine.client() as client:
        events = (await client.events(since=since))["events"]
    return [e.get("detail", "") for e in events if e.get("type") == "operator"]


async def test_an_instance_cut_off_from_redis_keeps_traffic_refuses_fleet_changes_and_replays_in_order(
    start_engine: EngineFactory, echo_backends: Any, redis_server: RedisProc, relay: Relay
) -> None:
    """n3 reaches Redis through a relay that is cut: its traffic goes on untouched, fleet changes through it are
    refused naming its store, a --local change works; n1 and n2 go on changing things. Restored, n3 replays what
    it missed in stream order and ends in the same state as the others (its override replaced by the fleet's)."""
    b1, b2, b3 = await echo_backends(3)
    flags = [a for b in (b1, b2) for a in ("--backend", b.flag)]
    n1 = await start_engine(*flags, *fleet_flags(redis_server, "n1"))
    n2 = await start_engine(*flags, *fleet_flags(redis_server, "n2"))
    n3 = await start_engine(*flags, "--cluster", relay.url(), "--instance", "n3")
    engines = [n1, n2, n3]
    sent = received = 0
    stop = asyncio.Event()

    async def traffic() -> None:
        nonlocal sent, received
        async with connect(f"ws://127.0.0.1:{n3.port}/") as ws:
            while not stop.is_set():
                payload = "p" * 256
                await ws.send(payload)
                sent += len(payload)
                received += len(await ws.recv())
                await asyncio.sleep(0.005)

    task = asyncio.create_task(traffic())
    try:
        await wait_until(lambda: received > 5_000, 5.0, what="traffic through n3")
        async with n3.client() as client:
            mark = (await client.status())["totals"]["last_seq"]
        relay.cut()
        # Before n3 has noticed (its command times out) and after: both refusals name the store n3 uses.
        for _ in range(2):
            result = await run_cli("weight", "b1", "9", "--control", n3.control)
            assert result.code == 1, result.out
            assert f"fleet store {relay.url()}" in result.err and "--local" in result.err
            assert "unreachable" in result.err or "may or may not be in the stream" in result.err
        await wait_until(lambda: _connected(n3, False), 10.0, 0.1, "n3 to notice it lost the store")
        local = await run_cli("weight", "b2", "5", "--local", "--control", n3.control)
        assert local.code == 0, local.err
        assert (await server_of(n3, "b2") or {}).get("weight") == 5
        # Meanwhile the others go on: two weights of b1 in a row, an add, and b2's weight (n3's override).
        for args in (("weight", "b1", "2"), ("weight", "b1", "3"), ("add", "b3", b3.address), ("weight", "b2", "4")):
            result = await run_cli(*args, "--control", n1.control)
            assert result.code == 0, result.err
        assert (await server_of(n2, "b1") or {}).get("weight") == 3
        assert await server_of(n3, "b3") is None  # n3 has seen none of it
        mark_bytes = received
        await wait_until(lambda: received > mark_bytes + 5_000, 5.0, what="traffic still flowing through n3")

        relay.restore()
        await wait_until(lambda: _connected(n3, True), 15.0, 0.1, "n3 to reconnect")
        await wait_until(lambda: _same_state(engines), 5.0, 0.1, "n3 in the same state as n1 and n2")
        states = await pools(engines)
        assert states[2]["b1"][1] == 3 and states[2]["b2"][1] == 4 and "b3" in states[2]
        assert (await cluster_of(n3))["applied"] == (await cluster_of(n1))["applied"]
        assert (await cluster_of(n3))["local_overrides"] == []
        details = await operator_details(n3, mark)
        replayed = [
            d for d in details if d in ("b1 weight 2", "b1 weight 3", "b2 weight 4") or d.startswith("added b3")
        ]
        assert replayed == ["b1 weight 2", "b1 weight 3", f"added b3 at {b3.address} weight 1", "b2 weight 4"]
        assert not any(d == "b1 weight 9" for d in details)  # the refused change was never made
        result = await run_cli("weight", "b1", "6", "--wait-applied", "--control", n3.control)
        assert result.code == 0, result.err
        assert all(s["b1"][1] == 6 for s in await pools(engines))
    finally:
        stop.set()
        await asyncio.wait_for(task, unit(5.0))
    assert sent == received > 0


async def _connected(engine: EngineProc, want: bool) -> bool:
    return bool((await cluster_of(engine)).get("connected")) == want


async def _same_state(engines: list[EngineProc]) -> bool:
    states = await pools(engines)
    return all(s == states[0] for s in states)


async def test_a_change_whose_answer_the_partition_lost_says_it_may_be_made_and_is_applied_on_reconnect(
    start_engine: EngineFactory, echo_backends: Any, redis_server: RedisProc, relay: Relay
) -> None:
    """Cut in the middle of a command (the request reaches Redis, the answer is lost): n2 says the change may or
    may not be in the stream, not that it was not made; it was, n1 applies it, and n2 does once restored."""
    b1, b2 = await echo_backends(2)
    flags = [a for b in (b1, b2) for a in ("--backend", b.flag)]
    n1 = await start_engine(*flags, *fleet_flags(redis_server, "n1"))
    n2 = await start_engine(*flags, "--cluster", relay.url(), "--instance", "n2")
    relay.cut(replies_only=True)
    result = await run_cli("weight", "b1", "7", "--control", n2.control)
    assert result.code == 1, result.out
    assert f"fleet store {relay.url()} did not answer" in result.err and "may or may not be in the stream" in result.err
    await wait_until(lambda: _weight_is(n1, "b1", 7), 5.0, 0.1, "the change made in the fleet after all")
    relay.restore()
    await wait_until(lambda: _weight_is(n2, "b1", 7), 15.0, 0.1, "n2 applying it once restored")


async def _weight_is(engine: EngineProc, name: str, weight: int) -> bool:
    return (await server_of(engine, name) or {}).get("weight") == weight


async def test_a_fleet_rebalance_missed_while_cut_off_is_named_then_skipped_on_replay(
    start_engine: EngineFactory, echo_backends: Any, redis_server: RedisProc, relay: Relay
) -> None:
    """n2 cut off but not yet shown gone: a rebalance through n1 answers within seconds, warning that n2 did not
    take part; n2, restored after the entry went stale, skips it (an operator event) instead of moving a share
    planned from counts that are gone."""
    b1, b2 = await echo_backends(2)
    flags = [a for b in (b1, b2) for a in ("--backend", b.flag)]
    n1 = await start_engine(*flags, *fleet_flags(redis_server, "n1"))
    n2 = await start_engine(*flags, "--cluster", relay.url(), "--instance", "n2")

    async def n2_alive() -> bool:
        async with n1.client() as client:
            return any(i["name"] == "n2" and i["alive"] for i in (await client.fleet())["instances"])

    await wait_until(n2_alive, 5.0, 0.1, "n2 in n1's fleet view")
    relay.cut()
    made = time.monotonic()
    result = await run_cli("rebalance", "--control", n1.control)
    assert result.code == 0, result.err
    assert "not taken within 3 s by n2" in result.err
    assert time.monotonic() - made < unit(3.0) + 3.0
    await asyncio.sleep(max(0.0, STALE_S + 0.5 - (time.monotonic() - made)))
    relay.restore()

    async def skipped() -> bool:
        return any("skipped" in d and "planned from are gone" in d for d in await operator_details(n2, 0))

    await wait_until(skipped, 15.0, 0.2, "n2 to skip the stale rebalance entry")
    assert (await cluster_of(n2))["applied"] == (await cluster_of(n1))["applied"]
