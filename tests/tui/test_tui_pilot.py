"""Pilot tests over the scripted, clock-free source: forms, drain, weight, remove, filter, quit."""

from __future__ import annotations

import asyncio

from textual.widgets import Input, Label, Log, Static
from tui_support import SIZE, make_app, wait_until

from tui.app import DashboardApp
from tui.modals.add import AddServerModal
from tui.modals.confirm import ConfirmModal
from tui.modals.quit import QuitChoice, QuitModal
from tui.modals.weight import WeightModal
from tui.screens.detail import DetailScreen
from tui.source import ScriptedSource
from tui.widgets.backends import BackendsTable


def table(app: DashboardApp) -> BackendsTable:
    """The backends table of the main screen."""
    return app.main_screen.backends


def cell(app: DashboardApp, name: str, column: str) -> str:
    """Plain text of one cell, by server name and column key."""
    return str(table(app).get_cell(name, column).plain)


def impact_text(app: DashboardApp) -> str:
    """The impact preview (or rebalance plan) of the open dialog."""
    return str(app.screen.query_one(".impact", Static).content)


def events_text(app: DashboardApp) -> str:
    """Everything in the events pane."""
    return "\n".join(app.main_screen.query_one("#events-log", Log).lines)


def scripted(app: DashboardApp) -> ScriptedSource:
    """The app's source, typed."""
    assert isinstance(app.source, ScriptedSource)
    return app.source


async def fill_add_form(pilot: object, name: str, address: str, weight: str = "1") -> None:
    """Type into the three fields of the add form."""
    screen = pilot.app.screen  # type: ignore[attr-defined]
    screen.query_one("#name", Input).value = name
    screen.query_one("#address", Input).value = address
    screen.query_one("#weight", Input).value = weight
    await pilot.pause()  # type: ignore[attr-defined]


async def test_add_form_keeps_modal_open_on_bad_name(app: DashboardApp) -> None:
    """A name outside [A-Za-z0-9_.-]{1,64} is flagged as you type and the form stays open."""
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("a")
        assert isinstance(app.screen, AddServerModal)
        await pilot.press(*"bad name")
        await pilot.pause()
        assert "A-Z" in str(app.screen.query_one("#name-error", Label).content)
        await fill_add_form(pilot, "bad name", "127.0.0.1:9005")
        await pilot.click("#add")
        await pilot.pause()
        assert isinstance(app.screen, AddServerModal)
        assert "bad name" not in table(app)._cells


async def test_add_form_keeps_modal_open_on_bad_port(app: DashboardApp) -> None:
    """A port outside 1-65535 keeps the form open with the reason under the field."""
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("a")
        await fill_add_form(pilot, "b5", "127.0.0.1:70000")
        await pilot.click("#add")
        await pilot.pause()
        assert isinstance(app.screen, AddServerModal)
        assert "port" in str(app.screen.query_one("#address-error", Label).content)


async def test_add_form_adds_server_and_records_it(app: DashboardApp) -> None:
    """A valid form closes, the new row appears, and the action is in the events pane."""
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("a")
        await fill_add_form(pilot, "b5", "127.0.0.1:9005", "3")
        await pilot.click("#add")
        await pilot.pause()
        assert not isinstance(app.screen, AddServerModal)
        assert cell(app, "b5", "address") == "127.0.0.1:9005"
        assert cell(app, "b5", "weight") == "3"
        assert "you: add b5 → added 127.0.0.1:9005 weight 3" in events_text(app)


async def test_add_form_shows_engine_refusal_and_stays_open(app: DashboardApp) -> None:
    """When the engine refuses (a duplicate added meanwhile), the form shows why and stays open."""
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("a")
        await scripted(app).add("b9", "127.0.0.1:9009", 1)
        await fill_add_form(pilot, "b9", "127.0.0.1:9010")
        await pilot.click("#add")
        await pilot.pause()
        assert isinstance(app.screen, AddServerModal)
        error = str(app.screen.query_one("#engine-error", Label).content)
        assert "409" in error and "already exists" in error
        assert "you: add b9 → refused" in events_text(app)


async def test_drain_shows_state_and_falling_count(app: DashboardApp) -> None:
    """`d` then Enter drains the selected server; the row counts down and says when it is safe to restart."""
    async with app.run_test(size=SIZE) as pilot:
        table(app).select("b2")
        await pilot.press("d")
        await pilot.pause()
        await pilot.press("enter")
        await pilot.pause()
        assert cell(app, "b2", "state").startswith("draining")
        assert cell(app, "b2", "active") == "20/20"
        scripted(app).advance(2.0)
        await pilot.pause()
        assert cell(app, "b2", "active") == "15/20"
        assert cell(app, "b2", "state") == "draining 2.0s"
        scripted(app).advance(6.0)
        await pilot.pause()
        assert cell(app, "b2", "active") == "0/20"
        assert cell(app, "b2", "state") == "drained, safe to restart"
        assert "b2 drained: no connections left, safe to restart" in events_text(app)
        assert any("safe to restart" in str(n.message) for n in app._notifications)


async def test_undrain_after_drain(app: DashboardApp) -> None:
    """`u` on a draining server puts it back to up."""
    async with app.run_test(size=SIZE) as pilot:
        table(app).select("b1")
        await pilot.press("d")
        await pilot.pause()
        await pilot.press("enter")
        await pilot.pause()
        await pilot.press("u")
        await pilot.pause()
        assert cell(app, "b1", "state") == "up"


async def test_weight_modal_previews_share_then_applies(app: DashboardApp) -> None:
    """The weight dialog shows the resulting share before applying the absolute value."""
    async with app.run_test(size=SIZE) as pilot:
        table(app).select("b1")
        await pilot.press("w")
        assert isinstance(app.screen, WeightModal)
        field = app.screen.query_one("#weight", Input)
        field.value = "3"
        await pilot.pause()
        share = str(app.screen.query_one("#share", Label).content)
        assert share == "b1 would get 50.0% of new connections (now 25.0%)"
        await pilot.press("enter")
        await pilot.pause()
        assert not isinstance(app.screen, WeightModal)
        assert cell(app, "b1", "weight") == "3"
        assert cell(app, "b1", "share") == "50.0%"


async def test_remove_confirmation_names_address_and_connections(app: DashboardApp) -> None:
    """Remove asks first, naming host:port and the live connections; confirming removes the row."""
    async with app.run_test(size=SIZE) as pilot:
        table(app).select("b1")
        await pilot.press("r")
        assert isinstance(app.screen, ConfirmModal)
        body = str(app.screen.query_one(".dialog-body", Static).content)
        assert "127.0.0.1:9001" in body and "13 live connections" in body
        await pilot.click("#confirm")
        await pilot.pause()
        assert "b1" not in table(app)._cells
        assert table(app).selected_name is not None


async def test_remove_cancel_keeps_server(app: DashboardApp) -> None:
    """Escape on the confirmation removes nothing."""
    async with app.run_test(size=SIZE) as pilot:
        table(app).select("b1")
        await pilot.press("r")
        await pilot.press("escape")
        await pilot.pause()
        assert "b1" in table(app)._cells


async def test_remove_refused_409_offers_force(app: DashboardApp) -> None:
    """Removing the last eligible server: the dry run's refusal is shown in the confirmation, which offers force."""
    async with app.run_test(size=SIZE) as pilot:
        await scripted(app).disable("b2")
        await scripted(app).disable("b3")
        await pilot.pause()
        table(app).select("b1")
        await pilot.press("r")
        await wait_until(pilot, lambda: "Force" in str(getattr(app.screen, "confirm_label", "")), "force offer")
        assert "The engine refuses: remove b1 would leave no eligible server" in impact_text(app)
        assert app.focused is not None and app.focused.id == "cancel"
        assert "b1" in table(app)._cells
        await pilot.pause(0.3)
        await pilot.click("#confirm")
        await pilot.pause()
        assert "b1" not in table(app)._cells
        assert "remove b1 → removed (forced)" in events_text(app)


async def test_confirm_before_preview_still_offers_force(app: DashboardApp) -> None:
    """Confirming before the dry run answers sends the real call; its 409 still opens the force offer."""
    never = asyncio.Event()

    async def slow_preview(action: str, name: str, weight: int | None = None) -> dict[str, object]:
        await never.wait()
        return {}

    async with app.run_test(size=SIZE) as pilot:
        await scripted(app).disable("b2")
        await scripted(app).disable("b3")
        scripted(app).preview = slow_preview  # type: ignore[method-assign]
        await pilot.pause()
        table(app).select("b1")
        await pilot.press("r")
        await pilot.pause()
        assert impact_text(app) == "Asking the engine what this would move…"
        await pilot.click("#confirm")
        await pilot.pause()
        assert isinstance(app.screen, ConfirmModal) and app.screen.confirm_label == "Force remove"
        assert "would leave no eligible server" in app.screen.body
        assert "remove b1 → refused: remove b1 would leave no eligible server" in events_text(app)


async def test_filter_and_sort_keep_cursor_on_same_server(app: DashboardApp) -> None:
    """Re-sorting and filtering move rows, never the cursor off the selected server."""
    async with app.run_test(size=SIZE) as pilot:
        table(app).select("b3")
        await pilot.press("s")  # sort by state: b4 (down) and b3 (going down) first
        await pilot.pause()
        assert [r.key.value for r in table(app).ordered_rows][:2] == ["b4", "b3"]
        assert table(app).selected_name == "b3"
        await pilot.press("s", "s")  # by active: b2 20, b1 13, b3 12, b4 0
        await pilot.pause()
        assert [r.key.value for r in table(app).ordered_rows] == ["b2", "b1", "b3", "b4"]
        assert table(app).selected_name == "b3"
        await pilot.press("slash", *"!b1")
        await pilot.pause()
        assert "b1" not in table(app)._cells
        assert table(app).selected_name == "b3"
        await pilot.press("enter")
        assert table(app).border_title is not None and "filter: !b1" in table(app).border_title
        scripted(app).advance(1.0)
        await pilot.pause()
        assert table(app).selected_name == "b3"


async def test_handshake_log_filter() -> None:
    """`/` on the focused handshake log filters its lines, `!` inverts."""
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        log = app.main_screen.handshakes.log_widget
        log.focus()
        await pilot.press("slash", *"403")
        await pilot.pause()
        assert log.lines and all("403" in line for line in log.lines)
        await pilot.press("escape")
        await pilot.pause()
        assert any("101" in line for line in log.lines)


async def test_read_only_hides_mutations() -> None:
    """--read-only: mutation keys do nothing, vanish from the footer and from the palette."""
    app = make_app(read_only=True)
    async with app.run_test(size=SIZE) as pilot:
        table(app).select("b2")
        await pilot.press("d", "a", "r", "w", "x", "b")
        await pilot.pause()
        assert cell(app, "b2", "state") == "up"
        assert app.screen is app.main_screen
        shown = {b.binding.action for b in app.screen.active_bindings.values()}
        assert not shown & {"drain", "add_server", "remove", "weight", "disable", "rebalance", "stop_rebalance"}
        assert "request_quit" in shown
        from tui.commands import entries

        titles = [title for title, _, _ in entries(app)]
        assert "details b2" in titles and not any(t.startswith(("drain", "rebalance")) for t in titles)


async def test_quit_dialog_on_q_and_ctrl_q() -> None:
    """q and ctrl+q both open the quit dialog; Escape stays; an owned engine offers stop/leave."""
    app = make_app(owns_engine=True)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("q")
        assert isinstance(app.screen, QuitModal)
        await pilot.press("escape")
        await pilot.pause()
        assert app.screen is app.main_screen
        await pilot.press("ctrl+q")
        assert isinstance(app.screen, QuitModal)
        assert app.screen.query("#stop") and app.screen.query("#leave")
        await pilot.click("#leave")
        await pilot.pause()
    assert app.return_value is QuitChoice.LEAVE


async def test_quit_attached_never_offers_stop() -> None:
    """An attached dashboard's quit dialog only quits the dashboard."""
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("ctrl+q")
        assert isinstance(app.screen, QuitModal)
        assert not app.screen.query("#stop")
        await pilot.click("#quit")
        await pilot.pause()
    assert app.return_value is QuitChoice.QUIT


async def test_detail_shows_history_and_closes_connection(app: DashboardApp) -> None:
    """Enter opens the detail screen; `k` closes the selected connection after confirming."""
    async with app.run_test(size=SIZE) as pilot:
        table(app).select("b4")
        await pilot.press("enter")
        await pilot.pause()
        assert isinstance(app.screen, DetailScreen)
        history = app.screen.query_one("#detail-history")
        assert history.row_count == 2  # type: ignore[attr-defined]
        await pilot.press("escape")
        table(app).select("b1")
        await pilot.press("enter")
        await pilot.pause()
        screen = app.screen
        assert isinstance(screen, DetailScreen)
        before = screen.query_one("#detail-conns").row_count  # type: ignore[attr-defined]
        conn_id = screen.selected_connection()
        await pilot.press("k")
        assert isinstance(app.screen, ConfirmModal)
        await pilot.click("#confirm")
        await pilot.pause()
        screen.refresh_detail(force=True)
        await pilot.pause()
        assert screen.query_one("#detail-conns").row_count == before - 1  # type: ignore[attr-defined]
        assert f"close connection {conn_id} → closed" in events_text(app)


async def test_palette_lists_actions_on_servers(app: DashboardApp) -> None:
    """The command palette offers "drain b2" and friends, built from the live server list."""
    async with app.run_test(size=SIZE):
        from tui.commands import entries

        titles = [title for title, _, _ in entries(app)]
        assert {"drain b2", "weight b1", "remove b4", "add server", "details b3"} <= set(titles)


async def test_link_lost_marks_stale_and_keeps_data(app: DashboardApp) -> None:
    """A lost link keeps the last snapshot and shows "STALE since"; restoring clears it."""
    from tui.messages import LinkLost, LinkRestored

    async with app.run_test(size=SIZE) as pilot:
        app.post_message(LinkLost(1764160060.0, "connection refused", 2.0))
        await pilot.pause()
        bar = app.main_screen.status_bar
        assert "STALE since 12:27:40" in str(bar.content)
        assert bar.has_class("stale")
        assert "b1" in table(app)._cells
        app.post_message(LinkRestored(3.0))
        await pilot.pause()
        assert not bar.has_class("stale")
        assert "engine link lost: connection refused" in events_text(app)
        assert "engine link restored after 3.0s" in events_text(app)


async def test_handshake_log_pauses_when_scrolled_up_and_marks_gaps(app: DashboardApp) -> None:
    """Scrolled up, new lines are counted as "N new" instead of yanking the view; gaps are shown."""
    from tui.messages import EventsReceived

    async with app.run_test(size=SIZE) as pilot:
        pane = app.main_screen.handshakes
        log = pane.log_widget
        log.scroll_home(animate=False)
        await pilot.pause()
        top = log.scroll_y
        hs = {"type": "handshake", "ts": 1764160061.0, "client": "127.0.0.1:1", "server": "b1"}
        gap = {"type": "gap", "ts": 1764160061.5, "missed": 7}
        app.post_message(EventsReceived([{**hs, "status": 101}, {**hs, "status": 101}, gap]))
        await pilot.pause()
        title = str(app.main_screen.query_one("#hs-title").content)  # type: ignore[attr-defined]
        assert "paused, 3 new" in title and "dropped: 7 in 1 gaps" in title
        assert log.scroll_y == top
        assert "gap: 7 events missed" in log.lines[-1]
        log.focus()
        await pilot.press("end")
        for _ in range(100):  # the scroll to the end may be animated: a bounded number of turns, not a sleep
            await pilot.pause()
            title = str(app.main_screen.query_one("#hs-title").content)  # type: ignore[attr-defined]
            if "paused" not in title:
                break
        assert "paused" not in title


async def test_drain_with_deadline_shows_time_left(app: DashboardApp) -> None:
    """`D` asks for a deadline; the row shows the time left and empties when it passes."""
    async with app.run_test(size=SIZE) as pilot:
        table(app).select("b1")
        await pilot.press("D")
        await pilot.press(*"5", "enter")
        await pilot.pause()
        assert cell(app, "b1", "state") == "draining 0.0s, 5.0s left"
        scripted(app).advance(1.0)
        await pilot.pause()
        assert cell(app, "b1", "state") == "draining 1.0s, 4.0s left"
        scripted(app).advance(4.0)
        await pilot.pause()
        assert cell(app, "b1", "active") == "0/13"


async def test_detail_of_removed_server_says_so(app: DashboardApp) -> None:
    """A detail screen whose server is removed meanwhile says so and stops offering actions."""
    async with app.run_test(size=SIZE) as pilot:
        table(app).select("b4")
        await pilot.press("enter")
        await pilot.pause()
        screen = app.screen
        assert isinstance(screen, DetailScreen)
        await scripted(app).remove("b4")
        screen.refresh_detail(force=True)
        await pilot.pause()
        assert "b4 was removed" in str(screen.query_one("#detail-summary", Static).content)
        assert screen.check_action("drain", ()) is None
