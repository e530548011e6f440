"""Start the engine (and demo helpers) as child processes, wait for the control socket, stop by PID."""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from proxy_core.client import ControlClient, ControlError, ControlUnavailable
from proxy_core.socketpath import LAUNCH_DIR_PREFIX, SOCKET_NAME, launch_path

ROOT = Path(__file__).resolve().parent.parent
# Waiting for `GET /v1/status`: an engine that has not answered by then is stuck or failing.
READY_TIMEOUT_S = 15.0
READY_POLL_S = 0.1
# SIGTERM drains (the engine's --shutdown-grace, 10 s by default); allow that plus a margin.
STOP_TIMEOUT_S = 15.0
LOG_TAIL_CHARS = 2000


class LaunchError(Exception):
    """A child failed to start; the message carries its output."""


@dataclass
class Child:
    """One process we started, with where its output goes."""

    name: str
    proc: subprocess.Popen[bytes]
    log: Path

    @property
    def pid(self) -> int:
        """The child's process id."""
        return self.proc.pid

    def tail(self) -> str:
        """The end of the child's output, for error messages."""
        try:
            text = self.log.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return ""
        return text[-LOG_TAIL_CHARS:].strip()


class Launcher:
    """Owns every process the dashboard starts; stops each by its PID."""

    def __init__(self, workdir: Path | None = None) -> None:
        self.workdir = workdir or Path(tempfile.mkdtemp(prefix=LAUNCH_DIR_PREFIX))
        self.workdir.chmod(0o700)
        self.children: list[Child] = []
        self.engine: Child | None = None
        self.control_path = str(self.workdir / SOCKET_NAME)
        self.taken: str | None = None  # why the default path was not used, when it was not

    async def use_default_path(self) -> bool:
        """Put the engine on the CLI's default socket, unless a live engine (or anything) holds it."""
        self.control_path, self.taken = await launch_path(self.control_path)
        return self.taken is None

    def spawn(self, name: str, argv: list[str]) -> Child:
        """Start a child in its own session (a terminal ctrl+c must not reach it), output to a file."""
        log = self.workdir / f"{name}.log"
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p)
        with log.open("wb") as out:
            proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,
            )
        child = Child(name, proc, log)
        self.children.append(child)
        return child

    async def wait_line(self, child: Child, pattern: str, timeout: float) -> re.Match[str]:
        """Wait for a line matching `pattern` in the child's output (e.g. the port it bound)."""
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout
        while True:
            match = regex.search(child.log.read_text(encoding="utf-8", errors="replace"))
            if match:
                return match
            code = child.proc.poll()
            if code is not None:
                raise LaunchError(f"{child.name} exited with status {code}:\n{child.tail()}")
            if time.monotonic() > deadline:
                raise LaunchError(f"{child.name} did not start within {timeout:.0f}s:\n{child.tail()}")
            await asyncio.sleep(READY_POLL_S)

    def start_engine(self, engine_args: list[str], control: str | None = None) -> Child:
        """`python -m proxy_core serve ... --control SOCKET`."""
        if control:
            self.control_path = control
        argv = [sys.executable, "-m", "proxy_core", "serve", *engine_args]
        argv += ["--control", self.control_path]
        self.engine = self.spawn("engine", argv)
        return self.engine

    async def wait_engine(self, timeout: float = READY_TIMEOUT_S) -> dict[str, object]:
        """Poll `GET /v1/status` until it answers; raise LaunchError with the engine's output if not."""
        assert self.engine is not None
        deadline = time.monotonic() + timeout
        async with ControlClient(uds=self.control_path, timeout=1.0) as client:
            while True:
                code = self.engine.proc.poll()
                if code is not None:
                    raise LaunchError(f"engine exited with status {code}:\n{self.engine.tail()}")
                try:
                    return await client.status()
                except (ControlUnavailable, ControlError):
                    pass
                if time.monotonic() > deadline:
                    raise LaunchError(
                        f"engine did not answer on {self.control_path} within {timeout:.0f}s:\n{self.engine.tail()}"
                    )
                await asyncio.sleep(READY_POLL_S)

    def stop(self, child: Child, timeout: float = STOP_TIMEOUT_S) -> int | None:
        """SIGTERM by PID, wait, then SIGKILL; returns the exit status."""
        if child.proc.poll() is None:
            try:
                os.kill(child.pid, signal.SIGTERM)
                return child.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.kill(child.pid, signal.SIGKILL)
                return child.proc.wait(timeout)
            except ProcessLookupError:
                pass
        return child.proc.poll()

    def stop_all(self) -> None:
        """Newest first: the demo load, then the engine (it drains), then the backends behind it."""
        for child in reversed(self.children):
            self.stop(child)

    def cleanup(self) -> None:
        """Remove the work directory (socket and logs) once every child has stopped."""
        if not self.running():
            shutil.rmtree(self.workdir, ignore_errors=True)

    def running(self) -> list[Child]:
        """Children still alive."""
        return [c for c in self.children if c.proc.poll() is None]
