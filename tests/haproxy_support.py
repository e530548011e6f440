"""A real HAProxy for tests: config in a tmp dir, an admin and a user-level stats socket, stopped by PID."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import signal
import socket
from dataclasses import dataclass
from pathlib import Path

HAPROXY = shutil.which("haproxy") or "/usr/sbin/haproxy"
# Short checks so a killed backend goes DOWN (fall 3) within about half a second.
CHECK = "check inter 100 rise 2 fall 3"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def config(admin: Path, user: Path, port: int, servers: list[tuple[str, str]]) -> str:
    lines = [
        "global",
        f"    stats socket {admin} level admin",
        f"    stats socket {user} level user",
        "defaults",
        "    mode tcp",
        "    timeout connect 1s",
        "    timeout client 60s",
        "    timeout server 60s",
        "frontend fe",
        f"    bind 127.0.0.1:{port}",
        "    default_backend be",
        "backend be",
        "    balance roundrobin",
        *(f"    server {name} {address} {CHECK}" for name, address in servers),
    ]
    return "\n".join(lines) + "\n"


@dataclass
class HaproxyProc:
    """`haproxy -db` in the foreground: its PID, frontend port and sockets."""

    proc: asyncio.subprocess.Process
    admin: str
    user: str
    port: int

    @property
    def pid(self) -> int:
        return self.proc.pid

    async def command(self, line: str, sock: str | None = None) -> str:
        reader, writer = await asyncio.open_unix_connection(sock or self.admin)
        writer.write(line.encode() + b"\n")
        await writer.drain()
        data = await asyncio.wait_for(reader.read(), 5.0)
        writer.close()
        return data.decode()

    async def server_state(self, name: str) -> dict[str, str]:
        """One row of `show servers state` (`be/s1`) as a dict of its named columns."""
        text = await self.command("show servers state")
        lines = text.splitlines()
        header = next(line for line in lines if line.startswith("# "))[2:].split()
        for line in lines:
            row = dict(zip(header, line.split(), strict=False))
            if f"{row.get('be_name')}/{row.get('srv_name')}" == name:
                return row
        return {}

    async def stop(self) -> None:
        if self.proc.returncode is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(self.proc.wait(), 5.0)
            except TimeoutError:
                self.proc.kill()
                await self.proc.wait()


async def start_haproxy(tmp: Path, servers: list[tuple[str, str]]) -> HaproxyProc:
    """Start HAProxy in front of `servers` [(name, HOST:PORT)] and wait until its admin socket answers."""
    admin, user = tmp / "admin.sock", tmp / "user.sock"
    port = free_port()
    cfg = tmp / "haproxy.cfg"
    cfg.write_text(config(admin, user, port, servers))
    proc = await asyncio.create_subprocess_exec(
        HAPROXY, "-db", "-f", str(cfg),
        stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    ha = HaproxyProc(proc, str(admin), str(user), port)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 10.0
    while True:
        with contextlib.suppress(OSError):
            if "Pid:" in await ha.command("show info"):
                return ha
        if proc.returncode is not None or loop.time() > deadline:
            err = b""
            if proc.stderr is not None:
                with contextlib.suppress(Exception):
                    err = await asyncio.wait_for(proc.stderr.read(), 1.0)
            await ha.stop()
            raise AssertionError(f"haproxy did not start: {err.decode(errors='replace')}")
        await asyncio.sleep(0.05)
