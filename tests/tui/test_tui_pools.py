"""Pools and routes in the dashboard (issue 15): the grouped table, the pool filter, the routes view, an action on
`chat/n2` from the palette, pool and route in the handshake log; snapshots of the two-pool view and the routes."""

from __future__ import annotations

from typing import Any

from pools_script import make_pools_app, to_end
from textual.pilot import Pilot
from textual.widgets import DataTable
from tui_support import SIZE

from tui.commands import entries
from tui.screens.routes import RoutesScreen
from tui.widgets.backends import HEADER_KEY


def _rows(app: Any) -> list[str]:
    return [str(row.key.value) for row in app.main_screen.backends.ordered_rows]


def _cell(app: Any, key: str, column: str) -> str:
    return str(app.main_screen.backends.get_cell(key, column).plain)


async def test_grouped_table_has_a_header_per_pool() -> None:
    """Two pools: a header row per pool (balance, up/total, active, total) above its own servers."""
    app = make_pools_app()
    async with app.run_test(size=SIZE) as pilot:
        await to_end(pilot)
        assert _rows(app) == [
            HEADER_KEY + "chat", "chat/n1", "chat/n2", "chat/n3",
            HEADER_KEY + "notify", "notify/n1", "notify/n2",
        ]  # fmt: skip
        header = HEADER_KEY + "chat"
        assert (_cell(app, header, "address"), _cell(app, header, "state")) == ("least_conn", "2/3 up")
        assert (_cell(app, header, "active"), _cell(app, header, "total")) == ("32", "435")
        assert _cell(app, "chat/n2", "share") == "66.7%"  # shares within the pool, not across both
        assert _cell(app, "notify/n1", "share") == "50.0%"


async def test_pool_key_filters_to_one_pool_then_all() -> None:
    """`p` shows chat only, then notify only, then every pool again."""
    app = make_pools_app()
    async with app.run_test(size=SIZE) as pilot:
        await to_end(pilot)
        await pilot.press("p")
        await pilot.pause()
        assert _rows(app) == [HEADER_KEY + "chat", "chat/n1", "chat/n2", "chat/n3"]
        assert "pool: chat" in str(app.main_screen.backends.border_title)
        await pilot.press("p")
        await pilot.pause()
        assert _rows(app) == [HEADER_KEY + "notify", "notify/n1", "notify/n2"]
        await pilot.press("p")
        await pilot.pause()
        assert len(_rows(app)) == 7


async def test_routes_view_lists_routes_rates_and_refusals() -> None:
    """`R` opens the routes: order, match fields, pool, matched count and rate, and the 404/421 counts."""
    app = make_pools_app()
    async with app.run_test(size=SIZE) as pilot:
        await to_end(pilot)
        await pilot.press("R")
        await pilot.pause()
        assert isinstance(app.screen, RoutesScreen)
        table = app.screen.query_one("#routes-table", DataTable)
        rows = [[c.plain for c in table.get_row(r.key)] for r in table.ordered_rows]
        assert rows[0] == ["1", "*", "chat.example.com", "*", "*", "chat", "460", "2.0/s"]
        assert rows[2][4:] == ["push.example.com", "notify", "16", "0.2/s"]
        text = str(app.screen.query_one("#routes-unrouted").render())
        assert "3 answered 404" in text and "1 answered 421" in text
        await pilot.press("escape")
        await pilot.pause()
        assert not isinstance(app.screen, RoutesScreen)


async def test_palette_drain_chat_n2_acts_in_its_pool() -> None:
    """The palette offers `drain chat/n2`; running it drains chat/n2 and leaves notify untouched."""
    app = make_pools_app()
    async with app.run_test(size=SIZE) as pilot:
        await to_end(pilot)
        found = {title: call for title, _, call in entries(app)}
        assert {"drain chat/n2", "pool chat", "all pools", "routes"} <= set(found)
        found["drain chat/n2"]()
        await pilot.pause()
        await pilot.pause()
        await pilot.press("enter")
        await pilot.pause()
        assert _cell(app, "chat/n2", "state").startswith("draining")
        assert _cell(app, "notify/n1", "state") == "up"
        assert _cell(app, HEADER_KEY + "chat", "state") == "1/3 up"


async def test_interlock_is_per_pool() -> None:
    """Draining notify/n1 is allowed, then notify/n2 (the pool's last eligible server) is refused with chat up."""
    app = make_pools_app()
    async with app.run_test(size=SIZE) as pilot:
        await to_end(pilot)
        source: Any = app.source
        await source.drain("notify/n1")
        try:
            await source.drain("notify/n2")
        except Exception as exc:
            assert getattr(exc, "status", None) == 409
        else:
            raise AssertionError("draining the last eligible server of notify was not refused")


async def test_handshake_log_shows_pool_route_and_refusals() -> None:
    """Each handshake line names its pool and route; unrouted 404/421 refusals say so."""
    app = make_pools_app()
    async with app.run_test(size=SIZE) as pilot:
        await to_end(pilot)
        lines = list(app.main_screen.handshakes.lines)
        assert any("→ chat/n2 [chat, route 1]" in line for line in lines)
        assert any("→ chat/n1 [chat, default]" in line for line in lines)
        assert any("[no route]" in line and "404 no route" in line for line in lines)
        assert any("421 misdirected" in line for line in lines)


def test_two_pool_view(snap_compare: Any) -> None:
    """The main screen with two pools: chat (n3 down) and notify grouped under their headers."""

    async def run_before(pilot: Pilot[Any]) -> None:
        await to_end(pilot)

    assert snap_compare(make_pools_app(), terminal_size=SIZE, run_before=run_before)


def test_routes_view(snap_compare: Any) -> None:
    """The routes view: three routes with counts and rates, the default pool, the unrouted refusals."""

    async def run_before(pilot: Pilot[Any]) -> None:
        await to_end(pilot)
        await pilot.press("R")
        await pilot.pause()

    assert snap_compare(make_pools_app(), terminal_size=SIZE, run_before=run_before)
