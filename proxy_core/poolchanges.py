"""Pools and routes changed at runtime: the Engine's operations, validated before anything changes, like servers.

Mixed into the Engine, with the start-up side (the saved changes laid over the file's pools and routes). Each
change re-plans every listener's routing, refreshes the registry (the hook a supervisor
pushes changes to its workers through), is written to the state file before it is acknowledged and publishes an
operator event. Parsing and checks are poolconfig's, so the file and the API refuse the same things.
"""

from __future__ import annotations

import sys
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any, TypeVar

from proxy_core import statefile
from proxy_core.checker import CheckRunner
from proxy_core.cluster.scope import CHANGE_SCOPE
from proxy_core.config import EngineConfig, format_address, parse_pool
from proxy_core.errors import BadRequest, ConfigError, Conflict, WsproxyError
from proxy_core.events import EventBus, OperatorAction
from proxy_core.health import CheckResult
from proxy_core.poolconfig import (
    PoolConfig,
    check_route_target,
    find_route,
    insert_route,
    parse_route,
    pool_users,
    route_key,
    route_label,
)
from proxy_core.registry import Registry
from proxy_core.routing import Route

if TYPE_CHECKING:
    from proxy_core.cluster.store import Cluster
    from proxy_core.datapath.switchboard import Switchboard

T = TypeVar("T")
SHOWN = ("name", "listener", "host", "path_prefix", "sni", "pool")  # a route's fields in the API


class PoolChanges:
    """add_pool, remove_pool, add_route, remove_route and their read side; state lives on the Engine."""

    registry: Registry
    bus: EventBus
    board: Switchboard
    cluster: Cluster | None
    checkers: dict[str, CheckRunner]
    routes: tuple[Route, ...]
    configured_routes: tuple[Route, ...]
    routes_changed: bool
    runtime_pools: dict[str, PoolConfig]
    configured_pools: set[str]
    removed_pools: set[str]
    removed_routes: set[str]
    listen_names: dict[str, tuple[str, str | None, bool]]
    config: EngineConfig
    pool_configs: tuple[PoolConfig, ...]

    async def _operate(self, action: str, name: str | None, fn: Callable[[], Awaitable[T]], detail: str) -> T:
        raise NotImplementedError

    def _plan_routes(self) -> None:
        raise NotImplementedError

    def default_pool(self, configured: str | None) -> str | None:
        raise NotImplementedError

    def _check_result(self, name: str, result: CheckResult) -> None:
        raise NotImplementedError

    def _resolved(self, name: str, address: str) -> None:
        raise NotImplementedError

    def pools_status(self) -> list[dict[str, Any]]:
        raise NotImplementedError

    # -- start ---------------------------------------------------------------------------------------

    def _load_topology(self, saved: statefile.SavedState) -> tuple[PoolConfig, ...]:
        """The saved pool and route changes laid over the configured ones; returns the pools to load servers into."""
        specs = statefile.merge_pools(self.pool_configs, saved)
        names = {spec.name for spec in specs}
        for spec in self.pool_configs:
            if spec.name not in names:
                self.registry.pools.pop(spec.name, None)  # empty still: no server was loaded yet
                self.removed_pools.add(spec.name)
                kept = [
                    s.name for s in spec.servers if self.registry.display_name(spec.name, s.name) not in saved.removed
                ]
                if kept:
                    left = ", ".join(kept)
                    print(
                        f"wsproxy: WARNING: pool {spec.name} was removed at runtime; its configured servers "
                        f"({left}) are not started (take the pool out of the file, or add it again)",
                        file=sys.stderr,
                    )
        for spec in specs:
            if spec.name not in self.configured_pools:
                self.runtime_pools[spec.name] = spec
            if spec.name not in self.registry.pools:
                self.registry.add_pool(spec.name, spec.balance, spec.check)
        listeners = {format_address(x.host, x.port) for x in self.config.listen}
        self.routes, dropped = statefile.merge_routes(self.configured_routes, saved, names, listeners)
        self.routes_changed = saved.routes is not None
        self.removed_routes = saved.removed_routes & {route_key(r) for r in self.configured_routes}
        lost = sorted(
            {f"{s.pool}/{s.config.name}" for s in saved.servers if s.pool is not None and s.pool not in names}
        )
        if lost:
            dropped.append(f"saved server(s) {', '.join(lost)} skipped: their pool is no longer defined")
        for line in dropped:
            print(f"wsproxy: WARNING: {line}", file=sys.stderr)
        return specs

    # -- reading ------------------------------------------------------------------------------------

    def routes_status(self) -> list[dict[str, Any]]:
        """The routes in the order they are tried: position (1-based, how commands name it), index, fields, matches."""
        configured = {route_key(r) for r in self.configured_routes}
        return [
            {
                "position": i + 1,
                "index": i,
                **{k: getattr(route, k) for k in SHOWN},
                "matched": matched,
                "added": route_key(route) not in configured,
            }
            for i, (route, matched) in enumerate(zip(self.routes, self.board.route_matched, strict=True))
        ]

    def topology_state(self) -> statefile.Topology:
        return statefile.Topology(
            pools=tuple(self.runtime_pools.values()),
            removed_pools=frozenset(self.removed_pools),
            routes=self.routes if self.routes_changed else None,
            configured_routes=self.configured_routes,
            removed_routes=frozenset(self.removed_routes),
        )

    def pool_in_use(self, pool: str) -> bool:
        """A route or a listener's default sends new connections there (the first pool always counts as used)."""
        if pool == self.registry.default.name or any(r.pool == pool for r in self.routes):
            return True
        return pool in self._listener_defaults().values()

    def listener_names(self) -> list[str]:
        """Every listener as routes may name it: the configured address, then the bound one where it differs."""
        names = [name for name, _default, _tls in self.listen_names.values()]
        return names + [a for a, (name, _d, _t) in self.listen_names.items() if a != name]

    def _listener_defaults(self) -> dict[str, str | None]:
        return {address: self.default_pool(default) for address, (_n, default, _t) in self.listen_names.items()}

    # -- changes ------------------------------------------------------------------------------------

    def _per_instance(self, action: str, what: str) -> None:
        """In a fleet, pool and route changes are not shared yet: refused unless asked for this instance only."""
        scope = CHANGE_SCOPE.get()
        if self.cluster is None or scope.local or scope.from_stream:
            return
        problem = (
            f"pool and route changes are per instance, not shared through the fleet store {self.cluster.store}: "
            f"use --local (?local=true) on each instance to {action} {what}"
        )
        self.bus.publish(OperatorAction(action=action, server=None, ok=False, detail=problem))
        raise Conflict(problem)

    async def add_pool(
        self, name: str, balance: str | None = None, check: Mapping[str, Any] | None = None
    ) -> dict[str, Any]:
        """A new, empty pool with its own health checks; servers join it with add (POOL/NAME)."""
        self._per_instance("add-pool", name)

        async def run() -> dict[str, Any]:
            raw: dict[str, Any] = {"name": name}
            if balance is not None:
                raw["balance"] = balance
            if check is not None:
                raw["check"] = dict(check)
            try:
                spec = parse_pool("pool", raw)
            except ConfigError as exc:
                raise BadRequest(exc.message) from exc
            self.registry.add_pool(spec.name, spec.balance, spec.check)
            runner = CheckRunner(spec.check, self._check_result, on_address=self._resolved)
            self.checkers[spec.name] = runner
            self.removed_pools.discard(spec.name)
            if spec.name not in self.configured_pools:
                self.runtime_pools[spec.name] = spec
            self._topology_changed()
            return self._pool_dict(spec.name)

        detail = f"added pool {name} ({balance or 'round_robin'})"
        return await self._operate("add-pool", None, run, detail)

    async def remove_pool(self, name: str) -> str:
        """Refused while a route, a listener's default or a server still uses it: removing it loses nothing."""
        self._per_instance("remove-pool", name)

        async def run() -> str:
            self.registry.pool(name)  # 404 naming the pools
            if name == self.registry.default.name:
                raise Conflict(f"pool {name!r} is the first pool; it cannot be removed")
            servers = [s.name for s in self.registry.in_pool(name)]
            problem = pool_users(name, self.routes, self._listener_defaults(), servers)
            if problem is not None:
                raise Conflict(problem)
            self.registry.remove_pool(name)
            checker = self.checkers.pop(name, None)
            if checker is not None:
                await checker.close()
            if self.runtime_pools.pop(name, None) is None:
                self.removed_pools.add(name)
            self._topology_changed()
            return name

        return await self._operate("remove-pool", None, run, f"removed pool {name}")

    async def add_route(self, fields: Mapping[str, Any], position: int | None = None) -> dict[str, Any]:
        """A route at a 1-based position (default: last, tried after the others), to a pool that exists."""
        self._per_instance("add-route", str(fields.get("pool")))

        async def run() -> dict[str, Any]:
            try:
                route = parse_route("route", dict(fields))
            except ConfigError as exc:
                raise BadRequest(exc.message) from exc
            route = self._listener_as_configured(route)
            check_route_target(route, list(self.registry.pools), self.listener_names())
            routes = insert_route(self.routes, route, position)
            self.removed_routes.discard(route_key(route))
            self._set_routes(routes)
            return self.routes_status()[len(routes) - 1 if position is None else position - 1]

        where = "last" if position is None else f"at position {position}"
        detail = f"added a route to {fields.get('pool')} {where}"
        return await self._operate("add-route", None, run, detail)

    async def remove_route(self, ref: str) -> dict[str, Any]:
        """By name or 1-based position; connections it routed stay where they are."""
        self._per_instance("remove-route", ref)
        removed: dict[str, Any] = {}

        async def run() -> dict[str, Any]:
            index = find_route(self.routes, ref)
            removed.update(self.routes_status()[index])
            route = self.routes[index]
            if route_key(route) in {route_key(r) for r in self.configured_routes}:
                self.removed_routes.add(route_key(route))
            self._set_routes(self.routes[:index] + self.routes[index + 1 :])
            return removed

        try:
            index = find_route(self.routes, ref)
            label = f"{route_label(self.routes[index], index + 1)} to {self.routes[index].pool}"
        except WsproxyError:
            label = f"route {ref}"
        return await self._operate("remove-route", None, run, f"removed {label}")

    # -- helpers ------------------------------------------------------------------------------------

    def _listener_as_configured(self, route: Route) -> Route:
        """A route naming a listener by its bound address (port 0 resolved) is kept under the configured one."""
        if route.listener in self.listen_names:
            configured = self.listen_names[route.listener][0]
            return Route(route.pool, configured, route.host, route.path_prefix, route.sni, route.name)
        return route

    def _set_routes(self, routes: tuple[Route, ...]) -> None:
        """Swap in a new route list: each kept route keeps its match count, every listener is planned again."""
        matched = {id(r): m for r, m in zip(self.routes, self.board.route_matched, strict=True)}
        self.board.route_matched = [matched.get(id(r), 0) for r in routes]
        self.routes = routes
        self.board.routes = routes
        self.routes_changed = True
        self._topology_changed()

    def _topology_changed(self) -> None:
        self._plan_routes()
        self.registry.refresh()

    def _pool_dict(self, name: str) -> dict[str, Any]:
        return next(p for p in self.pools_status() if p["name"] == name)
