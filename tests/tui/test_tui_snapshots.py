"""Snapshot tests of the scripted, clock-free dashboard: main, add form, drain in progress, detail."""

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
