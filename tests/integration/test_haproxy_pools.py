"""The HAProxy source against a real HAProxy 2.6 with two backends: each BACKEND is a pool, servers carry it."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from pathlib import Path

from proxy_core.sources.haproxy import HaproxySource
from tests.conftest import EchoBackend, unit, wait_until
from tests.haproxy_support import CHECK, HAPROXY, HaproxyProc, free_port

Backends = Callable[[int], Awaitable[list[EchoBackend]]]


def two_backends(admin: Path, user: Path, port: int, chat: list[str], notify: list[str]) -> str:
    """`chat` (leastconn, the frontend's default) and `notify` (roundrobin), each with its own servers."""
    lines = [
        "global", f"    stats socket {admin} level admin", f"    stats socket {user} level user",
        "defaults", "    mode tcp", "    timeout connect 1s", "    timeout client 60s", "    timeout server 60s",
        "frontend fe", f"    bind 127.0.0.1:{port}", "    default_backend chat",
        "backend chat", "    balance leastconn",
        *(f"    server n{i + 1} {a} {CHECK}" for i, a in enumerate(chat)),
        "backend notify", "    balance roundrobin",
        *(f"    server n{i + 1} {a} {CHECK}" for i, a in enumerate(notify)),
    ]  # fmt: skip
    return "\n".join(lines) + "\n"


async def test_two_backends_are_two_pools(tmp_path: Path, echo_backends: Backends) -> None:
    """`pools` lists chat and notify with HAProxy's algorithm and up counts; names are BACKEND/SERVER with pool."""
    backends = await echo_backends(3)
    admin, user, port = tmp_path / "admin.sock", tmp_path / "user.sock", free_port()
    cfg = tmp_path / "haproxy.cfg"
    cfg.write_text(two_backends(admin, user, port, [b.address for b in backends[:2]], [backends[2].address]))
    proc = await asyncio.create_subprocess_exec(
        HAPROXY, "-db", "-f", str(cfg),
        stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    ha = HaproxyProc(proc, str(admin), str(user), port)
    source = HaproxySource(str(admin))
    try:

        async def answering() -> bool:
            with contextlib.suppress(OSError):
                return "Pid:" in await ha.command("show info")
            return False

        await wait_until(answering, timeout=10.0, what="haproxy's admin socket")

        async def all_up() -> bool:
            pools = (await source.status())["pools"]
            return [(p["name"], p["up"], p["servers"]) for p in pools] == [("chat", 2, 2), ("notify", 1, 1)]

        await wait_until(all_up, timeout=10.0, what="both pools up")
        status = await source.status()
        assert [p.get("balance") for p in status["pools"]] == ["leastconn", "roundrobin"]
        assert {(s["name"], s["pool"]) for s in status["servers"]} == {
            ("chat/n1", "chat"), ("chat/n2", "chat"), ("notify/n1", "notify"),
        }  # fmt: skip
        await source.drain("chat/n1")
        await source.add("n2", backends[2].address, 1, pool="notify")
        status = await source.status()
        assert any(s["name"] == "notify/n2" and s["pool"] == "notify" for s in status["servers"])
        chat = next(p for p in status["pools"] if p["name"] == "chat")
        assert chat["up"] == 1
    finally:
        await source.aclose()
        await ha.stop()
        await asyncio.wait_for(proc.wait(), unit(5.0))
