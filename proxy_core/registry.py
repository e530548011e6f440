"""The upstream pool: servers, their admin state and counters; every operation validates, then changes state.

Admin state (active, draining, disabled) is kept apart from health (up, down), as HAProxy does; the
effective state shown to operators is disabled > draining > health. Pure code: time comes in as `now`,
and each operation returns the events it caused for the engine to publish.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Protocol

from proxy_core.checkspec import CheckConfig
from proxy_core.config import NAME_PATTERN, ServerConfig, format_address, validate_weight
from proxy_core.errors import BadRequest, ConfigError, Conflict, NotFound
from proxy_core.events import Event, StateChanged
from proxy_core.health import CheckResult, HealthMachine

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
        "port",
        "removed",
        "statuses",
        "total",
        "weight",
    )  # fmt: skip

    def __init__(self, config: ServerConfig, health: HealthMachine, now: float) -> None:
        self.name = config.name
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
        self.edge: Any = None  # proxy_core.upstream.UpstreamEdge for servers with send_proxy or tls
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
        return ServerConfig(self.name, self.host, self.port, self.weight, self.max_conns)

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
    """The pool of servers; the engine asks it for eligible servers on each new connection."""

    def __init__(self, check: CheckConfig) -> None:
        self.check = check
        self.servers: dict[str, Server] = {}
        self._eligible: tuple[Server, ...] = ()
        self.has_max_conns = False
        self.joined = 0  # times a server became eligible (rebalance auto starts from it)

    def __iter__(self) -> Iterator[Server]:
        return iter(self.servers.values())

    def __len__(self) -> int:
        return len(self.servers)

    def get(self, name: str) -> Server:
        server = self.servers.get(name)
        if server is None:
            raise NotFound(f"no server named {name!r}")
        return server

    @property
    def eligible(self) -> tuple[Server, ...]:
        return self._eligible

    def refresh(self) -> None:
        """Recompute the cached eligible set; called after every change of state or weight."""
        before = self._eligible
        self._eligible = tuple(s for s in self.servers.values() if s.eligible)
        if any(s not in before for s in self._eligible):
            self.joined += 1
        self.has_max_conns = any(s.max_conns is not None for s in self._eligible)

    def total_weight(self) -> int:
        return sum(s.weight for s in self._eligible)

    # -- operations -------------------------------------------------------------------------

    def add(
        self, config: ServerConfig, now: float, *, at_start: bool = False, unresolved: str | None = None
    ) -> tuple[Server, list[Event]]:
        """Add a server; configured servers start up provisionally, runtime additions start down.

        Like HAProxy, a configured server is up at start "but will fall at the first failed check", so a
        proxy starting beside running backends serves at once; like the nginx check module, a server added
        at runtime takes traffic only after `rise` consecutive passing checks. With checks off, both are up.
        `unresolved` (its host did not resolve, lazy resolution) starts it down with that as its check result.
        """
        if not NAME_PATTERN.match(config.name):
            raise BadRequest(f"invalid server name {config.name!r}: use 1-64 of A-Z a-z 0-9 _ . -")
        if not 1 <= config.port <= 65535:
            raise BadRequest(f"invalid port {config.port} for {config.name}: use 1..65535")
        try:
            validate_weight("weight", config.weight)
        except ConfigError as exc:
            raise BadRequest(exc.message) from exc
        if config.name in self.servers:
            raise Conflict(f"a server named {config.name!r} already exists")
        for other in self.servers.values():
            if other.address == config.address:
                raise Conflict(f"{config.address} is already in the pool as {other.name!r}")
        checks_off = self.check.type == "none"
        up = (checks_off or at_start) and unresolved is None
        health = HealthMachine(
            self.check.rise,
            self.check.fall,
            initially_up=up,
            provisional=at_start and not checks_off,
            now=now,
        )
        if unresolved is not None:
            health.record(CheckResult(ok=False, latency_ms=None, reason=unresolved), now)
        server = Server(config, health, now)
        self.servers[config.name] = server
        self.refresh()
        reason = "added" if up else f"added; up after {self.check.rise} passing checks"
        if unresolved is not None:
            reason = f"added down: {unresolved}; up after {self.check.rise} passing checks"
        return server, [StateChanged(server=server.name, old="none", new=server.state, reason=reason)]

    def _admin(self, server: Server, admin: str, reason: str) -> list[Event]:
        old = server.state
        server.admin = admin
        self.refresh()
        if old == server.state:
            return []
        return [StateChanged(server=server.name, old=old, new=server.state, reason=reason)]

    def _refuse_if_last(self, server: Server, what: str) -> None:
        if server.eligible and len(self._eligible) == 1:
            raise Conflict(f"{what} would leave no eligible server in the pool; use force to do it anyway")

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
                self._refuse_if_last(server, f"removing {name}")
                if len(self.servers) == 1:
                    raise Conflict(f"removing {name} would leave the pool empty; use force to do it anyway")
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
        del self.servers[name]
        self.refresh()
        return server, [StateChanged(server=name, old=old, new="removed", reason="removed by operator")]

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
        return [StateChanged(server=server.name, old=old, new=server.state, reason=reason)]

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
        if self.check.max_fails <= 0 or server.removed:
            return []
        old = server.state
        transition = server.health.record_passive_failure(reason, self.check.max_fails, now)
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
        total_weight = self.total_weight()
        return [s.to_dict(total_weight) for s in self.servers.values()]
