"""Snapshot tests of the scripted, clock-free dashboard: main, add form, drain, detail, previews, rebalance."""

from __future__ import annotations

from typing import Any

from textual.pilot import Pilot
from textual.widgets import Input
from tui_support import SIZE, make_app

from tui.app import DashboardApp
from tui.source import ScriptedSource


def _app(pilot: Pilot[Any]) -> DashboardApp:
    app = pilot.app
    assert isinstance(app, DashboardApp)
    return app


def test_main_screen(snap_compare: Any) -> None:
    """The main screen at the end of the scripted minute: b4 down, b3 going down 1/3."""
    assert snap_compare(make_app(), terminal_size=SIZE)


def test_add_form_with_validation(snap_compare: Any) -> None:
    """The add form with a bad name flagged under its field while typing."""

    async def run_before(pilot: Pilot[Any]) -> None:
        await pilot.pause()  # let the table size its columns before the modal covers it
        await pilot.press("a")
        await pilot.press(*"b 5")
        _app(pilot).screen.query_one("#address", Input).value = "127.0.0.1:9005"
        await pilot.pause()

    assert snap_compare(make_app(), terminal_size=SIZE, run_before=run_before)


def test_drain_in_progress(snap_compare: Any) -> None:
    """b2 draining for 3 s: state, elapsed time and 11 of 20 connections left."""

    async def run_before(pilot: Pilot[Any]) -> None:
        app = _app(pilot)
        app.main_screen.backends.select("b2")
        await pilot.press("d")
        await pilot.pause()
        await pilot.press("enter")
        await pilot.pause()
        assert isinstance(app.source, ScriptedSource)
        app.source.advance(3.0)
        await pilot.pause()
        app.clear_notifications()
        await pilot.pause()

    assert snap_compare(make_app(), terminal_size=SIZE, run_before=run_before)


def test_detail_view(snap_compare: Any) -> None:
    """b4's detail: its transitions up → down with the reason, and no open connections."""

    async def run_before(pilot: Pilot[Any]) -> None:
        _app(pilot).main_screen.backends.select("b4")
        await pilot.press("enter")
        await pilot.pause()
        await pilot.pause()

    assert snap_compare(make_app(), terminal_size=SIZE, run_before=run_before)


async def _with_b5(pilot: Pilot[Any]) -> ScriptedSource:
    """b5 added and up (the node a rolling restart left empty); notifications cleared."""
    app = _app(pilot)
    await pilot.pause()  # the main screen starts the source once mounted
    assert isinstance(app.source, ScriptedSource) and app.servers()
    await app.source.add("b5", "127.0.0.1:9005", 1)
    app.source.advance(1.0)
    app.source.advance(1.0)
    await pilot.pause()
    app.clear_notifications()
    await pilot.pause()
    return app.source


def test_rebalance_confirmation(snap_compare: Any) -> None:
    """`b` with b5 empty: the plan (5 clients, routes to b5, connections and shares after) before starting."""

    async def run_before(pilot: Pilot[Any]) -> None:
        await _with_b5(pilot)
        await pilot.press("b")
        await pilot.pause()
        await pilot.pause()

    assert snap_compare(make_app(), terminal_size=SIZE, run_before=run_before)


def test_rebalance_in_progress(snap_compare: Any) -> None:
    """A rebalance 1 s in at 2 clients/s: the line above the table says moved 2/5, 3 left, and B stops it."""

    async def run_before(pilot: Pilot[Any]) -> None:
        source = await _with_b5(pilot)
        await source.rebalance(2.0)
        source.advance(1.0)
        await pilot.pause()
        _app(pilot).clear_notifications()
        await pilot.pause()

    assert snap_compare(make_app(), terminal_size=SIZE, run_before=run_before)


def test_drain_impact_preview(snap_compare: Any) -> None:
    """`d` on b2: the confirmation with the connections and clients that must leave and the shares after."""

    async def run_before(pilot: Pilot[Any]) -> None:
        _app(pilot).main_screen.backends.select("b2")
        await pilot.press("d")
        await pilot.pause()
        await pilot.pause()

    assert snap_compare(make_app(), terminal_size=SIZE, run_before=run_before)
