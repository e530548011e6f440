"""The operator's story, "drain a node before restart", with the deploy script examples/rolling-restart.sh
against real processes: four Socket.IO nodes behind wsproxy, browser-like clients sending all along."""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import shlex
import signal
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import ROOT, CliResult, child_env, unit
from tests.e2e.conftest import DRAIN_SPREAD_S, IPS, Pool, assert_acks_accounted, assert_no_wrong_node
from tests.e2e.fleet import Conn, SioClient, max_in_window

SCRIPT = ROOT / "examples" / "rolling-restart.sh"
RESTART = Path(__file__).with_name("restart_node.py")
DEADLINE_S = 1.0  # drain --deadline: connections may stay this long, then they are closed over DRAIN_SPREAD_S


async def run_script(pool: Pool, *args: str, timeout: float = 120.0) -> CliResult:
    """Run examples/rolling-restart.sh against the pool's engine; its whole process group is killed on timeout."""
    proc = await asyncio.create_subprocess_exec(
        "bash", str(SCRIPT), "--control", pool.engine.control, *args,
        stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        env=child_env({"WSPROXY": f"{shlex.quote(sys.executable)} -m proxy_core"}), start_new_session=True,
    )  # fmt: skip
    try:
        out, err = await asyncio.wait_for(proc.communicate(), unit(timeout))
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        await proc.wait()
        raise AssertionError(f"rolling-restart.sh {' '.join(args)} did not finish within {unit(timeout):g} s") from None
    assert proc.returncode is not None
    return CliResult(proc.returncode, out.decode(), err.decode())


def restart_command(pool: Pool) -> str:
    """What `systemctl restart app@{}` is in production: SIGTERM the node by its pid file, start it again."""
    return (
        f"{shlex.quote(sys.executable)} {shlex.quote(str(RESTART))} --dir {shlex.quote(str(pool.nodes.workdir))} {{}}"
    )


async def operator_events(pool: Pool) -> list[dict[str, Any]]:
    async with pool.engine.client() as client:
        page = await client.events(limit=10000)
    assert page["dropped"] == 0
    return [e for e in page["events"] if e["type"] == "operator" and e["ok"]]


async def admin_states(pool: Pool) -> dict[str, str]:
    async with pool.engine.client() as client:
        return {s["name"]: s["admin"] for s in (await client.status())["servers"]}


@pytest.mark.timeout(180)
async def test_rolling_restart(pool: Pool) -> None:
    """rolling-restart.sh restarts all four nodes under load: no error, no wrong node, closes spread out."""
    clients = await pool.clients.start(IPS)
    await pool.clients.wait_greeted()
    await pool.clients.wait_acks(2)
    pids = {name: node.pid for name, node in pool.nodes.nodes.items()}

    began = time.monotonic()
    result = await run_script(
        pool, "--deadline", str(DEADLINE_S), "--up-timeout", "20", restart_command(pool), *pool.names
    )
    assert result.code == 0, f"exit {result.code}\n{result.out}\n{result.err}"
    took = time.monotonic() - began
    assert f"rolling-restart: restarted {' '.join(pool.names)}" in result.out
    for name in pool.names:
        assert pool.nodes.adopt(name).pid != pids[name], f"{name} was not restarted"
        assert f"{name} drained: safe to restart" in result.out
    assert set((await admin_states(pool)).values()) == {"active"}
    await pool.clients.wait_acks(2)  # everyone is served again

    # Each drain, from the engine's audit trail and what the clients saw.
    events = await operator_events(pool)
    drained = {e["server"]: e["ts"] for e in events if e["action"] == "drain"}
    undrained = {e["server"]: e["ts"] for e in events if e["action"] == "undrain"}
    owner: dict[int, SioClient] = {id(conn): client for client in clients for conn in client.conns}
    report = []
    for name in pool.names:
        start, end = drained[name], undrained[name]
        live: list[Conn] = [
            conn
            for conn in pool.clients.conns
            if conn.node == name and conn.connected_at < start and (conn.ended_at is None or conn.ended_at > start)
        ]
        k = len(live)
        closes = [conn.ended_at for conn in live if conn.ended_at is not None]
        assert len(closes) == k, f"{name}: {k - len(closes)} connection(s) outlived the drain"
        # Existing connections kept working until the deadline, then were closed spread over drain_spread.
        if k:
            assert min(closes) >= start + DEADLINE_S - 0.05, f"{name}: a connection closed before the deadline"
        span = max(closes) - min(closes) if k else 0.0
        if k >= 2:
            assert span >= 0.5 * DRAIN_SPREAD_S * (k - 1) / k, f"{name}: {k} closes within {span:.2f} s"
        # Their reconnects (the next connection of the same client) came at a bounded rate.
        reconnects = []
        for conn in live:
            client = owner[id(conn)]
            following = client.conns[client.conns.index(conn) + 1 :]
            assert following, f"{client.ip} never reconnected after {name} was drained"
            assert following[0].node != name
            reconnects.append(following[0].connected_at)
        peak = max_in_window(reconnects, 1.0)
        assert peak <= math.ceil(k / DRAIN_SPREAD_S) + max(2, math.ceil(k / 4)), f"{name}: {peak} reconnects in 1 s"
        # No new connection went to it between the drain and the undrain.
        assert not [c for c in pool.clients.conns if c.node == name and start + 0.2 < c.connected_at < end]
        report.append(f"{name}: {k} clients, closes over {span:.2f} s, peak {peak} reconnects/s")

    assert pool.clients.errors() == []
    assert pool.clients.problems() == []
    assert all(conn.transport == "websocket" for conn in pool.clients.conns)
    await pool.clients.close()
    totals = assert_acks_accounted(pool)
    assert_no_wrong_node(await pool.nodes.counts())
    gaps = pool.clients.gaps()
    print(f"\nrolling restart: {totals}; {'; '.join(report)}")
    print(f"largest reconnect gap {max(gaps):.3f} s over {len(gaps)} reconnects; script ran {took:.1f} s")


async def test_rolling_restart_stops_at_first_failure(pool: Pool) -> None:
    """rolling-restart.sh stops at the first failure with a clear message: an unknown node, a failed restart."""
    pids = {name: node.pid for name, node in pool.nodes.nodes.items()}
    command = restart_command(pool)

    result = await run_script(pool, "--deadline", "1", command, "b1", "b9")
    assert result.code == 1, result
    assert "b9 is not known to the engine or not up" in result.err and "nothing was restarted" in result.err
    assert "==>" not in result.out
    assert set((await admin_states(pool)).values()) == {"active"}

    failing = f"test {{}} != b2 && {command}"
    result = await run_script(pool, "--deadline", "1", "--up-timeout", "20", failing, *pool.names)
    assert result.code == 1, result
    assert "rolling-restart: error: b2: restart command failed (exit 1)" in result.err
    assert "b2 is left draining" in result.err and "wsproxy undrain b2" in result.err
    assert "==> b1: done" in result.out and "b3" not in result.out
    assert await admin_states(pool) == {"b1": "active", "b2": "draining", "b3": "active", "b4": "active"}
    assert pool.nodes.adopt("b1").pid != pids["b1"]
    assert {name: pool.nodes.nodes[name].pid for name in ("b2", "b3", "b4")} == {n: pids[n] for n in ("b2", "b3", "b4")}


async def test_rolling_restart_usage() -> None:
    """rolling-restart.sh without a command and names prints its usage and exits 2."""
    proc = await asyncio.create_subprocess_exec(
        "bash", str(SCRIPT), stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE, env=child_env(),
    )  # fmt: skip
    out, err = await asyncio.wait_for(proc.communicate(), unit(10.0))
    assert proc.returncode == 2
    assert b"RESTART_COMMAND NAME..." in err and out == b""
