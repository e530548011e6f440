"""The scenario's moving parts: Socket.IO node processes (sio_node.py) and browser-like Socket.IO clients.

`NodeFleet` starts, stops, kills and restarts node processes by PID and reads their counters. `SioClient` is a
python-socketio AsyncClient that connects the way a browser does (long-polling, then the WebSocket upgrade)
from its own loopback address, sends a numbered, acknowledged message every `period` seconds and records
every connection, ack, loss and error, so a test can check what each user saw.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import re
import signal
import sys
import time
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import socketio

from tests.conftest import child_env, unit
from tests.e2e.browser_http import BrowserSession

NODE_SCRIPT = Path(__file__).with_name("sio_node.py")
LISTENING = re.compile(r"(?P<name>\S+) listening on (?P<host>[\d.]+):(?P<port>\d+) pid (?P<pid>\d+)")
NODE_START_S = 15.0  # interpreter start and imports of socketio + aiohttp, on a busy box
NODE_STOP_S = 5.0  # SIGTERM to exit (the node itself waits at most 2 s for its connections)
CONNECT_WAIT_S = 5.0  # a Socket.IO connect (handshake, upgrade, namespace) may take this long
SERVER_DISCONNECT = socketio.AsyncClient.reason.SERVER_DISCONNECT


# -- node processes ---------------------------------------------------------------------------------


@dataclass
class NodeProc:
    """A running sio_node.py, started by the fleet (proc set) or by someone else (only its pid file)."""

    name: str
    port: int
    pid: int
    proc: asyncio.subprocess.Process | None = None
    lines: list[str] = field(default_factory=list)
    reader: asyncio.Task[None] | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"


def pid_alive(pid: int) -> bool:
    """True while `pid` runs (a zombie that nobody reaped counts as gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rpartition(")")[2].split()[0] != "Z"


def is_node_process(pid: int) -> bool:
    """Guard against PID reuse: only ever signal a process whose command line runs sio_node.py."""
    try:
        return NODE_SCRIPT.name.encode() in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False


async def wait_gone(pid: int, timeout: float) -> bool:
    """Poll until `pid` has exited; False after `timeout` (scaled)."""
    deadline = time.monotonic() + unit(timeout)
    while pid_alive(pid):
        if time.monotonic() >= deadline:
            return False
        await asyncio.sleep(0.02)
    return True


class NodeFleet:
    """Socket.IO node processes b1..bN in `workdir`; every one is stopped by PID at close(), even on failure."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.nodes: dict[str, NodeProc] = {}
        self.pids: set[int] = set()  # every node PID this fleet has seen, for the final sweep
        self._http: aiohttp.ClientSession | None = None

    def pid_file(self, name: str) -> Path:
        return self.workdir / f"{name}.pid"

    def command(self, name: str, port: int = 0) -> list[str]:
        """The command line that runs node `name` (restart_node.py builds the same one)."""
        return [
            sys.executable, str(NODE_SCRIPT), "--name", name, "--port", str(port),
            "--pid-file", str(self.pid_file(name)), "--stats-file", str(self.workdir / f"{name}.stats.jsonl"),
        ]  # fmt: skip

    async def start(self, name: str, port: int = 0) -> NodeProc:
        """Start node `name` (on `port`, or any free one) and wait for its listening line."""
        proc = await asyncio.create_subprocess_exec(
            *self.command(name, port),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            env=child_env(),
        )
        self.pids.add(proc.pid)
        node = NodeProc(name=name, port=port, pid=proc.pid, proc=proc)
        self.nodes[name] = node
        listening = asyncio.get_running_loop().create_future()
        node.reader = asyncio.create_task(self._read(node, listening))
        try:
            match: re.Match[str] = await asyncio.wait_for(listening, unit(NODE_START_S))
        except TimeoutError:
            raise AssertionError(
                f"node {name} did not start within {unit(NODE_START_S):g} s:\n" + "\n".join(node.lines)
            ) from None
        node.port = int(match["port"])
        (self.workdir / f"{name}.port").write_text(f"{node.port}\n", encoding="utf-8")
        return node

    async def _read(self, node: NodeProc, listening: asyncio.Future[re.Match[str]]) -> None:
        assert node.proc is not None and node.proc.stdout is not None
        while raw := await node.proc.stdout.readline():
            line = raw.decode("utf-8", "replace").rstrip("\n")
            node.lines.append(line)
            if not listening.done() and (match := LISTENING.search(line)):
                listening.set_result(match)
        if not listening.done():
            listening.set_exception(
                AssertionError(f"node {node.name} exited before listening:\n" + "\n".join(node.lines))
            )

    async def start_all(self, count: int) -> list[NodeProc]:
        """Start b1..b<count> side by side."""
        return list(await asyncio.gather(*(self.start(f"b{i}") for i in range(1, count + 1))))

    async def stop(self, name: str, sig: signal.Signals = signal.SIGTERM) -> int | None:
        """Signal node `name` by PID and wait for it to exit; its exit status when it is our child."""
        node = self.nodes[name]
        with contextlib.suppress(ProcessLookupError):
            os.kill(node.pid, sig)
        if node.proc is not None:
            try:
                code = await asyncio.wait_for(node.proc.wait(), unit(NODE_STOP_S))
            except TimeoutError:
                raise AssertionError(
                    f"node {name} pid {node.pid} ignored {sig.name} for {unit(NODE_STOP_S):g} s"
                ) from None
            if node.reader is not None:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(node.reader, unit(1.0))
            return code
        if not await wait_gone(node.pid, NODE_STOP_S):
            raise AssertionError(f"node {name} pid {node.pid} ignored {sig.name} for {unit(NODE_STOP_S):g} s")
        return None

    async def kill(self, name: str) -> None:
        """SIGKILL: the node vanishes without a word to its clients."""
        await self.stop(name, signal.SIGKILL)

    async def restart(self, name: str) -> NodeProc:
        """SIGTERM, wait for the exit, start again on the same port."""
        port = self.nodes[name].port
        await self.stop(name)
        return await self.start(name, port)

    def adopt(self, name: str) -> NodeProc:
        """Track node `name` as restarted by someone else: its PID from its pid file, its port as before."""
        pid = int(self.pid_file(name).read_text().strip())
        self.pids.add(pid)
        node = NodeProc(name=name, port=self.nodes[name].port, pid=pid)
        self.nodes[name] = node
        return node

    async def stats(self, name: str) -> dict[str, Any]:
        """The node's own counters (GET /stats, straight to the node, not through the proxy)."""
        if self._http is None:
            self._http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=unit(5.0)))
        async with self._http.get(f"http://{self.nodes[name].address}/stats") as response:
            data: dict[str, Any] = await response.json()
            return data

    async def records(self) -> list[dict[str, Any]]:
        """Every node life's counters: the final ones of stopped processes, the live ones now."""
        records: list[dict[str, Any]] = []
        for stats_file in sorted(self.workdir.glob("*.stats.jsonl")):
            records.extend(json.loads(line) for line in stats_file.read_text().splitlines() if line.strip())
        for name, node in self.nodes.items():
            if pid_alive(node.pid):
                records.append(await self.stats(name))
        return records

    async def per_client(self) -> dict[str, dict[str, int]]:
        """Per X-Client (tests/e2e/browser_http.py): HTTP requests and TCP connections, over all nodes and lives."""
        out: dict[str, dict[str, int]] = {}
        for record in await self.records():
            for client, seen in record.get("per_client", {}).items():
                mine = out.setdefault(client, {"requests": 0, "connections": 0})
                mine["requests"] += seen["requests"]
                mine["connections"] += seen["connections"]
        return out

    async def counts(self) -> dict[str, dict[str, int]]:
        """Every node's counters summed over its lives: the final ones of stopped processes, the live ones now."""
        total: dict[str, dict[str, int]] = {}
        for record in await self.records():
            mine = total.setdefault(str(record["name"]), {})
            for key, value in record.items():
                if isinstance(value, int) and key not in ("pid", "clients"):
                    mine[key] = mine.get(key, 0) + value
        return total

    async def close(self) -> None:
        """Stop every node PID ever seen (and any named in a pid file): SIGTERM, then SIGKILL."""
        if self._http is not None:
            await self._http.close()
        for pid_file in self.workdir.glob("*.pid"):
            with contextlib.suppress(OSError, ValueError):
                self.pids.add(int(pid_file.read_text().strip()))
        live = [pid for pid in self.pids if pid_alive(pid) and is_node_process(pid)]
        for pid in live:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
        for pid in live:
            if not await wait_gone(pid, NODE_STOP_S) and is_node_process(pid):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
                await wait_gone(pid, 2.0)
        for node in self.nodes.values():
            if node.proc is not None and node.proc.returncode is None:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(node.proc.wait(), unit(2.0))
            if node.reader is not None:
                node.reader.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await node.reader


# -- clients ----------------------------------------------------------------------------------------


@dataclass
class Conn:
    """One Socket.IO connection of a client, from the namespace connect to the disconnect."""

    connected_at: float
    transport: str
    node: str | None = None
    greeted_at: float | None = None
    ended_at: float | None = None
    reason: str | None = None
    acked: int = 0
    lost: int = 0  # messages in flight (sent, not acknowledged) when the connection closed
    pending: deque[int] = field(default_factory=deque)


class _Client(socketio.AsyncClient):  # type: ignore[misc]
    """AsyncClient whose every failed connect attempt (first or automatic reconnect) is recorded."""

    owner: SioClient

    async def connect(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("wait_timeout", unit(CONNECT_WAIT_S))
        try:
            await super().connect(*args, **kwargs)
        except (socketio.exceptions.ConnectionError, ValueError) as exc:
            self.owner.errors.append((time.time(), f"{type(exc).__name__}: {exc}"))
            raise


class SioClient:
    """A browser-like Socket.IO user on its own loopback address, sending numbered, acknowledged messages."""

    def __init__(self, ip: str, url: str, period: float = 0.3, keepalive: bool = False) -> None:
        self.ip = ip
        self.url = url
        self.period = period
        self.conns: list[Conn] = []
        self.errors: list[tuple[float, str]] = []  # failed connect attempts: what a user would see
        self.problems: list[str] = []  # acks out of order, from another node, or with the wrong payload
        self.sent = 0
        self.acked = 0
        self.seq = 0
        self.stopping = False
        # keepalive: one browser-like keep-alive pool for the client's whole life (tests/e2e/browser_http.py).
        self.browser = BrowserSession(ip) if keepalive else None
        # Socket.IO's automatic reconnection, with a shorter delay than the browser client's 1 s +- 50 %.
        self.sio = _Client(
            reconnection=True,
            reconnection_delay=0.25,
            randomization_factor=0.1,
            reconnection_delay_max=2.0,
            request_timeout=unit(5.0),
            handle_sigint=False,
            # Without keepalive a factory: a fresh session for each connection, closed with it.
            http_session=self.browser if self.browser is not None else self._new_session,
        )
        self.sio.owner = self
        self.sio.on("connect", self._on_connect)
        self.sio.on("disconnect", self._on_disconnect)
        self.sio.on("hello", self._on_hello)
        self._tasks: set[asyncio.Task[Any]] = set()
        self._sender: asyncio.Task[None] | None = None
        self.greeted = asyncio.Event()

    def _new_session(self) -> aiohttp.ClientSession:
        # force_close: every request on a connection of its own, as a browser opens its WebSocket on a new
        # connection; so the proxy balances the polling requests and the upgrade one by one, and only
        # stickiness (ip_hash) keeps them on the node that holds the session.
        connector = aiohttp.TCPConnector(local_addr=(self.ip, 0), force_close=True)
        return aiohttp.ClientSession(connector=connector)

    @property
    def current(self) -> Conn | None:
        conn = self.conns[-1] if self.conns else None
        return conn if conn is not None and conn.ended_at is None else None

    @property
    def node(self) -> str | None:
        conn = self.current
        return conn.node if conn is not None else None

    @property
    def lost(self) -> int:
        return sum(conn.lost for conn in self.conns)

    @property
    def reconnects(self) -> int:
        return max(0, len(self.conns) - 1)

    # -- events ---------------------------------------------------------------------------------

    def _on_connect(self) -> None:
        self.conns.append(Conn(connected_at=time.time(), transport=str(self.sio.transport())))

    def _on_hello(self, data: dict[str, Any]) -> None:
        conn = self.current
        if conn is None:
            self.problems.append(f"hello {data} outside a connection")
            return
        if conn.node is not None:
            self.problems.append(f"second hello {data} on a connection greeted by {conn.node}")
        conn.node = str(data.get("node"))
        conn.greeted_at = time.time()
        self.greeted.set()

    def _on_disconnect(self, reason: str = "") -> None:
        conn = self.current
        self.greeted.clear()
        if conn is not None:
            conn.ended_at = time.time()
            conn.reason = str(reason)
            conn.lost = len(conn.pending)
            conn.pending.clear()
        if reason == SERVER_DISCONNECT and not self.stopping:
            # Socket.IO does not reconnect after the server said goodbye; apps do it themselves.
            self._spawn(self._reconnect())

    def _on_ack(self, conn: Conn, n: int, data: Any = None) -> None:
        if conn.ended_at is not None:
            self.problems.append(f"ack {n} after its connection closed")
            return
        if not conn.pending or conn.pending[0] != n:
            self.problems.append(f"ack {n} out of order (expected {conn.pending[0] if conn.pending else None})")
        with contextlib.suppress(ValueError):
            conn.pending.remove(n)
        node = data.get("node") if isinstance(data, dict) else None
        payload = data.get("payload") if isinstance(data, dict) else None
        if node != conn.node:
            self.problems.append(f"ack {n} from {node}, but {conn.node} greeted this connection")
        if payload != {"n": n, "client": self.ip}:
            self.problems.append(f"ack {n} carries {payload!r}")
        conn.acked += 1
        self.acked += 1

    # -- running --------------------------------------------------------------------------------

    def _spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _reconnect(self) -> None:
        delay = 0.25
        while not self.stopping:
            await asyncio.sleep(delay)
            if self.sio.connected or self.stopping:
                return
            if self.sio.eio.state != "disconnected":  # python-engineio may take seconds to finish closing
                continue
            with contextlib.suppress(socketio.exceptions.ConnectionError, ValueError):
                await self.sio.connect(self.url)
                return
            delay = min(delay * 2, 2.0)

    async def start(self) -> None:
        """Connect (polling, then upgrade) and start sending; a failed first connect is recorded, not raised."""
        with contextlib.suppress(socketio.exceptions.ConnectionError, ValueError):
            await self.sio.connect(self.url)
        self._sender = asyncio.create_task(self._send_loop())

    async def _send_loop(self) -> None:
        while not self.stopping:
            await asyncio.sleep(self.period * random.uniform(0.8, 1.2))
            conn = self.current
            if conn is None or conn.node is None or not self.sio.connected:
                continue
            self.seq += 1
            n = self.seq
            conn.pending.append(n)
            try:
                await self.sio.emit(
                    "msg", {"n": n, "client": self.ip}, callback=lambda data=None, c=conn, n=n: self._on_ack(c, n, data)
                )
            except socketio.exceptions.BadNamespaceError:
                with contextlib.suppress(ValueError):
                    conn.pending.remove(n)
                continue
            self.sent += 1

    async def stop(self) -> None:
        """Stop sending, let the last acks arrive (bounded), disconnect and stop reconnecting."""
        self.stopping = True
        if self._sender is not None:
            self._sender.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sender
        deadline = time.monotonic() + unit(3.0)
        while (conn := self.current) is not None and conn.pending and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        for task in list(self._tasks):
            task.cancel()
        # A WebSocket client disconnects in milliseconds; one stuck in a long-poll is cut short.
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.sio.disconnect(), unit(2.0))
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.sio.shutdown(), unit(2.0))
        if self.browser is not None:
            await self.browser.close()


class ClientFleet:
    """Clients from 127.0.0.<first>.. through the proxy at `url`; stopped at close(), even on failure."""

    def __init__(self, url: str, period: float = 0.3, keepalive: bool = False) -> None:
        self.url = url
        self.period = period
        self.keepalive = keepalive  # browser-like HTTP keep-alive pools (see SioClient)
        self.clients: list[SioClient] = []

    async def start(self, ips: Iterable[str]) -> list[SioClient]:
        """Connect one client per address, side by side (a failed connect is recorded); then they send."""
        new = [SioClient(ip, self.url, self.period, self.keepalive) for ip in ips]
        self.clients.extend(new)
        await asyncio.gather(*(client.start() for client in new))
        return new

    async def close(self) -> None:
        await asyncio.gather(*(client.stop() for client in self.clients), return_exceptions=True)

    # -- what the users saw ---------------------------------------------------------------------

    @property
    def conns(self) -> list[Conn]:
        return [conn for client in self.clients for conn in client.conns]

    def errors(self) -> list[str]:
        return [f"{client.ip}: {text}" for client in self.clients for _, text in client.errors]

    def problems(self) -> list[str]:
        return [f"{client.ip}: {text}" for client in self.clients for text in client.problems]

    def by_node(self) -> dict[str, list[SioClient]]:
        """The clients on each node now."""
        out: dict[str, list[SioClient]] = {}
        for client in self.clients:
            if client.node is not None:
                out.setdefault(client.node, []).append(client)
        return out

    def totals(self) -> dict[str, int]:
        return {
            "clients": len(self.clients),
            "sent": sum(c.sent for c in self.clients),
            "acked": sum(c.acked for c in self.clients),
            "lost_in_flight": sum(c.lost for c in self.clients),
            "reconnects": sum(c.reconnects for c in self.clients),
            "errors": sum(len(c.errors) for c in self.clients),
        }

    def gaps(self) -> list[float]:
        """For every reconnect: seconds from the disconnect to the next namespace connect."""
        out = []
        for client in self.clients:
            for before, after in zip(client.conns, client.conns[1:], strict=False):
                if before.ended_at is not None:
                    out.append(after.connected_at - before.ended_at)
        return out

    async def wait_greeted(self, clients: Sequence[SioClient] | None = None, timeout: float = 10.0) -> None:
        """Until every client (or those given) has a greeted connection; fails after `timeout` (scaled)."""
        group = list(clients if clients is not None else self.clients)
        try:
            await asyncio.wait_for(asyncio.gather(*(c.greeted.wait() for c in group)), unit(timeout))
        except TimeoutError:
            missing = [c.ip for c in group if c.node is None]
            raise AssertionError(
                f"clients not greeted within {unit(timeout):g} s: {missing}; errors {self.errors()}"
            ) from None

    async def wait_acks(self, count: int, clients: Sequence[SioClient] | None = None, timeout: float = 10.0) -> None:
        """Until every client (or those given) has `count` more acks on its current connection than now."""
        group = list(clients if clients is not None else self.clients)
        marks = {id(c): c.acked for c in group}
        deadline = time.monotonic() + unit(timeout)
        while any(c.acked < marks[id(c)] + count for c in group):
            if time.monotonic() >= deadline:
                slow = [c.ip for c in group if c.acked < marks[id(c)] + count]
                raise AssertionError(f"no {count} new acks within {unit(timeout):g} s for {slow}")
            await asyncio.sleep(0.05)


def max_in_window(times: Sequence[float], window: float) -> int:
    """The largest number of `times` inside any interval of length `window`."""
    ordered = sorted(times)
    best = 0
    start = 0
    for end, t in enumerate(ordered):
        while t - ordered[start] > window:
            start += 1
        best = max(best, end - start + 1)
    return best
