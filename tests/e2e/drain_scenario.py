"""Issue 13's rolling restart, measured: 100 browser-like Socket.IO clients (each from its own address, with an
HTTP keep-alive pool, long-polling first, then the WebSocket upgrade), four node processes restarted one by one
behind a balancer, and the figures a user and an operator would look at.

The balancer is a `Balancer`: wsproxy driven by its own CLI (`WsproxyBalancer`), or HAProxy by its runtime API
(tests/e2e/test_e2e_drain_sessions_haproxy.py), so both are measured by the same code.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import time
from dataclasses import dataclass, field
from typing import Protocol

import aiohttp

from tests.conftest import EngineProc, run_cli, unit
from tests.e2e.browser_http import BrowserSession
from tests.e2e.fleet import ClientFleet, NodeFleet, max_in_window

N_CLIENTS = 100  # 127.0.0.2 .. 127.0.0.101
IPS = [f"127.0.0.{i}" for i in range(2, 2 + N_CLIENTS)]
START_BATCH = 25  # clients connecting side by side: 100 at once overrun a Socket.IO connect's 5 s on 2 cores
DEADLINE_S = 3.0  # drain --deadline: the operator's patience before the node is stopped
DOWN_S = 4.0  # a node's time down between its SIGTERM and its start (a deploy's install step)
SETTLE_S = 20.0  # after the last node is back: every client greeted again within this long, or counted missing
UP_TIMEOUT_S = 20.0  # a restarted node is up (its checks pass) within this long


class Balancer(Protocol):
    """What the rolling restart needs from the proxy in front of the nodes."""

    label: str
    url: str

    async def drain(self, name: str) -> None:
        """Drain `name` and return when it may be stopped (its connections gone, or the deadline passed)."""

    async def undrain(self, name: str) -> None:
        """Take `name` back and return once it is up and takes new connections."""


@dataclass
class WsproxyBalancer:
    """wsproxy's own CLI as an operator runs it: `drain NAME --deadline 3 --wait`, `undrain`, `wait-up`."""

    engine: EngineProc
    label: str = "wsproxy"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.engine.port}"

    async def cli(self, *args: str, timeout: float = 30.0) -> str:
        result = await run_cli(*args, "--control", self.engine.control, timeout=timeout)
        assert result.code == 0, f"wsproxy {' '.join(args)}: exit {result.code}\n{result.out}\n{result.err}"
        return result.out

    async def drain(self, name: str) -> None:
        await self.cli("drain", name, "--deadline", f"{DEADLINE_S:g}", "--wait", "--timeout", "30")

    async def undrain(self, name: str) -> None:
        await self.cli("undrain", name)
        await self.cli("wait-up", name, "--fresh", "--timeout", f"{UP_TIMEOUT_S:g}", timeout=UP_TIMEOUT_S + 5)


@dataclass
class Figures:
    """What the rolling restart did to the users (client side) and to the nodes (server side)."""

    label: str
    clients: int = 0
    sent: int = 0
    acked: int = 0
    acks_lost: int = 0  # messages unacknowledged when their connection closed
    wrong_node: int = 0  # "Invalid session" / "Session ID unknown" 400s: a request on a node without its session
    bad_requests: int = 0  # every 400 the nodes answered
    errors: list[str] = field(default_factory=list)  # failed connect attempts, as the clients saw them
    not_websocket: list[str] = field(default_factory=list)  # clients not on a WebSocket at the end
    peak_drops: int = 0  # the most disconnects in any one second of the restart
    requests: int = 0  # HTTP requests the nodes saw from the clients (a WebSocket upgrade is one) ...
    connections: int = 0  # ... on this many TCP connections (fewer: the keep-alive pools reused some)
    before: dict[str, int] = field(default_factory=dict)  # clients per node before the restarts
    after: dict[str, int] = field(default_factory=dict)  # ... after them
    took_s: float = 0.0

    def lines(self) -> list[str]:
        return [
            f"{self.label}: {self.clients} clients, {self.sent} messages, {self.acked} acked, "
            f"{self.acks_lost} acks lost; rolling restart took {self.took_s:.1f} s",
            f"  wrong-node requests {self.wrong_node} (400s {self.bad_requests}), connection errors "
            f"{len(self.errors)}, not on WebSocket at the end {len(self.not_websocket)}, "
            f"most disconnects in one second {self.peak_drops}",
            f"  HTTP requests {self.requests} on {self.connections} TCP connections at the nodes",
            f"  clients per node before {fmt_counts(self.before)}, after {fmt_counts(self.after)}",
        ]


def fmt_counts(counts: dict[str, int]) -> str:
    return "/".join(str(counts.get(name, 0)) for name in sorted(counts)) or "-"


def per_node(clients: ClientFleet, names: list[str]) -> dict[str, int]:
    """Clients on each node now (greeted by it, connection open)."""
    placed = collections.Counter(client.node for client in clients.clients if client.node is not None)
    return {name: placed.get(name, 0) for name in names}


def on_websocket(clients: ClientFleet) -> list[str]:
    """The clients that are not connected over a WebSocket now."""
    return [c.ip for c in clients.clients if not (c.sio.connected and c.sio.transport() == "websocket")]


async def start_clients(clients: ClientFleet, ips: list[str]) -> None:
    """Connect `ips` in batches, then wait until every client is greeted and has two acks."""
    for first in range(0, len(ips), START_BATCH):
        await clients.start(ips[first : first + START_BATCH])
    await clients.wait_greeted(timeout=30.0)
    await clients.wait_acks(2, timeout=20.0)


async def settle(clients: ClientFleet) -> None:
    """Give every client SETTLE_S to be greeted again; who is not is counted by the caller, not failed here."""
    with contextlib.suppress(AssertionError):
        await clients.wait_greeted(timeout=SETTLE_S)


async def rolling_restart(balancer: Balancer, nodes: NodeFleet, clients: ClientFleet) -> Figures:
    """Per node: drain, SIGTERM, DOWN_S down, start on the same port, undrain; then measure."""
    names = sorted(nodes.nodes)
    figures = Figures(label=balancer.label, clients=len(clients.clients), before=per_node(clients, names))
    began = time.time()
    for name in names:
        await balancer.drain(name)
        port = nodes.nodes[name].port
        await nodes.stop(name)
        await asyncio.sleep(DOWN_S)  # the deploy's install step: the scenario's own time, not a wait for an event
        await nodes.start(name, port)
        await balancer.undrain(name)
    figures.took_s = time.time() - began
    await settle(clients)
    figures.after = per_node(clients, names)
    figures.not_websocket = on_websocket(clients)
    figures.errors = clients.errors()
    figures.peak_drops = max_in_window([c.ended_at for c in clients.conns if c.ended_at is not None], 1.0)
    totals = clients.totals()
    figures.sent, figures.acked, figures.acks_lost = totals["sent"], totals["acked"], totals["lost_in_flight"]
    counts = await nodes.counts()
    figures.wrong_node = sum(stats.get("unknown_session", 0) for stats in counts.values())
    figures.bad_requests = sum(stats.get("bad_requests", 0) for stats in counts.values())
    seen = await nodes.per_client()
    figures.requests = sum(c["requests"] for c in seen.values())
    figures.connections = sum(c["connections"] for c in seen.values())
    return figures


async def assert_pools_reuse(clients: ClientFleet, nodes: NodeFleet) -> None:
    """Every client's keep-alive pool sends a second plain request on the connection of its handshake (as a
    browser fetches the page's next resource): the nodes count fewer TCP connections than requests for each."""
    browsers = [client.browser for client in clients.clients if client.browser is not None]
    assert len(browsers) == len(clients.clients), "the clients must keep HTTP keep-alive pools"
    await asyncio.gather(*(fetch_health(browser, clients.url) for browser in browsers))
    seen = await nodes.per_client()
    for client in clients.clients:
        mine = seen.get(client.ip, {"requests": 0, "connections": 0})
        assert mine["requests"] > mine["connections"], f"{client.ip}'s pool reused no connection: {mine}"


async def fetch_health(session: BrowserSession, url: str) -> None:
    async with session.get(f"{url}/health", timeout=aiohttp.ClientTimeout(total=unit(5.0))) as response:
        assert response.status == 200, response.status
        await response.read()
