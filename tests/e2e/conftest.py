"""End-to-end fixtures: the seed's four Socket.IO nodes as processes, wsproxy in front, browser-like clients.

Every node process is stopped by PID at teardown (also those a restart script started, found by their pid
files), every client is disconnected, and the engine is stopped by `start_engine` (tests/conftest.py).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import EngineProc
from tests.e2e.fleet import ClientFleet, NodeFleet, NodeProc

Start = Callable[..., Awaitable[EngineProc]]

# The seed's `check interval=3000 rise=2 fall=5 timeout=1000`, with the interval shortened for the test.
CHECK_FLAGS = ("--check", "tcp", "--check-interval", "200", "--rise", "2", "--fall", "5", "--check-timeout", "1000")
DRAIN_SPREAD_S = 2.0  # [timeouts] drain_spread: closes at a drain deadline are spread over this window
N_CLIENTS = 24  # 127.0.0.2 .. 127.0.0.25: the ring puts 8, 5, 7 and 4 of them on b1..b4
IPS = [f"127.0.0.{i}" for i in range(2, 2 + N_CLIENTS)]
MAX_IN_FLIGHT = 3  # messages a client may have unacknowledged when its connection closes (one every ~0.3 s)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "e2e: end-to-end scenario with real Socket.IO processes (runs by default)")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/e2e/" in item.nodeid.replace("\\", "/"):
            item.add_marker(pytest.mark.e2e)


@dataclass
class Pool:
    """Four Socket.IO nodes behind a running `wsproxy serve --balance ip_hash --check tcp`."""

    engine: EngineProc
    nodes: NodeFleet
    clients: ClientFleet
    config: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.engine.port}"

    @property
    def names(self) -> list[str]:
        return list(self.nodes.nodes)


@pytest.fixture
async def nodes(tmp_path: Path) -> AsyncIterator[NodeFleet]:
    """A NodeFleet in tmp_path/nodes; every node PID is stopped at teardown."""
    workdir = tmp_path / "nodes"
    workdir.mkdir()
    fleet = NodeFleet(workdir)
    try:
        yield fleet
    finally:
        await fleet.close()


def write_config(tmp_path: Path) -> Path:
    path = tmp_path / "wsproxy.toml"
    path.write_text(f"[timeouts]\ndrain_spread = {DRAIN_SPREAD_S}\n", encoding="utf-8")
    return path


@pytest.fixture
async def pool(
    request: pytest.FixtureRequest, tmp_path: Path, nodes: NodeFleet, start_engine: Start
) -> AsyncIterator[Pool]:
    """Nodes b1..b4 and the engine in front of them (status page on a free port); clients closed at teardown.

    The balance policy is ip_hash unless the test parametrizes `pool` indirectly with another one.
    """
    balance = getattr(request, "param", "ip_hash")
    started: list[NodeProc] = await nodes.start_all(4)
    config = write_config(tmp_path)
    backends = [arg for node in started for arg in ("--backend", f"{node.name}={node.address}")]
    engine = await start_engine(
        "-c",
        str(config),
        "--balance",
        balance,
        *CHECK_FLAGS,
        "--status-listen",
        "127.0.0.1:0",
        "--shutdown-grace",
        "1",
        *backends,
    )
    clients = ClientFleet(f"http://127.0.0.1:{engine.port}")
    try:
        yield Pool(engine=engine, nodes=nodes, clients=clients, config=config)
    finally:
        await clients.close()


def assert_no_wrong_node(counts: dict[str, dict[str, int]]) -> None:
    """No node answered a 400 (an unknown session: a request of a session that lives on another node)."""
    for name, stats in counts.items():
        assert stats["unknown_session"] == 0 and stats["bad_requests"] == 0, f"{name} answered 400s: {stats}"


def assert_acks_accounted(pool: Pool) -> dict[str, int]:
    """After the clients stopped: every message was acknowledged, or was in flight when its connection closed."""
    totals = pool.clients.totals()
    assert totals["sent"] - totals["acked"] == totals["lost_in_flight"], totals
    worst = max((conn.lost for conn in pool.clients.conns), default=0)
    assert worst <= MAX_IN_FLIGHT, f"a connection closed with {worst} messages unacknowledged"
    return totals
