"""TOML file and command-line flags into frozen settings; every bad key or value names itself."""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from proxy_core.checkspec import CheckConfig
from proxy_core.edgeconfig import (
    SERVER_EDGE_KEYS,
    LimitsConfig,
    ListenerConfig,
    backend_flag_option,
    parse_limits,
    parse_listener,
    server_options,
)
from proxy_core.errors import ConfigError
from proxy_core.poolconfig import PoolConfig, check_topology, parse_routes, pool_tables
from proxy_core.routing import Route

NAME_PATTERN = re.compile(r"^[A-Za-z0-9_.-]{1,64}\Z")
BALANCE_POLICIES = ("round_robin", "least_conn", "ip_hash")
CHECK_TYPES = ("tcp", "http", "websocket", "none")
# strict: a server host that does not resolve stops the start (HAProxy's default); lazy: it starts down
# and each check resolves it again (HAProxy's `init-addr none` with resolvers).
RESOLVE_MODES = ("strict", "lazy")
MAX_WEIGHT = 256  # HAProxy's range for `set weight`


@dataclass(frozen=True, slots=True)
class ServerConfig:
    """One upstream server of the pool."""

    name: str
    host: str
    port: int
    weight: int = 1
    max_conns: int | None = None
    send_proxy: str | None = None  # "v1" | "v2": a PROXY header with the client's address first
    tls: bool = False  # connect over TLS
    tls_verify: bool = True  # verify the server's certificate (against tls_ca, else the system's CAs)
    tls_ca: str | None = None
    tls_sni: str | None = None  # server name sent and verified; default: the host

    @property
    def address(self) -> str:
        return format_address(self.host, self.port)


@dataclass(frozen=True, slots=True)
class TimeoutConfig:
    """Per-phase limits, in seconds; 0 means off."""

    connect: float = 3.0  # per attempt; nginx uses 60 s, far too long to fail over a dead node
    head: float = 10.0  # whole request head, one deadline (not per read) against slowloris
    idle: float = 0.0  # established tunnels; off: a quiet WebSocket must not be cut (nginx cuts at 60 s)
    half_close: float = 60.0  # a pair where one side sent EOF and the other never does
    shutdown_grace: float = 10.0  # on SIGTERM, how long established connections may finish
    drain_spread: float = 3.0  # closes at a drain deadline are spread over this window


@dataclass(frozen=True, slots=True)
class RebalanceConfig:
    """`[rebalance]`: moving clients that are on the wrong server (proxy_core.rebalance)."""

    # Off by default: moving a client is a disconnect, so the operator decides when (`wsproxy rebalance`).
    auto: bool = False
    auto_delay_s: float = 30.0  # with auto: after a server became eligible, wait this long with no other change
    rate: float = 0.0  # clients moved per second; 0 = a fifth of an average server's clients a second
    min_age_s: float = 5.0  # never move a connection younger than this


@dataclass(frozen=True, slots=True)
class ControlConfig:
    """Where the control API listens, and who may mutate through it."""

    socket: str | None = None  # None: the default path (see control_socket_path)
    tcp: str | None = None  # "127.0.0.1:9001": optional TCP listener, token required
    token_file: str | None = None
    status_listen: str | None = None  # like the seed's port 9000 status page
    public_read: bool = False  # on TCP, allow GETs without the token


@dataclass(frozen=True, slots=True)
class ClusterConfig:
    """`[cluster]`: a fleet of instances sharing one admin state through Redis (proxy_core.cluster)."""

    url: str | None = None  # redis://HOST:PORT/DB or rediss://...; None: not in a fleet
    instance: str = ""  # this instance's name in the fleet (default: the host name)
    password_file: str | None = None  # the store's password, kept out of the URL (and so of process titles)


@dataclass(frozen=True, slots=True)
class EngineConfig:
    """Everything `wsproxy serve` needs."""

    listen: tuple[ListenerConfig, ...] = (ListenerConfig("127.0.0.1", 8000),)
    servers: tuple[ServerConfig, ...] = ()
    balance: str = "round_robin"
    retries: int = 2  # connect attempts on other servers after the first fails
    tcp_nodelay: bool = True
    handshake_log: bool = True
    access_log: str | None = None  # "-" for stdout, or a file path
    state_file: str | None = None
    max_clients: int = 0  # 0: derived from the file-descriptor limit
    workers: int = 1  # engine processes sharing the listeners (proxy_core.workers); 1 = no supervisor
    resolve: str = "strict"  # one of RESOLVE_MODES
    timeouts: TimeoutConfig = field(default_factory=TimeoutConfig)
    check: CheckConfig = field(default_factory=CheckConfig)
    control: ControlConfig = field(default_factory=ControlConfig)
    rebalance: RebalanceConfig = field(default_factory=RebalanceConfig)
    limits: LimitsConfig = field(default_factory=LimitsConfig)
    cluster: ClusterConfig = field(default_factory=ClusterConfig)
    pools: tuple[PoolConfig, ...] = ()  # `[[pool]]`; empty: one pool from servers/balance/check (pools_of)
    routes: tuple[Route, ...] = ()  # `[[route]]`, first match wins


def format_address(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def parse_address(key: str, value: object) -> tuple[str, int]:
    """`host:port` or `[v6]:port` into a pair, or a ConfigError naming the key."""
    allowed = "expected HOST:PORT with a port in 1..65535"
    if not isinstance(value, str):
        raise ConfigError(key, value, allowed)
    text = value.strip()
    if text.startswith("["):
        host, sep, port_text = text[1:].partition("]:")
    else:
        host, sep, port_text = text.rpartition(":")
    if not sep or not host or not port_text.isdigit():
        raise ConfigError(key, value, allowed)
    port = int(port_text)
    if not 1 <= port <= 65535 or any(c.isspace() for c in host):
        raise ConfigError(key, value, allowed)
    return host, port


def parse_listen(key: str, value: object) -> tuple[str, int]:
    """Like parse_address, but port 0 (any free port) is allowed for listeners."""
    if isinstance(value, str) and value.rstrip().endswith(":0"):
        host, _ = parse_address(key, value.rstrip()[:-1] + "1")
        return host, 0
    return parse_address(key, value)


def parse_workers(key: str, value: object) -> int:
    """A number of engine processes, or "auto": one per core."""
    if value == "auto":
        return os.cpu_count() or 1
    if isinstance(value, str) and value.isdigit():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 256:
        raise ConfigError(key, value, 'an integer in 1..256, or "auto" (one per core)')
    return value


def parse_resolve(key: str, value: object) -> str:
    if value not in RESOLVE_MODES:
        raise ConfigError(key, value, f"one of {', '.join(RESOLVE_MODES)}")
    return str(value)


def validate_name(key: str, value: object) -> str:
    if not isinstance(value, str) or not NAME_PATTERN.match(value):
        raise ConfigError(key, value, "a name is 1-64 characters of A-Z a-z 0-9 _ . -")
    return value


def validate_weight(key: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_WEIGHT:
        raise ConfigError(key, value, f"an integer in 0..{MAX_WEIGHT}")
    return value


def _int(key: str, value: object, low: int, high: int | None = None) -> int:
    allowed = f"an integer >= {low}" if high is None else f"an integer in {low}..{high}"
    if isinstance(value, bool) or not isinstance(value, int) or value < low or (high is not None and value > high):
        raise ConfigError(key, value, allowed)
    return value


def _number(key: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
        raise ConfigError(key, value, "a number of seconds >= 0 (0 = off)")
    return float(value)


def _bool(key: str, value: object) -> bool:
    if not isinstance(value, bool):
        raise ConfigError(key, value, "true or false")
    return value


def _str(key: str, value: object) -> str:
    if not isinstance(value, str) or not value:
        raise ConfigError(key, value, "a non-empty string")
    return value


def _table(key: str, value: object, allowed: tuple[str, ...]) -> Mapping[str, Any]:
    if not isinstance(value, dict):
        raise ConfigError(key, value, "a table")
    for k in value:
        if k not in allowed:
            raise ConfigError(f"{key}.{k}" if key else k, value[k], f"unknown key; allowed: {', '.join(allowed)}")
    return value


def parse_server(key: str, raw: object, index: int) -> ServerConfig:
    table = _table(key, raw, ("name", "address", "weight", "max_conns", *SERVER_EDGE_KEYS))
    if "address" not in table:
        raise ConfigError(f"{key}.address", None, 'every server needs address = "HOST:PORT"')
    host, port = parse_address(f"{key}.address", table["address"])
    name = validate_name(f"{key}.name", table.get("name", f"s{index + 1}"))
    weight = validate_weight(f"{key}.weight", table.get("weight", 1))
    max_conns = table.get("max_conns")
    if max_conns is not None:
        max_conns = _int(f"{key}.max_conns", max_conns, 1)
    return ServerConfig(name, host, port, weight, max_conns, **server_options(table, key))


def parse_check(raw: object, base: CheckConfig | None = None) -> CheckConfig:
    allowed = ("type", "path", "interval_ms", "rise", "fall", "timeout_ms", "expect_status", "host", "max_fails")
    table = _table("check", raw, allowed)
    check = base or CheckConfig()
    changes: dict[str, Any] = {}
    if "type" in table:
        if table["type"] not in CHECK_TYPES:
            raise ConfigError("check.type", table["type"], f"one of {', '.join(CHECK_TYPES)}")
        changes["type"] = table["type"]
    if "path" in table:
        path = _str("check.path", table["path"])
        if not path.startswith("/"):
            raise ConfigError("check.path", path, "a path starting with /")
        changes["path"] = path
    for key in ("interval_ms", "timeout_ms"):
        if key in table:
            changes[key] = _int(f"check.{key}", table[key], 10)
    for key in ("rise", "fall"):
        if key in table:
            changes[key] = _int(f"check.{key}", table[key], 1, 1000)
    if "max_fails" in table:
        changes["max_fails"] = _int("check.max_fails", table["max_fails"], 0)
    if "host" in table:
        changes["host_header"] = _str("check.host", table["host"])
    if "expect_status" in table:
        changes["expect_status"] = parse_expect_status(table["expect_status"])
    return replace(check, **changes)


def parse_expect_status(value: object) -> frozenset[int]:
    """`["2xx", "3xx", 404]` into a set of statuses, as the nginx check module's `check_http_expect_alive`."""
    allowed = 'a list of statuses or classes such as ["2xx", "3xx", 404]'
    if not isinstance(value, list) or not value:
        raise ConfigError("check.expect_status", value, allowed)
    statuses: set[int] = set()
    for item in value:
        if isinstance(item, int) and not isinstance(item, bool) and 100 <= item <= 599:
            statuses.add(item)
        elif isinstance(item, str) and re.fullmatch(r"[1-5]xx", item):
            first = int(item[0]) * 100
            statuses.update(range(first, first + 100))
        else:
            raise ConfigError("check.expect_status", item, allowed)
    return frozenset(statuses)


def parse_check_flag(value: str, base: CheckConfig) -> CheckConfig:
    """`tcp`, `none`, `http:/path` or `websocket:/path` from `--check`."""
    kind, _, path = value.partition(":")
    raw: dict[str, object] = {"type": kind}
    if path:
        raw["path"] = path
    try:
        return parse_check(raw, base)
    except ConfigError as exc:
        raise ConfigError("--check", value, "tcp, none, http:/PATH or websocket:/PATH") from exc


BACKEND_FLAG_FORM = (
    "[NAME=]HOST:PORT[,weight=N][,max_conns=N][,send_proxy=v1|v2][,tls][,tls_verify=off][,tls_ca=FILE][,tls_sni=NAME]"
)


def parse_backend_flag(value: str, index: int) -> ServerConfig:
    """`[NAME=]HOST:PORT[,weight=N][,max_conns=N][,send_proxy=v1|v2][,tls][,tls_verify=off][,tls_ca=F][,tls_sni=N]`."""
    head, *options = value.split(",")
    name, sep, address = head.partition("=")
    if not sep:
        name, address = f"s{index + 1}", head
    raw: dict[str, object] = {"name": name, "address": address}
    for option in options:
        key, sep, text = option.partition("=")
        edge = backend_flag_option(key, sep, text)
        if edge is not None:
            raw[edge[0]] = edge[1]
            continue
        if not sep or key not in ("weight", "max_conns") or not text.strip().lstrip("-").isdigit():
            raise ConfigError("--backend", value, BACKEND_FLAG_FORM)
        raw[key] = int(text)
    return parse_server("--backend", raw, index)


def check_unique(servers: tuple[ServerConfig, ...]) -> None:
    names: set[str] = set()
    addresses: set[str] = set()
    for server in servers:
        if server.name in names:
            raise ConfigError("server.name", server.name, "server names must be unique")
        if server.address in addresses:
            raise ConfigError("server.address", server.address, "server addresses must be unique")
        names.add(server.name)
        addresses.add(server.address)


def check_unique_listeners(listeners: tuple[ListenerConfig, ...]) -> None:
    seen: set[tuple[str, int]] = set()
    for listener in listeners:
        where = (listener.host, listener.port)
        if listener.port and where in seen:
            raise ConfigError("listener.address", format_address(*where), "listener addresses must be unique")
        seen.add(where)


TOP_KEYS = (
    "listen", "balance", "retries", "tcp_nodelay", "handshake_log", "access_log", "state_file",
    "max_clients", "server", "check", "timeouts", "control", "workers", "rebalance", "listener", "limits",
    "resolve", "cluster", "pool", "route",
)  # fmt: skip


def parse_config(data: Mapping[str, Any]) -> EngineConfig:
    """A parsed TOML document into settings; raises ConfigError on the first bad key."""
    table = _table("", dict(data), TOP_KEYS)
    config = EngineConfig()
    changes: dict[str, Any] = {}
    if "listen" in table:
        listen = table["listen"]
        items = [listen] if isinstance(listen, str) else listen
        if not isinstance(items, list) or not items:
            raise ConfigError("listen", listen, "HOST:PORT or a list of them")
        changes["listen"] = tuple(ListenerConfig(*parse_listen("listen", item)) for item in items)
    if "listener" in table:
        tables = table["listener"]
        if not isinstance(tables, list) or not tables:
            raise ConfigError("listener", tables, "[[listener]] tables")
        listeners = tuple(parse_listener(f"listener[{i}]", t, parse_listen) for i, t in enumerate(tables))
        changes["listen"] = (*changes.get("listen", ()), *listeners)
        check_unique_listeners(changes["listen"])
    if "limits" in table:
        changes["limits"] = parse_limits(table["limits"])
    if "balance" in table:
        if table["balance"] not in BALANCE_POLICIES:
            raise ConfigError("balance", table["balance"], f"one of {', '.join(BALANCE_POLICIES)}")
        changes["balance"] = table["balance"]
    if "retries" in table:
        changes["retries"] = _int("retries", table["retries"], 0, 100)
    if "resolve" in table:
        changes["resolve"] = parse_resolve("resolve", table["resolve"])
    if "max_clients" in table:
        changes["max_clients"] = _int("max_clients", table["max_clients"], 0)
    if "workers" in table:
        changes["workers"] = parse_workers("workers", table["workers"])
    for key in ("tcp_nodelay", "handshake_log"):
        if key in table:
            changes[key] = _bool(key, table[key])
    for key in ("access_log", "state_file"):
        if key in table:
            changes[key] = _str(key, table[key])
    if "server" in table:
        servers = table["server"]
        if not isinstance(servers, list):
            raise ConfigError("server", servers, "[[server]] tables")
        parsed = tuple(parse_server(f"server[{i}]", s, i) for i, s in enumerate(servers))
        check_unique(parsed)
        changes["servers"] = parsed
    if "check" in table:
        changes["check"] = parse_check(table["check"])
    if "timeouts" in table:
        names = tuple(TimeoutConfig.__dataclass_fields__)
        raw = _table("timeouts", table["timeouts"], names)
        changes["timeouts"] = TimeoutConfig(**{k: _number(f"timeouts.{k}", v) for k, v in raw.items()})
    if "rebalance" in table:
        changes["rebalance"] = parse_rebalance(table["rebalance"])
    if "cluster" in table:
        changes["cluster"] = parse_cluster(table["cluster"])
    if "control" in table:
        raw = _table("control", table["control"], tuple(ControlConfig.__dataclass_fields__))
        control: dict[str, Any] = {}
        for key, value in raw.items():
            if key == "public_read":
                control[key] = _bool("control.public_read", value)
            elif key in ("tcp", "status_listen"):
                parse_listen(f"control.{key}", value)
                control[key] = value
            else:
                control[key] = _str(f"control.{key}", value)
        changes["control"] = ControlConfig(**control)
    if "pool" in table or "route" in table:
        changes.update(parse_pools(table, changes))
    return replace(config, **changes)


def parse_cluster(value: object, base: ClusterConfig | None = None) -> ClusterConfig:
    """`[cluster]` url, instance, password_file; the URL is checked here so a typo fails at start."""
    raw = _table("cluster", value, tuple(ClusterConfig.__dataclass_fields__))
    changes = {key: _str(f"cluster.{key}", item) for key, item in raw.items()}
    if "url" in changes:
        url = changes["url"]
        parts = url.split("://", 1)
        if len(parts) != 2 or parts[0] not in ("redis", "rediss") or not parts[1]:
            from proxy_core.cluster.model import redact_url

            raise ConfigError("cluster.url", redact_url(url), "redis://HOST:PORT/DB or rediss://HOST:PORT/DB")
    if "instance" in changes:
        validate_name("cluster.instance", changes["instance"])
    return replace(base or ClusterConfig(), **changes)


def parse_pool(key: str, raw: Mapping[str, Any]) -> PoolConfig:
    """One `[[pool]]`: the same `balance`, `[check]` and `[[server]]` rules as the single-pool form."""
    name = validate_name(f"{key}.name", raw["name"])
    balance = raw.get("balance", "round_robin")
    if balance not in BALANCE_POLICIES:
        raise ConfigError(f"{key}.balance", balance, f"one of {', '.join(BALANCE_POLICIES)}")
    servers = raw.get("server", [])
    if not isinstance(servers, list):
        raise ConfigError(f"{key}.server", servers, "[[pool.server]] tables")
    parsed = tuple(parse_server(f"{key}.server[{i}]", s, i) for i, s in enumerate(servers))
    check = parse_check(raw["check"]) if "check" in raw else CheckConfig()
    return PoolConfig(name, parsed, balance, check)


def parse_pools(table: Mapping[str, Any], changes: Mapping[str, Any]) -> dict[str, Any]:
    """`[[pool]]` and `[[route]]` with every cross-reference checked; top-level servers and pools do not mix."""
    if "pool" not in table:
        raise ConfigError("route", table["route"], "routes need [[pool]] tables to point at")
    for key in ("server", "balance", "check"):
        if key in table:
            raise ConfigError(
                key, table[key], "with [[pool]] tables, put it inside a pool ([pool.check], [[pool.server]])"
            )
    pools = tuple(parse_pool(f"pool[{i}]", t) for i, t in enumerate(pool_tables(table["pool"])))
    for pool in pools:
        check_unique(pool.servers)
    routes = parse_routes(table.get("route", []))
    listeners: tuple[ListenerConfig, ...] = changes.get("listen", EngineConfig().listen)
    addresses = [format_address(x.host, x.port) for x in listeners]
    check_topology(pools, routes, addresses, {a: x.default_pool for a, x in zip(addresses, listeners, strict=True)})
    return {"pools": pools, "routes": routes}


def parse_rebalance(value: object) -> RebalanceConfig:
    raw = _table("rebalance", value, tuple(RebalanceConfig.__dataclass_fields__))
    changes: dict[str, Any] = {}
    for key, item in raw.items():
        if key == "auto":
            changes[key] = _bool("rebalance.auto", item)
        else:
            changes[key] = _number(f"rebalance.{key}", item)
    return RebalanceConfig(**changes)


def load_file(path: str) -> EngineConfig:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError("-c", path, f"a readable TOML file ({exc.strerror})") from exc
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        line_no, line = _toml_error_line(text, str(exc))
        raise ConfigError(f"{path} line {line_no}", line, f"valid TOML ({exc})") from exc
    return parse_config(data)


_TOML_ERROR_LINE = re.compile(r"at line (\d+)")


def _toml_error_line(text: str, message: str) -> tuple[int, str]:
    """The line tomllib stopped at (its message says "at line N", or "at end of document"), to show it."""
    lines = text.splitlines() or [""]
    match = _TOML_ERROR_LINE.search(message)
    if match is not None:
        number = min(max(int(match.group(1)), 1), len(lines))
    else:  # at end of document: the last line that says something
        number = max((i for i, line in enumerate(lines, 1) if line.strip()), default=1)
    return number, lines[number - 1].strip()
