"""A worker process: listeners (SO_REUSEPORT), a Switchboard and a replica registry; no checks, no control API.

The data path is the single-process engine's, unchanged: the worker adds no per-connection work except
forwarding events the handshake log already produces, in batches. The pool comes from the supervisor;
counters go back to it every REPORT_INTERVAL_S. Run as `python -m proxy_core.workers.worker FD`.
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
from dataclasses import replace
from typing import Any

from proxy_core.config import EngineConfig
from proxy_core.datapath.accesslog import AccessLog
from proxy_core.datapath.edge import Edge, open_listener
from proxy_core.datapath.listener import Listener
from proxy_core.datapath.switchboard import Switchboard
from proxy_core.engine import server_edge
from proxy_core.events import ConnectFailed, ConnectionClosed, Event, EventBus, Handshake
from proxy_core.loop import run
from proxy_core.poolconfig import pools_of
from proxy_core.registry import Registry, Server
from proxy_core.workers import topology
from proxy_core.workers.edge import edge_report, reload_listed, worker_edge_config
from proxy_core.workers.link import Link, Message

REPORT_INTERVAL_S = 0.25
DRAIN_SWEEP_S = 0.1  # as the engine's drain watch: idle keep-alive connections to a draining server go within this
EVENT_FLUSH_S = 0.05  # events wait at most this long, so a burst of handshakes makes one message
FORWARDED = (Handshake, ConnectionClosed, ConnectFailed)  # "drained" and state events are the supervisor's


class ForwardingBus(EventBus):
    """The worker's bus keeps nothing: it queues events for the supervisor, with connection ids made global."""

    def __init__(self, index: int, count: int) -> None:
        super().__init__(capacity=1)
        self.index = index
        self.count = count
        self.pending: list[dict[str, Any]] = []
        self.link: Link | None = None
        self._flush: asyncio.TimerHandle | None = None

    def publish(self, event: Event) -> Event:
        if not isinstance(event, FORWARDED):
            return event
        if not event.ts:
            event.ts = time.time()
        data = event.to_dict()
        if "conn" in data:
            data["conn"] = data["conn"] * self.count + self.index
        self.pending.append(data)
        if self._flush is None:
            self._flush = asyncio.get_running_loop().call_later(EVENT_FLUSH_S, self.flush)
        return event

    def flush(self) -> None:
        self._flush = None
        if self.pending and self.link is not None:
            self.link.send({"t": "events", "events": self.pending})
            self.pending = []


class Worker:
    """One engine worker, steered by messages from the supervisor."""

    def __init__(self, link: Link, hello: Message) -> None:
        self.link = link
        self.config: EngineConfig = pickle.loads(bytes.fromhex(hello["config"]))  # our own parent sent it
        self.index: int = hello["index"]
        self.count: int = hello["count"]
        # The replica never judges health itself: the supervisor's registry does, engine-wide.
        self.check = replace(self.config.check, type="none", max_fails=0)
        self._pool: topology.State = hello["pool"]
        first, balance = self._pool["pools"][0]
        self.registry = Registry(self.check, balance, first)
        self.bus = ForwardingBus(self.index, self.count)
        self.bus.link = link
        self.access_log: AccessLog | None = None
        self.board: Switchboard
        self.listeners: list[Listener] = []
        self.watched: set[str] = set()
        self.stopping = False
        self.done = asyncio.Event()
        self._stopping_task: asyncio.Task[None] | None = None
        self._id_base: int = hello["id_base"]
        # Configured servers by (pool, name): their send_proxy / tls settings.
        self.configured = {(p.name, s.name): s for p in pools_of(self.config) for s in p.servers}
        self.route_keys: list[str] = []
        self._held: dict[str, int] = hello.get("held", {})  # listener index -> fd (workers/reuseport.py)

    async def start(self) -> None:
        config = self.config
        if config.access_log:
            self.access_log = AccessLog.open(config.access_log)  # the supervisor checked that it opens
        self.apply_pool(self._pool)  # the pools first: the switchboard reads their policies
        self.board = Switchboard(config, self.registry, self.bus, self.registry.default.balancer, self.access_log)
        self.board.next_id = self._id_base
        self.board.id_stride, self.board.id_offset = self.count, self.index  # as ForwardingBus numbers them
        self.apply_routes(self._pool)
        self.edge = Edge(self.board, worker_edge_config(config, self.count))
        for index, listen in enumerate(config.listen):
            held = self._held.get(str(index))  # the supervisor's socket for this worker (workers/reuseport.py)
            sock = socket.socket(fileno=held) if held is not None else None
            listener = await open_listener(self.edge, listen, reuse_port=True, sock=sock)
            self.listeners.append(listener)
            self.board.listener_counts[listener.address] = [0, 0]
        self.board.listeners = self.listeners
        self.link.send({"t": "ready", "pid": os.getpid(), "addresses": [x.address for x in self.listeners]})

    def apply_pool(self, pushed: topology.State) -> None:
        """Make the replica match the supervisor's pools: same servers, weights, admin states and health."""
        topology.replicate(self.registry, pushed, self.check, self.count, time.time(), self._edge_of)

    def _edge_of(self, server: Server) -> Any:
        return server_edge(self.configured.get((server.pool, server.short)), server)

    def apply_routes(self, pushed: topology.State) -> None:
        """The routes and each listener's plan, as the supervisor's engine planned them; counts follow their route."""
        board = self.board
        board.balancer = self.registry.default.balancer
        routes = topology.routes_of(pushed)
        if routes != board.routes:
            board.route_matched = topology.carry_counts(board.routes, board.route_matched, routes)
            board.routes = routes
            self.route_keys = topology.route_keys(routes)
        board.routing = topology.plans_of(pushed)

    # -- reports ------------------------------------------------------------------------------

    def report(self) -> Message:
        """Cumulative counters (bytes include live connections), summed by the supervisor."""
        board = self.board
        totals = board.totals
        bytes_in, bytes_out = totals.closed_bytes_in, totals.closed_bytes_out
        for client in board.connections.values():
            bytes_in += client.bytes_in
            bytes_out += client.bytes_out
        servers: dict[str, list[Any]] = {}
        for server in self.registry:
            s_in, s_out = server.bytes_totals()
            servers[server.name] = [
                server.active, server.total, server.connect_failures, s_in, s_out, server.handshakes,
                {str(k): v for k, v in server.statuses.items()},
            ]  # fmt: skip
        now = time.time()
        conns: dict[str, list[dict[str, Any]]] = {}
        for name in self.watched:
            watched = self.registry.servers.get(name)
            if watched is not None:
                conns[name] = [self._describe(c, now) for c in watched.conns]
        return {
            "t": "report",
            "pid": os.getpid(),
            "next_id": board.next_id,
            "max_clients": board.max_clients,
            "paused": board.paused_since is not None,
            "cap_pauses": board.cap_pauses,
            "totals": [totals.active, totals.total, totals.connect_failures, bytes_in, bytes_out, totals.handshakes],
            "listeners": board.listener_counts,
            "servers": servers,
            "conns": conns,
            "routes": dict(zip(self.route_keys, board.route_matched, strict=True)),
            "unrouted": board.unrouted,
            "edge": edge_report(self.edge),
        }

    def _describe(self, client: Any, now: float) -> dict[str, Any]:
        data: dict[str, Any] = client.describe(now)
        data["id"] = data["id"] * self.count + self.index
        data["worker"] = os.getpid()
        return data

    async def report_loop(self) -> None:
        while True:
            await asyncio.sleep(REPORT_INTERVAL_S)
            self.bus.flush()
            self.link.send(self.report())

    async def idle_loop(self, idle: float) -> None:
        while True:
            await asyncio.sleep(min(idle / 4, 1.0))
            self.board.sweep_idle(time.monotonic(), idle)

    async def drain_loop(self) -> None:
        """Each worker closes its own idle keep-alive HTTP connections to draining servers (see close_idle_http)."""
        while True:
            await asyncio.sleep(DRAIN_SWEEP_S)
            now = time.monotonic()
            for server in self.registry:
                if server.admin == "draining":
                    self.board.close_idle_http(server, now)

    # -- commands ------------------------------------------------------------------------------

    async def serve(self) -> None:
        """Handle the supervisor's messages until shutdown; the supervisor gone means a graceful stop."""
        while True:
            message = await self.link.recv()
            if message is None:
                await self.shutdown(self.config.timeouts.shutdown_grace)
                return
            kind = message.get("t")
            if kind == "pool":
                self.apply_pool(message)
                self.apply_routes(message)
                self.link.send({"t": "pool_ack", "v": message["v"]})
            elif kind == "watch":
                self.watched = set(message["names"])
            elif kind == "close_server":
                clients = [c for c in self.board.connections.values() if c.server and c.server.name == message["name"]]
                self.board.close_many(clients, message["reason"], float(message["spread"]), message.get("offsets"))
            elif kind == "close_ids":  # a rebalance move: this worker's share of one client's connections
                for local in message["ids"]:
                    self.board.close_connection(int(local), message["reason"])
            elif kind == "close":
                ok = self.board.close_connection(int(message["id"]), "closed by operator")
                self.link.send({"t": "closed", "req": message["req"], "ok": ok})
            elif kind == "stop":
                self.stop_accepting()
            elif kind == "shutdown":
                self._stopping_task = asyncio.ensure_future(self.shutdown(float(message["grace"])))
            elif kind == "reload_certs":  # the supervisor checked the files; load them for new handshakes
                results = reload_listed(self.edge, message["listeners"], time.time())
                self.link.send({"t": "certs_reloaded", "req": message["req"], "results": results})

    def on_sigterm(self) -> None:
        """SIGTERM: a quick graceful stop; a second one (the supervisor's second signal): reset everything."""
        if not self.stopping:
            self._stopping_task = asyncio.ensure_future(self.shutdown(0.0))
            return
        for client in list(self.board.connections.values()):
            client.finish("proxy", "shutdown (second signal)", reset=True)
        self.done.set()

    def stop_accepting(self) -> None:
        self.board.stopped = True
        for listener in self.listeners:
            listener.close()

    async def shutdown(self, grace: float) -> None:
        """The single engine's graceful stop: no new connections, `grace` s to finish, then spread closes."""
        if self.stopping:
            return
        self.stopping = True
        self.stop_accepting()
        board = self.board
        if board.connections and grace > 0:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(board.empty.wait(), grace)
        remaining = list(board.connections.values())
        if remaining:
            spread = min(self.config.timeouts.drain_spread, 2.0)
            # No shared offsets here (every worker stops on its own): each client at its hash position, which every
            # worker computes alike, so a client's connections on two workers still close at one instant.
            board.close_many(remaining, "shutdown", spread, offsets={})
            try:
                await asyncio.wait_for(board.empty.wait(), spread + 1.0)
            except TimeoutError:
                for client in list(board.connections.values()):
                    client.finish("proxy", "shutdown", reset=True)
        self.bus.flush()
        self.link.send(self.report())
        await self.link.drain()
        if self.access_log is not None:
            self.access_log.close()
        self.done.set()


async def main(fd: int) -> int:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the whole group; the supervisor decides
    link = await Link.open(socket.socket(fileno=fd))
    hello = await link.recv()
    if hello is None or hello.get("t") != "hello":
        return 2
    worker = Worker(link, hello)
    try:
        await worker.start()
    except OSError as exc:
        link.send({"t": "failed", "error": f"cannot listen: {exc.strerror or exc}"})
        await link.drain()
        return 2
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, worker.on_sigterm)
    tasks = [asyncio.ensure_future(c) for c in (worker.serve(), worker.report_loop(), worker.drain_loop())]
    if worker.config.timeouts.idle > 0:
        tasks.append(asyncio.ensure_future(worker.idle_loop(worker.config.timeouts.idle)))
    if worker.access_log is not None:
        tasks.append(asyncio.ensure_future(worker.access_log.flush_every()))
    await worker.done.wait()
    for task in tasks:
        task.cancel()
    link.close()
    return 0


if __name__ == "__main__":
    sys.exit(run(lambda: main(int(sys.argv[1]))))
