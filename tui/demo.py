"""`wsproxy-tui --demo`: four local WebSocket backends, the engine in front, and a synthetic load."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Any

from tui.launcher import Launcher

HOST = "127.0.0.1"
BACKENDS = 4
# b2 gets twice the weight so the share column shows something other than 25 %.
WEIGHTS = {2: 2}
BACKEND_READY_S = 10.0
# Short interval so a killed backend shows "going down" within seconds.
DEMO_CHECK = ["--check", "websocket:/ws", "--check-interval", "1000", "--rise", "2", "--fall", "3"]


@dataclass
class Demo:
    """Where the demo's pieces listen."""

    listen: str
    backends: dict[str, str]


async def start_backends(launcher: Launcher, names: list[str]) -> dict[str, str]:
    """Start one demo backend process per name on a port it picks; return name -> address."""
    children = {
        name: launcher.spawn(
            f"backend-{name}",
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
    """Start backends, then the engine (waiting for its control API), then the load."""
    backends = await start_backends(launcher, [f"b{i}" for i in range(1, BACKENDS + 1)])
    # Its own state file: the demo's pool must never be laid over a real engine's at the default path.
    args = ["--listen", f"{HOST}:0", *DEMO_CHECK, "--state-file", str(launcher.workdir / "state.json")]
    for i, (name, address) in enumerate(backends.items(), start=1):
        weight = WEIGHTS.get(i)
        args += ["--backend", f"{name}={address}" + (f",weight={weight}" if weight else "")]
    launcher.start_engine(args + (extra_engine_args or []))
    listen = listen_address(await launcher.wait_engine())
    launcher.spawn("load", [sys.executable, "-m", "tui.demo_load", "--target", listen])
    return Demo(listen, backends)
