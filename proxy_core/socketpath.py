"""Where the control socket is: the default path, whether an engine answers there, and where else one does.

One place for the CLI, `wsproxy serve` and the dashboard, so an engine the dashboard starts is found by a
`wsproxy status` typed in another shell. An engine "answers" when `GET /v1/status` returns; a socket file
nobody answers on is stale and the engine replaces it at start (control/server.py).
"""

from __future__ import annotations

import asyncio
import os
import stat
import tempfile
from collections.abc import Mapping
from pathlib import Path

from proxy_core.client import ControlClient, ControlError, ControlUnavailable

CONTROL_ENV = "WSPROXY_CONTROL"
SOCKET_NAME = "control.sock"
# The dashboard's fresh directories (tui/launcher.py), used when the default path is taken.
LAUNCH_DIR_PREFIX = "wsproxy-tui-"
# A local engine answers `GET /v1/status` in milliseconds; one that takes longer is not worth waiting on here.
PROBE_TIMEOUT_S = 1.0
# The temporary directory may hold many dashboards' leftovers; look at no more than this many.
MAX_CANDIDATES = 32


def default_control_path(env: Mapping[str, str] | None = None, cwd: Path | None = None) -> str:
    """`$WSPROXY_CONTROL`, else under `$XDG_RUNTIME_DIR`, else under the working directory."""
    env = os.environ if env is None else env
    explicit = env.get(CONTROL_ENV)
    if explicit:
        return explicit
    runtime = env.get("XDG_RUNTIME_DIR")
    base = Path(runtime) / "wsproxy" if runtime else (cwd or Path.cwd()) / ".wsproxy"
    return str(base / SOCKET_NAME)


def is_socket(path: str) -> bool:
    """A unix socket file is there (stale or live)."""
    try:
        return stat.S_ISSOCK(os.lstat(path).st_mode)
    except OSError:
        return False


async def answers(path: str, timeout: float = PROBE_TIMEOUT_S) -> bool:
    """A wsproxy engine answers `GET /v1/status` on this socket."""
    if not is_socket(path):
        return False
    try:
        async with ControlClient(uds=path, timeout=timeout) as client:
            await client.status()
    except (ControlUnavailable, ControlError):
        return False
    return True


def usual_places(env: Mapping[str, str] | None = None, cwd: Path | None = None) -> list[str]:
    """Sockets an engine of this user is likely on: every default location, then the dashboard's fresh ones."""
    env = os.environ if env is None else env
    places = [default_control_path(env, cwd)]
    if env.get("XDG_RUNTIME_DIR"):
        places.append(str(Path(env["XDG_RUNTIME_DIR"]) / "wsproxy" / SOCKET_NAME))
    places.append(str((cwd or Path.cwd()) / ".wsproxy" / SOCKET_NAME))
    launched = sorted(Path(tempfile.gettempdir()).glob(f"{LAUNCH_DIR_PREFIX}*/{SOCKET_NAME}"))
    places += [str(p) for p in launched[:MAX_CANDIDATES]]
    return list(dict.fromkeys(places))


async def live_sockets(exclude: str | None = None) -> list[str]:
    """The usual places where an engine answers now (probed at once, each bounded by PROBE_TIMEOUT_S)."""
    candidates = [p for p in usual_places() if p != exclude and is_socket(p)]
    found = await asyncio.gather(*(answers(p) for p in candidates))
    return [path for path, live in zip(candidates, found, strict=True) if live]


async def launch_path(fallback: str) -> tuple[str, str | None]:
    """The socket a new engine should use: the default unless it is taken, else `fallback`; and why not."""
    default = default_control_path()
    if await answers(default):
        return fallback, f"an engine already answers at {default}"
    if os.path.lexists(default) and not is_socket(default):
        return fallback, f"{default} is a file that is not a socket"
    if is_socket(default) and await _accepts(default):
        return fallback, f"another program listens at {default}"
    return default, None


async def _accepts(path: str) -> bool:
    """Something accepts connections there (not a wsproxy, or it did not answer in time)."""
    try:
        async with asyncio.timeout(PROBE_TIMEOUT_S):
            _, writer = await asyncio.open_unix_connection(path)
    except (OSError, TimeoutError):
        return False
    writer.close()
    return True


def cli_hint(path: str) -> str:
    """The command that reads this engine from another shell."""
    if path == default_control_path():
        return "wsproxy status"
    return f"wsproxy status --control {path}"
