"""What keeps the dashboard cheap attached to a busy engine: the footer is rebuilt only when a key changes, and
the logs (BatchLog) show exactly what Textual's Log shows while laying out less."""

from __future__ import annotations

from typing import Any

from textual.app import App, ComposeResult
from textual.containers import Horizontal
from textual.widgets import Footer, Log
from textual.widgets._footer import FooterKey
from tui_support import SIZE, wait_until

from tui.app import DashboardApp
from tui.source import ScriptedSource
from tui.widgets.batch_log import BatchLog


def footer_actions(app: DashboardApp) -> set[str]:
    """Actions whose keys the footer shows enabled right now."""
    footer = app.screen.query_one(Footer)
    return {key.action for key in footer.query(FooterKey) if not key.has_class("-disabled")}


async def test_footer_refreshed_only_when_a_key_changes(app: DashboardApp) -> None:
    """Snapshots that change no key leave the footer alone; a drain swaps Drain for Undrain at once."""
    calls: list[int] = []
    async with app.run_test(size=SIZE) as pilot:
        screen = app.main_screen
        original = screen.refresh_bindings

        def counted() -> None:
            calls.append(1)
            original()

        screen.refresh_bindings = counted  # type: ignore[method-assign]
        app.main_screen.backends.select("b2")
        await pilot.pause()
        assert isinstance(app.source, ScriptedSource)
        before = len(calls)
        for _ in range(4):  # four snapshots, same states: counts and times move, keys do not
            app.source.advance(0.25)
            await pilot.pause()
        assert len(calls) == before
        assert "drain" in footer_actions(app) and "undrain" not in footer_actions(app)
        await pilot.press("d")
        await pilot.pause()
        await pilot.press("enter")
        await wait_until(pilot, lambda: "undrain" in footer_actions(app), "Undrain in the footer")
        assert "drain" not in footer_actions(app)
        assert len(calls) > before
        settled = len(calls)
        app.source.advance(0.25)
        await pilot.pause()
        assert len(calls) == settled


async def test_footer_follows_the_cursor_between_servers_in_different_states(app: DashboardApp) -> None:
    """Moving the cursor onto a server whose keys differ refreshes the footer; b4 is down, b1 up."""
    async with app.run_test(size=SIZE) as pilot:
        app.main_screen.backends.select("b1")
        await pilot.pause()
        await pilot.press("x")  # disable b1 (Enter confirms): Enable replaces Disable for it, not for b2
        await pilot.pause()
        await pilot.press("enter")
        await wait_until(pilot, lambda: "enable" in footer_actions(app), "Enable for the disabled b1")
        app.main_screen.backends.select("b2")
        await wait_until(pilot, lambda: "disable" in footer_actions(app), "Disable for b2")
        assert "enable" not in footer_actions(app)


class TwoLogs(App[None]):
    """Textual's Log and BatchLog side by side, fed the same batches."""

    def compose(self) -> ComposeResult:
        with Horizontal():
            yield Log(max_lines=50, id="plain")
            yield BatchLog(max_lines=50, id="batch")


def shown(log: Log) -> list[str]:
    """The visible lines as drawn (text only)."""
    return [log.render_line(y).text for y in range(log.size.height)]


async def test_batch_log_shows_what_log_shows() -> None:
    """Same lines, virtual size, scroll position and drawn rows as Log, through growth, wider lines and pruning."""
    app = TwoLogs()
    async with app.run_test(size=(100, 20)) as pilot:
        plain, batch = app.query_one("#plain", Log), app.query_one("#batch", BatchLog)
        batches: list[list[str]] = [[f"line {i}" for i in range(5)], ["wider line " + "x" * 30, "short"]]
        batches += [[f"b{n} l{i}" for i in range(n % 4 + 1)] for n in range(40)]
        batches += [["two\nlines in one"], []]
        for lines in batches:
            plain.write_lines(lines)
            batch.write_lines(lines)
            await pilot.pause()
            await wait_until(pilot, lambda: plain.virtual_size == batch.virtual_size, "the same virtual size")
            assert list(batch.lines) == list(plain.lines)
            assert batch.scroll_y == plain.scroll_y
            assert shown(batch) == shown(plain)
        assert len(batch.lines) == 50 and batch.is_vertical_scroll_end


async def test_batch_log_stays_put_when_scrolled_up_and_redraws_after_focus() -> None:
    """Scrolled up, new lines do not move the view; a style change (focus tint) re-renders kept lines."""
    app = TwoLogs()
    async with app.run_test(size=(100, 20)) as pilot:
        plain, batch = app.query_one("#plain", Log), app.query_one("#batch", BatchLog)
        for log in (plain, batch):
            log.write_lines([f"line {i}" for i in range(40)])
        await pilot.pause()
        for log in (plain, batch):
            log.scroll_home(animate=False)
        await pilot.pause()
        for log in (plain, batch):
            log.write_lines(["new"])
        await pilot.pause()
        assert batch.scroll_y == plain.scroll_y == 0
        before = batch.render_line(0)
        batch.focus()
        await pilot.pause()
        after = batch.render_line(0)
        assert after.text == before.text
        styles: Any = [seg.style for seg in after]
        assert styles != [seg.style for seg in before]


async def test_handshake_title_not_rewritten_when_unchanged(app: DashboardApp) -> None:
    """A batch that changes nothing in the title does not touch the label (an update costs a layout)."""
    from tui.messages import EventsReceived

    async with app.run_test(size=SIZE) as pilot:
        label = app.main_screen.query_one("#hs-title")
        updates: list[object] = []
        original = label.update  # type: ignore[attr-defined]

        def counted(*args: object, **kwargs: object) -> None:
            updates.append(args)
            original(*args, **kwargs)

        label.update = counted  # type: ignore[attr-defined]
        hs = {"type": "handshake", "ts": 1764160061.0, "client": "127.0.0.1:1", "server": "b1", "status": 101}
        app.post_message(EventsReceived([hs, hs]))
        await pilot.pause()
        assert updates == []
        app.post_message(EventsReceived([{"type": "gap", "ts": 1764160061.5, "missed": 3}]))
        await pilot.pause()
        assert len(updates) == 1
