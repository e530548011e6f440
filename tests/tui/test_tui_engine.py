"""Pilot tests against a real engine process with real websockets backends (each its own process)."""

from __future__ import annotations

import contextlib
import re
import tempfile
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from textual.widgets import Input, Log
from tui_support import SIZE, unit, wait_until
from websockets.asyncio.client import ClientConnection, connect

from proxy_core.client import ControlClient
from proxy_core.sources.wsproxy import WsproxySource
from tui.app import DashboardApp
from tui.demo import listen_address, start_backends
from tui.launcher import Child, Launcher, LaunchError
from tui.modals.confirm import ConfirmModal
from tui.record import record
from tui.source import LiveSource, ScriptedSource

# Fast checks so a killed backend is marked down within about a second.
CHECK = ["--check", "websocket:/ws", "--check-interval", "200", "--rise", "1", "--fall", "2"]
FAST_STOP = ["--check-timeout", "500", "--shutdown-grace", "1"]


@dataclass
class Stack:
    """A running engine, its backends, and how to start it again."""

    launcher: Launcher
    listen: str
    backends: dict[str, tuple[str, Child]]
    engine_args: list[str]


@pytest.fixture
async def stack() -> AsyncIterator[Stack]:
    """Three demo backends (b1, b2 in the pool; b3 spare) behind a real engine; all stopped after."""
    launcher = Launcher(Path(tempfile.mkdtemp(prefix="wsp-tui-")))
    try:
        addresses = await start_backends(launcher, ["b1", "b2", "b3"])
        children = {c.name.removeprefix("backend-"): c for c in launcher.children}
        backends = {name: (address, children[name]) for name, address in addresses.items()}
        args = ["--listen", "127.0.0.1:0", *CHECK, *FAST_STOP]
        args += ["--backend", f"b1={addresses['b1']}", "--backend", f"b2={addresses['b2']}"]
        launcher.start_engine(args)
        listen = listen_address(await launcher.wait_engine(unit(15)))
        yield Stack(launcher, listen, backends, args)
    finally:
        launcher.stop_all()
        for child in launcher.children:  # shown by pytest only when the test failed
            print(f"--- {child.name} (pid {child.pid}, exit {child.proc.returncode})\n{child.tail()}")
        launcher.cleanup()


def preview_text(app: DashboardApp) -> str:
    """The impact preview of the open confirmation ("" when none is open)."""
    found = app.screen.query("#impact")
    return str(found.first().content) if found else ""  # type: ignore[attr-defined]


def plan_text(app: DashboardApp) -> str:
    """The rebalance dialog's plan ("" when it is not open)."""
    found = app.screen.query("#plan")
    return str(found.first().content) if found else ""  # type: ignore[attr-defined]


def bar_text(app: DashboardApp) -> str:
    """The rebalance line above the table ("" while hidden)."""
    bar = app.main_screen.rebalance_bar
    return str(bar.content) if bar.display else ""


def live_app(stack: Stack) -> DashboardApp:
    """A dashboard attached to the stack's engine."""
    source = LiveSource(WsproxySource(uds=stack.launcher.control_path))
    return DashboardApp(source, attach_hint=f"wsproxy-tui --attach {stack.launcher.control_path}")


def cell(app: DashboardApp, name: str, column: str) -> str:
    """Plain text of a backends-table cell, or '' if the row is not there."""
    table = app.main_screen.backends
    if name not in table._cells:
        return ""
    return str(table.get_cell(name, column).plain)


def events_text(app: DashboardApp) -> str:
    """Everything in the events pane."""
    return "\n".join(app.main_screen.query_one("#events-log", Log).lines)


async def test_live_add_drain_undrain_weight(stack: Stack) -> None:
    """Add b3 from the form, drain a busy server to zero as clients leave, undrain, set a weight."""
    app = live_app(stack)
    clients: list[ClientConnection] = []
    try:
        async with app.run_test(size=SIZE) as pilot:
            await wait_until(pilot, lambda: cell(app, "b2", "state") == "up", "b1, b2 up")
            await pilot.press("a")
            screen = app.screen
            screen.query_one("#name", Input).value = "b3"
            screen.query_one("#address", Input).value = stack.backends["b3"][0]
            screen.query_one("#weight", Input).value = "1"
            await pilot.pause()
            await pilot.click("#add")
            await wait_until(pilot, lambda: cell(app, "b3", "state") == "up", "b3 added and up")
            assert "you: add b3 → added" in events_text(app)

            for _ in range(6):
                clients.append(await connect(f"ws://{stack.listen}/ws", open_timeout=unit(5)))
            await wait_until(
                pilot,
                lambda: int((app.server_by_name("b1") or {}).get("active") or 0) >= 2,
                "b1 holding two clients",
            )
            app.main_screen.backends.select("b1")
            await pilot.press("d")
            await wait_until(pilot, lambda: "Moves 2 live connections" in preview_text(app), "the drain's impact")
            await pilot.press("enter")
            await wait_until(pilot, lambda: cell(app, "b1", "state").startswith("draining"), "drain")
            assert cell(app, "b1", "active") == "2/2"
            for ws in clients:
                await ws.close()
            await wait_until(pilot, lambda: cell(app, "b1", "active") == "0/2", "count to fall to 0")
            await wait_until(pilot, lambda: "b1 drained: no connections left" in events_text(app), "drain note")
            assert cell(app, "b1", "state") == "drained, safe to restart"

            await pilot.press("u")
            await wait_until(pilot, lambda: cell(app, "b1", "state") == "up", "undrain")

            await pilot.press("w")
            app.screen.query_one("#weight", Input).value = "3"
            await pilot.pause()
            assert "60.0%" in str(app.screen.query_one("#share").content)  # type: ignore[attr-defined]
            await pilot.press("enter")
            await wait_until(pilot, lambda: cell(app, "b1", "share") == "60.0%", "weight applied")
            assert cell(app, "b1", "weight") == "3"
    finally:
        for ws in clients:
            with contextlib.suppress(Exception):
                await ws.close()


async def test_live_remove_with_confirmation_and_force(stack: Stack) -> None:
    """Remove b2 after confirming; removing the last eligible b1 is refused by the dry run (409) until forced."""
    app = live_app(stack)
    async with app.run_test(size=SIZE) as pilot:
        await wait_until(pilot, lambda: cell(app, "b2", "state") == "up", "b2 up")
        app.main_screen.backends.select("b2")
        await pilot.press("r")
        assert isinstance(app.screen, ConfirmModal)
        assert stack.backends["b2"][0] in str(app.screen.query_one(".dialog-body").content)  # type: ignore[attr-defined]
        await pilot.click("#confirm")
        await wait_until(pilot, lambda: cell(app, "b2", "state") == "", "b2 removed")

        app.main_screen.backends.select("b1")
        await pilot.press("r")
        await wait_until(
            pilot,
            lambda: isinstance(app.screen, ConfirmModal) and "Force" in str(app.screen.confirm_label),
            "the dry run's 409 refusal offering force",
        )
        assert "no eligible server" in preview_text(app)
        assert cell(app, "b1", "state") == "up"
        await pilot.pause(0.3)
        await pilot.click("#confirm")
        await wait_until(pilot, lambda: cell(app, "b1", "state") == "", "b1 force-removed")
        assert "remove b1 → removed (forced)" in events_text(app)


async def test_live_backend_killed_shows_down_with_reason(stack: Stack) -> None:
    """Killing b2's process turns its row down with the check's failure reason."""
    app = live_app(stack)
    async with app.run_test(size=SIZE) as pilot:
        await wait_until(pilot, lambda: cell(app, "b2", "state") == "up", "b2 up")
        stack.launcher.stop(stack.backends["b2"][1])
        await wait_until(pilot, lambda: cell(app, "b2", "state") == "down", "b2 down")
        assert cell(app, "b2", "check").startswith("fail: ")
        await wait_until(pilot, lambda: "b2 up → down" in events_text(app), "state event")
        assert cell(app, "b1", "share") == "100.0%"


async def test_live_engine_restart_reconnects(stack: Stack) -> None:
    """The engine going away marks the data stale; a new engine on the same socket is picked up."""
    app = live_app(stack)
    async with app.run_test(size=SIZE) as pilot:
        bar = app.main_screen.status_bar
        await wait_until(pilot, lambda: "● live" in str(bar.content), "live link")
        old_pid = str(app.status["engine"]["pid"])
        assert stack.launcher.engine is not None
        stack.launcher.stop(stack.launcher.engine)
        await wait_until(pilot, lambda: "STALE since" in str(bar.content), "stale marker")
        assert cell(app, "b1", "state") == "up"  # last snapshot kept
        stack.launcher.start_engine(stack.engine_args)
        await wait_until(pilot, lambda: "● live" in str(bar.content), "reconnect", timeout=20)
        new_pid = str(app.status["engine"]["pid"])
        assert new_pid != old_pid and f"pid {new_pid}" in str(bar.content)
        assert "engine link restored" in events_text(app)
        # Events of the new engine (numbered from 1 again) still arrive.
        await wait_until(pilot, lambda: events_text(app).count("none → up: added") >= 4, "events")


async def test_launcher_reports_engine_stderr_on_bad_flags() -> None:
    """A failing engine start raises LaunchError carrying the engine's own error line."""
    launcher = Launcher(Path(tempfile.mkdtemp(prefix="wsp-tui-")))
    try:
        launcher.start_engine(["--listen", "nowhere", "--backend", "127.0.0.1:1"])
        with pytest.raises(LaunchError, match="error"):
            await launcher.wait_engine(unit(15))
    finally:
        launcher.stop_all()
        launcher.cleanup()


async def test_record_then_replay(stack: Stack) -> None:
    """A recording of the live engine replays through ScriptedSource with the same servers."""
    async with ControlClient(uds=stack.launcher.control_path) as client:
        frames = await record(client, unit(1.5))
    source = ScriptedSource(frames, until=60.0)
    app = DashboardApp(source)
    async with app.run_test(size=SIZE) as pilot:
        await wait_until(pilot, lambda: cell(app, "b2", "state") == "up", "replayed snapshot")
        assert "b1 none → up: added" in events_text(app)


async def test_live_state_changes_show_at_once_with_slow_status_polls(stack: Stack) -> None:
    """With the event stream open, status is polled slowly; a state change or an action made elsewhere (an
    operator event) still fetches a fresh status at once, so the table never waits for the next poll."""
    source = LiveSource(WsproxySource(uds=stack.launcher.control_path), streaming_status_interval=120.0)
    app = DashboardApp(source, attach_hint="")
    async with app.run_test(size=SIZE) as pilot:
        await wait_until(pilot, lambda: cell(app, "b2", "state") == "up", "b2 up")
        await wait_until(pilot, lambda: source.streaming, "the event stream open")
        stack.launcher.stop(stack.backends["b2"][1])
        await wait_until(pilot, lambda: cell(app, "b2", "state") == "down", "b2 down without a poll due")
        async with ControlClient(uds=stack.launcher.control_path) as other:  # another operator, e.g. the CLI
            await other.drain("b1", force=True)
        await wait_until(pilot, lambda: cell(app, "b1", "state").startswith("drain"), "b1 draining or drained")


async def test_live_rebalance_plan_start_and_progress() -> None:
    """Against a real engine: b2 joins empty, `b` shows the engine's plan, Enter moves clients, the line says done."""
    launcher = Launcher(Path(tempfile.mkdtemp(prefix="wsp-tui-")))
    clients: list[ClientConnection] = []
    try:
        addresses = await start_backends(launcher, ["b1", "b2"])
        config = launcher.workdir / "wsproxy.toml"
        config.write_text("[rebalance]\nmin_age_s = 0.1\n", encoding="utf-8")  # the clients are seconds old
        args = ["--config", str(config), "--listen", "127.0.0.1:0", *CHECK, *FAST_STOP]
        launcher.start_engine([*args, "--backend", f"b1={addresses['b1']}"])
        listen = listen_address(await launcher.wait_engine(unit(15)))
        for i in range(6):  # six clients, each from its own loopback address, all on b1
            ws = await connect(f"ws://{listen}/ws", open_timeout=unit(5), local_addr=(f"127.0.0.{20 + i}", 0))
            clients.append(ws)
        source = LiveSource(WsproxySource(uds=launcher.control_path))
        app = DashboardApp(source)
        async with app.run_test(size=SIZE) as pilot:
            await wait_until(pilot, lambda: cell(app, "b1", "active") == "6", "six clients on b1")
            await source.add("b2", addresses["b2"], 1)
            await wait_until(pilot, lambda: cell(app, "b2", "state") == "up", "b2 up")
            await pilot.press("b")
            await wait_until(pilot, lambda: "Moves 2 clients" in plan_text(app), "the engine's plan", timeout=15)
            assert "b1 → b2: 2 clients, 2 connections" in plan_text(app)
            assert "Connections: b1 6 → 4 · b2 0 → 2" in plan_text(app)
            await pilot.press("enter")
            await wait_until(pilot, lambda: "rebalance done" in bar_text(app), "the rebalance to finish", timeout=15)
            # The moved clients do not reconnect here, so the engine's later rounds (it re-plans) move more.
            assert re.search(r"moved ([2-6])/\1 clients", bar_text(app)), bar_text(app)
            assert int(cell(app, "b1", "active")) <= 4
            assert "operator rebalance-done: ok" in events_text(app)
    finally:
        for ws in clients:
            with contextlib.suppress(Exception):
                await ws.close()
        launcher.stop_all()
        for child in launcher.children:  # shown by pytest only when the test failed
            print(f"--- {child.name} (pid {child.pid}, exit {child.proc.returncode})\n{child.tail()}")
        launcher.cleanup()
