"""Per-connection work around the relay: pick a server, connect with retries, log the handshake, account the close."""

from __future__ import annotations

import asyncio
import errno
import os
import sys
import time
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from proxy_core.balancer import Balancer
from proxy_core.config import EngineConfig
from proxy_core.datapath.accesslog import AccessLog
from proxy_core.datapath.clienthello import ClientHelloReader
from proxy_core.datapath.listener import Listener
from proxy_core.datapath.relay import BackendSide, ClientSide, set_nodelay
from proxy_core.datapath.sniffer import OVERSIZED, RequestSniffer, ResponseSniffer
from proxy_core.events import ConnectFailed, ConnectionClosed, EventBus, Handshake, OperatorAction
from proxy_core.pool import Pool
from proxy_core.registry import LiveConnection, Registry, Server
from proxy_core.routing import MISDIRECTED, Decision, ListenerPlan, Route, RouteTable
from proxy_core.spread import client_key, group_by_client, schedule_by_client

if TYPE_CHECKING:
    from proxy_core.datapath.intake import Admission

# With checks off, a server marked down by traffic is tried again after this long (nginx's fail_timeout).
PASSIVE_RETRY_S = 10.0
# The head deadline is enforced to within this (or a quarter of the deadline, if shorter).
HEAD_SWEEP_MAX_S = 0.25
# A connect attempt times out within this of its deadline (one sweep for all pending attempts, see _sweep_connects).
CONNECT_SWEEP_MAX_S = 0.1
# Accepting stops at the cap and resumes below this fraction of it (hysteresis), or after ACCEPT_RETRY_S.
RESUME_FRACTION = 0.9
ACCEPT_RETRY_S = 1.0
CAP_LOG_INTERVAL_S = 10.0
# A keep-alive HTTP connection to a draining server is closed once quiet this long after the server's answer:
# long enough that a client sending its next request at once is seen doing so, short against any drain.
DRAIN_IDLE_QUIET_S = 0.3
# Descriptors kept back from clients for checks, the control API, logs and the state file.
FD_RESERVE_MIN, FD_RESERVE_MAX = 16, 256
LOCAL_RESOURCE_ERRNOS = (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM)


def clients_for_fd_limit() -> int:
    """Two descriptors per proxied connection, after a reserve; from the (raised) soft limit."""
    try:
        import resource

        soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    except (ImportError, ValueError, OSError):
        return 10_000
    if soft == resource.RLIM_INFINITY:
        soft = 1 << 20
    reserve = max(FD_RESERVE_MIN, min(FD_RESERVE_MAX, soft // 8)) + open_descriptors()
    return max(1, (soft - reserve) // 2)


def open_descriptors() -> int:
    """Descriptors this process already holds (interpreter, loop, pipes), counted once at start."""
    try:
        return len(os.listdir("/proc/self/fd"))
    except OSError:
        return 32


class Totals:
    """Engine-wide counters that outlive connections and servers."""

    __slots__ = ("active", "closed_bytes_in", "closed_bytes_out", "connect_failures", "handshakes", "total")

    def __init__(self) -> None:
        self.active = 0
        self.total = 0
        self.connect_failures = 0
        self.closed_bytes_in = 0
        self.closed_bytes_out = 0
        self.handshakes = 0


class Switchboard:
    """Owns every open connection; the relay protocols report their life events here."""

    def __init__(
        self,
        config: EngineConfig,
        registry: Registry,
        bus: EventBus,
        balancer: Balancer,
        access_log: AccessLog | None = None,
    ) -> None:
        self.config = config
        self.registry = registry
        self.bus = bus
        self.balancer = balancer
        self.access_log = access_log
        # Each client's address is kept from the start only where a record or the balancer needs it.
        self.keep_peer = (
            config.handshake_log
            or any(pool.balance == "ip_hash" for pool in registry.pools.values())
            or access_log is not None
            or config.limits.per_client
        )
        self.admission: Admission | None = None  # per-client limits and accept pacing (proxy_core.datapath.intake)
        self.connections: dict[int, ClientSide] = {}
        self.totals = Totals()
        self.listener_counts: dict[str, list[int]] = {}
        self.next_id = 0
        self.log_handshakes = config.handshake_log
        # A connection's id as the API and the logs show it: workers number apart (id * count + index).
        self.id_stride, self.id_offset = 1, 0
        # Clients whose request head is not complete yet, in order of arrival (see sweep_heads).
        self.awaiting_head: dict[int, ClientSide] = {}
        self.head_deadline = config.timeouts.head
        self.head_sweep_step = min(self.head_deadline / 4, HEAD_SWEEP_MAX_S)
        self._head_sweep: asyncio.TimerHandle | None = None
        # Connect attempts in flight by connection id: (deadline in loop time, client), oldest first.
        self.connecting: dict[int, tuple[float, ClientSide]] = {}
        self.connect_sweep_step = min((config.timeouts.connect or 1.0) / 4, CONNECT_SWEEP_MAX_S)
        self._connect_sweep: asyncio.TimerHandle | None = None
        self.stopped = False
        self.empty = asyncio.Event()
        self.empty.set()
        self._loop = asyncio.get_running_loop()
        self.listeners: list[Listener] = []
        self.max_clients = config.max_clients or clients_for_fd_limit()
        self.resume_below = max(1, int(self.max_clients * RESUME_FRACTION))
        self.paused_since: float | None = None
        self._last_cap_log = -CAP_LOG_INTERVAL_S
        self.cap_pauses = 0
        # Several pools: the routes (first match wins), each listener's plan by bound address (none: connect at
        # accept to the first pool, as a single pool does), matches per route, and requests refused 404 / 421.
        self.route_table = RouteTable(())
        self.routing: dict[str, ListenerPlan] = {}
        self.route_matched: list[int] = []
        self.unrouted = {"not_found": 0, "misdirected": 0}

    @property
    def routes(self) -> tuple[Route, ...]:
        return self.route_table.routes

    @routes.setter
    def routes(self, routes: tuple[Route, ...]) -> None:
        """Compiled once here (routing.RouteTable), not per connection."""
        self.route_table = RouteTable(routes)

    # -- life of a connection -----------------------------------------------------------------

    def accepted(self, client: ClientSide) -> None:
        if self.admission is not None and not self.admission.admit(client):
            return  # refused before any backend is contacted; counted per client by the admission
        self.next_id += 1
        client.conn_id = self.next_id
        self.connections[client.conn_id] = client
        self.empty.clear()
        totals = self.totals
        totals.active += 1
        totals.total += 1
        if totals.active >= self.max_clients and self.paused_since is None:
            self.pause_accepting(f"at the connection cap ({self.max_clients})")
        counts = self.listener_counts.get(client.listener)
        if counts is not None:
            counts[0] += 1
            counts[1] += 1
        if not self.config.tcp_nodelay and client.transport is not None:
            set_nodelay(client.transport, False)
        plan = self.routing.get(client.listener) if self.routing else None
        if plan is not None and plan.peek_sni:  # TLS passed through: its ClientHello names the site
            client.request = ClientHelloReader()
        if self.log_handshakes or (plan is not None and (plan.wait_head or plan.peek_sni)):
            if client.request is None:
                client.request = RequestSniffer()
            if self.head_deadline > 0:
                self.awaiting_head[client.conn_id] = client
                if self._head_sweep is None:
                    self._head_sweep = self._loop.call_later(self.head_sweep_step, self._sweep_heads)
        if plan is not None:
            if not plan.wait_head and not plan.peek_sni:  # routes on the listener or a terminated SNI: now
                self.route(client, plan)
            return  # else request_sniffed routes it
        client.connect_task = self._loop.create_task(self._connect(client))

    def route(self, client: ClientSide, plan: ListenerPlan, sni: str | None = None) -> None:
        """Pick the pool (routing.py) from the head parsed so far and the SNI, then connect or refuse."""
        head = client.head
        if sni is None and client.tls:
            sni = client.tls.get("sni")
        decision = self.route_table.decide(
            plan.listener,
            plan.default_pool,
            host=head.host if head is not None else None,
            path=head.path if head is not None else None,
            sni=sni,
            terminated=plan.terminated,
        )
        if decision.pool is None:
            self._refuse(client, decision)
            return
        pool = self.registry.pools.get(decision.pool)
        if pool is None:  # removed since the routes were read: as if no route
            self._refuse(client, Decision(None, status=404, reason=f"pool {decision.pool} is gone"))
            return
        client.pool = pool
        client.route = decision.route
        if decision.route is not None:
            self.route_matched[decision.route] += 1
        client.connect_task = self._loop.create_task(self._connect(client))

    def _refuse(self, client: ClientSide, decision: Decision) -> None:
        """No route and no default pool: a short answer for HTTP (404, or 421), no backend touched."""
        status = decision.status or 404
        self.unrouted["misdirected" if status == MISDIRECTED else "not_found"] += 1
        client.head_error = decision.reason
        if client.transport is not None and client.head is not None:
            client.transport.write(refusal(status, decision.reason))
        if self.log_handshakes:
            self._log_handshake(client, refused=status)
        client.finish("proxy", f"{status}: {decision.reason}")

    def _sweep_heads(self) -> None:
        """Close clients whose request head is still incomplete at the head deadline (slowloris).

        One timer for all pending heads rather than one per connection (2-3 µs each); it runs only while
        some head is pending. `awaiting_head` is in order of arrival: the sweep stops at the first in time."""
        self._head_sweep = None
        awaiting, head, now = self.awaiting_head, self.head_deadline, time.time()
        while awaiting:
            conn_id, client = next(iter(awaiting.items()))
            if now - client.started < head:
                break
            del awaiting[conn_id]
            if client.request is not None and not client.closed:
                client.head_error = f"request head not complete within {head:g} s"
                client.finish("proxy", "head timeout")
        if awaiting:
            self._head_sweep = self._loop.call_later(self.head_sweep_step, self._sweep_heads)

    def pick(self, client_ip: str, tried: list[str], pool: Pool | None = None) -> Server | None:
        if pool is not None and pool is not self.registry.default:
            eligible = pool.eligible
            if pool.has_max_conns:
                eligible = tuple(s for s in eligible if s.max_conns is None or s.active < s.max_conns)
            return pool.balancer.pick(eligible, client_ip, tried)
        eligible = self.registry.eligible
        if self.registry.has_max_conns:
            eligible = tuple(s for s in eligible if s.max_conns is None or s.active < s.max_conns)
        return self.balancer.pick(eligible, client_ip, tried)

    async def _connect(self, client: ClientSide) -> None:
        """Try servers until one accepts (bounded retries); only then close the client."""
        client_ip = client.address.rpartition(":")[0] if client.address else ""
        tried: list[str] = []
        last_reason = "no eligible server"
        timeout = self.config.timeouts.connect or None
        for attempt in range(1, self.config.retries + 2):
            server = self.pick(client_ip, tried, client.pool)
            if server is None:
                break
            tried.append(server.name)
            server.active += 1  # reserved now so least_conn and max_conns see it
            if timeout:  # one sweep for every attempt in flight, not a timer each (see _sweep_connects)
                self.connecting[client.conn_id] = (self._loop.time() + timeout, client)
                if self._connect_sweep is None:
                    self._connect_sweep = self._loop.call_later(self.connect_sweep_step, self._sweep_connects)
            try:
                edge = server.edge
                if edge is None:
                    transport, backend = await self._loop.create_connection(
                        lambda: BackendSide(client), server.connect_host, server.port
                    )
                else:  # a PROXY header first, or TLS (proxy_core.datapath.upstream)
                    local = client.transport.get_extra_info("sockname") if client.transport else None
                    header = edge.header(client.client, local)
                    transport, backend = await edge.connect(
                        self._loop, lambda: BackendSide(client), server.connect_host, server.port, header
                    )
            except asyncio.CancelledError:
                server.active -= 1
                if not client.connect_expired:
                    raise  # the client went away
                client.connect_expired = False
                last_reason = f"timeout after {int((timeout or 0) * 1000)} ms"
                self._connect_failed(server, client, last_reason, attempt)
                if client.closed:
                    return
                continue
            except OSError as exc:
                server.active -= 1
                if exc.errno in LOCAL_RESOURCE_ERRNOS:  # our own shortage, not the server's fault
                    self.pause_accepting(f"out of descriptors or memory ({exc.strerror})")
                    client.finish("proxy", f"proxy out of resources ({exc.strerror})")
                    return
                last_reason = connect_error_text(exc, timeout)
                self._connect_failed(server, client, last_reason, attempt)
                if client.closed:
                    return
                continue
            finally:
                if timeout:
                    self.connecting.pop(client.conn_id, None)
            if client.closed:
                server.active -= 1
                transport.abort()
                return
            if not self.config.tcp_nodelay:
                set_nodelay(transport, False)
            self._attach(client, server, backend)
            return
        detail = last_reason if not tried else f"{len(tried)} attempt(s) failed, last: {last_reason}"
        client.head_error = client.head_error or f"no server: {detail}"
        client.finish("proxy", f"no server available ({detail})")

    def _sweep_connects(self) -> None:
        """Cancel connect attempts past their deadline; one timer while any attempt is in flight.

        A timer per attempt (call_later, then cancel) cost more than this sweep; `connecting` is in order of
        deadline (one timeout for all, a retry goes in again at the end), so the sweep stops at the first in time."""
        self._connect_sweep = None
        pending, now = self.connecting, self._loop.time()
        while pending:
            conn_id, (deadline, client) = next(iter(pending.items()))
            if now < deadline:
                break
            del pending[conn_id]
            self._expire_connect(client)
        if pending:
            self._connect_sweep = self._loop.call_later(self.connect_sweep_step, self._sweep_connects)

    @staticmethod
    def _expire_connect(client: ClientSide) -> None:
        task = client.connect_task
        if task is not None and not task.done():
            client.connect_expired = True
            task.cancel()

    def _connect_failed(self, server: Server, client: ClientSide, reason: str, attempt: int) -> None:
        self.totals.connect_failures += 1
        self.bus.publish(
            ConnectFailed(server=server.name, client=client.client, reason=reason, attempt=attempt, pool=server.pool)
        )
        events = self.registry.record_connect_failure(server, reason, time.time())
        self.bus.publish_all(events)
        pool = self.registry.pools.get(server.pool)
        if events and pool is not None and pool.check.type == "none":
            self._loop.call_later(PASSIVE_RETRY_S, self._retry_passive, server.name)

    def _retry_passive(self, name: str) -> None:
        self.bus.publish_all(self.registry.retry_passive(name, time.time()))

    def _attach(self, client: ClientSide, server: Server, backend: BackendSide) -> None:
        server.total += 1
        server.conns.add(client)
        server.health.record_passive_success()
        client.server = server
        client.connect_task = None  # done: do not keep the finished task alive for the connection's life
        if self.log_handshakes and client.head is not None:
            client.response = ResponseSniffer()
        client.attach(backend)
        if self.log_handshakes and client.request is None and client.head is None:
            self._log_handshake(client)  # raw or malformed: nothing more to wait for

    def request_sniffed(self, client: ClientSide, request: RequestSniffer | ClientHelloReader) -> None:
        """The client's head is parsed (or known to be raw or bad): the head deadline is over."""
        self.awaiting_head.pop(client.conn_id, None)
        if isinstance(request, ClientHelloReader):
            self._hello_read(client, request)
            return
        if request.state == "done" and request.head is not None:
            client.head = request.head
            client.kind = request.head.kind
            client.path = request.head.path
            if client.server is not None:
                client.response = ResponseSniffer()
        elif request.state == "raw":
            client.kind = "raw"
            if client.server is not None:
                self._log_handshake(client)
        else:
            client.kind = "raw"
            client.head_error = request.error or "malformed request head"
            if request.error == OVERSIZED:  # refused: no backend should be made to read an endless head
                client.finish("proxy", f"request {OVERSIZED}")
            elif client.server is not None:
                self._log_handshake(client)
        if client.connect_task is None and client.server is None and not client.closed:  # waiting for this head
            plan = self.routing.get(client.listener)
            if plan is None:  # the routes changed at runtime while it came: the listener connects at accept now
                client.connect_task = self._loop.create_task(self._connect(client))
                return
            self.route(client, plan)
            if not self.log_handshakes:
                client.head = None

    def _hello_read(self, client: ClientSide, reader: ClientHelloReader) -> None:
        """A passthrough's ClientHello is read (or is none): route on its SNI, relay the bytes untouched."""
        plan = self.routing.get(client.listener)
        if client.closed:
            return
        if plan is None:  # the routes changed at runtime while it came: the listener connects at accept now
            client.connect_task = self._loop.create_task(self._connect(client))
            return
        client.kind = "raw"
        if reader.state != "done":
            client.head_error = f"no TLS ClientHello ({reader.error or 'not TLS'}): routed without a server name"
        sni = reader.hello.sni if reader.hello is not None else None
        self.route(client, plan, sni)

    def response_data(self, client: ClientSide, data: bytes) -> None:
        response = client.response
        assert response is not None
        if not response.feed(data):
            return
        client.response = None
        latency = None
        if client.first_byte_at:
            latency = round((time.perf_counter() - client.first_byte_at) * 1000, 3)
            client.first_byte_at = 0.0  # the constant: held WebSockets keep no float of their own
        if response.head is not None:
            client.reply = response.head
        else:
            client.head_error = response.error or "malformed response head"
        self._log_handshake(client, latency)

    def half_closed(self, client: ClientSide) -> None:
        timeout = self.config.timeouts.half_close
        if timeout > 0 and client.timer is None and not client.closed:
            client.timer = self._loop.call_later(timeout, self._half_close_timeout, client)

    def _half_close_timeout(self, client: ClientSide) -> None:
        client.timer = None
        client.finish("proxy", f"half-close timeout after {self.config.timeouts.half_close:g} s")

    def closed(self, client: ClientSide) -> None:
        """Account a finished pair once: counters, drain progress, the handshake and close records."""
        self.connections.pop(client.conn_id, None)
        self.awaiting_head.pop(client.conn_id, None)
        totals = self.totals
        totals.active -= 1
        totals.closed_bytes_in += client.bytes_in
        totals.closed_bytes_out += client.bytes_out
        counts = self.listener_counts.get(client.listener)
        if counts is not None:
            counts[0] -= 1
        if self.admission is not None:
            self.admission.release(client)
        server = client.server
        if server is not None:
            server.active -= 1
            server.conns.discard(client)
            server.closed_bytes_in += client.bytes_in
            server.closed_bytes_out += client.bytes_out
            if server.admin == "draining" and server.active == 0 and not server.removed:
                self.bus.publish(
                    OperatorAction(
                        action="drained",
                        server=server.name,
                        ok=True,
                        detail=f"{server.name} has no connections left: safe to restart",
                        pool=server.pool,
                    )
                )
        if self.log_handshakes:
            if client.handshake is None and (client.bytes_in or client.head_error or client.head):
                self._log_handshake(client)
            self._log_close(client)
        elif self.access_log is not None:
            self._log_close(client, publish=False)
        if self.paused_since is not None and totals.active < self.resume_below and not self.stopped:
            self.resume_accepting()
        if not self.connections:
            self.empty.set()

    # -- the connection cap and EMFILE -------------------------------------------------------------

    def pause_accepting(self, why: str) -> None:
        """Stop accepting (the kernel backlog holds newcomers); existing connections and the control API go on."""
        self.paused_since = time.monotonic()
        self.cap_pauses += 1
        for listener in self.listeners:
            listener.pause()
        now = time.monotonic()
        if now - self._last_cap_log >= CAP_LOG_INTERVAL_S:  # once per interval, never once per attempt
            self._last_cap_log = now
            print(f"wsproxy: {why}: not accepting until connections close", file=sys.stderr, flush=True)
        self._loop.call_later(ACCEPT_RETRY_S, self._retry_accepting)

    def _retry_accepting(self) -> None:
        if self.paused_since is not None and self.totals.active < self.max_clients and not self.stopped:
            self.resume_accepting()
        elif self.paused_since is not None and not self.stopped:
            self._loop.call_later(ACCEPT_RETRY_S, self._retry_accepting)

    def resume_accepting(self) -> None:
        self.paused_since = None
        for listener in self.listeners:
            listener.resume_soon()

    # -- records --------------------------------------------------------------------------------

    def _log_handshake(self, client: ClientSide, latency_ms: float | None = None, refused: int | None = None) -> None:
        if client.handshake is not None:
            return
        self.totals.handshakes += 1
        server = client.server
        if server is not None:
            server.handshakes += 1
        head, reply = client.head, client.reply
        error = client.head_error
        if error is None and head is not None and reply is None and client.closed:
            error = "closed before the backend answered"
        # One constructor call with every field (no setattr after it): the record the event stream, the
        # close record and the access line all read.
        if head is None:
            event = Handshake(
                conn=client.conn_id,
                client=client.client,
                listener=client.listener,
                server=server.name if server else (None if refused else "-"),
                kind=client.kind,
                error=error,
                latency_ms=latency_ms,
                tls=client.tls,
                status=refused,
                pool=server.pool if server else None,
                route=client.route,
            )
        else:
            event = Handshake(
                conn=client.conn_id,
                client=client.client,
                listener=client.listener,
                server=server.name if server else (None if refused else "-"),
                kind=client.kind,
                method=head.method,
                path=head.path,
                host=head.host,
                origin=head.origin,
                user_agent=head.user_agent,
                ws_version=head.ws_version,
                ws_protocol=head.ws_protocol,
                ws_extensions=head.ws_extensions,
                error=error,
                latency_ms=latency_ms,
                tls=client.tls,
                status=refused,
                pool=server.pool if server else None,
                route=client.route,
            )
        if reply is not None:
            event.status = reply.status
            if server is not None:
                server.statuses[reply.status] = server.statuses.get(reply.status, 0) + 1
            event.reason = reply.reason
            event.subprotocol = reply.subprotocol
        # The record holds what the close record and access log need: the parsed heads can go (held
        # WebSockets keep ~170 bytes less each).
        client.handshake = event
        client.head = client.reply = None
        self.bus.publish(event)

    def _log_close(self, client: ClientSide, publish: bool = True) -> None:
        server = client.server.name if client.server else None
        event = ConnectionClosed(
            conn=client.conn_id,
            client=client.client,
            server=server,
            kind=client.kind,
            duration_s=round(time.time() - client.started, 3),
            bytes_in=client.bytes_in,
            bytes_out=client.bytes_out,
            closed_by=client.closed_by,
            reason=client.close_reason,
            pool=client.server.pool if client.server else None,
            route=client.route,
        )
        if publish:
            self.bus.publish(event)
        if self.access_log is not None:
            self.access_log.write(access_record(client, event, client.conn_id * self.id_stride + self.id_offset))

    # -- operator actions on connections ---------------------------------------------------------

    def close_connection(self, conn_id: int, reason: str) -> bool:
        client = self.connections.get(conn_id)
        if client is None:
            return False
        client.finish("proxy", reason)
        return True

    def close_many(
        self,
        clients: Iterable[LiveConnection],
        reason: str,
        spread: float,
        offsets: Mapping[str, float] | None = None,
    ) -> int:
        """Close connections over `spread` seconds, all of one client's at the same instant (see spread.py).

        Returns how many clients (distinct addresses) are being closed."""
        schedule = schedule_by_client(clients, connection_client, spread, offsets)
        for delay, group in schedule:
            if delay:
                self._loop.call_later(delay, finish_all, group, reason)
            else:
                finish_all(group, reason)
        return len(schedule)

    def close_idle_http(self, server: Server, now: float, quiet: float = DRAIN_IDLE_QUIET_S) -> int:
        """On a draining server, close each client's plain-HTTP keep-alive connections once all are idle.

        Idle: the server's answer was the last thing on the connection and nothing has moved for `quiet` s.
        A client with a request pending on any of them keeps them all (a long-polling session lives on this
        node until the deadline); its WebSocket is never touched here. Without this, a client that reconnects
        would start a new session on the draining node through an old connection. Returns connections closed.
        """
        closed = 0
        for group in group_by_client(server.conns, connection_client).values():
            http = [c for c in group if c.kind == "http"]
            idle = [_quiet_answered(c, now, quiet) for c in http]  # every mark updated, not only up to the first
            if http and all(idle):
                finish_all(http, "idle keep-alive connection to a draining server")
                closed += len(http)
        return closed

    def sweep_idle(self, now: float, idle: float) -> None:
        """Close tunnels with no bytes either way for `idle` s; compares counters, so no per-chunk clock reads."""
        for client in list(self.connections.values()):
            moved = client.bytes_in + client.bytes_out
            if moved != client.idle_mark:
                client.idle_mark = moved
                client.idle_since = now
            elif now - client.idle_since >= idle:
                client.finish("proxy", f"idle timeout after {idle:g} s")

    def bytes_totals(self) -> tuple[int, int]:
        bytes_in, bytes_out = self.totals.closed_bytes_in, self.totals.closed_bytes_out
        for client in self.connections.values():
            bytes_in += client.bytes_in
            bytes_out += client.bytes_out
        return bytes_in, bytes_out


def connection_client(conn: LiveConnection) -> str:
    """The client address a connection is grouped by (the address ip_hash hashes)."""
    return client_key(conn.client)


def finish_all(conns: Iterable[LiveConnection], reason: str) -> None:
    for conn in conns:
        conn.finish("proxy", reason)


def _quiet_answered(conn: Any, now: float, quiet: float) -> bool:
    """True once nothing moved for `quiet` s and the server spoke last; updates the connection's idle mark."""
    moved = conn.bytes_in + conn.bytes_out
    if moved != conn.idle_mark:
        conn.idle_mark = moved
        conn.idle_since = now
        return False
    return bool(conn.bytes_in == conn.in_at_answer and now - conn.idle_since >= quiet)


def connect_error_text(exc: BaseException, timeout: float | None) -> str:
    """A short reason an operator recognises: "connection refused", "timeout after 1000 ms"."""
    if (isinstance(exc, TimeoutError) and not isinstance(exc, OSError)) or type(exc) is TimeoutError:
        return f"timeout after {int((timeout or 0) * 1000)} ms"
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror.lower()
    return str(exc) or type(exc).__name__


def refusal(status: int, reason: str) -> bytes:
    """The short answer to a request no route takes (the reason names the host, escaped by the caller's parse)."""
    title = "Misdirected Request" if status == MISDIRECTED else "Not Found"
    body = f"{status} {title}: {reason}\n".encode("ascii", "replace")
    head = f"HTTP/1.1 {status} {title}\r\nContent-Type: text/plain\r\nContent-Length: {len(body)}\r\n"
    return head.encode() + b"Connection: close\r\n\r\n" + body


def access_record(client: ClientSide, event: ConnectionClosed, conn: int) -> dict[str, Any]:
    """One JSON line per closed connection, like HAProxy's tcplog: the close record's fields, `conn` as the API
    numbers it, then the listener and what the handshake record saw (one dict display, no copy of the event)."""
    record = {
        "type": "close",
        "seq": event.seq,
        "ts": event.ts,
        "conn": conn,
        "client": event.client,
        "server": event.server,
        "kind": event.kind,
        "duration_s": event.duration_s,
        "bytes_in": event.bytes_in,
        "bytes_out": event.bytes_out,
        "closed_by": event.closed_by,
        "reason": event.reason,
        "pool": event.pool,
        "route": event.route,
        "listener": client.listener,
    }
    handshake = client.handshake
    if handshake is not None:
        if handshake.method is not None:
            record["method"] = handshake.method
            record["path"] = handshake.path
            record["host"] = handshake.host
        if handshake.status is not None:
            record["status"] = handshake.status
    record["latency_ms"] = handshake.latency_ms if handshake is not None else None
    if client.tls is not None:
        record["tls"] = client.tls
    return record
