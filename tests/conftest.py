"""Shared fixtures: real engine processes, real websockets echo backends, bounded waits and a CLI runner.

Every wait is bounded by `unit(seconds)`, scaled by $WSPROXY_TEST_TIMEOUT_SCALE on slow machines. Every
process a fixture starts is stopped by PID at teardown (SIGTERM, then SIGKILL), even when the test failed.
"""

from __future__ import annotations

import asyncio
import contextlib
import http
import os
import re
import signal
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from websockets.asyncio.server import Request, Response, Server, ServerConnection, serve

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # the repo is not installed in the venv
    sys.path.insert(0, str(ROOT))

from proxy_core.client import ControlClient  # noqa: E402

TIMEOUT_SCALE = float(os.environ.get("WSPROXY_TEST_TIMEOUT_SCALE", "1"))
START_TIMEOUT_S = 10.0  # engine start-up line; includes interpreter start and imports
STOP_TIMEOUT_S = 5.0  # SIGTERM to exit before SIGKILL
START_LINE = re.compile(r"listening on (?P<listen>[^;]+?); control on (?P<control>.+?); servers")
TCP_LINE = re.compile(r"control API also on (?P<address>\S+)")
STATUS_LINE = re.compile(r"status page on http://(?P<address>[^/\s]+)/status")


def unit(seconds: float) -> float:
    """A timeout, scaled for slow machines."""
    return seconds * TIMEOUT_SCALE


def child_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment for wsproxy subprocesses: the repo importable, no inherited control settings."""
    env = {k: v for k, v in os.environ.items() if k not in ("WSPROXY_CONTROL", "WSPROXY_TOKEN")}
    env["PYTHONPATH"] = str(ROOT) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra or {})
    return env


async def wait_until(
    predicate: Callable[[], Awaitable[Any] | Any], timeout: float = 5.0, interval: float = 0.02, what: str = ""
) -> Any:
    """Poll `predicate` (sync or async) until it returns something truthy; fail after `timeout` (scaled)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + unit(timeout)
    while True:
        result = predicate()
        if asyncio.iscoroutine(result) or isinstance(result, asyncio.Future):
            result = await result
        if result:
            return result
        if loop.time() >= deadline:
            raise AssertionError(f"timed out after {unit(timeout):g} s waiting for {what or predicate}")
        await asyncio.sleep(interval)


# -- engine processes -----------------------------------------------------------------------------


@dataclass
class EngineProc:
    """A `python -m proxy_core serve` child: its PID, bound port, control socket and output so far."""

    proc: asyncio.subprocess.Process
    control: str
    stdout_lines: list[str] = field(default_factory=list)
    stderr_lines: list[str] = field(default_factory=list)
    port: int = 0
    listen: str = ""
    tcp_address: str | None = None
    status_address: str | None = None
    _changed: asyncio.Event = field(default_factory=asyncio.Event)
    _readers: list[asyncio.Task[None]] = field(default_factory=list)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def client(self, **kwargs: Any) -> ControlClient:
        """A ControlClient on the unix socket (pass target=... for the TCP API)."""
        kwargs.setdefault("target", self.control)
        return ControlClient(**kwargs)

    async def _read(self, stream: asyncio.StreamReader, lines: list[str]) -> None:
        while True:
            raw = await stream.readline()
            if not raw:
                self._changed.set()
                return
            lines.append(raw.decode("utf-8", "replace").rstrip("\n"))
            self._changed.set()

    async def wait_line(
        self, pattern: str | re.Pattern[str], timeout: float = 5.0, stderr: bool = False
    ) -> re.Match[str]:
        """The first output line matching `pattern` (already printed or still to come); fails on exit or timeout."""
        regex = re.compile(pattern) if isinstance(pattern, str) else pattern
        lines = self.stderr_lines if stderr else self.stdout_lines
        loop = asyncio.get_running_loop()
        deadline = loop.time() + unit(timeout)
        while True:
            self._changed.clear()
            for line in lines:
                match = regex.search(line)
                if match:
                    return match
            if self.proc.returncode is not None and all(t.done() for t in self._readers):
                raise AssertionError(f"engine exited {self.proc.returncode} before {regex.pattern!r}:\n{self.output()}")
            left = deadline - loop.time()
            if left <= 0:
                raise AssertionError(f"no line matching {regex.pattern!r} within {unit(timeout):g} s:\n{self.output()}")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), left)

    async def wait_exit(self, timeout: float = STOP_TIMEOUT_S) -> int:
        """The exit status, waiting at most `timeout` (scaled)."""
        return await asyncio.wait_for(self.proc.wait(), unit(timeout))

    async def stop(self, timeout: float = STOP_TIMEOUT_S) -> int:
        """SIGTERM, then SIGKILL if it has not exited within `timeout`; returns the exit status."""
        if self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(self.proc.wait(), unit(timeout))
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    self.proc.kill()
                await self.proc.wait()
        for task in self._readers:
            with contextlib.suppress(TimeoutError, asyncio.CancelledError):
                await asyncio.wait_for(task, unit(1.0))
        assert self.proc.returncode is not None
        return self.proc.returncode

    def output(self) -> str:
        return "\n".join(["--- stdout", *self.stdout_lines[-50:], "--- stderr", *self.stderr_lines[-50:]])


EngineFactory = Callable[..., Awaitable[EngineProc]]


async def launch_engine(
    workdir: Path,
    *args: str,
    control: str | Path | None = None,
    env: dict[str, str] | None = None,
    wait: bool = True,
    index: int = 0,
    listen: str | None = "127.0.0.1:0",
) -> EngineProc:
    """Start `python -m proxy_core serve` in `workdir` (control socket `workdir/ctl<index>.sock` unless given).

    Defaults: `--listen 127.0.0.1:0 --check tcp --check-interval 200`; later flags win. The caller stops it.
    `listen=None` leaves the default listener out (for listeners given in the arguments or a file).
    """
    socket_path = str(control or workdir / f"ctl{index or ''}.sock")
    command = [
        sys.executable, "-m", "proxy_core", "serve", *(["--listen", listen] if listen else []),
        "--control", socket_path, "--check", "tcp", "--check-interval", "200", *args,
    ]  # fmt: skip
    proc = await asyncio.create_subprocess_exec(
        *command,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=child_env(env),
        cwd=str(workdir),
    )
    engine = EngineProc(proc=proc, control=socket_path)
    assert proc.stdout is not None and proc.stderr is not None
    engine._readers = [
        asyncio.create_task(engine._read(proc.stdout, engine.stdout_lines)),
        asyncio.create_task(engine._read(proc.stderr, engine.stderr_lines)),
    ]
    if wait:
        try:
            match = await engine.wait_line(START_LINE, START_TIMEOUT_S)
        except BaseException:
            await engine.stop()
            raise
        engine.listen = match["listen"].split(",")[0]
        engine.port = int(engine.listen.rsplit(":", 1)[1])
        for line in engine.stdout_lines:
            if tcp := TCP_LINE.search(line):
                engine.tcp_address = tcp["address"]
            if status := STATUS_LINE.search(line):
                engine.status_address = status["address"]
    return engine


@pytest.fixture
async def start_engine(tmp_path: Path) -> AsyncIterator[EngineFactory]:
    """Factory: `await start_engine("--backend", "b1=127.0.0.1:8001", ...)` -> a started EngineProc.

    Defaults: `--listen 127.0.0.1:0 --control tmp/ctl.sock --check tcp --check-interval 200`; later flags win.
    `control=` picks another socket, `env=` adds variables, `wait=False` returns before the start-up line,
    `listen=` replaces the default listener (None: none, for a listener given in the arguments or a file).
    """
    engines: list[EngineProc] = []

    async def start(
        *args: str,
        control: str | Path | None = None,
        env: dict[str, str] | None = None,
        wait: bool = True,
        listen: str | None = "127.0.0.1:0",
    ) -> EngineProc:
        engine = await launch_engine(
            tmp_path, *args, control=control, env=env, wait=wait, index=len(engines), listen=listen
        )
        engines.append(engine)
        return engine

    try:
        yield start
    finally:
        for engine in engines:
            await engine.stop()
            if engine.stderr_lines:
                print(f"engine pid {engine.pid} stderr:\n" + "\n".join(engine.stderr_lines[-40:]))


# -- echo backends --------------------------------------------------------------------------------


class EchoBackend:
    """A websockets echo server on 127.0.0.1 that also answers `GET /health` with 200; stop and restart it."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.port = 0
        self.server: Server | None = None
        self.connections: set[ServerConnection] = set()
        self.accepted = 0

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def flag(self) -> str:
        """The `--backend` value: NAME=HOST:PORT."""
        return f"{self.name}={self.address}"

    async def _echo(self, connection: ServerConnection) -> None:
        self.accepted += 1
        self.connections.add(connection)
        try:
            async for message in connection:
                await connection.send(message)
        except Exception:  # a peer that vanishes mid-echo is normal here
            pass
        finally:
            self.connections.discard(connection)

    @staticmethod
    def _health(connection: ServerConnection, request: Request) -> Response | None:
        if request.path == "/health":
            return connection.respond(http.HTTPStatus.OK, "OK\n")
        return None

    async def start(self) -> None:
        """Listen (again, on the same port after a stop)."""
        self.server = await serve(self._echo, "127.0.0.1", self.port, process_request=self._health)
        self.port = self.server.sockets[0].getsockname()[1] if not self.port else self.port

    async def stop(self) -> None:
        """Close the listener and every connection (clients see a close)."""
        if self.server is not None:
            self.server.close()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.server.wait_closed(), unit(5.0))
            self.server = None


@pytest.fixture
async def echo_backends() -> AsyncIterator[Callable[[int], Awaitable[list[EchoBackend]]]]:
    """Factory: `await echo_backends(3)` -> running EchoBackends b1..b3, stopped at teardown."""
    started: list[EchoBackend] = []

    async def make(n: int) -> list[EchoBackend]:
        backends = [EchoBackend(f"b{len(started) + i + 1}") for i in range(n)]
        for backend in backends:
            await backend.start()
            started.append(backend)
        return backends

    try:
        yield make
    finally:
        for backend in started:
            await backend.stop()


# -- the CLI --------------------------------------------------------------------------------------


@dataclass
class CliResult:
    """Exit status and output of one `wsproxy` run."""

    code: int
    out: str
    err: str


async def run_cli(*args: str, env: dict[str, str] | None = None, timeout: float = 10.0) -> CliResult:
    """Run `python -m proxy_core ARGS` to completion (killed after `timeout`, scaled)."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "proxy_core", *args,
        stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        env=child_env(env),
    )  # fmt: skip
    try:
        out, err = await asyncio.wait_for(proc.communicate(), unit(timeout))
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise AssertionError(f"wsproxy {' '.join(args)} did not finish within {unit(timeout):g} s") from None
    assert proc.returncode is not None
    return CliResult(proc.returncode, out.decode(), err.decode())


@pytest.fixture
def wsproxy_cli() -> Callable[..., Awaitable[CliResult]]:
    """`await wsproxy_cli("status", "--control", path)` -> CliResult."""
    return run_cli


# -- HAProxy --------------------------------------------------------------------------------------


@pytest.fixture
async def haproxy(tmp_path: Path) -> AsyncIterator[Callable[..., Awaitable[Any]]]:
    """Factory: `await haproxy(backends)` -> a HaproxyProc with s1..sN on those backends, stopped by PID."""
    from tests.haproxy_support import HaproxyProc, start_haproxy

    started: list[HaproxyProc] = []

    async def make(backends: list[EchoBackend]) -> HaproxyProc:
        ha = await start_haproxy(tmp_path, [(f"s{i + 1}", b.address) for i, b in enumerate(backends)])
        started.append(ha)
        return ha

    try:
        yield make
    finally:
        for ha in started:
            await ha.stop()
