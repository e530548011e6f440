"""`[[pool]]` and `[[route]]` settings: several upstream pools behind the listeners, and the rules between them.

Plain data and checks, no I/O. The single-pool form of today (top-level `balance`, `[check]`, `[[server]]`) is one
pool named DEFAULT_POOL; `pools_of` gives every engine the same view either way.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from proxy_core.checkspec import CheckConfig
from proxy_core.errors import BadRequest, ConfigError, Conflict, NotFound
from proxy_core.routing import Route

if TYPE_CHECKING:  # typing only: config imports this module
    from proxy_core.config import EngineConfig, ServerConfig

DEFAULT_POOL = "default"  # the pool today's single-pool flags and TOML describe
POOL_KEYS = ("name", "balance", "check", "server")
ROUTE_KEYS = ("name", "listener", "host", "path_prefix", "sni", "pool")
ROUTE_FIELDS = ("listener", "host", "path_prefix", "sni", "pool")  # what a route matches on, and where it sends
MAX_ROUTES = 1000  # routes are tried in order per connection: a bound keeps the worst case a short loop


@dataclass(frozen=True, slots=True)
class PoolConfig:
    """One upstream pool: its servers, its balancing policy and its health check."""

    name: str
    servers: tuple[ServerConfig, ...]
    balance: str = "round_robin"
    check: CheckConfig = field(default_factory=CheckConfig)


def pools_of(config: EngineConfig) -> tuple[PoolConfig, ...]:
    """The pools an engine runs: the `[[pool]]` tables, else the single pool of the top-level settings."""
    if config.pools:
        return config.pools
    return (PoolConfig(DEFAULT_POOL, config.servers, config.balance, config.check),)


def _pattern(key: str, value: object) -> str:
    if not isinstance(value, str) or not value.strip() or any(c.isspace() for c in value):
        raise ConfigError(key, value, 'a host name such as "chat.example.com" or "*.example.com"')
    body = value[2:] if value.startswith("*.") else value
    if "*" in body or not body:
        raise ConfigError(key, value, 'an exact name, or "*." followed by a domain')
    return value.lower().rstrip(".")


def parse_route(key: str, raw: object) -> Route:
    """One `[[route]]` table; the pool it names is checked against the pools in check_topology."""
    if not isinstance(raw, dict):
        raise ConfigError(key, raw, "a table")
    for name in raw:
        if name not in ROUTE_KEYS:
            raise ConfigError(f"{key}.{name}", raw[name], f"unknown key; allowed: {', '.join(ROUTE_KEYS)}")
    pool = raw.get("pool")
    if not isinstance(pool, str) or not pool:
        raise ConfigError(f"{key}.pool", pool, 'every route needs pool = "NAME"')
    listener = raw.get("listener")
    if listener is not None and (not isinstance(listener, str) or not listener):
        raise ConfigError(f"{key}.listener", listener, "a listener's address (HOST:PORT)")
    host = _pattern(f"{key}.host", raw["host"]) if "host" in raw else None
    sni = _pattern(f"{key}.sni", raw["sni"]) if "sni" in raw else None
    prefix = raw.get("path_prefix")
    if prefix is not None and (not isinstance(prefix, str) or not prefix.startswith("/")):
        raise ConfigError(f"{key}.path_prefix", prefix, "a path starting with /")
    name = route_name(f"{key}.name", raw["name"]) if "name" in raw else None
    return Route(pool, listener, host, prefix, sni, name)


def route_name(key: str, value: object) -> str:
    """A route's name: a server-style name that is not a number (a number addresses a route by position)."""
    from proxy_core.config import validate_name  # config imports this module

    name = validate_name(key, value)
    if name.isdigit():
        raise ConfigError(key, value, "a name that is not a number (a number is a route's 1-based position)")
    return name


def parse_routes(raw: object) -> tuple[Route, ...]:
    if not isinstance(raw, list):
        raise ConfigError("route", raw, "[[route]] tables")
    if len(raw) > MAX_ROUTES:
        raise ConfigError("route", f"{len(raw)} routes", f"at most {MAX_ROUTES}")
    return tuple(parse_route(f"route[{i}]", table) for i, table in enumerate(raw))


def check_topology(
    pools: Sequence[PoolConfig],
    routes: Sequence[Route],
    listener_addresses: Sequence[str],
    default_pools: Mapping[str, str | None],
) -> None:
    """Names that must agree across tables: unique pools, servers unique within a pool, routes and listener
    `default_pool` naming a pool that exists, route `listener` naming a listener that exists."""
    names: set[str] = set()
    for i, pool in enumerate(pools):
        if pool.name in names:
            raise ConfigError(f"pool[{i}].name", pool.name, "pool names must be unique")
        names.add(pool.name)
        servers: set[str] = set()
        for server in pool.servers:
            if server.name in servers:
                raise ConfigError(
                    f"pool[{i}].server.name", server.name, f"server names must be unique in pool {pool.name}"
                )
            servers.add(server.name)
    known = ", ".join(sorted(names)) or "none"
    route_names: set[str] = set()
    for i, route in enumerate(routes):
        if route.name is not None:
            if route.name in route_names:
                raise ConfigError(f"route[{i}].name", route.name, "route names must be unique")
            route_names.add(route.name)
        if route.pool not in names:
            raise ConfigError(f"route[{i}].pool", route.pool, f"a pool defined by [[pool]] (defined: {known})")
        if route.listener is not None and route.listener not in listener_addresses:
            listeners = ", ".join(listener_addresses)
            raise ConfigError(f"route[{i}].listener", route.listener, f"a listener's address (listeners: {listeners})")
    for address, pool_name in default_pools.items():
        if pool_name is not None and pool_name not in names:
            raise ConfigError(f"listener {address} default_pool", pool_name, f"a defined pool (defined: {known})")


def pool_tables(raw: object) -> list[Mapping[str, Any]]:
    """The `[[pool]]` array, each entry a table with known keys (servers and checks are parsed by config)."""
    if not isinstance(raw, list) or not raw:
        raise ConfigError("pool", raw, "[[pool]] tables")
    for i, table in enumerate(raw):
        if not isinstance(table, dict):
            raise ConfigError(f"pool[{i}]", table, "a table")
        for name in table:
            if name not in POOL_KEYS:
                raise ConfigError(f"pool[{i}].{name}", table[name], f"unknown key; allowed: {', '.join(POOL_KEYS)}")
        if "name" not in table:
            raise ConfigError(f"pool[{i}].name", None, 'every pool needs name = "NAME"')
    return raw


# -- runtime changes (the control API): pure checks and edits of the route list --------------------------------


def route_label(route: Route, position: int) -> str:
    """How messages name a route: `route 2 (chat)` or `route 2`."""
    return f"route {position}" + (f" ({route.name})" if route.name else "")


def route_key(route: Route) -> str:
    """What identifies a route across a restart: its name, else what it matches and where it sends."""
    if route.name is not None:
        return f"name={route.name}"
    return ";".join(f"{k}={getattr(route, k) or ''}" for k in ROUTE_FIELDS)


def find_route(routes: Sequence[Route], ref: str) -> int:
    """The index of the route `ref` names: its 1-based position, or its name."""
    if ref.isascii() and ref.isdigit():
        position = int(ref)
        if not 1 <= position <= len(routes):
            where = f"1..{len(routes)}" if routes else "there are no routes"
            raise NotFound(f"no route at position {position} ({where})")
        return position - 1
    for index, route in enumerate(routes):
        if route.name == ref:
            return index
    named = ", ".join(r.name for r in routes if r.name) or "none"
    raise NotFound(f"no route named {ref!r} (named routes: {named})")


def insert_route(routes: Sequence[Route], route: Route, position: int | None) -> tuple[Route, ...]:
    """The routes with `route` at 1-based `position` (None: last); refused on a taken name or a bad position."""
    if position is not None and not 1 <= position <= len(routes) + 1:
        raise BadRequest(f"field 'position': use 1..{len(routes) + 1} (1 is tried first), got {position}")
    if route.name is not None and any(r.name == route.name for r in routes):
        raise Conflict(f"a route named {route.name!r} already exists")
    if len(routes) >= MAX_ROUTES:
        raise Conflict(f"there are already {len(routes)} routes, the most an engine takes ({MAX_ROUTES})")
    at = len(routes) if position is None else position - 1
    return (*routes[:at], route, *routes[at:])


def check_route_target(route: Route, pools: Sequence[str], listeners: Sequence[str]) -> None:
    """A new route must send to a pool that exists (409: one may be added first) from a listener that exists."""
    if route.pool not in pools:
        raise Conflict(f"route.pool: no pool named {route.pool!r} (pools: {', '.join(pools)}); add the pool first")
    if route.listener is not None and route.listener not in listeners:
        raise BadRequest(f"route.listener: no listener {route.listener!r} (listeners: {', '.join(listeners)})")


def pool_users(
    pool: str, routes: Sequence[Route], defaults: Mapping[str, str | None], servers: Sequence[str]
) -> str | None:
    """Why `pool` cannot be removed now (routes or listeners point at it, it has servers), or None."""
    problems = []
    using = [route_label(r, i + 1) for i, r in enumerate(routes) if r.pool == pool]
    if using:
        problems.append(f"{', '.join(using)} point(s) at it (remove those routes first)")
    listeners = [address for address, default in defaults.items() if default == pool]
    if listeners:
        problems.append(f"it is the default_pool of listener(s) {', '.join(listeners)}")
    if servers:
        problems.append(f"it still has server(s) {', '.join(servers)} (remove them first)")
    return f"pool {pool!r} cannot be removed: {'; '.join(problems)}" if problems else None


def check_to_dict(check: CheckConfig) -> dict[str, Any]:
    """A check as `[pool.check]` keys (parse_check reads it back): for the API, the status and the state file."""
    data: dict[str, Any] = {
        "type": check.type,
        "path": check.path,
        "interval_ms": check.interval_ms,
        "rise": check.rise,
        "fall": check.fall,
        "timeout_ms": check.timeout_ms,
        "expect_status": status_classes(check.expect_status),
        "max_fails": check.max_fails,
    }
    if check.host_header is not None:
        data["host"] = check.host_header
    return data


def status_classes(statuses: frozenset[int]) -> list[str | int]:
    """`{200..399}` as `["2xx", "3xx"]`: whole classes by name, other statuses one by one."""
    out: list[str | int] = []
    for first in range(100, 600, 100):
        members = {s for s in statuses if first <= s < first + 100}
        if len(members) == 100:
            out.append(f"{first // 100}xx")
        else:
            out.extend(sorted(members))
    return out
