"""The seed's scenario end to end: four Socket.IO nodes behind wsproxy, browser-like clients, steady state,
no stickiness (the control) and a killed node. The rolling restart is in test_e2e_rolling_restart.py."""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

import aiohttp
import pytest

from tests.conftest import run_cli, unit, wait_until
from tests.e2e.conftest import IPS, Pool, assert_acks_accounted, assert_no_wrong_node
from tests.e2e.fleet import max_in_window


async def cli(pool: Pool, *args: str, timeout: float = 30.0) -> str:
    """Run `wsproxy ARGS --control SOCKET`; assert exit 0; return stdout."""
    result = await run_cli(*args, "--control", pool.engine.control, timeout=timeout)
    assert result.code == 0, f"wsproxy {' '.join(args)} exited {result.code}: {result.out}{result.err}"
    return result.out


async def handshakes(pool: Pool) -> list[dict[str, Any]]:
    async with pool.engine.client() as client:
        page = await client.events(limit=10000)
    return [e for e in page["events"] if e["type"] == "handshake"]


async def test_steady_state(pool: Pool) -> None:
    """Every client connects by polling, upgrades, stays on one node with every ack in order; >= 3 nodes used."""
    clients = await pool.clients.start(IPS)
    await pool.clients.wait_greeted()
    await pool.clients.wait_acks(5)
    assert pool.clients.errors() == []
    assert pool.clients.problems() == []
    for client in clients:
        assert len(client.conns) == 1, f"{client.ip} reconnected: {client.conns}"
        assert client.conns[0].transport == "websocket", f"{client.ip} did not upgrade"
    spread = {name: len(group) for name, group in pool.clients.by_node().items()}
    assert len(spread) >= 3, spread
    # The engine's handshake log: each client's polling request and its upgrade, on the node that greeted it.
    node_of = {client.ip: client.node for client in clients}
    seen: dict[str, set[tuple[str, int]]] = {}
    for event in await handshakes(pool):
        ip = event["client"].rpartition(":")[0]
        assert event["server"] == node_of[ip], f"{ip} greeted by {node_of[ip]} but {event}"
        transport = "websocket" if "transport=websocket" in (event["path"] or "") else "polling"
        seen.setdefault(ip, set()).add((transport, event["status"]))
    assert all({("polling", 200), ("websocket", 101)} <= seen.get(ip, set()) for ip in IPS), seen
    await pool.clients.close()
    totals = assert_acks_accounted(pool)
    assert totals["lost_in_flight"] == 0 and totals["reconnects"] == 0, totals
    counts = await pool.nodes.counts()
    assert_no_wrong_node(counts)
    assert sum(c["messages"] for c in counts.values()) == totals["sent"]
    print(f"\nsteady state: {totals}, clients per node {spread}")


@pytest.mark.parametrize("pool", ["round_robin"], indirect=True)
async def test_without_stickiness_sessions_break(pool: Pool) -> None:
    """Control: with round_robin instead of ip_hash the same clients hit unknown-session 400s, as the seed warns."""
    # Three clients: the polling request and the upgrade of at least one land on different nodes whatever the
    # order (with four, round robin over four nodes could line them up). Their connects may hang in long-polls
    # on the wrong nodes: watch the nodes, not the connects.
    starting = asyncio.ensure_future(pool.clients.start(IPS[:3]))

    async def unknown_sessions() -> int:
        return sum(int(c["unknown_session"]) for c in (await pool.nodes.counts()).values())

    try:
        assert await wait_until(unknown_sessions, timeout=15.0, interval=0.1, what="an unknown-session 400 on a node")
    finally:
        starting.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await starting


@pytest.mark.timeout(90)
async def test_node_killed(pool: Pool) -> None:
    """SIGKILL a node: its clients move on without a connection error, it shows down with its reason, then returns."""
    await pool.clients.start(IPS)
    await pool.clients.wait_greeted()
    await pool.clients.wait_acks(2)
    victim, moved = max(pool.clients.by_node().items(), key=lambda item: len(item[1]))
    address = pool.nodes.nodes[victim].address
    before_kill = await pool.nodes.stats(victim)  # its counters die with it
    killed_at = time.time()
    await pool.nodes.kill(victim)

    # Its clients reconnect to the other nodes (the engine retries the next server); everyone is acked again.
    await wait_until(lambda: all(c.node not in (None, victim) for c in moved), timeout=15.0, what="clients moved")
    await pool.clients.wait_acks(2)
    assert pool.clients.errors() == []
    assert all(c.conns[-1].connected_at > killed_at for c in moved)

    # The control API shows it down, with the reason.
    async with pool.engine.client() as control:

        async def down() -> dict[str, Any] | None:
            detail = await control.server(victim)
            return detail if detail["state"] == "down" else None

        detail = await wait_until(down, timeout=10.0, what=f"{victim} down")
        reason = detail["history"][-1]["reason"]
        assert detail["history"][-1]["to"] == "down" and "connection refused" in reason, detail["history"]
    async with (
        aiohttp.ClientSession() as http,
        http.get(f"http://{pool.engine.status_address}/websocket_status?format=json") as response,
    ):
        page = await response.json()
    assert {s["name"]: s["status"] for s in page["servers"]["server"]}[address] == "down"

    # Back on its port and up again: new clients from the moved clients' addresses land on it again, while
    # the moved clients stay where they are.
    await pool.nodes.start(victim, pool.nodes.nodes[victim].port)
    assert f"{victim} is up" in await cli(pool, "wait-up", victim, "--timeout", str(unit(20.0)))
    where = {c.ip: c.node for c in moved}
    newcomers = await pool.clients.start([c.ip for c in moved])
    await pool.clients.wait_greeted(newcomers)
    assert {c.node for c in newcomers} == {victim}
    await pool.clients.wait_acks(2, newcomers)
    assert {c.ip: c.node for c in moved} == where
    assert pool.clients.errors() == []
    assert pool.clients.problems() == []
    await pool.clients.close()
    totals = assert_acks_accounted(pool)
    assert_no_wrong_node({**await pool.nodes.counts(), f"{victim} before the kill": before_kill})
    print(f"\nnode killed: {victim} had {len(moved)} clients; reason {reason!r}; {totals}")


async def test_node_sigterm_without_drain(pool: Pool) -> None:
    """A node stopped by SIGTERM without a drain closes its clients; they reconnect elsewhere without an error."""
    await pool.clients.start(IPS)
    await pool.clients.wait_greeted()
    await pool.clients.wait_acks(2)
    name, group = max(pool.clients.by_node().items(), key=lambda item: len(item[1]))
    stopped_at = time.time()
    assert await pool.nodes.stop(name) == 0
    await wait_until(lambda: all(c.node not in (None, name) for c in group), timeout=15.0, what="clients moved")
    await pool.clients.wait_acks(2, group)
    assert {c.conns[-2].reason for c in group} == {"transport error"}  # closed, not told off: they reconnect
    assert pool.clients.errors() == []
    assert pool.clients.problems() == []
    # Without a drain they all come back in the same moment: the burst a drain deadline spreads out.
    burst = max_in_window([c.conns[-1].connected_at for c in group], 1.0)
    await pool.clients.close()
    assert_acks_accounted(pool)
    assert_no_wrong_node(await pool.nodes.counts())
    assert all(c.conns[-1].connected_at > stopped_at for c in group)
    print(f"\nSIGTERM without drain: {len(group)} clients of {name}, {burst} of them reconnected within 1 s")
