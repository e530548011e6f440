"""Pools and routes added and removed at run time on a live engine: the API, the CLI, refusals, the state file."""

from __future__ import annotations

import asyncio
import json
import signal
from pathlib import Path
from typing import Any

import pytest

from proxy_core.client import ControlClient, ControlError
from proxy_core.sources import CAP_POOLS
from proxy_core.sources.haproxy import HaproxySource
from tests.conftest import EchoBackend, EngineFactory, EngineProc, unit, wait_until
from tests.integration.test_pools import Backends, handshakes, pool_table, ws_echo

FAST_CHECK = {"type": "tcp", "interval_ms": 100, "rise": 1}  # a new pool's servers come up within a check


async def refused(call: Any) -> ControlError:
    with pytest.raises(ControlError) as caught:
        await call
    return caught.value


async def up(client: ControlClient, name: str) -> None:
    async def check() -> bool:
        return bool((await client.server(name))["state"] == "up")

    await wait_until(check, timeout=5, what=f"{name} up")


async def sigkill_and_restart(
    engine: EngineProc, start_engine: EngineFactory, *args: str, listen: str | None = "127.0.0.1:0"
) -> EngineProc:
    """kill -9 (nothing is written at exit), then a new engine on the same control socket and state file."""
    engine.proc.send_signal(signal.SIGKILL)
    await engine.wait_exit()
    return await start_engine(*args, control=engine.control, listen=listen)


def three_pool_file(tmp_path: Path, backends: list[EchoBackend]) -> Path:
    """main (b1, the first pool), web (b2) and api (b3); the listener defaults to api; a route sends /web to web."""
    text = '[[listener]]\naddress = "127.0.0.1:0"\ndefault_pool = "api"\n'
    text += "".join(pool_table(name, [b]) for name, b in zip(("main", "web", "api"), backends, strict=True))
    text += '[[route]]\npath_prefix = "/web"\npool = "web"\n'
    path = tmp_path / "three.toml"
    path.write_text(text)
    return path


async def test_a_pool_and_a_route_added_through_the_api_take_traffic_by_host(
    start_engine: EngineFactory, echo_backends: Backends
) -> None:
    """On a single-pool engine: add pool chat, a server in it and a Host route; chat's Host goes there, the rest
    still to the first pool; each change is an operator event and shows in the status."""
    b1, b2 = await echo_backends(2)
    engine = await start_engine("--backend", b1.flag)
    async with engine.client() as client:
        pool = await client.add_pool("chat", "least_conn", FAST_CHECK)
        assert (pool["name"], pool["balance"], pool["servers"], pool["added"]) == ("chat", "least_conn", 0, True)
        assert pool["check"]["interval_ms"] == 100 and pool["check"]["expect_status"] == ["2xx", "3xx"]
        await client.add("b2", b2.address, pool="chat")
        await up(client, "b2")
        route = await client.add_route("chat", host="chat.example.com", listener=engine.listen, name="chat")
        assert (route["position"], route["name"], route["pool"], route["added"]) == (1, "chat", "chat", True)
        await ws_echo(engine.port, "chat.example.com")
        await ws_echo(engine.port, "other.example.com")
        assert (b1.accepted, b2.accepted) == (1, 1)
        status = await client.status()
        events = (await client.events())["events"]
    assert [(p["name"], p["servers"], p["total"]) for p in status["pools"]] == [("default", 1, 1), ("chat", 1, 1)]
    assert [(r["position"], r["listener"], r["host"], r["matched"]) for r in status["routes"]] == [
        (1, "127.0.0.1:0", "chat.example.com", 1)  # named by its bound address, kept as configured
    ]
    assert [(s["name"], s["pool"]) for s in status["servers"]] == [("b1", "default"), ("b2", "chat")]
    operator = [(e["action"], e["ok"]) for e in events if e["type"] == "operator" and e["action"] != "state-load"]
    assert operator == [("add-pool", True), ("add", True), ("add-route", True)]
    assert [(e["pool"], e["route"]) for e in await handshakes(engine)] == [("chat", 0), ("default", None)]


async def test_the_cli_adds_lists_and_removes_pools_and_routes(
    start_engine: EngineFactory, echo_backends: Backends, wsproxy_cli: Any
) -> None:
    """`pool add`, `add --pool`, `route add --position`, `pools`, `routes`, then `route remove`, `remove`, `pool
    remove`; a path route sends /chat to the new pool."""
    b1, b2 = await echo_backends(2)
    engine = await start_engine("--backend", b1.flag)
    ctl = ("--control", engine.control)
    steps = [
        ("pool", "add", "chat", "--balance", "ip_hash", "--check", "tcp", "--check-interval", "100", "--rise", "1"),
        ("add", "n1", b2.address, "--pool", "chat"),
        ("route", "add", "--pool", "chat", "--path-prefix", "/chat", "--name", "chatpath"),
        ("route", "add", "--pool", "default", "--host", "old.example.com", "--position", "1"),
    ]
    said = []
    for step in steps:
        result = await wsproxy_cli(*step, *ctl)
        assert result.code == 0, (step, result.err)
        said.append(result.out.strip())
    assert said[0] == "added pool chat (ip_hash), check tcp every 100ms, rise 1 fall 5"
    assert said[1].startswith("added n1 127.0.0.1:") and "down" in said[1]  # up after its first check
    assert said[2:] == ["added 1 (chatpath): path_prefix /chat -> chat", "added 1: host old.example.com -> default"]
    async with engine.client() as client:
        await up(client, "n1")
    await ws_echo(engine.port, "x.example.com", "/chat/room")
    assert b2.accepted == 1
    pools = await wsproxy_cli("pools", *ctl)
    lines = pools.out.splitlines()
    assert lines[0].split() == ["POOL", "BALANCE", "UP", "ACTIVE", "TOTAL", "CHECK", "DEFAULT", "FOR"]
    assert lines[1].split()[:5] == ["default", "round_robin", "1/1", "0", "0"]
    assert lines[2].split()[:6] == ["chat", "(added)", "ip_hash", "1/1", "0", "1"] and "tcp every 100ms" in lines[2]
    listed = json.loads((await wsproxy_cli("pools", "--json", *ctl)).out)
    assert [(p["name"], p["added"]) for p in listed["pools"]] == [("default", False), ("chat", True)]
    listed = json.loads((await wsproxy_cli("routes", "--json", *ctl)).out)
    assert [(r["position"], r["name"], r["pool"]) for r in listed["routes"]] == [
        (1, None, "default"),
        (2, "chatpath", "chat"),
    ]
    routes = await wsproxy_cli("routes", *ctl)
    assert routes.out.splitlines() == [
        "1: host old.example.com -> default, 0 matched",
        "2 (chatpath): path_prefix /chat -> chat, 1 matched",
        "unrouted: 0 not found (404), 0 misdirected (421)",
    ]
    for step, said in [
        (("route", "remove", "chatpath"), "removed 2 (chatpath): path_prefix /chat -> chat"),
        (("route", "remove", "1"), "removed 1: host old.example.com -> default"),
        (("remove", "n1"), "removed n1"),  # its pool's last server, no force: no route sends there now
        (("pool", "remove", "chat"), "removed pool chat"),
    ]:
        result = await wsproxy_cli(*step, *ctl)
        assert (result.code, result.out.strip()) == (0, said), result.err
    async with engine.client() as client:
        status = await client.status()
    assert [p["name"] for p in status["pools"]] == ["default"] and status["routes"] == []


async def test_bad_pool_and_route_changes_are_refused_naming_what_is_wrong(
    start_engine: EngineFactory, echo_backends: Backends, wsproxy_cli: Any
) -> None:
    """Duplicate pool 409, bad balance or check 400 naming the key, a route to a missing pool 409 naming it, bad
    route fields 400; the CLI checks its values first (exit 2) and prints the engine's refusals (exit 1)."""
    (b1,) = await echo_backends(1)
    engine = await start_engine("--backend", b1.flag)
    async with engine.client() as client:
        await client.add_pool("chat")
        cases = [
            (client.add_pool("chat"), 409, "a pool named 'chat' already exists"),
            (client.add_pool("default"), 409, "a pool named 'default' already exists"),
            (client.add_pool("x", "fastest"), 400, "pool.balance: invalid value 'fastest'"),
            (client.add_pool("x", check={"rise": 0}), 400, "check.rise: invalid value 0"),
            (client.add_pool("x", check={"tpye": "tcp"}), 400, "check.tpye: invalid value 'tcp'; unknown key"),
            (client.add_pool("bad/name"), 400, "invalid pool name"),
            (client.add_route("nowhere", host="a.example.com"), 409, "no pool named 'nowhere' (pools: default, chat)"),
            (client.add_route("chat", host="a b"), 400, "route.host: invalid value 'a b'"),
            (client.add_route("chat", path_prefix="chat"), 400, "route.path_prefix: invalid value 'chat'"),
            (client.add_route("chat", name="7"), 400, "route.name: invalid value '7'; a name that is not a number"),
            (client.add_route("chat", listener="127.0.0.1:1"), 400, "no listener '127.0.0.1:1'"),
            (client.add_route("chat", position=2), 400, "field 'position': use 1..1"),
            (client.remove_route("1"), 404, "no route at position 1"),
            (client.remove_route("ghost"), 404, "no route named 'ghost'"),
            (client.remove_pool("ghost"), 404, "no pool named 'ghost'"),
            (client.remove_pool("default"), 409, "is the first pool"),
            (client.add("n1", b1.address), 400, "several pools (default, chat)"),
        ]
        for call, code, fragment in cases:
            error = await refused(call)
            assert error.status == code and fragment in error.message, (fragment, error)
        await client.add_route("chat", host="a.example.com", name="a")
        error = await refused(client.add_route("chat", host="b.example.com", name="a"))
        assert error.status == 409 and "a route named 'a' already exists" in error.message
        error = await refused(client.add("b1", b1.address, pool="chat"))
        assert error.status == 409 and "in pool 'default'" in error.message  # one configured pool: names stay bare
        status = await client.status()
        events = (await client.events())["events"]
    assert [p["name"] for p in status["pools"]] == ["default", "chat"] and len(status["routes"]) == 1
    failed = [e for e in events if e["type"] == "operator" and not e["ok"] and e["action"] == "add-pool"]
    assert len(failed) == 5  # a malformed name is refused by the API layer, before the engine
    ctl = ("--control", engine.control)
    for args, code, fragment in [
        (("pool", "add", "x", "--balance", "fastest"), 2, "invalid choice: 'fastest'"),
        (("pool", "add", "x", "--check", "http:nopath"), 2, "check.path: invalid value 'nopath'"),
        (("route", "add", "--pool", "chat", "--host", "*"), 2, "route.host: invalid value '*'"),
        (("route", "add", "--pool", "chat", "--position", "0"), 2, "invalid position '0'"),
        (("pool", "add", "chat"), 1, "a pool named 'chat' already exists"),
        (("route", "add", "--pool", "nowhere"), 1, "no pool named 'nowhere'"),
        (("route", "remove", "9"), 1, "no route at position 9"),
    ]:
        result = await wsproxy_cli(*args, *ctl)
        assert result.code == code and fragment in result.err, (args, result)


async def test_a_pool_is_removed_only_after_its_routes_and_servers(
    tmp_path: Path, start_engine: EngineFactory, echo_backends: Backends
) -> None:
    """Removing a pool a route points at, or that still has servers, or that a listener defaults to is a 409
    naming them; route first, then servers (the last one forced), then the pool works and loses nothing."""
    backends = await echo_backends(3)
    engine = await start_engine("-c", str(three_pool_file(tmp_path, backends[:3])), listen=None)
    async with engine.client() as client:
        error = await refused(client.remove_pool("web"))
        assert error.status == 409
        assert error.message == (
            "pool 'web' cannot be removed: route 1 point(s) at it (remove those routes first); "
            "it still has server(s) web/b2 (remove them first)"
        )
        error = await refused(client.remove_pool("api"))
        assert error.status == 409 and "default_pool of listener(s) " + engine.listen in error.message
        error = await refused(client.remove("web/b2"))  # a route still sends to web: its interlock holds
        assert error.status == 409 and "no eligible server in the pool web" in error.message
        removed = await client.remove_route("1")
        assert (removed["removed"]["path_prefix"], removed["removed"]["added"]) == ("/web", False)
        error = await refused(client.remove_pool("web"))
        assert "route" not in error.message and "still has server(s) web/b2" in error.message
        error = await refused(client.remove_pool("main"))
        assert "is the first pool" in error.message
        await client.remove("web/b2")  # the pool's last server: no route or default sends there any more
        assert await client.remove_pool("web") == {"removed": "web"}
        await ws_echo(engine.port, "any.example.com", "/web")  # what /web took now goes to the default, api
        status = await client.status()
    assert [b.accepted for b in backends] == [0, 0, 1]
    assert [p["name"] for p in status["pools"]] == ["main", "api"]
    assert [s["name"] for s in status["servers"]] == ["main/b1", "api/b3"]


async def test_runtime_pools_and_routes_survive_sigkill(
    tmp_path: Path, start_engine: EngineFactory, echo_backends: Backends
) -> None:
    """A pool, its server and a route added, a configured route removed: after kill -9 and a restart the engine
    has them all, in order, and routes by them."""
    backends = await echo_backends(4)
    path = three_pool_file(tmp_path, backends[:3])
    engine = await start_engine("-c", str(path), listen=None)
    async with engine.client() as client:
        await client.add_pool("chat", check=FAST_CHECK)
        await client.add("b4", backends[3].address, pool="chat")
        await client.add_route("chat", host="chat.example.com", name="chat")
        await client.add_route("web", path_prefix="/w", position=1)
        await client.remove_route("2")  # the configured /web route
    engine = await sigkill_and_restart(engine, start_engine, "-c", str(path), listen=None)
    async with engine.client() as client:
        status = await client.status()
        await up(client, "chat/b4")
    assert [(p["name"], p["added"], p["check"]["interval_ms"]) for p in status["pools"]] == [
        ("main", False, 200),  # the fixture's --check-interval reaches the configured pools
        ("web", False, 200),
        ("api", False, 200),
        ("chat", True, 100),
    ]
    assert [(r["position"], r["name"], r["path_prefix"], r["host"], r["pool"]) for r in status["routes"]] == [
        (1, None, "/w", None, "web"),
        (2, "chat", None, "chat.example.com", "chat"),
    ]
    assert sorted(s["name"] for s in status["servers"]) == ["api/b3", "chat/b4", "main/b1", "web/b2"]
    await ws_echo(engine.port, "chat.example.com")
    await ws_echo(engine.port, "x.example.com", "/web")  # the removed route stays removed: the default, api
    await ws_echo(engine.port, "x.example.com", "/w/1")
    assert [b.accepted for b in backends] == [0, 1, 1, 1]


async def test_a_single_pool_engine_keeps_its_added_pool_through_sigkill(
    start_engine: EngineFactory, echo_backends: Backends
) -> None:
    """Flags (one pool) plus a pool added at runtime: after kill -9 the pool, its server (bare name) and route are
    back, and the first pool still takes what no route matches."""
    b1, b2 = await echo_backends(2)
    engine = await start_engine("--backend", b1.flag)
    async with engine.client() as client:
        await client.add_pool("chat", check=FAST_CHECK)
        await client.add("chat/n1", b2.address)  # POOL/NAME says the pool too
        await client.add_route("chat", host="chat.example.com")
    engine = await sigkill_and_restart(engine, start_engine, "--backend", b1.flag)
    async with engine.client() as client:
        await up(client, "n1")
        status = await client.status()
    assert [(s["name"], s["pool"]) for s in status["servers"]] == [("b1", "default"), ("n1", "chat")]
    assert [(r["host"], r["pool"]) for r in status["routes"]] == [("chat.example.com", "chat")]
    await ws_echo(engine.port, "chat.example.com")
    await ws_echo(engine.port, "other.example.com")
    assert (b1.accepted, b2.accepted) == (1, 1)


async def test_haproxy_refuses_pool_and_route_changes_naming_its_runtime_api(tmp_path: Path, wsproxy_cli: Any) -> None:
    """HAProxy's backends are its configuration: the source lacks CAP_POOLS and refuses before touching the socket."""
    sock = str(tmp_path / "admin.sock")  # never opened: the refusal comes first
    source = HaproxySource(sock)
    assert CAP_POOLS not in source.capabilities
    for call in (
        source.add_pool("chat"),
        source.remove_pool("chat"),
        source.add_route("chat"),
        source.remove_route("1"),
    ):
        error = await refused(call)
        assert error.status == 501 and "not supported by HAProxy's runtime API" in error.message
    result = await wsproxy_cli("route", "add", "--pool", "chat", "--haproxy", sock)
    assert result.code == 1 and "adding a route is not supported by HAProxy's runtime API" in result.err


async def test_a_connection_waiting_for_its_head_when_its_route_goes_is_not_stranded(
    start_engine: EngineFactory, echo_backends: Backends
) -> None:
    """Accepted while a Host route made the listener wait for heads; the route removed before the head completes:
    the connection goes to the listener's default pool instead of waiting forever."""
    (b1,) = await echo_backends(1)
    engine = await start_engine("--backend", b1.flag)
    async with engine.client() as client:
        await client.add_pool("chat")
        await client.add_route("chat", host="chat.example.com")
        reader, writer = await asyncio.open_connection("127.0.0.1", engine.port)
        try:
            writer.write(b"GET /health HTTP/1.1\r\nHost: other.example.com\r\n")
            await writer.drain()

            async def accepted() -> bool:
                return bool((await client.status())["totals"]["active"] == 1)

            await wait_until(accepted, what="the connection accepted under the route")
            await client.remove_route("1")
            writer.write(b"Connection: close\r\n\r\n")
            answer = await asyncio.wait_for(reader.read(), unit(5))
        finally:
            writer.close()
    assert answer.startswith(b"HTTP/1.1 200 OK")  # b1 answered /health: the default pool took it


async def test_runtime_pools_and_routes_reach_every_worker(
    start_engine: EngineFactory, echo_backends: Backends
) -> None:
    """With --workers 2, a pool, its server and a route added at runtime route every connection, whichever worker
    accepts it (16 connections: all on one worker has odds 2**-15); removing the route sends them back."""
    b1, b2 = await echo_backends(2)
    engine = await start_engine("--backend", b1.flag, "--workers", "2")
    async with engine.client() as client:
        await client.add_pool("chat", check={"type": "none"})
        await client.add("n1", b2.address, pool="chat")
        await client.add_route("chat", host="chat.example.com")
        for _ in range(16):
            await ws_echo(engine.port, "chat.example.com")
        assert (b1.accepted, b2.accepted) == (0, 16)
        await client.remove_route("1")
        await ws_echo(engine.port, "chat.example.com")
        assert (b1.accepted, b2.accepted) == (1, 16)


async def test_the_file_edited_between_runs_wins_over_the_saved_topology(
    tmp_path: Path, start_engine: EngineFactory, echo_backends: Backends
) -> None:
    """Saved runtime changes meet a file that dropped the web pool and its route: web's saved servers are skipped
    with a warning naming it, the runtime route to web is dropped with one too, the rest is kept."""
    backends = await echo_backends(4)
    path = three_pool_file(tmp_path, backends[:3])
    engine = await start_engine("-c", str(path), listen=None)
    async with engine.client() as client:
        await client.add("web/b4", backends[3].address)
        await client.add_route("web", host="web.example.com", name="w")
        await client.add_route("api", host="api.example.com", name="a")
    await engine.stop()
    text = '[[listener]]\naddress = "127.0.0.1:0"\ndefault_pool = "api"\n'
    path.write_text(text + pool_table("main", [backends[0]]) + pool_table("api", [backends[2]]))
    engine = await start_engine("-c", str(path), control=engine.control, listen=None)
    await engine.wait_line("saved server\\(s\\) web/b2, web/b4 skipped: their pool is no longer defined", stderr=True)
    await engine.wait_line("saved route to pool web dropped", stderr=True)
    async with engine.client() as client:
        status = await client.status()
    assert [p["name"] for p in status["pools"]] == ["main", "api"]
    assert [(r["name"], r["pool"]) for r in status["routes"]] == [("a", "api")]  # the file's /web route is gone too
    assert sorted(s["name"] for s in status["servers"]) == ["api/b3", "main/b1"]
