"""The engine: owns listeners, the registry, health checks, events and every task; stops gracefully."""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import replace
from typing import TYPE_CHECKING, Any, TypeVar, cast

from proxy_core import __version__, statefile
from proxy_core.balancer import Balancer
from proxy_core.checker import CheckRunner
from proxy_core.cluster import rebalancing
from proxy_core.cluster.changes import FleetChanges, parse_add
from proxy_core.config import EngineConfig, ServerConfig, format_address
from proxy_core.datapath.accesslog import AccessLog
from proxy_core.datapath.edge import Edge, open_listener
from proxy_core.datapath.listener import Listener
from proxy_core.datapath.switchboard import Switchboard
from proxy_core.datapath.tls import CertProblem
from proxy_core.datapath.upstream import UpstreamEdge
from proxy_core.errors import BadRequest, ConfigError, Conflict, NotFound, StateNotSaved, WsproxyError
from proxy_core.events import EventBus, OperatorAction
from proxy_core.health import CheckResult
from proxy_core.poolchanges import PoolChanges
from proxy_core.poolconfig import PoolConfig, check_to_dict, pools_of
from proxy_core.rates import RateHistory
from proxy_core.rebalancer import Rebalancer
from proxy_core.registry import Registry, Server
from proxy_core.resolver import Unresolvable, resolve
from proxy_core.routing import ListenerPlan, Route, plan_listener

if TYPE_CHECKING:
    from proxy_core.cluster.store import Cluster

T = TypeVar("T")
FLEET_OFFSETS: dict[str, float] = {}  # no shared list of clients: every client takes its hash position (spread.py)


def server_edge(config: ServerConfig | None, server: Server) -> UpstreamEdge | None:
    """The configured send_proxy/TLS settings of a server still at its configured address; ConfigError if bad."""
    if config is None or (config.host, config.port) != (server.host, server.port):
        return None
    try:
        return UpstreamEdge.for_server(config)
    except CertProblem as exc:
        raise ConfigError(f"server {config.name} tls_ca", exc.path, exc.problem) from exc


class Engine(FleetChanges, PoolChanges):
    """A running proxy: start(), then wait(); every operator action goes through the methods below."""

    def __init__(self, config: EngineConfig, control_path: str | None = None) -> None:
        self.config = config
        self.control_path = control_path
        self.bus = EventBus()
        self.pool_configs: tuple[PoolConfig, ...] = pools_of(config)
        first = self.pool_configs[0]
        self.registry = Registry(first.check, first.balance, first.name)
        self.registry.qualified = len(self.pool_configs) > 1
        for pool in self.pool_configs[1:]:
            self.registry.add_pool(pool.name, pool.balance, pool.check)
        # A listener without default_pool takes the first pool when the file has one pool (or none: the flags'),
        # also once pools are added at runtime, so adding a pool never turns its traffic into 404s.
        self.implicit_default = len(self.pool_configs) == 1
        self.configured_pools = {p.name for p in self.pool_configs}
        self.runtime_pools: dict[str, PoolConfig] = {}  # added at runtime (poolchanges.py), kept in the state file
        self.removed_pools: set[str] = set()  # configured pools removed at runtime
        self.configured_routes: tuple[Route, ...] = config.routes
        self.routes: tuple[Route, ...] = config.routes  # as the operator left them; the switchboard's copy
        self.routes_changed = False  # routes changed at runtime: their order is the state file's from now on
        self.removed_routes: set[str] = set()  # route_key of configured routes removed at runtime
        self.rates = RateHistory()
        self.started = time.time()
        self.listeners: list[Listener] = []
        self.listen_addresses: list[str] = []
        # Bound address -> (configured address, its default_pool, TLS terminated): what routes are planned from.
        self.listen_names: dict[str, tuple[str, str | None, bool]] = {}
        self.stopping = False
        self._stopped = asyncio.Event()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._access_log: AccessLog | None = None
        self.board: Switchboard
        self.edge: Edge
        self.checker: CheckRunner  # the first pool's; each pool has its own (checkers), with its own settings
        self.checkers: dict[str, CheckRunner] = {}
        self.rebalancer: Rebalancer
        self.control: Any = None  # the control API runner, started by proxy_core.control
        self.configured = {self.registry.display_name(p.name, s.name) for p in self.pool_configs for s in p.servers}
        self.removed: set[str] = set()  # configured servers removed at runtime (kept removed after a restart)
        self.local_overrides: set[str] = set()  # servers changed with --local since the fleet last set them
        self.cluster: Cluster | None = None
        self._cluster_applied: str | None = None  # from the state file, until the cluster starts
        if config.state_file:
            self.state_path: str | None = config.state_file
        else:
            self.state_path = statefile.default_state_path(control_path) if control_path else None

    # -- start and stop ---------------------------------------------------------------------------

    async def start(self) -> None:
        """Bind listeners and start checks; raises ConfigError naming a listener that cannot bind."""
        self.registry.pool_in_use = self.pool_in_use  # here: a supervisor has replaced the registry by now
        await self._load_pool()
        if self.config.access_log:
            try:
                self._access_log = AccessLog.open(self.config.access_log)
            except OSError as exc:
                raise ConfigError(
                    "access_log", self.config.access_log, f"a file this user can append to ({exc.strerror})"
                ) from exc
        balancer = self.registry.default.balancer
        self.board = Switchboard(self.config, self.registry, self.bus, balancer, self._access_log)
        self.rebalancer = self._make_rebalancer(balancer)
        for name, pool in self.registry.pools.items():
            self.checkers[name] = CheckRunner(pool.check, self._check_result, on_address=self._resolved)
        self.checker = self.checkers[self.registry.default.name]
        self.edge = Edge(self.board, self.config)
        for server in self.registry:
            self.checkers[server.pool].add(server.name, server.host, server.port, edge=server.edge)
        if self.config.cluster.url:  # catch up on the fleet's changes before accepting a connection
            from proxy_core.cluster.store import Cluster

            self.cluster = Cluster(self, self.config.cluster, self._cluster_applied)
            await self.cluster.join()
        for listen in self.config.listen:
            name = format_address(listen.host, listen.port)
            try:
                # Connections are labelled with the bound address (port 0 resolved), read when each arrives.
                listener = await open_listener(self.edge, listen)
            except OSError as exc:
                raise ConfigError("listen", name, f"an address this host can bind ({exc.strerror})") from exc
            self.listeners.append(listener)
            self.listen_addresses.append(listener.address)
            self.board.listener_counts[listener.address] = [0, 0]
            self.listen_names[listener.address] = (name, listen.default_pool, listen.tls)
        self.board.routes = self.routes
        self.board.route_matched = [0] * len(self.routes)
        self._plan_routes()
        self.board.listeners = self.listeners
        self._spawn(self._sample_rates())
        if self.cluster is not None:
            self._spawn(self.cluster.run_applier())
            self._spawn(self.cluster.run_heartbeat())
        self._spawn(self._watch_drains())
        if self.config.rebalance.auto:
            self._spawn(self.rebalancer.auto_loop())
        if self._access_log is not None:
            self._spawn(self._access_log.flush_every())
        if self.config.timeouts.idle > 0:
            self._spawn(self._watch_idle(self.config.timeouts.idle))

    def default_pool(self, configured: str | None) -> str | None:
        """A listener's pool when no route matches: its default_pool, else the first when the file has one pool."""
        if configured is not None:
            return configured
        return self.registry.default.name if self.implicit_default else None

    def _plan_routes(self) -> None:
        """Each listener's routing plan from the current routes (after every route or pool change)."""
        plans: dict[str, ListenerPlan] = {}
        first = self.registry.default.name
        for address, (name, default, tls) in self.listen_names.items():
            plan = plan_listener(self.board.routes, name, self.default_pool(default), first, tls)
            if plan is not None:
                plans[address] = plan
        self.board.routing = plans

    async def _load_pool(self) -> None:
        """The configured servers with the saved runtime changes laid over them, each host resolved."""
        saved, problem = statefile.load(self.state_path) if self.state_path else (None, None)
        if problem:
            print(f"wsproxy: WARNING: {problem}", file=sys.stderr, flush=True)
            self.bus.publish(OperatorAction(action="state-load", server=None, ok=False, detail=problem))
        pool: list[statefile.ServerState] = []
        qualified = self.registry.qualified
        specs = self._load_topology(saved) if saved is not None else self.pool_configs
        for i, spec in enumerate(specs):
            if saved is None:
                entries = [statefile.ServerState(s) for s in spec.servers]
            else:
                entries = statefile.merge(spec.servers, statefile.in_pool(saved, spec.name, i == 0, qualified))
            pool.extend(replace(entry, pool=spec.name) for entry in entries)
        if saved is not None:
            self.removed = saved.removed & self.configured
            self._cluster_applied = saved.cluster_applied
        configured = {(p.name, s.name): s for p in self.pool_configs for s in p.servers}
        addresses = await asyncio.gather(*(self._try_resolve(entry.config.host) for entry in pool))
        unresolved = [e.config for e, a in zip(pool, addresses, strict=True) if a is None]
        if unresolved and self.config.resolve == "strict":
            servers = ", ".join(f"{s.name}={s.address}" for s in unresolved)
            hosts = ", ".join(dict.fromkeys(s.host for s in unresolved))
            raise ConfigError(
                "server",
                servers,
                f'cannot resolve {hosts}: use a host that resolves, or resolve = "lazy" (--resolve lazy) '
                "to start it down until it does",
            )
        now = time.time()
        for entry, address in zip(pool, addresses, strict=True):
            host = entry.config.host
            unresolvable = None if address is not None else f"cannot resolve {host}"
            try:
                server, events = self.registry.add(
                    entry.config, now, at_start=True, unresolved=unresolvable, pool=entry.pool
                )
            except WsproxyError as exc:
                print(f"wsproxy: WARNING: saved server {entry.config.name} skipped: {exc.message}", file=sys.stderr)
                continue
            server.edge = server_edge(configured.get((server.pool, server.short)), server)
            self.bus.publish_all(events)
            if unresolvable:
                print(f"wsproxy: WARNING: {entry.config.name}: {unresolvable}; starting it down", file=sys.stderr)
            server.connect_host = address or host
            if entry.admin != "active":
                server.admin = entry.admin
                if entry.admin == "draining":
                    server.drain_started = now
                    server.drain_deadline = entry.drain_deadline
        self.registry.refresh()
        if saved is not None:
            detail = f"restored {len(pool)} server(s) from {self.state_path}"
            self.bus.publish(OperatorAction(action="state-load", server=None, ok=True, detail=detail))

    def save_state(self) -> None:
        """Write the pool's runtime state atomically; called before a mutation is acknowledged."""
        if self.state_path:
            applied = self.cluster.applied if self.cluster is not None else self._cluster_applied
            data = statefile.snapshot(self.registry, self.removed, applied, self.topology_state())
            statefile.write_atomic(self.state_path, data)

    def _spawn(self, coro: Awaitable[Any]) -> None:
        task: asyncio.Task[Any] = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def wait(self) -> None:
        await self._stopped.wait()

    def request_stop(self) -> None:
        """First SIGTERM/SIGINT: graceful stop. A second one: close everything at once."""
        if self.stopping:
            for client in list(self.board.connections.values()):
                client.finish("proxy", "shutdown (second signal)", reset=True)
            self._stopped.set()
            return
        self.stopping = True
        self.close_listeners()  # at once, before anyone is told the engine is stopping
        self._spawn(self.shutdown(self.config.timeouts.shutdown_grace))

    def close_listeners(self) -> None:
        self.board.stopped = True
        for listener in self.listeners:
            listener.close()

    async def shutdown(self, grace: float) -> None:
        """Stop accepting at once, let connections finish for `grace` s, then close the rest spread out."""
        self.stopping = True
        self.close_listeners()
        if self.board.connections and grace > 0:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.board.empty.wait(), grace)
        remaining = list(self.board.connections.values())
        if remaining:
            spread = min(self.config.timeouts.drain_spread, 2.0)
            self.board.close_many(remaining, "shutdown", spread)
            try:
                await asyncio.wait_for(self.board.empty.wait(), spread + 1.0)
            except TimeoutError:
                for client in list(self.board.connections.values()):
                    client.finish("proxy", "shutdown", reset=True)
        for checker in self.checkers.values():
            await checker.close()
        if self.cluster is not None:
            await self.cluster.close()
        try:
            self.save_state()
        except OSError as exc:
            print(f"wsproxy: could not write the state file {self.state_path}: {exc.strerror}", file=sys.stderr)
        for task in list(self._tasks):
            if task is not asyncio.current_task():
                task.cancel()
        if self.control is not None:
            await self.control.cleanup()
        if self._access_log is not None:
            self._access_log.close()
        self._stopped.set()

    # -- background work ----------------------------------------------------------------------------

    def _resolved(self, name: str, address: str) -> None:
        """A check resolved the server's host: new connections go to that address from now on."""
        server = self.registry.servers.get(name)
        if server is not None and server.connect_host != address:
            server.connect_host = address
            self.registry.refresh()  # a supervisor pushes the pool (with the address) to its workers

    def _check_result(self, name: str, result: CheckResult) -> None:
        self.bus.publish_all(self.registry.record_check(name, result, time.time()))

    async def _sample_rates(self) -> None:
        while True:
            now = time.time()
            per_server: dict[str, tuple[int, int, int, int]] = {}
            for server in self.registry:
                bytes_in, bytes_out = server.bytes_totals()
                per_server[server.name] = (server.active, server.total, server.handshakes, bytes_in + bytes_out)
            totals = self.board.totals
            bytes_in, bytes_out = self.board.bytes_totals()
            self.rates.sample(now, (totals.active, totals.total, totals.handshakes, bytes_in + bytes_out), per_server)
            await asyncio.sleep(self.rates.interval_s - (time.time() - now) % self.rates.interval_s)

    async def _watch_idle(self, idle: float) -> None:
        step = min(idle / 4, 1.0)
        while True:
            await asyncio.sleep(step)
            self.board.sweep_idle(time.monotonic(), idle)

    async def _watch_drains(self) -> None:
        """At a drain deadline, close what is left spread over a window so clients reconnect gradually."""
        while True:
            await asyncio.sleep(0.1)
            now, mono = time.time(), time.monotonic()
            for server in self.registry:
                if server.admin != "draining":
                    continue
                self.board.close_idle_http(server, mono)
                deadline = server.drain_deadline
                if deadline is not None and now >= deadline:
                    server.drain_deadline = None
                    count = server.active
                    spread = self.config.timeouts.drain_spread
                    # In a fleet, every instance closes a client at its hash position in the window from the
                    # same deadline instant: a client with connections on two instances is closed at once.
                    offsets = FLEET_OFFSETS if self.cluster is not None else None
                    clients = self.board.close_many(server.conns, "drain deadline", spread, offsets)
                    self.bus.publish(
                        OperatorAction(
                            action="drain-deadline",
                            server=server.name,
                            ok=True,
                            detail=f"deadline reached: closing {count} connection(s) of {clients} client(s) "
                            f"over {spread:g} s, each client's at once",
                        )
                    )

    # -- operations (the control API calls these) -----------------------------------------------------

    async def _operate(self, action: str, name: str | None, fn: Callable[[], Awaitable[T]], detail: str) -> T:
        """Run one operation; its result, good or bad, becomes an operator event (the audit trail)."""
        try:
            result = await fn()
        except WsproxyError as exc:
            self.bus.publish(OperatorAction(action=action, server=name, ok=False, detail=exc.message))
            raise
        try:
            self.save_state()
        except OSError as exc:
            problem = f"{detail}, but the state file {self.state_path} could not be written ({exc.strerror})"
            self.bus.publish(OperatorAction(action=action, server=name, ok=False, detail=problem))
            raise StateNotSaved(problem) from exc
        self.bus.publish(OperatorAction(action=action, server=name, ok=True, detail=detail))
        return result

    def _named(self, action: str, name: str) -> str:
        """The server a command names as the registry keys it: POOL/NAME or a bare NAME unique across pools."""
        if not self.registry.qualified and "/" not in name:
            return name  # one pool: the name as given (today's path, refusals included)
        try:
            return self.registry.get(name).name
        except WsproxyError as exc:
            self.bus.publish(OperatorAction(action=action, server=name, ok=False, detail=exc.message))
            raise

    def _add_pool(self, name: str, pool: str | None) -> tuple[str, str]:
        """(pool, bare name) for an add: `pool`, the POOL/ of the name, or the only pool; else refused."""
        if "/" in name:
            prefix, _, name = name.partition("/")
            if pool is not None and pool != prefix:
                raise BadRequest(f"server {prefix}/{name} named with pool {pool!r}: give the pool once")
            pool = prefix
        if pool is None:
            if len(self.registry.pools) > 1:
                pools = ", ".join(self.registry.pools)
                raise BadRequest(f"several pools ({pools}): say which one the server joins (POOL/NAME or pool)")
            pool = self.registry.default.name
        self.registry.pool(pool)
        return pool, name

    async def add_server(
        self, name: str, address: str, weight: int = 1, max_conns: int | None = None, pool: str | None = None
    ) -> Server:
        if self._fleet("add", name):
            home = pool or (name.partition("/")[0] if "/" in name else None)
            if home is not None and home != self.registry.default.name:  # the fleet's stream has no pools yet
                detail = f"in a fleet, servers join pool {home} per instance (pools are per instance): use --local"
                self.bus.publish(OperatorAction(action="add", server=name, ok=False, detail=detail))
                raise Conflict(detail)
            await self._check_add(name, address, max_conns)
            return cast(Server, await self._submit("add", name, address=address, weight=weight, max_conns=max_conns))

        async def run() -> Server:
            home, short = self._add_pool(name, pool)
            host, port = parse_add(address, max_conns)
            resolved = await self._try_resolve(host)
            if resolved is None:
                raise BadRequest(f"host {host!r} does not resolve")
            config = ServerConfig(short, host, port, weight, max_conns)
            server, events = self.registry.add(config, time.time(), pool=home)
            server.connect_host = resolved
            self.removed.discard(server.name)
            self.bus.publish_all(events)
            self.checkers[server.pool].add(server.name, server.host, server.port)
            return server

        return await self._operate("add", name, run, f"added {name} at {address} weight {weight}")

    async def _resolve(self, host: str) -> None:
        """Refuse a fleet `add` whose host does not resolve here (the instance taking it checks for the fleet)."""
        if await self._try_resolve(host) is None:
            raise BadRequest(f"host {host!r} does not resolve")

    @staticmethod
    async def _try_resolve(host: str) -> str | None:
        """The address `host` resolves to now, or None (resolver.py: one function for every lookup)."""
        try:
            return await resolve(host)
        except Unresolvable:
            return None

    async def drain(self, name: str, deadline_s: float | None = None, force: bool = False) -> Server:
        name = self._named("drain", name)
        if self._fleet("drain", name):
            self.registry.validate("drain", name, force=force, deadline_s=deadline_s)
            deadline = None if deadline_s is None else time.time() + deadline_s  # one instant for the fleet
            return cast(Server, await self._submit("drain", name, deadline=deadline))

        async def run() -> Server:
            server, events = self.registry.drain(name, deadline_s, time.time(), force=force)
            self.bus.publish_all(events)
            return server

        when = "" if deadline_s is None else f", deadline {deadline_s:g} s"
        return await self._operate("drain", name, run, f"draining {name}{when}")

    async def undrain(self, name: str) -> Server:
        name = self._named("undrain", name)
        if self._fleet("undrain", name):
            server = self.registry.get(name)
            if server.admin != "draining":
                raise Conflict(f"{name} is not draining (state {server.state})")
            return cast(Server, await self._submit("undrain", name))
        return await self._simple("undrain", name, lambda: self.registry.undrain(name), f"{name} takes new connections")

    async def disable(self, name: str, force: bool = False) -> Server:
        name = self._named("disable", name)
        if self._fleet("disable", name):
            self.registry.validate("disable", name, force=force)
            return cast(Server, await self._submit("disable", name))
        return await self._simple(
            "disable", name, lambda: self.registry.disable(name, force=force), f"{name} disabled (maintenance)"
        )

    async def enable(self, name: str) -> Server:
        name = self._named("enable", name)
        if self._fleet("enable", name):
            self.registry.get(name)
            return cast(Server, await self._submit("enable", name))
        return await self._simple("enable", name, lambda: self.registry.enable(name), f"{name} enabled")

    async def set_weight(self, name: str, weight: int, force: bool = False) -> Server:
        name = self._named("weight", name)
        if self._fleet("weight", name):
            self.registry.validate("weight", name, force=force, weight=weight)
            return cast(Server, await self._submit("weight", name, weight=weight))
        return await self._simple(
            "weight", name, lambda: self.registry.set_weight(name, weight, force=force), f"{name} weight {weight}"
        )

    async def _simple(self, action: str, name: str, op: Callable[[], tuple[Server, list[Any]]], detail: str) -> Server:
        async def run() -> Server:
            server, events = op()
            self.bus.publish_all(events)
            return server

        return await self._operate(action, name, run, detail)

    async def remove(self, name: str, force: bool = False) -> Server:
        name = self._named("remove", name)
        if self._fleet("remove", name):
            self.registry.validate("remove", name, force=force)
            if not force:
                await self._refuse_fleet_connections(name)
            return cast(Server, await self._submit("remove", name))

        async def run() -> Server:
            server, events = self.registry.remove(name, force=force)
            if name in self.configured:
                self.removed.add(name)
            self.checkers[server.pool].remove(name)
            self.bus.publish_all(events)
            for client in list(server.conns):
                client.finish("proxy", "server removed (forced)")
            return server

        return await self._operate("remove", name, run, f"removed {name}" + (" (forced)" if force else ""))

    async def reload_certs(self) -> list[dict[str, Any]]:
        """Load the TLS listeners' certificate files again for new handshakes; each result becomes an event."""
        results = await self.edge.reload_all()
        for result in results:
            self.bus.publish(
                OperatorAction(
                    action="reload-certs",
                    server=None,
                    ok=result["ok"],
                    detail=f"{result['listener']}: {result['detail']}",
                )
            )
        return results

    async def close_connection(self, conn_id: int) -> int:
        async def run() -> int:
            if not self.board.close_connection(conn_id, "closed by operator"):
                raise NotFound(f"no open connection with id {conn_id}")
            return conn_id

        return await self._operate("close", None, run, f"closed connection {conn_id}")

    def _make_rebalancer(self, balancer: Balancer) -> Rebalancer:
        return Rebalancer(self.config.rebalance, self.config.balance, self.registry, self.board, balancer, self.bus)

    def preview(self, action: str, name: str, *, force: bool = False, weight: int | None = None) -> dict[str, Any]:
        """A dry run of drain, disable, weight or remove: what it would move (refused as the real one would be)."""
        if self.registry.qualified or "/" in name:
            name = self.registry.get(name).name
        return self.rebalancer.preview(action, name, force=force, weight=weight)

    async def rebalance_plan(self, rate: float | None = None) -> dict[str, Any]:
        """The plan a rebalance would run now; in a fleet, the fleet's (cluster/rebalancing.py)."""
        if self._fleet("rebalance", None):
            return await rebalancing.dry_run(self, rate)
        return self.rebalancer.dry_run()

    async def start_rebalance(self, rate: float | None) -> dict[str, Any]:
        """Start moving clients that are on the wrong server; a refusal is an operator event too."""
        fleet = self._fleet("rebalance", None)
        try:
            return await rebalancing.start(self, rate) if fleet else self.rebalancer.start(rate)
        except WsproxyError as exc:
            self.bus.publish(OperatorAction(action="rebalance", server=None, ok=False, detail=exc.message))
            raise

    async def stop_rebalance(self) -> dict[str, Any] | None:
        if self._fleet("rebalance", None):
            return await rebalancing.stop(self)
        return self.rebalancer.stop()

    async def rebalance_status(self) -> dict[str, Any] | None:
        return await rebalancing.status(self)

    # -- reading --------------------------------------------------------------------------------

    def server_dict(self, server: Server) -> dict[str, Any]:
        return server.to_dict(self.registry.total_weight(server.pool) if server.pool in self.registry.pools else 0)

    def server_detail(self, name: str) -> dict[str, Any]:
        server = self.registry.get(name)
        now = time.time()
        data = self.server_dict(server)
        data["history"] = [
            {"ts": t.ts, "from": t.from_state, "to": t.to_state, "reason": t.reason} for t in server.health.history
        ]
        data["connections"] = [c.describe(now) for c in sorted(server.conns, key=lambda c: c.conn_id)]
        return data

    def pools_status(self) -> list[dict[str, Any]]:
        """Per pool: servers, those up and taking connections, connections, and the listeners defaulting to it."""
        defaults: dict[str, list[str]] = {}
        for address, (_name, default, _tls) in self.listen_names.items():
            pool = self.default_pool(default)
            if pool is not None:
                defaults.setdefault(pool, []).append(address)
        out = []
        for name, runtime in self.registry.pools.items():
            members = self.registry.in_pool(name)
            out.append(
                {
                    "name": name,
                    "balance": runtime.balance,
                    "servers": len(members),
                    "up": len(runtime.eligible),
                    "active": sum(s.active for s in members),
                    "total": sum(s.total for s in members),
                    "default_for": defaults.get(name, []),
                    "check": check_to_dict(runtime.check),
                    "added": name in self.runtime_pools,
                }
            )
        return out

    def status(self) -> dict[str, Any]:
        now = time.time()
        totals = self.board.totals
        bytes_in, bytes_out = self.board.bytes_totals()
        check = self.config.check
        return {
            "engine": {
                "version": __version__,
                "pid": os.getpid(),
                "started": self.started,
                "uptime_s": round(now - self.started, 3),
                "control": self.control_path,
                "balance": self.config.balance,
                "stopping": self.stopping,
                "check": check_to_dict(check),
            },
            "listeners": [
                {"address": address, "active": counts[0], "total": counts[1], **self.edge.listener_status(address, now)}
                for address, counts in zip(self.listen_addresses, self.board.listener_counts.values(), strict=False)
            ],
            "limits": self.edge.limits_status(),
            "totals": {
                "active": totals.active,
                "total": totals.total,
                "connect_failures": totals.connect_failures,
                "bytes_in": bytes_in,
                "bytes_out": bytes_out,
                "handshakes": totals.handshakes,
                "dropped_events": self.bus.dropped,
                "max_clients": self.board.max_clients,
                "accepting": self.board.paused_since is None and not self.stopping,
                "cap_pauses": self.board.cap_pauses,
                "last_seq": self.bus.seq,
            },
            "servers": self.registry.snapshot(),
            "pools": self.pools_status(),
            "routes": self.routes_status(),
            "unrouted": dict(self.board.unrouted),
            "rebalance": self.rebalancer.status(),
            "cluster": self.cluster.status() if self.cluster is not None else None,
        }
