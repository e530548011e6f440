"""The supervisor: the ordinary Engine (registry, checks, control API, events, state file) with workers for listeners.

Every pool change (the registry's refresh) is pushed to every worker on the next loop turn, so a drain, a weight
or a removal takes effect in all of them at once. Workers' counters are summed into the registry's servers and
the switchboard's totals as reports arrive, so status(), rates, metrics and the status page read one engine.
A worker that exits while the engine runs is restarted; its loss is an `operator` event `worker-restarted`.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import pickle
import signal
import socket
import sys
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import replace
from typing import Any, TypeVar

from proxy_core.balancer import Balancer
from proxy_core.config import EngineConfig, format_address
from proxy_core.datapath.accesslog import AccessLog
from proxy_core.datapath.switchboard import PASSIVE_RETRY_S
from proxy_core.datapath.tls import check_certificates
from proxy_core.edgeconfig import ListenerConfig
from proxy_core.engine import Engine
from proxy_core.errors import ConfigError, NotFound
from proxy_core.events import ConnectFailed, ConnectionClosed, Event, Handshake, OperatorAction
from proxy_core.rebalancer import Rebalancer
from proxy_core.registry import Server
from proxy_core.spread import client_key, even_offsets
from proxy_core.workers import topology
from proxy_core.workers.aggregate import COUNTERS, Sums
from proxy_core.workers.edge import WorkersEdge
from proxy_core.workers.handle import SyncedRegistry, WorkerHandle, exit_cause
from proxy_core.workers.link import Link, Message
from proxy_core.workers.rebalance import WorkerRebalancer
from proxy_core.workers.reuseport import HeldListeners

T = TypeVar("T")
START_TIMEOUT_S = 15.0  # interpreter start, imports and binding
REQUEST_TIMEOUT_S = 2.0
RESTART_BACKOFF_S = 1.0  # a worker that dies within its first second waits this long before the next try
ID_MARGIN = 1_000_000  # local ids a restarted worker skips: connections accepted after the last report
WATCH_S = 10.0  # a server's connection list is reported this long after a detail request
# A draining server's connections are reported from this long before its deadline, so the supervisor can space
# its clients evenly over the window for every worker at once (spread.even_offsets).
WATCH_AHEAD_S = 2.0
EVENT_TYPES: dict[str, type[Event]] = {c.type: c for c in (Handshake, ConnectionClosed, ConnectFailed)}


class Supervisor(Engine):
    """An Engine whose data path runs in `config.workers` worker processes."""

    def __init__(self, config: EngineConfig, control_path: str | None = None) -> None:
        super().__init__(config, control_path)
        self.count: int = config.workers
        self.registry = SyncedRegistry.like(self.registry, self._pool_changed)  # every pool, as the Engine's
        self.workers: list[WorkerHandle | None] = [None] * self.count
        self.restarts = 0
        self._reserved: list[socket.socket] = []
        self._held = HeldListeners()  # with per-client limits: one socket per worker, a client on one worker
        self._listen: list[ListenerConfig] = []
        self._retired = Sums()
        self._id_base = [0] * self.count
        self._sent_pool: topology.State | None = None
        self._pool_version = 0
        self._pool_acked = asyncio.Event()
        self._push_soon = False
        self._watch: dict[str, float] = {}
        self._next_req = 0
        self._last_active: dict[str, int] = {}
        self.report_arrived = asyncio.Event()
        self.worker_edge: WorkersEdge  # set in start(), once the listeners' addresses are known

    # -- start and stop ---------------------------------------------------------------------------

    async def start(self) -> None:
        """Reserve the ports (port 0 resolved once for all), start the Engine without listeners, then the workers."""
        full = self.config
        check_certificates(full)  # each worker loads them too; a bad file stops the start here, named
        self._reserve_ports()
        self._hold_listeners()
        if full.access_log:  # each worker appends to it: refuse at start, naming it, if it cannot be opened
            try:
                AccessLog.open(full.access_log).close()
            except OSError as exc:
                raise ConfigError(
                    "access_log", full.access_log, f"a file this user can append to ({exc.strerror})"
                ) from exc
        self.config = replace(full, listen=(), access_log=None)  # the supervisor neither listens nor relays
        try:
            await super().start()
        finally:
            self.config = full
        self.worker_edge = WorkersEdge(
            self.board, full, zip(self.listen_addresses, self._listen, strict=True), self._live
        )
        self.edge = self.worker_edge  # status, /metrics and reload-certs read the workers' edge
        for address in self.listen_addresses:
            self.board.listener_counts[address] = [0, 0]
        try:
            handles = await asyncio.gather(*(self._start_worker(i) for i in range(self.count)))
        except BaseException:
            await self._kill_all()
            self._held.close()
            raise
        for handle in handles:
            self._spawn(self._watch_worker(handle))

    def _reserve_ports(self) -> None:
        """Bind (never listen) one SO_REUSEPORT socket per listener: it fixes the port while workers come and go."""
        for listen in self.config.listen:
            host, port = listen.host, listen.port
            name = format_address(host, port)
            try:
                family, _, _, _, sockaddr = socket.getaddrinfo(
                    host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
                )[0]
                sock = socket.socket(family, socket.SOCK_STREAM)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
                sock.bind(sockaddr)
            except OSError as exc:
                raise ConfigError("listen", name, f"an address this host can bind ({exc.strerror})") from exc
            self._reserved.append(sock)
            bound = sock.getsockname()
            self._listen.append(replace(listen, port=bound[1]))
            address = format_address(bound[0], bound[1])
            self.listen_addresses.append(address)
            self.listen_names[address] = (name, listen.default_pool, listen.tls)  # routes are planned from these

    def _hold_listeners(self) -> None:
        """With per-client limits, the listening sockets are the supervisor's, in worker order (reuseport.py)."""
        try:
            self._held.open(self._listen, self.config.limits, self.count)
        except OSError as exc:
            self._held.close()
            listen = ", ".join(self.listen_addresses)
            raise ConfigError("listen", listen, f"an address workers can share by client ({exc.strerror})") from exc

    async def _start_worker(self, index: int) -> WorkerHandle:
        parent, child = socket.socketpair()
        held = self._held.fds(index)
        try:
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "proxy_core.workers.worker", str(child.fileno()),
                pass_fds=(child.fileno(), *held.values()), stdin=asyncio.subprocess.DEVNULL,
            )  # fmt: skip
        finally:
            child.close()
        link = await Link.open(parent)
        loop = asyncio.get_running_loop()
        handle = WorkerHandle(index, proc, link, time.monotonic(), loop.create_future(), self._pool_version)
        config = replace(self.config, listen=tuple(self._listen))
        link.send(
            {
                "t": "hello",
                "config": pickle.dumps(config).hex(),
                "index": index,
                "count": self.count,
                "id_base": self._id_base[index],
                "pool": self._pool(),
                "held": held,
            }
        )
        self._send_watch(handle)
        handle.reader = asyncio.ensure_future(self._read(handle))
        try:
            ready = await asyncio.wait_for(asyncio.shield(handle.ready), START_TIMEOUT_S)
        except (TimeoutError, ConfigError):
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()
            raise
        self.workers[index] = handle
        print(f"wsproxy: worker {index} pid {ready['pid']} listening", file=sys.stderr, flush=True)
        return handle

    async def _watch_worker(self, handle: WorkerHandle) -> None:
        """Wait for the worker to exit; unless the engine is stopping, restart it and say so."""
        code = await handle.proc.wait()
        if handle.reader is not None:
            with contextlib.suppress(TimeoutError, asyncio.CancelledError):
                await asyncio.wait_for(handle.reader, 1.0)  # its last report and events
        self._retire(handle)
        while not self.stopping:
            if time.monotonic() - handle.started < 1.0:
                await asyncio.sleep(RESTART_BACKOFF_S)
            detail = f"worker {handle.index} (pid {handle.pid}) {exit_cause(code)}"
            try:
                new = await self._start_worker(handle.index)
            except (OSError, TimeoutError, ConfigError) as exc:
                self.bus.publish(OperatorAction(action="worker-restarted", server=None, ok=False, detail=f"{detail}; "
                                                f"restart failed: {exc}"))  # fmt: skip
                await asyncio.sleep(RESTART_BACKOFF_S)
                continue
            self.restarts += 1
            detail += f"; restarted as pid {new.pid}"
            print(f"wsproxy: {detail}", file=sys.stderr, flush=True)
            self.bus.publish(OperatorAction(action="worker-restarted", server=None, ok=True, detail=detail))
            self._spawn(self._watch_worker(new))
            return

    def _retire(self, handle: WorkerHandle) -> None:
        """Keep a dead worker's cumulative counters, and move its slot's connection ids past anything it used."""
        if self.workers[handle.index] is handle:
            self.workers[handle.index] = None
        if handle.report is not None:
            self._retired.add(handle.report, gauges=False)
            self.worker_edge.retire(handle.report)
            self._id_base[handle.index] = handle.report["next_id"] + ID_MARGIN
        else:
            self._id_base[handle.index] += ID_MARGIN
        for future in handle.requests.values():
            if not future.done():
                future.set_result(False)
        handle.link.close()
        self._aggregate()

    def close_listeners(self) -> None:
        super().close_listeners()
        self._broadcast({"t": "stop"})
        self._held.close()

    def request_stop(self) -> None:
        if self.stopping:  # the second signal: workers reset what they still hold and exit
            for handle in self._live():
                with contextlib.suppress(ProcessLookupError):
                    handle.proc.send_signal(signal.SIGTERM)
        super().request_stop()

    async def shutdown(self, grace: float) -> None:
        """Every worker does the graceful stop (grace, spread closes); then the Engine's own (state file, API)."""
        self.stopping = True
        self.close_listeners()
        self._broadcast({"t": "shutdown", "grace": grace})
        handles = self._live()
        bound = grace + min(self.config.timeouts.drain_spread, 2.0) + 3.0
        if handles:
            waits = [asyncio.ensure_future(h.proc.wait()) for h in handles]
            _, pending = await asyncio.wait(waits, timeout=bound)
            if pending:
                await self._kill_all()
        for sock in self._reserved:
            sock.close()
        self._reserved.clear()
        await super().shutdown(0.0)

    async def _kill_all(self) -> None:
        for handle in self._live():
            with contextlib.suppress(ProcessLookupError):
                handle.proc.kill()
            await handle.proc.wait()

    def _live(self) -> list[WorkerHandle]:
        return [h for h in self.workers if h is not None]

    # -- the channel --------------------------------------------------------------------------------

    async def _read(self, handle: WorkerHandle) -> None:
        while (message := await handle.link.recv()) is not None:
            kind = message.get("t")
            if kind == "report":
                handle.report = message
                handle.reports += 1
                self.report_arrived.set()
                self._aggregate()
            elif kind == "pool_ack":
                handle.pool_version = message["v"]
                self._pool_acked.set()
            elif kind == "events":
                self._publish_events(message["events"])
            elif kind == "closed":
                future = handle.requests.pop(message["req"], None)
                if future is not None and not future.done():
                    future.set_result(bool(message["ok"]))
            elif kind == "ready" and not handle.ready.done():
                handle.ready.set_result(message)
            elif kind == "failed" and not handle.ready.done():
                listen = ", ".join(self.listen_addresses)
                handle.ready.set_exception(ConfigError("listen", listen, f"an address workers can bind "
                                                       f"({message['error']})"))  # fmt: skip
            elif kind == "certs_reloaded":
                self.worker_edge.reloaded(handle.index, message)
        if not handle.ready.done():
            handle.ready.set_exception(ConfigError("workers", self.count, "workers that start (one exited)"))

    def _broadcast(self, message: Message) -> None:
        for handle in self._live():
            handle.link.send(message)

    def _publish_events(self, batch: list[dict[str, Any]]) -> None:
        now = time.time()
        for data in batch:
            cls = EVENT_TYPES.get(data.pop("type", ""))
            if cls is None:
                continue
            data.pop("seq", None)
            event = cls(**data)
            self.bus.publish(event)
            if isinstance(event, ConnectFailed):
                self._passive_failure(event, now)

    def _passive_failure(self, event: ConnectFailed, now: float) -> None:
        """`max_fails` counts traffic failures from every worker, in the one registry that judges health."""
        server = self.registry.servers.get(event.server)
        if server is None:
            return
        events = self.registry.record_connect_failure(server, event.reason, now)
        self.bus.publish_all(events)
        pool = self.registry.pools.get(server.pool)
        if events and pool is not None and pool.check.type == "none":
            asyncio.get_running_loop().call_later(PASSIVE_RETRY_S, self.board._retry_passive, server.name)

    # -- the pool, pushed to the workers ----------------------------------------------------------

    def _pool(self) -> topology.State:
        """Every pool's servers, the routes and each listener's plan (as `_plan_routes` left them)."""
        return topology.state(self.registry, self.board.routes, self.board.routing)

    def _pool_changed(self) -> None:
        if not self._push_soon:
            self._push_soon = True
            asyncio.get_running_loop().call_soon(self._push_pool)

    def _push_pool(self) -> None:
        self._push_soon = False
        if not hasattr(self, "board"):
            return  # a refresh while starting: the workers' hello carries the state
        pool = self._pool()
        if pool != self._sent_pool:
            self._sent_pool = pool
            self._pool_version += 1
            self._broadcast({"t": "pool", "v": self._pool_version, **pool})

    async def _operate(self, action: str, name: str | None, fn: Callable[[], Awaitable[T]], detail: str) -> T:
        """As the Engine's, but acknowledged only once every worker applies the change (bounded wait)."""
        result = await super()._operate(action, name, fn, detail)
        self._push_pool()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(REQUEST_TIMEOUT_S):
                while any(h.pool_version < self._pool_version for h in self._live()):
                    self._pool_acked.clear()
                    await self._pool_acked.wait()
        return result

    def _send_watch(self, handle: WorkerHandle | None = None) -> None:
        now = time.monotonic()
        self._watch = {name: until for name, until in self._watch.items() if until > now}
        message = {"t": "watch", "names": sorted(self._watch)}
        for target in [handle] if handle else self._live():
            target.link.send(message)

    # -- counters ------------------------------------------------------------------------------------

    def _aggregate(self) -> None:
        """Sum the latest reports (plus retired workers) into the registry's servers and the board's totals."""
        names = set(self.registry.servers)
        self._retired.forget_servers(names)
        sums = self._retired.copy()
        reports = [h.report for h in self._live() if h.report is not None]
        for report in reports:
            sums.add(report)
        self.worker_edge.aggregate(reports)
        board = self.board
        totals = board.totals
        (totals.active, totals.total, totals.connect_failures, totals.closed_bytes_in, totals.closed_bytes_out,
         totals.handshakes) = sums.totals  # fmt: skip
        for address, counts in sums.listeners.items():
            board.listener_counts[address] = counts
        keys = topology.route_keys(board.routes)
        self._retired.forget_routes(set(keys))
        board.route_matched = [sums.routes.get(key, 0) for key in keys]
        board.unrouted = {kind: sums.unrouted.get(kind, 0) for kind in board.unrouted}
        board.cap_pauses = sums.cap_pauses
        if reports:
            board.max_clients = sum(r["max_clients"] for r in reports)
            paused = all(r["paused"] for r in reports)
            board.paused_since = (board.paused_since or time.monotonic()) if paused else None
        for server in self.registry:
            values = sums.servers.get(server.name, [0] * COUNTERS)
            self._apply(server, values, sums.statuses.get(server.name, {}))

    def _apply(self, server: Server, values: list[int], statuses: dict[int, int]) -> None:
        if values[1] > server.total:
            server.health.record_passive_success()
        (server.active, server.total, server.connect_failures, server.closed_bytes_in, server.closed_bytes_out,
         server.handshakes) = values  # fmt: skip
        server.statuses = statuses
        before = self._last_active.get(server.name, 0)
        self._last_active[server.name] = server.active
        if server.admin == "draining" and before > 0 and server.active == 0 and not server.removed:
            detail = f"{server.name} has no connections left: safe to restart"
            self.bus.publish(
                OperatorAction(action="drained", server=server.name, ok=True, detail=detail, pool=server.pool)
            )

    # -- operations that reach connections ------------------------------------------------------------

    async def _watch_drains(self) -> None:
        """At a drain deadline every worker closes its connections to the server, spread over the window."""
        spread = self.config.timeouts.drain_spread
        while True:
            await asyncio.sleep(0.1)
            if self._watch and min(self._watch.values()) < time.monotonic():
                self._send_watch()  # connection lists nobody asked for lately stop being reported
            now = time.time()
            for server in self.registry:
                deadline = server.drain_deadline
                if server.admin != "draining" or deadline is None:
                    continue
                if deadline - now < WATCH_AHEAD_S:
                    self.watch_soon(server.name)  # its clients are known to the supervisor by the deadline
                if now >= deadline:
                    server.drain_deadline = None
                    # In a fleet: no offsets, so each worker places a client at its hash position, as every
                    # other instance does (one instant for a client whose connections span instances).
                    fleet = self.cluster is not None
                    offsets = {} if fleet else even_offsets(self._clients_of(server.name), spread)
                    self._broadcast({"t": "close_server", "name": server.name, "spread": spread,
                                     "reason": "drain deadline", "offsets": offsets})  # fmt: skip
                    detail = f"deadline reached: closing {server.active} connection(s) over {spread:g} s"
                    self.bus.publish(
                        OperatorAction(action="drain-deadline", server=server.name, ok=True, detail=detail)
                    )

    def watch_soon(self, name: str) -> None:
        """Have the workers report a server's connections (kept up while asked for)."""
        known = name in self._watch
        self._watch[name] = time.monotonic() + WATCH_S
        if not known:
            self._send_watch()

    def _clients_of(self, name: str) -> list[str]:
        """Every client with a connection to the server, from the workers' latest reports."""
        return [client_key(conn.get("client")) for conn in self.reported_conns(name)]

    async def remove(self, name: str, force: bool = False) -> Server:
        server = await super().remove(name, force)
        if force:
            self._broadcast({"t": "close_server", "name": name, "spread": 0, "reason": "server removed (forced)"})
        return server

    async def close_connection(self, conn_id: int) -> int:
        async def run() -> int:
            handle = self.workers[conn_id % self.count]
            local = conn_id // self.count
            if handle is None or local == 0 or not await self._request_close(handle, local):
                raise NotFound(f"no open connection with id {conn_id}")
            return conn_id

        return await self._operate("close", None, run, f"closed connection {conn_id}")

    async def _request_close(self, handle: WorkerHandle, local: int) -> bool:
        self._next_req += 1
        future: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        handle.requests[self._next_req] = future
        handle.link.send({"t": "close", "req": self._next_req, "id": local})
        try:
            return await asyncio.wait_for(future, REQUEST_TIMEOUT_S)
        except TimeoutError:
            return False
        finally:
            handle.requests.pop(self._next_req, None)

    # -- reading ------------------------------------------------------------------------------------

    def server_detail(self, name: str) -> dict[str, Any]:
        """As the Engine's; the open connections come from the workers' reports (asked for on the first call)."""
        data = super().server_detail(name)
        name = data["name"]  # as the workers report it: POOL/NAME for a bare name with several pools
        if name not in self._watch:
            self._watch[name] = time.monotonic() + WATCH_S
            self._send_watch()
        else:
            self._watch[name] = time.monotonic() + WATCH_S
        conns: list[dict[str, Any]] = []
        for handle in self._live():
            if handle.report is not None:
                conns.extend(handle.report["conns"].get(name, []))
        data["connections"] = sorted(conns, key=lambda c: int(c["id"]))
        return data

    def _make_rebalancer(self, balancer: Balancer) -> Rebalancer:
        rebalancer = WorkerRebalancer(
            self.config.rebalance, self.config.balance, self.registry, self.board, balancer, self.bus
        )
        rebalancer.supervisor = self
        return rebalancer

    async def start_rebalance(self, rate: float | None) -> dict[str, Any]:
        assert isinstance(self.rebalancer, WorkerRebalancer)
        await self.rebalancer.fresh()
        return await super().start_rebalance(rate)

    async def rebalance_plan(self, rate: float | None = None) -> dict[str, Any]:
        assert isinstance(self.rebalancer, WorkerRebalancer)
        await self.rebalancer.fresh()
        return await super().rebalance_plan(rate)

    def live_workers(self) -> list[WorkerHandle]:
        return self._live()

    def reported_conns(self, name: str) -> list[dict[str, Any]]:
        """A server's open connections as the workers last reported them (for servers being watched)."""
        return [
            conn
            for handle in self._live()
            if handle.report is not None
            for conn in handle.report["conns"].get(name, [])
        ]

    def close_ids(self, conn_ids: Iterable[int], reason: str) -> None:
        """Close connections by their global ids, each worker its own at once (no reply awaited)."""
        by_worker: dict[int, list[int]] = {}
        for conn_id in conn_ids:
            by_worker.setdefault(conn_id % self.count, []).append(conn_id // self.count)
        for index, local in by_worker.items():
            handle = self.workers[index]
            if handle is not None:
                handle.link.send({"t": "close_ids", "ids": local, "reason": reason})

    def preview(self, action: str, name: str, *, force: bool = False, weight: int | None = None) -> dict[str, Any]:
        """As the Engine's, with connection counts from the workers' reports (clients are not known here)."""
        data = super().preview(action, name, force=force, weight=weight)
        server = self.registry.get(name)
        if action in ("drain", "disable", "remove") and server.active:
            data["impact"].update(connections=server.active, clients=None)
            data["impact"]["from"] = {server.name: {"connections": server.active, "clients": None}}
        return data

    def status(self) -> dict[str, Any]:
        data = super().status()
        workers = []
        for index, handle in enumerate(self.workers):
            report = handle.report if handle is not None else None
            workers.append(
                {
                    "index": index,
                    "pid": handle.pid if handle is not None else None,
                    "active": report["totals"][0] if report else 0,
                    "total": report["totals"][1] if report else 0,
                }
            )
        data["engine"]["workers"] = workers
        data["engine"]["worker_restarts"] = self.restarts
        data["engine"]["supervisor_pid"] = os.getpid()
        return data
