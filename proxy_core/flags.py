"""The engine's command-line flags, shared by `wsproxy serve` and `wsproxy-tui`, laid over the TOML file."""

from __future__ import annotations

import argparse
import socket
from dataclasses import replace

from proxy_core.checkspec import CheckConfig
from proxy_core.config import (
    BALANCE_POLICIES,
    EngineConfig,
    check_unique,
    check_unique_listeners,
    load_file,
    parse_backend_flag,
    parse_check,
    parse_check_flag,
    parse_cluster,
    parse_listen,
    parse_resolve,
    parse_workers,
    validate_name,
)
from proxy_core.edgeconfig import LimitsConfig, parse_limits, parse_listen_flag
from proxy_core.errors import ConfigError
from proxy_core.poolconfig import pools_of


def add_engine_flags(parser: argparse.ArgumentParser) -> None:
    """The flags shared by `wsproxy serve` and `wsproxy-tui` (which passes them to its child engine)."""
    parser.add_argument("-c", "--config", metavar="FILE", help="TOML configuration file")
    parser.add_argument(
        "--listen",
        action="append",
        metavar="HOST:PORT[,cert=FILE,key=FILE][,proxy_protocol]",
        help="listener (repeatable); replaces the file's listeners",
    )
    parser.add_argument(
        "--backend",
        action="append",
        metavar="[NAME=]HOST:PORT[,weight=N][,max_conns=N][,send_proxy=v1|v2][,tls]",
        help="upstream server (repeatable); replaces the file's servers",
    )
    parser.add_argument("--balance", choices=BALANCE_POLICIES, help="balancing policy")
    parser.add_argument("--check", metavar="tcp|none|http:/PATH|websocket:/PATH", help="health check type")
    parser.add_argument("--check-interval", type=int, metavar="MS", help="check interval (default 3000)")
    parser.add_argument("--rise", type=int, metavar="N", help="passes to mark a server up (default 2)")
    parser.add_argument("--fall", type=int, metavar="N", help="failures to mark a server down (default 5)")
    parser.add_argument("--check-timeout", type=int, metavar="MS", help="check timeout (default 1000)")
    parser.add_argument(
        "--max-fails", type=int, metavar="N", help="connect failures from traffic that mark a server down (0 = off)"
    )
    parser.add_argument("--connect-timeout", type=float, metavar="S", help="connect timeout per attempt (default 3)")
    parser.add_argument(
        "--idle-timeout", type=float, metavar="S", help="idle timeout of established tunnels (default 0 = off)"
    )
    parser.add_argument("--retries", type=int, metavar="N", help="connect attempts on other servers (default 2)")
    parser.add_argument(
        "--shutdown-grace", type=float, metavar="S", help="grace for connections on SIGTERM (default 10)"
    )
    parser.add_argument(
        "--resolve",
        metavar="strict|lazy",
        help="a server host that does not resolve: stop the start (strict, default) or start it down (lazy)",
    )
    parser.add_argument("--workers", metavar="N|auto", help="engine processes sharing the listeners (default 1)")
    parser.add_argument("--max-conns-per-client", type=int, metavar="N", help="open connections per client address")
    parser.add_argument(
        "--new-conns-per-client", metavar="RATE[/BURST]", help="new connections/s per client address (token bucket)"
    )
    parser.add_argument("--max-accept-rate", type=float, metavar="RATE", help="new connections/s for the engine")
    parser.add_argument("--no-handshake-log", action="store_true", help="do not parse heads (lean mode)")
    parser.add_argument(
        "--state-file", metavar="PATH", help="runtime changes survive restarts (default: beside the control socket)"
    )
    parser.add_argument("--access-log", metavar="PATH|-", help="JSON lines, one per closed connection")
    parser.add_argument("--control", metavar="PATH", help="control socket path")
    parser.add_argument("--control-tcp", metavar="HOST:PORT", help="also serve the control API on TCP (token required)")
    parser.add_argument("--token-file", metavar="PATH", help="bearer token for the TCP control API")
    parser.add_argument("--cluster", metavar="redis://HOST:PORT/DB", help="join a fleet sharing one admin state")
    parser.add_argument("--instance", metavar="NAME", help="this instance's name in the fleet (default: host name)")
    parser.add_argument("--cluster-password-file", metavar="PATH", help="the fleet store's password")
    parser.add_argument(
        "--status-listen", metavar="HOST:PORT", help="serve /status and /metrics on TCP, like the seed's port 9000"
    )


def build_config(args: argparse.Namespace) -> EngineConfig:
    """The file's settings with the flags on top; raises ConfigError naming the bad key or flag."""
    config = single_pool(load_file(args.config) if args.config else EngineConfig())
    changes: dict[str, object] = {}
    if args.listen:
        changes["listen"] = tuple(parse_listen_flag(value, parse_listen) for value in args.listen)
        check_unique_listeners(changes["listen"])  # type: ignore[arg-type]
    if args.backend:
        servers = tuple(parse_backend_flag(value, i) for i, value in enumerate(args.backend))
        check_unique(servers)
        changes["servers"] = servers
    if args.balance:
        changes["balance"] = args.balance
    changes["check"] = check_flags(args, config.check)
    timeouts = config.timeouts
    for flag, field, value in (
        ("--connect-timeout", "connect", args.connect_timeout),
        ("--idle-timeout", "idle", args.idle_timeout),
        ("--shutdown-grace", "shutdown_grace", args.shutdown_grace),
    ):
        if value is not None:
            if value < 0:
                raise ConfigError(flag, value, "a number of seconds >= 0")
            timeouts = replace(timeouts, **{field: float(value)})
    changes["timeouts"] = timeouts
    if args.retries is not None:
        if not 0 <= args.retries <= 100:
            raise ConfigError("--retries", args.retries, "an integer in 0..100")
        changes["retries"] = args.retries
    if args.resolve is not None:
        changes["resolve"] = parse_resolve("--resolve", args.resolve)
    if args.workers is not None:
        changes["workers"] = parse_workers("--workers", args.workers)
    changes["limits"] = limit_flags(args, config.limits)
    if args.no_handshake_log:
        changes["handshake_log"] = False
    if args.access_log:
        changes["access_log"] = args.access_log
    if args.state_file:
        changes["state_file"] = args.state_file
    control = config.control
    if args.control:
        control = replace(control, socket=args.control)
    if args.control_tcp:
        parse_listen("--control-tcp", args.control_tcp)
        control = replace(control, tcp=args.control_tcp)
    if args.token_file:
        control = replace(control, token_file=args.token_file)
    if args.status_listen:
        parse_listen("--status-listen", args.status_listen)
        control = replace(control, status_listen=args.status_listen)
    changes["control"] = control
    cluster_flags = {
        "url": args.cluster,
        "instance": args.instance,
        "password_file": args.cluster_password_file,
    }
    flag_cluster = {k: v for k, v in cluster_flags.items() if v}
    cluster = parse_cluster(flag_cluster, config.cluster) if flag_cluster else config.cluster
    if cluster.url and not cluster.instance:
        cluster = replace(cluster, instance=validate_name("--instance", socket.gethostname().split(".")[0]))
    changes["cluster"] = cluster
    if len(config.pools) > 1:  # the check flags act on every pool, over each pool's [pool.check]
        refuse_pool_flags(args)
        for key in ("servers", "balance", "check"):
            changes.pop(key, None)
        changes["pools"] = tuple(replace(p, check=check_flags(args, p.check)) for p in config.pools)
    result = replace(config, **changes)  # type: ignore[arg-type]
    if len(result.pools) == 1:  # the flags act on the one pool, which keeps its name
        pool = replace(result.pools[0], servers=result.servers, balance=result.balance, check=result.check)
        result = replace(result, pools=(pool,))
    if not any(pool.servers for pool in pools_of(result)):
        raise ConfigError("server", None, "give at least one server: --backend HOST:PORT or [[server]] in the file")
    if len(result.pools) > 1 and result.cluster.url:
        raise ConfigError("cluster", result.cluster.url, "no fleet with several [[pool]] tables (one pool so far)")
    return result


def check_flags(args: argparse.Namespace, check: CheckConfig) -> CheckConfig:
    """`--check` and its companions over a check from the file."""
    if args.check:
        check = parse_check_flag(args.check, check)
    flag_checks = {
        "interval_ms": ("--check-interval", args.check_interval),
        "rise": ("--rise", args.rise),
        "fall": ("--fall", args.fall),
        "timeout_ms": ("--check-timeout", args.check_timeout),
        "max_fails": ("--max-fails", args.max_fails),
    }
    for key, (flag, value) in flag_checks.items():
        if value is not None:
            try:
                check = parse_check({key: value}, check)
            except ConfigError as exc:
                raise ConfigError(flag, value, exc.allowed) from exc
    return check


def refuse_pool_flags(args: argparse.Namespace) -> None:
    """With several pools, --backend and --balance would not say which pool they mean: the file says it."""
    for name in ("backend", "balance"):
        if getattr(args, name, None):
            flag = "--" + name.replace("_", "-")
            raise ConfigError(flag, getattr(args, name), "not with several [[pool]] tables: set it in the pool")


def single_pool(config: EngineConfig) -> EngineConfig:
    """One `[[pool]]` is also the top-level single pool (the settings single-pool code reads), name kept."""
    if len(config.pools) != 1:
        return config
    pool = config.pools[0]
    return replace(config, servers=pool.servers, balance=pool.balance, check=pool.check)


def limit_flags(args: argparse.Namespace, limits: LimitsConfig) -> LimitsConfig:
    """`--max-conns-per-client`, `--new-conns-per-client RATE[/BURST]`, `--max-accept-rate` over `[limits]`."""
    raw = {name: getattr(limits, name) for name in LimitsConfig.__dataclass_fields__}
    flag = "--max-conns-per-client"
    try:
        if args.max_conns_per_client is not None:
            raw["max_conns_per_client"] = args.max_conns_per_client
        if args.new_conns_per_client is not None:
            flag = "--new-conns-per-client"
            rate, _, burst = args.new_conns_per_client.partition("/")
            raw["new_conns_per_client_per_s"] = float(rate)
            raw["new_conns_per_client_burst"] = int(burst) if burst else 0
        if args.max_accept_rate is not None:
            flag = "--max-accept-rate"
            raw["max_accept_rate"] = args.max_accept_rate
        return parse_limits(raw)
    except (ValueError, ConfigError) as exc:
        value = getattr(args, flag[2:].replace("-", "_"))
        raise ConfigError(flag, value, "RATE[/BURST] with RATE >= 0 and an integer BURST, or N >= 0") from exc
