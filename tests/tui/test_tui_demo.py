"""`wsproxy-tui --demo` shows two services: the demo's engine runs chat and feed, routed by Host and path, and its
load reaches both. Real processes (six backends, the engine, the load), all stopped by PID afterwards."""

from __future__ import annotations

import asyncio
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from tui_support import unit

from proxy_core.client import ControlClient
from proxy_core.config import load_file
from proxy_core.poolconfig import pools_of
from tui.demo import FEED_HOST, FEED_PREFIX, Demo, demo_config, server_names, start_demo
from tui.launcher import Launcher


def test_demo_config_is_two_pools_the_engine_accepts(tmp_path: Path) -> None:
    """The generated file parses with the engine's own loader: chat (4, least_conn, n2 weight 2), feed (2), routes."""
    backends = {name: f"127.0.0.1:{9000 + i}" for i, name in enumerate(server_names())}
    path = tmp_path / "demo.toml"
    path.write_text(demo_config(backends))
    config = load_file(str(path))
    pools = {p.name: p for p in pools_of(config)}
    assert list(pools) == ["chat", "feed"]
    assert [(s.name, s.address, s.weight) for s in pools["chat"].servers] == [
        ("n1", "127.0.0.1:9000", 1), ("n2", "127.0.0.1:9001", 2), ("n3", "127.0.0.1:9002", 1),
        ("n4", "127.0.0.1:9003", 1),
    ]  # fmt: skip
    assert [s.address for s in pools["feed"].servers] == ["127.0.0.1:9004", "127.0.0.1:9005"]
    assert (pools["chat"].balance, pools["chat"].check.type, pools["feed"].check.type) == (
        "least_conn", "websocket", "http",
    )  # fmt: skip
    assert [(r.host, r.path_prefix, r.pool) for r in config.routes] == [
        (FEED_HOST, None, "feed"),
        (None, FEED_PREFIX, "feed"),
    ]
    assert [listener.default_pool for listener in config.listen] == ["chat"]


@pytest.fixture
async def demo() -> AsyncIterator[tuple[Launcher, Demo]]:
    """The demo as `wsproxy-tui --demo` starts it; every process it started is stopped by PID afterwards."""
    launcher = Launcher(Path(tempfile.mkdtemp(prefix="wsp-demo-")))
    try:
        yield launcher, await start_demo(launcher)
    finally:
        launcher.stop_all()
        for child in launcher.children:  # shown by pytest only when the test failed
            print(f"--- {child.name} (pid {child.pid}, exit {child.proc.returncode})\n{child.tail()}")
        launcher.cleanup()


async def first_upgrades(client: ControlClient) -> dict[tuple[str, int | None], dict[str, Any]]:
    """Follow the event stream until a WebSocket 101 went to chat by default and to feed by each route."""
    wanted = {("chat", None), ("feed", 0), ("feed", 1)}
    seen: dict[tuple[str, int | None], dict[str, Any]] = {}
    async for event in client.stream_events(since=0):
        if event.get("type") == "handshake" and event.get("kind") == "websocket" and event.get("status") == 101:
            key = (event["pool"], event["route"])
            seen.setdefault(key, event)
            if wanted <= set(seen):
                break
    return seen


async def test_demo_runs_two_pools_and_its_load_reaches_both(demo: tuple[Launcher, Demo]) -> None:
    """Status shows chat and feed with their servers and the two routes; the load upgrades through each route."""
    launcher, started = demo
    assert list(started.backends) == server_names()
    async with ControlClient(uds=launcher.control_path, timeout=unit(5)) as client:
        status = await client.status()
        pools = {p["name"]: p for p in status["pools"]}
        assert {name: (p["servers"], p["balance"]) for name, p in pools.items()} == {
            "chat": (4, "least_conn"),
            "feed": (2, "round_robin"),
        }
        assert pools["chat"]["default_for"] == [started.listen]
        assert [s["name"] for s in status["servers"]] == server_names()
        assert [(r["host"], r["path_prefix"], r["pool"]) for r in status["routes"]] == [
            (FEED_HOST, None, "feed"),
            (None, FEED_PREFIX, "feed"),
        ]
        seen = await asyncio.wait_for(first_upgrades(client), unit(30))
    assert seen[("chat", None)]["server"].startswith("chat/")
    assert seen[("feed", 0)]["host"].startswith(FEED_HOST) and seen[("feed", 1)]["path"].startswith(FEED_PREFIX)
    assert {e["server"].split("/")[0] for k, e in seen.items() if k[0] == "feed"} == {"feed"}


async def test_demo_stops_every_process_it_started(demo: tuple[Launcher, Demo]) -> None:
    """Six backends, the engine and the load: all running, then none left once the demo is stopped."""
    launcher, _ = demo
    names = sorted(c.name for c in launcher.running())
    expected = ["engine", "load", *(f"backend-{n.replace('/', '-')}" for n in server_names())]
    assert names == sorted(expected)
    await asyncio.to_thread(launcher.stop_all)
    assert launcher.running() == []
