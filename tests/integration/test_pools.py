"""`[[pool]]` files through a real engine: one pool runs as today's single pool, bad pool tables exit 2."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from websockets.asyncio.client import connect

from tests.conftest import EchoBackend, EngineFactory, unit

Backends = Callable[[int], Awaitable[list[EchoBackend]]]


async def test_one_pool_table_serves_like_the_single_pool(
    tmp_path: Path, start_engine: EngineFactory, echo_backends: Backends
) -> None:
    """A file with one `[[pool]]` and its `[[pool.server]]`s proxies WebSockets to those servers."""
    backends = await echo_backends(2)
    servers = "".join(f'[[pool.server]]\nname = "{b.name}"\naddress = "{b.address}"\n' for b in backends)
    path = tmp_path / "one.toml"
    path.write_text(f'[[pool]]\nname = "chat"\nbalance = "round_robin"\n{servers}')
    engine = await start_engine("-c", str(path))
    for _ in range(4):
        async with connect(f"ws://127.0.0.1:{engine.port}/ws", open_timeout=unit(5)) as ws:
            await ws.send("hello")
            assert await ws.recv() == "hello"
    assert sorted(b.accepted for b in backends) == [2, 2]


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ('[[pool]]\nname = "a"\n[[pool.server]]\naddress = "127.0.0.1:8001"\n' * 2, "pool names must be unique"),
        (
            '[[pool]]\nname = "a"\n[[pool.server]]\naddress = "127.0.0.1:8001"\n[[route]]\nhost = "x"\npool = "b"\n',
            "route[0].pool: invalid value 'b'",
        ),
        (
            '[[pool]]\nname = "a"\n[[pool.server]]\naddress = "127.0.0.1:8001"\n'
            '[[pool]]\nname = "b"\n[[pool.server]]\naddress = "127.0.0.1:8002"\n',
            "serves one pool so far",
        ),
    ],
)
async def test_bad_pool_files_exit_2_with_message(tmp_path: Path, wsproxy_cli: Any, text: str, fragment: str) -> None:
    """A duplicate pool, a route to a missing pool, or (for now) several pools: exit 2 naming what is wrong."""
    path = tmp_path / "bad.toml"
    path.write_text('listen = "127.0.0.1:0"\n' + text)
    result = await wsproxy_cli("serve", "-c", str(path))
    assert result.code == 2
    assert fragment in result.err
