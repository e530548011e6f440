"""Pools and routes in a fleet: not shared through the store yet, so refused unless asked for this instance only."""

from __future__ import annotations

from typing import Any

from tests.conftest import run_cli
from tests.integration.test_pools import ws_echo


async def test_pool_and_route_changes_are_refused_fleet_wide_and_work_with_local(
    start_fleet: Any, echo_backends: Any
) -> None:
    """`pool add` and `route add` without --local: exit 1 naming the store and --local; with --local they apply to
    this instance, and a server joins the new pool only with --local too."""
    b1, b2 = await echo_backends(2)
    (engine,) = await start_fleet([b1], count=1)
    ctl = ("--control", engine.control)
    result = await run_cli("pool", "add", "chat", *ctl)
    assert result.code == 1
    assert "pool and route changes are per instance, not shared through the fleet store redis://" in result.err
    assert "use --local (?local=true)" in result.err
    steps = [
        ("pool", "add", "chat", "--check", "none", "--local"),
        ("route", "add", "--pool", "chat", "--host", "chat.example.com", "--local"),
    ]
    for step in steps:
        result = await run_cli(*step, *ctl)
        assert result.code == 0, (step, result.err)
    result = await run_cli("add", "n1", b2.address, "--pool", "chat", *ctl)
    assert result.code == 1 and "servers join pool chat per instance" in result.err
    assert (await run_cli("add", "n1", b2.address, "--pool", "chat", "--local", *ctl)).code == 0
    assert (await run_cli("route", "remove", "1", *ctl)).code == 1
    await ws_echo(engine.port, "chat.example.com")
    assert (b1.accepted, b2.accepted) == (0, 1)
