"""The HAProxy source against a real HAProxy 2.6: status, every action (checked with `show servers state`),
remove walking drain/wait/delete, the drain deadline spread by client, and a user-level socket read-only."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from websockets.asyncio.client import ClientConnection, connect

from proxy_core.sources import CAP_HANDSHAKES, CAP_MUTATE, SourceError
from proxy_core.sources.haproxy import HaproxySource
from tests.conftest import EchoBackend, run_cli, unit, wait_until
from tests.haproxy_support import HaproxyProc

Backends = Callable[[int], Awaitable[list[EchoBackend]]]
# show servers state: srv_admin_state bits (FMAINT 0x1, FDRAIN 0x8)
FMAINT, FDRAIN = 0x01, 0x08


@pytest.fixture
async def ha(haproxy: Any, echo_backends: Backends) -> tuple[HaproxyProc, list[EchoBackend]]:
    """HAProxy in front of three echo backends s1..s3, all checked up."""
    backends = await echo_backends(3)
    proc = await haproxy(backends)
    return proc, backends


async def all_up(source: HaproxySource, n: int = 3) -> None:
    async def up() -> bool:
        return sum(s["state"] == "up" and not s["progress"] for s in (await source.status())["servers"]) == n

    await wait_until(up, timeout=10.0, what=f"{n} servers up")


async def admin_bits(proc: HaproxyProc, name: str) -> int:
    return int((await proc.server_state(name))["srv_admin_state"])


async def open_clients(proc: HaproxyProc, n: int) -> list[ClientConnection]:
    clients = []
    for _ in range(n):
        ws = await asyncio.wait_for(connect(f"ws://127.0.0.1:{proc.port}/"), unit(5.0))
        await ws.send("ping")
        assert await asyncio.wait_for(ws.recv(), unit(5.0)) == "ping"
        clients.append(ws)
    return clients


async def test_status_follows_a_backend_killed_and_revived(ha: tuple[HaproxyProc, list[EchoBackend]]) -> None:
    """A killed backend goes DOWN (through `going down`) with a state event and reason; revived, it comes back up."""
    proc, backends = ha
    async with HaproxySource(proc.admin, interval=0.05) as source:
        await all_up(source)
        status = await source.status()
        assert status["engine"]["pid"] == proc.pid and status["engine"]["kind"] == "haproxy"
        assert CAP_MUTATE in source.capabilities and CAP_HANDSHAKES not in source.capabilities
        await backends[1].stop()
        seen: set[str] = set()

        async def down() -> bool:
            s2 = next(s for s in (await source.status())["servers"] if s["name"] == "be/s2")
            seen.add(s2["progress"])
            return bool(s2["state"] == "down")

        await wait_until(down, timeout=10.0, interval=0.01, what="s2 down")
        events = (await source.events())["events"]
        change = [e for e in events if e["type"] == "state" and e["server"] == "be/s2"]
        assert change and change[-1]["new"] == "down" and "Layer4" in change[-1]["reason"]
        assert any(p.startswith("going down") for p in seen), seen
        await backends[1].start()
        await all_up(source)
        detail = await source.server("s2")
        assert [t["to"] for t in detail["history"]][-2:] == ["down", "up"]


async def test_every_action_takes_effect(ha: tuple[HaproxyProc, list[EchoBackend]], echo_backends: Backends) -> None:
    """drain, undrain, weight, disable, enable and add change HAProxy's own state (`show servers state`)."""
    proc, _ = ha
    async with HaproxySource(proc.admin, interval=0.05) as source:
        await all_up(source)
        assert (await source.drain("s1"))["state"] == "draining"
        assert await admin_bits(proc, "be/s1") & FDRAIN
        assert (await source.undrain("be/s1"))["state"] == "up"
        assert not await admin_bits(proc, "be/s1") & FDRAIN
        assert (await source.set_weight("s2", 7))["weight"] == 7
        assert (await proc.server_state("be/s2"))["srv_uweight"] == "7"
        assert (await source.disable("s3"))["state"] == "disabled"
        assert await admin_bits(proc, "be/s3") & FMAINT
        assert (await source.enable("s3"))["admin"] == "active"
        assert not await admin_bits(proc, "be/s3") & FMAINT
        with pytest.raises(SourceError) as refused:
            await source.undrain("s1")
        assert refused.value.status == 409 and "not draining" in refused.value.message
        (extra,) = await echo_backends(1)
        added = await source.add("be/s4", extra.address, weight=2)
        assert added["name"] == "be/s4" and added["weight"] == 2
        assert (await proc.server_state("be/s4"))["srv_admin_state"] == "0"
        await all_up(source, 4)
        with pytest.raises(SourceError) as missing:
            await source.drain("nosuch")
        assert missing.value.status == 404


async def test_interlock_refuses_the_last_eligible_server(ha: tuple[HaproxyProc, list[EchoBackend]]) -> None:
    """Draining, disabling, weight 0 or removing the last eligible server of a backend is refused unless forced."""
    proc, _ = ha
    async with HaproxySource(proc.admin, interval=0.05) as source:
        await all_up(source)
        await source.disable("s1")
        await source.disable("s2")
        for call in (source.drain("s3"), source.disable("s3"), source.set_weight("s3", 0), source.remove("s3")):
            with pytest.raises(SourceError) as refused:
                await call
            assert refused.value.status == 409 and "no eligible server in backend be" in refused.value.message
        assert await admin_bits(proc, "be/s3") == 0
        assert (await source.drain("s3", force=True))["state"] == "draining"


async def test_remove_walks_drain_wait_delete(ha: tuple[HaproxyProc, list[EchoBackend]]) -> None:
    """remove drains a server with sessions, waits for them to end, then maint and `del server`, saying each step."""
    proc, _ = ha
    async with HaproxySource(proc.admin, interval=0.05, remove_wait_s=unit(10.0)) as source:
        await all_up(source)
        clients = await open_clients(proc, 3)
        holder = await wait_until(lambda: _holder(source), what="a server with a session")
        removing = asyncio.create_task(source.remove(holder))
        await wait_until(lambda: _bits_set(proc, holder, FDRAIN), what="drain first")
        assert not removing.done()
        for ws in clients:
            await ws.close()
        assert await asyncio.wait_for(removing, unit(10.0)) == {"removed": holder}
        assert await proc.server_state(holder) == {}
        steps = [e["detail"] for e in (await source.events())["events"] if e.get("action") == "remove"]
        assert any("draining first" in s for s in steps) and any("del server" in s for s in steps)


async def _holder(source: HaproxySource) -> str | None:
    for s in (await source.status())["servers"]:
        if s["active"]:
            return str(s["name"])
    return None


async def _bits_set(proc: HaproxyProc, name: str, bits: int) -> bool:
    return bool(await admin_bits(proc, name) & bits)


async def test_deadline_closes_sessions_spread_by_client(ha: tuple[HaproxyProc, list[EchoBackend]]) -> None:
    """At a drain deadline the remaining sessions are closed by id, spread over the window, not in one instant."""
    proc, _ = ha
    spread = 1.0
    async with HaproxySource(proc.admin, interval=0.05, spread_s=spread) as source:
        await all_up(source)
        await source.disable("s2", force=True)
        await source.disable("s3", force=True)
        clients = []
        for i in range(4):  # four clients from four loopback addresses
            url = f"ws://127.0.0.1:{proc.port}/"
            clients.append(await asyncio.wait_for(connect(url, local_addr=(f"127.0.0.{i + 2}", 0)), unit(5.0)))
        await source.enable("s2")
        await source.enable("s3")
        loop = asyncio.get_running_loop()
        start = loop.time()
        await source.drain("s1", deadline_s=0.3)

        async def closed(ws: ClientConnection) -> float:
            await asyncio.wait_for(ws.wait_closed(), unit(10.0))
            return loop.time() - start

        closed_at = await asyncio.gather(*(closed(ws) for ws in clients))
        assert min(closed_at) >= 0.3
        assert max(closed_at) - min(closed_at) >= spread * 0.5, closed_at
        assert (await source.status())["servers"][0]["active"] == 0


async def test_user_level_socket_is_read_only(ha: tuple[HaproxyProc, list[EchoBackend]]) -> None:
    """A socket below admin level: status works, capabilities drop mutations with the reason, actions refused."""
    proc, _ = ha
    async with HaproxySource(proc.user) as source:
        assert len((await source.status())["servers"]) == 3
        assert CAP_MUTATE not in source.capabilities
        assert "level user" in (source.read_only_reason or "")
        with pytest.raises(SourceError) as refused:
            await source.drain("s1")
        assert refused.value.status == 403
    assert await admin_bits(proc, "be/s1") == 0


async def test_unreachable_socket_and_cli_exit_codes(ha: tuple[HaproxyProc, list[EchoBackend]]) -> None:
    """The CLI against HAProxy: status table, drain/undrain/weight output, exit 1 refused, 3 unreachable."""
    proc, _ = ha
    async with HaproxySource(proc.admin, interval=0.05) as source:
        await all_up(source)
    result = await run_cli("status", "--haproxy", proc.admin)
    assert result.code == 0, result.err
    assert "be/s1" in result.out and "be/s3" in result.out
    result = await run_cli("drain", "s1", "--haproxy", proc.admin)
    assert result.code == 0 and result.out.startswith("be/s1 127.0.0.1:") and "draining" in result.out
    result = await run_cli("weight", "be/s2", "5", "--haproxy", proc.admin)
    assert result.code == 0 and "weight 5" in result.out
    result = await run_cli("undrain", "s2", "--haproxy", proc.admin)
    assert result.code == 1 and result.err.startswith("wsproxy: error: be/s2 is not draining")
    result = await run_cli("drain", "s1", "--haproxy", proc.user)
    assert result.code == 1 and "level user" in result.err
    result = await run_cli("status", "--haproxy", proc.admin + ".missing")
    assert result.code == 3 and "runtime API" in result.err
    result = await run_cli("drain", "bad name", "--haproxy", proc.admin)
    assert result.code == 2


async def test_cli_drain_deadline_stays_and_remove(ha: tuple[HaproxyProc, list[EchoBackend]]) -> None:
    """`drain --deadline` against HAProxy keeps the deadline itself (closes the session, exits 0 drained);
    `remove` prints `removed be/s3` and the server is gone from `show servers state`."""
    proc, _ = ha
    async with HaproxySource(proc.admin, interval=0.05) as source:
        await all_up(source)
        await source.disable("s2")
        await source.disable("s3")
        (ws,) = await open_clients(proc, 1)
        await source.enable("s2")
        await source.enable("s3")
        await all_up(source)
    result = await run_cli("drain", "s1", "--deadline", "0.5", "--haproxy", proc.admin, timeout=20.0)
    assert result.code == 0, result.err
    assert "the deadline is kept by this command" in result.out and "be/s1 drained: safe to restart" in result.out
    await asyncio.wait_for(ws.wait_closed(), unit(5.0))
    result = await run_cli("remove", "s3", "--haproxy", proc.admin)
    assert (result.code, result.out.strip()) == (0, "removed be/s3"), result.err
    assert await proc.server_state("be/s3") == {}
