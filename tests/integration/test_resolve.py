"""Start-up resolution of server hosts through a real `wsproxy serve`, and server names in the status JSON.

No DNS: $WSPROXY_HOSTS_FILE (proxy_core/resolver.py) is the only resolver in these engines, a hosts file the
test writes, so a name appears when the test lists it. Every address is on 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import httpx
from websockets.asyncio.client import connect

from tests.conftest import EngineFactory, unit, wait_until

CHECK = ["--check", "tcp", "--check-interval", "100", "--rise", "1", "--fall", "1"]


async def status(control: str, path: str = "/v1/status") -> httpx.Response:
    async with httpx.AsyncClient(
        transport=httpx.AsyncHTTPTransport(uds=control), base_url="http://wsproxy", timeout=unit(5.0)
    ) as client:
        return await client.get(path)


async def test_unresolvable_host_refuses_to_start_naming_it(
    start_engine: EngineFactory, echo_backends: Any, tmp_path: Path
) -> None:
    """`--backend b2=nohost.invalid:80` (strict, the default) exits 2 naming b2 and its host; nothing listens."""
    (b1,) = await echo_backends(1)
    hosts = tmp_path / "hosts"
    hosts.write_text("")
    engine = await start_engine(
        "--backend", b1.flag, "--backend", "b2=nohost.invalid:80", env={"WSPROXY_HOSTS_FILE": str(hosts)}, wait=False
    )
    assert await engine.wait_exit(unit(10)) == 2
    await engine.stop()
    err = "\n".join(engine.stderr_lines)
    assert "b2=nohost.invalid:80" in err and "cannot resolve nohost.invalid" in err, err
    assert "lazy" in err  # says how to start anyway
    assert not any("listening on" in line for line in engine.stdout_lines)


async def test_lazy_resolution_starts_down_then_comes_up_when_the_name_resolves(
    start_engine: EngineFactory, echo_backends: Any, tmp_path: Path
) -> None:
    """With --resolve lazy the engine serves from b1, b2 is down "cannot resolve"; once listed, b2 comes up."""
    b1, b2 = await echo_backends(2)
    hosts = tmp_path / "hosts"
    hosts.write_text("127.0.0.1 b1.test\n")
    engine = await start_engine(
        "--backend", "b1=b1.test:" + str(b1.port), "--backend", f"b2=later.test:{b2.port}",
        "--resolve", "lazy", *CHECK, env={"WSPROXY_HOSTS_FILE": str(hosts)},
    )  # fmt: skip
    assert any("b2: cannot resolve later.test; starting it down" in line for line in engine.stderr_lines)

    def server(data: dict[str, object], name: str) -> dict[str, object]:
        return next(s for s in data["servers"] if s["name"] == name)  # type: ignore[attr-defined, index]

    data = (await status(engine.control)).json()
    b2_state = server(data, "b2")
    assert b2_state["state"] == "down"
    assert b2_state["health"]["last_failure"] == "cannot resolve later.test"  # type: ignore[index]
    # The engine serves meanwhile, through the name it could resolve.
    async with connect(f"ws://127.0.0.1:{engine.port}/ws", open_timeout=unit(5)) as ws:
        await ws.send("hi")
        assert await asyncio.wait_for(ws.recv(), unit(5)) == "hi"

    hosts.write_text("127.0.0.1 b1.test\n127.0.0.1 later.test\n")

    async def b2_up() -> bool:
        return server((await status(engine.control)).json(), "b2")["state"] == "up"

    await wait_until(b2_up, timeout=10, what="b2 up once later.test resolves")
    resolved = server((await status(engine.control)).json(), "b2")
    assert resolved["resolved"] == "127.0.0.1" and resolved["address"] == f"later.test:{b2.port}"
    before = b2.accepted
    for _ in range(4):  # round robin: b2 takes some of these
        async with connect(f"ws://127.0.0.1:{engine.port}/ws", open_timeout=unit(5)) as ws:
            await ws.send("x")
            assert await asyncio.wait_for(ws.recv(), unit(5)) == "x"
    assert b2.accepted > before


async def test_status_json_adds_server_name_and_keeps_the_nginx_fields(
    start_engine: EngineFactory, echo_backends: Any
) -> None:
    """`/status?format=json` keeps the check module's fields (`name` the address) and adds `server_name`."""
    b1, b2 = await echo_backends(2)
    engine = await start_engine("--backend", b1.flag, "--backend", b2.flag)
    text = (await status(engine.control, "/status?format=json")).text
    rows = json.loads(text)["servers"]["server"]
    nginx = ["index", "upstream", "name", "status", "rise", "fall", "type", "port"]
    assert [list(row) for row in rows] == [[*nginx, "server_name"]] * 2
    assert [(row["name"], row["server_name"]) for row in rows] == [(b1.address, "b1"), (b2.address, "b2")]
    csv = (await status(engine.control, "/status?format=csv")).text
    assert "b1" not in csv.replace(b1.address, "") and b1.address in csv  # CSV stays the module's layout
