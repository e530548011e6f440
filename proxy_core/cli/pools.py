"""`wsproxy pools|routes` and `wsproxy pool add|remove`, `wsproxy route add|remove`: pools and routes at run time.

Values are checked here with the config file's own parsers (exit 2 naming the key) before the engine is asked,
which checks them again against what it runs (a duplicate pool, a route to a missing pool: exit 1).
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from typing import Any

from proxy_core.cli.format import describe_pool, format_pools, format_route, format_routes
from proxy_core.config import BALANCE_POLICIES, CHECK_TYPES, parse_check
from proxy_core.errors import ConfigError
from proxy_core.poolconfig import parse_route
from proxy_core.sources import Source

JSON = dict[str, Any]
Register = Callable[..., argparse.ArgumentParser]


def check_table(args: argparse.Namespace) -> JSON | None:
    """`--check http:/health --rise 2 ...` as a `[pool.check]` table, checked like the file's (exit 2 if bad)."""
    table: JSON = {}
    if args.check is not None:
        kind, _, path = args.check.partition(":")
        table["type"] = kind
        if path:
            table["path"] = path
    for key in ("interval_ms", "timeout_ms", "rise", "fall", "max_fails"):
        value = getattr(args, key)
        if value is not None:
            table[key] = value
    if not table:
        return None
    try:
        parse_check(table)
    except ConfigError as exc:
        raise usage(exc.message) from exc
    return table


def route_fields(args: argparse.Namespace) -> JSON:
    """The route's conditions as `[[route]]` keys, checked like the file's (exit 2 naming the key)."""
    fields = {
        "name": args.name,
        "listener": args.listener,
        "host": args.host,
        "path_prefix": args.path_prefix,
        "sni": args.sni,
    }
    fields = {k: v for k, v in fields.items() if v is not None}
    try:
        parse_route("route", {**fields, "pool": args.pool})
    except ConfigError as exc:
        raise usage(exc.message) from exc
    return fields


def usage(message: str) -> Exception:
    """The CLI's usage error (exit 2), imported late: commands.py imports this module."""
    from proxy_core.cli.commands import UsageError

    return UsageError(message)


def register(commands: Any, common: argparse.ArgumentParser, make: Register, scope: Callable[..., None]) -> None:
    """Add the commands to the CLI's subparsers; `make(subparsers, name, action, text)` builds one."""
    p = make(commands, "pools", cmd_pools, "list the pools: balance, servers up, connections, health check")
    p.add_argument("--json", action="store_true", help="print GET /v1/pools as JSON")
    p = make(commands, "routes", cmd_routes, "list the routes in the order they are tried, with their matches")
    p.add_argument("--json", action="store_true", help="print GET /v1/routes as JSON")

    pool = commands.add_parser("pool", help="add or remove a pool", description="add or remove a pool")
    pools = pool.add_subparsers(dest="pool_command", required=True, metavar="add|remove")
    p = make(pools, "add", cmd_pool_add, "add an empty pool (servers join with `wsproxy add NAME ADDR --pool P`)")
    p.add_argument("pool_name", metavar="NAME")
    p.add_argument("--balance", choices=BALANCE_POLICIES, help="round_robin (default), least_conn or ip_hash")
    p.add_argument("--check", metavar="TYPE[:PATH]", help=f"the pool's health check: {', '.join(CHECK_TYPES)}")
    p.add_argument("--check-interval", dest="interval_ms", type=int, metavar="MS")
    p.add_argument("--check-timeout", dest="timeout_ms", type=int, metavar="MS")
    p.add_argument("--rise", type=int, metavar="N")
    p.add_argument("--fall", type=int, metavar="N")
    p.add_argument("--max-fails", dest="max_fails", type=int, metavar="N")
    p.add_argument("--json", action="store_true", help="print the new POOL as JSON")
    scope(p)
    p = make(pools, "remove", cmd_pool_remove, "remove an unused pool (no route, default or server points at it)")
    p.add_argument("pool_name", metavar="NAME")
    scope(p)

    route = commands.add_parser("route", help="add or remove a route", description="add or remove a route")
    routes = route.add_subparsers(dest="route_command", required=True, metavar="add|remove")
    p = make(routes, "add", cmd_route_add, "add a route to a pool (first match wins; default: tried last)")
    p.add_argument("--pool", required=True, help="where the matching connections go")
    p.add_argument("--listener", metavar="HOST:PORT", help="only connections to this listener")
    p.add_argument("--host", help='the Host header: "chat.example.com" or "*.example.com"')
    p.add_argument("--path-prefix", metavar="PATH", help='"/chat" takes /chat and /chat/..., not /chatroom')
    p.add_argument("--sni", help="the TLS server name (same patterns as --host)")
    p.add_argument("--name", help="a name to address it by (else its position)")
    p.add_argument("--position", type=_position, metavar="K", help="1-based place among the routes (default: last)")
    p.add_argument("--json", action="store_true", help="print the new ROUTE as JSON")
    scope(p)
    p = make(routes, "remove", cmd_route_remove, "remove a route by its position (`wsproxy routes`) or name")
    p.add_argument("ref", metavar="POSITION|NAME")
    scope(p)


def _position(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"invalid position {text!r}: a route's 1-based place (1 is tried first)")
    return int(text)


async def cmd_pools(client: Source, args: argparse.Namespace) -> int:
    data = await client.pools()
    print(json.dumps(data, indent=2) if args.json else format_pools(data.get("pools") or []))
    return 0


async def cmd_routes(client: Source, args: argparse.Namespace) -> int:
    data = await client.routes()
    print(json.dumps(data, indent=2) if args.json else format_routes(data))
    return 0


async def cmd_pool_add(client: Source, args: argparse.Namespace) -> int:
    pool = await client.add_pool(args.pool_name, args.balance, check_table(args))
    print(json.dumps(pool, indent=2) if args.json else f"added {describe_pool(pool)}")
    return 0


async def cmd_pool_remove(client: Source, args: argparse.Namespace) -> int:
    result = await client.remove_pool(args.pool_name)
    print(f"removed pool {result.get('removed', args.pool_name)}")
    return 0


async def cmd_route_add(client: Source, args: argparse.Namespace) -> int:
    route = await client.add_route(args.pool, args.position, **route_fields(args))
    print(json.dumps(route, indent=2) if args.json else f"added {format_route(route)}")
    return 0


async def cmd_route_remove(client: Source, args: argparse.Namespace) -> int:
    result = await client.remove_route(args.ref)
    print(f"removed {format_route(result.get('removed') or {})}")
    return 0
