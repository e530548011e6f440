"""What the supervisor pushes so a worker routes exactly as the single-process engine: pools, servers, routes, plans.

Pure code. `state` is built from the supervisor's registry and its switchboard's routes and listener plans (the
engine plans them, `Engine._plan_routes`), on every refresh; the worker lays it over its replica (`replicate`,
`routes_of`, `plans_of`). Routes and plans travel as their dataclass fields, so a field added to them travels too.
Route counters are cumulative per route; `route_keys` names each route by its content, so a count follows its
route when others are inserted or removed before it.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict
from typing import TYPE_CHECKING, Any, cast

from proxy_core.balancer import BalancePolicy, make_balancer
from proxy_core.checkspec import CheckConfig
from proxy_core.config import ServerConfig
from proxy_core.routing import ListenerPlan, Route

if TYPE_CHECKING:
    from proxy_core.registry import Registry, Server

State = dict[str, Any]


def state(registry: Registry, routes: Sequence[Route], plans: Mapping[str, ListenerPlan]) -> State:
    """Everything a worker's replica needs; equal states mean nothing to push."""
    return {
        "pools": [[pool.name, pool.balance] for pool in registry.pools.values()],
        "qualified": registry.qualified,
        "servers": [
            [s.name, s.host, s.port, s.weight, s.max_conns, s.admin, s.health.up, s.connect_host, s.pool, s.short]
            for s in registry
        ],
        "routes": [asdict(route) for route in routes],
        "plans": {address: asdict(plan) for address, plan in plans.items()},
    }


def routes_of(pushed: State) -> tuple[Route, ...]:
    return tuple(Route(**fields) for fields in pushed["routes"])


def plans_of(pushed: State) -> dict[str, ListenerPlan]:
    return {address: ListenerPlan(**fields) for address, fields in pushed["plans"].items()}


def replicate(
    registry: Registry,
    pushed: State,
    check: CheckConfig,
    workers: int,
    now: float,
    edge_of: Callable[[Server], Any] = lambda server: None,
) -> None:
    """Lay the pushed state over a worker's replica: same pools, servers, weights, admin states and health.

    A server keeps its counters and connections unless its address or pool changed (then it is replaced);
    `max_conns` is split between the `workers`; `edge_of` gives a new server its send_proxy / TLS settings."""
    registry.qualified = pushed["qualified"]
    sync_pools(registry, pushed["pools"], check)
    rows = pushed["servers"]
    wanted = {row[0]: (row[1], row[2], row[8]) for row in rows}  # name: (host, port, pool)
    for name, old in list(registry.servers.items()):  # gone or moved first, so another can take its address
        if wanted.get(name) != (old.host, old.port, old.pool):
            _drop(registry, name)
    for name, host, port, weight, max_conns, admin, up, connect_host, pool, short in rows:
        server = registry.servers.get(name)
        if server is None:
            per_worker = None if max_conns is None else max(1, math.ceil(max_conns / workers))
            server, _ = registry.add(ServerConfig(short, host, port, weight, per_worker), now, at_start=True, pool=pool)
            server.edge = edge_of(server)
        server.connect_host = connect_host
        server.weight = weight
        server.admin = admin
        server.health.up = bool(up)
    drop_pools(registry, [name for name, _ in pushed["pools"]])
    registry.refresh()


def _drop(registry: Registry, name: str) -> None:
    server = registry.servers.pop(name)
    server.removed = True  # its open connections finish on their own


def sync_pools(registry: Registry, pools: Iterable[Sequence[str]], check: CheckConfig) -> None:
    """Add the pools the replica lacks (with `check`: the worker never judges health) and follow balance changes.

    Pools that went are removed by `drop_pools`, once their servers are gone."""
    for name, balance in pools:
        pool = registry.pools.get(name)
        if pool is None:
            registry.add_pool(name, balance, check)
        elif pool.balance != balance:
            pool.balance = balance
            pool.balancer = make_balancer(cast(BalancePolicy, balance))


def drop_pools(registry: Registry, keep: Iterable[str]) -> None:
    """Remove the replica's pools the supervisor no longer has (never the first; their servers already went)."""
    wanted = set(keep)
    for name in [n for n in registry.pools if n not in wanted and registry.pools[n] is not registry.default]:
        registry.remove_pool(name)


def route_keys(routes: Sequence[Route]) -> list[str]:
    """A name per route from its content (the n-th identical route gets its own), stable across other changes."""
    seen: dict[str, int] = {}
    keys = []
    for route in routes:
        base = repr(route)
        count = seen.get(base, 0)
        seen[base] = count + 1
        keys.append(f"{base}#{count}")
    return keys


def carry_counts(old: Sequence[Route], counts: Sequence[int], new: Sequence[Route]) -> list[int]:
    """The new routes' match counts: a route kept keeps its count, a new one starts at zero."""
    by_key = dict(zip(route_keys(old), counts, strict=False))
    return [by_key.get(key, 0) for key in route_keys(new)]
