"""Pilot tests of the dashboard attached to a real HAProxy through its runtime API (the same screens)."""

from __future__ import annotations

import asyncio
from typing import Any

from textual.widgets import DataTable, Log
from tui_support import SIZE, unit, wait_until
from websockets.asyncio.client import connect

from proxy_core.sources.haproxy import HaproxySource
from tests.conftest import EchoBackend
from tui.app import DashboardApp
from tui.modals.confirm import ConfirmModal
from tui.screens.detail import DetailScreen
from tui.source import LiveSource

FDRAIN = 0x08


def cell(app: DashboardApp, name: str, column: str) -> str:
    table = app.main_screen.backends
    if name not in table._cells:
        return ""
    return str(table.get_cell(name, column).plain)


def events_text(app: DashboardApp) -> str:
    return "\n".join(app.main_screen.query_one("#events-log", Log).lines)


async def test_dashboard_over_haproxy(haproxy: Any, echo_backends: Any) -> None:
    """Backends show as be/sN with states from HAProxy; a killed one goes down; `d` drains it in HAProxy itself;
    the handshake log is hidden with its reason."""
    backends: list[EchoBackend] = await echo_backends(3)
    proc = await haproxy(backends)
    app = DashboardApp(LiveSource(HaproxySource(proc.admin, interval=0.1)))
    async with app.run_test(size=SIZE) as pilot:
        await wait_until(pilot, lambda: cell(app, "be/s3", "state") == "up", "three servers up")
        assert not app.main_screen.handshakes.display
        assert "no handshake log" in str(app.main_screen.handshakes_off.content)
        assert "haproxy 2.6" in str(app.main_screen.status_bar.content)
        await backends[1].stop()
        await wait_until(pilot, lambda: cell(app, "be/s2", "state") == "down", "be/s2 down", timeout=10)
        await wait_until(pilot, lambda: "be/s2" in events_text(app) and "down" in events_text(app), "state event")
        app.main_screen.backends.select("be/s1")
        await pilot.press("d")
        await pilot.press("enter")  # the drain confirmation (HAProxy has no impact preview: it says so)
        await wait_until(pilot, lambda: cell(app, "be/s1", "state").startswith("drain"), "drain shown")
        assert int((await proc.server_state("be/s1"))["srv_admin_state"]) & FDRAIN
        await pilot.press("u")
        await wait_until(pilot, lambda: cell(app, "be/s1", "state") == "up", "undrain shown")
        assert not int((await proc.server_state("be/s1"))["srv_admin_state"]) & FDRAIN


async def test_dashboard_read_only_on_a_user_level_socket(haproxy: Any, echo_backends: Any) -> None:
    """A socket at level user: the dashboard goes read-only and says why; `d` changes nothing."""
    backends: list[EchoBackend] = await echo_backends(2)
    proc = await haproxy(backends)
    app = DashboardApp(LiveSource(HaproxySource(proc.user, interval=0.1)))
    async with app.run_test(size=SIZE) as pilot:
        await wait_until(pilot, lambda: cell(app, "be/s2", "state") == "up", "servers up")
        await wait_until(pilot, lambda: app.read_only, "read-only")
        bar = str(app.main_screen.status_bar.content)
        assert "READ-ONLY" in bar and "level user" in bar
        app.main_screen.backends.select("be/s1")
        await pilot.press("d")
        await pilot.pause(0.3)
        assert (await proc.server_state("be/s1"))["srv_admin_state"] == "0"
        assert cell(app, "be/s1", "state") == "up"


async def test_detail_lists_sessions_and_closes_one(haproxy: Any, echo_backends: Any) -> None:
    """The detail screen lists a server's HAProxy sessions (`show sess`); `k` + confirm shuts that session down."""
    backends: list[EchoBackend] = await echo_backends(1)
    proc = await haproxy(backends)
    app = DashboardApp(LiveSource(HaproxySource(proc.admin, interval=0.1)))
    ws = await connect(f"ws://127.0.0.1:{proc.port}/", open_timeout=unit(5))
    try:
        async with app.run_test(size=SIZE) as pilot:
            await wait_until(pilot, lambda: cell(app, "be/s1", "active") == "1", "one session")
            app.main_screen.backends.select("be/s1")
            await pilot.press("enter")
            screen = app.screen
            assert isinstance(screen, DetailScreen)
            table = screen.query_one("#detail-conns", DataTable)
            await wait_until(pilot, lambda: table.row_count == 1 and screen.selected_connection(), "session listed")
            await pilot.press("k")
            assert isinstance(app.screen, ConfirmModal)
            await pilot.click("#confirm")
            await asyncio.wait_for(ws.wait_closed(), unit(5))
            await wait_until(pilot, lambda: "closed" in events_text(app), "close recorded")
    finally:
        await ws.close()
