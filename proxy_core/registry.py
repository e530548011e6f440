"""The upstream pool: servers, their admin state and counters; every operation validates, then changes state.

Admin state (active, draining, disabled) is kept apart from health (up, down), as HAProxy does; the
effective state shown to operators is disabled > draining > health. Pure code: time comes in as `now`,
and each operation returns the events it caused for the engine to publish.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any, Protocol

from proxy_core.checkspec import CheckConfig
from proxy_core.config import NAME_PATTERN, ServerConfig, format_address, validate_weight
from proxy_core.errors import BadRequest, ConfigError, Conflict, NotFound
from proxy_core.events import Event, StateChanged
from proxy_core.health import CheckResult, HealthMachine
from proxy_core.naming import qualified, resolve
from proxy_core.pool import Pool
from proxy_core.poolconfig import DEFAULT_POOL

ADMIN_STATES = ("active", "draining", "disabled")


class LiveConnection(Protocol):
    """What the registry needs to know of an open connection (the relay's client side)."""

    conn_id: int
    started: float
    bytes_in: int
    bytes_out: int
    kind: str
    closed: bool
    server: Server | None

    @property
    def client(self) -> str: ...

    def describe(self, now: float) -> dict[str, Any]: ...

    def finish(self, closed_by: str, reason: str, *, reset: bool = False) -> None: ...


class Server:
    """One upstream server: settings, admin state, health and counters."""

    __slots__ = (
        "active",
        "added",
        "admin",
        "closed_bytes_in",
        "closed_bytes_out",
        "connect_failures",
        "connect_host",
        "conns",
        "drain_active_at_start",
        "drain_deadline",
        "drain_started",
        "edge",
        "handshakes",
        "health",
        "host",
        "max_conns",
        "name",
        "pool",
        "port",
        "removed",
        "short",
        "statuses",
        "total",
        "weight",
    )  # fmt: skip

    def __init__(
        self, config: ServerConfig, health: HealthMachine, now: float, pool: str = DEFAULT_POOL, name: str = ""
    ) -> None:
        self.name = name or config.name  # what commands take: POOL/NAME with several pools, else NAME
        self.short = config.name  # the name within its pool
        self.pool = pool
        self.host = config.host
        self.connect_host = config.host  # the address connected to: the host, or what it last resolved to
        self.port = config.port
        self.weight = config.weight
        self.max_conns = config.max_conns
        self.admin = "active"
        self.health = health
        self.active = 0
        self.total = 0
        self.connect_failures = 0
        self.closed_bytes_in = 0
        self.closed_bytes_out = 0
        self.handshakes = 0
        self.conns: set[LiveConnection] = set()
        self.drain_started: float | None = None
        self.drain_deadline: float | None = None
        self.drain_active_at_start = 0
        self.removed = False
        self.added = now
        self.edge: Any = None  # proxy_core.datapath.upstream.UpstreamEdge for servers with send_proxy or tls
        self.statuses: dict[int, int] = {}  # handshake answers by HTTP status (101, 403, ...)

    @property
    def address(self) -> str:
        return format_address(self.host, self.port)

    @property
    def state(self) -> str:
        if self.admin == "disabled":
            return "disabled"
        if self.admin == "draining":
            return "draining"
        return self.health.status

    @property
    def eligible(self) -> bool:
        """May take new connections (before the per-pick max_conns test)."""
        return self.admin == "active" and self.health.up and self.weight > 0 and not self.removed

    def bytes_totals(self) -> tuple[int, int]:
        bytes_in, bytes_out = self.closed_bytes_in, self.closed_bytes_out
        for conn in self.conns:
            bytes_in += conn.bytes_in
            bytes_out += conn.bytes_out
        return bytes_in, bytes_out

    def config(self) -> ServerConfig:
        return ServerConfig(self.short, self.host, self.port, self.weight, self.max_conns)

    def to_dict(self, total_weight: int) -> dict[str, Any]:
        bytes_in, bytes_out = self.bytes_totals()
        drain = None
        if self.drain_started is not None:
            drain = {
                "started": self.drain_started,
                "deadline": self.drain_deadline,
                "active_at_start": self.drain_active_at_start,
            }
        return {
            "name": self.name,
            "pool": self.pool,
            "address": self.address,
            "host": self.host,
            "port": self.port,
            "resolved": self.connect_host if self.connect_host != self.host else None,
            "state": self.state,
            "admin": self.admin,
            "health": self.health.to_dict(),
            "progress": self.health.progress_label(),
            "weight": self.weight,
            "max_conns": self.max_conns,
            "share": (self.weight / total_weight) if self.eligible and total_weight else 0.0,
            "active": self.active,
            "total": self.total,
            "connect_failures": self.connect_failures,
            "bytes_in": bytes_in,
            "bytes_out": bytes_out,
            "handshakes": self.handshakes,
            "handshake_statuses": {str(k): v for k, v in sorted(self.statuses.items())},
            "drain": drain,
        }


class Registry:
    """The servers of every pool; the engine asks a pool for its eligible servers on each new connection."""

    def __init__(self, check: CheckConfig, balance: str = "round_robin", pool: str = DEFAULT_POOL) -> None:
        self.check = check  # the first pool's (the only one's, with a single pool)
        self.default = Pool(pool, balance, check)
        self.pools: dict[str, Pool] = {pool: self.default}
        self.qualified = False  # several pools: servers are named POOL/NAME (set before servers are added)
        self.servers: dict[str, Server] = {}
        self._eligible: tuple[Server, ...] = ()
        self.has_max_conns = False
        self.joined = 0  # times a server became eligible (rebalance auto starts from it)
        # Whether a pool takes new connections (a route or a listener's default sends there); the engine sets it.
        # The last server of a pool that takes none may be removed without force: that empties nothing in use.
        self.pool_in_use: Callable[[str], bool] = lambda pool: True

    def __iter__(self) -> Iterator[Server]:
        return iter(self.servers.values())

    def __len__(self) -> int:
        return len(self.servers)

    def add_pool(self, name: str, balance: str, check: CheckConfig) -> Pool:
        """A further pool; its name is checked by the caller (config or the control API)."""
        if name in self.pools:
            raise Conflict(f"a pool named {name!r} already exists")
        pool = Pool(name, balance, check)
        self.pools[name] = pool
        return pool

    def remove_pool(self, name: str) -> Pool:
        pool = self.pool(name)
        if pool is self.default:
            raise Conflict(f"pool {name!r} is the first pool; it cannot be removed")
        members = [s.name for s in self.servers.values() if s.pool == name]
        if members:
            raise Conflict(f"pool {name!r} still has server(s) {', '.join(members)}; remove them first")
        del self.pools[name]
        return pool

    def pool(self, name: str) -> Pool:
        pool = self.pools.get(name)
        if pool is None:
            raise NotFound(f"no pool named {name!r} (pools: {', '.join(self.pools)})")
        return pool

    def display_name(self, pool: str, name: str) -> str:
        return qualified(pool, name) if self.qualified else name

    def get(self, name: str) -> Server:
        """A server by the name commands take; with several pools a bare name must be unique (naming.py)."""
        server = self.servers.get(name)
        if server is not None:
            return server
        if not self.qualified and "/" not in name:
            raise NotFound(f"no server named {name!r}")
        members: dict[str, list[str]] = {pool: [] for pool in self.pools}
        for candidate in self.servers.values():
            members[candidate.pool].append(candidate.short)
        pool, short = resolve(name, members)
        return self.servers[self.display_name(pool, short)]

    def in_pool(self, pool: str) -> list[Server]:
        return [s for s in self.servers.values() if s.pool == pool]

    @property
    def eligible_everywhere(self) -> tuple[Server, ...]:
        """Every pool's eligible servers: what a rebalance plans over, pool by pool."""
        if len(self.pools) == 1:
            return self.default.eligible
        return tuple(s for pool in self.pools.values() for s in pool.eligible)

    @property
    def eligible(self) -> tuple[Server, ...]:
        """The first pool's eligible servers (the rebalancer and workers work on one pool)."""
        return self.default.eligible

    def refresh(self) -> None:
        """Recompute the cached eligible sets; called after every change of state or weight."""
        before = self._eligible
        self._eligible = tuple(s for s in self.servers.values() if s.eligible)
        if any(s not in before for s in self._eligible):
            self.joined += 1
        if len(self.pools) == 1:
            self.default.refresh(self._eligible)
        else:
            for pool in self.pools.values():
                pool.refresh(s for s in self._eligible if s.pool == pool.name)
        self.has_max_conns = self.default.has_max_conns

    def total_weight(self, pool: str | None = None) -> int:
        return (self.default if pool is None else self.pools[pool]).total_weight()

    # -- operations -------------------------------------------------------------------------

    def add(
        self,
        config: ServerConfig,
        now: float,
        *,
        at_start: bool = False,
        unresolved: str | None = None,
        pool: str | None = None,
    ) -> tuple[Server, list[Event]]:
        """Add a server; configured servers start up provisionally, runtime additions start down.

        Like HAProxy, a configured server is up at start "but will fall at the first failed check", so a
        proxy starting beside running backends serves at once; like the nginx check module, a server added
        at runtime takes traffic only after `rise` consecutive passing checks. With checks off, both are up.
        `unresolved` (its host did not resolve, lazy resolution) starts it down with that as its check result.
        `pool`: the pool it joins (default: the first); its check settings apply.
        """
        home = self.default if pool is None else self.pool(pool)
        check = home.check
        if not NAME_PATTERN.match(config.name):
            raise BadRequest(f"invalid server name {config.name!r}: use 1-64 of A-Z a-z 0-9 _ . -")
        if not 1 <= config.port <= 65535:
            raise BadRequest(f"invalid port {config.port} for {config.name}: use 1..65535")
        try:
            validate_weight("weight", config.weight)
        except ConfigError as exc:
            raise BadRequest(exc.message) from exc
        name = self.display_name(home.name, config.name)
        if name in self.servers:
            where = f" in pool {home.name!r}" if self.qualified else ""
            taken = self.servers[name].pool
            if not self.qualified and taken != home.name:  # one configured pool: names stay bare (no renames)
                where = f" in pool {taken!r} (with one pool in the configuration, names are unique across pools)"
            raise Conflict(f"a server named {config.name!r} already exists{where}")
        for other in self.servers.values():
            if other.address == config.address and other.pool == home.name:
                raise Conflict(f"{config.address} is already in the pool as {other.name!r}")
        checks_off = check.type == "none"
        up = (checks_off or at_start) and unresolved is None
        health = HealthMachine(
            check.rise,
            check.fall,
            initially_up=up,
            provisional=at_start and not checks_off,
            now=now,
        )
        if unresolved is not None:
            health.record(CheckResult(ok=False, latency_ms=None, reason=unresolved), now)
        server = Server(config, health, now, home.name, name)
        self.servers[name] = server
        self.refresh()
        reason = "added" if up else f"added; up after {check.rise} passing checks"
        if unresolved is not None:
            reason = f"added down: {unresolved}; up after {check.rise} passing checks"
        return server, [StateChanged(server=name, old="none", new=server.state, reason=reason, pool=home.name)]

    def _admin(self, server: Server, admin: str, reason: str) -> list[Event]:
        old = server.state
        server.admin = admin
        self.refresh()
        if old == server.state:
            return []
        return [StateChanged(server=server.name, old=old, new=server.state, reason=reason, pool=server.pool)]

    def _pool_label(self, server: Server) -> str:
        return f"the pool {server.pool}" if self.qualified or len(self.pools) > 1 else "the pool"

    def _refuse_if_last(self, server: Server, what: str) -> None:
        """The interlock, per pool: emptying one pool is refused even while other pools have servers."""
        if server.eligible and len(self.pools[server.pool].eligible) == 1:
            raise Conflict(
                f"{what} would leave no eligible server in {self._pool_label(server)}; use force to do it anyway"
            )

    def validate(
        self,
        action: str,
        name: str,
        *,
        force: bool = False,
        weight: int | None = None,
        deadline_s: float | None = None,
    ) -> Server:
        """Every refusal of drain, disable, weight and remove, changing nothing (dry runs use it alone)."""
        server = self.get(name)
        if action == "drain":
            if deadline_s is not None and deadline_s < 0:
                raise BadRequest(f"invalid drain deadline {deadline_s}: use seconds >= 0")
            if server.admin == "disabled":
                raise Conflict(f"{name} is disabled; enable it before draining")
            if not force:
                self._refuse_if_last(server, f"drain {name}")
        elif action == "disable":
            if not force:
                self._refuse_if_last(server, f"disabled {name}")
        elif action == "weight":
            try:
                validate_weight("weight", weight)
            except ConfigError as exc:
                raise BadRequest(exc.message) from exc
            if weight == 0 and not force:
                self._refuse_if_last(server, f"weight 0 on {name}")
        elif action == "remove":
            if not force:
                if server.active:
                    raise Conflict(
                        f"{name} has {server.active} live connection(s); drain it first, or force to close them"
                    )
                if not self.pool_in_use(server.pool):
                    return server
                self._refuse_if_last(server, f"removing {name}")
                if len(self.in_pool(server.pool)) == 1:
                    raise Conflict(
                        f"removing {name} would leave {self._pool_label(server)} empty; use force to do it anyway"
                    )
        else:
            raise ValueError(f"no validation for {action!r}")
        return server

    def drain(
        self, name: str, deadline_s: float | None, now: float, *, force: bool = False
    ) -> tuple[Server, list[Event]]:
        server = self.validate("drain", name, force=force, deadline_s=deadline_s)
        events = self._admin(server, "draining", "drain requested by operator")
        if server.drain_started is None:
            server.drain_started = now
            server.drain_active_at_start = server.active
        server.drain_deadline = None if deadline_s is None else now + deadline_s
        return server, events

    def undrain(self, name: str) -> tuple[Server, list[Event]]:
        server = self.get(name)
        if server.admin != "draining":
            raise Conflict(f"{name} is not draining (state {server.state})")
        self._clear_drain(server)
        return server, self._admin(server, "active", "undrain requested by operator")

    def disable(self, name: str, *, force: bool = False) -> tuple[Server, list[Event]]:
        server = self.validate("disable", name, force=force)
        self._clear_drain(server)
        return server, self._admin(server, "disabled", "disabled by operator (maintenance)")

    def enable(self, name: str) -> tuple[Server, list[Event]]:
        server = self.get(name)
        self._clear_drain(server)
        return server, self._admin(server, "active", "enabled by operator")

    def set_weight(self, name: str, weight: int, *, force: bool = False) -> tuple[Server, list[Event]]:
        server = self.validate("weight", name, force=force, weight=weight)
        server.weight = weight
        self.refresh()
        return server, []

    def remove(self, name: str, *, force: bool = False) -> tuple[Server, list[Event]]:
        """Remove a server; refused while it has connections or is the last eligible one, unless forced."""
        server = self.validate("remove", name, force=force)
        old = server.state
        server.removed = True
        del self.servers[server.name]
        self.refresh()
        return server, [
            StateChanged(server=server.name, old=old, new="removed", reason="removed by operator", pool=server.pool)
        ]

    @staticmethod
    def _clear_drain(server: Server) -> None:
        server.drain_started = None
        server.drain_deadline = None
        server.drain_active_at_start = 0

    # -- health ----------------------------------------------------------------------------

    def _health_event(self, server: Server, old: str, reason: str) -> list[Event]:
        self.refresh()
        if server.state == old:
            return []
        return [StateChanged(server=server.name, old=old, new=server.state, reason=reason, pool=server.pool)]

    def record_check(self, name: str, result: CheckResult, now: float) -> list[Event]:
        server = self.servers.get(name)
        if server is None:
            return []
        old = server.state
        transition = server.health.record(result, now)
        if transition is None:
            return []
        if transition.to_state == "up":
            server.health.record_passive_success()
        return self._health_event(server, old, transition.reason)

    def record_connect_failure(self, server: Server, reason: str, now: float) -> list[Event]:
        server.connect_failures += 1
        max_fails = self.pools[server.pool].check.max_fails if server.pool in self.pools else 0
        if max_fails <= 0 or server.removed:
            return []
        old = server.state
        transition = server.health.record_passive_failure(reason, max_fails, now)
        if transition is None:
            return []
        return self._health_event(server, old, transition.reason)

    def retry_passive(self, name: str, now: float) -> list[Event]:
        """With checks off, a server marked down by traffic is tried again after a while (nginx fail_timeout)."""
        server = self.servers.get(name)
        if server is None or server.health.up:
            return []
        old = server.state
        server.health.force(True, "retrying after passive failures (checks are off)", now)
        return self._health_event(server, old, "retrying after passive failures (checks are off)")

    def snapshot(self) -> list[dict[str, Any]]:
        weights = {name: pool.total_weight() for name, pool in self.pools.items()}
        return [s.to_dict(weights.get(s.pool, 0)) for s in self.servers.values()]
