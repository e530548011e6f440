"""Runtime changes survive a restart: written atomically before the API acknowledges, loaded over the config.

The file records the pool as the operator left it (servers, weights, admin states, drain deadlines) and
the configured servers the operator removed. At start it is laid over the configuration: a server added
to the file since is kept, one removed at runtime stays removed. Pools and routes the same way: pools added at
runtime are kept, configured ones removed stay removed, and once routes were changed at runtime their order is
the file's. A corrupt file is moved aside and reported; the engine then starts from the configuration alone,
never with an empty pool because of it.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from proxy_core.config import ServerConfig, parse_address, parse_pool, validate_name, validate_weight
from proxy_core.errors import ConfigError
from proxy_core.poolconfig import ROUTE_KEYS, PoolConfig, check_to_dict, parse_route, route_key
from proxy_core.registry import ADMIN_STATES, Registry
from proxy_core.routing import Route

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
    pools: list[PoolConfig] = field(default_factory=list)  # added at runtime (no servers here: those are above)
    removed_pools: set[str] = field(default_factory=set)  # configured pools removed at runtime
    routes: list[tuple[Route, bool]] | None = None  # (route, added at runtime), once routes changed at runtime
    removed_routes: set[str] = field(default_factory=set)  # route_key of configured routes removed at runtime


@dataclass(frozen=True, slots=True)
class Topology:
    """The runtime changes to pools and routes, as the engine holds them, for the state file."""

    pools: tuple[PoolConfig, ...] = ()
    removed_pools: frozenset[str] = frozenset()
    routes: tuple[Route, ...] | None = None  # None: the configured routes, unchanged
    configured_routes: tuple[Route, ...] = ()
    removed_routes: frozenset[str] = frozenset()


def default_state_path(control_path: str) -> str:
    """Beside the control socket, named after it: `control.sock` -> `control.state.json`."""
    path = Path(control_path)
    return str(path.with_name(f"{path.stem}.state.json"))


def snapshot(
    registry: Registry, removed: set[str], cluster_applied: str | None = None, topology: Topology | None = None
) -> dict[str, Any]:
    first = registry.default.name
    data: dict[str, Any] = {
        "version": STATE_VERSION,
        "written": time.time(),
        "servers": [
            {
                "name": s.short,
                **({"pool": s.pool} if registry.qualified or s.pool != first else {}),
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
    if topology is not None:
        data.update(topology_dict(topology))
    return data


def topology_dict(topology: Topology) -> dict[str, Any]:
    """The pool and route keys of the file; absent keys mean "as configured" (so files of older engines load)."""
    data: dict[str, Any] = {}
    if topology.pools:
        data["pools"] = [
            {"name": p.name, "balance": p.balance, "check": check_to_dict(p.check)} for p in topology.pools
        ]
    if topology.removed_pools:
        data["removed_pools"] = sorted(topology.removed_pools)
    if topology.routes is not None:
        configured = {route_key(r) for r in topology.configured_routes}
        data["routes"] = [{**route_fields(r), "added": route_key(r) not in configured} for r in topology.routes]
    if topology.removed_routes:
        data["removed_routes"] = sorted(topology.removed_routes)
    return data


def route_fields(route: Route) -> dict[str, Any]:
    """A route as its `[[route]]` keys, the unset ones left out (parse_route reads it back)."""
    return {k: getattr(route, k) for k in ROUTE_KEYS if getattr(route, k) is not None}


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
    parse_topology(data, state)
    return state


def _names(key: str, value: object) -> set[str]:
    if not isinstance(value, list) or not all(isinstance(n, str) for n in value):
        raise ConfigError(key, value, "a list of names")
    return set(value)


def parse_topology(data: dict[str, Any], state: SavedState) -> None:
    """The optional pool and route keys, checked like the file's `[[pool]]` and `[[route]]` tables."""
    pools = data.get("pools", [])
    if not isinstance(pools, list):
        raise ConfigError("state.pools", pools, "a list")
    for i, raw in enumerate(pools):
        key = f"state.pools[{i}]"
        if not isinstance(raw, dict) or "name" not in raw or not set(raw) <= {"name", "balance", "check"}:
            raise ConfigError(key, raw, "an object with name, balance and check")
        state.pools.append(parse_pool(key, raw))
    state.removed_pools = _names("state.removed_pools", data.get("removed_pools", []))
    state.removed_routes = _names("state.removed_routes", data.get("removed_routes", []))
    routes = data.get("routes")
    if routes is None:
        return
    if not isinstance(routes, list):
        raise ConfigError("state.routes", routes, "a list")
    state.routes = []
    for i, raw in enumerate(routes):
        if not isinstance(raw, dict):
            raise ConfigError(f"state.routes[{i}]", raw, "an object")
        added = raw.get("added", False)
        if not isinstance(added, bool):
            raise ConfigError(f"state.routes[{i}].added", added, "true or false")
        route = parse_route(f"state.routes[{i}]", {k: v for k, v in raw.items() if k != "added"})
        state.routes.append((route, added))


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


def merge_pools(configured: tuple[PoolConfig, ...], saved: SavedState) -> tuple[PoolConfig, ...]:
    """The pools to start with: the configured ones not removed at runtime (never the first), then those added at
    runtime that the configuration does not define (if it does now, the file's definition wins)."""
    first = configured[0]
    kept = [p for p in configured if p is first or p.name not in saved.removed_pools]
    names = {p.name for p in configured}
    kept.extend(p for p in saved.pools if p.name not in names)
    return tuple(kept)


def merge_routes(
    configured: tuple[Route, ...], saved: SavedState, pools: set[str], listeners: set[str]
) -> tuple[tuple[Route, ...], list[str]]:
    """The routes to start with, and a line for each saved route dropped.

    Without runtime changes, the configured routes. Else the saved order: a configured route is kept while the
    file still has it (the file's version), a runtime one while its pool and listener exist; a route new in the
    file goes after the configured route before it, unless the operator removed it at runtime."""
    if saved.routes is None:
        return configured, []
    by_key = {route_key(r): r for r in configured}
    routes: list[Route] = []
    dropped: list[str] = []
    for route, added in saved.routes:
        key = route_key(route)
        if key in by_key:
            routes.append(by_key[key])
        elif not added:
            continue  # taken out of the file since: the file wins
        elif route.pool not in pools or (route.listener is not None and route.listener not in listeners):
            dropped.append(f"saved route to pool {route.pool} dropped: its pool or listener is gone")
        else:
            routes.append(route)
    placed = {route_key(r) for r in routes}
    for i, route in enumerate(configured):
        key = route_key(route)
        if key in placed or key in saved.removed_routes:
            continue
        before = [j for j, r in enumerate(routes) if route_key(r) in {route_key(c) for c in configured[:i]}]
        routes.insert(before[-1] + 1 if before else 0, route)
        placed.add(key)
    return tuple(routes), dropped
