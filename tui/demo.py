"""`wsproxy-tui --demo`: two services behind one listener, the engine in front, and a synthetic load.

`chat` (four WebSocket servers, least connections) takes whatever no route claims; `feed` (two servers) takes the
paths under /feed and the Host feed.localhost, so the dashboard has pools, routes and per-pool actions to show.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from typing import Any

from tui.launcher import Launcher

HOST = "127.0.0.1"
BACKEND_READY_S = 10.0
FEED_HOST = "feed.localhost"  # resolves to loopback anywhere (RFC 6761), so a browser can try it too
FEED_PREFIX = "/feed"


@dataclass(frozen=True)
class DemoPool:
    """One service of the demo: its servers, balance and check (a short interval: a killed backend shows
    "going down" within seconds)."""

    name: str
    balance: str
    servers: tuple[str, ...]
    check: dict[str, Any]
    weights: dict[str, int] = field(default_factory=dict)


# chat/n2 gets twice the weight so the share column shows something other than 25 %.
POOLS = (
    DemoPool(
        "chat",
        "least_conn",
        ("n1", "n2", "n3", "n4"),
        {"type": "websocket", "path": "/ws", "interval_ms": 1000, "rise": 2, "fall": 3},
        {"n2": 2},
    ),
    DemoPool(
        "feed",
        "round_robin",
        ("n1", "n2"),
        {"type": "http", "path": "/health", "interval_ms": 1000, "rise": 2, "fall": 3},
    ),
)
DEFAULT_POOL = "chat"
# (match key, value, pool), tried in order: what the routes view lists.
ROUTES = (("host", FEED_HOST, "feed"), ("path_prefix", FEED_PREFIX, "feed"))


@dataclass
class Demo:
    """Where the demo's pieces listen; backends by POOL/NAME."""

    listen: str
    backends: dict[str, str]


def server_names(pools: tuple[DemoPool, ...] = POOLS) -> list[str]:
    """Every demo server as POOL/NAME, in the order the pools list them."""
    return [f"{pool.name}/{server}" for pool in pools for server in pool.servers]


def _toml(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    return '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'


def demo_config(backends: dict[str, str], listen: str = f"{HOST}:0", pools: tuple[DemoPool, ...] = POOLS) -> str:
    """The demo engine's TOML: one listener, the pools with their servers (`backends`: POOL/NAME -> address),
    the routes. Pure, so a test can check the engine's own parser accepts it."""
    lines = ["[[listener]]", f"address = {_toml(listen)}", f"default_pool = {_toml(DEFAULT_POOL)}", ""]
    for pool in pools:
        lines += ["[[pool]]", f"name = {_toml(pool.name)}", f"balance = {_toml(pool.balance)}", ""]
        lines += ["[pool.check]", *(f"{k} = {_toml(v)}" for k, v in pool.check.items()), ""]
        for server in pool.servers:
            lines += ["[[pool.server]]", f"name = {_toml(server)}"]
            lines.append(f"address = {_toml(backends[f'{pool.name}/{server}'])}")
            if server in pool.weights:
                lines.append(f"weight = {pool.weights[server]}")
            lines.append("")
    for key, value, pool_name in ROUTES:
        lines += ["[[route]]", f"{key} = {_toml(value)}", f"pool = {_toml(pool_name)}", ""]
    return "\n".join(lines)


async def start_backends(launcher: Launcher, names: list[str]) -> dict[str, str]:
    """Start one demo backend process per name on a port it picks; return name -> address."""
    children = {
        name: launcher.spawn(
            f"backend-{name.replace('/', '-')}",
            [sys.executable, "-m", "tui.demo_backend", "--name", name, "--port", "0"],
        )
        for name in names
    }
    backends: dict[str, str] = {}
    for name, child in children.items():
        match = await launcher.wait_line(child, r"demo backend \S+ on (\S+:\d+)", BACKEND_READY_S)
        backends[name] = match[1]
    return backends


def listen_address(status: dict[str, Any]) -> str:
    """The first listener's address as the engine reports it (it bound port 0)."""
    return str(status["listeners"][0]["address"])


async def start_demo(launcher: Launcher, extra_engine_args: list[str] | None = None) -> Demo:
    """Start backends, then the engine (waiting for its control API), then the load on both services."""
    backends = await start_backends(launcher, server_names())
    config = launcher.workdir / "demo.toml"
    config.write_text(demo_config(backends), encoding="utf-8")
    # Its own state file: the demo's pools must never be laid over a real engine's at the default path.
    args = ["-c", str(config), "--state-file", str(launcher.workdir / "state.json")]
    launcher.start_engine(args + (extra_engine_args or []))
    listen = listen_address(await launcher.wait_engine())
    load = [sys.executable, "-m", "tui.demo_load", "--target", listen, "--feed-host", FEED_HOST]
    launcher.spawn("load", [*load, "--feed-prefix", FEED_PREFIX])
    return Demo(listen, backends)
