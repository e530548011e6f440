"""`[[pool]]` and `[[route]]` settings: several upstream pools behind the listeners, and the rules between them.

Plain data and checks, no I/O. The single-pool form of today (top-level `balance`, `[check]`, `[[server]]`) is one
pool named DEFAULT_POOL; `pools_of` gives every engine the same view either way.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from proxy_core.checkspec import CheckConfig
from proxy_core.errors import ConfigError
from proxy_core.routing import Route

if TYPE_CHECKING:  # typing only: config imports this module
    from proxy_core.config import EngineConfig, ServerConfig

DEFAULT_POOL = "default"  # the pool today's single-pool flags and TOML describe
POOL_KEYS = ("name", "balance", "check", "server")
ROUTE_KEYS = ("listener", "host", "path_prefix", "sni", "pool")
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
    return Route(pool, listener, host, prefix, sni)


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
    for i, route in enumerate(routes):
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
