"""Pilot tests over the scripted source: the rebalance flow and its progress line, and the impact previews."""

from __future__ import annotations

from typing import Any

from textual.widgets import Button, Input, Label, Log, Static
from tui_support import SIZE, make_app, wait_until

from tui.app import DashboardApp
from tui.commands import entries
from tui.modals.drain import DrainModal
from tui.modals.preview import PreviewModal
from tui.modals.rebalance import RebalanceModal
from tui.modals.weight import WeightModal
from tui.source import ScriptedSource

JSON = dict[str, Any]


def scripted(app: DashboardApp) -> ScriptedSource:
    """The app's source, typed."""
    assert isinstance(app.source, ScriptedSource)
    return app.source


def impact_text(app: DashboardApp) -> str:
    """The impact preview (or rebalance plan) of the open dialog."""
    found = app.screen.query(".impact")
    return str(found.first(Static).content) if found else ""


def bar_text(app: DashboardApp) -> str:
    """The rebalance line above the backends table ("" while hidden)."""
    bar = app.main_screen.rebalance_bar
    return str(bar.content) if bar.display else ""


def events_text(app: DashboardApp) -> str:
    """Everything in the events pane."""
    return "\n".join(app.main_screen.query_one("#events-log", Log).lines)


def record_rebalance_calls(app: DashboardApp) -> list[tuple[float | None, bool]]:
    """Wrap the source's rebalance so a test sees every (rate, dry_run) it was asked."""
    source = scripted(app)
    calls: list[tuple[float | None, bool]] = []
    real = source.rebalance

    async def recorded(rate: float | None = None, dry_run: bool = False) -> JSON:
        calls.append((rate, dry_run))
        return await real(rate, dry_run)

    source.rebalance = recorded  # type: ignore[method-assign]
    return calls


async def add_b5(app: DashboardApp, pilot: Any) -> None:
    """A fifth server that passes its rise checks: after a rolling restart, the node that holds no clients."""
    await scripted(app).add("b5", "127.0.0.1:9005", 1)
    scripted(app).advance(1.0)
    scripted(app).advance(1.0)
    await wait_until(pilot, lambda: (app.server_by_name("b5") or {}).get("state") == "up", "b5 up")


async def test_rebalance_key_shows_plan_then_starts(app: DashboardApp) -> None:
    """`b` opens the dry-run plan (routes, rate, shares after); Enter starts it with the engine's default rate."""
    async with app.run_test(size=SIZE) as pilot:
        await add_b5(app, pilot)
        calls = record_rebalance_calls(app)
        await pilot.press("b")
        await wait_until(pilot, lambda: isinstance(app.screen, RebalanceModal), "the rebalance dialog")
        await wait_until(pilot, lambda: "Moves 5 clients" in impact_text(app), "the plan")
        plan = impact_text(app)
        assert "Moves 5 clients (8 connections)" in plan
        assert "b1 → b5: 2 clients, 3 connections" in plan and "b2 → b5: 1 client, 2 connections" in plan
        assert "engine's default rate" in plan
        assert "Left alone: 5 clients connected too recently." in plan
        assert "Connections: b1 13 → 10 · b2 20 → 18 · b3 12 → 9 · b4 0 · b5 0 → 8" in plan
        assert "New connections: b1 20.0% · b2 40.0% · b3 20.0% · b4 - · b5 20.0%" in plan
        assert calls == [(None, True)]
        await pilot.press("enter")
        await pilot.pause()
        assert not isinstance(app.screen, RebalanceModal)
        assert calls == [(None, True), (None, False)]
        assert (app.status.get("rebalance") or {}).get("state") == "running"
        assert "you: rebalance pool → moving 5 client(s) at 1.55/s" in events_text(app)


async def test_rebalance_typed_rate_is_sent(app: DashboardApp) -> None:
    """A rate typed in the dialog is shown in the plan and sent with the start."""
    async with app.run_test(size=SIZE) as pilot:
        await add_b5(app, pilot)
        calls = record_rebalance_calls(app)
        await pilot.press("b")
        await wait_until(pilot, lambda: "Moves 5 clients" in impact_text(app), "the plan")
        app.screen.query_one("#rate", Input).value = "3"
        await pilot.pause()
        assert "at most 3 clients a second" in impact_text(app)
        await pilot.click("#start")
        await pilot.pause()
        assert calls[-1] == (3.0, False)
        assert (app.status.get("rebalance") or {}).get("rate") == 3.0


async def test_rebalance_cancel_and_bad_rate_start_nothing(app: DashboardApp) -> None:
    """A rate that is not a positive number keeps the dialog open; Escape closes it; nothing is started."""
    async with app.run_test(size=SIZE) as pilot:
        await add_b5(app, pilot)
        calls = record_rebalance_calls(app)
        await pilot.press("b")
        await wait_until(pilot, lambda: "Moves 5 clients" in impact_text(app), "the plan")
        app.screen.query_one("#rate", Input).value = "-1"
        await pilot.click("#start")
        await pilot.pause()
        assert isinstance(app.screen, RebalanceModal)
        await pilot.press("escape")
        await pilot.pause()
        assert app.screen is app.main_screen
        assert calls == [(None, True)] and app.status.get("rebalance") is None


async def test_rebalance_progress_line_counts_then_says_done(app: DashboardApp) -> None:
    """The line above the table shows moved, left and rate as the clients move, then done with the reason."""
    async with app.run_test(size=SIZE) as pilot:
        await add_b5(app, pilot)
        assert bar_text(app) == ""
        await scripted(app).rebalance(2.0)
        await pilot.pause()
        assert bar_text(app) == "rebalance running 0.0s · moved 0/5 clients (0 connections) · 5 left · 2/s · B stops it"
        scripted(app).advance(1.0)
        await pilot.pause()
        assert bar_text(app).startswith("rebalance running 1.0s · moved 2/5 clients (3 connections) · 3 left · 2/s")
        assert "stop_rebalance" in {b.binding.action for b in app.screen.active_bindings.values()}
        scripted(app).advance(2.0)
        await pilot.pause()
        text = bar_text(app)
        assert text.startswith("rebalance done at 12:27:45 after 3.0s: balanced")
        assert text.endswith("moved 5/5 clients (8 connections) · 0 left")
        assert "stop_rebalance" not in {b.binding.action for b in app.screen.active_bindings.values()}
        assert any(n.title == "Rebalance done" for n in app._notifications)
        assert "operator rebalance-done: ok" in events_text(app)
        scripted(app).advance(61.0)
        await pilot.pause()
        assert bar_text(app) == ""


async def test_stop_rebalance_key_and_second_start_refused(app: DashboardApp) -> None:
    """While running, `b` points at B instead of planning again; B stops it and the line says stopped."""
    async with app.run_test(size=SIZE) as pilot:
        await add_b5(app, pilot)
        await scripted(app).rebalance(1.0)
        scripted(app).advance(1.0)
        await pilot.pause()
        await pilot.press("b")
        await pilot.pause()
        assert app.screen is app.main_screen
        assert any("B stops it" in str(n.message) for n in app._notifications)
        assert "stop rebalance" in [title for title, _, _ in entries(app)]
        await pilot.press("B")
        await pilot.pause()
        assert (app.status.get("rebalance") or {}).get("state") == "stopped"
        assert bar_text(app).startswith("rebalance stopped at 12:27:43 after 1.0s: stopped by operator")
        assert "moved 1/5 clients" in bar_text(app)
        assert "you: stop rebalance pool → stopped: stopped by operator; moved 1 client" in events_text(app)


async def test_rebalance_stops_when_a_server_changes(app: DashboardApp) -> None:
    """Draining a server during a rebalance stops it, with the engine's reason on the line."""
    async with app.run_test(size=SIZE) as pilot:
        await add_b5(app, pilot)
        await scripted(app).rebalance(1.0)
        await scripted(app).drain("b3")
        await pilot.pause()
        assert "stopped" in bar_text(app) and "a server changed state or weight" in bar_text(app)


async def test_palette_rebalance_opens_the_plan(app: DashboardApp) -> None:
    """The palette's "rebalance" entry opens the same dialog as `b`."""
    async with app.run_test(size=SIZE) as pilot:
        callback = next(cb for title, _, cb in entries(app) if title == "rebalance")
        callback()
        await wait_until(pilot, lambda: isinstance(app.screen, RebalanceModal), "the rebalance dialog")
        await wait_until(pilot, lambda: "Moves" in impact_text(app), "the plan")


async def test_read_only_hides_rebalance() -> None:
    """--read-only: `b` does nothing, and neither the footer nor the palette offers rebalance."""
    app = make_app(read_only=True)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("b")
        await pilot.pause()
        assert app.screen is app.main_screen
        assert "rebalance" not in {b.binding.action for b in app.screen.active_bindings.values()}
        assert not any("rebalance" in title for title, _, _ in entries(app))


# Impact previews


async def test_drain_preview_then_enter_drains(app: DashboardApp) -> None:
    """`d` shows the connections and distinct clients that must leave b2 and the shares after; Enter drains."""
    async with app.run_test(size=SIZE) as pilot:
        app.main_screen.backends.select("b2")
        await pilot.press("d")
        await wait_until(pilot, lambda: "Moves" in impact_text(app), "the drain's impact")
        assert isinstance(app.screen, PreviewModal)
        assert impact_text(app) == (
            "Moves 20 live connections of 13 distinct clients off b2.\n"
            "New connections: b1 25.0% → 50.0% · b2 50.0% → - · b3 25.0% → 50.0% · b4 -"
        )
        await pilot.press("enter")
        await pilot.pause()
        assert (app.server_by_name("b2") or {}).get("admin") == "draining"


async def test_disable_preview_escape_keeps_server(app: DashboardApp) -> None:
    """`x` previews the disable; Escape leaves the server as it was."""
    async with app.run_test(size=SIZE) as pilot:
        app.main_screen.backends.select("b1")
        await pilot.press("x")
        await wait_until(pilot, lambda: "Moves 13 live connections" in impact_text(app), "the disable's impact")
        assert "b2 50.0% → 66.7%" in impact_text(app)
        await pilot.press("escape")
        await pilot.pause()
        assert (app.server_by_name("b1") or {}).get("admin") == "active"


async def test_remove_preview_shows_server_gone(app: DashboardApp) -> None:
    """The remove confirmation shows the moved connections and the shares without the server."""
    async with app.run_test(size=SIZE) as pilot:
        app.main_screen.backends.select("b3")
        await pilot.press("r")
        await wait_until(pilot, lambda: "Moves" in impact_text(app), "the remove's impact")
        assert "Moves 12 live connections" in impact_text(app) and "b3 25.0% → gone" in impact_text(app)
        assert app.focused is not None and app.focused.id == "cancel"


async def test_drain_preview_refused_offers_force() -> None:
    """Draining the last eligible server: the dry run's 409 is shown and the button forces the drain."""
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await scripted(app).disable("b2")
        await scripted(app).disable("b3")
        app.main_screen.backends.select("b1")
        await pilot.press("d")
        await wait_until(pilot, lambda: "refuses" in impact_text(app), "the refusal")
        assert "drain b1 would leave no eligible server" in impact_text(app)
        assert str(app.screen.query_one("#confirm", Button).label) == "Force drain"
        await pilot.pause(0.3)
        await pilot.click("#confirm")
        await pilot.pause()
        assert (app.server_by_name("b1") or {}).get("admin") == "draining"
        assert "drain b1 → draining (forced)" in events_text(app)


async def test_drain_with_deadline_shows_preview() -> None:
    """`D` (drain with a deadline) shows the same impact under the deadline field."""
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        app.main_screen.backends.select("b2")
        await pilot.press("D")
        await wait_until(pilot, lambda: "Moves 20 live connections" in impact_text(app), "the drain's impact")
        assert isinstance(app.screen, DrainModal)
        app.screen.query_one("#deadline", Input).value = "30"
        await pilot.click("#drain")
        await pilot.pause()
        drain = (app.server_by_name("b2") or {}).get("drain") or {}
        assert drain.get("deadline") is not None


async def test_weight_preview_follows_typed_value_and_forces_zero() -> None:
    """The weight dialog asks the dry run for each value; 0 on the last eligible server is refused, then forced."""
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        app.main_screen.backends.select("b1")
        await pilot.press("w")
        assert isinstance(app.screen, WeightModal)
        app.screen.query_one("#weight", Input).value = "3"
        await wait_until(pilot, lambda: "b1 25.0% → 50.0%" in impact_text(app), "the weight's impact")
        assert impact_text(app).startswith("Moves no live connection.")
        await pilot.press("escape")
        await scripted(app).disable("b2")
        await scripted(app).disable("b3")
        await pilot.pause()
        await pilot.press("w")
        app.screen.query_one("#weight", Input).value = "0"
        await wait_until(pilot, lambda: "refuses" in impact_text(app), "the refusal of weight 0")
        assert str(app.screen.query_one("#apply", Button).label) == "Force weight 0"
        assert "no new connections" in str(app.screen.query_one("#share", Label).content)
        await pilot.press("enter")
        await pilot.pause()
        assert (app.server_by_name("b1") or {}).get("weight") == 0
        assert "weight b1 → weight 0 (forced)" in events_text(app)
