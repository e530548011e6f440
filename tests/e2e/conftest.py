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
