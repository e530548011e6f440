"""Starting and stopping benchmark processes: each pinned to one core, each stopped by PID, every limit bounded."""

from __future__ import annotations

import contextlib
import os
import random
import resource
import select
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import IO

from measure import children

NOFILE = 65536  # idle-hold scenario: 9,000 client + 9,000 backend sockets in one process, 18,000 in a proxy.
STOP_GRACE = 3.0  # seconds between SIGTERM and SIGKILL.
BACKENDS_SCRIPT = str(Path(__file__).with_name("backends.py"))
PORT_FLOOR = 20000  # listeners get ports in [PORT_FLOOR, start of the ephemeral range)


def raise_nofile(limit: int = NOFILE) -> int:
    """Raise RLIMIT_NOFILE of this process (children inherit it); returns the soft limit now in force.

    Without the right to raise the hard limit (a container), the soft limit goes up to the hard one.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, limit), max(hard, limit)))
    except (ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def free_port() -> int:
    """A free TCP port on 127.0.0.1 below the ephemeral range, so no outgoing connection can take it meanwhile."""
    low = _ephemeral_low()
    for _ in range(200):
        port = random.randrange(PORT_FLOOR, max(PORT_FLOOR + 1000, low))
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port found")


def _ephemeral_low() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def listener_pids(port: int) -> set[int]:
    """PIDs holding a TCP socket that listens on port (from /proc/net/tcp and /proc/*/fd)."""
    inodes = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        f = line.split()
        if f[3] == "0A" and int(f[1].rsplit(":", 1)[1], 16) == port:
            inodes.add(f"socket:[{f[9]}]")
    pids = set()
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            fds = os.listdir(f"/proc/{pid}/fd")
        except OSError:
            continue
        for fd in fds:
            try:
                if os.readlink(f"/proc/{pid}/fd/{fd}") in inodes:
                    pids.add(int(pid))
                    break
            except OSError:
                continue
    return pids


def wait_port(port: int, proc: subprocess.Popen[bytes] | None, timeout: float = 15.0) -> None:
    """Return once proc (or a descendant) listens on 127.0.0.1:port; raise if it exits first or time runs out.

    The listener's owner is checked because other tenants of this machine may grab a port we just saw free.
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"exited with code {proc.returncode} before listening")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                pass
        except OSError:
            time.sleep(0.05)
            continue
        if proc is None:
            return
        owners = listener_pids(port)
        if owners & {proc.pid, *children(proc.pid)}:
            return
        raise RuntimeError(f"port {port} is held by another process ({sorted(owners)})")
    raise RuntimeError(f"not listening on port {port} after {timeout:.0f}s")


def wait_unix(path: str, timeout: float = 15.0) -> None:
    """Return once a unix socket file exists at path."""
    deadline = time.monotonic() + timeout
    while not os.path.exists(path):
        if time.monotonic() > deadline:
            raise RuntimeError(f"control socket {path} did not appear in {timeout:.0f}s")
        time.sleep(0.05)


class LineReader:
    """Reads lines from a child's stdout pipe with a timeout (select on the raw fd, our own buffer)."""

    def __init__(self, stream: IO[bytes]) -> None:
        self.fd = stream.fileno()
        self.buf = b""

    def readline(self, timeout: float) -> str:
        deadline = time.monotonic() + timeout
        while b"\n" not in self.buf:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("no line from child in time")
            ready, _, _ = select.select([self.fd], [], [], left)
            if ready:
                chunk = os.read(self.fd, 65536)
                if not chunk:
                    raise EOFError("child closed its stdout")
                self.buf += chunk
        line, _, self.buf = self.buf.partition(b"\n")
        return line.decode(errors="replace").rstrip("\r")

    def expect(self, prefix: str | tuple[str, ...], timeout: float) -> str:
        """Skip lines until one starts with prefix (or one of the prefixes); return it."""
        deadline = time.monotonic() + timeout
        while True:
            line = self.readline(max(0.0, deadline - time.monotonic()))
            if line.startswith(prefix):
                return line


class Launcher:
    """Owns every child process: starts each pinned with `taskset -c CPU`, stops each by PID."""

    def __init__(self, logdir: Path) -> None:
        self.logdir = logdir
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(
        self,
        argv: list[str],
        cpu: int,
        name: str,
        pipe_stdio: bool = False,
        env: dict[str, str] | None = None,
        cwd: str | None = None,
    ) -> subprocess.Popen[bytes]:
        """Start argv on core `cpu`; output goes to logdir/name.log unless pipe_stdio (then stdin, stdout are pipes)."""
        log = open(self.logdir / f"{name}.log", "ab")  # noqa: SIM115 - the child keeps it
        try:
            proc = subprocess.Popen(
                ["taskset", "-c", str(cpu), *argv],
                stdin=subprocess.PIPE if pipe_stdio else subprocess.DEVNULL,
                stdout=subprocess.PIPE if pipe_stdio else log,
                stderr=log,
                env=env,
                cwd=cwd,
            )
        finally:
            log.close()
        self.procs.append(proc)
        return proc

    def stop(self, proc: subprocess.Popen[bytes]) -> None:
        """SIGTERM the process (and, after the grace period, SIGKILL it and any descendant left), by PID."""
        if proc in self.procs:
            self.procs.remove(proc)
        kids = children(proc.pid)
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(STOP_GRACE)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(STOP_GRACE)
        for k in kids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(k, signal.SIGKILL)
        for stream in (proc.stdin, proc.stdout):
            if stream is not None:
                stream.close()

    def stop_all(self) -> None:
        """Stop every process still owned, newest first."""
        for proc in reversed(list(self.procs)):
            try:
                self.stop(proc)
            except Exception as exc:  # keep stopping the others
                print(f"warning: could not stop pid {proc.pid}: {exc}")

    def log_tail(self, name: str, lines: int = 5) -> str:
        try:
            text = (self.logdir / f"{name}.log").read_text(errors="replace")
        except OSError:
            return ""
        return " | ".join(text.strip().splitlines()[-lines:])


def start_backends(launcher: Launcher, cpu: int, count: int = 2) -> tuple[list[int], subprocess.Popen[bytes]]:
    """The echo/HTTP backend process (backends.py) on `count` free ports, waited for: (ports, process)."""
    ports = [free_port() for _ in range(count)]
    argv = [sys.executable, BACKENDS_SCRIPT, *(a for port in ports for a in ("--port", str(port)))]
    backend = launcher.start(argv, cpu, "backends")
    for port in ports:
        wait_port(port, backend)
    return ports, backend
