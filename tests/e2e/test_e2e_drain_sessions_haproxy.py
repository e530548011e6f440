"""The anchor for issue 13: the same rolling restart (tests/e2e/drain_scenario.py) behind HAProxy 2.6 in TCP
mode (`balance source`, `hash-type consistent`, drained by its runtime API), so wsproxy's figures can be read
side by side with HAProxy's (`-s` prints them). Skipped where haproxy is not installed (.ci/run installs it).
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import socket
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.conftest import unit, wait_until
from tests.e2e.drain_scenario import DEADLINE_S, IPS, N_CLIENTS, UP_TIMEOUT_S, rolling_restart, start_clients
from tests.e2e.fleet import ClientFleet, NodeFleet

HAPROXY = shutil.which("haproxy")
BACKEND = "nodes"
START_S = 10.0  # haproxy parses its config and binds in well under a second
STOP_S = 5.0
# What the issue measured HAProxy with: source hashing on a consistent ring, the seed's check (interval shortened
# as wsproxy's CHECK_FLAGS), timeouts long enough never to cut a WebSocket during the test.
HAPROXY_CFG = """\
global
    stats socket {socket} mode 600 level admin
defaults
    mode tcp
    timeout connect 3s
    timeout client 1h
    timeout server 1h
frontend fe
    bind 127.0.0.1:{port}
    default_backend {backend}
backend {backend}
    balance source
    hash-type consistent
{servers}
"""
SERVER_LINE = "    server {name} {address} check inter 200 rise 2 fall 5 downinter 200"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class HaproxyBalancer:
    """A haproxy process in front of the nodes, driven as an operator would through its runtime API."""

    proc: asyncio.subprocess.Process
    socket: Path
    port: int
    label: str = "haproxy"
    output: list[str] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def command(self, line: str) -> str:
        """One runtime API command; its whole answer (the socket closes after it)."""
        reader, writer = await asyncio.wait_for(asyncio.open_unix_connection(str(self.socket)), unit(5.0))
        try:
            writer.write(line.encode() + b"\n")
            await writer.drain()
            return (await asyncio.wait_for(reader.read(), unit(5.0))).decode()
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()

    async def server_stat(self, name: str) -> dict[str, str]:
        """`show stat` for one server of the backend, as a dict of the CSV's columns."""
        rows = (await self.command("show stat")).splitlines()
        header = rows[0].lstrip("# ").split(",")
        for row in rows[1:]:
            values = dict(zip(header, row.split(","), strict=False))
            if values.get("pxname") == BACKEND and values.get("svname") == name:
                return values
        raise AssertionError(f"haproxy shows no server {BACKEND}/{name}")

    async def drain(self, name: str) -> None:
        """`set server B/S state drain`, then as `--deadline 3 --wait`: until it has no connection or 3 s passed."""
        answer = await self.command(f"set server {BACKEND}/{name} state drain")
        assert answer.strip() == "", f"haproxy: {answer}"
        deadline = time.monotonic() + DEADLINE_S
        while time.monotonic() < deadline and (await self.server_stat(name))["scur"] != "0":
            await asyncio.sleep(0.1)

    async def undrain(self, name: str) -> None:
        answer = await self.command(f"set server {BACKEND}/{name} state ready")
        assert answer.strip() == "", f"haproxy: {answer}"

        async def up() -> bool:
            return (await self.server_stat(name))["status"] == "UP"

        await wait_until(up, timeout=UP_TIMEOUT_S, interval=0.1, what=f"haproxy {BACKEND}/{name} UP")

    async def stop(self) -> None:
        if self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.terminate()
            try:
                await asyncio.wait_for(self.proc.wait(), unit(STOP_S))
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    self.proc.kill()
                await self.proc.wait()


async def start_haproxy(workdir: Path, nodes: NodeFleet) -> HaproxyBalancer:
    """haproxy -db (foreground) with the config above; returns once it accepts connections and commands."""
    assert HAPROXY is not None
    port, stats = free_port(), workdir / "haproxy.sock"
    servers = "\n".join(SERVER_LINE.format(name=n, address=node.address) for n, node in sorted(nodes.nodes.items()))
    config = workdir / "haproxy.cfg"
    config.write_text(HAPROXY_CFG.format(socket=stats, port=port, backend=BACKEND, servers=servers), encoding="utf-8")
    proc = await asyncio.create_subprocess_exec(
        HAPROXY, "-db", "-f", str(config),
        stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    balancer = HaproxyBalancer(proc=proc, socket=stats, port=port)
    try:

        async def serving() -> bool:
            if proc.returncode is not None:
                raise AssertionError(f"haproxy exited {proc.returncode}; config {config}")
            if not stats.exists():
                return False
            return all([(await balancer.server_stat(name))["status"] == "UP" for name in nodes.nodes])

        await wait_until(serving, timeout=START_S, interval=0.1, what="haproxy serving with every node UP")
    except BaseException:
        await balancer.stop()
        raise
    return balancer


@pytest.fixture
async def haproxy_fleet(tmp_path: Path, nodes: NodeFleet) -> AsyncIterator[tuple[HaproxyBalancer, ClientFleet]]:
    """Four nodes behind haproxy, and keep-alive clients for it; all stopped by PID at the end."""
    await nodes.start_all(4)
    balancer = await start_haproxy(tmp_path, nodes)
    clients = ClientFleet(balancer.url, keepalive=True)
    try:
        yield balancer, clients
    finally:
        await clients.close()
        await balancer.stop()


@pytest.mark.skipif(HAPROXY is None, reason="haproxy is not installed (.ci/run installs it)")
@pytest.mark.timeout(180)
async def test_haproxy_rolling_restart(haproxy_fleet: tuple[HaproxyBalancer, ClientFleet], nodes: NodeFleet) -> None:
    """HAProxy's figures for the same rolling restart (the anchor): no wrong node, no error, all on WebSocket."""
    balancer, clients = haproxy_fleet
    await start_clients(clients, IPS)
    figures = await rolling_restart(balancer, nodes, clients)
    print("\n" + "\n".join(["-- issue 13: rolling restart, the anchor", *figures.lines()]))
    assert figures.clients == N_CLIENTS
    assert figures.wrong_node == 0, f"{figures.wrong_node} requests reached a node without their session"
    assert figures.errors == [], figures.errors
    assert figures.not_websocket == [], figures.not_websocket
