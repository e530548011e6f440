"""The `wsproxy` subcommands against a real engine process: output, exit codes and `drain --wait` timing."""

from __future__ import annotations

import asyncio
import json
import secrets
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
from websockets.asyncio.client import ClientConnection, connect

from tests.conftest import EchoBackend, EngineProc, child_env, run_cli, unit, wait_until

Backends = Callable[[int], Awaitable[list[EchoBackend]]]
Start = Callable[..., Awaitable[EngineProc]]


@pytest.fixture
async def pool(start_engine: Start, echo_backends: Backends) -> tuple[EngineProc, list[EchoBackend]]:
    """An engine in front of two echo backends, b1 and b2."""
    backends = await echo_backends(2)
    engine = await start_engine(*(arg for b in backends for arg in ("--backend", b.flag)))
    return engine, backends


async def cli(engine: EngineProc, *args: str, timeout: float = 10.0) -> tuple[int, str, str]:
    result = await run_cli(*args, "--control", engine.control, timeout=timeout)
    return result.code, result.out, result.err


async def open_ws(engine: EngineProc) -> ClientConnection:
    ws = await asyncio.wait_for(connect(f"ws://127.0.0.1:{engine.port}/"), unit(5.0))
    await ws.send("ping")
    assert await asyncio.wait_for(ws.recv(), unit(5.0)) == "ping"
    return ws


async def server_with_connection(engine: EngineProc) -> str:
    """The name of the server holding the (single) open connection."""

    async def find() -> str | None:
        async with engine.client() as client:
            for server in (await client.status())["servers"]:
                if server["active"]:
                    return str(server["name"])
        return None

    name: str = await wait_until(find, what="a server with an open connection")
    return name


async def test_status_table_and_json(pool: tuple[EngineProc, list[EchoBackend]]) -> None:
    """`wsproxy status` prints a header and one row per server; `--json` prints GET /v1/status."""
    engine, backends = pool
    code, out, err = await cli(engine, "status")
    assert code == 0 and err == ""
    lines = out.splitlines()
    assert f"pid {engine.pid}" in lines[0] and engine.listen in lines[0]
    header = next(line for line in lines if line.startswith("NAME"))
    for column in ("ADDRESS", "STATE", "WEIGHT", "SHARE", "ACTIVE", "TOTAL", "FAILS", "LAST CHECK"):
        assert column in header
    rows = {line.split()[0]: line.split() for line in lines[lines.index(header) + 1 :]}
    assert rows["b1"][1] == backends[0].address and rows["b1"][2] == "up" and rows["b1"][4] == "50%"
    code, out, _ = await cli(engine, "status", "--json")
    assert code == 0 and [s["name"] for s in json.loads(out)["servers"]] == ["b1", "b2"]


async def test_status_shows_going_down(pool: tuple[EngineProc, list[EchoBackend]]) -> None:
    """A server failing checks shows its progress ("going down 2/5") in the STATE column."""
    engine, backends = pool
    await backends[1].stop()

    async def going_down() -> str | None:
        _, out, _ = await cli(engine, "status")
        row = next(line for line in out.splitlines() if line.startswith("b2 "))
        return row if "going down" in row or " down" in row else None

    row = await wait_until(going_down, what="b2 failing its checks")
    assert "fail" in row and "connection refused" in row


async def test_mutations_print_the_new_state(
    pool: tuple[EngineProc, list[EchoBackend]], echo_backends: Backends
) -> None:
    """add, weight, drain, undrain, disable, enable and remove each print one line and exit 0."""
    engine, _ = pool
    (b3,) = await echo_backends(1)
    steps = [
        (("add", "b3", b3.address, "--weight", "2", "--max-conns", "10"), "added b3 " + b3.address + ": down"),
        (("weight", "b1", "5"), "weight 5"),
        (("drain", "b1", "--deadline", "60"), "b1 "),
        (("undrain", "b1"), "b1 "),
        (("disable", "b2"), "disabled"),
        (("enable", "b2"), "b2 "),
        (("remove", "b3"), "removed b3"),
    ]
    for args, expected in steps:
        code, out, err = await cli(engine, *args)
        assert code == 0 and err == "" and expected in out, (args, out, err)
        assert len(out.splitlines()) == 1
    async with engine.client() as client:
        status = {s["name"]: s for s in (await client.status())["servers"]}
    assert set(status) == {"b1", "b2"} and status["b1"]["weight"] == 5 and status["b2"]["state"] == "up"


async def test_engine_errors_are_one_line_exit_1(pool: tuple[EngineProc, list[EchoBackend]]) -> None:
    """A refusal from the engine prints `wsproxy: error: <message>` on stderr and exits 1."""
    engine, _ = pool
    code, out, err = await cli(engine, "drain", "nope")
    assert (code, out) == (1, "") and err == "wsproxy: error: no server named 'nope'\n"
    assert (await cli(engine, "disable", "b1"))[0] == 0
    code, _, err = await cli(engine, "disable", "b2")
    assert code == 1 and err.startswith("wsproxy: error: ") and "force" in err and err.count("\n") == 1
    code, out, _ = await cli(engine, "disable", "b2", "--force")
    assert code == 0 and "disabled" in out
    code, _, err = await cli(engine, "add", "b1", "127.0.0.1:1")
    assert code == 1 and "already exists" in err


USAGE_ERRORS = [
    ("drain", "../etc"),
    ("weight", "b1", "300"),
    ("weight", "b1", "x"),
    ("add", "b9", "nowhere"),
    ("drain", "b1", "--deadline", "-1"),
    ("drain", "b1", "--timeout", "5"),
    ("frobnicate",),
]


async def test_usage_errors_exit_2(pool: tuple[EngineProc, list[EchoBackend]]) -> None:
    """Bad names, numbers and flag combinations exit 2 before the engine is asked."""
    engine, _ = pool
    results = await asyncio.gather(*(cli(engine, *args) for args in USAGE_ERRORS))
    for args, (code, out, err) in zip(USAGE_ERRORS, results, strict=True):
        assert code == 2 and out == "" and err, (args, err)
    async with engine.client() as client:
        assert {s["state"] for s in (await client.status())["servers"]} == {"up"}


async def test_unreachable_engine_exits_3(tmp_path: Path) -> None:
    """No engine on the socket: exit 3, naming the socket that was tried."""
    path = tmp_path / "nothing.sock"
    result = await run_cli("status", "--control", str(path))
    assert result.code == 3 and str(path) in result.err and result.err.startswith("wsproxy: error: ")
    default = await run_cli("status", env={"WSPROXY_CONTROL": str(tmp_path / "env.sock")})
    assert default.code == 3 and "env.sock" in default.err


async def test_drain_wait_returns_when_the_last_connection_closes(pool: tuple[EngineProc, list[EchoBackend]]) -> None:
    """`drain --wait` blocks while a connection is open and exits 0 promptly once it closes."""
    engine, _ = pool
    ws = await open_ws(engine)
    name = await server_with_connection(engine)
    proc = await asyncio.create_subprocess_exec(
        *_cli_command("drain", name, "--wait", "--control", engine.control),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=child_env(),
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        seen: list[str] = []
        while not any("1 connection(s) open" in line for line in seen):
            line = await asyncio.wait_for(proc.stdout.readline(), unit(10.0))
            if not line:
                err = await proc.stderr.read() if proc.stderr else b""
                raise AssertionError(f"drain --wait ended early: {seen} {err.decode()}")
            seen.append(line.decode())
        assert seen[0].startswith(f"{name} ") and "draining" in seen[0]
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(asyncio.shield(proc.wait()), 0.3)  # still waiting: the connection is open
        loop = asyncio.get_running_loop()
        closed_at = loop.time()
        await ws.close()
        out, err = await asyncio.wait_for(proc.communicate(), unit(5.0))
        elapsed = loop.time() - closed_at
        assert proc.returncode == 0, err
        assert out.decode().splitlines()[-1] == f"{name} drained: safe to restart"
        assert elapsed < unit(1.0), f"drain --wait took {elapsed:.2f} s after the close"
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


async def test_drain_wait_timeout_exits_1(pool: tuple[EngineProc, list[EchoBackend]]) -> None:
    """`drain --wait --timeout` gives up with exit 1, saying how many connections remain."""
    engine, _ = pool
    ws = await open_ws(engine)
    try:
        name = await server_with_connection(engine)
        loop = asyncio.get_running_loop()
        started = loop.time()
        code, out, err = await cli(engine, "drain", name, "--wait", "--timeout", "0.5")
        assert code == 1 and err == f"timeout: {name} still has 1 connection(s)\n"
        assert "1 connection(s) open" in out
        assert 0.5 <= loop.time() - started < unit(5.0)
    finally:
        await ws.close()


async def test_drain_wait_on_an_idle_server_is_immediate(pool: tuple[EngineProc, list[EchoBackend]]) -> None:
    """`drain --wait` on a server without connections exits 0 at once."""
    engine, _ = pool
    code, out, _ = await cli(engine, "drain", "b2", "--wait", "--timeout", "5")
    assert code == 0 and out.splitlines()[-1] == "b2 drained: safe to restart"


async def test_events_print_and_follow(pool: tuple[EngineProc, list[EchoBackend]]) -> None:
    """`events` prints the buffer (text or JSON lines, after --since); `--follow` prints new ones live."""
    engine, _ = pool
    assert (await cli(engine, "drain", "b1"))[0] == 0
    code, out, _ = await cli(engine, "events")
    assert code == 0 and any("operator drain b1 ok" in line for line in out.splitlines()), out
    code, out, _ = await cli(engine, "events", "--json")
    events = [json.loads(line) for line in out.splitlines()]
    assert events[0]["seq"] == 1 and events[-1]["type"] == "operator"
    code, out, _ = await cli(engine, "events", "--json", "--since", str(events[-2]["seq"]))
    assert [json.loads(line)["seq"] for line in out.splitlines()] == [events[-1]["seq"]]
    proc = await asyncio.create_subprocess_exec(
        *_cli_command("events", "--follow", "--since", str(events[-1]["seq"]), "--control", engine.control),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=child_env(),
    )  # fmt: skip
    try:
        assert (await cli(engine, "undrain", "b1"))[0] == 0
        assert proc.stdout is not None
        line = ""
        while "undrain" not in line:
            raw = await asyncio.wait_for(proc.stdout.readline(), unit(10.0))
            assert raw, "events --follow ended early"
            line = raw.decode()
        assert f"#{events[-1]['seq'] + 1} " in line or "state" in line or "operator undrain b1 ok" in line
    finally:
        proc.terminate()
        await asyncio.wait_for(proc.wait(), unit(5.0))


async def test_wait_up(pool: tuple[EngineProc, list[EchoBackend]], echo_backends: Backends) -> None:
    """`wait-up` exits 0 once a newly added server passes `rise` checks, and 1 at its timeout for a dead one."""
    engine, _ = pool
    (b3,) = await echo_backends(1)
    assert (await cli(engine, "add", "b3", b3.address))[0] == 0
    code, out, _ = await cli(engine, "wait-up", "b3", "--timeout", "5")
    assert code == 0 and out.splitlines()[-1] == "b3 is up"
    await b3.stop()
    code, out, err = await cli(engine, "add", "b4", "127.0.0.1:9")
    code, out, err = await cli(engine, "wait-up", "b4", "--timeout", "0.5")
    assert code == 1 and err.startswith("timeout: b4 is still down")


async def test_tcp_control_with_token_file(start_engine: Start, echo_backends: Backends, tmp_path: Path) -> None:
    """`--control HOST:PORT --token-file` works on the TCP API; without the token the 401 is one line, exit 1."""
    (b1, b2) = await echo_backends(2)
    token_file = tmp_path / "token"
    token_file.write_text(secrets.token_urlsafe(24))
    engine = await start_engine("--backend", b1.flag, "--backend", b2.flag, "--control-tcp", "127.0.0.1:0",
                                "--token-file", str(token_file))  # fmt: skip
    assert engine.tcp_address is not None
    result = await run_cli("disable", "b1", "--control", engine.tcp_address, "--token-file", str(token_file))
    assert result.code == 0 and "disabled" in result.out
    result = await run_cli("enable", "b1", "--control", engine.tcp_address)
    assert result.code == 1 and "bearer token" in result.err and result.err.count("\n") == 1
    env_token = await run_cli("enable", "b1", "--control", engine.tcp_address,
                              env={"WSPROXY_TOKEN": token_file.read_text()})  # fmt: skip
    assert env_token.code == 0
    missing = await run_cli("status", "--control", engine.tcp_address, "--token-file", str(tmp_path / "none"))
    assert missing.code == 2 and "--token-file" in missing.err


def _cli_command(*args: str) -> list[str]:
    import sys

    return [sys.executable, "-m", "proxy_core", *args]
