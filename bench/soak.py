"""Soak benchmark: 1,000 connections of verified random bytes through the engine while backends die and return.

Not run by CI. `python bench/soak.py [--minutes 10]` starts, all on loopback:
- 5 echo backends, each its own process (`soak.py echo --port P`: pure echo, nothing added), on CPU 1, started,
  SIGKILLed and restarted by a supervisor process (`soak.py backends`) on this process's command;
- the engine (`python -m proxy_core serve`, TCP checks every 500 ms, fall 2, rise 2, handshake log on) on CPU 0;
- 2 client processes (`soak.py client`, uvloop, raw asyncio Protocols) of 500 connections each, on CPU 1. Every
  connection sends seeded random chunks (1 B-32 KiB) with at most 64 KiB in flight, at a paced total rate, and
  checks each echoed byte against what it sent, in order, as it arrives; it also keeps a running SHA-256 of the
  bytes sent and of the bytes received and compares them when it ends. After a random budget (16 KiB-4 MiB) it
  half-closes, waits for the rest of the echo and the close, and a new connection takes its place; so does one
  that was closed under it;
- a chaos loop (this process) that every 3-6 s has a random backend SIGKILLed and restarted on the same port 1-3 s
  later, and samples the engine's RSS and descriptor count (/proc/PID/fd) every 10 s.

A connection that ends before its budget was echoed is reported by its client with its local port. This process
follows the engine's event stream (`GET /v1/events/stream`), whose `close` events name the server of each client
address, so such a close is "backend died" when that server was SIGKILLed while the connection was open (or up
to 1 s before it opened: until the killed process is gone its listening socket still completes handshakes from
its backlog, which are then reset), and "unexpected" otherwise. The close latency is the time from the kill to
the client seeing EOF or a reset. Three seconds after each kill the engine is asked for the killed server's
connections: any opened before the kill and still listed is hung.

Fails (exit status 1) on any byte mismatch, digest mismatch, unexpected or unattributed close, stalled or hung
connection, bytes lost on a connection whose backend stayed up, a close later than 2 s after its kill, RSS or
descriptors growing after the warm-up (minute 2), or this process's own event loop stalling (its timings would be
wrong). Every process is stopped by PID, also on Ctrl-C.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import faulthandler
import hashlib
import json
import math
import os
import random
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections import deque
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from measure import cpu_seconds, rss_kib, wait_seconds
from procs import Launcher, free_port, raise_nofile, wait_port, wait_unix

from proxy_core.client import ControlClient

REPO = Path(__file__).resolve().parent.parent
SOAK = str(Path(__file__).resolve())

ENGINE_CPU, LOAD_CPU = 0, 1
POOL_BYTES = 8 << 20  # each client's seeded random pool; chunks are slices of it at random offsets
MAX_CHUNK_LOG2 = 15  # chunk sizes log-uniform in 1 B .. 32 KiB
WINDOW = 64 * 1024  # bytes a connection may have in flight (sent, not yet echoed)
BUDGET_MIN, BUDGET_MAX = 16 * 1024, 4 << 20  # bytes a connection sends before it half-closes (log-uniform)
TICK_S = 0.005  # client pacing tick
STALL_S = 10.0  # bytes in flight (or a close awaited) and nothing received for this long: a stall
CONNECT_TIMEOUT_S = 10.0
END_DRAIN_S = 15.0  # at the end, time given to echoes still in flight
SAMPLE_S = 10.0  # engine RSS / fd sampling period
HANG_CHECK_S = 3.0  # after a kill, the engine must have closed the server's older connections by then
CLOSE_LIMIT_S = 2.0  # a close seen later than this after its kill fails the soak
RSS_GROWTH_LIMIT = 0.10  # RSS growth after the warm-up that fails the soak (fraction of the warm-up sample)
FD_GROWTH_LIMIT = 16  # growth of (descriptors - 2 x open connections) after the warm-up that fails the soak
LOOP_STALL_S = 10.0  # this process's loop blocked this long: dump its stacks (a bug of the benchmark)
MATCH_SLACK_S = 5.0  # an engine close event this far from the client's close may still be its record
SUPERVISOR_TIMEOUT_S = 300.0  # a kill not reported by then: the supervisor is stuck
DYING_S = 1.0  # after a SIGKILL the dead backend's backlog may still complete handshakes this long (~20 ms seen)


def log_uniform(rng: random.Random, low: float, high: float) -> int:
    return int(math.exp(rng.uniform(math.log(low), math.log(high))))


def emit(kind: str, **fields: Any) -> None:
    """One line for the orchestrator: `KIND {json}`."""
    print(kind, json.dumps(fields), flush=True)


def run_loop(coro: Any) -> Any:
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coro)
    return uvloop.run(coro)


# ---------------------------------------------------------------------------------------------------------------
# Echo backend: one process per port, so each can be SIGKILLed on its own.


class Echo(asyncio.Protocol):
    """Writes back every byte it receives; closes after its peer's EOF once everything is flushed."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport: asyncio.Transport = transport  # type: ignore[assignment]
        self.transport.set_write_buffer_limits(256 * 1024, 64 * 1024)

    def data_received(self, data: bytes) -> None:
        self.transport.write(data)

    def eof_received(self) -> bool:
        return False  # close (the write buffer is flushed first)

    def pause_writing(self) -> None:
        self.transport.pause_reading()

    def resume_writing(self) -> None:
        self.transport.resume_reading()


async def echo_main(port: int) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(Echo, "127.0.0.1", port, backlog=4096, reuse_address=True)
    stop = loop.create_future()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, lambda: stop.done() or stop.set_result(None))
    print("READY", flush=True)
    await stop
    server.close()


# ---------------------------------------------------------------------------------------------------------------
# Backend supervisor: owns the echo processes; SIGKILLs and restarts them on command.
#
# A separate process on purpose: reaping a SIGKILLed echo backend was seen to freeze the reaping process for
# seconds to minutes on this machine (a thread stuck in waitpid(WNOHANG), and meanwhile the same process's
# event loop not waking from epoll_wait); the orchestrator, which keeps the time, must never be that process.


def spawn_echo(port: int) -> subprocess.Popen[bytes]:
    """One echo backend (inherits this process's CPU pinning); returns once it listens."""
    proc = subprocess.Popen([sys.executable, SOAK, "echo", "--port", str(port)], stdout=subprocess.PIPE)
    assert proc.stdout is not None
    ready = proc.stdout.readline()  # the echo prints READY once listening, or exits if the port is taken
    if not ready.startswith(b"READY"):
        proc.kill()
        raise RuntimeError(f"echo backend on port {port} did not start (exit {proc.wait()})")
    return proc


async def supervisor_main(ports: dict[str, int]) -> None:
    """Commands on stdin: `kill NAME DOWN_S` (SIGKILL now, restart after DOWN_S), `stop`. Reports on stdout:
    `KILLED {name, mono, wall}` (times taken just before the signal), `RESTARTED {name, mono}`, `REAPED {name, s}`."""
    loop = asyncio.get_running_loop()
    procs = {name: spawn_echo(port) for name, port in ports.items()}
    emit("READY", pids={n: p.pid for n, p in procs.items()})
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    tasks: set[asyncio.Task[None]] = set()

    async def reap(name: str, proc: subprocess.Popen[bytes], t: float) -> None:
        await asyncio.to_thread(proc.wait)
        emit("REAPED", name=name, s=time.monotonic() - t)

    async def restart(name: str, down_s: float) -> None:
        await asyncio.sleep(down_s)
        procs[name] = await asyncio.to_thread(spawn_echo, ports[name])
        emit("RESTARTED", name=name, mono=time.monotonic())

    while line := await reader.readline():
        cmd = line.decode().split()
        if cmd[:1] == ["kill"] and procs.get(cmd[1]) is not None:
            name, proc = cmd[1], procs.pop(cmd[1])
            mono, wall = time.monotonic(), time.time()
            proc.kill()  # SIGKILL, by PID
            emit("KILLED", name=name, mono=mono, wall=wall)
            for coro in (reap(name, proc, mono), restart(name, float(cmd[2]))):
                task = loop.create_task(coro)
                tasks.add(task)
                task.add_done_callback(tasks.discard)
        elif cmd[:1] == ["stop"]:
            break
    for task in list(tasks):
        task.cancel()
    for proc in procs.values():
        proc.terminate()


# ---------------------------------------------------------------------------------------------------------------
# Client process: N connections, each checking its echo byte by byte and by SHA-256.


class Conn(asyncio.Protocol):
    """One verified connection: what was sent and not yet echoed is kept, and each arriving byte is compared."""

    __slots__ = (
        "budget", "client", "done", "finishing", "head_off", "in_flight", "last_rx", "opened", "pending", "port",
        "received", "sent", "sha_rx", "sha_tx", "slot", "stalled", "transport",
    )  # fmt: skip

    def __init__(self, client: Client, slot: int, budget: int) -> None:
        self.client = client
        self.slot = slot
        self.budget = budget
        self.transport: asyncio.Transport | None = None
        self.port = 0
        self.opened = self.last_rx = 0.0
        self.pending: deque[bytes] = deque()  # chunks sent, oldest first; head_off bytes of the first are echoed
        self.head_off = 0
        self.in_flight = self.sent = self.received = 0
        self.sha_tx = hashlib.sha256()
        self.sha_rx = hashlib.sha256()
        self.finishing = self.done = self.stalled = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.port = transport.get_extra_info("sockname")[1]
        self.opened = self.last_rx = time.monotonic()

    def send(self, chunk: bytes) -> None:
        assert self.transport is not None
        self.pending.append(chunk)
        self.in_flight += len(chunk)
        self.sent += len(chunk)
        self.sha_tx.update(chunk)
        self.transport.write(chunk)
        if self.sent >= self.budget:
            self.finishing = True
            self.transport.write_eof()

    def data_received(self, data: bytes) -> None:
        if self.done:
            return
        self.last_rx = time.monotonic()
        self.sha_rx.update(data)
        pending = self.pending
        pos, size, off = 0, len(data), self.head_off
        while pos < size:
            if not pending:
                self.client.mismatch(self, self.received + pos, "received more bytes than were sent")
                return
            head = pending[0]
            take = min(len(head) - off, size - pos)
            want = head if off == 0 and take == len(head) else head[off : off + take]
            got = data if pos == 0 and take == size else data[pos : pos + take]
            if want != got:
                self.client.mismatch(self, self.received + pos, "echoed bytes differ from the bytes sent")
                return
            pos += take
            off += take
            if off == len(head):
                pending.popleft()
                off = 0
        self.head_off = off
        self.received += size
        self.in_flight -= size
        self.client.confirmed += size

    def eof_received(self) -> bool:
        self.client.ended(self, "eof")
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.client.ended(self, "reset" if exc is not None else "closed")
        self.transport = None


class Client:
    """Holds `conns` connections to the engine, paces the sends, replaces what ends, reports to stdout."""

    def __init__(self, a: argparse.Namespace) -> None:
        self.host, self.port, self.n = "127.0.0.1", a.port, a.conns
        self.rng = random.Random(a.seed)
        self.pool = self.rng.randbytes(POOL_BYTES)
        self.rate = a.rate_mbs * 1e6  # bytes per second sent, in total over this client's connections
        self.slots: list[Conn | None] = [None] * self.n
        self.stopping = False
        self.opened = self.completed = self.confirmed = self.abnormal = self.mismatches = 0
        self.connect_failures = self.stalls = 0
        self.max_lag = 0.0

    def chunk(self) -> bytes:
        size = min(POOL_BYTES, int(2 ** self.rng.uniform(0, MAX_CHUNK_LOG2)))
        off = self.rng.randrange(POOL_BYTES - size + 1)
        return self.pool[off : off + size]

    async def open_slot(self, i: int) -> None:
        """Open a connection into slot i, retrying (and counting) failures until it works or we stop."""
        loop = asyncio.get_running_loop()
        while not self.stopping:
            budget = log_uniform(self.rng, BUDGET_MIN, BUDGET_MAX)
            # Bound before connecting, so even a connection reset during the connect is known by its port.
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.setblocking(False)
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
            started = time.monotonic()
            try:
                await asyncio.wait_for(loop.sock_connect(sock, (self.host, self.port)), CONNECT_TIMEOUT_S)
                _, conn = await loop.create_connection(lambda b=budget: Conn(self, i, b), sock=sock)
            except (OSError, TimeoutError) as exc:
                sock.close()
                self.connect_failures += 1
                now = time.monotonic()
                why = str(exc) or type(exc).__name__
                emit("CONNECT_FAILED", port=port, error=why, at=now)
                self.abnormal += 1  # judged like any other close: by the engine's record of this port
                emit("CLOSE", port=port, opened=started, closed=now, how="connect-failed", sent=0, echoed=0,
                     finishing=False, last_rx=started)  # fmt: skip
                await asyncio.sleep(0.1)
                continue
            self.opened += 1
            if conn.done:  # closed before create_connection returned (a dying backend's backlog): again
                continue
            self.slots[i] = conn
            return

    def ended(self, c: Conn, how: str) -> None:
        """A connection closed (EOF, FIN or reset): a verified finish, or an abnormal close to report."""
        if c.done:
            return
        c.done = True
        now = time.monotonic()
        if c.finishing and c.in_flight == 0 and c.received == c.sent:
            if c.sha_tx.digest() == c.sha_rx.digest():
                self.completed += 1
            else:  # cannot happen when the byte compare passed; kept as the independent check
                self.mismatches += 1
                emit("MISMATCH", port=c.port, offset=c.received, why="SHA-256 of the streams differ", at=now)
        else:
            self.abnormal += 1
            emit(
                "CLOSE", port=c.port, opened=c.opened, closed=now, how=how, sent=c.sent, echoed=c.received,
                finishing=c.finishing, last_rx=c.last_rx,
            )  # fmt: skip
        if c.transport is not None:
            c.transport.close()
        self.release(c)

    def mismatch(self, c: Conn, offset: int, why: str) -> None:
        self.mismatches += 1
        emit("MISMATCH", port=c.port, offset=offset, why=why, at=time.monotonic())
        c.done = True
        if c.transport is not None:
            c.transport.abort()
        self.release(c)

    def release(self, c: Conn) -> None:
        """Free the connection's slot and open its replacement."""
        if self.slots[c.slot] is c:
            self.slots[c.slot] = None
            if not self.stopping:
                asyncio.get_running_loop().create_task(self.open_slot(c.slot))

    async def pace(self) -> None:
        """Every tick, send chunks round robin to connections with room in their window, up to the rate."""
        credit = 0.0
        last = time.monotonic()
        idx = 0
        while not self.stopping:
            await asyncio.sleep(TICK_S)
            now = time.monotonic()
            self.max_lag = max(self.max_lag, now - last - TICK_S)  # how late the loop ran: this process starved
            credit = min(credit + self.rate * (now - last), self.rate * 0.05)
            last = now
            skipped = 0
            while credit > 0 and skipped < self.n:
                c = self.slots[idx]
                idx = (idx + 1) % self.n
                if c is None or c.done or c.finishing or c.transport is None or c.in_flight >= WINDOW:
                    skipped += 1
                    continue
                skipped = 0
                chunk = self.chunk()
                c.send(chunk)
                credit -= len(chunk)

    async def watchdog(self) -> None:
        """Report connections with bytes (or a close) outstanding and nothing received for STALL_S."""
        while not self.stopping:
            await asyncio.sleep(1.0)
            now = time.monotonic()
            for c in self.slots:
                if c is None or c.done or c.stalled or not (c.in_flight or c.finishing):
                    continue
                if now - c.last_rx > STALL_S:
                    c.stalled = True
                    self.stalls += 1
                    emit("STALL", port=c.port, opened=c.opened, last_rx=c.last_rx, in_flight=c.in_flight, at=now)

    async def stats(self) -> None:
        while not self.stopping:
            await asyncio.sleep(SAMPLE_S)
            emit("STAT", at=time.monotonic(), max_tick_lag_ms=round(1000 * self.max_lag, 1), **self.counters())
            self.max_lag = 0.0

    def counters(self) -> dict[str, int]:
        return {
            "open": sum(1 for c in self.slots if c is not None and not c.done),
            "opened": self.opened,
            "completed": self.completed,
            "confirmed": self.confirmed,
            "abnormal": self.abnormal,
            "mismatches": self.mismatches,
            "connect_failures": self.connect_failures,
            "stalls": self.stalls,
        }

    async def finish(self) -> dict[str, Any]:
        """Stop sending, let the echoes in flight arrive, check every live connection's digests, close all."""
        self.stopping = True
        deadline = time.monotonic() + END_DRAIN_S
        while time.monotonic() < deadline and any(c and not c.done and c.in_flight for c in self.slots):
            await asyncio.sleep(0.05)
        verified = lost_conns = lost_bytes = 0
        for c in self.slots:
            if c is None or c.done:
                continue
            c.done = True
            if c.in_flight:
                lost_conns += 1
                lost_bytes += c.in_flight
                emit("END_LOST", port=c.port, opened=c.opened, sent=c.sent, echoed=c.received, last_rx=c.last_rx)
            elif c.sha_tx.digest() == c.sha_rx.digest():
                verified += 1
            else:
                self.mismatches += 1
                emit("MISMATCH", port=c.port, offset=c.received, why="SHA-256 differs at the end", at=time.monotonic())
            if c.transport is not None:
                c.transport.close()
        await asyncio.sleep(0.5)
        return {**self.counters(), "verified_at_end": verified, "lost_at_end": lost_conns, "lost_bytes": lost_bytes}


async def client_main(a: argparse.Namespace) -> None:
    loop = asyncio.get_running_loop()
    client = Client(a)
    sem = asyncio.Semaphore(100)

    async def first(i: int) -> None:
        async with sem:
            await client.open_slot(i)

    await asyncio.gather(*(first(i) for i in range(client.n)))
    emit("READY", conns=client.n)
    stop = loop.create_future()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, lambda: stop.done() or stop.set_result(None))
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)

    async def wait_stdin() -> None:
        await reader.readline()  # "stop", or EOF when the orchestrator is gone
        if not stop.done():
            stop.set_result(None)

    tasks = [loop.create_task(t) for t in (client.pace(), client.watchdog(), client.stats(), wait_stdin())]
    await stop
    for t in tasks:
        t.cancel()
    emit("RESULT", **await client.finish())


# ---------------------------------------------------------------------------------------------------------------
# Orchestrator.


@dataclass
class Kill:
    server: str
    mono: float
    wall: float
    down_s: float
    dead: float = 0.0  # monotonic time the supervisor reaped the killed process (diagnostic)
    restarted: float | None = None
    hung: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class Sample:
    t: float  # seconds since the load started
    rss_kib: int
    fds: int
    active: int  # engine's open client connections (totals.active)
    cpu_s: float
    wait_s: float  # engine's run-queue wait so far (runnable, its core busy with something else)
    load1: float
    status_ms: float = 0.0  # how long GET /v1/status took


@dataclass
class Backend:
    name: str
    port: int
    up: bool = True


class Soak:
    """Starts everything, runs the chaos and the sampling, collects the clients' reports, judges."""

    def __init__(self, a: argparse.Namespace, workdir: Path) -> None:
        self.a = a
        self.workdir = workdir
        self.launcher = Launcher(workdir)
        self.rng = random.Random(a.seed)
        self.backends: list[Backend] = []
        self.engine: subprocess.Popen[bytes] | None = None
        self.engine_port = 0
        self.control = str(workdir / "ctl.sock")
        self.clients: list[subprocess.Popen[bytes]] = []
        self.kills: list[Kill] = []
        self.pending_kills: dict[str, Kill] = {}  # the latest kill asked for, by server
        self.killed: dict[str, asyncio.Event] = {}
        self.tasks: list[asyncio.Task[None]] = []
        self.supervisor: subprocess.Popen[bytes] | None = None
        self.by_name: dict[str, Backend] = {}
        self.samples: list[Sample] = []
        self.reports: dict[str, list[dict[str, Any]]] = {}
        self.results: list[dict[str, Any]] = []
        self.stats: dict[int, dict[str, Any]] = {}
        self.stat_log: list[dict[str, Any]] = []
        self.engine_totals: dict[str, Any] = {}
        self.loop_lag = 0.0
        self.stream_errors: list[str] = []
        self.closes: dict[int, list[tuple[float, str | None, str, str]]] = {}  # port -> (ts, server, by, reason)
        self.event_counts: dict[str, int] = {}
        self.missed_events = 0
        self.t0 = 0.0
        self.wall_offset = time.time() - time.monotonic()

    # -- processes ---------------------------------------------------------------------------------------------

    async def start_supervisor(self) -> asyncio.StreamReader:
        """The backend supervisor process (CPU 1) and its echo backends; returns its stdout, READY consumed."""
        ports = [x for b in self.backends for x in ("--backend", f"{b.name}={b.port}")]
        self.supervisor = self.launcher.start([sys.executable, SOAK, "backends", *ports], LOAD_CPU, "backends", True)
        reader = asyncio.StreamReader(limit=1 << 20)
        loop = asyncio.get_running_loop()
        await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), self.supervisor.stdout)
        line = await asyncio.wait_for(reader.readline(), 60)
        if not line.startswith(b"READY"):
            raise RuntimeError(f"backends did not start: {self.launcher.log_tail('backends')}")
        return reader

    async def read_supervisor(self, reader: asyncio.StreamReader) -> None:
        """KILLED / RESTARTED / REAPED reports: the kill times the close latencies are measured from."""
        while line := await reader.readline():
            kind, _, body = line.decode().partition(" ")
            rec = json.loads(body)
            kill = self.pending_kills.get(rec["name"])
            if kind == "KILLED" and kill is not None:
                kill.mono, kill.wall = rec["mono"], rec["wall"]
                self.kills.append(kill)
                self.killed[rec["name"]].set()
                self.tasks.append(asyncio.create_task(self.hang_check(kill)))
            elif kind == "RESTARTED" and kill is not None:
                kill.restarted = rec["mono"]
                self.by_name[rec["name"]].up = True
            elif kind == "REAPED" and kill is not None:
                kill.dead = kill.mono + rec["s"]

    def start_engine(self) -> None:
        self.engine_port = free_port()
        backs = [x for b in self.backends for x in ("--backend", f"{b.name}=127.0.0.1:{b.port}")]
        argv = [
            sys.executable, "-m", "proxy_core", "serve", "--listen", f"127.0.0.1:{self.engine_port}", *backs,
            "--control", self.control, "--check", "tcp", "--check-interval", "500", "--fall", "2", "--rise", "2",
        ]  # fmt: skip
        env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
        self.engine = self.launcher.start(argv, ENGINE_CPU, "engine", env=env, cwd=str(REPO))
        wait_port(self.engine_port, self.engine)
        wait_unix(self.control)

    async def start_clients(self) -> list[asyncio.Task[None]]:
        per = [self.a.conns // self.a.clients + (i < self.a.conns % self.a.clients) for i in range(self.a.clients)]
        readers = []
        for i, n in enumerate(per):
            argv = [
                sys.executable, SOAK, "client", "--port", str(self.engine_port), "--conns", str(n),
                "--seed", str(self.a.seed * 1000 + i), "--rate-mbs", str(self.a.rate_mbs / self.a.clients),
            ]  # fmt: skip
            proc = self.launcher.start(argv, LOAD_CPU, f"client{i}", pipe_stdio=True)
            self.clients.append(proc)
            reader = asyncio.StreamReader(limit=1 << 20)
            loop = asyncio.get_running_loop()
            await loop.connect_read_pipe(lambda r=reader: asyncio.StreamReaderProtocol(r), proc.stdout)
            readers.append(reader)
        for reader in readers:
            line = await asyncio.wait_for(reader.readline(), 120)
            if not line.startswith(b"READY"):
                raise RuntimeError(f"client did not start: {line!r}")
        return [asyncio.create_task(self.read_client(i, r)) for i, r in enumerate(readers)]

    async def read_client(self, i: int, reader: asyncio.StreamReader) -> None:
        while line := await reader.readline():
            kind, _, body = line.decode().partition(" ")
            rec = json.loads(body) if body.strip() else {}
            if kind == "STAT":
                self.stats[i] = rec
                self.stat_log.append({"client": i, "t": round(rec["at"] - self.t0, 1), **rec})
            elif kind == "RESULT":
                self.results.append(rec)
            else:
                rec["client"] = i
                self.reports.setdefault(kind, []).append(rec)

    # -- chaos, sampling, events -------------------------------------------------------------------------------

    async def chaos(self, until: float) -> None:
        """Every 3-6 s, have the supervisor SIGKILL a random running backend and restart it 1-3 s later."""
        while True:
            await asyncio.sleep(self.rng.uniform(3.0, 6.0))
            if time.monotonic() >= until:
                break
            up = [b for b in self.backends if b.up]
            if not up:
                continue
            b = self.rng.choice(up)
            b.up = False
            kill = Kill(b.name, 0.0, 0.0, self.rng.uniform(1.0, 3.0))
            self.pending_kills[b.name] = kill
            self.killed[b.name] = asyncio.Event()
            assert self.supervisor is not None and self.supervisor.stdin is not None
            self.supervisor.stdin.write(f"kill {b.name} {kill.down_s:.3f}\n".encode())
            self.supervisor.stdin.flush()
            try:  # the next kill only after this one happened
                await asyncio.wait_for(self.killed[b.name].wait(), SUPERVISOR_TIMEOUT_S)
            except TimeoutError:
                raise RuntimeError(
                    f"the backend supervisor did not kill {b.name} in {SUPERVISOR_TIMEOUT_S:g} s"
                ) from None
        deadline = time.monotonic() + 30
        while not all(b.up for b in self.backends) and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        await asyncio.gather(*self.tasks)

    async def hang_check(self, kill: Kill) -> None:
        """The engine must have closed every connection the killed server had (started before the kill)."""
        await asyncio.sleep(HANG_CHECK_S)
        try:
            async with ControlClient(target=self.control) as c:
                info = await c.server(kill.server)
        except Exception as exc:  # the engine did not answer: that is a finding too
            kill.hung = [{"error": f"GET /v1/servers/{kill.server} failed: {exc}"}]
            return
        kill.hung = [x for x in info.get("connections", []) if x["started"] < kill.wall - 0.05]

    async def heartbeat(self) -> None:
        """Dump every thread's stack to stalls.txt if this event loop stops turning for LOOP_STALL_S."""
        with open(self.workdir / "stalls.txt", "w") as out:
            while True:
                faulthandler.dump_traceback_later(LOOP_STALL_S, file=out)
                t = time.monotonic()
                await asyncio.sleep(0.5)
                self.loop_lag = max(self.loop_lag, time.monotonic() - t - 0.5)

    async def sample(self) -> None:
        async with ControlClient(target=self.control) as c:
            while True:
                self.samples.append(await self.read_sample(c))
                if len(self.samples) % 3 == 1:
                    self.progress()
                await asyncio.sleep(SAMPLE_S - (time.monotonic() - self.t0) % SAMPLE_S)

    async def read_sample(self, c: ControlClient) -> Sample:
        """The engine's RSS, descriptors, CPU and run-queue wait from /proc, and its open connections."""
        assert self.engine is not None
        pid = self.engine.pid
        t = time.monotonic()
        try:
            self.engine_totals = (await c.status())["totals"]
            active = int(self.engine_totals["active"])
        except Exception:
            active = -1
        status_ms = 1000 * (time.monotonic() - t)
        return Sample(
            t=round(t - self.t0, 1),
            rss_kib=rss_kib(pid),
            fds=len(os.listdir(f"/proc/{pid}/fd")),
            active=active,
            cpu_s=cpu_seconds(pid),
            wait_s=wait_seconds(pid),
            load1=os.getloadavg()[0],
            status_ms=round(status_ms, 1),
        )

    def progress(self) -> None:
        s = self.samples[-1]
        confirmed = sum(st.get("confirmed", 0) for st in self.stats.values())
        opened = sum(st.get("opened", 0) for st in self.stats.values())
        print(
            f"[{s.t:5.0f}s] kills {len(self.kills)}, conns opened {opened:,}, verified {confirmed / 2**30:.2f} GiB, "
            f"abnormal closes {len(self.reports.get('CLOSE', []))}, mismatches {len(self.reports.get('MISMATCH', []))}"
            f", stalls {len(self.reports.get('STALL', []))}; engine RSS {s.rss_kib / 1024:.1f} MiB, fds {s.fds}, "
            f"open {s.active} (clients: {'/'.join(str(st.get('open')) for st in self.stats.values())}, max tick lag "
            f"{max((st.get('max_tick_lag_ms', 0) for st in self.stats.values()), default=0):.0f} ms); "
            f"load {s.load1:.2f}",
            flush=True,
        )

    async def follow_events(self) -> None:
        """Record each `close` event by client port: the engine's word on which server a connection had.

        A broken stream is followed again from the last event seen (the engine keeps 10,000 in its ring).
        """
        last = 0
        while True:
            try:
                async with ControlClient(target=self.control) as c:
                    async for ev in c.stream_events(since=last):
                        last = max(last, int(ev.get("seq") or 0))
                        self.on_event(ev)
            except Exception as exc:
                self.stream_errors.append(f"{time.monotonic() - self.t0:.1f}s: {exc}")
            await asyncio.sleep(0.2)

    def on_event(self, ev: dict[str, Any]) -> None:
        kind = ev.get("type", "?")
        self.event_counts[kind] = self.event_counts.get(kind, 0) + 1
        if kind == "close":
            port = int(str(ev["client"]).rsplit(":", 1)[1])
            self.closes.setdefault(port, []).append(
                (ev["ts"], ev.get("server"), ev.get("closed_by", ""), ev.get("reason", ""))
            )
        elif kind == "gap":
            self.missed_events += int(ev.get("missed", 0))

    # -- the run -----------------------------------------------------------------------------------------------

    async def run(self) -> dict[str, Any]:
        a = self.a
        load_before = os.getloadavg()
        self.backends = [Backend(f"b{i + 1}", free_port()) for i in range(a.backends)]
        self.by_name = {b.name: b for b in self.backends}
        supervisor = asyncio.create_task(self.read_supervisor(await self.start_supervisor()))
        self.start_engine()
        follower = asyncio.create_task(self.follow_events())
        readers = await self.start_clients()
        self.t0 = time.monotonic()
        end = self.t0 + a.minutes * 60
        print(f"load on: {a.conns} connections, {a.rate_mbs:g} MB/s; chaos for {a.minutes:g} min", flush=True)
        sampler = asyncio.create_task(self.sample())
        heart = asyncio.create_task(self.heartbeat())
        try:
            await self.chaos(until=end - 2.0)
            await asyncio.sleep(max(0.0, end - time.monotonic()))
            await asyncio.sleep(HANG_CHECK_S)
            sampler.cancel()
            await self.final_sample()
            for proc in self.clients:
                assert proc.stdin is not None
                proc.stdin.write(b"stop\n")
                proc.stdin.flush()
            await asyncio.wait_for(asyncio.gather(*readers), END_DRAIN_S + 30)
            await asyncio.sleep(1.0)  # the last close events
        finally:
            sampler.cancel()
            follower.cancel()
            supervisor.cancel()
            heart.cancel()
            faulthandler.cancel_dump_traceback_later()
        return self.judge(load_before, os.getloadavg())

    async def final_sample(self) -> None:
        async with ControlClient(target=self.control) as c:
            self.samples.append(await self.read_sample(c))

    # -- verdict -----------------------------------------------------------------------------------------------

    def attribute(self, rec: dict[str, Any]) -> tuple[str, float | None, str]:
        """("died", latency, server) | ("unexpected", None, detail) | ("unattributed", None, "")."""
        opened_w, closed_w = rec["opened"] + self.wall_offset, rec["closed"] + self.wall_offset
        cands = [e for e in self.closes.get(rec["port"], []) if opened_w - 1 <= e[0] <= closed_w + MATCH_SLACK_S]
        if not cands:
            return "unattributed", None, ""
        _ts, server, by, reason = min(cands, key=lambda e: abs(e[0] - closed_w))
        for k in self.kills:
            # The connection lived while its server was being killed. A dying process's listening socket still
            # completes handshakes from its backlog until the process is reaped, then resets them: count those.
            if k.server == server and rec["opened"] <= k.mono + DYING_S and k.mono <= rec["closed"]:
                return "died", rec["closed"] - k.mono, str(server)
        return "unexpected", None, f"server {server}, closed by {by}: {reason}"

    def judge(self, load_before: tuple[float, ...], load_after: tuple[float, ...]) -> dict[str, Any]:
        died: list[float] = []
        died_how: dict[str, int] = {}
        unexpected: list[dict[str, Any]] = []
        unattributed: list[dict[str, Any]] = []
        lost_on_died = 0
        for rec in self.reports.get("CLOSE", []):
            verdict, latency, detail = self.attribute(rec)
            if verdict == "died":
                assert latency is not None
                died.append(latency)
                died_how[rec["how"]] = died_how.get(rec["how"], 0) + 1
                lost_on_died += rec["sent"] - rec["echoed"]
            elif verdict == "unexpected":
                unexpected.append({**rec, "detail": detail})
            else:
                unattributed.append(rec)
        hung = [h for k in self.kills for h in k.hung]
        res = self.results
        total = {k: sum(r.get(k, 0) for r in res) for k in res[0]} if res else {}
        warm = min(self.a.warmup_minutes * 60, self.a.minutes * 60 / 2)
        # Memory is judged only on runs of at least twice the warm-up: before it, the event ring is still filling.
        long_enough = self.a.minutes >= 2 * self.a.warmup_minutes
        window = [s for s in self.samples if s.t >= warm - 1] or self.samples[-1:]
        first, last = window[0], window[-1]
        minutes = (last.t - first.t) / 60 or 1.0
        rss_slope = slope([(s.t / 60, s.rss_kib / 1024) for s in window])
        fd_resid = [(s.t / 60, s.fds - 2 * s.active) for s in window if s.active >= 0]
        fd_slope = slope(fd_resid)
        fd_growth = (fd_resid[-1][1] - fd_resid[0][1]) if fd_resid else 0
        rss_growth = (last.rss_kib - first.rss_kib) / first.rss_kib if first.rss_kib else 0.0
        engine_cpu = (last.cpu_s - self.samples[0].cpu_s) / max(1e-9, last.t - self.samples[0].t)
        checks = {
            "no byte or digest mismatch": len(self.reports.get("MISMATCH", [])) == 0,
            "no unexpected close": not unexpected,
            "every abnormal close attributed": not unattributed,
            "no stalled connection": not self.reports.get("STALL"),
            "no connection hung on the engine after a kill": not hung,
            "no bytes lost on surviving connections at the end": total.get("lost_at_end", 0) == 0,
            f"every close within {CLOSE_LIMIT_S:g} s of its kill": (max(died) if died else 0) <= CLOSE_LIMIT_S,
            f"RSS flat after minute {warm / 60:g} (< {RSS_GROWTH_LIMIT:.0%})": rss_growth < RSS_GROWTH_LIMIT
            if long_enough
            else None,
            f"descriptors flat after minute {warm / 60:g} (< {FD_GROWTH_LIMIT})": fd_growth < FD_GROWTH_LIMIT
            if long_enough
            else None,
            "chaos happened (>= 1 kill)": bool(self.kills),
            "the orchestrator never stalled (> 2 s)": self.loop_lag < 2.0,
        }
        return {
            "minutes": self.a.minutes,
            "load_avg_before": load_before,
            "load_avg_after": load_after,
            "kills": len(self.kills),
            "kills_per_server": {b.name: sum(k.server == b.name for k in self.kills) for b in self.backends},
            "clients": total,
            "engine_totals": self.engine_totals,
            "events": self.event_counts,
            "missed_events": self.missed_events,
            "event_stream_errors": self.stream_errors,
            "closes_backend_died": len(died),
            "closes_backend_died_how": died_how,
            "close_latency_s": {
                "max": max(died) if died else None,
                "p50": statistics.median(died) if died else None,
                "p99": sorted(died)[int(0.99 * (len(died) - 1))] if died else None,
            },
            "bytes_unechoed_on_died": lost_on_died,
            "unexpected": unexpected[:20],
            "unexpected_count": len(unexpected),
            "unattributed": unattributed[:20],
            "unattributed_count": len(unattributed),
            "mismatches": self.reports.get("MISMATCH", [])[:20],
            "stalls": self.reports.get("STALL", [])[:20],
            "connect_failed": len(self.reports.get("CONNECT_FAILED", [])),
            "engine_wait_pct": 100 * (last.wait_s - self.samples[0].wait_s) / max(1e-9, last.t - self.samples[0].t),
            "end_lost": self.reports.get("END_LOST", [])[:20],
            "hung": hung[:20],
            "hung_count": len(hung),
            "warmup_s": warm,
            "at_warmup": asdict(first),
            "at_end": asdict(last),
            "rss_slope_mib_per_min": rss_slope,
            "rss_growth": rss_growth,
            "fd_resid_slope_per_min": fd_slope,
            "fd_resid_growth": fd_growth,
            "window_minutes": minutes,
            "engine_cpu_pct": 100 * engine_cpu,
            "orchestrator_max_loop_lag_s": self.loop_lag,
            "samples": [asdict(s) for s in self.samples],
            "kill_log": [asdict(k) for k in self.kills],
            "client_stats": self.stat_log,
            "connect_failures": self.reports.get("CONNECT_FAILED", [])[:50],
            "checks": checks,
            "pass": all(ok is not False for ok in checks.values()),
        }


def slope(points: list[tuple[float, float]]) -> float:
    """Least-squares slope of y over x (0 for fewer than two points)."""
    if len(points) < 2:
        return 0.0
    mx = sum(p[0] for p in points) / len(points)
    my = sum(p[1] for p in points) / len(points)
    den = sum((p[0] - mx) ** 2 for p in points)
    return sum((p[0] - mx) * (p[1] - my) for p in points) / den if den else 0.0


def summary(r: dict[str, Any]) -> str:
    """The human-readable report."""
    c = r["clients"]
    lat = r["close_latency_s"]
    w, e = r["at_warmup"], r["at_end"]
    gib = c.get("confirmed", 0) / 2**30
    fmt = "{:.3f}".format
    per_server = ", ".join(f"{k} {v}" for k, v in r["kills_per_server"].items())
    lines = [
        f"soak: {r['minutes']:g} min, load average {r['load_avg_before'][0]:.2f} before, "
        f"{r['load_avg_after'][0]:.2f} after (1-min)",
        f"  backends killed          {r['kills']} times ({per_server})",
        f"  connections opened       {c.get('opened', 0):,} ({c.get('completed', 0):,} finished their budget and "
        f"matched SHA-256, {c.get('verified_at_end', 0):,} still open at the end and matched)",
        f"  bytes verified           {gib:.2f} GiB each way (every byte sent came back, in order, byte-compared; "
        f"engine relayed {r['engine_totals'].get('bytes_in', 0) / 2**30:.2f} GiB in, "
        f"{r['engine_totals'].get('bytes_out', 0) / 2**30:.2f} GiB out)",
        f"  mismatches               {len(r['mismatches'])}",
        f"  closes, backend killed   {r['closes_backend_died']:,} (kill to client close: p50 "
        f"{fmt(lat['p50'] or 0)} s, p99 {fmt(lat['p99'] or 0)} s, max {fmt(lat['max'] or 0)} s; seen as "
        + ", ".join(f"{k} {v:,}" for k, v in sorted(r["closes_backend_died_how"].items()))
        + ")",
        f"  unexpected closes        {r['unexpected_count']} (+ {r['unattributed_count']} with no engine record)",
        f"  stalled / hung           {len(r['stalls'])} stalled on the client, {r['hung_count']} hung on the engine",
        f"  lost at the end          {c.get('lost_at_end', 0)} connections, {c.get('lost_bytes', 0)} bytes",
        f"  client connect failures  {r['connect_failed']}; engine events: "
        + ", ".join(f"{k} {v:,}" for k, v in sorted(r["events"].items()))
        + (f"; {r['missed_events']} missed" if r["missed_events"] else "")
        + (f"; event stream broke {len(r['event_stream_errors'])} times" if r["event_stream_errors"] else ""),
        f"  engine RSS               {w['rss_kib'] / 1024:.1f} MiB at {w['t']:.0f} s, {e['rss_kib'] / 1024:.1f} MiB at "
        f"{e['t']:.0f} s ({100 * r['rss_growth']:+.1f} %, slope {r['rss_slope_mib_per_min']:+.3f} MiB/min)",
        f"  engine descriptors       {w['fds']} at {w['t']:.0f} s ({w['active']} open connections), {e['fds']} at "
        f"{e['t']:.0f} s ({e['active']} open); fds - 2 x open: {w['fds'] - 2 * w['active']} -> "
        f"{e['fds'] - 2 * e['active']} (slope {r['fd_resid_slope_per_min']:+.2f}/min)",
        f"  engine CPU               {r['engine_cpu_pct']:.0f} % of its core on average; it waited for its core "
        f"{r['engine_wait_pct']:.1f} % of the time (other tenants)",
        f"  orchestrator             longest event-loop stall {r['orchestrator_max_loop_lag_s']:.2f} s",
    ]
    for name, ok in r["checks"].items():
        mark = "skip" if ok is None else "ok" if ok else "FAIL"
        lines.append(f"  [{mark}] {name}" + (" (run shorter than twice the warm-up)" if ok is None else ""))
    for what in ("unexpected", "unattributed", "mismatches", "stalls", "hung", "end_lost"):
        for rec in r[what][:5]:
            lines.append(f"  {what}: {json.dumps(rec)}")
    lines.append("PASS" if r["pass"] else "FAIL")
    return "\n".join(lines)


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def orchestrate(a: argparse.Namespace) -> int:
    if shutil.which("taskset") is None:
        raise SystemExit("soak.py needs taskset (util-linux) to pin the engine")
    if (os.cpu_count() or 1) < 2:
        global LOAD_CPU
        LOAD_CPU = 0
    with contextlib.suppress(OSError):
        os.sched_setaffinity(0, {LOAD_CPU})  # keep this process off the engine's core
    raise_nofile()
    signal.signal(signal.SIGTERM, _interrupt)
    workdir = Path(tempfile.mkdtemp(prefix="wsproxy-soak-"))
    soak = Soak(a, workdir)
    print(f"soak: work directory {workdir}; load average {os.getloadavg()[0]:.2f}", flush=True)
    try:
        # The stock loop: this process needs no speed, and under uvloop its loop was once seen stuck for minutes
        # (when it still SIGKILLed and reaped the backends itself: now the supervisor does).
        result = asyncio.run(soak.run())
    except KeyboardInterrupt:
        print("interrupted: stopping every process", file=sys.stderr)
        return 130
    finally:
        soak.launcher.stop_all()
    print(summary(result))
    if a.json:
        Path(a.json).write_text(json.dumps(result, indent=1, default=str))
    if result["pass"]:
        shutil.rmtree(workdir, ignore_errors=True)
    else:
        print(f"logs kept in {workdir}")
    return 0 if result["pass"] else 1


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="role")
    p.add_argument("--minutes", type=float, default=10.0, help="length of the chaos run (default 10)")
    p.add_argument("--conns", type=int, default=1000, help="client connections in total (default 1000)")
    p.add_argument("--clients", type=int, default=2, help="client processes (default 2)")
    p.add_argument("--backends", type=int, default=5, help="echo backend processes (default 5)")
    p.add_argument("--rate-mbs", type=float, default=16.0, help="MB/s sent by all clients together (default 16)")
    p.add_argument("--warmup-minutes", type=float, default=2.0, help="RSS/fd flatness is judged after this")
    p.add_argument("--seed", type=int, default=1, help="seed of the payloads and the chaos")
    p.add_argument("--json", help="also write every figure and sample to this file")
    echo = sub.add_parser("echo", help="internal: one echo backend")
    echo.add_argument("--port", type=int, required=True)
    sv = sub.add_parser("backends", help="internal: the echo backends' supervisor")
    sv.add_argument("--backend", action="append", required=True, metavar="NAME=PORT")
    cl = sub.add_parser("client", help="internal: one client process")
    cl.add_argument("--port", type=int, required=True)
    cl.add_argument("--conns", type=int, default=500)
    cl.add_argument("--seed", type=int, default=1)
    cl.add_argument("--rate-mbs", type=float, default=8.0)
    a = p.parse_args(argv)
    if a.role == "echo":
        run_loop(echo_main(a.port))
        return 0
    if a.role == "backends":
        asyncio.run(supervisor_main({n: int(p) for n, _, p in (x.partition("=") for x in a.backend)}))
        return 0
    if a.role == "client":
        run_loop(client_main(a))
        return 0
    return orchestrate(a)


if __name__ == "__main__":
    sys.exit(main())
