"""Runtime changes survive a restart: written atomically before the API acknowledges, loaded over the config.

The file records the pool as the operator left it (servers, weights, admin states, drain deadlines) and
the configured servers the operator removed. At start it is laid over the configuration: a server added
to the file since is kept, one removed at runtime stays removed. A corrupt file is moved aside and
reported; the engine then starts from the configuration alone, never with an empty pool because of it.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from proxy_core.config import ServerConfig, parse_address, validate_name, validate_weight
from proxy_core.errors import ConfigError
from proxy_core.registry import ADMIN_STATES, Registry

STATE_VERSION = 1


@dataclass(slots=True)
class ServerState:
    """What the operator set on one server at runtime."""

    config: ServerConfig
    admin: str = "active"
    drain_deadline: float | None = None
    pool: str | None = None  # None: the first pool (files written by a single-pool engine)


@dataclass(slots=True)
class SavedState:
    servers: list[ServerState] = field(default_factory=list)
    removed: set[str] = field(default_factory=set)
    cluster_applied: str | None = None  # the last fleet change applied (proxy_core.cluster), replayed from on start


def default_state_path(control_path: str) -> str:
    """Beside the control socket, named after it: `control.sock` -> `control.state.json`."""
    path = Path(control_path)
    return str(path.with_name(f"{path.stem}.state.json"))


def snapshot(registry: Registry, removed: set[str], cluster_applied: str | None = None) -> dict[str, Any]:
    data = {
        "version": STATE_VERSION,
        "written": time.time(),
        "servers": [
            {
                "name": s.short,
                **({"pool": s.pool} if registry.qualified else {}),
                "address": s.address,
                "weight": s.weight,
                "max_conns": s.max_conns,
                "admin": s.admin,
                "drain_deadline": s.drain_deadline,
            }
            for s in registry
        ],
        "removed": sorted(removed),
    }
    if cluster_applied is not None:
        data["cluster_applied"] = cluster_applied
    return data


def write_atomic(path: str, data: dict[str, Any]) -> None:
    """Temporary file, fsync, rename, fsync the directory: a crash leaves the old file or the new one."""
    target = Path(path)
    target.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, json.dumps(data, indent=1).encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, target)
    dir_fd = os.open(target.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def parse(data: object) -> SavedState:
    """A decoded state file into SavedState; raises ConfigError naming what is wrong."""
    if not isinstance(data, dict) or data.get("version") != STATE_VERSION:
        raise ConfigError("state.version", data.get("version") if isinstance(data, dict) else data, "version 1")
    state = SavedState()
    servers = data.get("servers")
    if not isinstance(servers, list):
        raise ConfigError("state.servers", servers, "a list")
    for i, raw in enumerate(servers):
        key = f"state.servers[{i}]"
        if not isinstance(raw, dict):
            raise ConfigError(key, raw, "an object")
        host, port = parse_address(f"{key}.address", raw.get("address"))
        name = validate_name(f"{key}.name", raw.get("name"))
        weight = validate_weight(f"{key}.weight", raw.get("weight", 1))
        max_conns = raw.get("max_conns")
        if max_conns is not None and (not isinstance(max_conns, int) or max_conns < 1):
            raise ConfigError(f"{key}.max_conns", max_conns, "an integer >= 1 or null")
        admin = raw.get("admin", "active")
        if admin not in ADMIN_STATES:
            raise ConfigError(f"{key}.admin", admin, f"one of {', '.join(ADMIN_STATES)}")
        deadline = raw.get("drain_deadline")
        if deadline is not None and not isinstance(deadline, int | float):
            raise ConfigError(f"{key}.drain_deadline", deadline, "a number or null")
        pool = raw.get("pool")
        if pool is not None:
            validate_name(f"{key}.pool", pool)
        state.servers.append(ServerState(ServerConfig(name, host, port, weight, max_conns), admin, deadline, pool))
    removed = data.get("removed", [])
    if not isinstance(removed, list) or not all(isinstance(n, str) for n in removed):
        raise ConfigError("state.removed", removed, "a list of names")
    state.removed = set(removed)
    applied = data.get("cluster_applied")
    if applied is not None and not isinstance(applied, str):
        raise ConfigError("state.cluster_applied", applied, "a stream entry id or null")
    state.cluster_applied = applied
    return state


def load(path: str) -> tuple[SavedState | None, str | None]:
    """The saved state, or None; a corrupt file is moved aside and the second value says so loudly."""
    target = Path(path)
    if not target.exists():
        return None, None
    try:
        return parse(json.loads(target.read_bytes())), None
    except (OSError, ValueError, ConfigError) as exc:
        aside = target.with_name(f"{target.name}.corrupt-{int(time.time())}")
        try:
            os.replace(target, aside)
            where = f"moved aside to {aside}"
        except OSError as move_error:
            where = f"could not be moved aside ({move_error.strerror})"
        reason = exc.message if isinstance(exc, ConfigError) else str(exc)
        return None, f"state file {path} is unreadable ({reason}); {where}; starting from the configuration"


def in_pool(saved: SavedState, pool: str, first: bool, qualified: bool) -> SavedState:
    """The part of a saved state about one pool (entries without a pool belong to the first), names bare."""
    servers = [s for s in saved.servers if s.pool == pool or (s.pool is None and first)]
    if qualified:
        prefix = f"{pool}/"
        removed = {n[len(prefix) :] for n in saved.removed if n.startswith(prefix)}
        if first:
            removed |= {n for n in saved.removed if "/" not in n}
    else:
        removed = {n.partition("/")[2] if n.startswith(f"{pool}/") else n for n in saved.removed}
    return SavedState(servers, removed, saved.cluster_applied)


def merge(configured: tuple[ServerConfig, ...], saved: SavedState) -> list[ServerState]:
    """The pool to start with: configured servers not removed at runtime, with saved settings by name, plus
    servers added at runtime. Never empty because of the state file: if it would be, the config wins."""
    by_name = {s.config.name: s for s in saved.servers}
    pool: list[ServerState] = []
    for server in configured:
        if server.name in saved.removed:
            continue
        kept = by_name.pop(server.name, None)
        if kept is None:
            pool.append(ServerState(server))
        else:  # the file's address wins; the operator's weight and admin state are laid over it
            pool.append(replace(kept, config=replace(kept.config, host=server.host, port=server.port)))
    configured_names = {s.name for s in configured}
    pool.extend(s for name, s in by_name.items() if name not in configured_names)
    if not pool:
        return [ServerState(s) for s in configured]
    return pool
